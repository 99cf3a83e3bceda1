"""``open_registry`` picks the backend from ``registry:``; hashing the working tree needs no registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import MlopsError
from pipeline.registry import LocalRegistry, open_registry
from pipeline.registry.hashing import working_tree_digest


def test_a_path_opens_the_embedded_registry_relative_to_the_repository(tmp_path: Path):
    registry = open_registry(".mlops/registry", root=tmp_path)
    assert isinstance(registry, LocalRegistry) and registry.root == (tmp_path / ".mlops" / "registry").resolve()


@pytest.mark.parametrize("location", ["mlflow://tracking.example.com", "s3://bucket/models"])
def test_an_unknown_scheme_names_what_is_supported(tmp_path: Path, location: str):
    with pytest.raises(MlopsError) as error:
        open_registry(location, root=tmp_path)
    scheme = location.split("://")[0]
    assert f"'{scheme}://' is not supported" in str(error.value) and "folder path" in str(error.value)
    assert not any(tmp_path.iterdir())  # nothing was created


def test_working_tree_digest_matches_the_registered_version(tmp_path: Path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\0" * 100)
    registry = LocalRegistry(tmp_path / "registry")
    version, _ = registry.register("m", model, flavor="python")
    assert working_tree_digest(model).digest == version.digest
    assert working_tree_digest(model, tmp_path / "state").digest == version.digest
    assert (tmp_path / "state" / "hashcache.db").exists()
    assert registry.digest(model).digest == version.digest  # kept for callers
