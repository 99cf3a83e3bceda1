"""Plan renderers: text for terminals, JSON for tools, markdown for pull-request comments.

They read only the ``Plan`` value, never the world.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby

from pipeline.plan.model import WAVE_NAMES, Plan, Step, changed_fields, normalize

MARKER = "<!-- mlops-plan -->"
NO_CHANGES = "No changes. The deployed state matches mlops.yaml."
_COLORS = {"+": "32", "~": "33", "±": "35", "-": "31", " ": "2"}


def _paint(text: str, symbol: str, color: bool) -> str:
    return f"\033[{_COLORS[symbol]}m{text}\033[0m" if color else text


def format_value(value: object) -> str:
    """A value as mlops.yaml would spell it (``{blue: 90, green: 10}``, ``true``), never Python repr."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _details(step: Step) -> list[str]:
    """Changed fields as ``field: old → new`` for updates; the fields themselves for the other steps."""
    if step.action in ("update", "replace"):
        return [f"{key}: {format_value(old)} → {format_value(new)}" for key, old, new in changed_fields(
            step.before, step.after)]
    values = step.after if step.after is not None else step.before
    return [f"{key}: {format_value(normalize(key, value))}" for key, value in sorted((values or {}).items())]


def _rollout(step: Step) -> str:
    """The schedule of a progressive update (weights, bake times, gates), or nothing."""
    rollout = getattr(step.data, "rollout", None)
    return str(rollout["schedule"]) if rollout else ""


def render_text(plan: Plan, color: bool = False) -> str:
    if not plan.steps:
        return NO_CHANGES
    lines = []
    for wave, steps in groupby(plan.steps, key=lambda s: s.wave):
        lines.append(f"# {WAVE_NAMES[wave]}")
        for step in steps:
            lines.append(_paint(f"  {step.symbol} {step.kind:<8} {step.address}", step.symbol, color)
                         + f"  ({step.reason})")
            if step.action in ("update", "replace"):
                lines += [f"        {line}" for line in _details(step)]
            if rollout := _rollout(step):
                lines.append(f"        rollout: {rollout}")
    lines.append("")
    lines.append(plan.summary())
    return "\n".join(lines)


def render_json(plan: Plan) -> str:
    return plan.to_json()


def render_markdown(plan: Plan) -> str:
    """A pull-request comment: hidden marker, summary table, then each step with its details."""
    lines = [MARKER, "### mlops plan", ""]
    if not plan.steps:
        lines.append(f"✅ {NO_CHANGES}")
    else:
        lines.append(f"**{plan.summary()}**")
    if not plan.steps:
        return "\n".join(lines) + "\n"
    counts: dict[str, dict[str, int]] = {}
    for step in plan.steps:
        row = counts.setdefault(step.kind, {"add": 0, "change": 0, "destroy": 0, "kept": 0})
        row[{"create": "add", "delete": "destroy", "noop": "kept"}.get(step.action, "change")] += 1
    lines += ["", "| step | to add | to change | to destroy | kept |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {c['add']} | {c['change']} | {c['destroy']} | {c['kept']} |" for kind, c in counts.items()]
    lines.append("")
    for wave, steps in groupby(plan.steps, key=lambda s: s.wave):
        lines.append(f"#### {WAVE_NAMES[wave].capitalize()}")
        for step in steps:
            lines.append(f"- `{step.symbol}` **{step.kind}** `{step.address}`: {step.reason}")
            if rollout := _rollout(step):
                lines.append(f"  - rollout: {rollout}")
            details = _details(step)
            if details:
                lines += ["  <details><summary>before → after</summary>", "", "  ```",
                          *(f"  {line}" for line in details), "  ```", "  </details>"]
        lines.append("")
    lines.append(f"<sub>state {plan.state_digest[:19]} · spec {plan.spec_digest[:19]} · {plan.created}</sub>")
    return "\n".join(lines) + "\n"
