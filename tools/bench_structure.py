"""Benchmark: what structure buys. 2:4 sparsity and channel pruning, accuracy and latency, side by side.

Part "accuracy" (MNIST-5k, the builtin 26.7k-parameter student and the builtin teacher):
  dense KD student vs 2:4 + KD fine-tune (oneshot, the ASP recipe; and gradual SR-STE) vs 50 %
  channels + KD fine-tune, each from the same KD-trained dense student, over ``--seeds`` seeds.
  The 2:4 models are exported to ONNX and checked with ``edgekd inspect`` (every masked layer 2:4).
Part "latency" (torchvision resnet18, random weights, batch 1, 2 threads):
  dense vs 50 %-channels-pruned (torch-pruning, L2, round_to 8) and dense vs 2:4 (magnitude, no
  fine-tuning: latency does not depend on the values), on ONNX Runtime FP32, OpenVINO FP32
  (INFERENCE_PRECISION_HINT=f32) and OpenVINO's default precision (bf16 on AVX512-BF16 and AMX CPUs). Every
  variant runs in interleaved rounds (each variant ``--calls`` timed calls per round) so drift hits
  them alike; the speed-up is the median over rounds of the per-round p50 ratio, with its range.

    .venv/bin/python tools/bench_structure.py                    # full: 3 seeds, 8 rounds x 50 calls
    .venv/bin/python tools/bench_structure.py --quick            # smoke run: 1 seed, short training, 3 x 10 calls

Writes docs/bench/structure.md (with the command line). Numbers from a shared machine are only
indicative: compare the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THREADS = 2


# ---------------------------------------------------------------- accuracy (MNIST-5k)


def accuracy_part(seeds: int, epochs: int, ft_epochs: int, teacher_epochs: int | None, workdir: Path) -> dict[str, Any]:
    import torch

    from edgekd.artifact import Artifact
    from edgekd.data import load_data
    from edgekd.export import export_onnx
    from edgekd.model_inspect import inspect_onnx
    from edgekd.models import DemoStudent, load_model
    from edgekd.passes import PASSES, PassContext
    from edgekd.passes.prune import PruneChannelsConfig, count_macs_params
    from edgekd.passes.sparsity import SparsifyConfig
    from edgekd.train import FinetuneConfig, evaluate, fine_tune

    data = load_data("builtin:mnist5k")
    started = time.perf_counter()
    teacher_src = "builtin:mnist-teacher" + (f"?epochs={teacher_epochs}" if teacher_epochs else "")
    teacher = load_model(teacher_src).module  # trained once, then cached in ~/.cache/edgekd
    teacher_s = time.perf_counter() - started
    teacher_acc = evaluate(teacher, data.x_test, data.y_test)
    ft = FinetuneConfig(epochs=ft_epochs, lr=1e-3, schedule="cosine", seed=0)
    variants = {
        "2:4 oneshot + KD": ("sparsify", SparsifyConfig(finetune=ft)),
        "2:4 gradual (SR-STE) + KD": ("sparsify", SparsifyConfig(schedule="gradual", ramp=0.5, finetune=ft)),
        "50% channels + KD": ("prune_channels", PruneChannelsConfig(ratio=0.5, round_to=4, finetune=ft)),
        "2:4 oneshot, no fine-tune": ("sparsify", SparsifyConfig()),
    }
    rows: dict[str, list[float]] = {"dense KD": [], **{k: [] for k in variants}}
    seconds: dict[str, list[float]] = {k: [] for k in rows}
    facts: dict[str, Any] = {}
    for seed in range(seeds):
        torch.manual_seed(seed)
        student = DemoStudent(1, 10, image_size=28)
        t0 = time.perf_counter()
        fine_tune(student, teacher, data, FinetuneConfig(epochs=epochs, lr=1e-2, schedule="onecycle", seed=seed),
                  description="dense KD")
        seconds["dense KD"].append(time.perf_counter() - t0)
        rows["dense KD"].append(evaluate(student, data.x_test, data.y_test))
        dense = Artifact("torch", student)
        example = torch.from_numpy(data.x_test[:1])
        facts.setdefault("dense", count_macs_params(student, example))
        for label, (pass_name, cfg) in variants.items():
            ctx = PassContext(teacher=teacher, data=data, seed=seed)
            t0 = time.perf_counter()
            out = PASSES.get(pass_name).fn(dense, cfg, ctx)
            seconds[label].append(time.perf_counter() - t0)
            rows[label].append(evaluate(out.payload, data.x_test, data.y_test))
            if pass_name == "prune_channels":
                facts.setdefault(label, count_macs_params(out.payload, example))
            elif seed == 0 and "oneshot + KD" in label:
                path = export_onnx(out, workdir / "mnist_sparse24.onnx", example=data.x_test).path
                info = inspect_onnx(path)
                masked = set(out.meta["sparsity"]["masks"])
                ok = [la.weight for la in info.layers if la.nm is not None and la.nm.compliant]
                facts["inspect"] = {"masked": sorted(masked), "compliant_weights": ok,
                                    "all_masked_compliant": all(f"{n}.weight" in ok for n in masked),
                                    "eligible": info.totals()["eligible"],
                                    "sparsity_overall": info.totals()["sparsity"]}
    return {"teacher_acc": teacher_acc, "teacher_s": teacher_s, "teacher_src": teacher_src, "rows": rows,
            "seconds": seconds, "facts": facts,
            "seeds": seeds, "epochs": epochs, "ft_epochs": ft_epochs}


# ---------------------------------------------------------------- latency (resnet18)


def _ort(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def _ov(path: Path, precision: str | None) -> Any:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape([1, 3, 224, 224])
    props = {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        props["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", props)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})


def interleaved(runners: dict[str, Any], x: np.ndarray, rounds: int, calls: int) -> dict[str, list[float]]:
    """p50 (ms) of every runner in every round (benchlib.interleaved: rotating order, idle gap between blocks)."""
    import benchlib as bl

    return bl.interleaved({n: (lambda f=fn: f(x)) for n, fn in runners.items()}, rounds=rounds, calls=calls, warmup=5)


def latency_part(rounds: int, calls: int, workdir: Path) -> dict[str, Any]:
    import torch
    import torchvision

    from edgekd.artifact import Artifact
    from edgekd.data import DataSplits
    from edgekd.export import export_onnx
    from edgekd.model_inspect import inspect_onnx
    from edgekd.passes import PASSES, PassContext
    from edgekd.passes.sparsity import SparsifyConfig

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    ctx = PassContext(data=DataSplits("random", x, None, x, None))
    dense = Artifact("torch", torchvision.models.resnet18().eval())
    from edgekd.passes.prune import PruneChannelsConfig

    t0 = time.perf_counter()
    pruned = PASSES.get("prune_channels").fn(dense, PruneChannelsConfig(ratio=0.5, round_to=8), ctx)
    prune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sparse = PASSES.get("sparsify").fn(dense, SparsifyConfig(), ctx)
    sparsify_s = time.perf_counter() - t0
    paths = {}
    for name, art in (("dense", dense), ("pruned", pruned), ("2:4", sparse)):
        paths[name] = export_onnx(art, workdir / f"resnet18_{name.replace(':', '')}.onnx", example=x).path
    inspect_sparse = inspect_onnx(paths["2:4"]).totals()
    runtimes = {"ORT FP32": _ort, "OV FP32 (f32 hint)": lambda p: _ov(p, "f32"),
                "OV default (bf16 on AVX512-BF16/AMX)": lambda p: _ov(p, None)}
    results: dict[str, Any] = {}
    for rt_name, make in runtimes.items():
        runners = {variant: make(paths[variant]) for variant in ("dense", "pruned", "2:4")}
        results[rt_name] = interleaved(runners, x, rounds, calls)
    sizes = {k: p.stat().st_size / 1e6 for k, p in paths.items()}
    return {"pruning": pruned.meta["pruning"], "prune_s": prune_s, "sparsify_s": sparsify_s, "p50": results,
            "sizes": sizes, "inspect_sparse": inspect_sparse, "rounds": rounds, "calls": calls}


# ---------------------------------------------------------------- report


def _ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    r = np.array(num) / np.array(den)
    return float(np.median(r)), float(r.min()), float(r.max())


def _fmt_acc(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def render(acc: dict[str, Any] | None, lat: dict[str, Any] | None, command: str) -> str:
    import onnxruntime
    import openvino
    import torch
    import torch_pruning

    lines = ["# Structure benchmark: 2:4 sparsity and channel pruning", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
             f"openvino {openvino.__version__}, torch-pruning {torch_pruning.__version__}.", ""]
    if acc is not None:
        rows, dense = acc["rows"], acc["rows"]["dense KD"]
        lines += ["## MNIST-5k accuracy (builtin student, 26.7k parameters, KD from the builtin teacher)", "",
                  f"Teacher `{acc['teacher_src']}` {acc['teacher_acc']:.2f} %. Dense student: KD, {acc['epochs']} epochs (one-cycle). Each "
                  f"variant starts from that dense student and fine-tunes {acc['ft_epochs']} epochs with Hinton KD "
                  f"(T=4, alpha=0.9, cosine, lr 1e-3). {acc['seeds']} seed(s); mean ± std over seeds; "
                  "drop = dense minus variant, per seed, then averaged.", "",
                  "| variant | test accuracy % | drop vs dense KD (points) | pass seconds |", "|---|---:|---:|---:|"]
        for label, values in rows.items():
            drop = "" if label == "dense KD" else f"{np.mean(np.array(dense) - np.array(values)):+.2f}"
            lines.append(f"| {label} | {_fmt_acc(values)} | {drop} | {np.mean(acc['seconds'][label]):.1f} |")
        f = acc["facts"]
        if "50% channels + KD" in f:
            (m0, p0), (m1, p1) = f["dense"], f["50% channels + KD"]
            lines += ["", f"50 % channels on this student (round_to 4): MACs {m0 / 1e3:.1f}k -> {m1 / 1e3:.1f}k, "
                          f"params {p0 / 1e3:.1f}k -> {p1 / 1e3:.1f}k."]
        if "inspect" in f:
            i = f["inspect"]
            lines += ["", f"`edgekd inspect` on the exported 2:4 ONNX (seed 0): masked layers {', '.join(i['masked'])}; "
                          f"2:4-compliant weights {', '.join(i['compliant_weights'])}; every masked layer compliant: "
                          f"**{i['all_masked_compliant']}** ({i['eligible']} eligible layers; the classifier is eligible "
                          f"but left dense by default; the first conv has 1 input channel). Overall weight sparsity "
                          f"{100 * i['sparsity_overall']:.1f} %."]
        lines += [""]
    if lat is not None:
        pr = lat["pruning"]
        lines += ["## resnet18 (random weights), batch 1, 2 threads", "",
                  f"Channel pruning (torch-pruning MetaPruner, L2, ratio 0.5, round_to 8, fc outputs kept, "
                  f"{lat['prune_s']:.1f} s): MACs {pr['macs_before'] / 1e9:.3f} G -> {pr['macs_after'] / 1e9:.3f} G "
                  f"({pr['macs_reduction']:.2f}x fewer); params {pr['params_before'] / 1e6:.2f} M -> "
                  f"{pr['params_after'] / 1e6:.2f} M; ONNX {lat['sizes']['dense']:.1f} MB -> {lat['sizes']['pruned']:.1f} MB.",
                  f"2:4 (magnitude, {lat['sparsify_s']:.1f} s): {lat['inspect_sparse']['nm_compliant']} of "
                  f"{lat['inspect_sparse']['eligible']} eligible layers 2:4 per `edgekd inspect` (first conv, Cin=3, "
                  f"is not eligible; fc is skipped as the classifier), {100 * lat['inspect_sparse']['sparsity']:.1f} % "
                  f"of weights zero; ONNX {lat['sizes']['2:4']:.1f} MB (stored dense).", "",
                  f"{lat['rounds']} interleaved rounds x {lat['calls']} calls per variant. Speed-up = dense p50 / "
                  "variant p50 in the same round: median [min-max] over rounds.", "",
                  "| runtime | dense p50 ms | pruned p50 ms | speed-up pruned | 2:4 p50 ms | speed-up 2:4 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for rt, p50 in lat["p50"].items():
            sp, sp_lo, sp_hi = _ratio(p50["dense"], p50["pruned"])
            ss, ss_lo, ss_hi = _ratio(p50["dense"], p50["2:4"])
            lines.append(f"| {rt} | {np.median(p50['dense']):.2f} | {np.median(p50['pruned']):.2f} | "
                         f"**{sp:.2f}x** [{sp_lo:.2f}-{sp_hi:.2f}] | {np.median(p50['2:4']):.2f} | "
                         f"{ss:.2f}x [{ss_lo:.2f}-{ss_hi:.2f}] |")
        sparse_ratios = {rt: _ratio(p50["dense"], p50["2:4"])[0] for rt, p50 in lat["p50"].items()}
        pruned_ratios = {rt: _ratio(p50["dense"], p50["pruned"])[0] for rt, p50 in lat["p50"].items()}
        flat = all(0.9 <= r <= 1.1 for r in sparse_ratios.values())
        lines += ["", ("2:4: no speed-up beyond noise (all medians within 0.9-1.1x) on these CPU runtimes: the zeros "
                       "are stored and multiplied like any other weight." if flat else
                       "2:4: medians outside the 0.9-1.1x noise band: " + ", ".join(
                           f"{rt} {r:.2f}x" for rt, r in sparse_ratios.items()) + " (re-run on a quiet machine "
                       "before reading anything into it; CPU kernels here have no 2:4 path).")
                  + " 2:4 pays off only on sparse tensor cores (TensorRT, Ampere or newer / Jetson Orin), not measured "
                    "here. Channel pruning: " + ", ".join(f"{rt} {r:.2f}x" for rt, r in pruned_ratios.items())
                  + f" faster than dense (aim >= 1.6x: {'met' if min(pruned_ratios.values()) >= 1.6 else 'NOT met'}).",
                  ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "accuracy", "latency"), default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40, help="dense KD epochs")
    parser.add_argument("--ft-epochs", type=int, default=15, help="fine-tune epochs after sparsify / prune")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--teacher-epochs", type=int, default=None, help="builtin teacher epochs [its default, 8]")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1-epoch teacher, 6+3 epochs, 3 rounds x 10 calls")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "structure.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.ft_epochs, args.rounds, args.calls = 1, 6, 3, 3, 10
        args.teacher_epochs = args.teacher_epochs or 1
    os.environ.setdefault("EDGEKD_QUIET", "1")
    command = "python tools/bench_structure.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="bench-structure-") as tmp:
        acc = None
        if args.part in ("all", "accuracy"):
            acc = accuracy_part(args.seeds, args.epochs, args.ft_epochs, args.teacher_epochs, Path(tmp))
        lat = latency_part(args.rounds, args.calls, Path(tmp)) if args.part in ("all", "latency") else None
    text = render(acc, lat, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
