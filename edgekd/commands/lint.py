"""edgekd lint: check an ONNX file against a runtime's rules (TensorRT explicit quantization, 2:4)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Check MODEL.onnx against what TensorRT accepts and runs fast, without a GPU:
opset >= 13; symmetric int8 Q/DQ (zero point 0); per-tensor activations; per-channel weights on
the output-channel axis; no QLinear*/ *Integer ops; Q/DQ on every Conv/Gemm/MatMul input and on
the residual input of skip Adds; 2:4 compliance of each weight and the "channels >= 256" hint.

--target takes a linter name (tensorrt) or a target (tensorrt-orin-nano, path.toml): a target's
options decide whether 2:4 is requested and whether int8 is required.

Exit status: 0 clean, 1 findings at or above --fail-on, 2 usage/file errors.

Examples:
  edgekd lint bundle/model.onnx --target tensorrt
  edgekd lint bundle/variants/model.tensorrt.onnx --target tensorrt-a100 --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lint", help="check an ONNX model against a runtime's rules (TensorRT)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="ONNX file")
    p.add_argument("--target", default="tensorrt", help="linter (tensorrt) or target name/.toml [tensorrt]")
    p.add_argument("--sparse", action="store_true", default=None,
                   help="treat 2:4 as requested (SPARSE_WEIGHTS): non-2:4 layers become warnings")
    p.add_argument("--require-int8", action="store_true", default=None, help="a model without Q/DQ is an error")
    p.add_argument("--fail-on", choices=["error", "warning"], default="warning",
                   help="lowest level that makes the exit status 1 [warning]")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.lint import lint, write_report

    kwargs = {}
    if args.sparse is not None:
        kwargs["sparse_weights"] = True
    if args.require_int8 is not None:
        kwargs["require_int8"] = True
    report = lint(args.model, args.target, **kwargs)
    if args.out:
        write_report(report, Path(args.out))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text())
    failed = not report.ok if args.fail_on == "error" else not report.clean
    return 1 if failed else 0
