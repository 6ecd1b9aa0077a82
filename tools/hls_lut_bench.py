"""The HLS LUT estimate against yosys: fit its coefficients on single-accumulator datapaths, then check layers.

    .venv/bin/python tools/hls_lut_bench.py [--models student mlp] [--reuse 64 16] [--out out/hls-lut]

1. Calibration: yosys ``synth_xilinx -family xcup`` of one accumulator summing k products (k = 1..32 with the
   products in DSPs; k = 1..16 with them in LUTs, ``-nodsp``, 9-bit x operands; k = 1, 4, 8 for 8-bit) and of one
   requantizer of each kind. Least-squares lines per regime are the coefficients ``edgekd/backends/hls/estimate.py``
   should carry (printed beside the ones it does carry).
2. Check: every Conv/Dense layer of the digits models (ONNX Runtime QDQ, fixed-point requantization) at the given
   reuse factors: the layer's datapath (the estimate's own ``lut_terms``) synthesized by yosys vs the estimate's
   ``lut`` / ``lut_products_in_fabric``. The requantizer is synthesized once per kind and counted per accumulator
   (the copies share no logic).
yosys results are cached in OUT/synth-cache.json by the Verilog, options and yosys version. Writes results.json and
results.md; prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.hls import estimate as est
from edgekd.backends.hls.lut_calibration import Datapath, lanes_verilog, requant_verilog
from edgekd.backends.rtl import tools
from edgekd.backends.rtl.synth import TOP, synthesize

FAMILY = "xcup"
DSP_SIZES = (1, 2, 3, 4, 8, 12, 16, 24, 32)
FABRIC_SIZES = {9: (1, 2, 3, 4, 8, 12, 16), 8: (1, 4, 8)}


class Synth:
    """yosys LUT counts, cached by what determines them."""

    def __init__(self, work: Path, cache: Path) -> None:
        self.work, self.cache_file = work, cache
        self.cache: dict[str, int] = json.loads(cache.read_text()) if cache.is_file() else {}
        self.version = tools.require("yosys").describe()

    def lut(self, verilog: str, fabric: bool) -> int:
        options = "-nodsp" if fabric else ""
        key = hashlib.sha256(f"{self.version}|{FAMILY}|{options}|{verilog}".encode()).hexdigest()[:20]
        if key not in self.cache:
            folder = self.work / key
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "engine.v").write_text(verilog)
            self.cache[key] = synthesize(folder, FAMILY, options=options).resources["lut"]
            self.cache_file.write_text(json.dumps(self.cache, indent=1))
        return self.cache[key]


def _line(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares (base, per product) through (k, LUT) points."""
    k, lut = np.array(points, dtype=float).T
    slope, base = np.polyfit(k, lut, 1)
    return float(base), float(slope)


def calibrate(synth: Synth) -> dict[str, Any]:
    dsp = {k: synth.lut(lanes_verilog(Datapath(k, 1), TOP), False) for k in DSP_SIZES}
    fabric = {bits: {k: synth.lut(lanes_verilog(Datapath(k, 1, x_bits=bits), TOP), True) for k in sizes}
              for bits, sizes in FABRIC_SIZES.items()}
    chain = [(k, v) for k, v in dsp.items() if k <= est.DSP_CASCADE_MAX]
    return {"dsp_points": dsp, "fabric_points": fabric,
            "dsp_chain": _line(chain), "dsp_tree": _line([(k, v) for k, v in dsp.items() if k > est.DSP_CASCADE_MAX]),
            "fabric": {bits: _line(list(points.items())) for bits, points in fabric.items()},
            "requant": {kind: synth.lut(requant_verilog(kind, TOP), False) for kind in ("fixed_point", "power_of_two")}}


def _layers(model: str, reuse: int, work: Path) -> list[dict[str, Any]]:
    from edgekd.backends.hls import HLSBackend, HLSOptions
    from edgekd.config import load_target
    from edgekd.testing import ort_qdq

    path, _ = ort_qdq(model, work, epochs=2)  # ORT's float scales: every requantizer is fixed point
    target = load_target("fpga-zcu104")
    options: HLSOptions = dataclasses.replace(target.options, reuse_factor=reuse, requant="fixed_point")
    target = dataclasses.replace(target, options=options)
    layers = HLSBackend().estimate(path, target).to_dict()["layers"]
    return [la for la in layers if la.get("lut") is not None]


def check(models: list[str], reuses: list[int], work: Path, synth: Synth, requant_luts: dict[str, int]
          ) -> list[dict[str, Any]]:
    rows = []
    for model, reuse in zip(models, reuses, strict=True):
        for layer in _layers(model, reuse, work):
            terms = layer["lut_terms"]
            path = Datapath(terms["products"], terms["groups"], x_bits=terms["x_bits"])
            rq = requant_luts.get(terms["requant"] or "", 0) * terms["groups"]
            measured = {mode: synth.lut(lanes_verilog(path, TOP), mode == "fabric") + rq for mode in ("dsp", "fabric")}
            rows.append({"model": model, "layer": layer["layer"], "reuse": reuse, **terms,
                         "estimate_dsp": layer["lut"], "yosys_dsp": measured["dsp"],
                         "estimate_fabric": layer["lut_products_in_fabric"], "yosys_fabric": measured["fabric"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _err(estimate: float, measured: float) -> str:
    return f"{100 * (estimate - measured) / measured:+.1f} %"


def table(fit: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    def pair(p: tuple[float, float]) -> str:
        return f"{p[0]:.1f} + {p[1]:.1f} k"

    carried = {"products in DSPs, k <= 3 (post-adder chain)": est.LUT_DSP_CHAIN,
               "products in DSPs, k > 3 (LUT tree)": est.LUT_DSP_TREE,
               "products in LUTs, 9-bit x": est.LUT_FABRIC[9], "products in LUTs, 8-bit x": est.LUT_FABRIC[8]}
    fitted = dict(zip(carried, (fit["dsp_chain"], fit["dsp_tree"], fit["fabric"][9], fit["fabric"][8]), strict=True))
    lines = ["| one accumulator of k products (LUT6) | fitted now | in estimate.py |", "|---|---:|---:|"]
    lines += [f"| {k} | {pair(fitted[k])} | {pair(carried[k])} |" for k in carried]
    lines += [f"| requantizer, {kind} | {fit['requant'][kind]} | {est.LUT_PER_REQUANT[kind]} |"
              for kind in ("fixed_point", "power_of_two")]
    lines += ["", "| model | layer | R | products | accumulators | x bits | requant | LUT est. (DSP products) | "
              "yosys | error | LUT est. (LUT products) | yosys | error |", "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
              "---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layer']} | {r['reuse']} | {r['products']} | {r['groups']} | {r['x_bits']} | "
                     f"{r['requant']} | {r['estimate_dsp']} | {r['yosys_dsp']} | {_err(r['estimate_dsp'], r['yosys_dsp'])} | "
                     f"{r['estimate_fabric']} | {r['yosys_fabric']} | {_err(r['estimate_fabric'], r['yosys_fabric'])} |")
    for mode in ("dsp", "fabric"):
        e, m = sum(r[f"estimate_{mode}"] for r in rows), sum(r[f"yosys_{mode}"] for r in rows)
        lines.append(f"\nTotal ({mode} products): estimate {e} vs yosys {m} LUT6 ({_err(e, m)}).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["student", "mlp"])
    parser.add_argument("--reuse", nargs="+", type=int, default=[64, 16], help="one reuse factor per model")
    parser.add_argument("--out", type=Path, default=Path("out/hls-lut"))
    args = parser.parse_args()
    if len(args.reuse) != len(args.models):
        parser.error("give one --reuse per --models entry")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        synth = Synth(Path(tmp), args.out / "synth-cache.json")
        fit = calibrate(synth)
        print(json.dumps(fit), flush=True)
        rows = check(args.models, args.reuse, Path(tmp), synth, fit["requant"])
    text = table(fit, rows)
    (args.out / "results.json").write_text(json.dumps({"host": platform.processor() or platform.machine(),
                                                       "yosys": synth.version, "fit": fit, "rows": rows}, indent=1))
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
