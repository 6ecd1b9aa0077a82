"""edgekd inspect: per-layer shape, MACs, sparsity, N:M compliance and quantization of an ONNX file."""

from __future__ import annotations

import argparse
import json

HELP = """\
Describe every weighted layer (Conv, Gemm, MatMul, and QLinearConv/QLinearMatMul/ConvInteger/
MatMulInteger) of any ONNX file: weight shape, MACs per sample, parameters, zeros, whether the
weights follow the N:M pattern TensorRT's sparse tensor cores need (and why a layer is not
eligible), and how weights and input activations are quantized (bit width, per-channel or
per-tensor, symmetric; "(rt)" = float weights quantized at run time).

Integer weights behind DequantizeLinear (and brevitas' Clip) are dequantized before checking.

Examples:
  edgekd inspect bundle/model.onnx
  edgekd inspect model.onnx --json > layers.json
  edgekd inspect model.onnx --require-nm features.3 --require-nm classifier.1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="per-layer table of an ONNX file: MACs, sparsity, 2:4, quantization",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="path to a .onnx file")
    p.add_argument("--pattern", default="2:4", help="N:M pattern to check [2:4]")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--require-nm", action="append", default=[], metavar="SUBSTRING",
                   help="exit 1 unless every eligible layer whose name or weight contains SUBSTRING is N:M "
                        "compliant ('*' = every eligible layer); layers the check skips (not eligible: depthwise, "
                        "too few channels, ...) are listed as skipped, but a SUBSTRING that matches no layer, or "
                        "only skipped ones, fails; repeatable")
    p.set_defaults(handler=run)


def _pattern(text: str) -> tuple[int, int]:
    from edgekd.errors import ConfigError

    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"pattern {text!r} is not N:M", where="--pattern", hint="e.g. --pattern 2:4") from None
    if not 0 < n <= m:
        raise ConfigError(f"pattern {text!r} needs 0 < N <= M", where="--pattern")
    return n, m


def run(args: argparse.Namespace) -> int:
    import sys

    from edgekd.model_inspect import format_table, inspect_onnx

    n, m = _pattern(args.pattern)
    info = inspect_onnx(args.model, n=n, m=m)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_table(info))
    failed, skipped = _check_required(info.layers, args.require_nm, n, m)
    for line in skipped:
        print(f"edgekd inspect: skipped {line}", file=sys.stderr)
    for line in failed:
        print(f"edgekd inspect: {line}", file=sys.stderr)
    return 1 if failed else 0


def _check_required(layers: list, patterns: list[str], n: int, m: int) -> tuple[list[str], list[str]]:
    """(failures, skipped layers) of --require-nm: ineligible layers are skipped, as the help says."""
    failed: list[str] = []
    skipped: dict[str, str] = {}
    for wanted in patterns:
        matched = [la for la in layers if wanted == "*" or wanted in la.name or wanted in (la.weight or "")]
        eligible = [la for la in matched if la.nm is not None]
        if not matched:
            failed.append(f"{wanted}: no layer matches")
        elif not eligible and wanted != "*":
            failed.append(f"{wanted}: matches only layers the N:M check skips ({matched[0].name}: {matched[0].reason})")
        skipped.update({la.name: f"{la.name}: not eligible ({la.reason})" for la in matched if la.nm is None})
        failed += [f"{la.name}: {la.nm.groups_ok}/{la.nm.groups} groups follow {n}:{m}" for la in eligible if not la.nm.compliant]
    return failed, list(skipped.values())
