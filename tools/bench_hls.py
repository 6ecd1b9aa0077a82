"""Benchmark the FPGA HLS backend: agreement with ONNX Runtime INT8, g++ build time, host C-sim time,
and the analytical FPGA estimates for the shipped targets. Writes docs/bench/hls.md.

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_hls.py [--repeats 5] [--out docs/bench/hls.md]

Host timings are the C model on this CPU (not FPGA latency) and are medians over repeats; FPGA
numbers are ESTIMATES from formulas (docs/fpga-hls.md), not synthesis.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekd.backends.hls import HLSBackend
from edgekd.config import load_target
from edgekd.export import onnx_outputs
from edgekd.testing import ort_qdq

CASES = [  # (architecture, quantize_static settings, label)
    ("student", {}, "S8 act / S8 per-channel weights"),
    ("mlp", {}, "S8 / S8 per-channel"),
    ("residual", {}, "S8 / S8 per-channel"),
    ("residual", {"activations": "uint8", "weights": "uint8", "per_channel": False}, "U8 / U8 per-tensor"),
    ("allops", {}, "S8 / S8 per-channel"),
]


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="docs/bench/hls.md")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    command = "OMP_NUM_THREADS=1 .venv/bin/python tools/bench_hls.py " + " ".join(argv if argv is not None else sys.argv[1:])
    zcu, a7 = load_target("fpga-zcu104"), load_target("fpga-artix7")
    agree_rows, time_rows, est_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-hls-") as tmp:
        work = Path(tmp)
        for arch, quant, label in CASES:
            path, data = ort_qdq(arch, work, epochs=args.epochs, **quant)
            x = data.x_test
            ref = onnx_outputs(path, x)
            ort_acc = float((ref.argmax(1) == data.y_test).mean() * 100)
            for requant in ("fixed_point", "float32"):
                target = dataclasses.replace(zcu, options=dataclasses.replace(zcu.options, requant=requant))
                out = work / f"{path.stem}-{requant}"
                t0 = time.perf_counter()
                result = HLSBackend().build(path, target, out, inputs=x)
                build_s = time.perf_counter() - t0
                a = result.details["agreement"]
                agree_rows.append(f"| {arch} | {label} | {requant} | {a['samples']} | {a['exact']}/{a['elements']} | "
                                  f"{a['max_lsb']} | {a['top1_agree']}/{a['samples']} | {ort_acc:.1f} |")
                if requant != zcu.options.requant:
                    continue
                runner = HLSBackend().load(out, target, result)
                one = x[:1]
                csim_1 = _median_time(lambda r=runner, o=one: r.infer({"input": o}), args.repeats)
                csim_all = _median_time(lambda r=runner, xs=x: r.infer({"input": xs}), args.repeats)
                ort_1 = _median_time(lambda o=one, p=path: onnx_outputs(p, o), args.repeats)
                time_rows.append(f"| {arch} ({label}) | {build_s:.2f} | {result.details['compile_s']:.2f} | "
                                 f"{csim_1 * 1e3:.2f} | {csim_all / len(x) * 1e6:.1f} | {ort_1 * 1e3:.2f} |")
                for tgt in (zcu, a7):
                    est_out = work / f"{path.stem}-{tgt.name}"
                    e = HLSBackend().build(path, tgt, est_out, inputs=x[:2]).details["estimates"]
                    t = e["total"]
                    est_rows.append(f"| {arch} ({label}) | {tgt.name} | {tgt.options.reuse_factor} | {t['macs']} | "
                                    f"{t['multipliers']} | {t['dsp']} ({100 * e['utilization']['dsp']:.0f} %) | "
                                    f"{t['bram_18k']} | {t['latency_cycles']} | {t['latency_us']:.2f} | {t['ii_cycles']} | "
                                    f"{'yes' if e['fits'] else 'NO: ' + ', '.join(e['over'])} |")
    hls4ml = importlib.util.find_spec("hls4ml") is not None
    time_header = ("| model | build s (generate + g++ + check) | g++ s | C-sim 1 sample ms (process start incl.) "
                   f"| C-sim us/sample (batch {len(x)}) | ORT 1 sample ms (session incl.) |")
    text = f"""## FPGA HLS backend (C simulation with g++, estimates)

Produced by `{command.strip()}`
(digits test set, {len(x)} samples; models trained {args.epochs} epochs from seed 0 and quantized with ONNX Runtime's
`quantize_static`, QDQ, 128 calibration images). Target options from `targets/fpga-zcu104.toml` unless stated.

### Agreement with ONNX Runtime's INT8 execution of the same QDQ file (every element of the test set)

"LSB" is one step of the int8 output. `fixed_point` = integer multiplier + shift (the target default),
`float32` = ORT's float32 requantization.

| model | quantization | requant | samples | identical elements | max LSB | top-1 identical | ORT INT8 acc % |
|---|---|---|---:|---:|---:|---:|---:|
{chr(10).join(agree_rows)}

### Host times (C model on this CPU: NOT FPGA latency; medians of {args.repeats})

{time_header}
|---|---:|---:|---:|---:|---:|
{chr(10).join(time_rows)}

### FPGA ESTIMATES (analytical formulas, not synthesis; docs/fpga-hls.md)

| model | target | reuse | MACs | multipliers | DSP (util.) | BRAM18 | latency cycles | latency us | II cycles | fits |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(est_rows)}

hls4ml reference: {"installed, but no comparison is scripted yet" if hls4ml else "not installed here, not compared"}
(hls4ml reads QONNX, not standard QDQ ONNX; see docs/fpga-hls.md).
"""
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
