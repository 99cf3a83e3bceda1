"""``mlops promote``: pin a deployment to a registered version through mlops.yaml, optionally as a pull request.

Promotion never touches live state: like rollback it edits mlops.yaml (comments and layout kept,
the result checked by the loader), and the change reaches production through review and merge.
Versions are resolved now (an alias, what another deployment serves) and pinned as numbers, so
the pull request shows exactly what will run.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app
from pipeline.cli.history import edit_checked
from pipeline.errors import MlopsError, ReferenceNotFound
from pipeline.gitops.promote import Promotion, promotion_edits, written_ref
from pipeline.spec.model import ModelRef


def _address(spec, text: str, what: str) -> tuple[str, str]:
    endpoint, _, deployment = text.partition("/")
    if not endpoint or not deployment:
        raise MlopsError(f"{what} '{text}' must look like ENDPOINT/DEPLOYMENT")
    if endpoint not in spec.endpoints:
        known = ", ".join(sorted(spec.endpoints))
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {spec.file} (it has: {known})")
    if deployment not in spec.endpoints[endpoint].deployments:
        known = ", ".join(sorted(spec.endpoints[endpoint].deployments))
        raise ReferenceNotFound(f"endpoint '{endpoint}' has no deployment '{deployment}' (it has: {known})")
    return endpoint, deployment


def _registered(app: App, name: str, version: int) -> None:
    """Refuse a version the registry does not hold (or archived), naming what it does hold."""
    versions = {v.version: v for v in app.registry().list_versions(name, include_archived=True)}
    live = [f"{name}:{v}" for v, record in sorted(versions.items()) if not record.archived]
    known = f"registered: {', '.join(live)}" if live else f"no version of '{name}' is registered"
    if version not in versions:
        raise ReferenceNotFound(f"{name}:{version} is not in the registry ({known})")
    if versions[version].archived:
        raise MlopsError(f"{name}:{version} is archived; promote a live version ({known})")


def _alias(app: App, name: str, alias: str) -> int:
    aliases = app.registry().aliases(name)
    if alias not in aliases:
        known = ", ".join(f"@{a} → {v}" for a, v in sorted(aliases.items())) or "none"
        raise ReferenceNotFound(f"models:/{name}@{alias} is not in the registry ({name}'s aliases: {known})")
    return int(aliases[alias])


def _pinned_in_file(app: App, ref: ModelRef) -> int | None:
    """The version a file reference means now: its number, its alias resolved, or for a bare declared
    model the registered version with the working tree's content."""
    if ref.version is not None:
        return ref.version
    if ref.alias is not None:
        return _alias(app, ref.name, ref.alias)
    spec = app.spec()
    model = spec.models.get(ref.name)
    if model is None or not (spec.root / model.path).exists():
        return None
    from pipeline.registry.hashing import digest_content

    found = app.registry().find(ref.name, digest_content(spec.root / model.path).digest)
    return found.version if found is not None else None


def _served(app: App, endpoint: str, deployment: str) -> tuple[str, int, str]:
    """What ENDPOINT/DEPLOYMENT serves now: as its target reports it, else as the file pins it."""
    spec = app.spec()
    try:
        from pipeline.cli.wiring import make_targets

        target = spec.endpoints[endpoint].target
        _, deployments = make_targets(spec, app.state_dir())[target].observe()
        running = next((d for d in deployments if d.endpoint == endpoint and d.name == deployment), None)
    except Exception as error:  # an unreachable target: the file still says what it should serve
        click.echo(f"note: cannot read target '{spec.endpoints[endpoint].target}' ({error}); "
                   "using what mlops.yaml pins", err=True)
        running = None
    if running is not None:
        ref = ModelRef.parse(running.model)
        if ref.version is not None:
            return ref.name, ref.version, f"target {running.target}"
    ref = spec.endpoints[endpoint].deployments[deployment].model
    version = _pinned_in_file(app, ref)
    if version is None:
        raise MlopsError(f"{endpoint}/{deployment} serves nothing on its target, and mlops.yaml's '{ref}' names no "
                         "registered version yet; apply it first or promote with --to VERSION")
    return ref.name, version, f"mlops.yaml, which pins {ref}"


def _resolve(app: App, endpoint: str, deployment: str, to: str | None, source: str | None,
             traffic: int | None) -> Promotion:
    spec = app.spec()
    current = spec.endpoints[endpoint].deployments[deployment].model
    if (to is None) == (source is None):
        raise MlopsError("say what to promote: --to VERSION|NAME:VERSION|models:/NAME/VERSION|models:/NAME@ALIAS, "
                         "or --from ENDPOINT/DEPLOYMENT")
    if source is not None:
        from_endpoint, from_deployment = _address(spec, source, "--from")
        name, version, where = _served(app, from_endpoint, from_deployment)
        click.echo(f"{from_endpoint}/{from_deployment} serves {name}:{version} (read from {where}).", err=True)
        how = f"{from_endpoint}/{from_deployment}"
    elif to is not None and to.isdigit():
        name, version, how = current.name, int(to), f"version {to}"
    else:
        try:
            ref = ModelRef.parse(str(to))
        except ValueError as error:
            raise MlopsError(f"--to {to}: {error}") from None
        if ref.alias is not None:
            name, version = ref.name, _alias(app, ref.name, ref.alias)
            click.echo(f"{ref} points at version {version} now; pinning {ref.name}:{version}.", err=True)
        elif ref.version is not None:
            name, version = ref.name, ref.version
        else:
            raise MlopsError(f"--to {to} names no version; say {to}:N, models:/{to}/N or models:/{to}@ALIAS")
        how = str(ref)
    _registered(app, name, version)
    return Promotion(endpoint, deployment, name, version, written_ref(current, name, version, name in spec.models),
                     how, traffic)


def _user(root: Path) -> str:
    """Who promotes: the Actions actor in CI, else git's user.name, else the login."""
    if os.environ.get("GITHUB_ACTOR"):
        return os.environ["GITHUB_ACTOR"]
    try:
        import git

        return str(git.Repo(root, search_parent_directories=True).config_reader().get_value("user", "name"))
    except Exception:  # no repository or no user.name configured
        return getpass.getuser()


@click.command()
@click.argument("address", metavar="ENDPOINT/DEPLOYMENT")
@click.option("--to", "to", metavar="VERSION|NAME:V|models:/NAME/V|models:/NAME@ALIAS",
              help="The version to pin (a bare number is a version of the deployment's model; an alias is "
                   "resolved now and its version pinned).")
@click.option("--from", "source", metavar="ENDPOINT/DEPLOYMENT",
              help="Pin what that deployment serves now (its target's report, else what mlops.yaml pins).")
@click.option("--traffic", type=click.IntRange(0, 100), help="Also set the deployment's traffic share (%); the "
              "remainder goes to the one other deployment that serves, and is refused as ambiguous otherwise.")
@click.option("--open-pr", is_flag=True, help="Commit on a new branch, push it to origin and open a pull request "
              "(GITHUB_TOKEN; GITHUB_REPOSITORY or the origin URL; GITHUB_API_URL).")
@click.option("--branch", help="The branch for --open-pr (default mlops/promote-ENDPOINT-DEPLOYMENT-VERSION).")
@click.option("--base", help="The branch the pull request targets (default: the checked-out branch).")
@pass_app
def promote(app: App, address: str, to: str | None, source: str | None, traffic: int | None, open_pr: bool,
            branch: str | None, base: str | None) -> None:
    """Pin ENDPOINT/DEPLOYMENT to a registered model version in mlops.yaml (and propose it as a pull request)."""
    spec = app.spec()
    endpoint, deployment = _address(spec, address, "the deployment")
    promotion = _resolve(app, endpoint, deployment, to, source, traffic)
    path = Path(app.file)
    text = path.read_text()
    edits = promotion_edits(spec, promotion)
    what = f"{endpoint}/{deployment} → {promotion.ref}" + (f" at {traffic}%" if traffic is not None else "")
    if not edits:
        click.echo(f"{app.file} already pins {what}; nothing to change" + (", no pull request opened." if open_pr
                                                                            else "."))
        return
    new_text, diff = edit_checked(path, text, edits, f"promoting {what}")
    click.echo(diff, nl=False)
    trailer = promotion.trailer(_user(spec.root))
    message = f"{promotion.title()}\n\nFrom {promotion.source}.\n\n{trailer}\n"
    if not open_pr:
        path.write_text(new_text)
        click.echo(f"Wrote {app.file}. Commit it (the trailer lets mlops history show the promotion):\n"
                   f"  git commit -m {promotion.title()!r} -m {trailer!r} -- {app.file}", err=True)
        return
    _open_pr(app, promotion, path, new_text, message, branch or promotion.branch(), base)


def _open_pr(app: App, promotion: Promotion, path: Path, text: str, message: str, branch: str,
             base: str | None) -> None:
    from pipeline.gitops.github import DEFAULT_API, GitHub
    from pipeline.gitops.lineage import repository_name
    from pipeline.gitops.promote import base_branch, commit_and_push

    root = app.spec().root
    github = GitHub(os.environ.get("GITHUB_TOKEN", ""), repository_name(root),
                    os.environ.get("GITHUB_API_URL") or DEFAULT_API)  # checked before anything is pushed
    base = base or base_branch(root)
    base_sha = commit_and_push(root, path, text, branch, message)
    click.echo(f"Pushed {branch} to origin.", err=True)
    body = _body(app, promotion, path, base_sha)
    action, number, url = github.open_pull_request(branch, base, promotion.title(), body)
    click.echo(f"{action.capitalize()} pull request #{number} {url}".rstrip())


def _body(app: App, promotion: Promotion, path: Path, base_sha: str) -> str:
    """The pull request's description: the desired-state review, the plan, and the version's lineage."""
    from pipeline.cli.deploy import deployer
    from pipeline.gitops.promote import lineage_section
    from pipeline.gitops.review import base_section
    from pipeline.plan import render_markdown
    from pipeline.plan.render import MARKER

    fresh = App(file=app.file, debug=app.debug)  # the promoted file, not the one loaded before the edit
    parts = [f"Promotes `{promotion.endpoint}/{promotion.deployment}` to `{promotion.ref}` (from "
             f"{promotion.source}){'' if promotion.traffic is None else f' at {promotion.traffic}% traffic'}.", ""]
    parts.append(base_section(fresh.spec().root, path, base_sha[:12], fresh.spec(), markdown=True))
    try:
        parts.append(render_markdown(deployer(fresh).plan()).replace(MARKER, "").strip() + "\n")
    except Exception as error:  # no credentials, an unreachable target: the review above still stands
        parts.append(f"### mlops plan\n\n**No plan:** it could not be made here ({error}). The plan comment of the "
                     "pull request, or the apply on merge, shows it.\n")
    registry = app.registry()
    record = registry.get(promotion.name, promotion.version)
    run_info = getattr(registry, "run_info", None)
    try:
        run = run_info(promotion.name, promotion.version) if run_info is not None else None
    except MlopsError:
        run = None
    parts.append(lineage_section(record, run))
    return "\n".join(parts)


COMMANDS = [promote]
