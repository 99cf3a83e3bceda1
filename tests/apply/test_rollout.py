"""The rollout state machine, with a fake clock and fake readings: it runs instantly."""

from __future__ import annotations

from pipeline.apply.rollout import ABORT, PROMOTE, Controller, Measurement, RolloutState, Stats
from pipeline.apply.rollout_meter import parse_metrics, quantile, window
from pipeline.apply.rollout_run import canary_traffic
from pipeline.spec.rollout import build


class FakeClock:
    def __init__(self):
        self.time = 1000.0

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds


class FakeMeter:
    """Hands out one measurement per check, the last one again when they run out."""

    def __init__(self, *measurements: Measurement):
        self.measurements = list(measurements)
        self.checks = 0

    def mark(self) -> None:
        return None

    def measure(self, mark) -> Measurement:
        self.checks += 1
        return self.measurements.pop(0) if len(self.measurements) > 1 else self.measurements[0]


GOOD = Measurement(Stats(200, 0, 0.02), Stats(2000, 0, 0.02))
ERRORS = Measurement(Stats(200, 7, 0.02), Stats(2000, 0, 0.02))
SLOW = Measurement(Stats(200, 0, 0.05), Stats(2000, 0, 0.02))
QUIET = Measurement(Stats(3, 0, 0.02), Stats(40, 0, 0.02))
GATES = [{"name": "error_rate", "max": "1%"}, {"name": "latency_p99_ratio", "max": 1.5}]


def rollout(**fields):
    raw = {"steps": [5, 25, 50, 100], "interval": "5m", "progress_deadline": "30m",
           "analysis": {"min_requests": 100, "failure_limit": 2, "metrics": GATES}, **fields}
    return build(raw)


def run(plan, meter, state=None, commands=()):
    clock, routes, saved, said = FakeClock(), [], [], []
    state = state or RolloutState("web", "blue", "blue-canary", "iris:2", "x",
                                  phase="mirror" if plan.mirror_first else "step")
    queue = list(commands)
    controller = Controller(plan, state, meter, route=lambda w, m: routes.append((w, m)),
                            save=lambda s: saved.append((s.phase, s.step)), command=lambda: queue.pop(0)
                            if queue and queue[0] is not None else (queue.pop(0) if queue else None),
                            report=lambda s, message: said.append(message), clock=clock)
    return controller.run(), routes, state, clock, said


def test_a_good_canary_walks_every_step_and_is_promoted():
    decision, routes, state, clock, _ = run(rollout(), FakeMeter(GOOD))
    assert decision == PROMOTE
    assert routes == [(5, 0), (25, 0), (50, 0), (100, 0)]
    assert clock.time - 1000 == 4 * 300  # each step baked its interval, no more


def test_errors_fail_the_first_step_after_failure_limit_checks():
    decision, routes, state, _, _ = run(rollout(), FakeMeter(ERRORS))
    assert decision == "rollback"
    assert routes == [(5, 0)]
    assert state.reason == "halted at 5%: error_rate 3.5% > 1%"
    assert state.failures == 2


def test_one_failed_check_keeps_the_weight_and_checks_again():
    decision, routes, state, _, _ = run(rollout(), FakeMeter(ERRORS, GOOD))
    assert decision == PROMOTE and state.failures == 1 and routes[0] == (5, 0)


def test_a_slower_canary_fails_the_latency_ratio():
    decision, _, state, _, _ = run(rollout(), FakeMeter(SLOW))
    assert decision == "rollback" and "latency_p99_ratio 2.5 > 1.5" in state.reason


def test_no_traffic_waits_until_the_deadline_then_fails():
    decision, routes, state, clock, _ = run(rollout(), FakeMeter(QUIET))
    assert decision == "rollback" and routes == [(5, 0)]
    assert "no verdict within progress_deadline 30m" in state.reason
    assert 1800 <= clock.time - 1000 < 1800 + 300


def test_traffic_arriving_late_gives_a_verdict_before_the_deadline():
    decision, _, _, clock, _ = run(rollout(steps=[50]), FakeMeter(QUIET, QUIET, GOOD))
    assert decision == PROMOTE and clock.time - 1000 < 1800


def test_on_failure_pause_holds_until_abort():
    decision, routes, state, _, _ = run(rollout(on_failure="pause"), FakeMeter(ERRORS),
                                        commands=[None] * 2000 + [ABORT])
    assert decision == "rollback" and routes == [(5, 0)] and "aborted while paused" in state.reason


def test_pause_before_promote_waits_for_promote_before_100():
    decision, routes, state, _, said = run(rollout(pause_before_promote=True), FakeMeter(GOOD),
                                           commands=[None] * 5000 + [PROMOTE])
    assert decision == PROMOTE and routes == [(5, 0), (25, 0), (50, 0)]
    assert any("waiting for mlops rollout promote" in m for m in said)


def test_promote_skips_the_remaining_bake():
    decision, routes, _, clock, _ = run(rollout(), FakeMeter(GOOD), commands=[None, None, PROMOTE])
    assert decision == PROMOTE and routes == [(5, 0)] and clock.time - 1000 < 300


def test_a_resumed_rollout_starts_at_the_step_it_reached():
    state = RolloutState("web", "blue", "blue-canary", "iris:2", "x", phase="step", step=1)
    decision, routes, _, _, _ = run(rollout(), FakeMeter(GOOD), state=state)
    assert decision == PROMOTE and routes[0] == (25, 0) and (5, 0) not in routes


def test_mirror_first_shadows_before_any_live_weight():
    decision, routes, _, _, _ = run(rollout(mirror_first="2m", steps=[50]), FakeMeter(GOOD))
    assert decision == PROMOTE and routes == [(0, 100), (50, 0)]


def test_at_100_percent_the_ratio_is_not_judged():
    at_full = Measurement(Stats(300, 0, 0.5), Stats(0, 0, None))
    decision, _, state, _, _ = run(rollout(steps=[50, 100]), FakeMeter(GOOD, at_full))
    assert decision == PROMOTE
    assert "latency_p99_ratio not judged (the stable version has no live weight)" in state.last_check


def test_below_100_percent_the_ratio_waits_for_enough_stable_requests():
    few_stable = Measurement(Stats(200, 0, 0.05), Stats(12, 0, 0.02))
    decision, _, state, clock, _ = run(rollout(steps=[50]), FakeMeter(few_stable, few_stable, SLOW))
    assert decision == "rollback" and "latency_p99_ratio 2.5 > 1.5" in state.reason
    assert clock.time - 1000 > 300  # it waited past the first interval for the stable version's traffic


def test_weights_split_only_the_stable_deployments_share():
    assert canary_traffic({"blue": 80, "green": 20}, "blue", "blue-canary", 25) == \
        {"blue": 60, "green": 20, "blue-canary": 20}
    assert canary_traffic({"blue": 10}, "blue", "blue-canary", 1)["blue-canary"] == 1


METRICS = """\
# TYPE mlops_requests counter
mlops_requests_total{route="/score",status="200"} 90.0
mlops_requests_total{route="/score",status="500"} 10.0
mlops_requests_total{route="/metrics",status="200"} 7.0
# TYPE mlops_request_duration_seconds histogram
mlops_request_duration_seconds_bucket{le="0.01",route="/score"} 0.0
mlops_request_duration_seconds_bucket{le="0.025",route="/score"} 50.0
mlops_request_duration_seconds_bucket{le="0.05",route="/score"} 100.0
mlops_request_duration_seconds_bucket{le="+Inf",route="/score"} 100.0
mlops_request_duration_seconds_count{route="/score"} 100.0
"""


def test_metrics_of_scoring_routes_are_read_and_differenced():
    scrape = parse_metrics(METRICS)
    assert (scrape.requests, scrape.errors) == (100, 10)
    stats = window({}, {"http://a": scrape})
    assert stats.requests == 100 and stats.errors == 10
    assert abs(stats.p99 - (0.025 + 0.025 * 49 / 50)) < 1e-9
    assert window({"http://a": scrape}, {"http://a": scrape}).requests == 0


def test_quantile_of_empty_buckets_is_unknown():
    assert quantile({0.1: 0.0, float("inf"): 0.0}, 0.99) is None


def event(outputs, inputs=None, status=200):
    from pipeline.server.events import Event

    return Event("id", "2026-11-25T10:00:00+00:00", "web", "blue", "m", 1, "/score", status, 1.0, inputs, outputs,
                 None)


def test_prediction_drift_compares_the_canarys_answers_with_the_stable_ones():
    import numpy as np

    from pipeline.apply.rollout_meter import prediction_psi, predictions

    rng = np.random.default_rng(0)
    stable = predictions([event([float(v)]) for v in rng.normal(0, 1, 500)])
    same = predictions([event([float(v)]) for v in rng.normal(0, 1, 500)])
    shifted = predictions([event({"predictions": [float(v)]}) for v in rng.normal(2, 1, 500)])
    assert prediction_psi(stable, same) < 0.1 < 0.2 < prediction_psi(stable, shifted)
    assert prediction_psi(stable, same[:5]) is None  # too few answers say nothing
    assert len(predictions([event([1.0], status=500)])) == 0  # failures answered nothing


def test_input_drift_is_the_worst_features_psi_against_the_baseline():
    import numpy as np

    from pipeline.apply.rollout_meter import input_psi
    from pipeline.monitor.report import Baseline

    rng = np.random.default_rng(1)
    baseline = Baseline("baseline.csv", ["a", "b"], rng.normal(0, 1, (2000, 2)))
    drifted = [event([1], {"data": [[float(a), float(b) + 3]]}) for a, b in rng.normal(0, 1, (1000, 2))]
    steady = [event([1], {"data": [[float(a), float(b)]]}) for a, b in rng.normal(0, 1, (1000, 2))]
    assert input_psi(baseline, steady) < 0.1 < 1.0 < input_psi(baseline, drifted)
