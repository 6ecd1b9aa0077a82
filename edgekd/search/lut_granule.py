"""The channel granule a runtime likes, read from a width sweep: the step-pattern rule (numpy only).

A runtime that pads channels to a multiple ``g`` (SIMD lanes, a GEMM tile) runs every width in ``(k*g - g, k*g]``
as fast as ``k*g``: rounding a width *up* to the next multiple of ``g`` is free. For ``g`` beyond the real granule
rounding up costs real time (the sweep rises inside the bucket). So the granule is the **largest candidate ``g``
whose rounding-up cost is within the noise** (and, where a drop at the multiples makes rounding up a gain, within
the noise of the best gain):

- ``rise(g)`` = median over the swept widths ``w`` that are not multiples of ``g`` of
  ``(t(ceil_g(w)) - t(w)) / t(ceil_g(w))``: the relative cost of rounding ``w`` up to a multiple of ``g``
  (``t`` = the median over interleaved rounds at each width; a drop at the multiple is a negative rise);
- it is free when ``rise(g) <= tolerance``, ``tolerance = max(min_tolerance, 2 x noise)``, where ``noise`` is the
  median over widths of the round-to-round spread (median absolute deviation / median) of that width's times;
- among the free candidates, the granule is the largest whose ``rise`` is within ``tolerance`` of the lowest
  (plateaus: every free ``g`` has ``rise`` about 0, so the largest wins; a drop at multiples of 16 makes
  ``rise(16)`` clearly negative and ``rise(32)`` less so, so 16 wins);
- a sweep that does not rise by more than ``3 x tolerance`` from its narrowest to its widest point is flat
  (fixed overhead dominates): no step can be read from it, and the granule is the sweep step (with a note).

Candidates are the multiples of the sweep's step that are powers of two (4, 8, 16, 32, 64 for a step of 4) and
leave at least two widths off the grid (a candidate that no swept width tests cannot be judged).
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
    """(median relative cost of rounding each off-grid width up to a multiple of ``g``, how many widths judged)."""
    costs = []
    for w, t in times.items():
        up = math.ceil(w / g) * g
        if w % g and up in times and times[up] > 0:
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
    tolerance = max(min_tolerance, 2 * noise)
    candidates = [g for g in (2**k for k in range(1, 8)) if g > step and g % step == 0 and g < widths[-1]]
    table = {}
    for g in candidates:
        value, n = rise(times, g)
        if n >= 2:
            table[g] = value
    lo, hi = times[widths[0]], times[widths[-1]]
    growth = (hi - lo) / hi if hi > 0 else 0.0
    base = {"step": step, "noise": noise, "tolerance": tolerance, "growth": growth,
            "rise": {str(g): table[g] for g in table}}
    if growth <= 3 * tolerance:
        return {**base, "granule": step, "why": f"flat sweep: widest is only {growth:.1%} slower than narrowest "
                f"(needs > {3 * tolerance:.1%}); fixed overhead dominates, no step to read; granule = the sweep step"}
    free = [g for g in table if table[g] <= tolerance]
    # a drop at the multiples makes rounding up a gain: the largest g whose gain is within noise of the best one
    best = min((table[g] for g in free), default=math.nan)
    granule = max((g for g in free if table[g] <= best + tolerance), default=step)
    costly = [g for g in table if g > granule]
    why = (f"rounding up to a multiple of {granule} costs {table[granule]:+.1%} (within the {tolerance:.1%} noise "
           "tolerance)" if free else f"every candidate's rounding-up cost exceeds the {tolerance:.1%} tolerance: "
           "the runtime is linear in width at this step")
    if costly:
        why += f"; to {costly[0]} it costs {table[costly[0]]:+.1%}"
    return {**base, "granule": granule, "why": why}
