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
