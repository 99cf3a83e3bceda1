"""``mlops monitor --format html``: one self-contained HTML file with the report's tables and plots.

The charts are drawn by matplotlib on this side and inlined as SVG: the file needs no script, no
font and no network to open (an inlined plotting library such as plotly.js would add 3.5 MB of
JavaScript per report and a runtime that can fail in the viewer's browser; SVG is text the browser
draws itself, and prints). matplotlib is the optional ``html`` extra: ``pip install
'mlops-pipeline[html]'``. Charts per deployment: requests and errors over time per version,
latency percentiles over time, the prediction distribution per version; per version with a
baseline: PSI per feature (with the thresholds) and each feature's distribution over the baseline's.
"""

from __future__ import annotations

import html
import io
from datetime import datetime
from typing import Any

import numpy as np

from pipeline.errors import MlopsError
from pipeline.monitor.drift import DriftPolicy
from pipeline.monitor.report import NO_MODEL, DeploymentReport, VersionReport

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
_LEVEL_COLORS = {"stable": "#2ca02c", "moderate": "#ff7f0e", "significant": "#d62728"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.25rem;border-bottom:1px solid #ccc;padding-top:1rem}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1rem}figure.chart{margin:0;border:1px solid #eee;padding:.5rem}
figcaption{font-size:.9rem;color:#555}.drifted{color:#d62728;font-weight:bold}.note{color:#555}
"""


def _figure(width: float = 6.4, height: float = 3.2, columns: int = 1, rows: int = 1) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise MlopsError("--format html needs matplotlib: pip install 'mlops-pipeline[html]'") from None
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False)


def _svg(figure: Any, name: str, caption: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: inlined in HTML
    return (f'<figure class="chart" data-chart="{html.escape(name)}">{text}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _times(report: DeploymentReport) -> list[datetime]:
    return [datetime.fromisoformat(s) for s in report.series["starts"]]


def _traffic_chart(report: DeploymentReport) -> str:
    figure, axes = _figure()
    ax = axes[0][0]
    times = _times(report)
    for i, (name, counts) in enumerate(report.series["versions"].items()):
        color = _COLORS[i % len(_COLORS)]
        ax.step(times, counts["requests"], where="post", color=color, label=f"{name} requests")
        errors = np.add(counts["client_errors"], counts["model_errors"])
        ax.step(times, errors, where="post", color=color, linestyle="--", label=f"{name} errors (4xx+5xx)")
    ax.set_ylabel(f"per {report.series['bucket_seconds'] // 60} min")
    ax.legend(fontsize="small")
    figure.autofmt_xdate()
    return _svg(figure, f"traffic-{report.deployment}", "Requests and errors over time, per version")


def _latency_chart(report: DeploymentReport) -> str:
    figure, axes = _figure()
    ax = axes[0][0]
    times = _times(report)
    for i, (key, values) in enumerate(report.series["latency"].items()):
        points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", color=_COLORS[i], label=key)
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize="small")
    figure.autofmt_xdate()
    return _svg(figure, f"latency-{report.deployment}", "Latency percentiles over time")


def _prediction_chart(report: DeploymentReport) -> str | None:
    versions = [v for v in report.versions if v.predictions]
    if not versions:
        return None
    figure, axes = _figure()
    ax = axes[0][0]
    labels = sorted({label for v in versions for label in v.predictions.get("labels", {})})
    width = 0.8 / len(versions)
    for i, v in enumerate(versions):
        color = _COLORS[i % len(_COLORS)]
        if labels and v.predictions.get("labels"):
            counts = v.predictions["labels"]
            total = sum(counts.values())
            ax.bar(np.arange(len(labels)) + i * width, [counts.get(label, 0) / total for label in labels],
                   width, color=color, label=v.name)
        if v.predictions.get("numbers"):
            ax.hist(v.predictions["numbers"]["sample"], bins=30, density=True, histtype="step", color=color,
                    label=v.name)
    if labels:
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
        ax.set_ylabel("share of predictions")
    ax.legend(fontsize="small")
    return _svg(figure, f"predictions-{report.deployment}", "Prediction distribution per version")


def _psi_chart(report: DeploymentReport, version: VersionReport, policy: DriftPolicy) -> str:
    assert version.drift is not None
    features = version.drift.features
    figure, axes = _figure(height=0.4 * len(features) + 1.2)
    ax = axes[0][0]
    ax.barh([f.feature for f in features], [f.psi for f in features],
            color=[_LEVEL_COLORS[f.level] for f in features])
    for threshold in (policy.psi_moderate, policy.psi_significant):
        ax.axvline(threshold, color="#555", linestyle=":", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel(f"PSI ({policy.bins} bins; {policy.psi_moderate:g} moderate, {policy.psi_significant:g} significant)")
    return _svg(figure, f"psi-{report.deployment}-{version.name}", f"{version.name}: PSI per feature")


def _overlay_chart(report: DeploymentReport, version: VersionReport) -> str:
    assert version.drift is not None
    histograms = version.drift.histograms
    columns = min(4, len(histograms))
    rows = -(-len(histograms) // columns)
    figure, axes = _figure(width=3 * columns, height=2.2 * rows, columns=columns, rows=rows)
    flat = [ax for row in axes for ax in row]
    for ax, (feature, (edges, expected, actual)) in zip(flat, histograms.items(), strict=False):
        ax.stairs(expected, edges, fill=True, alpha=0.35, color="#7f7f7f", label="baseline")
        ax.stairs(actual, edges, color="#1f77b4", linewidth=1.5, label="collected")
        ax.set_title(feature, fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in flat[len(histograms):]:
        ax.set_visible(False)
    flat[0].legend(fontsize="x-small")
    return _svg(figure, f"overlay-{report.deployment}-{version.name}",
                f"{version.name}: each feature's distribution (density) against the baseline")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(endpoint: str, reports: list[DeploymentReport], summary: dict[str, Any]) -> str:
    """The whole page; ``summary`` holds the window and reading counts (as in the JSON report)."""
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mlops monitor {e(endpoint)}"
             f"</title><style>{_STYLE}</style></head><body><h1>Endpoint {e(endpoint)}</h1>",
             f"<p class='note'>{e(summary['since'])} to {e(summary['until'])}: {summary['files_read']} files read, "
             f"{summary['skipped_lines']} corrupt lines skipped.</p>"]
    if not reports:
        parts.append("<p>No requests in this window.</p>")
    for r in reports:
        parts.append(f"<h2>{'' if r.title != r.deployment else 'Deployment '}{e(r.title)}</h2>")
        parts.append(_table(
            ["version", "requests", "4xx", "of which 401", "of which 404", "5xx", "rows", "p50 ms", "p95 ms",
             "p99 ms", "first", "last"],
            [[e(v.name), v.requests, v.client_errors, v.unauthorized, v.not_found, v.model_errors, v.rows,
              v.latency_ms.get("p50", ""), v.latency_ms.get("p95", ""), v.latency_ms.get("p99", ""),
              e(v.first or ""), e(v.last or "")] for v in r.versions]))
        charts = [_traffic_chart(r), _latency_chart(r)]
        prediction = _prediction_chart(r)
        if prediction:
            charts.append(prediction)
        parts.append(f"<div class='charts'>{''.join(charts)}</div>")
        for v in r.versions:
            if v.drift is None:
                if v.model != NO_MODEL:
                    parts.append(f"<p class='note'>{e(v.name)}: the model has no baseline, drift is not measured.</p>")
                continue
            parts.append(f"<h3>{e(v.name)}: drift against {e(v.drift.baseline)} ({v.drift.baseline_rows} rows)</h3>"
                         f"<p>{e(v.drift.reason)}</p><p class='note'>{e(v.drift.policy.describe())}</p>")
            verdicts = {True: "<span class='drifted'>drifted</span>", False: "ok", None: "not judged"}
            parts.append(_table(["feature", "PSI", "level", "KS statistic", "p-value", "verdict", "baseline mean",
                                 "collected mean"],
                                [[e(f.feature), f"{f.psi:.4f}", f.level, f"{f.ks_statistic:.4f}", f"{f.p_value:.3g}",
                                  verdicts[f.drifted], f"{f.baseline_mean:g}", f"{f.current_mean:g}"]
                                 for f in v.drift.features]))
            if v.drift.rows:
                parts.append(f"<div class='charts'>{_psi_chart(r, v, v.drift.policy)}{_overlay_chart(r, v)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
