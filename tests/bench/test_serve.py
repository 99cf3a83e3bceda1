"""bench/serve.py fails loudly: a wrong server name, a peer not installed or not starting is exit ≠ 0."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SERVE = Path(__file__).resolve().parents[2] / "bench" / "serve.py"


@pytest.fixture
def serve(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_serve", SERVE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_an_unknown_server_is_a_usage_error_naming_the_choices(serve, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--servers", "mlops,kserve"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unknown kserve" in error and "kserve-v1" in error and "litserve-batch" in error


def test_a_peer_that_is_not_installed_fails_the_run_with_the_install_command(serve, monkeypatch, capsys):
    monkeypatch.setitem(serve.NEEDS, "litserve", "no_such_module_for_this_test")
    assert serve.main(["--servers", "litserve", "--models", "lr"]) == 1
    error = capsys.readouterr().err
    assert "no_such_module_for_this_test not installed" in error and 'pip install -e ".[bench]"' in error


def test_a_peer_that_does_not_start_fails_the_run_with_its_log(serve, monkeypatch, capsys):
    """A real process that exits at once, in place of the bare app: exit 1, its name and log tail."""
    monkeypatch.setitem(serve.NEEDS, "bare", "json")  # whether orjson is installed is not this test's business

    def crashing(label, model_dir):
        return serve.Server(label, [sys.executable, "-c", "print('cannot load model.skops'); raise SystemExit(3)"],
                            serve.free_port(), "/score", "/ready", serve.body(), {})

    monkeypatch.setattr(serve, "peer_server", crashing)
    assert serve.main(["--servers", "bare", "--models", "lr", "--duration", "1", "--rounds", "1"]) == 1
    error = capsys.readouterr().err
    assert "bare on lr failed to start: bare exited with code 3" in error
    assert "cannot load model.skops" in error


def test_the_ratios_table_marks_each_issue_target_met_or_not(serve):
    measured = serve.Result
    results = {("mlops", "lr", 16): measured(5000, 3.0, 6.0, 0),
               ("kserve-v1", "lr", 16): measured(2500, 6.0, 9.0, 0),
               ("mlops", "lr", 1): measured(3000, 0.30, 0.5, 0),
               ("mlops-nobatch", "lr", 1): measured(3000, 0.25, 0.5, 0)}
    rows = serve.target_rows(results, [1, 16])
    assert "| mlops / kserve-v1 req/s | lr | 2.00× | ≥ 2.5 | **no** |" in rows
    assert "| mlops / mlops-nobatch p50, 1 conn. | lr | +20.0% | within ±5% | **no** |" in rows
    assert len(rows) == 2  # no row for a pair that was not measured
