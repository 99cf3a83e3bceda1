"""Plan renderers: text for terminals, JSON for tools, markdown for pull-request comments.

They read only the ``Plan`` value, never the world.
"""

from __future__ import annotations

import json
from itertools import groupby

from pipeline.plan.model import WAVE_NAMES, Plan, Step

MARKER = "<!-- mlops-plan -->"
NO_CHANGES = "No changes. The deployed state matches mlops.yaml."
_COLORS = {"+": "32", "~": "33", "±": "35", "-": "31", " ": "2"}


def _paint(text: str, symbol: str, color: bool) -> str:
    return f"\033[{_COLORS[symbol]}m{text}\033[0m" if color else text


def _changed_fields(step: Step) -> list[tuple[str, object, object]]:
    before, after = step.before or {}, step.after or {}
    return [(key, before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)]


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
                for key, old, new in _changed_fields(step):
                    lines.append(f"        {key}: {_value(old)} → {_value(new)}")
    lines.append("")
    lines.append(plan.summary() if plan.has_changes else NO_CHANGES)
    return "\n".join(lines)


def _value(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return "none" if value is None else str(value)


def render_json(plan: Plan) -> str:
    return plan.to_json()


def render_markdown(plan: Plan) -> str:
    """A pull-request comment: hidden marker, summary table, then each step with its details."""
    lines = [MARKER, "### mlops plan", ""]
    if not plan.has_changes:
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
            if step.before or step.after:
                lines += ["  <details><summary>before → after</summary>", "", "  ```json",
                          *("  " + line for line in json.dumps({"before": step.before, "after": step.after},
                                                               indent=2, sort_keys=True).splitlines()),
                          "  ```", "  </details>"]
        lines.append("")
    lines.append(f"<sub>state {plan.state_digest[:19]} · spec {plan.spec_digest[:19]} · {plan.created}</sub>")
    return "\n".join(lines) + "\n"
