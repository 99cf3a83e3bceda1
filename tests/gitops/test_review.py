"""`mlops plan --base REF`: what the change does to the desired state, from a real git history."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
from click.testing import CliRunner

from pipeline.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def test_base_shows_model_traffic_and_requirements_changes(tmp_path):
    shutil.copytree(REPO / "models", tmp_path / "models")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    spec = (REPO / "mlops.yaml").read_text()
    (tmp_path / "mlops.yaml").write_text(spec)
    repo = git.Repo.init(tmp_path, initial_branch="main")
    repo.git.add(A=True)
    repo.index.commit("base")
    (tmp_path / "models" / "iris" / "NOTES.md").write_text("retrained\n")
    requirements = tmp_path / "environments" / "sklearn" / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("numpy==2.4.6", "numpy==2.4.7"))
    (tmp_path / "mlops.yaml").write_text(spec.replace("instance_count: 1", "instance_count: 2"))
    repo.git.add(A=True)
    repo.index.commit("head")

    result = CliRunner().invoke(cli, ["--file", str(tmp_path / "mlops.yaml"), "plan", "--base", "HEAD~1"])
    assert result.exit_code == 0, result.output
    assert "Changes to mlops.yaml since HEAD~1" in result.output
    assert "~ model iris-classifier: content sha256:" in result.output
    assert "-numpy==2.4.6" in result.output and "+numpy==2.4.7" in result.output
    assert "~ deployment iris/blue: instances 1 → 2" in result.output


def test_base_without_a_spec_shows_everything_added(tmp_path):
    repo = git.Repo.init(tmp_path, initial_branch="main")
    (tmp_path / "README").write_text("x")
    repo.git.add(A=True)
    repo.index.commit("empty")
    shutil.copytree(REPO / "models", tmp_path / "models")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    shutil.copy(REPO / "mlops.yaml", tmp_path / "mlops.yaml")
    result = CliRunner().invoke(cli, ["--file", str(tmp_path / "mlops.yaml"), "plan", "--base", "HEAD",
                                      "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "```diff" in result.output and "+ model iris-classifier" in result.output
    assert "+ deployment iris/blue" in result.output
    assert "~ traffic iris: none → {blue: 100}" in result.output  # as mlops.yaml spells it, not Python


def test_review_and_registry_agree_on_a_model_folder_holding_a_cache(tmp_path):
    """Caches (``__pycache__``, ``*.pyc``) are no model content for the review or for the registry."""
    from pipeline.gitops.review import base_section
    from pipeline.registry.hashing import digest_content, digest_of_bytes
    from pipeline.spec.loader import load

    shutil.copytree(REPO / "models", tmp_path / "models")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    (tmp_path / "mlops.yaml").write_text((REPO / "mlops.yaml").read_text())
    cache = tmp_path / "models" / "iris" / "__pycache__"
    cache.mkdir()
    (cache / "train.cpython-311.pyc").write_bytes(b"\x00compiled")
    repo = git.Repo.init(tmp_path, initial_branch="main")
    repo.git.add(A=True, force=True)
    repo.index.commit("base, cache committed by accident")
    (cache / "train.cpython-311.pyc").write_bytes(b"\x00compiled again")
    spec = load(tmp_path / "mlops.yaml")
    section = base_section(tmp_path, tmp_path / "mlops.yaml", "HEAD", spec, markdown=False)
    assert "~ model iris-classifier" not in section  # only the cache changed
    folder = tmp_path / "models" / "iris"
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert digest_of_bytes(files) == digest_content(folder).digest
