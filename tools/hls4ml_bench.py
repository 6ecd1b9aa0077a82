"""edgekd's HLS flow beside hls4ml 1.3 on the same trained digits models: accuracy, exactness, generate + compile time.

    pip install --target .hls4ml-lib hls4ml==1.3.0 pydigitalwavetools==1.1 quantizers h5py pyyaml --no-deps
    PYTHONPATH=.hls4ml-lib .venv/bin/python tools/hls4ml_bench.py [--rounds 3] [--samples 500]

hls4ml is not an edgekd dependency (it is only the comparison here). Each model is trained once (seed 0, 4 epochs,
as the HLS tests do); edgekd gets ONNX Runtime's QDQ quantization of it (what edgekd's FPGA backends take), hls4ml
the float PyTorch module with its own fixed-point types. Both flows generate C++ and compile the C simulation with
g++ (no Vivado on either side); rounds are interleaved and times are medians [min-max].
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HLS4ML_CONFIGS = {  # label -> config_from_pytorch_model keyword arguments
    "hls4ml ap_fixed<16,6> (default)": {"default_precision": "ap_fixed<16,6>"},
    "hls4ml ap_fixed<16,6>, channels_last_conversion=internal": {"default_precision": "ap_fixed<16,6>",
                                                                 "channels_last_conversion": "internal"},
    "hls4ml ap_fixed<8,3>": {"default_precision": "ap_fixed<8,3>"},
}


def _models(arch: str, work: Path) -> tuple[Any, Path, Any]:
    from edgekd.data import load_data
    from edgekd.testing.models import export_float, make_module, ort_quantize, train_briefly

    data = load_data("builtin:digits")
    module = train_briefly(make_module(arch, 0), data.x_train, data.y_train, epochs=4, seed=0).eval()
    float_path = export_float(module, work / f"{arch}.onnx", data.x_test)
    return module, ort_quantize(float_path, work / f"{arch}.qdq.onnx", data.x_train[:128]), data


def _edgekd(qdq: Path, x: np.ndarray, out: Path) -> tuple[float, dict[str, Any], np.ndarray]:
    from edgekd.backends.hls import HLSBackend
    from edgekd.config import load_target

    target = load_target("fpga-zcu104")
    started = time.perf_counter()
    build = HLSBackend().build(qdq, target, out, golden=x)
    seconds = time.perf_counter() - started
    y = HLSBackend().load(out, target, build).infer({"input": x})
    return seconds, build.agreement.to_dict(), next(iter(y.values())).reshape(len(x), -1)


def _hls4ml(module: Any, shape: tuple[int, ...], x: np.ndarray, out: Path, options: dict[str, Any]
            ) -> tuple[float, np.ndarray]:
    import hls4ml

    started = time.perf_counter()
    config = hls4ml.utils.config_from_pytorch_model(module, input_shape=shape, granularity="model", **options)
    model = hls4ml.converters.convert_from_pytorch_model(module, hls_config=config, output_dir=str(out),
                                                         backend="Vivado", io_type="io_parallel")
    model.compile()
    seconds = time.perf_counter() - started
    return seconds, np.asarray(model.predict(np.ascontiguousarray(x))).reshape(len(x), -1)


def _scores(y: np.ndarray, labels: np.ndarray, torch_y: np.ndarray, int8_y: np.ndarray) -> dict[str, Any]:
    return {"accuracy": float((y.argmax(1) == labels).mean()),
            "top1_vs_float": float((y.argmax(1) == torch_y.argmax(1)).mean()),
            "top1_vs_ort_int8": float((y.argmax(1) == int8_y.argmax(1)).mean()),
            "max_abs_vs_float": float(np.abs(y - torch_y).max())}


def bench(arch: str, rounds: int, samples: int, work: Path) -> list[dict[str, Any]]:
    import torch

    from edgekd.export import onnx_outputs

    module, qdq, data = _models(arch, work)
    x, labels = data.x_test[:samples].astype(np.float32), data.y_test[:samples]
    with torch.no_grad():
        torch_y = module(torch.from_numpy(x)).numpy().reshape(len(x), -1)
    int8_y = onnx_outputs(qdq, x).reshape(len(x), -1)
    times: dict[str, list[float]] = {"edgekd": [], **{k: [] for k in HLS4ML_CONFIGS}}
    results: dict[str, dict[str, Any]] = {}
    for r in range(rounds):  # interleaved: every flow once per round
        seconds, agreement, y = _edgekd(qdq, x, work / f"edgekd-{arch}-{r}")
        times["edgekd"].append(seconds)
        results["edgekd"] = {**_scores(y, labels, torch_y, int8_y), "exact_vs_ort_int8":
                             f"{agreement['exact']}/{agreement['elements']}", "input": "ORT QDQ int8 ONNX"}
        for label, options in HLS4ML_CONFIGS.items():
            slug = f"h4-{arch}-{r}-{len(times[label])}-{abs(hash(label)) % 1000}"
            seconds, y = _hls4ml(module, tuple(x.shape[1:]), x, work / slug, options)
            times[label].append(seconds)
            results[label] = {**_scores(y, labels, torch_y, int8_y), "exact_vs_ort_int8": "-",
                              "input": "float PyTorch module"}
    rows = []
    for flow, t in times.items():
        rows.append({"model": arch, "flow": flow, **results[flow], "seconds_median": statistics.median(t),
                     "seconds_min": min(t), "seconds_max": max(t), "rounds": len(t),
                     "float_accuracy": float((torch_y.argmax(1) == labels).mean()),
                     "ort_int8_accuracy": float((int8_y.argmax(1) == labels).mean())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]], samples: int) -> str:
    lines = [f"| model | flow | input | accuracy ({samples}) | top-1 vs float | top-1 vs ORT int8 | exact vs ORT int8 "
             "| max abs vs float | generate + compile s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['flow']} | {r['input']} | {100 * r['accuracy']:.1f} % | "
                     f"{100 * r['top1_vs_float']:.1f} % | {100 * r['top1_vs_ort_int8']:.1f} % | {r['exact_vs_ort_int8']} | "
                     f"{r['max_abs_vs_float']:.3f} | {r['seconds_median']:.2f} [{r['seconds_min']:.2f}-{r['seconds_max']:.2f}] |")
    for arch in dict.fromkeys(r["model"] for r in rows):
        first = next(r for r in rows if r["model"] == arch)
        lines.append(f"\n{arch}: PyTorch float {100 * first['float_accuracy']:.1f} %, ONNX Runtime int8 "
                     f"{100 * first['ort_int8_accuracy']:.1f} %.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["student", "mlp"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("out/hls4ml-bench"))
    args = parser.parse_args()
    try:
        import hls4ml
    except ImportError:
        parser.error("hls4ml is not importable: install it as the docstring says (it is not an edgekd dependency)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for arch in args.models for row in bench(arch, args.rounds, args.samples, Path(tmp))]
    text = table(rows, args.samples)
    meta = {"hls4ml": hls4ml.__version__, "rounds": args.rounds, "samples": args.samples}
    (args.out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
