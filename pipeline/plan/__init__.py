"""The planner: desired against actual → an ordered, reviewable ``Plan``; and its renderers."""

from pipeline.plan.model import Plan, Step
from pipeline.plan.reconcile import reconcile
from pipeline.plan.render import render_json, render_markdown, render_text

__all__ = ["Plan", "Step", "reconcile", "render_json", "render_markdown", "render_text"]
