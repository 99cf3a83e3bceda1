"""``mlops plan``, ``apply``, ``status``, ``destroy``, ``logs`` and ``force-unlock``.

Plan and apply follow Terraform: the plan is a value that can be saved and applied later (refused
when the state or the file changed since), ``--detailed-exitcode`` gives 0 (no changes), 2
(changes) or 1 (error), and apply asks before changing anything unless ``--yes``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError

MAX_REPLAY = 1_000_000  # requests held in memory at once by --replay
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_duration(text: str) -> float:
    """'30s', '2m', '500ms' or a plain number of seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"'{text}' is not a duration like 30s, 2m or 500ms")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _target_filter(values: tuple[str, ...]) -> set[str] | None:
    return set(values) or None


def deployer(app: App):
    """The apply service for this file, with the adapters it names."""
    from pipeline.apply.service import Deployer
    from pipeline.cli.wiring import make_builder, make_targets
    from pipeline.gitops.lineage import read_lineage

    spec = app.spec()
    return Deployer(spec, Path(app.file), app.registry(), make_targets(spec, app.state_dir()),
                    make_builder(spec, app.state_dir()), app.state_dir(),
                    lineage=lambda: read_lineage(spec.root, [Path(app.file)]).to_dict(), store=app.state_store())


def refuse_local_state_in_ci(app: App, allowed: bool, command: str) -> None:
    """On a throw-away CI runner, an embedded registry, its ledger and its lock vanish with the runner:
    a change applied there would be forgotten (and unprotected) by the next run. Plan stays allowed."""
    import os

    if allowed or os.environ.get("CI", "").lower() not in ("true", "1") or app.spec().registry.shared:
        return
    raise MlopsError(f"{app.spec().where('registry')}: CI=true and the registry is this machine's folder: the "
                     f"registry, ledger and lock of this {command} would be lost with the runner; configure a "
                     "shared registry (registry: {type: mlflow, tracking_uri: ${MLFLOW_TRACKING_URI}}, see README "
                     "'Sharing state'), or pass --allow-local-state")


def _render(plan, fmt: str, replay: tuple[int, list[dict[str, Any]]] | None = None) -> str:
    """The plan, and after it what replaying collected requests on the candidates found (``--replay``)."""
    from pipeline.monitor import replay as replayed
    from pipeline.plan import render_json, render_markdown, render_text

    if fmt == "json":
        if replay is None:
            return render_json(plan)
        limit, cases = replay
        return json.dumps(plan.to_dict() | {"replay": {"limit": limit, "cases": cases}}, indent=2, sort_keys=True,
                          default=str) + "\n"
    if fmt == "markdown":
        text = render_markdown(plan)
        return text if replay is None else f"{text}\n{replayed.render_markdown(*replay)}"
    text = render_text(plan, color=sys.stdout.isatty())
    return text if replay is None else f"{text}\n\n{replayed.render_text(*replay)}"


def _replay(service, plan, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Send the last ``limit`` collected requests of each live deployment a step replaces to its candidate."""
    from pipeline.apply import replay
    from pipeline.apply.observe import served

    joins = any(step.kind == "deploy" for step in plan.steps)  # only a new deployment asks what serves beside it
    found = replay.cases(plan, served(service.spec, service.targets) if joins else {})
    return limit, replay.run(service.spec, service.registry, service.targets, found, limit)


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan to apply it later.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@click.option("--prune", is_flag=True, default=None, help="Plan to delete deployments removed from the file.")
@click.option("--target", "targets", multiple=True, metavar="ENDPOINT[/DEPLOYMENT]",
              help="Limit the plan to these endpoints or deployments (repeatable).")
@click.option("--base", metavar="REF", help="Also show what this change does to mlops.yaml since REF "
              "(for a pull request: origin/main).")
@click.option("--no-live", is_flag=True, help="With --base: review the mlops.yaml change alone, reading no "
              "registry or target (a pull request from a fork has no credentials for them).")
@click.option("--replay", type=click.IntRange(1, MAX_REPLAY), metavar="N",
              help="Send the last N collected requests of each live deployment a step replaces to the new model "
                   "version in this process, and show how its answers differ.")
@pass_app
def plan(app: App, out: Path | None, fmt: str, detailed_exitcode: bool, prune: bool | None,
         targets: tuple[str, ...], base: str | None, no_live: bool, replay: int | None) -> None:
    """Show what apply would change: register → build → deploy/update → traffic → delete."""
    if no_live and (base is None or out is not None or fmt == "json"):
        raise MlopsError("--no-live shows only the review of the change since --base REF; it makes no plan to "
                         "save (--out) or print as JSON")
    if no_live and replay:
        raise MlopsError("--replay reads the collected requests and the registry; --no-live reads neither")
    service = None if no_live else deployer(app)
    result = None if service is None else service.plan(prune, targets)
    if base:
        from pipeline.gitops.review import base_section

        click.echo(base_section(app.spec().root, Path(app.file), base, app.spec(), markdown=fmt == "markdown"))
    if result is None:
        click.echo(NO_LIVE_PLAN)
        return
    click.echo(_render(result, fmt, _replay(service, result, replay) if replay else None))
    if out:
        out.write_text(result.to_json())
        click.echo(f"Saved the plan to {out}; apply it with: mlops apply {out}", err=True)
    if detailed_exitcode and result.has_changes:
        sys.exit(2)


NO_LIVE_PLAN = ("\n**No live plan:** this run has no credentials for the registry and the targets (a pull request "
                "from a fork gets no repository secrets), so what apply would change was not computed. The review "
                "above covers the mlops.yaml change alone; the plan runs again with credentials on merge.\n")


def _confirm(plan, yes: bool) -> None:
    if yes or not plan.has_changes:
        return
    if not sys.stdin.isatty():
        raise MlopsError("apply needs confirmation, but there is no terminal to ask; pass --yes "
                         "(as CI does) after reviewing the plan")
    if not click.confirm("Apply these changes?", default=False):
        raise MlopsError("apply cancelled; nothing was changed")


SLOW_STEPS = ("build", "deploy", "update", "export")  # in a log (no terminal), only these announce their start


def _progress(step, status: str, detail: str) -> None:
    if status == "rollout":  # a rollout's progress: one line per step, check and decision (terminal and CI)
        click.echo(("\n" if sys.stdout.isatty() else "") + f"      {step.address}: {detail}")
        return
    symbol = {"start": "…", "done": "✓", "failed": "✗", "retry": "↻"}[status]
    if status == "start":
        if sys.stdout.isatty() or step.kind in SLOW_STEPS:
            click.echo(f"  {symbol} {step.kind:<8} {step.address}", nl=not sys.stdout.isatty())
        return
    prefix = "\r" if sys.stdout.isatty() and status != "retry" else ""
    shown = detail if status != "failed" else ""  # the error itself is printed once, as the command's error
    line = f"{prefix}  {symbol} {step.kind:<8} {step.address}" + (f": {shown}" if shown else "")
    click.secho(line, fg={"done": "green", "failed": "red", "retry": "yellow"}[status],
                err=status == "failed")


@click.command()
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--prune", is_flag=True, default=None, help="Delete deployments removed from the file.")
@click.option("--target", "targets", multiple=True, metavar="ENDPOINT[/DEPLOYMENT]",
              help="Apply only to these endpoints or deployments (repeatable).")
@click.option("--lock-timeout", default="30s", show_default=True, help="How long to wait for the state lock.")
@click.option("--require-clean", is_flag=True, help="Refuse a git working tree with uncommitted changes (CI).")
@click.option("--allow-local-state", is_flag=True,
              help="Apply under CI=true with the embedded registry (its state is lost with the runner).")
@pass_app
def apply(app: App, plan_file: Path | None, yes: bool, prune: bool | None, targets: tuple[str, ...],
          lock_timeout: str, require_clean: bool, allow_local_state: bool) -> None:
    """Make the deployed state match mlops.yaml (or apply exactly a saved plan)."""
    from pipeline.apply.service import Reporter
    from pipeline.gitops.lineage import require_clean as check_clean
    from pipeline.plan import Plan

    refuse_local_state_in_ci(app, allow_local_state, "apply")
    if require_clean:
        check_clean(app.spec().root)
    saved = Plan.from_json(plan_file.read_text()) if plan_file is not None else None
    # a saved plan was shown when it was made: say which one runs, not all of it again
    show = (lambda plan, _: click.echo(f"Applying {plan_file}: {plan.summary()}")) if saved is not None else \
        (lambda plan, _: click.echo(_render(plan, "text")))
    applied = deployer(app).apply(
        saved, saved_name=str(plan_file), prune=prune, targets=targets, lock_timeout=parse_duration(lock_timeout),
        report=Reporter(notice=click.echo, plan=show, confirm=lambda plan: _confirm(plan, yes), progress=_progress))
    if applied.outcome is None:
        return
    if applied.outcome.error:
        raise applied.outcome.error
    click.secho(f"Apply complete: {len(applied.outcome.done)} step(s) done.", fg="green")


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def status(app: App, fmt: str) -> None:
    """Endpoints, URLs, deployments, model versions, health and traffic, as they run now."""
    from pipeline.apply.observe import used_targets
    from pipeline.cli.wiring import make_targets
    from pipeline.spec.model import ModelRef

    spec = app.spec()
    adapters = make_targets(spec, app.state_dir())
    rows: list[dict[str, Any]] = []
    for name in sorted(used_targets(spec) & set(adapters)):
        endpoints, deployments = adapters[name].observe()
        if spec.targets[name].kind.exports:
            rows += _bundle_rows(name, endpoints, deployments)
            continue
        for endpoint in endpoints:
            mine = [d for d in deployments if d.endpoint == endpoint.name]
            main = max(mine, key=lambda d: endpoint.traffic.get(d.name, 0), default=None)
            served_model = ModelRef.parse(main.model).name if main else None
            rows.append({"endpoint": endpoint.name, "target": name, "url": endpoint.url,
                         "scoring_uri": f"{endpoint.url}/score",
                         "oip_uri": f"{endpoint.url}/v2/models/{served_model}/infer" if main else None,
                         "status": endpoint.status, "auth_mode": endpoint.auth_mode, "drift": list(endpoint.drift),
                         "deployments": [
                             {"name": d.name, "model": d.model, "status": d.status,
                              "ready": f"{d.ready_instances}/{d.instance_count}",
                              "traffic": endpoint.traffic.get(d.name, 0),
                              "mirror": endpoint.mirror_traffic.get(d.name, 0)}
                             for d in mine]})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("Nothing is deployed. Run mlops apply.")
    for row in rows:
        if "bundles" in row:
            _print_bundles(row)
            continue
        click.echo(f"{row['endpoint']}  {row['url']}  ({row['target']}, router {row['status']}, "
                   f"auth {row['auth_mode']})")
        click.echo(f"  scoring URI  {row['scoring_uri']}")
        if row["oip_uri"]:
            click.echo(f"  OIP v2 URI   {row['oip_uri']}")
        for reason in row["drift"]:
            click.secho(f"  ! drift: {reason}; mlops apply heals it", fg="yellow")
        for d in row["deployments"]:
            mirror = f", mirror {d['mirror']}%" if d["mirror"] else ""
            click.echo(f"  {d['name']:<12} {d['model']:<28} {d['status']:<9} ready {d['ready']:<6} "
                       f"traffic {d['traffic']}%{mirror}")


def _bundle_rows(target: str, endpoints, deployments) -> list[dict[str, Any]]:
    """An edge target's endpoints: the bundles written for devices, with their digests and sizes."""
    return [{"endpoint": endpoint.name, "target": target, "bundles": [
        {"name": d.name, "model": d.model, "status": d.status, "folder": d.detail.get("folder"),
         "tarball": d.detail.get("tarball"), "tarball_size": d.detail.get("tarball_size"),
         "image_size": d.detail.get("image_size"), "content_digest": d.detail.get("content_digest"),
         "image": d.detail.get("bundle_image"), "pushed": d.detail.get("pinned_image") if d.detail.get(
             "pinned_image") != d.detail.get("bundle_image") else None, "damaged": d.detail.get("damaged") or []}
        for d in deployments if d.endpoint == endpoint.name]} for endpoint in endpoints]


def _print_bundles(row: dict[str, Any]) -> None:
    click.echo(f"{row['endpoint']}  ({row['target']}, bundles for devices)")
    for b in row["bundles"]:
        click.echo(f"  {b['name']:<12} {b['model']:<28} {b['status']:<9} {(b['content_digest'] or '')[:19]}  "
                   f"{(b['tarball_size'] or 0) / 1e6:.1f} MB (image {(b['image_size'] or 0) / 1e6:.1f} MB)  "
                   f"{Path(b['folder']) / (b['tarball'] or '')}")
        if b["pushed"]:
            click.echo(f"  {'':<12} pushed {b['pushed']}")
        if b["damaged"]:
            click.secho(f"  ! changed outside mlops: {', '.join(b['damaged'])}; mlops apply rewrites it", fg="yellow")


@click.command()
@click.option("--yes", "-y", is_flag=True, help="Destroy without asking.")
@click.option("--purge-data", is_flag=True, help="Also delete the data the endpoints collected (kept by default).")
@click.option("--lock-timeout", default="30s", show_default=True)
@pass_app
def destroy(app: App, yes: bool, purge_data: bool, lock_timeout: str) -> None:
    """Stop every endpoint and deployment that mlops.yaml manages (registered models are kept)."""
    from pipeline.apply.service import Reporter

    service = deployer(app)
    names = [endpoint for _, endpoint in service.managed_endpoints()]
    if not names:
        click.echo("Nothing to destroy.")
        return
    click.echo("Will delete endpoints: " + ", ".join(names) + (" and the data they collected" if purge_data else ""))
    if not yes:
        if not sys.stdin.isatty():
            raise MlopsError("destroy needs confirmation; pass --yes")
        if not click.confirm("Destroy them?", default=False):
            raise MlopsError("destroy cancelled")
    service.destroy(purge_data=purge_data, lock_timeout=parse_duration(lock_timeout),
                    report=Reporter(notice=click.echo))


@click.command()
@click.argument("address", metavar="ENDPOINT/DEPLOYMENT")
@click.option("-n", "--lines", default=50, show_default=True)
@pass_app
def logs(app: App, address: str, lines: int) -> None:
    """The last lines of a deployment's service log."""
    from pipeline.cli.wiring import make_targets

    endpoint, _, deployment = address.partition("/")
    spec = app.spec()
    if endpoint not in spec.endpoints or deployment not in spec.endpoints[endpoint].deployments:
        raise MlopsError(f"no deployment '{address}' in {app.file}; write ENDPOINT/DEPLOYMENT like iris/blue")
    target = make_targets(spec, app.state_dir())[spec.endpoints[endpoint].target]
    click.echo(target.logs(endpoint, deployment, lines))


@click.command("force-unlock")
@click.argument("lock_id")
@pass_app
def force_unlock(app: App, lock_id: str) -> None:
    """Release a lock left by an apply that died (the state lock, or a target's such as a namespace's
    Lease); needs the lock's exact id."""
    what, holder = deployer(app).force_unlock(lock_id)
    click.echo(f"Released {what} held by {holder.get('user')}@{holder.get('host')} pid {holder.get('pid')}.")


COMMANDS = [plan, apply, status, destroy, logs, force_unlock]
