"""Noise bench of the regression gate: 20 identical A/B pairs must not fail, a real 20 % slowdown must.

    PYTHONPATH=$PWD python tools/noise_bench.py [--pairs 20] [--iterations 300] [--limit 10%] [--slowdown 0.2]

The digits student (fp32) is built once into a bundle for the ``cpu`` target (ONNX Runtime). Each run is a
fresh ``edgekd.hil.HilSession`` measuring single-stream latency and producing the document
``edgekd check --save-baseline`` writes (a profile result); A and B run back to back, as two CI jobs would,
and are judged by ``edgekd.profiler.compare.compare`` + ``gate`` -- the code behind both
``edgekd profile --compare`` and ``edgekd check --baseline``.

The slowdown is a wrapper runner that busy-waits ``slowdown`` x the calibrated median latency inside each
query (a sleep is too coarse at ~40 us), i.e. a real +20 % on every call, not a synthetic sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.budgets import parse_fraction
from edgekd.hil import CheckOptions, HilSession
from edgekd.profiler import compare, stats
from edgekd.profiler.env import cpu_info
from edgekd.profiler.measure import LatencySample


class SlowRunner:
    """Delegates to ``inner`` and spins ``extra_s`` more in every query."""

    def __init__(self, inner: Any, extra_s: float) -> None:
        self.inner, self.extra_s = inner, extra_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _spin(self) -> None:
        end = time.perf_counter() + self.extra_s
        while time.perf_counter() < end:
            pass

    def infer(self, feeds: Any) -> Any:
        out = self.inner.infer(feeds)
        self._spin()
        return out

    def infer_unchecked(self, feeds: Any) -> Any:
        out = getattr(self.inner, "infer_unchecked", self.inner.infer)(feeds)
        self._spin()
        return out


def build_bundle(root: Path) -> Path:
    from edgekd.buildfile import BuildFile, build

    bf = BuildFile(model="builtin:digits-student", data="builtin:digits", out="bundle", targets=("cpu",),
                   measure=False, root=str(root))
    return build(bf).out


def measure(bundle: Path, options: CheckOptions, extra_s: float = 0.0) -> dict[str, Any]:
    session = HilSession(bundle, options)
    if extra_s:
        session._runner = SlowRunner(session.runner, extra_s)
    return session.measured_doc()


def measure_interleaved(bundle: Path, options: CheckOptions, rounds: int, extra_s: float = 0.0) -> tuple[dict, dict]:
    """A and B in alternating rounds (A B A B ...), so a neighbour's burst lands on both; each side's queries are
    then one profile result, as if measured in one run."""
    from edgekd.profiler.measure import measure_latency

    sessions = [HilSession(bundle, options), HilSession(bundle, options)]
    if extra_s:
        sessions[1]._runner = SlowRunner(sessions[1].runner, extra_s)
    per_round = max(10, (options.iterations or 300) // rounds)
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for side, session in enumerate(sessions):
            spec = session.runner.inputs[0]
            x = session.golden()["input"][:1]
            sample = measure_latency(session.runner, {spec.name: x}, warmup=3, iterations=per_round)
            times[side] += [float(t) for t in sample.times_ms]
    docs = []
    for side, session in enumerate(sessions):
        doc = session.measured_doc()  # provenance + format; its single-stream block is replaced by the rounds
        ms = np.asarray(times[side])
        doc["single_stream"] = {**LatencySample(ms / 1e3, 0.0, 1).summary(bootstrap=0), "times_ms": times[side]}
        docs.append(doc)
    return docs[0], docs[1]


def pair(bundle: Path, options: CheckOptions, rounds: int, extra_s: float = 0.0) -> tuple[dict, dict]:
    if rounds:
        return measure_interleaved(bundle, options, rounds, extra_s)
    return measure(bundle, options), measure(bundle, options, extra_s)


def old_rule_fails(base: dict[str, Any], new: dict[str, Any], limit: float) -> bool:
    """The rule before this bench (for the record): estimate over the limit and an i.i.d. bootstrap CI excluding 1."""
    ta, tb = (np.asarray(d["single_stream"]["times_ms"]) for d in (base, new))
    cis = [stats.ratio_ci(ta, tb, q, n_boot=2000) for q in (50.0, 90.0)]
    return any(ci.estimate > 1 + limit and not ci.contains(1.0) for ci in cis)


def judge(base: dict[str, Any], new: dict[str, Any], limit: float) -> tuple[bool, bool, str]:
    comp = compare.compare(base, new)
    result = compare.gate(comp, limit)
    text = "  ".join(f"{m.metric} x{m.ratio.estimate:.3f} CI [{m.ratio.low:.3f}, {m.ratio.high:.3f}]" for m in comp.metrics)
    return result.ok, old_rule_fails(base, new, limit), text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--limit", default="10%", help="--max-regression of the gate [10%%]")
    ap.add_argument("--slowdown", type=float, default=0.20, help="real slowdown injected in the last pairs [0.20]")
    ap.add_argument("--slow-pairs", type=int, default=5, help="slowdown pairs [5]")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved A/B rounds per pair; 0 = A then B [10]")
    args = ap.parse_args()
    os.environ.setdefault("EDGEKD_QUIET", "1")
    limit = parse_fraction(args.limit)
    options = CheckOptions(target="cpu", warmup=args.warmup, iterations=args.iterations)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp))
        measure(bundle, options)  # first run: warms the process (imports, allocator, caches)
        how = f"{args.rounds} interleaved A/B rounds" if args.rounds else "A then B"
        print(f"# noise bench: digits student, ORT cpu, {args.iterations} queries/run ({how}), gate +{limit * 100:g}% "
              f"(p50 and p90), CPU {cpu_info().get('model')}, {platform.node()}")
        false_fail, old_false, p50s = 0, 0, []
        for i in range(args.pairs):
            a, b = pair(bundle, options, args.rounds)
            p50s += [a["single_stream"]["p50_ms"], b["single_stream"]["p50_ms"]]
            ok, old_fail, text = judge(a, b, limit)
            false_fail += not ok
            old_false += old_fail
            print(f"identical pair {i + 1:2d}: {'FAIL' if not ok else 'pass'} (old rule {'FAIL' if old_fail else 'pass'})"
                  f"  {text}")
        calib = float(np.median(p50s)) / 1e3  # the typical p50: the spin adds `slowdown` of it
        caught = 0
        for i in range(args.slow_pairs):
            ok, _, text = judge(*pair(bundle, options, args.rounds, calib * args.slowdown), limit)
            caught += not ok
            print(f"+{args.slowdown * 100:g}% pair {i + 1}: {'caught' if not ok else 'MISSED'}  {text}")
    print(f"RESULT: {false_fail}/{args.pairs} identical pairs failed (old rule: {old_false}); {caught}/{args.slow_pairs} "
          f"+{args.slowdown * 100:g}% slowdowns caught (calibrated p50 {calib * 1e3:.4f} ms)")
    return 0 if false_fail == 0 and caught == args.slow_pairs else 1


if __name__ == "__main__":
    raise SystemExit(main())
