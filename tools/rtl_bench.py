"""Benchmark the RTL backend on the digits models: exactness vs ONNX Runtime INT8 on every test image, and the
numbers the open tools measure (yosys cells, nextpnr logic cells/BRAM/DSP/fmax with the seed, simulated cycles).

    .venv/bin/python tools/rtl_bench.py [--models student mlp] [--targets fpga-ice40-up5k fpga-xc7-rtl]
                                        [--golden 500] [--json out.json]

Prints a markdown table (docs/BENCHMARKS.md, section "RTL backend"). Each model goes through ``edgekd compress``
with a PTQ-only recipe (the quantize pass gives power-of-two scales and zero point 0 for an rtl target); the
builtin models are untrained: exactness, cycles and resources do not depend on training.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from edgekd.backends.rtl import tools
from edgekd.config import recipe_from_mapping
from edgekd.pipeline import CompressOptions, compress

PTQ = {"name": "ptq-only", "passes": [{"name": "quantize", "mode": "ptq", "calibration": "minmax", "calibration_samples": 64,
                                        "bias_correction": False, "sensitivity": "off"}]}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_case(model: str, target: str, golden: int, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    report = compress(f"builtin:digits-{model}", data="builtin:digits", recipe=recipe_from_mapping(PTQ, where="rtl_bench"),
                      targets=[target], out=out, options=CompressOptions(measure=False, golden_samples=golden))
    entry = report["targets"][target]
    details = entry["build"]["details"]
    est, agreement, measured = details["estimates"], details["agreement"], details["measured"]
    synth = measured["synthesis"]
    pnr = measured.get("place_and_route") or {}
    util = pnr.get("utilisation", {})
    return {"model": model, "target": target, "status": entry["status"], "samples": agreement["samples"],
            "exact": agreement["exact"], "elements": agreement["elements"], "cycles": est["total"]["cycles"],
            "analytical_cycles": est["analytical"]["cycles"], "fmax_mhz": pnr.get("fmax_mhz"), "seed": pnr.get("seed"),
            "latency_us": est["total"]["latency_us"], "clock_mhz": est["total"]["clock_mhz"],
            "lc": util.get("ICESTORM_LC", {}).get("used"), "lc_available": util.get("ICESTORM_LC", {}).get("available"),
            "resources": synth["resources"], "netlist_check": measured.get("netlist_check"),
            "yosys_s": synth["seconds"], "nextpnr_s": pnr.get("seconds"), "total_s": round(time.perf_counter() - started, 1),
            "fits": est["fits"], "lanes": details["lanes"]}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | target | exact vs ORT | cycles (sim = table) | fmax (seed) | µs / image | logic | BRAM | DSP | "
             "gate-level check | yosys + nextpnr s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["resources"]
        if r["lc"] is not None:
            logic = f"{r['lc']} LC / {r['lc_available']} ({100 * r['lc'] / r['lc_available']:.0f} %)"
            fmax = f"{r['fmax_mhz']} MHz ({r['seed']})"
            bram = f"{res['bram']} x 4 kbit"
        else:
            logic, fmax, bram = f"{res['lut']} LUT, {res['ff']} FF", f"(synthesis only; at {r['clock_mhz']:g} MHz)", \
                f"{res['bram_18k']} x 18 kbit"
        gate = r["netlist_check"] or {}
        gate_text = f"{gate['identical']}/{gate['samples']}" if gate.get("samples") else "-"
        lines.append(f"| {r['model']} | {r['target']} ({r['lanes']} lanes) | {r['exact']}/{r['elements']} ({r['samples']} images) "
                     f"| {r['cycles']} = {r['analytical_cycles']} | {fmax} | {r['latency_us']:.1f} | {logic} | {bram} | "
                     f"{res['dsp']} | {gate_text} | {r['yosys_s']} + {r['nextpnr_s'] or 0} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["student", "mlp"])
    parser.add_argument("--targets", nargs="+", default=["fpga-ice40-up5k"])
    parser.add_argument("--golden", type=int, default=500, help="golden inputs simulated (digits has 500 test images)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-rtl-bench-") as tmp:
        for model in args.models:
            for target in args.targets:
                rows.append(run_case(model, target, args.golden, Path(tmp) / f"{model}-{target}"))
    print(f"CPU: {_cpu()}; tools: {json.dumps(tools.versions())}\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
