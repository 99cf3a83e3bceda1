"""Drift statistics: false alarms stay rare on undrifted data, a real shift is found at the documented size."""

from __future__ import annotations

import numpy as np

from pipeline.monitor import drift
from pipeline.monitor.drift import DriftPolicy
from pipeline.monitor.report import Baseline, summarize
from pipeline.server.events import Event

FEATURES = 20


def _events(rows: np.ndarray) -> list[Event]:
    return [Event.from_json({"deployment": "blue", "model": "m", "model_version": 1, "status": 200,
                             "time": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "inputs": {"data": [row]}})
            for i, row in enumerate(rows.tolist())]


def _baseline(generator: np.random.Generator) -> Baseline:
    data = np.column_stack([generator.normal(0, 1, 1000) if i % 2 else generator.exponential(2, 1000)
                            for i in range(FEATURES)])
    return Baseline("baseline.csv", [f"f{i}" for i in range(FEATURES)], data)


def test_samples_of_the_baseline_itself_are_flagged_on_at_most_5_percent_of_features():
    generator = np.random.default_rng(7)
    flagged = judged = 0
    for _ in range(10):  # 10 trials × 20 features: 200 judgements
        baseline = _baseline(generator)
        sample = baseline.data[generator.integers(0, len(baseline.data), 200)]
        (report,) = summarize(_events(sample), {"m": baseline})
        features = report.versions[0].drift.features
        judged += sum(f.drifted is not None for f in features)
        flagged += sum(bool(f.drifted) for f in features)
    assert judged == 200
    assert flagged / judged <= 0.05


def test_one_standard_deviation_shift_in_one_feature_is_flagged_at_the_minimum_sample_size():
    generator = np.random.default_rng(8)
    baseline = _baseline(generator)
    sample = baseline.data[generator.integers(0, len(baseline.data), DriftPolicy().min_rows)].copy()
    sample[:, 3] += baseline.data[:, 3].std()
    (report,) = summarize(_events(sample), {"m": baseline})
    flagged = [f.feature for f in report.versions[0].drift.features if f.drifted]
    assert "f3" in flagged and len(flagged) <= 2


def test_fewer_rows_than_the_minimum_are_not_judged():
    generator = np.random.default_rng(9)
    baseline = _baseline(generator)
    (report,) = summarize(_events(baseline.data[:30] + 5), {"m": baseline})
    drift_report = report.versions[0].drift
    assert not drift_report.judged and "too few rows to judge (30, needs 100)" in drift_report.reason


def test_psi_of_identical_counts_is_zero_and_levels_follow_common_practice():
    assert drift.psi(np.array([10, 20, 30]), np.array([1, 2, 3])) < 1e-12
    assert [drift.psi_level(v) for v in (0.05, 0.1, 0.25, 0.26)] == ["stable", "moderate", "moderate", "significant"]


def test_chi_square_tells_a_changed_label_mix_from_the_same_one():
    same = drift.chi_square_test({"a": 500, "b": 500}, {"a": 52, "b": 48})
    changed = drift.chi_square_test({"a": 500, "b": 500}, {"a": 80, "b": 20})
    assert same[1] > 0.5 and changed[1] < 1e-6
    assert drift.category_psi({"a": 500, "b": 500}, {"a": 80, "b": 20}) > 0.25


def test_reservoir_keeps_a_bounded_uniform_sample():
    reservoir = drift.Reservoir(1000, 1)
    for start in range(0, 100_000, 5000):
        reservoir.add(np.arange(start, start + 5000, dtype=float).reshape(-1, 1))
    assert reservoir.rows.shape == (1000, 1)
    assert 40_000 < reservoir.rows.mean() < 60_000  # not just the first or the last rows
