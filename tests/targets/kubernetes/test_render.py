"""``mlops render``: the objects apply would send, as files for Argo CD / Flux, valid without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.main import cli
from tests.targets.kubernetes.test_manifests import example

kubernetes_validate = pytest.importorskip("kubernetes_validate")


@pytest.mark.parametrize("routing", ["router", "gateway"])
def test_render_writes_one_valid_file_per_object_and_a_kustomization(tmp_path: Path, routing: str):
    example(tmp_path, routing)
    out = tmp_path / "deploy"
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "mlops.yaml"), "render", "cluster", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "not built and pushed yet" in result.stderr and "not registered yet" in result.stderr
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    files = sorted(p.name for p in out.iterdir() if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    kinds = set()
    for name in kustomization["resources"]:
        obj = yaml.safe_load((out / name).read_text())
        assert name == f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        kinds.add(obj["kind"])
        if obj["kind"] == "Secret":
            assert not obj.get("data") and "not rendered" in (out / name).read_text()
        if obj["kind"] != "HTTPRoute":
            kubernetes_validate.validate(obj, "1.37.0", strict=True)
        if obj["kind"] == "Deployment" and obj["metadata"]["labels"]["app.kubernetes.io/component"] == "scoring":
            assert "@sha256:" in obj["spec"]["template"]["spec"]["containers"][0]["image"]
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds
    assert ("HTTPRoute" in kinds) == (routing == "gateway")


def test_render_without_out_prints_a_multi_document_stream(tmp_path: Path):
    example(tmp_path)
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "mlops.yaml"), "render", "cluster"])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(documents) > 10 and all(d["metadata"]["namespace"] == "ml" for d in documents)


def test_render_refuses_a_target_that_is_not_kubernetes(tmp_path: Path):
    example(tmp_path)
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "mlops.yaml"), "render", "nowhere"])
    assert result.exit_code == 1 and "no kubernetes target named 'nowhere'" in result.output


def _fake_repository(monkeypatch, held: dict[str, str]) -> list[str]:
    """The builder's one question to the image repository, answered from ``held`` (ref prefix -> digest)."""
    from pipeline.builders.model_image import ModelImages

    asked: list[str] = []

    def registry_digest(self, ref: str) -> str | None:
        asked.append(ref)
        return next((digest for prefix, digest in held.items() if ref.startswith(prefix)), None)

    monkeypatch.setattr(ModelImages, "registry_digest", registry_digest)
    monkeypatch.setattr("pipeline.builders.ImageBuilder.client_for", lambda *a: pytest.fail("nothing is built"))
    return asked


def _register(tmp_path: Path) -> None:
    from pipeline.registry import open_registry

    registry = open_registry(".mlops/registry", root=tmp_path)
    registry.register("iris-classifier", tmp_path / "models" / "iris", flavor="sklearn")
    registry.close()


ENV_DIGEST, MODEL_DIGEST = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_render_pins_the_images_the_repository_already_holds(tmp_path: Path, monkeypatch):
    example(tmp_path)
    _register(tmp_path)
    asked = _fake_repository(monkeypatch, {"registry.example.com/ml/mlops-env-sklearn:": ENV_DIGEST,
                                           "registry.example.com/ml/mlops-model-iris-classifier:1-": MODEL_DIGEST})
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "mlops.yaml"), "render", "cluster"])
    assert result.exit_code == 0, result.output
    assert "placeholder" not in result.stderr
    model_ref = next(ref for ref in asked if "mlops-model-" in ref)
    assert model_ref.endswith("-" + "1" * 12)  # named by the environment image's manifest digest
    documents = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    images = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["spec"]["containers"][0]
              ["image"] for d in documents}
    assert images["scoring"] == "registry.example.com/ml/mlops-model-iris-classifier@" + MODEL_DIGEST
    assert images["router"] == "registry.example.com/ml/mlops-env-sklearn@" + ENV_DIGEST


def test_render_without_the_model_image_keeps_a_placeholder_and_says_so(tmp_path: Path, monkeypatch):
    example(tmp_path)
    _register(tmp_path)
    _fake_repository(monkeypatch, {"registry.example.com/ml/mlops-env-sklearn:": ENV_DIGEST})
    result = CliRunner().invoke(cli, ["-f", str(tmp_path / "mlops.yaml"), "render", "cluster"])
    assert result.exit_code == 0, result.output
    assert "the model image of iris-classifier:1" in result.stderr and "placeholder" in result.stderr
    scoring = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"
               and d["metadata"]["labels"]["app.kubernetes.io/component"] == "scoring"]
    assert {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in scoring} == {
        "registry.example.com/ml/mlops-model-iris-classifier@sha256:" + "0" * 64}
