"""edgekd against what a user would pick instead (issue 10), measured in the same run, side by side.

Parts (``--parts``; results are merged into docs/bench/peers.json, so one part can be rerun alone,
and docs/bench/peers.md is rendered from the whole file, each part with the command that made it):

  latency   batch 1, 2 threads, interleaved rounds, medians over rounds, for torchvision resnet18,
            mobilenet_v2 and timm vit_tiny_patch16_224 (random weights): PyTorch eager FP32, ORT FP32,
            ORT quantize_static INT8 QDQ per-channel (S8S8 default and U8S8), NNCF -> OpenVINO INT8,
            OpenVINO default (bf16 on AMX) and the edgekd bundles (int8, channels50 + int8) built by
            ``edgekd compress`` in a child process (its wall time and peak RSS = the model's pipeline
            cost); plus offline throughput over a small batch sweep.
  accuracy  MNIST-5k and digits: every edgekd profile run through ``edgekd compress`` in a child
            process (wall time, peak RSS), beside ORT quantize_static and NNCF PTQ of the same KD
            student (the ``kd`` bundle's model.onnx).

    .venv/bin/python tools/bench_peers.py                       # full (~20 min on 2 quiet cores)
    .venv/bin/python tools/bench_peers.py --quick               # smoke run (~1.5 min): numbers mean nothing
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

ROOT = bl.ROOT
THREADS = 2
MODELS = {"resnet18": ("torchvision:resnet18", "graph"), "mobilenet_v2": ("torchvision:mobilenet_v2", "graph"),
          "vit_tiny": ("timm:vit_tiny_patch16_224", "layerwise")}  # brevitas graph mode does not finish on ViTs
DATASETS = {"mnist5k": ("builtin:mnist-student", "builtin:mnist-teacher"),
            "digits": ("builtin:digits-student", "builtin:digits-teacher")}
#: (label, profile); "ce" is kd.toml with loss = "ce" (same recipe, no teacher)
PROFILES = [("student CE", "ce"), ("student KD (fp32/kd)", "kd"), ("int8-ptq", "int8-ptq"), ("int8-kd", "int8-kd"),
            ("w4a8-kd", "w4a8-kd"), ("sparse24-int8-kd", "sparse24-int8-kd"),
            ("channels50-int8-kd", "channels50-int8-kd")]
INT8_PROFILES = ("int8-ptq", "int8-kd", "w4a8-kd", "sparse24-int8-kd", "channels50-int8-kd")
TARGETS = ("cpu", "openvino-cpu")
PEER_CALIB = 128  # calibration images for the peers' PTQ of the KD student (docs/BASELINE)


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
    data = tomllib.loads((ROOT / "profiles" / f"{'kd' if name == 'ce' else name}.toml").read_text())
    if name == "ce":
        data["name"], data["description"] = "ce", "kd.toml with loss = ce: the plain student of the same recipe"
        data["passes"][0]["loss"] = "ce"
    if epochs is not None:  # smoke run: every training step shortened
        for p in data["passes"]:
            for table in (p, p.get("finetune") or {}):
                if "epochs" in table:
                    table["epochs"] = epochs
        data["name"] += f"-epochs{epochs}"
    return str(_write_profile(data, work / "profiles" / f"{data['name']}.toml"))


def latency_profile(kind: str, quantizer: str, work: Path) -> str:
    """The int8-kd graph without its training (no teacher, no data for ImageNet models): PTQ on random
    inputs, every layer int8 (sensitivity off), optionally after 50 % channel pruning."""
    quant = {"name": "quantize", "mode": "ptq", "weight_bits": 8, "calibration": "percentile",
             "calibration_samples": 32, "calibration_batch": 8, "bias_correction": False, "sensitivity": "off",
             "quantizer": quantizer}
    prune = {"name": "prune_channels", "ratio": 0.5, "importance": "l2", "round_to": 8}
    data = {"name": f"bench-{kind}", "description": f"bench_peers: {kind} on random calibration data",
            "passes": [prune, quant] if kind == "channels50-int8" else [quant], "export": {"opset": 17}}
    return str(_write_profile(data, work / "profiles" / f"bench-{kind}-{quantizer}.toml"))


def run_compress(model: str, data: str, profile: str, out: Path, *, teacher: str | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """``edgekd compress`` in a child process: wall time, peak RSS, and the slim report."""
    cmd = [bl.python(), "-m", "edgekd", "compress", "--model", model, "--data", data, "--profile", profile,
           "--out", str(out), "--seed", str(seed), "-q", *(["--teacher", teacher] if teacher else []),
           *(a for t in TARGETS for a in ("--target", t))]
    m = bl.run_measured(cmd, env={"EDGEKD_QUIET": "1"}, cwd=ROOT, timeout=1800)
    row: dict[str, Any] = {"model": model, "profile": Path(profile).stem, "seed": seed, "wall_s": m.wall_s,
                           "peak_rss_mb": m.peak_rss_mb, "returncode": m.returncode, "bundle": str(out)}
    report_path = out / "report.json"
    if m.returncode not in (0, 1) or not report_path.exists():  # 1 = a target failed its checks: bundle exists
        lines = [line.strip() for line in m.stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line.split(":")[0]]  # "RuntimeError: ..." / "error: ..."
        row["error"] = (errors[-1] if errors else " / ".join(lines[-3:]))[-400:] or f"exit status {m.returncode}"
        print(f"compress {model} {row['profile']} failed: {row['error']}", file=sys.stderr)
        return row
    rep = json.loads(report_path.read_text())
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
        "ov_default": ("OpenVINO default precision (bf16 on AMX), FP32 model", "reference", ov_default := ov_runner(fp32),
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
                    + ("" if t["status"] == "ok" else f"; compress check {t['status']}: "
                       + "; ".join(t["parity_failures"])[:160]))
            rows[f"edgekd_{kind}_{target}"] = (
                f"edgekd {'int8' if kind == 'int8' else 'channels50 + int8'} on {rt}", "edgekd",
                lambda x, r=runner: r.infer_unchecked({"input": x}), _size_mb(Path(row["bundle"]) / target), note)
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
                    for k, v in peer_ptq(out / "model.onnx", data, Path(tmp)).items():
                        peers.setdefault(k, []).append(v)
    return {"dataset": dataset, "seeds": seeds, "teacher": teacher, "teacher_load_s": teacher_s,
            "n_train": len(data.x_train), "n_test": len(data.x_test), "runs": runs, "peers": peers,
            "epochs": args.acc_epochs}


# ---------------------------------------------------------------- goals (also read by tools/bench.py)


def _p50(row: dict[str, Any]) -> float:
    return bl.median(row["p50_rounds"])


def latency_goals(lat: dict[str, Any]) -> list[bl.Goal]:
    goals = []
    for res in lat.get("models", {}).values():
        rows = {r["key"]: r for r in res["rows"]}
        ed = [r for r in res["rows"] if r["group"] == "edgekd"]
        if res["model"] == "resnet18":
            if ed and "eager" in rows:
                best = min(ed, key=_p50)
                r = bl.ratio_stats(rows["eager"]["p50_rounds"], best["p50_rounds"])
                need = "" if r.median >= 25 else (f"; 25x needs <= {_p50(rows['eager']) / 25:.2f} ms at this run's "
                                                  f"eager p50, it ran {_p50(best):.2f} ms")
                goals.append(bl.Goal("resnet18: fastest edgekd variant vs PyTorch eager FP32", r.median, 25.0,
                                     unit="x", detail=f"{best['label']} (range {r.low:.1f}-{r.high:.1f}x){need}"))
            else:
                goals.append(bl.Goal("resnet18: fastest edgekd variant vs PyTorch eager FP32", None, 25.0, unit="x",
                                     detail="; ".join(res["notes"]) or "no edgekd rows"))
        key = "edgekd_int8_openvino-cpu"
        if key in rows and "nncf_ov" in rows:
            r = bl.ratio_stats(rows["nncf_ov"]["p50_rounds"], rows[key]["p50_rounds"])
            graphs = [next((p for p in rows[k]["note"].split("; ") if p.startswith("OV runs")), "?")
                      for k in (key, "nncf_ov")]
            why = "" if r.median >= 1.0 else f" -- slower; executed graphs: edgekd {graphs[0]}, NNCF {graphs[1]}"
            goals.append(bl.Goal(f"{res['model']}: edgekd INT8 on OpenVINO vs NNCF -> OpenVINO INT8", r.median, 1.0,
                                 unit="x", detail=f"NNCF p50 / edgekd p50, per round (range {r.low:.2f}-{r.high:.2f})"
                                 + why))
    return goals


def accuracy_goals(acc: dict[str, Any]) -> list[bl.Goal]:
    goals = []
    res = acc.get("datasets", {}).get("mnist5k")
    if res is None:
        return goals
    fp32 = {r["seed"]: r["targets"]["cpu"]["accuracy"] for r in res["runs"].get("kd", []) if "error" not in r}
    for prof in INT8_PROFILES:
        drops = [fp32[r["seed"]] - r["targets"]["cpu"]["accuracy"] for r in res["runs"].get(prof, [])
                 if "error" not in r and r["seed"] in fp32]
        worst_ov = [fp32[r["seed"]] - r["targets"]["openvino-cpu"]["accuracy"] for r in res["runs"].get(prof, [])
                    if "error" not in r and r["seed"] in fp32 and r["targets"].get("openvino-cpu", {}).get("accuracy")
                    is not None]
        goals.append(bl.Goal(f"MNIST-5k: {prof} drop vs the FP32 KD student (points, ORT)",
                             float(np.mean(drops)) if drops else None, 1.0, kind="max",
                             detail=f"kd profile = FP32 student; mean over {len(drops)} seed(s); on OpenVINO "
                                    f"{np.mean(worst_ov):+.2f}" if worst_ov else
                             "not run" if prof not in res["runs"] else "compress failed (see part B)"))
    kd_q = [r["targets"]["cpu"]["accuracy"] for r in res["runs"].get("int8-kd", []) if "error" not in r]
    nncf = res["peers"].get("NNCF -> OpenVINO (f32 hint)", [])
    if kd_q and nncf:
        goals.append(bl.Goal("MNIST-5k: edgekd int8-kd minus NNCF PTQ of the KD student (points)",
                             float(np.mean(kd_q) - np.mean(nncf)), 0.0,
                             detail="equal or better accuracy thanks to KD-QAT; the NNCF model is the PTQ of the kd "
                                    "profile's student, int8-kd trains its own (other lr)"))
    return goals


def cost_goals(results: dict[str, Any]) -> list[bl.Goal]:
    rows = [r for r in all_cost_rows(results) if "error" not in r]
    if not rows:
        return []
    slow = max(rows, key=lambda r: r["wall_s"])
    big = max(rows, key=lambda r: r["peak_rss_mb"])
    return [bl.Goal("pipeline cost: slowest edgekd compress (minutes)", slow["wall_s"] / 60, 10.0, kind="max",
                    detail=f"{slow['label']} (aim: every profile < 10 min, < 4 GiB)"),
            bl.Goal("pipeline cost: largest peak RSS (GiB)", big["peak_rss_mb"] / 1024, 4.0, kind="max",
                    detail=big["label"])]


def all_cost_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [r for m in results.get("latency", {}).get("models", {}).values() for r in m["compress"]]
    for res in results.get("accuracy", {}).get("datasets", {}).values():
        rows += [{**r, "label": f"{res['dataset']} {r['profile']}"} for p in res["runs"].values() for r in p
                 if r["seed"] == 0]
    return rows


def goals(results: dict[str, Any]) -> list[bl.Goal]:
    return [*latency_goals(results.get("latency", {})), *accuracy_goals(results.get("accuracy", {})),
            *cost_goals(results)]


# ---------------------------------------------------------------- Markdown


def _part_head(part: dict[str, Any]) -> list[str]:
    lines = [f"Command: `{part['command']}` ({part['when']}, {part['seconds'] / 60:.1f} min)"]
    if part.get("quick"):
        lines += ["", "**Smoke run (`--quick`): tiny settings; these numbers only show that the script runs.**"]
    return [*lines, ""]


def render_latency(lat: dict[str, Any]) -> list[str]:
    lines = ["## A. Latency, batch 1, 2 threads (random weights)", "", *_part_head(lat),
             "Every variant of a model is timed in one process, in interleaved rounds (all variants once per round, "
             "the starting one rotating); p50 = median over rounds of each round's p50, p90 over all calls. "
             "\"x eager\" and \"x best peer\" are medians of per-round ratios [min-max] (higher = faster). "
             "Peers = every row not made by edgekd; the best peer is the one with the lowest p50. "
             "Threads: torch.set_num_threads(2); ORT intra_op 2, ORT_ENABLE_ALL; OpenVINO INFERENCE_NUM_THREADS 2, "
             "NUM_STREAMS 1, LATENCY. The edgekd rows are the bundles `edgekd compress` wrote (targets `cpu` and "
             "`openvino-cpu`), loaded with `edgekd.runtime.load`. Without ImageNet there is no teacher or data for "
             "these models: edgekd's quantize pass calibrates on 32 random inputs (sensitivity off, every layer int8: "
             "the int8-kd graph without its training) and channels50 prunes 50 % of the channels (torch-pruning, L2, "
             "round_to 8) with no recovery; latency depends on the graph, not on QAT or KD. The peers' PTQ uses the "
             "same 32 inputs and the same FP32 ONNX (edgekd's export).", ""]
    for res in lat["models"].values():
        rows = {r["key"]: r for r in res["rows"]}
        peers = [r for r in res["rows"] if r["group"] in ("peer", "reference")]
        best = min(peers, key=_p50)
        table = []
        for r in res["rows"]:
            vs_e = bl.ratio_stats(rows["eager"]["p50_rounds"], r["p50_rounds"])
            vs_p = bl.ratio_stats(best["p50_rounds"], r["p50_rounds"])
            label = f"**{r['label']}**" if r["group"] == "edgekd" else r["label"]
            table.append([label, bl.fmt_ms(_p50(r)), bl.fmt_ms(r["p90_ms"]), str(vs_e), str(vs_p),
                          f"{r['size_mb']:.1f}", r["note"]])
        lines += [f"### {res['model']} (`{res['source']}`, 1x{'x'.join(map(str, res['shape']))}), "
                  f"{res['rounds']} rounds x {res['calls']} calls", "",
                  *bl.md_table(["variant", "p50 ms", "p90 ms", "x eager", "x best peer", "size MB", "notes"], table,
                               "lrrrrrl"), "",
                  f"Best peer: {best['label']}.", *(f"- {n}" for n in res["notes"]), ""]
    lines += ["### Offline throughput (images/s; one stream, 2 threads, one call per batch)", "",
              f"{lat['tp_rounds']} interleaved round(s) x {lat['tp_calls']} calls per batch size; batch 1 = 1000 / p50 "
              "above.", ""]
    for res in lat["models"].values():
        batches = [str(b) for b in lat["batches"]]
        table = [[r["label"], f"{1000 / _p50(r):.0f}", *(f"{res['throughput'][r['key']][b]:.0f}" for b in batches)]
                 for r in res["rows"]]
        lines += [f"{res['model']}:", "", *bl.md_table(["variant", "batch 1", *(f"batch {b}" for b in batches)], table),
                  ""]
    return lines


def render_accuracy(acc: dict[str, Any]) -> list[str]:
    lines = ["## B. Accuracy on MNIST-5k and digits", "", *_part_head(acc),
             "Each edgekd row is one `edgekd compress --model builtin:<ds>-student --teacher builtin:<ds>-teacher "
             "--data builtin:<ds> --profile P --target cpu --target openvino-cpu --seed S` in a child process, with "
             "the shipped profile" + (f" (every epoch count set to {acc['datasets'][next(iter(acc['datasets']))]['epochs']})"
                                      if next(iter(acc["datasets"].values()))["epochs"] else "")
             + "; top-1 % on the test split as the built artifact runs it (ORT = target `cpu`, OV = `openvino-cpu`). "
             "\"student CE\" is kd.toml with loss = ce. \"FP32 stage\" is the same run's student after its distill "
             "pass (before pruning/sparsity/quantization). The peers quantize the `kd` bundle's model.onnx "
             f"(the FP32 KD student) with {PEER_CALIB} training images: ORT quant_pre_process + quantize_static "
             "(QDQ, per-channel) and NNCF -> OpenVINO (run with INFERENCE_PRECISION_HINT f32). Mean ± std over seeds; "
             "\"vs KD\" = per-seed difference to the kd profile on ORT, averaged.", ""]
    for res in acc["datasets"].values():
        kd = {r["seed"]: r["targets"]["cpu"]["accuracy"] for r in res["runs"].get("kd", []) if "error" not in r}
        teacher = [r["accuracy"].get("teacher") for p in res["runs"].values() for r in p
                   if "error" not in r and r["accuracy"].get("teacher") is not None][:1]
        table = [["teacher (builtin, CE)", bl.mean_std(teacher), "", "", "", ""]]
        for label, prof in PROFILES:
            if prof not in res["runs"]:
                continue
            ok = [r for r in res["runs"][prof] if "error" not in r]
            if not ok:
                err = next((r["error"] for r in res["runs"][prof]), "not run")
                table.append([label, f"failed: {err[:120]}", "", "", "", ""])
                continue
            ort = [r["targets"]["cpu"]["accuracy"] for r in ok]
            ov = [r["targets"]["openvino-cpu"]["accuracy"] for r in ok]
            stage = [r["fp32_stage"] for r in ok if r["fp32_stage"] is not None]
            diff = [r["targets"]["cpu"]["accuracy"] - kd[r["seed"]] for r in ok if r["seed"] in kd] or [np.nan]
            status = sorted({f"{t}: {v['status']}" for r in ok for t, v in r["targets"].items() if v["status"] != "ok"})
            name = f"**edgekd {label}**" if prof in INT8_PROFILES else f"edgekd {label}"
            table.append([name, bl.mean_std(ort), bl.mean_std(ov), bl.mean_std(stage),
                          "" if prof == "kd" else f"{np.mean(diff):+.2f}", "; ".join(status)])
        for label, values in res["peers"].items():
            diff = [v - kd[s] for s, v in zip(sorted(kd), values)] or [np.nan]
            table.append([f"peer PTQ of the KD student: {label}", bl.mean_std(values) if "ORT" in label else "",
                          "" if "ORT" in label else bl.mean_std(values), "", f"{np.mean(diff):+.2f}", ""])
        skipped = [p for _, p in PROFILES if p not in res["runs"]]
        lines += [f"### {res['dataset']} ({res['n_train']} train / {res['n_test']} test), {res['seeds']} seed(s)"
                  + (f"; profiles not run: {', '.join(skipped)}" if skipped else ""), "",
                  *bl.md_table(["model", "top-1 % ORT", "top-1 % OV", "FP32 stage", "vs KD (points)",
                                "compress checks not ok"], table, "lrrrrl"), ""]
    return lines


def render_cost(results: dict[str, Any]) -> list[str]:
    rows = all_cost_rows(results)
    if not rows:
        return []
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["label"], f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", "failed: " + r["error"][:120]])
            continue
        passes = ", ".join(f"{k} {v:.1f}" for k, v in r["pass_seconds"].items() if v is not None)
        table.append([r["label"], f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", passes or "(no passes)"])
    return ["## C. Pipeline cost of `edgekd compress` (2 cores)", "",
            "Wall time of the whole child process (interpreter start, loading, passes, export, builds for `cpu` + "
            "`openvino-cpu`, parity, accuracy, latency measurement, bundle) and its peak resident memory (ru_maxrss "
            "of that process alone). Seed 0 of each accuracy run; the big models' rows are the bundles timed in part A. "
            "Teachers were trained and cached before any child ran. Aim: every profile under 10 minutes and 4 GiB.", "",
            *bl.md_table(["compress", "wall s", "peak RSS MiB", "pass seconds"], table, "lrrl"), ""]


def render(results: dict[str, Any]) -> str:
    lines = ["# edgekd against its peers (issue 10)", "",
             "Generated by `tools/bench_peers.py` (each part below names the command that produced it); "
             "results also in `docs/bench/peers.json`. Environment:", "",
             *bl.environment_lines(results["environment"]), ""]
    if results.get("goals"):
        lines += ["Goals computed from the numbers below:", "",
                  *bl.md_table(["goal", "measured", "aim", "verdict", "what was compared / why"], results["goals"],
                               "lrrll"), ""]
    if "latency" in results:
        lines += render_latency(results["latency"])
    if "accuracy" in results:
        lines += render_accuracy(results["accuracy"])
    lines += render_cost(results)
    return "\n".join(lines)


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
    ap.add_argument("--profiles", default=",".join(p for _, p in PROFILES), help="accuracy profiles to run")
    ap.add_argument("--acc-epochs", type=int, default=None,
                    help="override every training epoch count of the profiles (default: the shipped profiles)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: resnet18 only, 2 rounds x 5 calls, batch 4; digits only, 1 seed, 3 profiles "
                         "with 1 epoch")
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
    parts = set(args.parts.split(","))
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
