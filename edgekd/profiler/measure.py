"""The latency loops: single-stream (one query at a time, every query's time kept) and offline
(throughput over a batch sweep), after MLPerf LoadGen's scenarios.

Only the runner call sits between the two clock reads; progress updates, idle gaps and
bookkeeping happen outside the timed region. The timed call is the runner's *bound* call by
default (``BoundCall``: inputs bound once, ONNX Runtime IOBinding / an OpenVINO request with its
tensors set): a plain ``infer(feeds)`` through the Python binding converts inputs and outputs on
every call, which is most of the time of a sub-millisecond model. ``binding_overhead`` measures
that per-call cost (plain minus bound, interleaved) so it is reported, not hidden; the clock
pair's own cost (``harness_overhead``) is reported too.
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.base import BoundCall, bound_call_of
from edgekd.errors import ConfigError
from edgekd.inputs import ModelInputs
from edgekd.profiler import stats
from edgekd.progress import task


@dataclass(frozen=True)
class MeasureSettings:
    """How long to warm up and how long to measure. Counts and times combine: warm-up runs
    ``warmup`` calls *and* at least ``warmup_s`` seconds; measuring runs ``iterations`` queries
    *and* at least ``duration_s`` seconds (capped at ``max_iterations``)."""

    warmup: int = 20
    warmup_s: float = 0.0
    iterations: int = 200
    duration_s: float = 0.0
    max_iterations: int = 1_000_000
    idle_gap_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.warmup_s < 0 or self.duration_s < 0 or self.idle_gap_ms < 0:
            raise ValueError("warm-up, duration and idle gap must be >= 0")
        if self.iterations < 1 and self.duration_s <= 0:
            raise ValueError("need iterations >= 1 or a duration_s time budget")
        if self.max_iterations < max(1, self.iterations):
            raise ValueError("max_iterations must be >= iterations")


@dataclass(frozen=True)
class LatencySample:
    """Raw per-query times (seconds) plus the first (cold) call measured separately."""

    times_s: np.ndarray
    first_call_s: float
    batch_size: int
    warmup_calls: int = 0
    wall_s: float = 0.0
    harness_overhead_s: float | None = None
    memory: dict[str, float] = field(default_factory=dict)
    call_path: str = "plain"
    call_path_detail: str = ""
    runtime_times_s: np.ndarray | None = None  # the runtime's own timing of each query, when it keeps one

    @property
    def times_ms(self) -> np.ndarray:
        return self.times_s * 1e3

    def summary(self, *, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Flat statistics dict (ms); the keys the pipeline's report and budgets read stay stable:
        iterations, batch_size, first_call_ms, min/p50/p90/p99/mean_ms, throughput_per_s."""
        ms = self.times_ms
        s = stats.summarize(ms)
        out: dict[str, Any] = {
            "iterations": int(ms.size),
            "batch_size": self.batch_size,
            "first_call_ms": self.first_call_s * 1e3,
            **{k: v for k, v in s.items() if k != "count"},
            "throughput_per_s": float(self.batch_size / np.median(self.times_s)),
            "warmup_calls": self.warmup_calls,
            "wall_s": self.wall_s,
        }
        out["call_path"] = self.call_path
        out["call_path_detail"] = self.call_path_detail
        if self.harness_overhead_s is not None:
            out["harness_overhead_us"] = self.harness_overhead_s * 1e6
        if self.runtime_times_s is not None and self.runtime_times_s.size:
            out["runtime_p50_ms"] = float(np.median(self.runtime_times_s)) * 1e3
        if bootstrap and ms.size >= 2:
            out["p50_ci_ms"] = stats.bootstrap_ci(ms, 50, n_boot=bootstrap, seed=seed).to_dict()
            out["p90_ci_ms"] = stats.bootstrap_ci(ms, 90, n_boot=bootstrap, seed=seed).to_dict()
        for p, key in ((0.90, "p90_early_stop"), (0.99, "p99_early_stop")):
            out[key] = stats.early_stopping(ms, p).to_dict()
        out.update(self.memory)
        return out


def _call(runner: Any) -> Callable[[Mapping[str, np.ndarray]], Any]:
    # Runners may expose a validation-free hot path; timing should not include our checks.
    return getattr(runner, "infer_unchecked", runner.infer)


#: ``--call-path``: "bound" = the runner's ``bound_call`` (the runtime's lowest-overhead call, inputs bound once);
#: "plain" = ``runner.infer_unchecked(feeds)``, the Python call an application usually writes
CALL_PATHS = ("bound", "plain")
PLAIN_DETAIL = "runner.infer_unchecked(feeds): inputs and outputs go through the Python binding on every call"


@dataclass(frozen=True)
class TimedCall:
    """The zero-argument call the loop times and what it is; ``bound`` keeps a bound call's arrays alive."""

    run: Callable[[], Any]
    call_path: str
    detail: str
    bound: BoundCall | None = None


def timed_call(runner: Any, feeds: Mapping[str, np.ndarray], call_path: str = "bound") -> TimedCall:
    """The call to time on ``feeds``. "bound" falls back to the plain call (so labelled) for a runner without one."""
    if call_path not in CALL_PATHS:
        raise ValueError(f"call_path must be one of {', '.join(CALL_PATHS)}, got {call_path!r}")
    if call_path == "bound":
        bound = bound_call_of(runner, feeds)
        if bound is not None:
            return TimedCall(bound.run, "bound", bound.path, bound)
        return TimedCall(functools.partial(_call(runner), feeds), "plain",
                         f"{type(runner).__name__} has no bound call: {PLAIN_DETAIL}")
    return TimedCall(functools.partial(_call(runner), feeds), "plain", PLAIN_DETAIL)


def binding_overhead(runner: Any, feeds: Mapping[str, np.ndarray], *, rounds: int = 7,
                     budget_s: float = 0.5) -> dict[str, Any] | None:
    """Per-call cost of the plain path over the bound one: ``rounds`` interleaved rounds (plain, bound, plain, ...)
    of a few calls each, the median per round of each, and the median of the per-round differences (us). None for
    a runner without a bound call. About ``budget_s`` seconds, at least 5 calls per side and round."""
    bound = bound_call_of(runner, feeds)
    if bound is None:
        return None
    plain = functools.partial(_call(runner), feeds)
    clock = time.perf_counter
    begin = clock()
    for _ in range(3):  # warm both paths and estimate the call time
        plain()
        bound.run()
    per_call = max((clock() - begin) / 6, 1e-7)
    calls = int(min(200, max(5, budget_s / (2 * rounds * per_call))))
    plain_us: list[float] = []
    bound_us: list[float] = []
    for _ in range(rounds):
        for fn, sink in ((plain, plain_us), (bound.run, bound_us)):
            times = np.empty(calls)
            for i in range(calls):
                t0 = clock()
                fn()
                times[i] = clock() - t0
            sink.append(float(np.median(times)) * 1e6)
    diffs = np.asarray(plain_us) - np.asarray(bound_us)
    return {"binding_overhead_us": float(np.median(diffs)), "range_us": [float(diffs.min()), float(diffs.max())],
            "plain_p50_us": float(np.median(plain_us)), "bound_p50_us": float(np.median(bound_us)),
            "rounds": rounds, "calls_per_round": calls,
            "method": "median over interleaved rounds of (median plain call - median bound call)"}


def rss_mb() -> dict[str, float]:
    """Current RSS and the process's peak RSS so far (MB). Peak covers the whole process
    (imports, model load), not just inference: ru_maxrss is all the OS keeps."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kb / 1024 / 1024 if sys.platform == "darwin" else peak_kb / 1024  # bytes on macOS, KiB on Linux
    try:
        import psutil

        current = psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil unavailable: current RSS is simply not reported
        return {"peak_rss_mb": peak}
    return {"rss_mb": current, "peak_rss_mb": peak}


def harness_overhead(n: int = 2000) -> float:
    """Seconds the clock pair adds to a query by itself: the timed region around a zero-argument no-op Python call
    (the loop's own cost; the runtime binding's per-call cost is ``binding_overhead``'s)."""
    clock = time.perf_counter
    noop = _noop
    times = np.empty(n)
    for i in range(n):
        t0 = clock()
        noop()
        times[i] = clock() - t0
    return float(np.median(times))


def _noop() -> None:
    return None


def measure_latency(runner: Any, feeds: Mapping[str, np.ndarray], *, warmup: int = 20, iterations: int = 200,
                    description: str = "profiling", settings: MeasureSettings | None = None,
                    call_path: str = "bound") -> LatencySample:
    """Single-stream: one query at a time. ``settings`` overrides ``warmup``/``iterations``; ``call_path`` picks
    the timed call (``CALL_PATHS``; the first, cold call is always the plain one, binding nothing yet)."""
    cfg = settings or MeasureSettings(warmup=warmup, iterations=iterations)
    clock = time.perf_counter
    sleep = time.sleep
    gap = cfg.idle_gap_ms / 1e3
    begin = clock()
    _call(runner)(feeds)
    first = clock() - begin
    timed = timed_call(runner, feeds, call_path)
    call = timed.run
    runtime_latency = timed.bound.runtime_latency_s if timed.bound is not None else None

    warm_start = clock()
    n_warm = 0
    while n_warm < cfg.warmup or clock() - warm_start < cfg.warmup_s:
        call()
        n_warm += 1

    times: list[float] = []
    append = times.append
    runtime_times: list[float] = []
    target = max(cfg.iterations, 1)
    with task(description, target if cfg.duration_s <= 0 else None) as bar:
        start = clock()
        i = 0
        while i < cfg.max_iterations and (i < cfg.iterations or clock() - start < cfg.duration_s):
            if gap:
                sleep(gap)
            t0 = clock()
            call()
            t1 = clock()
            append(t1 - t0)
            if runtime_latency is not None:  # outside the timed region
                runtime_times.append(runtime_latency())
            i += 1
            if not i & 63:  # rich redraws cost microseconds: update the bar in chunks, outside the timed region
                bar.advance(64)
        wall = clock() - start
    batch = feed_batch(feeds)
    return LatencySample(np.asarray(times, dtype=np.float64), first, batch, n_warm, wall, harness_overhead(),
                         rss_mb(), timed.call_path, timed.detail,
                         np.asarray(runtime_times, dtype=np.float64) if runtime_latency is not None else None)


def feed_batch(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


# ------------------------------------------------------------------ feeds


_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64, "int32": np.int32,
           "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


def make_feeds(inputs: Sequence[Any], batch: int = 1, sample: np.ndarray | None = None, seed: int = 0,
               shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Feeds for a runner's inputs at ``batch``: ``sample`` (e.g. golden inputs) repeated for the
    first input, seeded random values otherwise. A fixed batch dimension that differs is an error.
    ``shapes`` gives full shapes (batch first; the batch is replaced by ``batch``) for inputs with
    dynamic dimensions (--shape NAME=1x3x224x224)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    shapes = dict(shapes or {})
    names = [spec.name for spec in inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise ConfigError(f"--shape names input(s) {', '.join(map(repr, unknown))} the model does not have",
                          where="--shape", hint=f"the model's inputs: {', '.join(names)}")
    for k, spec in enumerate(inputs):
        shape = list(spec.shape)
        if spec.name in shapes:
            given = [int(d) for d in shapes[spec.name]]
            if len(given) != len(shape) or any(isinstance(d, int) and d != g for d, g in zip(shape[1:], given[1:])):
                raise ConfigError(f"--shape {spec.name}={'x'.join(map(str, given))} does not fit the input's shape "
                                  f"{spec.shape}", where="--shape", hint="give every dimension, batch first; "
                                  "fixed dimensions must match the model")
            shape = [shape[0], *given[1:]]
        if shape and isinstance(shape[0], int) and shape[0] != batch:
            raise ConfigError(f"input {spec.name!r} has a fixed batch dimension of {shape[0]}, cannot run batch {batch}",
                              where=spec.name, hint=f"use batch size {shape[0]} or export with a dynamic batch axis")
        if shape:
            shape[0] = batch
        if any(not isinstance(d, int) for d in shape):
            example = "x".join(str(d) if isinstance(d, int) else "?" for d in [batch, *spec.shape[1:]])
            raise ConfigError(f"input {spec.name!r} has dynamic dimensions {spec.shape} besides the batch",
                              where=spec.name, hint=f"give its shape: --shape {spec.name}={example} (every '?' a "
                              "number), or profile a bundle (its golden.npz gives real shapes)")
        dtype = _DTYPES.get(spec.dtype, np.float32)
        # a multi-input bundle's golden sample holds every input by name (edgekd.inputs.ModelInputs)
        given_sample = sample.arrays.get(spec.name) if isinstance(sample, ModelInputs) else (sample if k == 0 else None)
        if given_sample is not None:
            base = np.asarray(given_sample[:1], dtype=dtype)
            feeds[spec.name] = np.ascontiguousarray(np.repeat(base, batch, axis=0).reshape(shape))
        elif np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _spec_text(spec: Any) -> str:
    return f"shape {tuple('?' if not isinstance(d, int) else d for d in spec.shape)} {spec.dtype}"


def read_feeds(path: str | Path, inputs: Sequence[Any], *, flag: str = "--inputs") -> dict[str, np.ndarray]:
    """The user's own feeds from an .npz keyed by the model's input names (a single-input model also takes ``x``),
    checked against ``inputs`` (a runner's IOSpecs) and returned in the model's dtypes, batch as stored.

    Integer inputs (token ids, masks) stay integers: a float array for one, or an integer array for a float input
    (uint8 images need the model's preprocessing), is refused rather than converted; a wider integer or float type
    is narrowed only when every value fits. Every mismatch names the key, the input and what the model expects."""
    from edgekd.bundle import load_npz

    p = Path(path)
    where = f"{flag} {p}"
    if not p.is_file():
        raise ConfigError("inputs file not found", where=where, hint="pass an .npz saved with np.savez(path, NAME=array)")
    try:
        arrays = load_npz(p)
    except Exception as exc:  # load_npz says what is wrong (not an npz, pickled arrays)
        raise ConfigError(getattr(exc, "message", str(exc)), where=where,
                          hint="save it with np.savez(path, NAME=array), one array per model input") from None
    names = [spec.name for spec in inputs]
    expected = "; ".join(f"{spec.name}: {_spec_text(spec)}" for spec in inputs)
    if len(inputs) == 1 and names[0] not in arrays and "x" in arrays:
        arrays = {names[0]: arrays.pop("x"), **arrays}  # a single-input model: key x is its input
    missing = [n for n in names if n not in arrays]
    unknown = sorted(k for k in arrays if k not in names)
    if missing or unknown:
        raise ConfigError(f"the file's keys {sorted(arrays) or '(none)'} do not match the model's inputs"
                          + (f": missing {', '.join(missing)}" if missing else "")
                          + (f"; not model inputs: {', '.join(unknown)}" if unknown else ""), where=where,
                          hint=f"one array per input, keyed by its name ({expected})"
                          + ("; a single-input model also accepts key x" if len(inputs) == 1 else ""))
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        arr = arrays[spec.name]
        want = np.dtype(_DTYPES.get(spec.dtype, np.float32))
        what = f"input {spec.name!r}: the model expects {_spec_text(spec)}, the file holds shape {tuple(arr.shape)} " \
               f"{arr.dtype}"
        if not spec.matches(tuple(arr.shape)):
            raise ConfigError(what, where=where, hint="batch first; '?' dimensions may take any size, the others "
                              "must match")
        if want.kind != arr.dtype.kind and not (want.kind in "iu" and arr.dtype.kind in "iu"):
            from edgekd.backends.base import dtype_hint

            hint = (dtype_hint(arr.dtype, spec.dtype) if want.kind == "f" else
                    f"store the {spec.name} values as integers (token ids, masks, indices): x.astype(np.{want})")
            raise ConfigError(what, where=where, hint=hint)
        if want.kind in "iu" and arr.size and (arr.min() < np.iinfo(want).min or arr.max() > np.iinfo(want).max):
            raise ConfigError(f"{what}: values {arr.min()}..{arr.max()} do not fit {want}", where=where)
        feeds[spec.name] = np.ascontiguousarray(arr, dtype=want)
    counts = {k: len(v) if v.ndim else 1 for k, v in feeds.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError("the inputs hold different batch sizes: " + ", ".join(f"{k} {n}" for k, n in counts.items()),
                          where=where, hint="every input needs one row per sample (the same N)")
    return feeds


def tile_feeds(feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``feeds`` at ``batch``: the given rows cycled (the first ``batch`` of them when there are more)."""
    rows = np.arange(batch) % max(feed_batch(feeds), 1)
    return {k: np.ascontiguousarray(np.take(v, rows, axis=0)) if v.ndim else v for k, v in feeds.items()}


def describe_feeds(feeds: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """What was fed, for reports: ``source`` (a file name, or how the data was generated) and each input's shape."""
    return {"source": source, "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()}}


# ------------------------------------------------------------------ offline scenario


def batch_sweep(runner: Any, inputs: Sequence[Any], batches: Sequence[int], cfg: MeasureSettings,
                sample: np.ndarray | None = None, description: str = "offline",
                shapes: Mapping[str, Sequence[int]] | None = None, call_path: str = "bound",
                given: Mapping[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Offline scenario: throughput (samples/s) at each batch size. Each point is a short
    single-stream run at that batch; throughput = batch / median query time. ``given``: the user's own feeds
    (``read_feeds``), their rows cycled to each batch size."""
    points = []
    for b in batches:
        try:
            if given is not None:
                feeds = tile_feeds(given, b)
                fixed = [s.name for s in inputs if not s.matches(tuple(feeds[s.name].shape))]
                if fixed:
                    raise ConfigError(f"input(s) {', '.join(fixed)} have a fixed batch size other than {b}")
            else:
                feeds = make_feeds(inputs, b, sample, shapes=shapes)
        except ConfigError as exc:
            points.append({"batch_size": b, "skipped": exc.message})
            continue
        sample_b = measure_latency(runner, feeds, settings=cfg, description=f"{description} batch {b}",
                                   call_path=call_path)
        ms = sample_b.times_ms
        p50 = float(np.median(ms))
        points.append({"batch_size": b, "iterations": int(ms.size), "p50_ms": p50,
                       "p90_ms": float(np.percentile(ms, 90)), "per_sample_ms": p50 / b,
                       "throughput_per_s": b / (p50 / 1e3),
                       "throughput_ci_per_s": _throughput_ci(ms, b)})
    return points


def _throughput_ci(ms: np.ndarray, batch: int) -> dict[str, float] | None:
    if ms.size < 2:
        return None
    ci = stats.bootstrap_ci(ms, 50, n_boot=500)
    return {"low": batch / (ci.high / 1e3), "high": batch / (ci.low / 1e3), "confidence": ci.confidence}
