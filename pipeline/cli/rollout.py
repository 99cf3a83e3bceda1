"""``mlops rollout status|promote|abort|retry ENDPOINT``: watch a progressive rollout and decide for it.

The apply that drives a rollout reads the decision at its next tick (about a second); when no
apply runs (it was stopped while paused), the next ``mlops apply`` acts on it as it resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError, ReferenceNotFound


def _store(app: App, endpoint: str):
    from pipeline.apply.rollout import RolloutStore

    if endpoint not in app.spec().endpoints:
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {app.file}")
    return RolloutStore.under(app.state_dir())


def _moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@click.group()
def rollout() -> None:
    """Progressive rollouts (the rollout: block of a deployment), as mlops apply drives them."""


@rollout.command()
@click.argument("endpoint")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def status(app: App, endpoint: str, fmt: str) -> None:
    """Where each rollout of ENDPOINT stands: phase, step, weight, the last check against its limits."""
    from pipeline.lockinfo import holder_is_dead

    states = _store(app, endpoint).all(endpoint)
    holder = app.state_store().lock("status").holder()
    driven = holder is not None and holder.get("operation") == "apply" and not holder_is_dead(holder)
    if fmt == "json":
        click.echo(json.dumps([{**json.loads(s.to_json()), "interrupted": s.active and not driven} for s in states],
                              indent=2))
        return
    if not states:
        click.echo(f"no rollout has run on endpoint {endpoint}")
        return
    spec = app.spec().endpoints[endpoint]
    for state in states:
        deployment = spec.deployments.get(state.deployment)
        weights = deployment.rollout.weights() if deployment else ()
        where = f"step {min(state.step + 1, len(weights))}/{len(weights)}" if weights else ""
        click.echo(f"{endpoint}/{state.deployment}: {state.model} {state.phase}"
                   + (f", {where}, {state.weight}% to {state.canary}" if state.active else "")
                   + f" (since {_moment(state.started)}, updated {_moment(state.updated)})")
        if state.reason:
            click.echo(f"  {state.reason}")
        if state.last_check:
            click.echo(f"  last check: {state.last_check}")
        if state.failures:
            click.echo(f"  failed checks: {state.failures}")
        if state.phase == "rolled_back":
            click.echo(f"  not tried again by itself: mlops rollout retry {endpoint} --deployment {state.deployment}"
                       " lets the next apply try it, or change the version in mlops.yaml")
        if state.active and not driven:
            click.echo(f"  interrupted: no mlops apply is running; the next one resumes it, or removes "
                       f"{state.canary} if mlops.yaml no longer rolls out {state.model}")


def _the_one(store, endpoint: str, deployment: str | None, which: Callable[[Any], bool], what: str):
    """The one saved rollout of ENDPOINT (of ``--deployment``, when given) that ``which`` picks, or the error
    saying there is none or several."""
    found = [s for s in store.all(endpoint) if which(s) and (deployment is None or s.deployment == deployment)]
    if not found:
        raise MlopsError(f"no {what} on endpoint {endpoint}"
                         + (f" for deployment {deployment}" if deployment else "") + "; see mlops rollout status")
    if len(found) > 1:
        raise MlopsError(f"endpoint {endpoint} has a {what} for each of {', '.join(s.deployment for s in found)}; "
                         "name one with --deployment")
    return found[0]


def _request(app: App, endpoint: str, deployment: str | None, command: str) -> None:
    store = _store(app, endpoint)
    state = _the_one(store, endpoint, deployment, lambda s: s.active, "rollout in progress")
    store.request(endpoint, state.deployment, command)
    what = "promotes it" if command == "promote" else "sends all traffic back to the stable version"
    click.echo(f"{command} requested for {endpoint}/{state.deployment} ({state.model}, {state.phase}): the "
               f"running apply {what} within a second or two (or the next mlops apply does)")


@rollout.command()
@click.argument("endpoint")
@click.option("--deployment", help="The deployment, when several of the endpoint roll out.")
@pass_app
def promote(app: App, endpoint: str, deployment: str | None) -> None:
    """Promote the canary now: skip the remaining steps, bake time and pause."""
    _request(app, endpoint, deployment, "promote")


@rollout.command()
@click.argument("endpoint")
@click.option("--deployment", help="The deployment, when several of the endpoint roll out.")
@pass_app
def abort(app: App, endpoint: str, deployment: str | None) -> None:
    """Roll back: all traffic to the stable version, the canary removed (recorded in the ledger)."""
    _request(app, endpoint, deployment, "abort")


@rollout.command()
@click.argument("endpoint")
@click.option("--deployment", help="The deployment, when several of the endpoint were rolled back.")
@pass_app
def retry(app: App, endpoint: str, deployment: str | None) -> None:
    """Let the next apply roll out again a version whose rollout was rolled back."""
    store = _store(app, endpoint)
    state = _the_one(store, endpoint, deployment, lambda s: s.phase == "rolled_back", "rolled-back rollout")
    state.phase, state.updated = "retry", time.time()
    state.history.append("retry requested by mlops rollout retry")
    store.save(state)
    click.echo(f"the next mlops apply rolls {state.model} out to {endpoint}/{state.deployment} again, from the "
               "first step")


COMMANDS = [rollout]
