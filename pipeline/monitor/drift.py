"""Drift statistics: pure functions over numbers (no files, no events), shared by ``mlops monitor``'s
report and by anything else that judges collected data (a canary's ``input_drift`` and
``prediction_drift``).

Why two numbers per feature. The Population Stability Index (PSI) says *how much* a distribution
moved, but its value from a small sample is mostly noise: with 10 bins it sits near
``(bins - 1) * (1/n + 1/n_baseline)`` when nothing moved, so 30 rows of an undrifted feature pass
0.2 most of the time. A two-sample test says *whether* it moved with a false-alarm rate fixed by its
significance level, whatever the sample size (Evidently does the same: Kolmogorov–Smirnov for
numbers, chi-square for categories). A feature is judged **drifted** when both agree: the test
rejects "same distribution" at ``p < DriftPolicy.p_value`` (a false alarm on at most that share of
undrifted features) *and* the PSI reaches ``psi_moderate`` (a move large enough to matter: with
hundreds of thousands of rows a test rejects shifts nobody cares about). Below ``min_rows``
collected rows, or with a baseline of fewer than ``min_baseline_rows``, nothing is judged and the
report says why.

The functions (all take and return plain numbers or numpy arrays)::

    quantile_edges(baseline, bins=10) -> inner edges: bins of equal baseline share (deciles)
    bin_counts(values, edges) -> counts per bin (len(edges) + 1 bins, open-ended outer bins)
    psi(expected_counts, actual_counts) -> float       counts or shares, same bins
    sample_psi(baseline, current, bins=10) -> float     the two above, over two samples of values
    psi_level(value, policy) -> "stable" | "moderate" | "significant"
    ks_test(baseline, current) -> (statistic, p_value)  two-sample Kolmogorov–Smirnov (scipy)
    chi_square_test(expected, actual) -> (statistic, p_value)   categories: {label: count}
    category_psi(expected, actual) -> float             PSI over the union of the labels
    judge(psi_value, p_value, rows, baseline_rows, policy) -> (drifted: bool | None, reason)

``Reservoir`` keeps a uniform sample of a stream of rows in bounded memory (the KS test runs on it;
the PSI counts are exact over every row).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4  # added to each bin's share so that an empty bin does not make the PSI infinite


@dataclass(frozen=True)
class DriftPolicy:
    """How drift is judged. The defaults follow common practice; a model's ``drift:`` in mlops.yaml sets them."""

    bins: int = 10  # PSI bins: the baseline's deciles
    psi_moderate: float = 0.1  # PSI below: stable
    psi_significant: float = 0.25  # PSI above: significant shift
    p_value: float = 0.01  # the test's significance level: the false-alarm rate per undrifted feature
    min_rows: int = 100  # collected rows needed before drift is judged
    min_baseline_rows: int = 200  # a smaller baseline is reported as too small to judge against

    def describe(self) -> str:
        return (f"PSI over {self.bins} baseline-quantile bins (< {self.psi_moderate:g} stable, "
                f"{self.psi_moderate:g}–{self.psi_significant:g} moderate, > {self.psi_significant:g} "
                f"significant); drifted = KS/chi-square p < {self.p_value:g} and PSI ≥ {self.psi_moderate:g}; "
                f"judged from {self.min_rows} rows against a baseline of ≥ {self.min_baseline_rows} rows")


def quantile_edges(baseline: np.ndarray, bins: int = 10) -> np.ndarray:
    """The inner bin edges that split ``baseline`` into ``bins`` equal shares (fewer when values repeat)."""
    edges = np.unique(np.quantile(np.asarray(baseline, dtype=float), np.linspace(0, 1, bins + 1)))
    return edges[1:-1]


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many ``values`` fall in each bin: ``(-inf, e0), [e0, e1), ... [e_last, inf)``."""
    index = np.searchsorted(edges, np.asarray(values, dtype=float), side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The PSI of ``actual`` against ``expected``: counts (or shares) over the same bins."""
    expected_share = np.asarray(expected, dtype=float)
    actual_share = np.asarray(actual, dtype=float)
    if expected_share.sum() == 0 or actual_share.sum() == 0:
        return 0.0
    expected_share = expected_share / expected_share.sum() + EPSILON
    actual_share = actual_share / actual_share.sum() + EPSILON
    return float(np.sum((actual_share - expected_share) * np.log(actual_share / expected_share)))


def sample_psi(baseline: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """The PSI of the values ``current`` against the values ``baseline``, over the baseline's quantile bins."""
    edges = quantile_edges(baseline, bins)
    return psi(bin_counts(baseline, edges), bin_counts(current, edges))


def psi_level(value: float, policy: DriftPolicy = DriftPolicy()) -> str:
    if value > policy.psi_significant:
        return "significant"
    return "moderate" if value >= policy.psi_moderate else "stable"


def ks_test(baseline: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov: (largest gap between the two CDFs, p-value)."""
    from scipy import stats  # scipy's exact/asymptotic p-values; imported when first needed (0.5 s)

    result = stats.ks_2samp(np.asarray(baseline, dtype=float), np.asarray(current, dtype=float))
    return float(result.statistic), float(result.pvalue)


def _aligned(expected: Mapping[str, int], actual: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    labels = sorted(set(expected) | set(actual))
    return (np.array([expected.get(label, 0) for label in labels], dtype=float),
            np.array([actual.get(label, 0) for label in labels], dtype=float))


def chi_square_test(expected: Mapping[str, int], actual: Mapping[str, int]) -> tuple[float, float]:
    """Chi-square test of homogeneity of two label counts: (statistic, p-value); p = 1 with one label."""
    from scipy import stats

    left, right = _aligned(expected, actual)
    table = np.vstack([left, right])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or left.sum() == 0 or right.sum() == 0:
        return 0.0, 1.0
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def category_psi(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    """The PSI of two label counts, each label a bin."""
    return psi(*_aligned(expected, actual))


def judge(psi_value: float, p_value: float, rows: int, baseline_rows: int,
          policy: DriftPolicy = DriftPolicy()) -> tuple[bool | None, str]:
    """Drifted or not (None: not judged), and why, in words a report can print."""
    if baseline_rows < policy.min_baseline_rows:
        return None, f"baseline too small to judge ({baseline_rows} rows, needs {policy.min_baseline_rows})"
    if rows < policy.min_rows:
        return None, f"too few rows to judge ({rows}, needs {policy.min_rows})"
    if p_value < policy.p_value and psi_value >= policy.psi_moderate:
        return True, f"drifted (p {p_value:.2g} < {policy.p_value:g}, PSI {psi_value:.3f} ≥ {policy.psi_moderate:g})"
    if p_value < policy.p_value:
        return False, f"a small move (p {p_value:.2g}, but PSI {psi_value:.3f} < {policy.psi_moderate:g})"
    return False, f"no evidence of drift (p {p_value:.2g} ≥ {policy.p_value:g})"


class Reservoir:
    """A uniform random sample of at most ``size`` rows of a stream (bottom-k of random keys, so rows are
    added a batch at a time with numpy), in memory bounded by ``size`` whatever the stream's length."""

    def __init__(self, size: int, columns: int, seed: int = 0):
        self.size = size
        self._random = np.random.default_rng(seed)
        self.rows = np.empty((0, columns))
        self._keys = np.empty(0)

    def add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        keys = np.concatenate([self._keys, self._random.random(len(rows))])
        rows = np.concatenate([self.rows, rows])
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size)[:self.size]
            keys, rows = keys[keep], rows[keep]
        self._keys, self.rows = keys, rows
