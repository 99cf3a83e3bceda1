"""``MlflowRegistry`` (a real ``mlflow server``'s Model Registry) passes the registry contract."""

from __future__ import annotations

import pytest

from tests.registry.contract import RegistryContract

pytest.importorskip("mlflow")


def delete_every_model(client) -> None:
    """The contract starts from an empty registry; the session's server belongs to the tests."""
    for model in client.search_registered_models(max_results=1000):
        client.delete_registered_model(model.name)


class TestMlflowRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, mlflow_server, tmp_path):
        from pipeline.registry.mlflow import MlflowRegistry

        registry = MlflowRegistry(mlflow_server, tmp_path / "cache", project="contract")
        yield registry
        delete_every_model(registry.client)

    @pytest.fixture
    def tamper(self, tmp_path):
        def overwrite(registry, version, data: bytes) -> None:
            """Overwrite the file in the version's run artifacts, as anyone with write access to MLflow can."""
            entry = version.files[0]
            run_id = registry.client.get_model_version(version.name, str(version.version)).run_id
            local = tmp_path / "tampered" / entry.path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            parent = "/".join(["model", *entry.path.split("/")[:-1]])
            registry.client.log_artifact(run_id, str(local), parent)
        return overwrite
