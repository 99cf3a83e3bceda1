"""``mlops promote``: the mlops.yaml edits that pin a deployment to a version, and the git side of it.

A promotion is an ordinary reviewed change: the file is edited (``spec.editor``), committed on a
branch whose message carries a ``Mlops-Promote:`` trailer, pushed and proposed as a pull request.
The trailer is how ``mlops history`` later tells which apply was a promotion: git already keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import GitError, MlopsError
from pipeline.spec.model import ModelRef

TRAILER = "Mlops-Promote"
_TRAILER_LINE = re.compile(rf"^\s*{TRAILER}:\s*(?P<text>\S.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Promotion:
    """What is promoted where: ``ref`` is the text written into mlops.yaml (``iris:3``, ``models:/fraud/2``)."""

    endpoint: str
    deployment: str
    name: str
    version: int
    ref: str
    source: str  # how the version was chosen, for people: "models:/fraud@champion", "iris/green", "version 3"
    traffic: int | None = None

    def trailer(self, user: str) -> str:
        return f"{TRAILER}: {self.endpoint}/{self.deployment} {self.name}:{self.version} from {self.source} by {user}"

    def branch(self) -> str:
        return f"mlops/promote-{self.endpoint}-{self.deployment}-{self.version}"

    def title(self) -> str:
        return f"Promote {self.endpoint}/{self.deployment} to {self.name}:{self.version}"


def written_ref(current: ModelRef, name: str, version: int, declared: bool) -> str:
    """The pin in the form the file already uses: ``name:V`` for a model this file declares, else the
    registry's ``models:/name/V`` (also kept when the deployment already names the model that way)."""
    if declared and not (current.registry_only and current.name == name):
        return f"{name}:{version}"
    return f"models:/{name}/{version}"


def rebalance(traffic: Mapping[str, int], deployments: list[str], promoted: str, share: int) -> dict[str, int]:
    """The endpoint's split with ``promoted`` at ``share`` %: the remainder goes to the one other deployment
    that can take it (the only one serving, or the only other one at all); with several it is ambiguous
    and refused, since any split mlops picked would be a guess reviewers might not notice."""
    if not 0 <= share <= 100:
        raise MlopsError(f"--traffic {share}: a share is a percentage from 0 to 100")
    split = {name: traffic.get(name, 0) for name in deployments}
    others = [name for name in deployments if name != promoted]
    split[promoted] = share
    rest = 100 - share
    if sum(v for k, v in split.items() if k != promoted) == rest:
        return split
    if rest == 0:
        return {name: (share if name == promoted else 0) for name in deployments}
    serving = [name for name in others if traffic.get(name, 0) > 0]
    takers = serving if len(serving) == 1 else (others if len(others) == 1 else [])
    if not takers:
        now = ", ".join(f"{k}: {v}" for k, v in split.items() if k != promoted) or "none"
        where = f"{len(serving)} other deployments serve" if serving else "no other deployment serves"
        raise MlopsError(f"--traffic {share} leaves {rest}% to share, and {where} ({now}); which one takes it is "
                         f"ambiguous: set the traffic of the endpoint in mlops.yaml by hand")
    for name in others:
        split[name] = rest if name == takers[0] else 0
    return split


def promotion_edits(spec, promotion: Promotion) -> list[tuple[tuple[str, ...], Any]]:
    """The (path, value) edits of mlops.yaml, for ``spec.editor``; empty when it already says this."""
    endpoint = spec.endpoints[promotion.endpoint]
    base = ("endpoints", promotion.endpoint)
    edits: list[tuple[tuple[str, ...], Any]] = []
    if str(endpoint.deployments[promotion.deployment].model) != promotion.ref:
        edits.append((base + ("deployments", promotion.deployment, "model"), promotion.ref))
    if promotion.traffic is not None:
        split = rebalance(dict(endpoint.traffic), sorted(endpoint.deployments), promotion.deployment,
                          promotion.traffic)
        for name, share in sorted(split.items()):
            if endpoint.traffic.get(name, 0) != share:
                edits.append((base + ("traffic", name), share))
    return edits


def lineage_section(version, run: Mapping[str, Any] | None) -> str:
    """Where the promoted version came from, in markdown: its git lineage, its run and the run's metrics."""
    lines = [f"### Lineage of {version.name}:{version.version}", ""]
    lineage = dict(version.lineage or {})
    facts = [("commit", lineage.get("commit")), ("branch", lineage.get("branch")), ("author", lineage.get("author")),
             ("registered", version.created or None), ("content", version.digest or None)]
    run = dict(run or {})
    facts.append(("run id", run.get("run_id")))
    lines += [f"- {key}: `{value}`" for key, value in facts if value]
    metrics = dict(run.get("metrics") or {})
    tags = {k: v for k, v in dict(version.tags or {}).items() if not k.startswith("mlflow.")}
    if metrics:
        lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    if tags:
        lines += ["", "| tag | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(tags.items())]
    if len(lines) == 2:
        lines.append("The registry records no lineage for this version.")
    return "\n".join(lines) + "\n"


def _repo(root: Path):
    import git

    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(f"--open-pr needs a git repository; {root} is not in one") from None


def base_branch(root: Path) -> str:
    """The branch the pull request goes into: the checked-out one (CI checks the default branch out)."""
    import os

    repo = _repo(root)
    try:
        return repo.active_branch.name
    except TypeError:  # detached HEAD
        if os.environ.get("GITHUB_REF_NAME"):
            return os.environ["GITHUB_REF_NAME"]
        raise GitError("HEAD is detached: check out the branch to promote on, or pass --base BRANCH") from None


def commit_and_push(root: Path, spec_file: Path, text: str, branch: str, message: str) -> str:
    """Write ``text`` to ``spec_file`` on a new ``branch`` from HEAD, commit it alone, push it to origin.

    Refuses uncommitted changes to the file (they would ride along unreviewed). The branch belongs to
    mlops, so a re-run resets it to this commit and force-pushes it. Returns the base commit's SHA.
    """
    import git

    repo = _repo(root)
    top = Path(repo.working_tree_dir or root).resolve()
    relative = str(spec_file.resolve().relative_to(top))
    if repo.git.status("--porcelain", "--", relative):
        raise GitError(f"{relative} has uncommitted changes; commit or stash them before mlops promote --open-pr")
    if "origin" not in [remote.name for remote in repo.remotes]:
        raise GitError("the repository has no 'origin' remote to push the promotion branch to")
    try:
        base = repo.head.commit.hexsha
        repo.git.checkout("-B", branch)
        spec_file.write_text(text)
        repo.git.add("--", relative)
        repo.git.commit("-m", message, "--", relative)
        repo.git.push("--force", "origin", f"HEAD:refs/heads/{branch}")
    except git.GitCommandError as error:
        why = (error.stderr or str(error)).strip().splitlines()
        raise GitError(f"git {error.command[1] if len(error.command) > 1 else ''} failed: "
                       f"{why[-1] if why else error}") from None
    return base


def promotions_of(root: Path, commit: str) -> list[str]:
    """The ``Mlops-Promote`` trailers an applied commit brought: its own message, or for a merge commit
    every commit the merge brought in (``git log C^1..C``). Unknown commits bring none."""
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
        parents = repo.git.rev_list("--parents", "-n", "1", commit).split()[1:]
        messages = repo.git.log("--format=%B", f"{commit}^1..{commit}" if len(parents) > 1 else "-1",
                                *([] if len(parents) > 1 else [commit]))
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, ValueError):
        return []
    found = [match.group("text") for match in _TRAILER_LINE.finditer(messages)]
    return list(dict.fromkeys(found))
