"""``InMemoryRegistry`` (the fake shipped with the package) passes the registry contract."""

from __future__ import annotations

import pytest

from pipeline.registry.memory import InMemoryRegistry
from tests.registry.contract import RegistryContract


class TestInMemoryRegistry(RegistryContract):
    @pytest.fixture
    def registry(self):
        registry = InMemoryRegistry()
        yield registry
        registry.close()

    @pytest.fixture
    def tamper(self):
        def overwrite(registry: InMemoryRegistry, version, data: bytes) -> None:
            registry.blobs[version.files[0].digest] = data
        return overwrite


def test_close_removes_the_materialized_folders(tmp_path):
    registry = InMemoryRegistry()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w").write_text("1")
    registry.register("iris", tmp_path / "a", flavor="sklearn")
    folder = registry.materialize("iris", 1)
    registry.close()
    assert not folder.exists()
