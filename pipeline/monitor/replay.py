"""Replay before rollout: send collected production requests to a candidate model in this process and
compare its answers with what the live version answered.

``requests_of`` turns collected events (``pipeline.server.events.Event``) back into what the model was
given — rows (with their column names, so a candidate that orders its features differently still gets
each value in its place) or, for the Open Inference Protocol route, named input arrays — beside the
live answers, one per row. ``replay`` runs a loaded candidate (``pipeline.runtime.Model``) on them,
request by request as the service did, timing ``prepare`` + ``score``. ``compare`` is the pure part:

* labels (strings, integers, booleans: a classifier) — the agreement rate and the confusion table
  live class → candidate class;
* numbers (a regressor, a score) — the agreement rate (equal within float noise), the mean absolute
  change, mean and quantiles of both sides and the PSI of the candidate's predictions against the
  live ones (``monitor.drift.sample_psi``: below 0.1 stable, above 0.25 a significant shift);
* anything else (vectors, objects) — the agreement rate only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput
from pipeline.monitor.drift import DriftPolicy, sample_psi
from pipeline.runtime import Model
from pipeline.server.events import Event

INFER_ROUTE = "/v2/models/{name}/infer"  # the collector's route label of OIP v2 infer (pipeline.server.app)
QUANTILES = (5, 25, 50, 75, 95)
RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE = 1e-6, 1e-9  # numbers closer than this are the same answer
MIN_ROWS_FOR_PSI = DriftPolicy().min_rows  # fewer rows: the PSI is mostly noise (monitor.drift)


@dataclass(frozen=True)
class Request:
    """One collected request as it can be sent again, and what the live version answered per row."""

    answers: list[Any]
    rows: Any = None
    columns: list[str] | None = None
    tensors: dict[str, Any] | None = None  # OIP v2 infer: input arrays by name
    output: str | None = None  # OIP v2 infer: the output compared


def _per_row(value: Any) -> list[Any] | None:
    """Answers as one item per row: a service's array, MLflow's or a score.py's ``{"predictions": ...}``."""
    if isinstance(value, dict) and "predictions" in value:
        value = value["predictions"]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return value if isinstance(value, list) else None


def request_of(event: Event) -> Request | None:
    """The request an event holds, or None when it cannot be replayed (failed, or nothing per row)."""
    if event.failed:
        return None
    inputs, outputs = event.inputs, event.outputs
    if event.route == INFER_ROUTE:
        if not (isinstance(inputs, dict) and inputs and isinstance(outputs, dict) and outputs):
            return None
        output = next(iter(outputs))
        answers = _per_row(outputs[output])
        return Request(answers, tensors=inputs, output=output) if answers is not None else None
    columns = None
    if isinstance(inputs, dict):  # named features ({"columns", "data"}), or a score.py's whole body
        rows, columns = inputs.get("data"), inputs.get("columns")
        if rows is None and isinstance(inputs.get("input_data"), dict):
            rows, columns = inputs["input_data"].get("data"), inputs["input_data"].get("columns")
    else:
        rows = inputs
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        columns = None
    answers = _per_row(outputs)
    if not isinstance(rows, list) or not rows or answers is None or len(answers) != len(rows):
        return None
    return Request(answers, rows=rows, columns=columns)


def requests_of(events: Iterable[Event]) -> list[Request]:
    return [request for event in events if (request := request_of(event)) is not None]


def _score(model: Model, request: Request) -> list[Any] | None:
    if request.tensors is not None:
        arrays, _ = model.prepare_tensors({name: np.asarray(value) for name, value in request.tensors.items()})
        wanted = request.output if request.output in {o.name for o in model.outputs} else None
        outputs = model.infer(arrays, [wanted] if wanted else None)
        return _per_row(outputs[wanted] if wanted else next(iter(outputs.values())))
    payload, _, _ = model.prepare_rows(request.rows, request.columns)
    return _per_row(model.score(payload))


@dataclass
class Replay:
    """What a candidate answered on replayed requests: answers beside the live ones, where it failed,
    and its seconds per row on each request."""

    live: list[Any] = field(default_factory=list)
    candidate: list[Any] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    first_error: str | None = None
    seconds_per_row: list[float] = field(default_factory=list)


def replay(model: Model, requests: Sequence[Request]) -> Replay:
    """Run the candidate on every request, as the scoring service would (prepare, then score)."""
    result = Replay(requests=len(requests))
    for request in requests:
        start = time.perf_counter()
        message: str | None
        try:
            answers = _score(model, request)
        except Exception as error:  # the candidate's failure is a finding of the replay, not of mlops
            answers, message = None, str(error) if isinstance(error, InvalidInput) else \
                f"{type(error).__name__}: {error}"
        else:
            message = None if answers is not None and len(answers) == len(request.answers) else \
                f"answered {len(answers) if answers is not None else 'no list'} for {len(request.answers)} rows"
        elapsed = time.perf_counter() - start
        if message is not None:
            result.failed += 1
            result.first_error = result.first_error or message
            continue
        assert answers is not None
        result.live.extend(request.answers)
        result.candidate.extend(answers)
        result.seconds_per_row.append(elapsed / len(answers))
    return result


# -- comparison (pure) ---------------------------------------------------------------------------
def _is_label(value: Any) -> bool:
    return isinstance(value, str | bool | int)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _label_order(value: Any) -> tuple[int, Any]:
    """Class numbers by value (2 before 10), then names."""
    return (1, str(value)) if isinstance(value, str) else (0, int(value))


def _label(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _distribution(values: np.ndarray) -> dict[str, float]:
    quantiles = np.percentile(values, QUANTILES)
    return {"mean": round(float(values.mean()), 6),
            **{f"p{q}": round(float(v), 6) for q, v in zip(QUANTILES, quantiles, strict=True)}}


def _same(a: Any, b: Any) -> bool:
    try:
        left, right = np.asarray(a), np.asarray(b)
        if left.shape == right.shape and left.dtype.kind in "biuf" and right.dtype.kind in "biuf":
            return bool(np.allclose(left, right, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE))
    except (ValueError, TypeError):
        pass
    return bool(a == b)


def compare(live: Sequence[Any], candidate: Sequence[Any]) -> dict[str, Any]:
    """How the candidate's answers differ from the live ones, row by row (same length, same order)."""
    if len(live) != len(candidate):
        raise ValueError(f"{len(live)} live answers but {len(candidate)} candidate answers")
    rows = len(live)
    if not rows:
        return {"kind": "none", "rows": 0, "agreement": None}
    both = list(live) + list(candidate)
    if all(_is_label(v) for v in both):  # integers too: class numbers
        pairs = Counter((_label(a), _label(b)) for a, b in zip(live, candidate, strict=True))
        labels = [_label(v) for v in sorted(set(both), key=_label_order)]
        matrix = [[pairs.get((a, b), 0) for b in labels] for a in labels]
        agreed = sum(count for (a, b), count in pairs.items() if a == b)
        changes = [{"live": a, "candidate": b, "rows": count}
                   for (a, b), count in sorted(pairs.items(), key=lambda item: (-item[1], item[0])) if a != b]
        return {"kind": "labels", "rows": rows, "agreement": agreed / rows, "changed": rows - agreed,
                "labels": labels, "confusion": matrix, "changes": changes}
    if all(_is_number(v) for v in both):
        old, new = np.asarray(live, dtype=float), np.asarray(candidate, dtype=float)
        agreed = int(np.isclose(new, old, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE).sum())
        return {"kind": "numbers", "rows": rows, "agreement": agreed / rows, "changed": rows - agreed,
                "mean_absolute_change": round(float(np.abs(new - old).mean()), 6),
                "live": _distribution(old), "candidate": _distribution(new),
                "psi": round(sample_psi(old, new), 4) if rows >= MIN_ROWS_FOR_PSI else None}
    agreed = sum(_same(a, b) for a, b in zip(live, candidate, strict=True))
    return {"kind": "values", "rows": rows, "agreement": agreed / rows, "changed": rows - agreed}


def latency(seconds_per_row: Sequence[float]) -> dict[str, float]:
    """The candidate's milliseconds per row over the replayed requests: mean, p50, p95."""
    if not seconds_per_row:
        return {}
    values = np.asarray(seconds_per_row) * 1000
    return {"mean": round(float(values.mean()), 4), "p50": round(float(np.percentile(values, 50)), 4),
            "p95": round(float(np.percentile(values, 95)), 4)}


def summarize(result: Replay) -> dict[str, Any]:
    """The report of one replay as plain data (the ``replay`` entries of ``mlops plan --format json``)."""
    return {"requests": result.requests, "failed": result.failed, "first_error": result.first_error,
            **compare(result.live, result.candidate), "latency_ms_per_row": latency(result.seconds_per_row)}


# -- rendering (pure: the cases as ``mlops plan --replay`` made them) --------------------------------
def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"


def _headline(case: dict[str, Any], code: str = "") -> str:
    live = f"{code}{case['live_model']}{code} (serving {case['source']})" if case["live_model"] else "nothing live"
    origin = f" ({case['candidate_from']})" if case.get("candidate_from") else ""
    return f"{live} → {code}{case['candidate_model']}{code}{origin}"


def _findings(result: dict[str, Any]) -> list[str]:
    """The sentences of one replay, shared by text and markdown."""
    lines = []
    if result["rows"]:
        lines.append(f"{result['requests'] - result['failed']} requests, {result['rows']} rows: agreement "
                     f"{_percent(result['agreement'])} ({result['changed']} of {result['rows']} answers change)")
    if result["failed"]:
        lines.append(f"the candidate failed on {result['failed']} of {result['requests']} requests: "
                     f"{result['first_error']}")
    if result["kind"] == "labels" and result["changes"]:
        lines.append("changes: " + ", ".join(f"{c['live']} → {c['candidate']} ({c['rows']})"
                                             for c in result["changes"][:5])
                     + (", …" if len(result["changes"]) > 5 else ""))
    if result["kind"] == "numbers":
        live, new = result["live"], result["candidate"]
        lines.append(f"prediction mean {live['mean']:g} → {new['mean']:g}, median {live['p50']:g} → {new['p50']:g}, "
                     f"p5–p95 {live['p5']:g}–{live['p95']:g} → {new['p5']:g}–{new['p95']:g}; mean absolute change "
                     f"{result['mean_absolute_change']:g}"
                     + (f"; PSI {result['psi']:.4f}" if result["psi"] is not None else ""))
    if result["latency_ms_per_row"]:
        lat = result["latency_ms_per_row"]
        lines.append(f"candidate latency per row: mean {lat['mean']:g} ms, p50 {lat['p50']:g} ms, "
                     f"p95 {lat['p95']:g} ms")
    return lines


def _confusion_text(result: dict[str, Any]) -> list[str]:
    labels = result["labels"]
    width = max(8, *(len(label) + 2 for label in labels))
    lines = ["confusion (rows: live answer, columns: candidate answer):",
             " " * width + "".join(f"{label:>{width}}" for label in labels)]
    lines += [f"{label:>{width}}" + "".join(f"{count:>{width}}" for count in row)
              for label, row in zip(labels, result["confusion"], strict=True)]
    return lines


def render_text(limit: int, cases: Sequence[dict[str, Any]]) -> str:
    lines = [f"# replay of the last {limit} collected requests on the candidate versions"]
    if not cases:
        lines.append("  nothing to replay: no deploy or update step changes a model version")
    for case in cases:
        lines.append(f"  {case['step']}: {_headline(case)}")
        result = case.get("result")
        if result is None:
            lines.append(f"    nothing to replay: {case['note']}")
            continue
        lines += [f"    {line}" for line in _findings(result)]
        if result["kind"] == "labels" and result["changed"]:
            lines += [f"    {line}" for line in _confusion_text(result)]
    return "\n".join(lines)


def render_markdown(limit: int, cases: Sequence[dict[str, Any]]) -> str:
    """The replay section of a pull-request comment, after the plan."""
    lines = [f"#### Replay of the last {limit} production requests", ""]
    if not cases:
        lines.append("Nothing to replay: no deploy or update step changes a model version.")
    for case in cases:
        lines.append(f"- **{case['step']}**: {_headline(case, '`')}")
        result = case.get("result")
        if result is None:
            lines.append(f"  - nothing to replay: {case['note']}")
            continue
        lines += [f"  - {line}" for line in _findings(result)]
        if result["kind"] == "labels" and result["changed"]:
            labels = result["labels"]
            lines += ["", "  | live ↓ / candidate → | " + " | ".join(f"`{label}`" for label in labels) + " |",
                      "  |---|" + "---:|" * len(labels)]
            lines += [f"  | `{label}` | " + " | ".join(str(c) for c in row) + " |"
                      for label, row in zip(labels, result["confusion"], strict=True)]
            lines.append("")
    return "\n".join(lines) + "\n"
