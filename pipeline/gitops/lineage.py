"""Lineage: which commit, branch and author a model version or an apply came from (GitPython).

Outside a git repository every field is None: registering still works, and says so. A dirty
working tree is allowed locally but recorded; ``require_clean`` (what CI's ``--require-clean``
uses) refuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import GitError


@dataclass(frozen=True)
class Lineage:
    commit: str | None = None
    branch: str | None = None
    author: str | None = None
    dirty: bool | None = None
    remote_url: str | None = None
    spec_path: str | None = None  # mlops.yaml, relative to the repository root

    def to_dict(self) -> dict:
        return asdict(self)


def _repo(folder: Path):
    import git

    try:
        return git.Repo(folder, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def read_lineage(folder: Path, paths: list[Path] | None = None) -> Lineage:
    """Git facts of the repository holding ``folder``; ``paths[0]`` is recorded relative to its root."""
    import git

    repo = _repo(folder)
    if repo is None:
        return Lineage()
    try:
        head = repo.head.commit
    except ValueError:  # a repository without commits
        return Lineage(dirty=True)
    try:
        branch = repo.active_branch.name
    except TypeError:  # detached HEAD, as in CI checkouts
        branch = None
    remote = next(iter(repo.remotes), None)
    root = Path(repo.working_tree_dir).resolve()
    spec_path = None
    if paths:
        resolved = (Path(folder) / paths[0]).resolve() if not Path(paths[0]).is_absolute() else Path(paths[0])
        spec_path = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else None
    try:
        url = remote.url if remote else None
    except git.GitCommandError:
        url = None
    return Lineage(commit=head.hexsha, branch=branch, author=f"{head.author.name} <{head.author.email}>",
                   dirty=repo.is_dirty(untracked_files=True), remote_url=url, spec_path=spec_path)


def require_clean(folder: Path) -> None:
    """Refuse uncommitted changes: what is applied must be exactly a commit."""
    repo = _repo(folder)
    if repo is None:
        raise GitError(f"{folder} is not in a git repository; --require-clean needs one")
    if repo.is_dirty(untracked_files=True):
        changed = [item.a_path for item in repo.index.diff(None)] + repo.untracked_files
        raise GitError("the working tree has uncommitted changes (" + ", ".join(changed[:5])
                       + (", …" if len(changed) > 5 else "") + "); commit them or drop --require-clean")


def repository_name(folder: Path) -> str:
    """The repository's name as every clone and CI runner sees it: ``GITHUB_REPOSITORY`` in GitHub
    Actions, else ``owner/name`` from the origin remote's URL, else the folder's name."""
    import os

    if os.environ.get("GITHUB_REPOSITORY"):
        return os.environ["GITHUB_REPOSITORY"]
    repo = _repo(folder)
    remote = next((r for r in repo.remotes if r.name == "origin"), None) if repo is not None else None
    if remote is not None:
        try:
            url = remote.url
        except Exception:  # GitPython raises several kinds for an unreadable remote
            url = ""
        path = url.rstrip("/").removesuffix(".git").replace(":", "/").split("/")
        parts = [p for p in path if p]
        if len(parts) >= 2:
            return "/".join(parts[-2:])
    root = Path(repo.working_tree_dir) if repo is not None and repo.working_tree_dir else Path(folder)
    return root.resolve().name
