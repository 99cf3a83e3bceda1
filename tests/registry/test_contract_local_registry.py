"""``LocalRegistry`` (SQLite and a blob store on disk) passes the registry contract."""

from __future__ import annotations

import os

import pytest

from pipeline.registry import LocalRegistry
from tests.registry.contract import RegistryContract


class TestLocalRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path):
        registry = LocalRegistry(tmp_path / "registry")
        yield registry
        registry.close()

    @pytest.fixture
    def tamper(self):
        def overwrite(registry: LocalRegistry, version, data: bytes) -> None:
            blob = registry._blob(version.files[0].digest)
            os.chmod(blob, 0o644)
            blob.write_bytes(data)
        return overwrite
