"""The local target (real router and service processes) passes the target contract; the CLI's
``mlops endpoints keys`` and ``mlops score`` go through the target's keys and URL."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.cli.wiring import make_targets
from pipeline.registry import open_registry
from pipeline.spec.loader import load
from tests.targets.contract import ENDPOINT, IRIS, Harness, TargetContract, write_repository

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(tmp_path):
    spec = load(write_repository(tmp_path, "{type: local}"))
    target = make_targets(spec, spec.state_dir())["under-test"]
    registry = open_registry(spec.registry.path, root=spec.root)
    harness = Harness(tmp_path, target, registry)
    yield harness
    harness.cleanup()
    registry.close()


class TestLocalTarget(TargetContract):
    pass


def test_cli_keys_and_score_use_the_target(harness):
    harness.serve("blue", 1)
    runner = CliRunner()
    mlops = ["--file", str(harness.root / "mlops.yaml")]
    shown = runner.invoke(cli, [*mlops, "endpoints", "keys", ENDPOINT, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == harness.target.keys(ENDPOINT)
    rotated = runner.invoke(cli, [*mlops, "endpoints", "keys", ENDPOINT, "--regenerate", "primary",
                                  "--format", "json"])
    assert rotated.exit_code == 0, rotated.output
    keys = json.loads(rotated.stdout)
    assert keys == harness.target.keys(ENDPOINT) and keys["primary"] != json.loads(shown.output)["primary"]
    assert harness.accepts(keys["primary"])
    scored = runner.invoke(cli, [*mlops, "score", ENDPOINT, "--data", json.dumps({"data": IRIS})])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout) == {"predictions": [0]}
