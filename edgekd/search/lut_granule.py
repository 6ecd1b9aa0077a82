"""The channel granule a runtime likes, read from a width sweep: the step-pattern rule (numpy only).

A runtime that pads channels to a multiple ``G`` (SIMD lanes, a GEMM tile) runs every width in ``(k*G - G, k*G]``
as fast as ``k*G``: rounding a width *up* to the next multiple of ``G`` is free, and so is rounding to any divisor
of ``G``. Rounding to ``2G`` is not: the widths in the lower half of a ``2G`` bucket pay one more step. So, for each
candidate ``g`` (powers of two that are multiples of the sweep's step, 8..64 for a step of 4):

- ``rise(g)`` = median over the widths ``w`` that rounding to ``g / 2`` would leave lower than rounding to ``g``
  (``ceil_{g/2}(w) < ceil_g(w)``: the widths that test the step from ``g / 2`` to ``g``) of
  ``(t(ceil_g(w)) - t(w)) / t(ceil_g(w))``, where ``t`` is the median over interleaved rounds at each width. It is
  about 0 up to the granule and one step's cost beyond it; a drop at the multiples (a faster kernel there) makes it
  negative;
- ``tolerance = max(2 %, 2.6 x noise / sqrt(rounds))``: ``noise`` is the median over widths of the round-to-round
  spread (median absolute deviation / median); 2.6 x MAD / sqrt(n) is about two standard errors of a difference
  of two medians of ``n`` rounds;
- the free candidates are those from the smallest up whose ``rise <= tolerance`` (contiguous: a step must be free
  at every smaller multiple too); the granule is the largest free one whose ``rise`` is within ``tolerance`` of the
  lowest (plateaus: all about 0, the largest wins; a drop at multiples of 16 makes ``rise(16)`` clearly negative
  and ``rise(32)`` less so, so 16 wins). No free candidate: the runtime is linear in width, the granule is the step;
- a sweep whose widest point is not slower than its narrowest by more than ``3 x tolerance`` is flat (fixed
  overhead dominates): no step can be read, and the granule is the sweep step (with a note).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_TOLERANCE = 0.02  # 2 %: below this, two widths' medians are the same on a shared 2-core host


def noise_of(rounds: Mapping[int, Sequence[float]]) -> float:
    """Median over widths of (MAD of that width's round medians) / (their median): the relative timing noise."""
    spreads = []
    for times in rounds.values():
        arr = np.asarray(times, dtype=np.float64)
        if arr.size >= 2 and np.median(arr) > 0:
            spreads.append(float(np.median(np.abs(arr - np.median(arr))) / np.median(arr)))
    return float(np.median(spreads)) if spreads else 0.0


def rise(times: Mapping[int, float], g: int) -> tuple[float, int]:
    """(median relative cost of rounding up to a multiple of ``g`` over the widths that test the step from
    ``g / 2`` to ``g``, how many widths were judged)."""
    costs = []
    for w, t in times.items():
        up = math.ceil(w / g) * g
        half = math.ceil(w / (g / 2)) * (g / 2)
        if half < up and up in times and times[up] > 0:
            costs.append((times[up] - t) / times[up])
    return (float(np.median(costs)) if costs else math.nan), len(costs)


def choose_granule(times: Mapping[int, float], rounds: Mapping[int, Sequence[float]] | None = None, *,
                   min_tolerance: float = MIN_TOLERANCE) -> dict[str, Any]:
    """The step-pattern rule above on ``times`` (width -> median ms); ``rounds`` (width -> each round's median)
    gives the noise. Returns ``granule``, ``tolerance``, ``noise``, ``rise`` per candidate and a ``why`` sentence."""
    widths = sorted(times)
    if len(widths) < 3:
        raise ValueError("a granule sweep needs at least 3 widths")
    step = math.gcd(*widths)
    noise = noise_of(rounds or {})
    n_rounds = int(np.median([len(r) for r in rounds.values()])) if rounds else 1
    tolerance = max(min_tolerance, 2.6 * noise / math.sqrt(max(n_rounds, 1)))
    candidates = [g for g in (2**k for k in range(1, 8)) if g > step and g % step == 0 and g < widths[-1]]
    table = {}
    for g in candidates:
        value, n = rise(times, g)
        if n >= 2:
            table[g] = value
    lo, hi = times[widths[0]], times[widths[-1]]
    growth = (hi - lo) / hi if hi > 0 else 0.0
    base = {"step": step, "noise": noise, "rounds": n_rounds, "tolerance": tolerance, "growth": growth,
            "rise": {str(g): table[g] for g in table}}
    if growth <= 3 * tolerance:
        return {**base, "granule": step, "why": f"flat sweep: widest is only {growth:.1%} slower than narrowest "
                f"(needs > {3 * tolerance:.1%}); fixed overhead dominates, no step to read; granule = the sweep step"}
    free = []
    for g in sorted(table):
        if table[g] > tolerance:
            break
        free.append(g)
    if not free:
        return {**base, "granule": step, "why": f"rounding up to {min(table, default=step)} already costs "
                f"{table[min(table)]:+.1%} (over the {tolerance:.1%} tolerance): the runtime is linear in width "
                "at this step" if table else "no candidate could be judged on these widths"}
    best = min(table[g] for g in free)
    granule = max(g for g in free if table[g] <= best + tolerance)
    why = f"rounding up to a multiple of {granule} costs {table[granule]:+.1%} (tolerance {tolerance:.1%})"
    costly = [g for g in table if g > granule]
    if costly:
        why += f"; to {costly[0]} it costs {table[costly[0]]:+.1%}"
    return {**base, "granule": granule, "why": why}
