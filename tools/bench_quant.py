"""Quantization benchmark: MNIST-5k student accuracy (FP32 / PTQ / KD-QAT at W8A8 and W4A8 / 2:4 + KD-QAT)
beside ONNX Runtime quantize_static and NNCF on the same student, and INT8-vs-FP32 latency on ONNX Runtime
and OpenVINO for resnet18, mobilenet_v2 and vit_tiny_patch16_224 (random weights, batch 1, 2 threads).

Writes docs/bench/quant.md (or --out). Latency: every variant of a model is timed in one process in
interleaved rounds; the speed-up is the median over rounds of FP32 p50 / INT8 p50 measured side by side.

    OMP_NUM_THREADS=2 .venv/bin/python tools/bench_quant.py            # full (~15 min on 2 cores)
    .venv/bin/python tools/bench_quant.py --quick                      # smoke run (few epochs, 1 model)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("EDGEKD_QUIET", "1")

from edgekd.artifact import Artifact  # noqa: E402
from edgekd.config import ExportSettings  # noqa: E402
from edgekd.data import load_data  # noqa: E402
from edgekd.export import export_onnx  # noqa: E402
from edgekd.models import load_model  # noqa: E402
from edgekd.passes import PassContext  # noqa: E402
from edgekd.passes.quantize import QuantizeConfig, quantize  # noqa: E402
from edgekd.train import FinetuneConfig, fine_tune  # noqa: E402


def _ort_session(path: Path, threads: int = 2) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ov_compiled(path: Path, threads: int = 2) -> Any:
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})


def _runner(kind: str, path: Path) -> Any:
    if kind == "ort":
        sess = _ort_session(path)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    compiled = _ov_compiled(path)
    return lambda x: compiled(x)[0]


def _accuracy(run: Any, x: np.ndarray, y: np.ndarray) -> float:
    preds = np.concatenate([run(x[i : i + 1]).argmax(1) for i in range(len(x))])
    return float((preds == y).mean() * 100)


def _interleaved(runners: dict[str, Any], x: np.ndarray, rounds: int, calls: int) -> dict[str, list[float]]:
    """p50 (ms) of each variant in each round (benchlib.interleaved: rotating order, idle gap between blocks)."""
    import benchlib as bl

    return bl.interleaved({n: (lambda f=run: f(x)) for n, run in runners.items()}, rounds=rounds, calls=calls, warmup=5)


def _speedup(p50s: dict[str, list[float]], base: str, name: str) -> tuple[float, float, float]:
    ratios = np.array(p50s[base]) / np.array(p50s[name])
    return float(np.median(ratios)), float(ratios.min()), float(ratios.max())


def _export(art: Artifact, path: Path, x: np.ndarray, flavor: str = "ort") -> Path:
    return export_onnx(art, path, example=x, settings=ExportSettings(), flavor=flavor).path


# ---------------------------------------------------------------- A. accuracy on MNIST-5k


def accuracy_section(quick: bool, tmp: Path) -> list[str]:
    from edgekd.passes.sparsity import SparsifyConfig, sparsify

    # --quick: the 8x8 digits set (the mnist5k teacher alone trains for minutes on 2 loaded cores)
    dataset = "digits" if quick else "mnist"
    data = load_data("builtin:digits" if quick else "builtin:mnist5k")
    teacher = load_model(f"builtin:{dataset}-teacher").module
    torch.manual_seed(0)
    student = load_model(f"builtin:{dataset}-student").module
    fine_tune(student, teacher, data, FinetuneConfig(epochs=3 if quick else 40, schedule="onecycle", seed=0))
    qat_epochs = 1 if quick else 10
    ft = FinetuneConfig(epochs=qat_epochs, lr=1e-3, seed=0)
    ft4 = FinetuneConfig(epochs=1 if quick else 15, lr=1e-3, seed=0)
    base = Artifact(kind="torch", payload=student.eval(), history=("bench",), meta={})
    x_test, y_test = data.x_test, data.y_test
    rows: list[tuple[str, str, float, float | None, float | None]] = []

    fp32_path = _export(base, tmp / "fp32.onnx", x_test)
    rows.append(("FP32 student", "ORT FP32", _accuracy(_runner("ort", fp32_path), x_test, y_test), None, None))

    def run_pass(name: str, art: Artifact, cfg: QuantizeConfig) -> None:
        ctx = PassContext(teacher=teacher, data=data, workdir=tmp)
        t0 = time.perf_counter()
        out = quantize(art, cfg, ctx)
        secs = time.perf_counter() - t0
        path = _export(out, tmp / f"{len(rows)}.onnx", x_test)
        rep = ctx.report["quantize"]
        rows.append((name, "edgekd brevitas-qdq -> ORT", _accuracy(_runner("ort", path), x_test, y_test),
                     rep.get("int8_mac_fraction"), secs))

    run_pass("PTQ W8A8", base, QuantizeConfig())
    run_pass("KD-QAT W8A8", base, QuantizeConfig(mode="qat", finetune=ft))
    run_pass("PTQ W4A8", base, QuantizeConfig(weight_bits=4, sensitivity="off"))
    run_pass("KD-QAT W4A8", base, QuantizeConfig(weight_bits=4, mode="qat", finetune=ft4, sensitivity="off"))
    sctx = PassContext(teacher=teacher, data=data, workdir=tmp)
    sparse = sparsify(base, SparsifyConfig(finetune=ft), sctx)
    run_pass("2:4 + KD-QAT W8A8", sparse, QuantizeConfig(mode="qat", finetune=ft))

    # peers on the same FP32 student ONNX, 128 calibration images
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calib = data.x_train[:128]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    peers: dict[str, Path] = {}
    for act in ("U8", "S8"):
        path = tmp / f"ort_{act}.onnx"
        t0 = time.perf_counter()
        quantize_static(str(fp32_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8 if act == "U8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        rows.append((f"ORT quantize_static {act}S8", "ORT", _accuracy(_runner("ort", path), x_test, y_test), None,
                     time.perf_counter() - t0))
        peers[f"ORT quantize_static {act}S8"] = path
    try:
        import nncf
        import openvino as ov

        t0 = time.perf_counter()
        ov_model = ov.Core().read_model(str(fp32_path))
        q = nncf.quantize(ov_model, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
                          subset_size=len(calib))
        nncf_path = tmp / "nncf.xml"
        ov.save_model(q, str(nncf_path))
        rows.append(("NNCF nncf.quantize", "OpenVINO", _accuracy(_runner("ov", nncf_path), x_test, y_test), None,
                     time.perf_counter() - t0))
        peers["NNCF nncf.quantize (OpenVINO)"] = nncf_path
    except Exception as exc:  # report, do not hide: the row says why it is missing
        rows.append((f"NNCF failed: {type(exc).__name__}: {exc}"[:80], "-", float("nan"), None, None))

    fp32_acc = rows[0][2]
    lines = [f"### A. {data.name} student ({len(x_test)} test images, ONNX executed on the runtime)", "",
             "| variant | runs on | top-1 % | vs FP32 (points) | int8 MAC fraction (ORT) | seconds |",
             "|---|---|---:|---:|---:|---:|"]
    for name, runtime, acc, frac, secs in rows:
        lines.append(f"| {name} | {runtime} | {acc:.2f} | {acc - fp32_acc:+.2f} | "
                     f"{'' if frac is None else f'{frac * 100:.0f} %'} | {'' if secs is None else f'{secs:.1f}'} |")
    return lines


# ---------------------------------------------------------------- B. latency


def latency_section(models: list[str], rounds: int, calls: int, tmp: Path) -> list[str]:
    lines = ["### B. Latency, batch 1, 2 threads (random weights; PTQ W8A8 calibrated on 32 random images)", "",
             "| model | ORT FP32 p50 ms | ORT INT8 p50 ms | ORT speed-up [range] | OV FP32 (f32) p50 ms | "
             "OV INT8 p50 ms | OV speed-up [range] | int8 MAC fraction (ORT) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for source in models:
        loaded = load_model(source)
        data = load_data(f"random:{'x'.join(map(str, loaded.input_shape))}?n=64")
        base = Artifact(kind="torch", payload=loaded.module, history=("bench",), meta={})
        fp32 = _export(base, tmp / "lat_fp32.onnx", data.x_test)
        ctx = PassContext(data=data, workdir=tmp)
        # brevitas's graph-mode residual handler does not finish on ViTs here: layerwise for timm ViTs
        mode = "layerwise" if "vit" in source else "graph"
        q = quantize(base, QuantizeConfig(calibration_samples=32, calibration_batch=8, bias_correction=False,
                                          sensitivity="off", quantizer=mode), ctx)
        frac = ctx.report["quantize"]["int8_mac_fraction"]
        int8_ort = _export(q, tmp / "lat_int8_ort.onnx", data.x_test, "ort")
        int8_ov = _export(q, tmp / "lat_int8_ov.onnx", data.x_test, "openvino")
        x = data.x_test[:1]
        runners = {"ort_fp32": _runner("ort", fp32), "ort_int8": _runner("ort", int8_ort),
                   "ov_fp32": _runner("ov", fp32), "ov_int8": _runner("ov", int8_ov)}
        p50 = _interleaved(runners, x, rounds, calls)
        med = {k: float(np.median(v)) for k, v in p50.items()}
        s_ort, lo_ort, hi_ort = _speedup(p50, "ort_fp32", "ort_int8")
        s_ov, lo_ov, hi_ov = _speedup(p50, "ov_fp32", "ov_int8")
        lines.append(f"| {source} | {med['ort_fp32']:.2f} | {med['ort_int8']:.2f} | **{s_ort:.2f}x** "
                     f"[{lo_ort:.2f}-{hi_ort:.2f}] | {med['ov_fp32']:.2f} | {med['ov_int8']:.2f} | "
                     f"**{s_ov:.2f}x** [{lo_ov:.2f}-{hi_ov:.2f}] | {frac * 100:.1f} % |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: digits instead of MNIST-5k, few epochs, resnet18 only, short timing")
    ap.add_argument("--out", default="docs/bench/quant.md")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    models = ["torchvision:resnet18"] if args.quick else ["torchvision:resnet18", "torchvision:mobilenet_v2",
                                                          "timm:vit_tiny_patch16_224"]
    started = time.perf_counter()
    lines = ["## Quantization (brevitas PTQ / KD-QAT, QDQ export)", "",
             f"Command: `{' '.join(['python', 'tools/bench_quant.py', *(argv if argv is not None else sys.argv[1:])])}`"
             + (" -- QUICK smoke run: few epochs, numbers are not representative" if args.quick else ""), ""]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if not args.skip_accuracy:
            lines += [*accuracy_section(args.quick, tmp), ""]
        if not args.skip_latency:
            lines += [*latency_section(models, 3 if args.quick else 6, 20 if args.quick else 50, tmp), ""]
    import onnxruntime
    import openvino

    lines += [f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}; "
              f"{os.cpu_count()} CPUs; wall time {time.perf_counter() - started:.0f} s.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
