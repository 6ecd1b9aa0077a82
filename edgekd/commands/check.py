"""edgekd check: hardware-in-the-loop checks of a bundle on the device at hand (for CI)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Run a bundle's target on this machine and check it against the target's budgets:
integrity (checksums), golden parity (target [parity] atol/rtol/top-1), accuracy on eval.npz
or --data (budgets.max_accuracy_drop), latency p90 (budgets.p90_ms), regression against
--baseline, and size (budgets.max_size_mb). A baseline is a profile result: a profile.json of
`edgekd profile` or a --save-baseline file (the same format); it is refused when measured on another
CPU model or another model file (--allow-other-host / --allow-other-model to judge anyway). The
regression fails only when the lower bound of the 95% CI of now/baseline exceeds 1 + --max-regression.
Exit 0 only when every check passes (a check with
no budget or no data is skipped and says why); 1 when one fails; 2 on a usage error.

--target NAME picks the bundle's target (and its stored budgets); --target PATH.toml (or the
name of a shipped target file not in the bundle's list) loads that file's budgets, tolerances,
profiling and options instead -- e.g. a stricter budget for one device.

Examples:
  edgekd check build/digits --target cpu --junit reports/hil-cpu.xml
  edgekd check build/digits --target cpu --save-baseline baselines/cpu.json      # once, on the device
  edgekd check build/digits --target cpu --baseline baselines/cpu.json --max-regression 20%
  edgekd check build/text --target openvino-cpu --inputs feeds.npz      # parity + latency on your own inputs
"""


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet

    p = sub.add_parser("check", help="check a bundle on this device: parity, accuracy, latency, size (CI, JUnit)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle folder (manifest.json inside)")
    p.add_argument("--target", help="target name in the bundle, or a target NAME|PATH whose budgets override")
    p.add_argument("--baseline", type=Path, help="baseline profile JSON for the regression check")
    p.add_argument("--max-regression", default="25%", metavar="PCT",
                   help="allowed slow-down vs baseline: 10%% (or 0.1; a bare 10 is 10%%) [25%%]")
    p.add_argument("--regression-metric", choices=("p50_ms", "p90_ms"), default="p50_ms",
                   help="statistic compared with the baseline [p50_ms: steadier than p90 on shared machines]")
    p.add_argument("--allow-other-host", action="store_true",
                   help="judge against a baseline measured on another CPU model (refused by default)")
    p.add_argument("--allow-other-model", action="store_true",
                   help="judge against a baseline of another model file (sha256 differs; refused by default)")
    p.add_argument("--data", help="labelled data for the accuracy check: PATH.npz (x, y) or an edgekd data source")
    p.add_argument("--inputs", type=Path, metavar="FEEDS.npz",
                   help="your own inputs (.npz keyed by the model's input names; one input: also key x) for parity "
                        "(vs ONNX Runtime on the file the target was built from) and latency, instead of golden.npz")
    p.add_argument("--warmup", type=int, help="latency warm-up calls [target's profiling.warmup]")
    p.add_argument("--iterations", type=int, help="latency queries [target's profiling.iterations]")
    p.add_argument("--junit", type=Path, metavar="OUT.xml", help="write JUnit XML for the CI system")
    p.add_argument("--save-baseline", type=Path, metavar="OUT.json",
                   help="store the latency measured now as a baseline for later --baseline runs")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.budgets import parse_fraction
    from edgekd.bundle import dump_json
    from edgekd.errors import ConfigError, EdgekdError
    from edgekd.hil import CheckOptions, baseline_dict, format_table, run_checks, write_junit, write_junit_error

    bundle = Path(args.bundle).resolve()
    for flag, path in (("--junit", args.junit), ("--save-baseline", args.save_baseline)):
        if path is not None and bundle in Path(path).resolve().parents:
            raise ConfigError("would write into the bundle, whose integrity check then fails (a file not listed "
                              "in manifest.json)", where=f"{flag} {path}", hint="write it next to the bundle instead")
    options = CheckOptions(target=args.target, baseline=args.baseline, data=args.data,
                           max_regression=parse_fraction(args.max_regression), regression_metric=args.regression_metric,
                           allow_other_host=args.allow_other_host, allow_other_model=args.allow_other_model,
                           warmup=args.warmup, iterations=args.iterations, inputs=args.inputs)
    try:
        report = run_checks(args.bundle, options)
    except EdgekdError as exc:
        if args.junit:  # CI still gets a report that says why nothing ran
            write_junit_error(args.junit, str(exc), bundle=str(args.bundle))
        raise
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(format_table(report))
    if args.junit:
        write_junit(report, args.junit)
        print(f"JUnit XML: {args.junit}")
    if args.save_baseline:
        args.save_baseline.parent.mkdir(parents=True, exist_ok=True)
        dump_json(baseline_dict(report), args.save_baseline)
        print(f"baseline saved: {args.save_baseline}")
    return report.exit_code
