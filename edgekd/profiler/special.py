"""The two statistical functions the profiler needs, in numpy, so a device install needs no scipy.

``betainc`` is the regularized incomplete beta function for integer parameters (the binomial CDF that LoadGen's
early stopping uses) and ``mannwhitneyu_two_sided`` is scipy's default two-sided Mann-Whitney U test (exact for a
small sample without ties, else the normal approximation with tie and continuity correction).
``tests/test_slim_install.py`` checks both against scipy where scipy is installed.
"""

from __future__ import annotations

import math

import numpy as np


def betainc(a: int, b: int, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for integers a, b >= 1: P(Binomial(a + b - 1, x) >= a).

    Summed in log space over the b terms with k = 0 .. b - 1 failures, so huge a underflows nothing.

    >>> round(betainc(2, 3, 0.5), 12)  # P(Bin(4, 0.5) >= 2) = 11/16
    0.6875
    """
    if a < 1 or b < 1 or a != int(a) or b != int(b):
        raise ValueError(f"betainc here takes integers a, b >= 1; got {a}, {b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    n = int(a) + int(b) - 1
    k = np.arange(int(b), dtype=np.float64)
    # log C(n, k) by cumulating log((n - i) / (i + 1)), i < k
    log_comb = np.concatenate(([0.0], np.cumsum(np.log((n - k[:-1]) / (k[:-1] + 1.0)))))
    log_terms = log_comb + k * math.log1p(-x) + (n - k) * math.log(x)
    peak = float(log_terms.max())
    return float(min(1.0, math.exp(peak) * float(np.exp(log_terms - peak).sum())))


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties averaged, and the size of each tie group."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(starts) - 1
    bounds = np.concatenate((np.flatnonzero(starts), [values.size]))
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = 0.5 * (bounds[group] + bounds[group + 1] + 1)
    return ranks, np.diff(bounds)


def _exact_sf(u: int, n1: int, n2: int) -> float:
    """P(U >= u) under H0 from the Gaussian binomial [n1 + n2 choose m]_q (m the smaller size)."""
    m, n = min(n1, n2), max(n1, n2)
    counts = np.zeros(m * n + 1, dtype=np.float64)
    counts[0] = 1.0
    for i in range(1, m + 1):  # times (1 - q^(n + i)), then over (1 - q^i): power series truncated past degree m*n
        shift = n + i
        if shift < counts.size:
            counts[shift:] -= counts[:-shift].copy()
        for residue in range(i):  # dividing by (1 - q^i) is a running sum along each stride-i slice
            counts[residue::i] = np.cumsum(counts[residue::i])
    return float(counts[u:].sum() / counts.sum())


def mannwhitneyu_two_sided(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test, as ``scipy.stats.mannwhitneyu(a, b)`` (method "auto")."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0 or np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("Mann-Whitney U needs two non-empty samples without NaN")
    ranks, ties = _average_ranks(np.concatenate((x, y)))
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    if (n1 <= 8 or n2 <= 8) and not (ties > 1).any():
        p = 2.0 * _exact_sf(round(u), n1, n2)
    else:
        n = n1 + n2
        tie_term = float((ties.astype(np.float64) ** 3 - ties).sum())
        spread = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        z = (u - n1 * n2 / 2 - 0.5) / spread if spread > 0 else math.inf
        p = 2.0 * 0.5 * math.erfc(z / math.sqrt(2.0))
    return min(max(p, 0.0), 1.0)
