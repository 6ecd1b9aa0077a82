"""edgekd profile: trustworthy latency of a built artifact on this device, compare runs, gate regressions."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = """\
Profile ARTIFACT on the device this runs on and write profile.json (schema edgekd.profile/1),
summary.csv, latency.csv, layers.csv, profile.md and PNG plots into --out.

ARTIFACT: a bundle folder (manifest.json), a .onnx (built for --target first), an OpenVINO .xml,
or a TensorRT .engine. Scenarios (after MLPerf LoadGen): single-stream (always: one query at a
time, every query kept, p90 with the early-stopping estimate) and offline (--batches: throughput
over a batch sweep).

Examples:
  edgekd profile out/digits --target cpu
  edgekd profile model.onnx --target openvino-cpu --iterations 1000 --batches 1,4,16
  edgekd profile out/digits --target openvino-cpu --precision auto      # pick the fastest precision
  edgekd profile --compare base/profile.json new/profile.json --max-regression 10%
  edgekd profile --compare baselines/cpu.json new/profile.json   # a `check --save-baseline` file reads too
  edgekd profile out/digits --target cpu --check-budget                  # p90 vs the target's budget
  edgekd profile text.onnx --target cpu --shape input_ids=1x128          # an input with a dynamic length
  edgekd profile text.onnx --target cpu --inputs feeds.npz   # your own token ids + mask (npz keyed by input name)

The regression gate fails only when the lower bound of the 95% (moving-block bootstrap) CI of
NEW/BASE exceeds 1 + --max-regression; profiles from different CPU models are refused
(--allow-other-host to compare anyway).

Exit status: 0 ok, 1 regression or budget exceeded, 2 error.
"""


def _count(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``: a bad count is a usage error (exit 2) naming the option, not a traceback."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return values


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        values = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        values = ()
    if not sep or not name or not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected NAME=DIMS such as input_ids=1x128, got {text!r}")
    return name, values


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet

    p = sub.add_parser("profile", help="measure latency (single-stream/offline), per-layer time; compare and gate",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", nargs="?", help="bundle folder, .onnx, .xml or .engine")
    p.add_argument("--target", help="target name or .toml (for a bundle: one of its targets) [cpu]")
    p.add_argument("--out", help="output folder [BUNDLE/profile/TARGET or ./profile-NAME-TARGET]")
    g = p.add_argument_group("measurement")
    g.add_argument("--warmup", type=_count(0), help="warm-up calls, >= 0 [target's profiling.warmup]")
    g.add_argument("--warmup-time", type=_seconds, default=0.0, metavar="S", help="also warm up at least S seconds [0]")
    g.add_argument("--iterations", type=_count(1), help="measured queries (minimum), >= 1 [target's profiling.iterations]")
    g.add_argument("--time", type=_seconds, default=0.0, metavar="S", help="time budget: keep measuring at least S seconds")
    g.add_argument("--idle-gap", type=_seconds, default=0.0, metavar="MS", help="idle time between queries, in ms [0]")
    g.add_argument("--batch", type=_count(1), help="single-stream batch size, >= 1 [target's profiling.batch_size]")
    g.add_argument("--batches", type=_batches, default=(), metavar="1,2,4,8", help="offline scenario: batch sweep")
    g.add_argument("--shape", type=_shape, action="append", default=[], metavar="NAME=1x3x224x224",
                   help="shape of an input with dynamic dimensions besides the batch (sequence length, H/W); "
                        "batch first, repeatable")
    g.add_argument("--inputs", type=Path, metavar="FEEDS.npz",
                   help="feed your own inputs: an .npz keyed by the model's input names (a single-input model also "
                        "takes key x); integer inputs (token ids, masks) keep their values; batch as stored unless "
                        "--batch [generated: random normal for float, zeros for integer inputs; a bundle: golden.npz]")
    g.add_argument("--call-path", choices=["bound", "plain"], default="bound",
                   help="timed call: bound = the runtime's lowest-overhead call on inputs bound once (ORT IOBinding, "
                        "a pre-set OpenVINO InferRequest); plain = runner.infer(feeds) through the Python binding "
                        "every call. The binding's per-call cost is measured and reported either way [bound]")
    s = p.add_argument_group("multi-query scenarios (MLPerf LoadGen style)")
    s.add_argument("--requests", type=_batches, default=(), metavar="1,2,4",
                   help="offline with N queries in flight (OpenVINO AsyncInferQueue / ORT session threads): throughput "
                        "and per-query latency for each N")
    s.add_argument("--server-qps", type=float, metavar="Q",
                   help="Server scenario: Poisson arrivals at Q queries/s (seeded), latency from each scheduled "
                        "arrival (queueing counts), p99 judged by LoadGen's early stopping")
    s.add_argument("--duration", type=_seconds, default=10.0, metavar="S", help="Server scenario length [10 s]")
    s.add_argument("--latency-bound-ms", type=float, metavar="MS",
                   help="Server scenario: the run is VALID when its early-stopping p99 is within MS")
    g.add_argument("--no-layers", action="store_true", help="skip the per-layer profile")
    g.add_argument("--layer-runs", type=_count(1), default=20, help="runs averaged in the per-layer profile [20]")
    g.add_argument("--no-plots", action="store_true", help="do not write PNGs")
    g.add_argument("--label", help="name of this variant in tables and plots [target name]")
    g.add_argument("--precision", choices=["auto"], help="auto: profile every precision the target supports, pick the "
                   "fastest within the accuracy budget (OpenVINO targets)")
    c = p.add_argument_group("compare and gate")
    c.add_argument("--compare", nargs=2, metavar=("BASE.json", "NEW.json"), help="compare two profile results")
    c.add_argument("--metric", action="append", choices=["p50", "p90", "p99"], help="metrics to compare [p50, p90]")
    c.add_argument("--max-regression", metavar="PCT", help="exit 1 when NEW is significantly slower by more than PCT")
    c.add_argument("--allow-other-host", action="store_true",
                   help="compare profiles measured on different CPU models (refused by default)")
    c.add_argument("--check-budget", action="store_true", help="exit 1 when p90 exceeds the target's budgets.p90_ms")
    c.add_argument("--scatter", nargs="+", metavar="JSON", help="accuracy-vs-p90 scatter (Pareto front) of these results")
    p.add_argument("--json", action="store_true", help="print the result (or comparison) as JSON")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.errors import ConfigError

    if args.compare:
        return _run_compare(args)
    if args.scatter:
        return _run_scatter(args)
    if not args.artifact:
        raise ConfigError("give an ARTIFACT to profile, or --compare BASE.json NEW.json", where="edgekd profile",
                          hint="see `edgekd profile --help`")
    if args.max_regression:
        raise ConfigError("--max-regression needs --compare BASE.json NEW.json", where="--max-regression")
    return _run_profile(args)


def _server_settings(args: argparse.Namespace) -> Any:
    from edgekd.errors import ConfigError
    from edgekd.profiler.scenarios import ServerSettings

    if args.server_qps is None:
        if args.latency_bound_ms is not None:
            raise ConfigError("--latency-bound-ms judges the Server scenario: give --server-qps too",
                              where="--latency-bound-ms")
        return None
    return ServerSettings(target_qps=args.server_qps, duration_s=args.duration, latency_bound_ms=args.latency_bound_ms,
                          requests=max(args.requests) if args.requests else 4)


def _default_out(artifact: Path, target: str) -> Path:
    from edgekd.bundle import PROFILE, is_bundle

    if is_bundle(artifact):
        return artifact / PROFILE / Path(target).stem
    return Path(f"profile-{artifact.stem}-{Path(target).stem}")


def _run_profile(args: argparse.Namespace) -> int:
    from edgekd.errors import ConfigError
    from edgekd.profiler import report
    from edgekd.profiler.measure import MeasureSettings
    from edgekd.profiler.run import ProfileOptions, profile, resolve_target_settings

    artifact = Path(args.artifact)
    target_name = args.target or "cpu"
    out = Path(args.out) if args.out else _default_out(artifact, target_name)
    profiling = resolve_target_settings(artifact, target_name)
    settings = MeasureSettings(warmup=args.warmup if args.warmup is not None else profiling.warmup,
                               warmup_s=args.warmup_time,
                               iterations=args.iterations if args.iterations is not None else profiling.iterations,
                               duration_s=args.time or profiling.duration_s, idle_gap_ms=args.idle_gap)
    options = ProfileOptions(measure=settings, batch_size=args.batch, batches=args.batches, layers=not args.no_layers,
                             layer_runs=args.layer_runs, label=args.label, shapes=dict(args.shape),
                             call_path=args.call_path, inputs=args.inputs, requests=args.requests,
                             server=_server_settings(args),
                             command="edgekd profile " + " ".join(shlex.quote(a) for a in sys.argv[2:]))
    if args.precision == "auto" and args.inputs is not None:
        raise ConfigError("--precision auto judges accuracy on the bundle's eval data, not on --inputs", where="--inputs",
                          hint="profile each precision's artifact with --inputs, or drop --inputs")
    if args.precision == "auto":
        from edgekd.profiler.auto import auto_precision, write_auto

        result = auto_precision(artifact, target_name, out, options)
        files = write_auto(result, out, plots=not args.no_plots)
        if args.json:
            print(json.dumps(result.to_dict(), indent=2, default=str))
        else:
            print(result.markdown())
            print(f"wrote {out}/: {', '.join(files)}")
        return 0
    doc = profile(artifact, target_name, out, options)
    files = report.write_all(doc, out, plots=not args.no_plots)
    if args.json:
        print(json.dumps({k: v for k, v in doc.items() if k != "single_stream"} | {"single_stream": {
            k: v for k, v in (doc["single_stream"] or {}).items() if k != "times_ms"}}, indent=2, default=str))
    else:
        _print_summary(doc)
        print(f"wrote {out}/: {', '.join(f for group in files.values() for f in group)}")
    if args.check_budget:
        from edgekd.profiler.compare import budget_gate

        budget = (doc["target"].get("budgets") or {}).get("p90_ms")
        if budget is None:
            raise ConfigError("the target sets no budgets.p90_ms", where=doc["target"].get("source") or target_name,
                              hint="add [budgets] p90_ms = ... to the target file")
        result = budget_gate(doc, float(budget))
        print("\n".join(result.messages))
        return 0 if result.ok else 1
    return 0


def _print_summary(doc: dict) -> None:
    from edgekd.profiler import report

    ss = doc.get("single_stream") or {}
    if not ss:
        print("no latency measured: " + "; ".join(doc.get("notes", [])))
        return
    es = ss.get("p90_early_stop") or {}
    ci = ss.get("p90_ci_ms") or {}
    print(f"{doc['label']}: p50 {ss['p50_ms']:.4f} ms, p90 {ss['p90_ms']:.4f} ms "
          f"[95% CI {ci.get('low', float('nan')):.4f}-{ci.get('high', float('nan')):.4f}], p99 {ss['p99_ms']:.4f} ms, "
          f"first call {ss['first_call_ms']:.3f} ms, {ss['iterations']} queries"
          + (f"; early-stopping p90 {es['estimate_ms']:.4f} ms" if es.get("ok") else ""))
    print(f"timed call: {ss.get('call_path', 'plain')}; {report.binding_line(ss)}")
    if doc.get("inputs"):
        print(f"inputs: {report.inputs_line(doc['inputs'])}")
    mix = (doc.get("layers") or {}).get("precision_mix")
    if mix:
        print("layer time by precision: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in mix.items()))
    for c in doc.get("concurrent") or []:
        print(f"offline, {c['requests']} in flight: {c['throughput_per_s']:.1f} samples/s, p50 {c['p50_ms']:.4f} ms, "
              f"p99 {c['p99_ms']:.4f} ms per query")
    srv = doc.get("server")
    if srv:
        verdict = {True: "VALID", False: "INVALID", None: "not judged"}[srv.get("valid")]
        print(f"server at {srv['target_qps']:g} QPS ({srv['queries']} queries, achieved {srv['achieved_qps']:.1f}): "
              f"p99 {srv['p99_ms']:.4f} ms from arrival -> {verdict}: {srv['reason']}")


def _run_compare(args: argparse.Namespace) -> int:
    from edgekd.profiler import compare as cmp

    base, new = cmp.load_baseline(args.compare[0]), cmp.load_baseline(args.compare[1])
    # two variants of a model are what --compare is for: only another CPU is refused
    notes = cmp.check_origin(base, new, where=args.compare[0], allow_other_host=args.allow_other_host)
    comp = cmp.compare(base, new, metrics=tuple(args.metric or ("p50", "p90")))
    comp.env_differences += [n for n in notes if n not in comp.env_differences]
    gate = cmp.gate(comp, cmp.parse_fraction(args.max_regression)) if args.max_regression else None
    if args.json:
        print(json.dumps({**comp.to_dict(), "gate": None if gate is None else {"ok": gate.ok, "messages": gate.messages}},
                         indent=2))
    else:
        print(cmp.markdown(comp))
        if gate is not None:
            print("\n".join(gate.messages))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "compare.md").write_text(cmp.markdown(comp))
        (Path(args.out) / "compare.json").write_text(json.dumps(comp.to_dict(), indent=2) + "\n")
    return 0 if gate is None or gate.ok else 1


def _run_scatter(args: argparse.Namespace) -> int:
    from edgekd.errors import ConfigError
    from edgekd.profiler import plots, report

    docs = [report.load(p) for p in args.scatter]
    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    try:
        path = plots.accuracy_scatter(docs, out / "accuracy_vs_p90.png")
    except ValueError as exc:
        raise ConfigError(str(exc), where="--scatter", hint="profile bundles whose report.json has accuracy") from None
    print(f"wrote {path}")
    return 0
