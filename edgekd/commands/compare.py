"""edgekd compare: one ONNX file on several runtimes, output by output (like `polygraphy run --onnxrt --openvino`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Run MODEL.onnx on several runtimes with the same inputs and compare every output with the
reference: max and mean |error|, the tolerance rule applied (edgekd.parity: atol + rtol x |ref|,
plus the quantization-step allowance of a QDQ model's output), top-1 agreement along the class
axis of a logits output, and a verdict per output.

The reference is the first --target (or --reference; ONNX Runtime `cpu` when only other targets
are given). Each target's backend builds the file into a temporary folder (--out keeps them). The
tolerances are each candidate target's [parity] settings unless --atol/--rtol/--min-top1 are given.

Inputs: --inputs FEEDS.npz keyed by the model's input names (a single-input model also takes key
x; integer inputs such as token ids keep their values), else generated from the model's input
spec: seeded random normal for float inputs, zeros for integer ones (--seed, --batch, --shape).

Examples:
  edgekd compare model.onnx --target cpu --target openvino-cpu
  edgekd compare model.onnx --target openvino-cpu                        # reference: ONNX Runtime cpu
  edgekd compare text.onnx --target cpu --target openvino-cpu --inputs feeds.npz --json report.json
  edgekd compare model.onnx --target openvino-cpu --save-outputs outputs.npz   # keys input/x, cpu/logits, ...
  edgekd compare model.qdq.onnx --target cpu --target openvino-cpu-int8 --atol 1e-3 --rtol 0
  edgekd compare seg.onnx --target cpu --target openvino-cpu --class-axis mask=1 --class-axis depth=none

(Two latency profiles are compared by `edgekd profile --compare BASE.json NEW.json`.)

Exit status: 0 every output of every target within its tolerance, 1 one is not (or a target's
build or run failed), 2 usage error (bad file, unknown target, inputs that do not fit the model).
"""


def _nonneg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _share(text: str) -> float:
    """A share: ``99%``, or a bare fraction ``0.99`` (``1`` is 100 %); a bare number above 1 is a percentage."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share such as 99% or 0.99, got {text!r}") from None
    value = value / 100 if value > 1 and not text.endswith("%") else value
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100%, got {text}")
    return value


def _axis(text: str) -> tuple[str, int | None]:
    name, sep, value = text.rpartition("=")
    if not sep or not name or not (value.lower() == "none" or value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected OUTPUT=AXIS or OUTPUT=none, got {text!r}")
    return name, None if value.lower() == "none" else int(value)


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet
    from edgekd.commands.profile import _count, _shape

    p = sub.add_parser("compare", help="run one ONNX file on several runtimes and compare every output (parity)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--target", action="append", default=[], metavar="NAME|PATH.toml",
                   help="a runtime to run it on, repeatable; the first is the reference unless --reference is given")
    p.add_argument("--reference", metavar="NAME|PATH.toml",
                   help="the reference target [the first of several --target; cpu when only one --target is given]")
    p.add_argument("--inputs", type=Path, metavar="FEEDS.npz",
                   help="your own inputs: an .npz keyed by the model's input names (one input: also key x)")
    p.add_argument("--batch", type=_count(1), default=1, help="batch of generated inputs [1]")
    p.add_argument("--seed", type=int, default=0, help="seed of generated inputs [0]")
    p.add_argument("--shape", type=_shape, action="append", default=[], metavar="NAME=1x128",
                   help="shape of a generated input with dynamic dimensions besides the batch, repeatable")
    t = p.add_argument_group("tolerances (default: each candidate target's [parity])")
    t.add_argument("--atol", type=_nonneg, help="absolute tolerance")
    t.add_argument("--rtol", type=_nonneg, help="relative tolerance (x |reference|)")
    t.add_argument("--min-top1", type=_share, metavar="PCT", help="minimum top-1 agreement of a logits output: 99%% or 0.99")
    t.add_argument("--output-steps", type=_nonneg, metavar="N",
                   help="quantization steps of a QDQ output allowed on top of atol (0: none)")
    t.add_argument("--class-axis", type=_axis, action="append", default=[], metavar="OUTPUT=AXIS|none",
                   help="the class axis of a logits output, or none for a continuous one [axis 1 when it has >= 2 "
                        "entries, else none]")
    p.add_argument("--out", type=Path, help="keep each target's build here [a temporary folder]")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report as JSON")
    p.add_argument("--save-outputs", type=Path, metavar="OUT.npz",
                   help="save the feeds and every runtime's outputs: keys input/NAME and TARGET/OUTPUT")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.bundle import dump_json
    from edgekd.cross_runtime import Tolerances, compare_runtimes, format_table

    targets = list(args.target)
    reference = args.reference
    if reference is None and len(targets) < 2:
        reference = "cpu"  # a single --target is compared with ONNX Runtime
    report = compare_runtimes(args.model, targets, reference=reference, inputs=args.inputs,
                              tolerances=Tolerances(args.atol, args.rtol, args.min_top1, args.output_steps),
                              class_axis=dict(args.class_axis), batch=args.batch, seed=args.seed,
                              shapes=dict(args.shape), out_dir=args.out)
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        dump_json(report.to_dict(), args.json)
        print(f"report: {args.json}")
    if args.save_outputs:
        import numpy as np

        args.save_outputs.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.save_outputs, **report.arrays)
        print(f"outputs: {args.save_outputs}")
    return report.exit_code
