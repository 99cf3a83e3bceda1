"""Lineage read from real git repositories: clean, dirty, and outside git."""

from __future__ import annotations

import git
import pytest

from pipeline.errors import GitError
from pipeline.gitops.lineage import read_lineage, require_clean


@pytest.fixture
def repo(tmp_path):
    repository = git.Repo.init(tmp_path, initial_branch="main")
    (tmp_path / "mlops.yaml").write_text("version: 1\n")
    repository.index.add(["mlops.yaml"])
    repository.index.commit("first", author=git.Actor("Ada", "ada@example.com"))
    repository.create_remote("origin", "https://example.com/ml/models.git")
    return repository


def test_clean_tree(repo, tmp_path):
    lineage = read_lineage(tmp_path, [tmp_path / "mlops.yaml"])
    assert lineage.commit == repo.head.commit.hexsha and lineage.branch == "main"
    assert lineage.author == "Ada <ada@example.com>" and lineage.dirty is False
    assert lineage.remote_url == "https://example.com/ml/models.git" and lineage.spec_path == "mlops.yaml"
    require_clean(tmp_path)


def test_dirty_tree_is_recorded_and_refused_when_clean_is_required(repo, tmp_path):
    (tmp_path / "mlops.yaml").write_text("version: 1\nmodels: {}\n")
    assert read_lineage(tmp_path).dirty is True
    with pytest.raises(GitError, match="uncommitted changes.*mlops.yaml"):
        require_clean(tmp_path)


def test_outside_git_everything_is_unknown(tmp_path):
    assert read_lineage(tmp_path).commit is None
