"""``mlops rollout status|promote|abort``: what they say, and the command they leave for the apply."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pipeline.apply.rollout import RolloutState, RolloutStore
from pipeline.cli.main import cli

SPEC = """\
version: 1
models:
  scorer: {path: m, flavor: python}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    deployments:
      blue:
        model: scorer
        rollout: {steps: [10, 100], interval: 5s}
"""


def project(tmp_path: Path) -> tuple[Path, RolloutStore]:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "score.py").write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n")
    (tmp_path / "mlops.yaml").write_text(SPEC)
    return tmp_path / "mlops.yaml", RolloutStore(tmp_path / ".mlops" / "rollouts")


def mlops(path: Path, *args: str):
    return CliRunner().invoke(cli, ["--file", str(path), "rollout", *args])


def test_promote_without_a_rollout_in_progress_is_an_error(tmp_path):
    path, _ = project(tmp_path)
    result = mlops(path, "promote", "web")
    assert result.exit_code == 1 and "no rollout in progress on endpoint web" in result.output
    assert "no endpoint 'nope'" in mlops(path, "abort", "nope").output


def test_promote_and_abort_leave_a_command_for_the_apply_that_drives_it(tmp_path):
    path, store = project(tmp_path)
    store.save(RolloutState("web", "blue", "blue-canary", "scorer:2", "x", phase="paused", step=1, weight=10,
                            reason="waiting for mlops rollout promote before 100%"))
    status = mlops(path, "status", "web").output
    assert "web/blue: scorer:2 paused, step 2/2, 10% to blue-canary" in status
    assert "waiting for mlops rollout promote before 100%" in status
    assert mlops(path, "promote", "web").exit_code == 0
    assert store.take_command("web", "blue") == "promote"
    assert store.take_command("web", "blue") is None  # taken once
    mlops(path, "abort", "web")
    assert store.take_command("web", "blue") == "abort"


def test_retry_lets_the_next_apply_roll_a_rolled_back_version_out_again(tmp_path):
    path, store = project(tmp_path)
    assert "no rolled-back rollout on endpoint web" in mlops(path, "retry", "web").output
    store.save(RolloutState("web", "blue", "blue-canary", "scorer:2", "x", phase="rolled_back",
                            reason="halted at 10%: error_rate 5% > 1%"))
    assert "not tried again by itself: mlops rollout retry web --deployment blue" in mlops(path, "status", "web").output
    result = mlops(path, "retry", "web")
    assert result.exit_code == 0 and "the next mlops apply rolls scorer:2 out to web/blue again" in result.output
    assert store.load("web", "blue").phase == "retry"
