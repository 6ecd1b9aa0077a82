"""Latency statistics: percentiles, bootstrap confidence intervals, MLPerf-style early stopping.

Everything takes per-query times in **milliseconds** (1-D arrays) and is deterministic
(bootstrap resampling uses a seeded generator).

Percentiles use numpy's default ("linear" interpolation, type 7), so they match
``np.percentile`` exactly:

>>> summarize([1.0, 2.0, 3.0, 4.0])["p50_ms"]
2.5

The early-stopping estimate follows MLPerf LoadGen (``loadgen/early_stopping.cc`` and
``results.cc``, SingleStream): instead of the sample percentile it reports an order
statistic high enough that, with 99 % confidence, the true percentile is not above it.
It needs at least 64 queries for p90 and 662 for p99:

>>> min_queries(0.90), min_queries(0.99)
(64, 662)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: percentiles every summary carries
PERCENTILES = (50, 90, 95, 99)
#: LoadGen's fixed confidence for early stopping
EARLY_STOP_CONFIDENCE = 0.99


def as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("no timings: at least one query is needed")
    if not np.all(np.isfinite(arr)):
        raise ValueError("timings contain NaN or infinity")
    return arr


def summarize(ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """min, p50, p90, p95, p99, max, mean, std (sample, ddof=1), IQR -- all in ms."""
    arr = as_array(ms)
    p25, p50, p75, p90, p95, p99 = np.percentile(arr, [25, 50, 75, 90, 95, 99])
    return {
        "count": int(arr.size),
        "min_ms": float(arr.min()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(arr.max()),
        "mean_ms": float(arr.mean()),
        "std_ms": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "iqr_ms": float(p75 - p25),
    }


# ------------------------------------------------------------------ bootstrap


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _resample_percentiles(arr: np.ndarray, q: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    # chunks keep memory bounded for long runs (n_boot x n indices)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(arr.size, 1))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, arr.size, size=(stop - start, arr.size))
        out[start:stop] = np.percentile(arr[idx], q, axis=1)
    return out


def bootstrap_ci(ms: Sequence[float] | np.ndarray, q: float, *, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> Interval:
    """Percentile-bootstrap confidence interval for the ``q``-th percentile.

    >>> ci = bootstrap_ci(np.arange(1.0, 101.0), 50)
    >>> ci.low < 50.5 < ci.high
    True
    """
    arr = as_array(ms)
    rng = np.random.default_rng(seed)
    boots = _resample_percentiles(arr, q, n_boot, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])
    return Interval(float(np.percentile(arr, q)), float(low), float(high), confidence)


def ratio_ci(base_ms: Sequence[float] | np.ndarray, new_ms: Sequence[float] | np.ndarray, q: float, *,
             n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """CI for ``percentile(new, q) / percentile(base, q)``: the two runs are resampled independently.

    A ratio above 1 means ``new`` is slower. The interval excluding 1 is the significance test.
    """
    a, b = as_array(base_ms), as_array(new_ms)
    rng = np.random.default_rng(seed)
    ra = _resample_percentiles(a, q, n_boot, rng)
    rb = _resample_percentiles(b, q, n_boot, rng)
    ratios = rb / np.maximum(ra, 1e-300)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return Interval(float(np.percentile(b, q) / np.percentile(a, q)), float(low), float(high), confidence)


# ------------------------------------------------------------------ early stopping (MLPerf LoadGen)


def _odds(h: int, t: int, p: float, d: float) -> float:
    """P(at most t over-latency queries among h + t) when the over-latency rate is 1 - p + d.

    Binomial CDF written as the regularized incomplete beta function I_{p-d}(h, t + 1).
    """
    from edgekd.profiler.special import betainc

    return float(betainc(h, t + 1, p - d))


@lru_cache(maxsize=4096)
def min_passing(t: int, p: float, d: float = 0.0, c: float = EARLY_STOP_CONFIDENCE) -> int:
    """Smallest number h of under-latency queries such that h of them plus t over-latency ones
    prove, with confidence c, that the true p-percentile is under the latency bound."""
    if not 0.0 < p < 1.0 or not 0.0 < c < 1.0 or not 0.0 <= d < p:
        raise ValueError(f"need 0 < percentile < 1, 0 < confidence < 1, 0 <= tolerance < percentile; got {p}, {c}, {d}")
    target = 1.0 - c
    lo, hi = 1, max(2, math.ceil(math.log(target) / math.log(p - d)))
    while _odds(hi, t, p, d) > target:
        lo, hi = hi, hi * 2
    while lo < hi:  # _odds decreases with h: binary search for the boundary
        mid = (lo + hi) // 2
        if _odds(mid, t, p, d) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def min_queries(p: float, c: float = EARLY_STOP_CONFIDENCE) -> int:
    """Queries needed before any early-stopping estimate exists (64 for p90, 662 for p99)."""
    return min_passing(1, p, 0.0, c) + 1


@dataclass(frozen=True)
class EarlyStopEstimate:
    """LoadGen's conservative percentile: the sorted sample at index n - t (0-based), i.e. the
    ``discarded`` = t - 1 slowest queries are dropped, where t is the largest count of
    over-latency queries that n queries still tolerate at the given confidence."""

    percentile: float
    queries: int
    min_queries: int
    ok: bool
    estimate_ms: float | None
    discarded: int | None
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def early_stopping(ms: Sequence[float] | np.ndarray, p: float, c: float = EARLY_STOP_CONFIDENCE) -> EarlyStopEstimate:
    """Early-stopping percentile estimate; ``ok`` is False (and no estimate) below ``min_queries``.

    >>> e = early_stopping(np.arange(2048, dtype=float), 0.90)
    >>> e.discarded, e.estimate_ms
    (172, 1875.0)
    """
    arr = np.sort(as_array(ms))
    n = int(arr.size)
    need = min_queries(p, c)
    if n < need:
        return EarlyStopEstimate(p, n, need, False, None, None, c)
    # largest t with min_passing(t) + t <= n; min_passing grows with t, so binary search
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if min_passing(mid, p, 0.0, c) + mid <= n:
            lo = mid
        else:
            hi = mid - 1
    t = lo
    return EarlyStopEstimate(p, n, need, True, float(arr[n - t]), t - 1, c)


def mann_whitney_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value: do the two latency distributions differ at all?"""
    from edgekd.profiler.special import mannwhitneyu_two_sided as mannwhitneyu

    return float(mannwhitneyu(as_array(a), as_array(b)))
