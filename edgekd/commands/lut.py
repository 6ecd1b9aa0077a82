"""edgekd lut: the search's latency table for a target, measured on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = """\
Build (or extend) the latency table `edgekd search` uses as its cost model for --target, measured here,
in the deployed precision: int8 = the QDQ ONNX edgekd ships for the target's backend (ONNX Runtime static
PTQ + the backend's Q/DQ flavor), fp32 = the plain export. Each entry is one fused block (Conv/Linear +
BatchNorm + activation at one input size) built standalone by the target's backend and timed by the
profiler's loop (median of interleaved short rounds).

First build: the channel granule the runtime likes is measured (a 3x3 conv's output width swept 8..128;
the largest multiple that rounding up to is free, within the noise), unless --granule is given.
With --model and --data: the model's blocks and those of --variants random prunings of it are measured,
and the calibration (measured p90 = a * sum of entries + b) is fitted on those whole models.

The table is cached per target, precision, runtime version and host: .edgekd-cache/latency/ (or
$EDGEKD_CACHE_DIR/latency, or --cache-dir); a second run measures only what is missing.
FPGA targets estimate cycles at build time: use their HLS/RTL estimate instead (refused here).

Examples:
  edgekd lut build --target cpu
  edgekd lut build --target openvino-cpu --model torchvision:resnet18 --data random:3x112x112 --out r18.json
  edgekd lut build --target cpu --precision fp32 --granule 8 --model builtin:digits-student --data builtin:digits
"""


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet

    p = sub.add_parser("lut", help="build the per-target latency table the search uses (measured here)",
                       description="The search's measured latency table. `edgekd lut build --help` for details.")
    lut_sub = p.add_subparsers(dest="lut_command", metavar="{build}")
    b = lut_sub.add_parser("build", help="measure the table for a target (cached; extends an existing one)",
                           description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--target", required=True, help="target name (edgekd list targets) or .toml: cpu, openvino-cpu, "
                   "openvino-cpu-int8 ...")
    b.add_argument("--precision", default="int8", choices=["int8", "fp32"], help="deployed precision [int8]")
    b.add_argument("--model", help="model source whose blocks to measure and calibrate on (as in compress)")
    b.add_argument("--data", help="data source giving the input size (random:3x112x112, builtin:digits, npz:...)")
    b.add_argument("--variants", type=int, default=10, help="whole models to calibrate on: --model and N-1 random "
                   "prunings of it [10]")
    b.add_argument("--granule", type=int, help="channel granule to record instead of measuring it")
    b.add_argument("--cache-dir", type=Path, help="cache folder [.edgekd-cache/latency or $EDGEKD_CACHE_DIR/latency]")
    b.add_argument("--out", type=Path, help="also write the table JSON here")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet(b)
    b.set_defaults(handler=run_build)
    p.set_defaults(handler=lambda args: p.print_help() or 2)


def _example(args: argparse.Namespace, loaded: Any) -> Any:
    import torch

    from edgekd.data import DataContext, load_data
    from edgekd.errors import ConfigError

    if args.data:
        splits = load_data(args.data, DataContext(input_shape=loaded.input_shape, seed=0))
        return torch.from_numpy(splits.x_test[:1].astype("float32"))
    if loaded.input_shape is None:
        raise ConfigError(f"--model {args.model} does not say its input size", where="--data",
                          hint="pass --data (random:3x112x112 is enough: only the shape is used)")
    return torch.randn(1, *loaded.input_shape)


def run_build(args: argparse.Namespace) -> int:
    from edgekd.errors import ConfigError
    from edgekd.search.latency import load_or_build, write_json_atomic

    if args.data and not args.model:
        raise ConfigError("--data gives the input size of --model; no --model was given", where="--data",
                          hint="add --model SRC, or leave out --data to measure the granule only")
    if args.variants < 2:
        raise ConfigError(f"--variants must be >= 2 (got {args.variants}): a calibration fits two numbers",
                          where="--variants")
    table = load_or_build(args.target, precision=args.precision, cache_dir=args.cache_dir, granule=args.granule)
    calibration = None
    if args.model:
        from edgekd.models import load_model
        from edgekd.search.lut_variants import calibration_models

        loaded = load_model(args.model)
        example = _example(args, loaded)
        models = calibration_models(loaded.module, example, args.variants, round_to=None)
        calibration = table.calibrate(models, example)
    if args.out:
        write_json_atomic(args.out, table.to_dict())
    summary = {"target": table.target, "precision": table.precision, "runtime_version": table.runtime_version,
               "granule": table.granule, "granule_why": table.granule_detail.get("why", "given (--granule)"),
               "entries": len(table.entries), "measured_now": table.measured_now, "cache": str(table.path),
               "out": str(args.out) if args.out else None,
               "calibration": None if calibration is None else {k: calibration[k] for k in (
                   "a", "b", "models", "median_abs_pct_error", "max_abs_pct_error")}}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"latency table {table.target} / {table.precision} ({table.runtime_version})")
    print(f"  granule {table.granule}: {summary['granule_why']}")
    print(f"  {len(table.entries)} block entries ({table.measured_now} measured now), cache {table.path}")
    if calibration:
        print(f"  calibration on {calibration['models']} whole models: p90 = {calibration['a']:.3f} x sum "
              f"{calibration['b']:+.3f} ms; median |error| {calibration['median_abs_pct_error']:.1f} % "
              f"(max {calibration['max_abs_pct_error']:.1f} %)")
    if args.out:
        print(f"  written to {args.out}")
    return 0
