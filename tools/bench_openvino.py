"""Benchmark: edgekd's OpenVINO backend vs ONNX Runtime on the same FP32 and INT8 models, side by side.

For each model: export FP32 ONNX with edgekd, quantize it with ONNX Runtime's quantize_static
after quant_pre_process (QDQ, U8 activations / S8 per-channel weights: the recipe both runtimes
turn into int8 kernels),
build every variant through the edgekd backends, and time them in interleaved rounds (all
variants once per round, ``--calls`` timed calls each) so drift hits every variant alike.
Reported: p50 per variant (median over rounds), speed relative to ORT FP32 (median of per-round
ratios, with the range), the precision the runtime really executed (OpenVINO's runtime graph,
ORT's optimized graph), and parity vs the ONNX Runtime reference of the same file.

    .venv/bin/python tools/bench_openvino.py                        # resnet18 + digits student
    .venv/bin/python tools/bench_openvino.py --models digits --rounds 3 --calls 20   # quick check

Writes docs/bench/openvino.md (with the command line). Numbers on a shared, noisy machine are
only indicative: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"resnet18": ("torchvision:resnet18", (3, 224, 224)), "mobilenet_v2": ("torchvision:mobilenet_v2", (3, 224, 224)),
          "digits": ("builtin:digits-student", None)}


def _quantize(fp32: Path, out: Path, x: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    # pre-processing (shape inference + ORT graph optimization) lets ORT fuse every Conv into QLinearConv
    pre = out.with_name("pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


def _variants(fp32: Path, int8: Path, work: Path, threads: int, sparse: bool) -> dict[str, tuple[Any, str, Path]]:
    """name -> (runner, executed precision, source onnx)."""
    from edgekd.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions
    from edgekd.backends.openvino import OpenVINOBackend, OpenVINOOptions
    from edgekd.config import Target

    ort_b, ov_b = OnnxRuntimeBackend(), OpenVINOBackend()
    ort_t = Target(name="ort", backend="onnxruntime", options=OnnxRuntimeOptions(intra_op_threads=threads))
    ov_opts = OpenVINOOptions(threads=threads, streams=1)
    plan = [("ORT FP32", ort_b, ort_t, fp32), ("ORT INT8 (U8S8 QDQ)", ort_b, ort_t, int8),
            ("OpenVINO f32 (edgekd default)", ov_b, ov_opts, fp32),
            ("OpenVINO default precision (auto)", ov_b, dataclasses.replace(ov_opts, precision="auto"), fp32),
            ("OpenVINO INT8 (same QDQ file)", ov_b, ov_opts, int8)]
    if sparse:
        plan.append(("OpenVINO INT8 + sparse decompression 0.5", ov_b,
                     dataclasses.replace(ov_opts, sparse_weights_decompression_rate=0.5), int8))
    out = {}
    for i, (name, backend, opts, src) in enumerate(plan):
        target = opts if isinstance(opts, Target) else Target(name="ov", backend="openvino", options=opts)
        build = backend.build(src, target, work / f"v{i}")
        out[name] = (backend.load(work / f"v{i}", target, build), build.precision, src)
    return out


def bench_model(name: str, rounds: int, calls: int, threads: int, sparse: bool) -> dict[str, Any]:
    import torch

    from edgekd.artifact import Artifact
    from edgekd.config import ExportSettings
    from edgekd.export import compare_outputs, export_onnx, onnx_outputs
    from edgekd.models import load_model

    source, shape = MODELS[name]
    torch.manual_seed(0)
    loaded = load_model(source)
    shape = shape or tuple(loaded.input_shape)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, *shape)).astype(np.float32)
    feed = calib[:1]
    with tempfile.TemporaryDirectory(prefix="bench-ov-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        fp32 = export_onnx(Artifact(kind="torch", payload=loaded.module), work / "fp32.onnx", example=calib,
                           settings=ExportSettings()).path
        _quantize(fp32, work / "int8.onnx", calib)
        variants = _variants(fp32, work / "int8.onnx", work, threads, sparse)
        setup_s = time.perf_counter() - started
        parity = {}
        for vname, (runner, _, src) in variants.items():
            ref = onnx_outputs(src, calib[:8])
            got = np.concatenate([runner.infer_unchecked({"input": calib[i : i + 1]})[0] for i in range(8)])
            parity[vname] = compare_outputs(ref, got)
        times = bl.interleaved({v: (lambda call=r.infer_unchecked: call({"input": feed}))
                                for v, (r, _, _) in variants.items()}, rounds=rounds, calls=calls)
        sizes = {v: sum(p.stat().st_size for p in (work / f"v{i}").iterdir()) / 1e6 for i, v in enumerate(variants)}
    base = np.array(times["ORT FP32"])
    rows = []
    for vname, (_, precision, _) in variants.items():
        ratios = base / np.array(times[vname])
        rows.append({"variant": vname, "precision": precision, "p50_ms": float(np.median(times[vname])),
                     "x_ort_fp32": float(np.median(ratios)), "range": (float(ratios.min()), float(ratios.max())),
                     "size_mb": sizes[vname], "max_abs_err": parity[vname].max_abs_error,
                     "top1": parity[vname].top1_agreement})
    return {"model": name, "shape": shape, "rows": rows, "setup_s": setup_s}


def to_markdown(results: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    import onnxruntime
    import openvino

    lines = ["# OpenVINO backend vs ONNX Runtime (side by side)", "",
             f"Command: `.venv/bin/python tools/bench_openvino.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
             f"onnxruntime {onnxruntime.__version__}, openvino {openvino.get_version().split('-')[0]}; "
             f"batch 1, {args.threads} threads, {args.rounds} interleaved rounds x {args.calls} calls; "
             "random-weight models, random inputs.", "",
             "\"x ORT FP32\" = median over rounds of (ORT FP32 p50 / variant p50) [min-max]; higher is faster. "
             "\"precision\" is what the runtime executed: OpenVINO's runtime graph (compute layers), ORT's optimized "
             "graph. Parity: max |error| and top-1 agreement vs ONNX Runtime on the same file, 8 inputs.", ""]
    for res in results:
        lines += [f"## {res['model']} (1x{'x'.join(map(str, res['shape']))})", "",
                  "| variant | precision run | p50 ms | x ORT FP32 [range] | size MB | parity max err | top-1 |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in res["rows"]:
            lo, hi = r["range"]
            lines.append(f"| {r['variant']} | {r['precision']} | {r['p50_ms']:.3f} | {r['x_ort_fp32']:.2f} "
                         f"[{lo:.2f}-{hi:.2f}] | {r['size_mb']:.2f} | {r['max_abs_err']:.2g} | {r['top1'] * 100:.0f} % |")
        lines += ["", f"Build time for all variants: {res['setup_s']:.1f} s.", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,digits", help=f"comma list from {', '.join(MODELS)}")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-sparse", action="store_true", help="skip the CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE variant")
    p.add_argument("--out", default=str(ROOT / "docs" / "bench" / "openvino.md"))
    args = p.parse_args(argv)
    os.environ.setdefault("EDGEKD_QUIET", "1")
    results = []
    for name in args.models.split(","):
        print(f"benchmarking {name} ...", file=sys.stderr)
        results.append(bench_model(name.strip(), args.rounds, args.calls, args.threads, not args.no_sparse))
    text = to_markdown(results, args, argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
