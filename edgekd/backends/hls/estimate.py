"""Analytical resource and latency ESTIMATES for the generated HLS project.

These are formulas, not synthesis results (Vitis HLS is not run here). docs/fpga-hls.md
lists every formula; the numbers are meant for comparing reuse factors and parts, and for
flagging a design that obviously cannot fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.backends.hls import ir
from edgekd.backends.hls.codegen import n_mult

BRAM18_BITS = 18 * 1024
LUTRAM_MAX_BITS = 1024  # smaller arrays are assumed to become LUTRAM / registers
PARTITION_THRESHOLD = 4096  # build_prj.tcl: config_array_partition -complete_threshold 4096 (smaller arrays: registers)
LUT_MULT_MAX_BITS = 8  # hls4ml's rule: a product of operands narrower than 9 bits is built in LUTs, no DSP
REQUANT_DSP = {"fixed_point": 4, "float32": 3}  # 32x31-bit integer multiply vs float32 multiply

# LUT6 coefficients fitted to yosys 0.23 `synth_xilinx -family xcup` counts of the datapath the templates describe
# (lut_calibration.py; refit and checked on whole layers by tools/hls_lut_bench.py). One accumulator's tree of k
# products: with the products in DSPs, up to DSP_CASCADE_MAX of them chain through the DSPs' post-adders (a few LUTs
# each); a longer sum becomes a LUT compressor tree (a slope per product, less a fixed saving). With the products in
# LUTs (-nodsp) each costs a multiplier plus its adder. yosys has no Booth recoding: its fabric multipliers are
# larger than Vivado's, so these count what the open flow builds.
DSP_CASCADE_MAX = 3
LUT_DSP_CHAIN = (47.0, 17.0)  # (base, per product) while the sum chains through the DSPs
LUT_DSP_TREE = (-314.2, 102.6)  # (base, per product) for a longer sum
LUT_FABRIC = {8: (-30.6, 236.0), 9: (45.3, 235.9)}  # (base, per product) by the x operand's bits, 8-bit weights
LUT_PER_REQUANT = {"fixed_point": 181, "power_of_two": 16}  # rounding, zero point, clamp (+ DSP glue)


@dataclass(frozen=True)
class Resources:
    dsp: int
    bram_18k: int
    lut: int
    ff: int


def _bram(words: int, bits: int) -> int:
    total = words * bits
    return 0 if total <= LUTRAM_MAX_BITS else math.ceil(total / BRAM18_BITS)


def _weight_bram(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> int:
    if not isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        return 0
    banks = n_mult(layer, tensors)
    size = layer.weights.size
    if banks >= size:  # completely partitioned: registers
        return 0
    bits = 8 if layer.weights.dtype == np.int8 else 16
    return banks * _bram(math.ceil(size / banks), bits)


def _operand_bits(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> tuple[int, int]:
    """Widths of one product's operands as the C++ computes them: (x - zero point), weight."""
    x = tensors[layer.inputs[0]]
    x_bits = 8 if x.dtype == "int8" and x.zero_point == 0 else 9  # uint8, or any zero point: a 9-bit signed difference
    return x_bits, 8 if layer.weights.dtype == np.int8 else 16


def _activation_bram(y: ir.Tensor, bits: int) -> int:
    """Ping-pong buffers between DATAFLOW processes; arrays below the partition threshold become registers."""
    return 0 if y.size < PARTITION_THRESHOLD else 2 * _bram(y.size, bits)


def _pipeline_depth(taps: int) -> int:
    return math.ceil(math.log2(max(taps, 1))) + 4  # adder tree + load, multiply, requantize, store


def _tree_luts(k: int, fabric: bool, x_bits: int) -> float:
    """LUT6 of one accumulator summing ``k`` products (see the coefficients above)."""
    if fabric:
        base, slope = LUT_FABRIC.get(x_bits, LUT_FABRIC[9])
    else:
        base, slope = LUT_DSP_CHAIN if k <= DSP_CASCADE_MAX else LUT_DSP_TREE
    return base + slope * k


def _luts(products: int, groups: int, x_bits: int, requant_kind: str | None) -> dict[str, Any]:
    """The datapath's LUT6 count with products in DSPs and (hls4ml's rule) in LUTs, and the terms it used."""
    k = math.ceil(products / groups)
    rq = LUT_PER_REQUANT.get(requant_kind or "", 0) * groups
    return {"lut": round(groups * _tree_luts(k, False, x_bits) + rq),
            "lut_products_in_fabric": round(groups * _tree_luts(k, True, x_bits) + rq),
            "lut_terms": {"products": products, "groups": groups, "x_bits": x_bits, "requant": requant_kind}}


def layer_estimate(layer: ir.Layer, tensors: dict[str, ir.Tensor], requant: str, dsp_per_mult: float) -> dict[str, Any]:
    y = tensors[layer.output]
    r = layer.reuse
    mults = n_mult(layer, tensors)
    if isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        taps = int(np.prod(layer.weights.shape[1:]))
        iterations = 1 if isinstance(layer, ir.Dense) else int(np.prod(y.shape[1:]))
        per_iter_outputs = layer.weights.shape[0]
        cycles = iterations * r + _pipeline_depth(taps)
        rq = layer.requant
        rq_units = 0 if rq is None or rq.power_of_two else math.ceil(per_iter_outputs / r)
        rq_dsp = rq_units * REQUANT_DSP[requant]
        dsp = math.ceil(mults * dsp_per_mult) + rq_dsp
        in_luts = max(_operand_bits(layer, tensors)) <= LUT_MULT_MAX_BITS
        dsp_rules = {"dsp_one_per_product": mults + rq_dsp, "dsp_hls4ml_rule": (0 if in_luts else mults) + rq_dsp}
        ii = iterations * r
        kind = None if rq is None else "power_of_two" if rq.power_of_two else requant
        luts = _luts(mults, max(1, math.ceil(per_iter_outputs / r)), _operand_bits(layer, tensors)[0], kind)
    elif isinstance(layer, ir.Pool):
        taps = layer.kernel[0] * layer.kernel[1]
        ii = y.size  # pool2d is pipelined at II = 1 (no multipliers to share)
        cycles = ii + _pipeline_depth(taps)
        dsp = 0 if layer.mode == "max" or (layer.requant and layer.requant.power_of_two) else REQUANT_DSP[requant]
    elif isinstance(layer, ir.Add):
        ii = y.size * r
        cycles = ii + 4
        dsp = 2 * REQUANT_DSP[requant]
    elif isinstance(layer, (ir.Elementwise, ir.Concat)):
        ii = math.ceil(y.size / 1) if isinstance(layer, ir.Concat) else r
        cycles = ii + 3
        dsp = 0 if isinstance(layer, ir.Concat) else math.ceil(y.size / r) * REQUANT_DSP[requant]
    elif isinstance(layer, ir.Resize):  # one output per iteration: 6 weight multiplies + the requantization
        ii = y.size * r
        cycles, dsp = ii + 4, 6 + REQUANT_DSP[requant]
    elif isinstance(layer, ir.Gather):  # one element copied per cycle
        ii, cycles, dsp = y.size, y.size + 2, 0
    elif isinstance(layer, ir.Lookup):  # table reads, unrolled by size / R
        ii, cycles, dsp = r, r + 2, 0
    else:  # reshape: wires
        ii, cycles, dsp = 1, 1, 0
    if not isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        luts = {"lut": None, "lut_products_in_fabric": None}  # not modelled: pooling, adds, lookups, wires
    if not isinstance(layer, (ir.Conv, ir.Dense)):
        dsp_rules = {"dsp_one_per_product": dsp, "dsp_hls4ml_rule": dsp}
    act_bits = 32 if y.dtype == "int32" else 8
    return {
        "layer": layer.name, "kind": layer.kind, "output_shape": list(y.shape), "reuse_factor": r,
        "macs": layer.macs(tensors), "multipliers": mults, "dsp": dsp, **dsp_rules, **luts,
        "bram_18k_weights": _weight_bram(layer, tensors),
        "bram_18k_activations": _activation_bram(y, act_bits),
        "activation_register_bits": y.size * act_bits if y.size < PARTITION_THRESHOLD else 0,
        "cycles": cycles, "ii_cycles": ii,
    }


def estimate(graph: ir.Graph, *, clock_period_ns: float, io_type: str, requant: str, part: str,
             resources: Resources, dsp_per_multiplier: float = 1.0) -> dict[str, Any]:
    """Per-layer and total estimates against the part's resources."""
    layers = [layer_estimate(layer, graph.tensors, requant, dsp_per_multiplier) for layer in graph.layers]
    cycles = sum(layer["cycles"] for layer in layers)
    # DATAFLOW: a new sample may start when the slowest layer is free again
    ii = max((layer["ii_cycles"] for layer in layers), default=1)
    dsp = sum(layer["dsp"] for layer in layers)
    bram = sum(layer["bram_18k_weights"] + layer["bram_18k_activations"] for layer in layers)
    fits = {"dsp": dsp <= resources.dsp, "bram_18k": bram <= resources.bram_18k}
    return {
        "label": "ESTIMATE (analytical formulas, not synthesis; see docs/fpga-hls.md)",
        "part": part, "clock_period_ns": clock_period_ns, "io_type": io_type,
        "layers": layers,
        "total": {
            "macs": sum(layer["macs"] for layer in layers),
            "multipliers": sum(layer["multipliers"] for layer in layers),
            "dsp": dsp, "bram_18k": bram,
            "dsp_one_per_product": sum(layer["dsp_one_per_product"] for layer in layers),
            "dsp_hls4ml_rule": sum(layer["dsp_hls4ml_rule"] for layer in layers),
            "lut_datapath": sum(layer["lut"] or 0 for layer in layers),
            "lut_datapath_products_in_fabric": sum(layer["lut_products_in_fabric"] or 0 for layer in layers),
            "activation_register_bits": sum(layer["activation_register_bits"] for layer in layers),
            "latency_cycles": cycles, "latency_us": cycles * clock_period_ns / 1000.0,
            "ii_cycles": ii, "throughput_per_s": 1e9 / (ii * clock_period_ns),
        },
        "part_resources": {"dsp": resources.dsp, "bram_18k": resources.bram_18k, "lut": resources.lut, "ff": resources.ff},
        "utilization": {"dsp": dsp / max(resources.dsp, 1), "bram_18k": bram / max(resources.bram_18k, 1)},
        "fits": all(fits.values()),
        "over": [k for k, ok in fits.items() if not ok],
        "not_estimated": ["FF", "LUT outside the Conv/Dense datapaths (control, address, FIFOs, pooling)"],
        "lut_basis": "LUT6 of the Conv/Dense datapaths (products, int32 adder trees, accumulators, requantizers), "
                     "fitted to yosys 0.23 synth_xilinx counts (tools/hls_lut_bench.py); lut: products in DSPs, "
                     "lut_products_in_fabric: products built in LUTs (hls4ml's rule for < 9-bit operands)",
        "dsp_basis": {
            "dsp": f"{dsp_per_multiplier:g} DSP per multiplier (the target's dsp_per_multiplier"
                   + ("; two int8 products per DSP48E2: BEST CASE, WP486 packing" if dsp_per_multiplier < 1 else "") + ")",
            "dsp_one_per_product": "one DSP per multiplier (no packing)",
            "dsp_hls4ml_rule": "hls4ml's rule: products of operands < 9 bits are built in LUTs (0 DSP)",
        },
        "activation_storage": f"arrays under {PARTITION_THRESHOLD} elements are registers (build_prj.tcl "
                              "config_array_partition -complete_threshold); larger ones ping-pong BRAM",
    }


def format_table(est: dict[str, Any]) -> str:
    """Markdown table of the estimate (used in the project README and the bench)."""
    lines = [f"**{est['label']}** -- part `{est['part']}`, clock {est['clock_period_ns']:g} ns, {est['io_type']}", "",
             "| layer | kind | output | R | MACs | mults | DSP | BRAM18 (w+act) | cycles |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for la in est["layers"]:
        lines.append(f"| {la['layer']} | {la['kind']} | {'x'.join(map(str, la['output_shape']))} | {la['reuse_factor']} | "
                     f"{la['macs']} | {la['multipliers']} | {la['dsp']} | {la['bram_18k_weights']}+{la['bram_18k_activations']} | "
                     f"{la['cycles']} |")
    t, p = est["total"], est["part_resources"]
    lines += ["", f"Total: {t['macs']} MACs, {t['multipliers']} multipliers, DSP {t['dsp']} / {p['dsp']} "
                  f"({100 * est['utilization']['dsp']:.1f} %), BRAM18 {t['bram_18k']} / {p['bram_18k']} "
                  f"({100 * est['utilization']['bram_18k']:.1f} %); latency {t['latency_cycles']} cycles = "
                  f"{t['latency_us']:.2f} us; II {t['ii_cycles']} cycles. DSP by rule: one per product "
                  f"{t['dsp_one_per_product']}, hls4ml (< 9-bit products in LUTs) {t['dsp_hls4ml_rule']}. "
                  + ("Fits the part." if est["fits"] else f"DOES NOT FIT the part: {', '.join(est['over'])} over budget.")]
    return "\n".join(lines)
