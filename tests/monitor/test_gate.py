"""`--fail-on`: what a condition means, and refusing what is not one."""

from __future__ import annotations

import pytest

from pipeline.errors import MlopsError
from pipeline.monitor.gate import crossed, parse_fail_on, unmeasured
from pipeline.monitor.report import summarize
from pipeline.server.events import Event


def _events(statuses: list[int], latency: float = 5.0) -> list[Event]:
    return [Event.from_json({"deployment": "blue", "model": "m", "model_version": 1, "status": status,
                             "latency_ms": latency, "time": f"2026-01-01T00:00:{i:02d}Z"})
            for i, status in enumerate(statuses)]


def test_percentages_milliseconds_and_comparisons_are_read():
    thresholds = parse_fail_on("drift>0.2, error_rate>1%,p99>=250ms")
    assert [(t.metric, t.comparison, t.value) for t in thresholds] == [
        ("drift", ">", 0.2), ("error_rate", ">", 0.01), ("p99", ">=", 250.0)]


def test_a_crossed_threshold_names_the_deployment_and_the_condition():
    reports = summarize(_events([200] * 98 + [500, 401]))
    assert crossed(reports, parse_fail_on("error_rate>1%")) == [
        "blue: error_rate 2.00% crossed --fail-on error_rate>1%"]
    assert crossed(reports, parse_fail_on("error_rate>2%,model_error_rate>1%")) == []
    assert crossed(reports, parse_fail_on("p50>=5ms")) == ["blue: p50 5 crossed --fail-on p50>=5ms"]


def test_drift_that_was_not_measured_is_a_warning_not_a_pass_in_silence():
    reports = summarize(_events([200] * 3))
    assert crossed(reports, parse_fail_on("drift>0.2")) == []
    assert unmeasured(reports, parse_fail_on("drift>0.2")) == [
        "blue: no drift to check --fail-on drift>0.2 against (the model has no baseline)"]


@pytest.mark.parametrize("text", ["drift", "speed>1", "drift>0.2%", "error_rate<1%", ""])
def test_anything_else_is_refused_with_the_option_name(text):
    with pytest.raises(MlopsError, match="--fail-on"):
        parse_fail_on(text)
