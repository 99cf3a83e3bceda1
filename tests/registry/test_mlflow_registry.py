"""What ``MlflowRegistry`` adds to the contract: what MLflow itself shows, MLflow-native versions, aliases
shared by projects, races between processes, and a server that is not there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.errors import IntegrityError, ReferenceNotFound, RegistryError
from tests.registry.contract import model
from tests.registry.test_contract_mlflow_registry import delete_every_model

pytest.importorskip("mlflow")

LINEAGE = {"commit": "0123abc", "branch": "main", "author": "Ann <ann@example.com>", "dirty": False,
           "model_path": "models/iris"}


@pytest.fixture
def registry(mlflow_server, tmp_path):
    from pipeline.registry.mlflow import MlflowRegistry

    registry = MlflowRegistry(mlflow_server, tmp_path / "cache", project="shop")
    yield registry
    delete_every_model(registry.client)


def test_lineage_tags_and_aliases_are_what_the_mlflow_ui_shows(registry, tmp_path):
    version, _ = registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn", tags={"owner": "ds"},
                                   lineage=LINEAGE, signature={"inputs": [{"type": "double"}]})
    registry.set_usage({"iris/blue": ("iris", 1)})
    raw = registry.client.get_model_version("iris", "1")
    assert raw.tags["mlops.lineage.commit"] == "0123abc" and raw.tags["mlops.lineage.model_path"] == "models/iris"
    assert raw.tags["mlops.lineage.dirty"] == "False" and raw.tags["owner"] == "ds"
    assert raw.tags["mlops.digest"] == version.digest and raw.tags["mlops.flavor"] == "sklearn"
    assert json.loads(raw.tags["mlops.files"]) == [["w", version.files[0].digest, 1]]
    assert registry.client.get_registered_model("iris").aliases == {"iris-blue": "1"}
    again = registry.get("iris", 1)
    assert dict(again.lineage) == LINEAGE and again.signature == {"inputs": [{"type": "double"}]}
    assert dict(again.tags) == {"owner": "ds"}  # mlops' own tags are not the user's


def test_resolve_alias_and_a_missing_one_names_the_existing(registry, tmp_path):
    registry.register("fraud", model(tmp_path / "a", w="1"), flavor="sklearn")
    registry.register("fraud", model(tmp_path / "a", w="2"), flavor="sklearn")
    registry.client.set_registered_model_alias("fraud", "champion", "2")
    assert registry.resolve_alias("fraud", "champion") == 2
    with pytest.raises(ReferenceNotFound, match="fraud@challenger .*fraud@champion"):
        registry.resolve_alias("fraud", "challenger")


def test_a_version_being_deployed_is_protected_without_unprotecting_the_served_one(registry, tmp_path):
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
    registry.set_usage({"iris/blue": ("iris", 1)})
    registry.add_usage("iris/blue (being deployed)", "iris", 2)
    assert registry.users("iris", 1) == ["iris/blue"]
    assert registry.users("iris", 2) == ["iris/blue (being deployed)"]
    assert registry.client.get_registered_model("iris").aliases == {"iris-blue": "1", "iris-blue-next": "2"}
    registry.set_usage({"iris/blue": ("iris", 2)})
    assert registry.client.get_registered_model("iris").aliases == {"iris-blue": "2"}
    assert registry.users("iris", 1) == [] and registry.users("iris", 2) == ["iris/blue"]


def test_two_projects_on_one_server_keep_their_own_aliases(registry, mlflow_server, tmp_path):
    from pipeline.registry.mlflow import MlflowRegistry

    other = MlflowRegistry(mlflow_server, tmp_path / "other-cache", project="bank")
    registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    registry.register("iris", model(tmp_path / "a", w="2"), flavor="sklearn")
    registry.set_usage({"iris/blue": ("iris", 1)})
    other.set_usage({"risk/green": ("iris", 2)})
    registry.set_usage({})  # this project serves nothing now: only its own alias goes
    assert registry.client.get_registered_model("iris").aliases == {"risk-green": "2"}
    assert registry.users("iris", 2) == ["risk/green"] and other.users("iris", 2) == ["risk/green"]
    with pytest.raises(RegistryError, match="managed by the mlops project 'bank'"):
        registry.set_usage({"risk/green": ("iris", 1)})
    registry.set_usage({})  # the refused call recorded nothing this project would now remove
    assert registry.client.get_registered_model("iris").aliases == {"risk-green": "2"}


def test_a_version_logged_by_mlflow_is_listed_materialized_and_then_verified(registry, mlflow_server, tmp_path):
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        with mlflow.start_run():
            mlflow.sklearn.log_model(classifier, name="model", registered_model_name="fraud",
                                     serialization_format="skops", pip_requirements=["scikit-learn"])
    finally:
        mlflow.set_tracking_uri(previous)
    listed = registry.list_versions("fraud")
    assert [(v.version, v.flavor, v.digest) for v in listed] == [(1, "mlflow", "")]
    assert [(s.name, s.latest) for s in registry.list_models()] == [("fraud", 1)]
    folder = registry.materialize("fraud", 1)
    assert (folder / "MLmodel").is_file() and (folder / "model.skops").is_file()
    trusted = registry.get("fraud", 1)
    assert trusted.digest.startswith("sha256:") and folder.name == trusted.digest[7:]
    assert registry.client.get_model_version("fraud", "1").tags["mlops.digest"] == trusted.digest
    assert {f.path for f in trusted.files} >= {"MLmodel", "model.skops"}
    assert registry.download("fraud", 1, tmp_path / "out").joinpath("MLmodel").is_file()


def test_a_file_list_too_long_for_a_tag_is_a_run_artifact(registry, tmp_path):
    from pipeline.registry.mlflow import TAG_LIMIT

    files = {f"part-{i:03d}-{'x' * 40}": str(i) for i in range(60)}
    version, _ = registry.register("big", model(tmp_path / "a", **files), flavor="sklearn")
    tags = registry.client.get_model_version("big", "1").tags
    assert "mlops.files" not in tags and tags["mlops.files.artifact"] == "mlops-files.json"
    assert len(json.dumps([[f.path, f.digest, f.size] for f in version.files])) > TAG_LIMIT
    assert len(registry.get("big", 1).files) == 60
    assert (registry.materialize("big", 1) / "part-007-" f"{'x' * 40}").read_text() == "7"


def test_a_racing_registration_of_the_same_content_keeps_the_lowest_version(registry, mlflow_server, tmp_path):
    """The other process checked before this one created its version, so both created one: the
    higher goes, and MLflow never hands its number out again."""
    from pipeline.registry.mlflow import MlflowRegistry

    first, created = registry.register("iris", model(tmp_path / "a", w="1"), flavor="sklearn")
    late = MlflowRegistry(mlflow_server, tmp_path / "late-cache", project="shop")
    late.find = lambda name, digest: None  # type: ignore[method-assign]  # it looked before `first` existed
    again, created_again = late.register("iris", tmp_path / "a", flavor="sklearn")
    assert (first.version, created, again.version, created_again) == (1, True, 1, False)
    assert [v.version for v in registry.list_versions("iris")] == [1]
    third, _ = registry.register("iris", model(tmp_path / "a", w="3"), flavor="sklearn")
    assert third.version == 3  # 2 was deleted; its number is not reused


def test_two_processes_registering_identical_content_end_with_one_version(registry, mlflow_server, tmp_path):
    source = model(tmp_path / "a", w="same", **{"sub/x": "2"})
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from pipeline.registry.mlflow import MlflowRegistry
        registry = MlflowRegistry({mlflow_server!r}, Path(sys.argv[1]), project="shop")
        registry.client.search_registered_models(max_results=1)  # warm: both start registering together
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        version, created = registry.register("iris", Path({str(source)!r}), flavor="sklearn")
        print(json.dumps([version.version, created]))
    """)
    start = str(time.time() + 4)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"cache-{i}"), start],
                                  stdout=subprocess.PIPE, text=True) for i in range(2)]
    results = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    versions = registry.list_versions("iris")
    assert len(versions) == 1 and {r[0] for r in results} == {versions[0].version}
    assert sorted(r[1] for r in results) == [False, True]


def test_tampering_after_trust_on_first_use_is_refused(registry, tmp_path):
    version, _ = registry.register("iris", model(tmp_path / "a", w="1", extra="2"), flavor="sklearn")
    raw = registry.client.get_model_version("iris", "1")
    (tmp_path / "added").write_text("not part of the model")
    registry.client.log_artifact(raw.run_id, str(tmp_path / "added"), "model")
    with pytest.raises(IntegrityError, match="added does not match its digest"):
        registry.materialize("iris", 1)


def test_a_dead_server_is_unavailable_at_once_and_named_without_credentials(tmp_path):
    from pipeline.registry.mlflow import MlflowRegistry
    from pipeline.registry.mlflow_client import MlflowUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once the probe is closed
    registry = MlflowRegistry(f"http://ann:s3cret@127.0.0.1:{port}", Path(tmp_path), project="shop")
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable, match=f"MLflow server at http://127.0.0.1:{port}") as caught:
        registry.list_models()
    assert time.monotonic() - started < 20  # MLflow's own default retries for minutes
    assert "s3cret" not in str(caught.value) and "ann:" not in str(caught.value)
