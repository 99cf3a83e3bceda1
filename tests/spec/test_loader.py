"""The loader turns a valid mlops.yaml into frozen dataclasses with defaults, and reports all errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import SpecError
from pipeline.spec.loader import load
from pipeline.spec.model import ModelRef

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "model.skops").write_text("x")
    path = tmp_path / "mlops.yaml"
    path.write_text(text)
    return path


SMALL = """\
version: 1
models:
  iris: {path: m, flavor: sklearn}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    deployments:
      blue:
        model: iris:3
        environment_variables: {API_TOKEN: "${API_TOKEN}", WORKERS: 2}
        data_collector: {sampling_rate: 0.5}
"""


def test_repository_example_is_valid():
    spec = load(REPO / "mlops.yaml")
    assert "iris-classifier" in spec.models
    assert spec.endpoints["iris"].deployments["blue"].model == ModelRef("iris-classifier")


def test_printed_schema_validates_the_example():
    result = CliRunner().invoke(cli, ["schema"])
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load((REPO / "mlops.yaml").read_text()))


def test_every_schema_property_has_a_description():
    result = json.loads(CliRunner().invoke(cli, ["schema"]).output)

    def walk(node, path):
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{path}.{name} has no description"
            walk(prop, f"{path}.{name}")

    walk(result, "")
    for name, definition in result["$defs"].items():
        walk(definition, name)


def test_defaults_are_applied(tmp_path):
    spec = load(write(tmp_path, SMALL))
    endpoint = spec.endpoints["web"]
    blue = endpoint.deployments["blue"]
    assert (spec.registry.type, spec.registry.path) == ("local", ".mlops/registry") and spec.prune is False
    assert endpoint.auth_mode == "key"
    assert endpoint.traffic == {"blue": 100}  # a single deployment takes all traffic
    assert blue.model == ModelRef("iris", 3)
    assert blue.instance_count == 1
    assert blue.request_settings.request_timeout_ms == 5000
    assert blue.data_collector.enabled and blue.data_collector.sampling_rate == 0.5
    assert blue.data_collector.rolling_rate == "hour"


def test_secrets_stay_references_and_numbers_become_text(tmp_path):
    blue = load(write(tmp_path, SMALL)).endpoints["web"].deployments["blue"]
    assert blue.environment_variables == {"API_TOKEN": "${API_TOKEN}", "WORKERS": "2"}


def test_spec_is_frozen(tmp_path):
    spec = load(write(tmp_path, SMALL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.prune = True  # type: ignore[misc]


def test_positions_point_into_the_file(tmp_path):
    spec = load(write(tmp_path, SMALL))
    assert spec.where("endpoints.web.deployments.blue").endswith("mlops.yaml:10:7")


def test_all_errors_reported_at_once_sorted_by_line(tmp_path):
    text = SMALL.replace("flavor: sklearn", "flavor: torch").replace("target: local", "target: nowhere")
    with pytest.raises(SpecError) as raised:
        load(write(tmp_path, text))
    lines = [p.line for p in raised.value.problems]
    assert lines == sorted(lines) and len(lines) == 2


def test_missing_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["--file", str(tmp_path / "nope.yaml"), "validate"])
    assert result.exit_code == 1
    assert "file not found" in result.output and "Traceback" not in result.output


def test_validate_json_output(tmp_path):
    path = write(tmp_path, SMALL)
    result = CliRunner().invoke(cli, ["--file", str(path), "validate", "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == {"valid": True, "models": 1, "environments": 0, "targets": 1,
                                         "endpoints": 1, "deployments": 1}


SHARED = """\
version: 1
registry:
  type: mlflow
  tracking_uri: ${MLFLOW_TRACKING_URI}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    traffic: {blue: 50, green: 50}
    deployments:
      blue: {model: "models:/fraud/7"}
      green: {model: "models:/Fraud.Detector@champion"}
"""


def test_a_shared_registry_and_registry_references_load(tmp_path: Path):
    spec = load(write(tmp_path, SHARED))
    assert (spec.registry.type, spec.registry.tracking_uri, spec.registry.shared) == \
        ("mlflow", "${MLFLOW_TRACKING_URI}", True)
    blue, green = (spec.endpoints["web"].deployments[d].model for d in ("blue", "green"))
    assert blue == ModelRef("fraud", 7, None, True) and str(blue) == "models:/fraud/7"
    assert green == ModelRef("Fraud.Detector", None, "champion", True)
    assert str(green) == "models:/Fraud.Detector@champion"
    # this machine's state of a shared registry lives in .mlops/ beside the file, not in a registry folder
    assert spec.state_dir() == (tmp_path / ".mlops").resolve()


def test_the_registry_mapping_form_of_the_embedded_registry(tmp_path: Path):
    spec = load(write(tmp_path, "version: 1\nregistry: {type: local, path: state/models}\n"))
    assert spec.registry_path() == (tmp_path / "state" / "models").resolve() and not spec.registry.shared


def test_batching_settings_reach_the_scoring_service_and_restart_it_when_changed(tmp_path):
    from pipeline.server.config import ServerConfig
    from pipeline.spec.model import settings_digest

    default = load(write(tmp_path, SMALL)).endpoints["web"]
    tuned = load(write(tmp_path, SMALL.replace(
        "data_collector: {sampling_rate: 0.5}",
        "data_collector: {sampling_rate: 0.5}\n        request_settings: {max_batch_size: 1, max_batch_wait_ms: 2}")))
    blue = tuned.endpoints["web"].deployments["blue"]
    assert (blue.request_settings.max_batch_size, blue.request_settings.max_batch_wait_ms) == (1, 2)
    config = ServerConfig.from_dict({"model_dir": "m", "flavor": "sklearn", "model_name": "iris",
                                     "model_version": 3, "port": 1,
                                     "request_settings": dataclasses.asdict(blue.request_settings)})
    assert config.request_settings.max_batch_size == 1
    assert settings_digest(tuned.endpoints["web"], blue) != settings_digest(default, default.deployments["blue"])


def test_batching_settings_out_of_range_are_refused(tmp_path):
    with pytest.raises(SpecError, match="max_batch_size"):
        load(write(tmp_path, SMALL.replace("data_collector: {sampling_rate: 0.5}",
                                           "request_settings: {max_batch_size: 0}")))
