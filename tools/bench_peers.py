"""edgekd against what a user would pick instead, measured in the same run, side by side.

Parts (``--parts``; results are merged into docs/bench/peers.json, so one part can be rerun alone,
and docs/bench/peers.md is rendered from the whole file, each part with the command that made it):

  latency   batch 1, 2 threads, interleaved rounds, medians over rounds, for torchvision resnet18,
            mobilenet_v2 and timm vit_tiny_patch16_224 (random weights): PyTorch eager FP32, ORT FP32,
            ORT quantize_static INT8 QDQ per-channel (S8S8 default and U8S8), NNCF -> OpenVINO INT8,
            OpenVINO default (bf16 on AVX512-BF16/AMX CPUs) and the edgekd bundles (int8, channels50 + int8) built by
            ``edgekd compress`` in a child process (its wall time and peak RSS = the model's pipeline
            cost); plus offline throughput over a small batch sweep.
  accuracy  MNIST-5k and digits: every edgekd profile run through ``edgekd compress`` in a child
            process (wall time, peak RSS), beside ORT quantize_static and NNCF PTQ of the same KD
            student (the ``kd`` bundle's model.onnx).

    .venv/bin/python tools/bench_peers.py                       # full (~17 min estimated on 2 quiet cores)
    .venv/bin/python tools/bench_peers.py --quick               # smoke run (1.2 min): numbers mean nothing
    .venv/bin/python tools/bench_peers.py --parts latency --models resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib as bl
import numpy as np
from peers_report import PEER_CALIB, PROFILES, goals, render

from edgekd.bundle import REPORT_JSON, Bundle
from edgekd.status import is_passing

ROOT = bl.ROOT
THREADS = 2
MODELS = {"resnet18": ("torchvision:resnet18", "graph"), "mobilenet_v2": ("torchvision:mobilenet_v2", "graph"),
          "vit_tiny": ("timm:vit_tiny_patch16_224", "layerwise")}  # brevitas graph mode does not finish on ViTs
DATASETS = {"mnist5k": ("builtin:mnist-student", "builtin:mnist-teacher"),
            "digits": ("builtin:digits-student", "builtin:digits-teacher")}
TARGETS = ("cpu", "openvino-cpu")


# ---------------------------------------------------------------- profiles + compress child


def _write_profile(data: dict[str, Any], path: Path) -> Path:
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path


def accuracy_profile(name: str, work: Path, epochs: int | None) -> str:
    """The shipped profile (by name) or, for "ce" / a smoke run, a derived .toml in ``work``."""
    if name != "ce" and epochs is None:
        return name
    data = tomllib.loads((ROOT / "recipes" / f"{'kd' if name == 'ce' else name}.toml").read_text())
    if name == "ce":
        data["name"], data["description"] = "ce", "kd.toml with loss = ce: the plain student of the same recipe"
        data["passes"][0]["loss"] = "ce"
    if epochs is not None:  # smoke run: every training step shortened
        for p in data["passes"]:
            for table in (p, p.get("finetune") or {}):
                if "epochs" in table:
                    table["epochs"] = epochs
        data["name"] += f"-epochs{epochs}"
    return str(_write_profile(data, work / "recipes" / f"{data['name']}.toml"))


def latency_profile(kind: str, quantizer: str, work: Path) -> str:
    """The int8-kd graph without its training (no teacher, no data for ImageNet models): PTQ on random
    inputs, every layer int8 (sensitivity off), optionally after 50 % channel pruning."""
    quant = {"name": "quantize", "mode": "ptq", "weight_bits": 8, "calibration": "percentile",
             "calibration_samples": 32, "calibration_batch": 8, "bias_correction": False, "sensitivity": "off",
             "quantizer": quantizer}
    prune = {"name": "prune_channels", "ratio": 0.5, "importance": "l2", "round_to": 8}
    data = {"name": f"bench-{kind}", "description": f"bench_peers: {kind} on random calibration data",
            "passes": [prune, quant] if kind == "channels50-int8" else [quant], "export": {"opset": 17}}
    return str(_write_profile(data, work / "recipes" / f"bench-{kind}-{quantizer}.toml"))


def run_compress(model: str, data: str, profile: str, out: Path, *, teacher: str | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """``edgekd compress`` in a child process: wall time, peak RSS, and the slim report."""
    cmd = [bl.python(), "-m", "edgekd", "compress", "--model", model, "--data", data, "--recipe", profile,
           "--out", str(out), "--seed", str(seed), "-q", *(["--teacher", teacher] if teacher else []),
           *(a for t in TARGETS for a in ("--target", t))]
    m = bl.run_measured(cmd, env={"EDGEKD_QUIET": "1"}, cwd=ROOT, timeout=1800)
    row: dict[str, Any] = {"model": model, "profile": Path(profile).stem, "seed": seed, "wall_s": m.wall_s,
                           "peak_rss_mb": m.peak_rss_mb, "returncode": m.returncode, "bundle": str(out)}
    report_path = out / REPORT_JSON
    if m.returncode not in (0, 1) or not report_path.exists():  # 1 = a target failed its checks: bundle exists
        lines = [line.strip() for line in m.stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line.split(":")[0]]  # "RuntimeError: ..." / "error: ..."
        row["error"] = (errors[-1] if errors else " / ".join(lines[-3:]))[-400:] or f"exit status {m.returncode}"
        print(f"compress {model} {row['profile']} failed: {row['error']}", file=sys.stderr)
        return row
    rep = Bundle(out).report()
    passes = rep.get("passes", {})
    row.update(duration_s=rep.get("duration_s"), accuracy=rep.get("accuracy", {}),
               pass_seconds={k: v.get("seconds") for k, v in passes.items()},
               fp32_stage=passes.get("distill", {}).get("final_accuracy"),
               int8_mac_fraction=passes.get("quantize", {}).get("int8_mac_fraction"),
               targets={name: {"status": t.get("status"), "accuracy": t.get("accuracy"),
                               "precision": t.get("build", {}).get("precision"),
                               "p50_ms": t.get("latency", {}).get("p50_ms"), "size_mb": t.get("size_mb"),
                               "parity_failures": t.get("parity", {}).get("failures", [])}
                        for name, t in rep.get("targets", {}).items()})
    if "prune_channels" in passes:
        p = passes["prune_channels"]
        row["macs"] = [p.get("macs_before"), p.get("macs_after")]
    return row


# ---------------------------------------------------------------- peers


def ort_quantize(fp32: Path, calib: np.ndarray, out_dir: Path) -> dict[str, tuple[Path, float]]:
    """ONNX Runtime's documented recipe: quant_pre_process, then quantize_static QDQ per-channel, S8 weights;
    activations S8 (the default) and U8. -> {"S8S8": (path, seconds), "U8S8": ...}"""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out: dict[str, tuple[Path, float]] = {}
    t0 = time.perf_counter()
    pre = out_dir / f"{fp32.stem}-pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    pre_s = time.perf_counter() - t0
    for act, qtype in (("S8S8", QuantType.QInt8), ("U8S8", QuantType.QUInt8)):
        t0 = time.perf_counter()
        path = out_dir / f"{fp32.stem}-ort-{act}.onnx"
        quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=qtype, weight_type=QuantType.QInt8)
        out[act] = (path, pre_s + time.perf_counter() - t0)
    return out


def nncf_quantize(fp32: Path, calib: np.ndarray, out: Path, transformer: bool) -> tuple[Path, float]:
    """NNCF's OpenVINO route: read the FP32 ONNX, nncf.quantize on the calibration set, save IR."""
    import nncf
    import openvino as ov

    t0 = time.perf_counter()
    model = ov.Core().read_model(str(fp32))
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}  # NNCF's advice for transformers
    q = nncf.quantize(model, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
                      subset_size=len(calib), **extra)
    ov.save_model(q, str(out))
    return out, time.perf_counter() - t0


def ort_ops(path: Path) -> str:
    """What ONNX Runtime really executes: integer kernels vs float Conv/MatMul/Gemm in its optimized graph."""
    from edgekd.backends.onnxruntime import INT8_KERNEL_OPS, OnnxRuntimeOptions, optimized_op_histogram

    ops = optimized_op_histogram(path, OnnxRuntimeOptions(intra_op_threads=THREADS))
    floats = sum(v for k, v in ops.items() if k in ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul",
                                                     "Gemm", "FusedGemm"))
    return f"ORT runs {sum(v for k, v in ops.items() if k in INT8_KERNEL_OPS)} int8 / {floats} float conv-matmul ops"


def ov_graph(compiled: Any) -> str:
    """What OpenVINO really executes (its runtime graph): compute precisions, layer and reorder counts."""
    from edgekd.backends.openvino import runtime_layers, summarize_precision

    layers = runtime_layers(compiled)
    _, s = summarize_precision(layers)
    prec = ", ".join(f"{v} {k}" for k, v in sorted(s["compute_precision"].items()))
    return f"OV runs {len(layers)} layers (compute: {prec}), {s['reorders']} reorders"


def ort_runner(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def ov_runner(path: Path, f32: bool = False) -> Any:
    import openvino as ov

    core = ov.Core()
    props: dict[str, Any] = {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if f32:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(core.read_model(str(path)), "CPU", props)
    request = compiled.create_infer_request()
    run = lambda x: request.infer({0: x})[0]  # noqa: E731
    run.graph = ov_graph(compiled)  # type: ignore[attr-defined]
    return run


def _size_mb(*paths: Path) -> float:
    total = 0
    for p in paths:
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p, p.with_suffix(".bin")]
        total += sum(f.stat().st_size for f in files if f.exists())
    return total / 1e6


# ---------------------------------------------------------------- A. latency + throughput


def latency_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    import edgekd.runtime
    from edgekd.artifact import Artifact
    from edgekd.data import load_data
    from edgekd.export import export_onnx
    from edgekd.models import load_model

    source, quantizer = MODELS[name]
    torch.set_num_threads(THREADS)
    loaded = load_model(source)  # seeded: the compress child loads the same random weights
    module = loaded.module.eval()
    data_src = f"random:{'x'.join(map(str, loaded.input_shape))}?n=64"
    data = load_data(data_src)  # the same arrays the compress child calibrates on (its x_train)
    calib, x1 = data.x_train, data.x_test[:1]
    notes: list[str] = []
    cost, bundles = [], {}
    for kind in ("int8", "channels50-int8"):
        print(f"[{name}] edgekd compress {kind} ...", file=sys.stderr)
        row = run_compress(source, data_src, latency_profile(kind, quantizer, work), work / f"{name}-{kind}")
        row["label"] = f"{name} {kind} (random calibration)"
        cost.append(row)
        if "error" in row:
            notes.append(f"edgekd {kind}: compress failed: {row['error']}")
        else:
            bundles[kind] = row
    fp32 = export_onnx(Artifact("torch", module), work / f"{name}-fp32.onnx", example=data.x_test[:2]).path
    print(f"[{name}] peers: ORT quantize_static, NNCF ...", file=sys.stderr)
    ort_q = ort_quantize(fp32, calib, work)
    nncf_path, nncf_s = nncf_quantize(fp32, calib, work / f"{name}-nncf.xml", transformer="vit" in name)

    def eager(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    # key -> (label, group, runner(x), size MB, note)
    rows: dict[str, tuple[str, str, Any, float, str]] = {
        "eager": ("PyTorch eager FP32", "baseline", eager,
                  sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6, "torch.inference_mode"),
        "ort_fp32": ("ORT FP32", "peer", ort_runner(fp32), _size_mb(fp32), "ORT_ENABLE_ALL"),
        **{f"ort_{act.lower()}": (f"ORT quantize_static INT8, {act}" + (" (default)" if act == "S8S8" else ""),
                                  "peer", ort_runner(path), _size_mb(path), f"{secs:.1f} s; {ort_ops(path)}")
           for act, (path, secs) in ort_q.items()},
        "ov_default": ("OpenVINO default precision (bf16 on AVX512-BF16/AMX), FP32 model", "reference", ov_default := ov_runner(fp32),
                       _size_mb(fp32), f"no INFERENCE_PRECISION_HINT; {ov_default.graph}"),
        "nncf_ov": ("NNCF nncf.quantize -> OpenVINO INT8", "peer", nncf_run := ov_runner(nncf_path), _size_mb(nncf_path),
                    f"{nncf_s:.1f} s" + (", model_type TRANSFORMER" if "vit" in name else "") + f"; {nncf_run.graph}"),
    }
    for kind, row in bundles.items():
        for target, rt in (("cpu", "ORT"), ("openvino-cpu", "OpenVINO")):
            runner = edgekd.runtime.load(row["bundle"], target)
            t = row["targets"][target]
            frac = row.get("int8_mac_fraction")
            graph = ov_graph(runner.runner.compiled) if target == "openvino-cpu" else ort_ops(
                Path(row["bundle"]) / target / runner.manifest["targets"][target]["artifact"])
            note = (f"target {target}: {t['precision']}" + (f", {frac * 100:.0f} % int8 MACs" if frac else "")
                    + f"; {graph}"
                    + ("" if is_passing(t["status"]) else f"; compress check {t['status']}: "
                       + "; ".join(t["parity_failures"])[:160]))
            rows[f"edgekd_{kind}_{target}"] = (
                f"edgekd {'int8' if kind == 'int8' else 'channels50 + int8'} on {rt}", "edgekd",
                lambda x, r=runner: r.infer_unchecked({"input": x}), _size_mb(Path(row["bundle"]) / target), note)
        if kind == "int8":
            # like for like with the NNCF row: the same IR compiled with OpenVINO's default precision, so the
            # layers that stay float (vit: attention MatMuls, softmax, LayerNorm) run bf16 as NNCF's do
            ir = Path(row["bundle"]) / "openvino-cpu" / "model.xml"
            same = ov_runner(ir)
            rows["edgekd_int8_ov_default"] = (
                "edgekd int8 on OpenVINO, float parts at OV default precision (as the NNCF row)", "edgekd-alt", same,
                _size_mb(ir), f"bundle's openvino-cpu IR, no INFERENCE_PRECISION_HINT; {same.graph}")
    print(f"[{name}] timing {len(rows)} variants, {args.rounds} rounds x {args.calls} calls ...", file=sys.stderr)
    samples: dict[str, list[float]] = {}
    p50 = bl.interleaved({k: (lambda f=v[2]: f(x1)) for k, v in rows.items()}, rounds=args.rounds, calls=args.calls,
                         samples=samples)
    throughput: dict[str, dict[str, float]] = {}
    for b in args.batches:
        xb = np.repeat(data.x_test[:1], b, axis=0) if len(data.x_test) < b else data.x_test[:b]
        tp = bl.interleaved({k: (lambda f=v[2], xb=xb: f(xb)) for k, v in rows.items()}, rounds=args.tp_rounds,
                            calls=args.tp_calls, warmup=1)
        for k, v in tp.items():
            throughput.setdefault(k, {})[str(b)] = b / (bl.median(v) / 1e3)
    return {"model": name, "source": source, "shape": list(loaded.input_shape), "rounds": args.rounds,
            "calls": args.calls, "notes": notes, "compress": cost,
            "rows": [{"key": k, "label": v[0], "group": v[1], "size_mb": v[3], "note": v[4], "p50_rounds": p50[k],
                      "p90_ms": float(np.percentile(samples[k], 90))} for k, v in rows.items()],
            "throughput": throughput}


# ---------------------------------------------------------------- B. accuracy (+ cost of the MNIST profiles)


def _accuracy(run: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(run(x)).argmax(1) == y).mean() * 100)


def peer_ptq(kd_onnx: Path, data: Any, work: Path) -> dict[str, float]:
    calib = data.x_train[:PEER_CALIB]
    ort_q = ort_quantize(kd_onnx, calib, work)
    out = {f"ORT quantize_static {k}": _accuracy(ort_runner(p), data.x_test, data.y_test) for k, (p, _) in ort_q.items()}
    nncf_path, _ = nncf_quantize(kd_onnx, calib, work / "kd-nncf.xml", transformer=False)
    out["NNCF -> OpenVINO (f32 hint)"] = _accuracy(ov_runner(nncf_path, f32=True), data.x_test, data.y_test)
    return out


def accuracy_dataset(dataset: str, seeds: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from edgekd.data import load_data
    from edgekd.models import load_model

    student, teacher = DATASETS[dataset]
    t0 = time.perf_counter()
    load_model(teacher)  # trained once and cached before any child is timed
    teacher_s = time.perf_counter() - t0
    data = load_data(f"builtin:{dataset}")
    runs: dict[str, list[dict[str, Any]]] = {p: [] for _, p in PROFILES if p in args.profiles}
    peers: dict[str, list[float]] = {}
    for seed in range(seeds):
        for label, prof in PROFILES:
            if prof not in args.profiles:
                continue
            print(f"[{dataset} seed {seed}] compress {prof} ...", file=sys.stderr)
            out = work / f"{dataset}-{prof}-s{seed}"
            row = run_compress(student, f"builtin:{dataset}", accuracy_profile(prof, work, args.acc_epochs), out,
                               teacher=None if prof == "ce" else teacher, seed=seed)
            row["label"] = label
            runs[prof].append(row)
            if prof == "kd" and "error" not in row:
                with tempfile.TemporaryDirectory(dir=work) as tmp:
                    for k, v in peer_ptq(Bundle(out).model_path, data, Path(tmp)).items():
                        peers.setdefault(k, []).append(v)
    return {"dataset": dataset, "seeds": seeds, "teacher": teacher, "teacher_load_s": teacher_s,
            "n_train": len(data.x_train), "n_test": len(data.x_test), "runs": runs, "peers": peers,
            "epochs": args.acc_epochs}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="latency,accuracy", help="comma list of latency, accuracy")
    ap.add_argument("--models", default=",".join(MODELS), help=f"latency models from {', '.join(MODELS)}")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (batch 1)")
    ap.add_argument("--calls", type=int, default=40, help="timed calls per variant per round")
    ap.add_argument("--batches", default="8,32", help="offline throughput batch sizes (batch 1 = the latency table)")
    ap.add_argument("--tp-rounds", type=int, default=2)
    ap.add_argument("--tp-calls", type=int, default=4)
    ap.add_argument("--datasets", default="mnist5k,digits")
    ap.add_argument("--seeds", default="mnist5k=2,digits=2", help="seeds per dataset, e.g. mnist5k=2,digits=3")
    ap.add_argument("--recipes", "--profiles", dest="profiles", default=",".join(p for _, p in PROFILES),
                    help="accuracy recipes to run (--profiles: the old spelling)")
    ap.add_argument("--acc-epochs", type=int, default=None,
                    help="override every training epoch count of the profiles (default: the shipped profiles)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: resnet18 only, 2 rounds x 5 calls, batch 4; digits only, 1 seed, 3 profiles "
                         "with 1 epoch")
    ap.add_argument("--render-only", action="store_true", help="measure nothing: re-render the .md from the .json")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "peers.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.rounds, args.calls, args.batches = "resnet18", 2, 5, "4"
        args.tp_rounds, args.tp_calls = 1, 2
        args.datasets, args.seeds, args.acc_epochs = "digits", "digits=1", 1
        args.profiles = "kd,int8-kd,channels50-int8-kd"
    args.profiles = set(args.profiles.split(","))
    if args.profiles - {p for _, p in PROFILES}:
        ap.error(f"unknown profile(s) {', '.join(sorted(args.profiles - {p for _, p in PROFILES}))}")
    args.batches = [int(b) for b in args.batches.split(",") if b]
    seeds = {k: int(v) for k, v in (s.split("=") for s in args.seeds.split(","))}
    parts = set() if args.render_only else set(args.parts.split(","))
    if parts - {"latency", "accuracy"}:
        ap.error(f"unknown part(s) {', '.join(sorted(parts - {'latency', 'accuracy'}))}")
    os.environ.setdefault("EDGEKD_QUIET", "1")
    warnings.filterwarnings("ignore")
    json_path = args.out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    stamp = {"command": bl.command_line("tools/bench_peers.py", argv), "quick": args.quick,
             "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        if "latency" in parts:
            t0 = time.perf_counter()
            models = {m: latency_model(m, args, work / m) for m in args.models.split(",")}
            results["latency"] = {**stamp, "models": models, "batches": args.batches, "tp_rounds": args.tp_rounds,
                                  "tp_calls": args.tp_calls, "seconds": time.perf_counter() - t0}
        if "accuracy" in parts:
            t0 = time.perf_counter()
            sets = {d: accuracy_dataset(d, seeds.get(d, 1), args, work / d) for d in args.datasets.split(",")}
            results["accuracy"] = {**stamp, "datasets": sets, "seconds": time.perf_counter() - t0}
    if parts or "environment" not in results:  # the machine of the measurements, not of a re-render
        results["environment"] = bl.environment()
    results["goals"] = [g.row() for g in goals(results)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    text = render(results)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
