"""What a change does to the desired state, for reviewers: mlops.yaml at a base ref against now.

Shown above the plan by ``mlops plan --base REF``: models added or changed (content digests,
flavor), environments (a diff of their requirements), endpoints, deployments and traffic. Files
at the base ref are read from git (GitPython), never checked out.
"""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from pipeline.errors import GitError, MlopsError
from pipeline.plan.render import format_value
from pipeline.registry.hashing import digest_content, digest_of_bytes


def _tree_files(commit, path: str) -> dict[str, bytes]:
    """The files under ``path`` in a commit, by path relative to it."""
    try:
        node = commit.tree / path
    except KeyError:
        return {}
    if node.type == "blob":
        return {Path(path).name: node.data_stream.read()}
    return {item.path[len(path) + 1:]: item.data_stream.read() for item in node.traverse() if item.type == "blob"}




def _spec_at(repo, ref: str, spec_path: str):
    from pipeline.spec.loader import load

    try:
        commit = repo.commit(ref)
    except Exception as error:  # GitPython raises several kinds for an unknown ref
        raise GitError(f"cannot read git ref '{ref}': {error}") from None
    try:
        text = (commit.tree / spec_path).data_stream.read()  # bytes: the loader positions encoding errors
    except KeyError:
        return commit, None
    with tempfile.TemporaryDirectory() as folder:  # paths are checked against the ref's own tree
        root = Path(folder)
        for blob in commit.tree.traverse():
            if blob.type == "blob" and blob.size < 50 * 1024 * 1024:
                target = root / blob.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob.data_stream.read())
        try:
            return commit, load(root / spec_path, text=text, name=f"{spec_path}@{ref}")
        except MlopsError:
            return commit, None


def _requirements(root: Path, commit, env) -> str:
    if env is None or not env.requirements:
        return ""
    if commit is None:
        path = root / env.requirements
        return path.read_text() if path.exists() else ""
    try:
        return (commit.tree / env.requirements).data_stream.read().decode()
    except KeyError:
        return ""


def base_section(root: Path, spec_file: Path, base_ref: str, head, markdown: bool) -> str:
    """The desired-state change from ``base_ref`` to the working tree, rendered for review."""
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except git.InvalidGitRepositoryError:
        raise GitError(f"--base needs a git repository; {root} is not in one") from None
    top = Path(repo.working_tree_dir or root).resolve()
    spec_path = str(spec_file.resolve().relative_to(top))
    prefix = str(Path(spec_path).parent) if Path(spec_path).parent != Path(".") else ""
    commit, base = _spec_at(repo, base_ref, spec_path)
    lines: list[str] = []

    def model_digest_at_base(path: str) -> str | None:
        return digest_of_bytes(_tree_files(commit, f"{prefix}/{path}" if prefix else path))

    def model_digest_now(path: str) -> str | None:
        folder = head.root / path
        return digest_content(folder).digest if folder.exists() else None  # exactly what the registry computes

    old_models = base.models if base else {}
    for name, model in sorted(head.models.items()):
        now = model_digest_now(model.path)
        before = old_models.get(name)
        if before is None:
            lines.append(f"+ model {name} ({model.flavor}, content {str(now)[:19]})")
            continue
        then = model_digest_at_base(before.path)
        if then != now or before.flavor != model.flavor:
            flavor = f", flavor {before.flavor} → {model.flavor}" if before.flavor != model.flavor else ""
            lines.append(f"~ model {name}: content {str(then)[:19]} → {str(now)[:19]}{flavor}")
    for name in sorted(set(old_models) - set(head.models)):
        lines.append(f"- model {name}")
    old_envs = base.environments if base else {}
    for name, env in sorted(head.environments.items()):
        old = _requirements(root, commit, old_envs.get(name))
        new = _requirements(root, None, env)
        if name not in old_envs:
            lines.append(f"+ environment {name}")
        elif old != new or old_envs[name] != env:
            lines.append(f"~ environment {name}")
            lines += ["    " + line.rstrip("\n") for line in difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), "requirements (base)", "requirements (this change)")]
    old_endpoints = base.endpoints if base else {}
    for name, endpoint in sorted(head.endpoints.items()):
        before = old_endpoints.get(name)
        for dname, deployment in sorted(endpoint.deployments.items()):
            was = before.deployments.get(dname) if before is not None else None
            if was is None:
                lines.append(f"+ deployment {name}/{dname} ({deployment.model})")
            elif was != deployment:
                what = [f"model {was.model} → {deployment.model}"] if was.model != deployment.model else []
                if was.instance_count != deployment.instance_count:
                    what.append(f"instances {was.instance_count} → {deployment.instance_count}")
                lines.append(f"~ deployment {name}/{dname}: " + (", ".join(what) or "settings changed"))
        if before is not None:
            for dname in sorted(set(before.deployments) - set(endpoint.deployments)):
                lines.append(f"- deployment {name}/{dname}")
        if before is None or dict(before.traffic) != dict(endpoint.traffic):
            old_split = dict(before.traffic) if before else None
            lines.append(f"~ traffic {name}: {format_value(old_split)} → {format_value(dict(endpoint.traffic))}")
        if before is not None and dict(before.mirror_traffic) != dict(endpoint.mirror_traffic):
            lines.append(f"~ mirror {name}: {format_value(dict(before.mirror_traffic))} → "
                         f"{format_value(dict(endpoint.mirror_traffic))}")
    for name in sorted(set(old_endpoints) - set(head.endpoints)):
        lines.append(f"- endpoint {name}")
    title = f"Changes to {spec_path} since {base_ref}" + ("" if base else " (no valid mlops.yaml there)")
    if not lines:
        lines = ["no change to the desired state"]
    if markdown:
        return f"### {title}\n\n```diff\n" + "\n".join(lines) + "\n```\n"
    return f"# {title}\n" + "\n".join(f"  {line}" for line in lines) + "\n"
