"""The yosys side of the HLS LUT estimate: Verilog of one layer's datapath, synthesized to count LUTs.

No open HLS compiler takes edgekd's C++ (no Vitis, Bambu or XLS here), so the LUT coefficients in
``estimate.py`` come from yosys ``synth_xilinx`` runs of the datapath the HLS templates describe for one pipeline
iteration of a Conv/Dense layer at reuse factor R: M parallel ``(x - zero point) x weight`` products, summed into G
int32 accumulators (G = outputs finished per cycle), each followed by the requantizer of ``edgekd_nnet.h``
(fixed point: ``(acc * m) >> s`` with round-half-to-even, + zero point, clamp to int8). Weights and the channel
multiplier are ports (they come from ROM/BRAM indexed by the reuse counter, so synthesis cannot fold them).
Not modelled: the reuse counter's address logic and the ROM read muxes, DATAFLOW FIFOs and control — the
calibration bench (``tools/hls_lut_bench.py``) measures what the model leaves out on whole layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ACC_BITS = 32  # accum_t in edgekd_nnet.h
MULT_BITS = 31  # the fixed-point channel multiplier
SHIFT = 24  # a typical right shift; a constant here, so the shifter is wires


@dataclass(frozen=True)
class Datapath:
    """One pipeline iteration: ``products`` multipliers summed into ``groups`` int32 accumulators."""

    products: int
    groups: int
    x_bits: int = 9  # (x - zero point): a 9-bit signed difference unless the input is int8 with zero point 0
    w_bits: int = 8

    def __post_init__(self) -> None:
        if self.products < 1 or not 1 <= self.groups <= self.products:
            raise ValueError(f"need 1 <= groups <= products, got {self.groups} groups of {self.products} products")


def _group_sum(g: int, lo: int, hi: int) -> str:
    terms = " + ".join(f"p[{i}]" for i in range(lo, hi))
    return f"    always @(posedge clk) begin sum[{g}] <= {terms}; acc[{g}] <= first ? sum[{g}] : acc[{g}] + sum[{g}]; end"


def _requantizer(g: int, path: Datapath) -> list[str]:
    out = f"y[{8 * g + 7}:{8 * g}]"
    if path.requant == "power_of_two":  # a shift by a constant: rounding and the clamp only
        scaled = f"(acc[{g}] + (32'sd1 <<< {SHIFT - 1})) >>> {SHIFT}"
        return [f"    wire signed [{ACC_BITS - 1}:0] r{g} = {scaled};",
                f"    always @(posedge clk) {out} <= r{g} > 127 ? 8'sd127 : r{g} < -128 ? -8'sd128 : r{g}[7:0];"]
    wide = ACC_BITS + MULT_BITS
    return [
        f"    reg signed [{wide - 1}:0] prod{g};",
        f"    always @(posedge clk) prod{g} <= acc[{g}] * $signed(m[{MULT_BITS * g + MULT_BITS - 1}:{MULT_BITS * g}]);",
        f"    wire signed [{wide - SHIFT - 1}:0] q{g} = prod{g} >>> {SHIFT};",
        f"    wire half{g} = prod{g}[{SHIFT - 1}], rest{g} = |prod{g}[{SHIFT - 2}:0];",
        f"    wire signed [{wide - SHIFT - 1}:0] r{g} = q{g} + (half{g} & (rest{g} | q{g}[0]));  // half to even",
        f"    wire signed [{wide - SHIFT - 1}:0] z{g} = r{g} + $signed(zp);",
        f"    always @(posedge clk) {out} <= z{g} > 127 ? 8'sd127 : z{g} < -128 ? -8'sd128 : z{g}[7:0];",
    ]


def lanes_verilog(path: Datapath, top: str) -> str:
    """The products and accumulators as a Verilog module named ``top`` (every stage registered).

    Each product is computed at its natural width (x_bits + w_bits) and sign-extended into the int32 sum: written
    into a 32-bit register directly, Verilog's context-determined width would build a 32 x 32 multiplier."""
    m, g = path.products, path.groups
    per_group = math.ceil(m / g)
    pw = path.x_bits + path.w_bits
    lines = [
        f"// edgekd HLS datapath for the LUT calibration: {m} products into {g} accumulators",
        f"module {top} (input clk, input first, input signed [{m * path.x_bits - 1}:0] x,",
        f"    input signed [{m * path.w_bits - 1}:0] w, output [{g * ACC_BITS - 1}:0] y);",
        f"    reg signed [{pw - 1}:0] p [0:{m - 1}];",
        f"    reg signed [{ACC_BITS - 1}:0] sum [0:{g - 1}];",
        f"    reg signed [{ACC_BITS - 1}:0] acc [0:{g - 1}];",
        "    integer i;",
        f"    always @(posedge clk) for (i = 0; i < {m}; i = i + 1)",
        f"        p[i] <= $signed(x[i * {path.x_bits} +: {path.x_bits}]) * $signed(w[i * {path.w_bits} +: {path.w_bits}]);",
    ]
    for group in range(g):
        lo, hi = group * per_group, min(m, (group + 1) * per_group)
        terms = " + ".join(f"{{{{{ACC_BITS - pw}{{p[{i}][{pw - 1}]}}}}, p[{i}]}}" for i in range(lo, hi)) or "0"
        lines += [f"    always @(posedge clk) begin sum[{group}] <= {terms};",
                  f"        acc[{group}] <= first ? sum[{group}] : acc[{group}] + sum[{group}]; end",
                  f"    assign y[{ACC_BITS * group + ACC_BITS - 1}:{ACC_BITS * group}] = acc[{group}];"]
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def requant_verilog(requant: str, top: str) -> str:
    """One requantizer of ``edgekd_nnet.h`` as a Verilog module named ``top``: int32 accumulator in, int8 out."""
    lines = [f"// edgekd HLS requantizer for the LUT calibration: {requant}",
             f"module {top} (input clk, input signed [{ACC_BITS - 1}:0] acc, input [{MULT_BITS - 1}:0] m,",
             "    input signed [7:0] zp, output reg signed [7:0] y);"]
    if requant == "power_of_two":  # a shift by a constant: rounding and the clamp only
        lines += [f"    wire signed [{ACC_BITS - 1}:0] r = (acc + (32'sd1 <<< {SHIFT - 1})) >>> {SHIFT};",
                  "    wire signed [31:0] z = r + zp;"]
    else:
        wide = ACC_BITS + MULT_BITS
        lines += [f"    reg signed [{wide - 1}:0] prod;",
                  "    always @(posedge clk) prod <= acc * $signed({1'b0, m});",
                  f"    wire signed [{wide - SHIFT - 1}:0] q = prod >>> {SHIFT};",
                  f"    wire half = prod[{SHIFT - 1}], rest = |prod[{SHIFT - 2}:0];",
                  f"    wire signed [{wide - SHIFT - 1}:0] r = q + (half & (rest | q[0]));  // half to even",
                  f"    wire signed [{wide - SHIFT - 1}:0] z = r + zp;"]
    lines += ["    always @(posedge clk) y <= z > 127 ? 8'sd127 : z < -128 ? -8'sd128 : z[7:0];", "endmodule"]
    return "\n".join(lines) + "\n"
