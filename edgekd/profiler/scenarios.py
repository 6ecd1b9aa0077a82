"""LoadGen's multi-query scenarios on a runner's ``ConcurrentCalls`` (``backends.base``): Offline with several
requests in flight, and Server (Poisson arrivals at a target QPS, judged on the p99 latency).

Server follows MLPerf LoadGen: arrival times are a seeded Poisson process (exponential gaps at ``qps``), each query
is issued at its scheduled time whatever the state of the earlier ones, and its latency runs from the **scheduled**
arrival to its completion, so time spent queued counts. A run is VALID when LoadGen's early-stopping estimate of
the p99 (99 % confidence, ``stats.early_stopping``) is within the latency bound; with too few queries for that
estimate, it is not valid and says how many it needed. Torch-free.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.backends.base import concurrent_calls_of
from edgekd.errors import ConfigError, EdgekdError
from edgekd.profiler import stats


@dataclass(frozen=True)
class ServerSettings:
    target_qps: float
    duration_s: float = 10.0
    latency_bound_ms: float | None = None  # None: report the p99, judge nothing
    requests: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.target_qps > 0:
            raise ConfigError(f"--target-qps must be > 0, got {self.target_qps}", where="--target-qps")
        if not self.duration_s > 0:
            raise ConfigError(f"--duration must be > 0 s, got {self.duration_s}", where="--duration")
        if self.latency_bound_ms is not None and not self.latency_bound_ms > 0:
            raise ConfigError(f"--latency-bound-ms must be > 0, got {self.latency_bound_ms}", where="--latency-bound-ms")
        if self.requests < 1:
            raise ConfigError(f"--requests must be >= 1, got {self.requests}", where="--requests")


def _calls(runner: Any, feeds: dict[str, np.ndarray], requests: int) -> Any:
    calls = concurrent_calls_of(runner, feeds, requests)
    if calls is None:
        raise EdgekdError(f"the {type(runner).__name__} runner cannot run several queries at once (no "
                          "concurrent_calls), so there is no multi-request scenario to measure",
                          hint="profile single-stream, or add concurrent_calls(feeds, requests) to the backend's runner "
                               "(docs/plugins.md)")
    return calls


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {f"p{k}_ms": float(np.percentile(ms, q)) for k, q in (("50", 50), ("90", 90), ("99", 99), ("99_9", 99.9))}


def server(runner: Any, feeds: dict[str, np.ndarray], settings: ServerSettings) -> dict[str, Any]:
    """One Server run: Poisson arrivals at ``target_qps`` for ``duration_s``; latency from scheduled arrival."""
    rng = np.random.default_rng(settings.seed)
    n_max = int(settings.target_qps * settings.duration_s * 1.5) + 16
    arrivals = np.cumsum(rng.exponential(1.0 / settings.target_qps, n_max))
    arrivals = arrivals[arrivals <= settings.duration_s]
    done = np.full(arrivals.size, np.nan)
    lock = threading.Lock()
    clock = time.perf_counter
    calls = _calls(runner, feeds, settings.requests)
    try:
        for _ in range(min(8, arrivals.size)):  # warm the requests up, untimed
            calls.submit(lambda: None)
        calls.wait()
        start = clock()
        late = 0
        for i, t in enumerate(arrivals):
            wait = start + t - clock()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1e-3:
                late += 1  # issued more than 1 ms after its arrival: the issuing side fell behind

            def finished(i: int = i) -> None:
                now = clock()
                with lock:
                    done[i] = now

            calls.submit(finished)
        calls.wait()
    finally:
        calls.close()
    latency_ms = (done - (start + arrivals)) * 1e3
    span = float(np.nanmax(done) - start) if arrivals.size else 0.0
    early = stats.early_stopping(latency_ms, 0.99)
    result: dict[str, Any] = {
        "scenario": "server", "target_qps": settings.target_qps, "duration_s": settings.duration_s,
        "queries": int(arrivals.size), "achieved_qps": arrivals.size / span if span > 0 else None,
        "requests": settings.requests, "call_path": calls.path, "seed": settings.seed,
        "issued_late": late, **_percentiles(latency_ms), "mean_ms": float(np.mean(latency_ms)),
        "p99_early_stop": early.to_dict(), "latency_bound_ms": settings.latency_bound_ms,
    }
    result.update(_verdict(result, early))
    return result


def _verdict(result: dict[str, Any], early: Any) -> dict[str, Any]:
    bound = result["latency_bound_ms"]
    if bound is None:
        return {"valid": None, "reason": "no --latency-bound-ms: the p99 is reported, not judged"}
    info = early.to_dict()
    if not info.get("ok"):
        return {"valid": False, "reason": f"{result['queries']} queries are too few for the early-stopping p99 "
                                          f"(needs {info.get('min_queries')}): run longer or at a higher QPS"}
    estimate = float(info["estimate_ms"])
    if estimate > bound:
        return {"valid": False, "reason": f"early-stopping p99 {estimate:.4g} ms (99% confidence) exceeds the "
                                          f"{bound:g} ms latency bound at {result['target_qps']:g} QPS"}
    return {"valid": True, "reason": f"early-stopping p99 {estimate:.4g} ms within the {bound:g} ms bound"}


def offline_concurrent(runner: Any, feeds: dict[str, np.ndarray], requests: int, queries: int) -> dict[str, Any]:
    """Offline with ``requests`` in flight: ``queries`` issued back to back; throughput is queries / wall time,
    latency per query from its submission."""
    if queries < requests:
        raise ConfigError(f"--queries ({queries}) must be >= --requests ({requests})", where="--queries")
    clock = time.perf_counter
    submitted = np.zeros(queries)
    done = np.zeros(queries)
    calls = _calls(runner, feeds, requests)
    try:
        for _ in range(2 * requests):
            calls.submit(lambda: None)
        calls.wait()
        start = clock()
        for i in range(queries):
            def finished(i: int = i) -> None:
                done[i] = clock()

            submitted[i] = clock()
            calls.submit(finished)
        calls.wait()
        wall = clock() - start
    finally:
        calls.close()
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
    return {"scenario": "offline", "requests": requests, "queries": queries, "batch_size": batch,
            "call_path": calls.path, "wall_s": wall, "throughput_per_s": queries * batch / wall,
            **_percentiles((done - submitted) * 1e3)}
