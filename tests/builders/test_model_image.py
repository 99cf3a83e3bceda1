"""Model image naming and its build context (no engine needed)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from pipeline.builders.model_image import context, model_image_ref, repository_of
from pipeline.spec.target_kinds import TARGET_KINDS
from pipeline.targets.kubernetes import manifests

DIGEST, ENV_ID = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32


def test_reference_names_model_version_and_both_digests():
    ref = model_image_ref("127.0.0.1:5000/ml/", "Iris_Classifier", 3, DIGEST, ENV_ID)
    assert ref == "127.0.0.1:5000/ml/mlops-model-iris-classifier:3-abababababab-cdcdcdcdcdcd"
    assert repository_of(ref) == "127.0.0.1:5000/ml/mlops-model-iris-classifier"
    assert repository_of("127.0.0.1:5000/ml/x@sha256:" + "0" * 64) == "127.0.0.1:5000/ml/x"


def test_the_kubernetes_kind_bakes_the_model_where_the_manifests_read_it():
    assert TARGET_KINDS["kubernetes"].model_dir == manifests.MODEL_DIR
    assert TARGET_KINDS["docker"].model_dir is None and TARGET_KINDS["kubernetes"].adapter


def test_context_is_one_copy_read_only_root_owned_and_deterministic(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.skops").write_bytes(b"weights")
    (tmp_path / "sub" / "notes.md").write_text("x")
    first = context("repo/env@sha256:" + "0" * 64, "/var/lib/mlops/model", {"mlops.model": "iris"}, tmp_path)
    again = context("repo/env@sha256:" + "0" * 64, "/var/lib/mlops/model", {"mlops.model": "iris"}, tmp_path)
    assert first.getvalue() == again.getvalue()
    with tarfile.open(fileobj=first) as tar:
        members = {m.name: m for m in tar.getmembers()}
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
    assert dockerfile.splitlines()[:2] == ["FROM repo/env@sha256:" + "0" * 64, "COPY model /var/lib/mlops/model"]
    assert [line.split()[0] for line in dockerfile.splitlines()[2:]] == ["LABEL"]
    assert members["model/model.skops"].mode == 0o444 and members["model/sub"].mode == 0o555
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
