"""The latency loop: warm-up, then one query at a time, every query's time kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.progress import task


@dataclass(frozen=True)
class LatencySample:
    """Raw per-query times (seconds) plus the first (cold) call measured separately."""

    times_s: np.ndarray
    first_call_s: float
    batch_size: int

    def summary(self) -> dict[str, float]:
        ms = self.times_s * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return {
            "iterations": len(ms),
            "batch_size": self.batch_size,
            "first_call_ms": self.first_call_s * 1e3,
            "min_ms": float(ms.min()),
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "mean_ms": float(ms.mean()),
            "throughput_per_s": float(self.batch_size / np.median(self.times_s)),
        }


def _call(runner: Any) -> Callable[[Mapping[str, np.ndarray]], Any]:
    # Runners may expose a validation-free hot path; timing should not include our checks.
    return getattr(runner, "infer_unchecked", runner.infer)


def measure_latency(runner: Any, feeds: Mapping[str, np.ndarray], *, warmup: int = 20, iterations: int = 200,
                    description: str = "profiling") -> LatencySample:
    call = _call(runner)
    clock = time.perf_counter
    start = clock()
    call(feeds)
    first = clock() - start
    for _ in range(warmup):
        call(feeds)
    times = np.empty(iterations, dtype=np.float64)
    with task(description, iterations) as bar:
        for i in range(iterations):
            t0 = clock()
            call(feeds)
            times[i] = clock() - t0
            bar.advance()
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
    return LatencySample(times, first, batch)
