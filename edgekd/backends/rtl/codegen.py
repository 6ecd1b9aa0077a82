"""Writer: HLS front-end IR -> the folded int8 engine's layer table, ROM images and Verilog configuration.

The engine (``templates/engine.v``) is the same for every model; a model is its layer table
(``edgekd_layers.vh``: one row of constants per compute layer), its sizes (``edgekd_config.vh``),
the weight ROM (``weights.hex``: one P-lane word per output-channel group and tap) and the channel
ROM (``channels.hex``: bias and right shift per output channel). Power-of-two scales make every
requantization ``clamp(rne((acc + bias) / 2^s))``: the integer result ONNX Runtime computes in float32.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.backends.hls import ir
from edgekd.errors import BuildError

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENGINE = "engine.v"
TESTBENCH = "tb.v"
FLUSH_EXTRA = 13  # engine.v: FLUSH = P + 13 cycles between a layer's last tap and its last write
MULT_BITS = 32  # requantization multiplier width when a scale is not a power of two (the IR's 31-bit fixed point)
HINT_NUMERICS = "quantize for an rtl target (power-of-two scales, zero point 0: the rtl backend asks the quantize pass for them)"

#: the table's fields, in the order edgekd_layers.vh assigns them (1-bit flags first)
FLAGS = ("pool", "src", "in_signed", "last", "rq")
FIELDS = ("ngrp_m1", "lanes", "lanes_last", "icn_m1", "kh_m1", "kw_m1", "h", "w", "hw", "oh_m1", "ow_m1", "ohw", "sh", "sw",
          "shw", "ih0", "iw0", "ihw0", "taps", "taps_m1", "slots_m1", "wbase", "gout", "gch", "chbase", "lo", "hi")
_MINUS_ONE = ("ngrp", "icn", "kh", "kw", "oh", "ow", "taps", "slots")


@dataclass
class LayerRow:
    """One compute layer of the table, with what it costs (cycles are exact: the engine has no stalls)."""

    name: str
    kind: str  # conv | dense | maxpool
    values: dict[str, int]
    macs: int

    @property
    def run_cycles(self) -> int:
        v = self.values
        return v["ngrp"] * v["oh"] * v["ow"] * v["slots"]


@dataclass
class EnginePlan:
    lanes: int
    acc_bits: int
    rows: list[LayerRow] = field(default_factory=list)
    weight_words: list[int] = field(default_factory=list)
    channel_words: list[int] = field(default_factory=list)
    buffer_depth: list[int] = field(default_factory=lambda: [1, 1])
    in_size: int = 0
    out_size: int = 0
    out_buffer: int = 0
    mult_bits: int = 0  # 0: every scale a power of two (pure shifts, exact vs ORT); else multiplier + shift
    input: ir.Tensor | None = None
    output: ir.Tensor | None = None

    def layer_cycles(self, row: LayerRow) -> int:
        """One layer's cycles in the engine's state machine: TABLE, LOAD, RUN, FLUSH (FLUSH_EXTRA + P + 1)."""
        return 2 + row.run_cycles + self.lanes + FLUSH_EXTRA + 1

    def cycles(self) -> int:
        """Cycles from start to done (the start cycle, then every layer)."""
        return 1 + sum(self.layer_cycles(row) for row in self.rows)

    def bits(self) -> dict[str, int]:
        """Widths of the engine's buses and counters (edgekd_config.vh)."""
        depth = max(self.buffer_depth)
        biggest = max([depth, len(self.weight_words), len(self.channel_words) + self.lanes]
                      + [abs(v) for row in self.rows for v in row.values.values()]
                      + [row.values["gout"] * row.values["ngrp"] for row in self.rows])
        return {"AW": max(1, (depth - 1).bit_length()), "WAW": max(1, (max(1, len(self.weight_words)) - 1).bit_length()),
                "CAW": max(1, (max(1, len(self.channel_words)) - 1).bit_length()),
                "CW": max(10, (2 * biggest).bit_length() + 1), "LIW": max(1, (len(self.rows) - 1).bit_length())}


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of a tensor: a vector is C x 1 x 1, a 1D signal C x 1 x W."""
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 2:
        return shape[0], 1, shape[1]
    return shape[0], shape[1], shape[2]


def _check_tensor(t: ir.Tensor, where: str) -> None:
    if t.dtype not in ("int8", "uint8") or t.zero_point != 0:
        raise BuildError(f"tensor {t.name} is {t.dtype} with zero point {t.zero_point}; the rtl engine needs 8-bit "
                         "activations with zero point 0", where=where, hint=HINT_NUMERICS)


def power_of_two_shifts(rq: ir.Requant, where: str) -> np.ndarray | None:
    """Right shifts s with scale = 2^-s per output channel, or None when a scale is not a power of two."""
    if not rq.power_of_two:
        return None
    shifts = -np.round(np.log2(rq.scale.astype(np.float64))).astype(np.int64)
    if shifts.min() < 0:
        raise BuildError(f"requantization scale {float(rq.scale.max()):g} > 1 (a left shift) is not implemented",
                         where=where, hint="this happens only when an output scale is finer than acc scale; recalibrate")
    return shifts


def _requant_words(rq: ir.Requant, n_out: int, acc_bits: int, multiply: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, right shift) per output channel: (1, s) for power-of-two scales (a shift >= acc_bits always
    gives 0, so it is clamped there), else the IR's 31-bit fixed-point pair (within 1 LSB of ORT's float32)."""
    shifts = power_of_two_shifts(rq, where)
    if not multiply and shifts is not None:
        return np.ones(n_out, np.int64), np.broadcast_to(np.minimum(shifts, acc_bits), (n_out,))
    return np.broadcast_to(rq.multiplier, (n_out,)), np.broadcast_to(rq.shift, (n_out,))


def accumulator_bits(graph: ir.Graph) -> int:
    """Signed bits of the worst-case |acc + bias| of every MAC layer (at least the 18 of one product)."""
    worst = 0
    for layer in graph.layers:
        if isinstance(layer, (ir.Conv, ir.Dense)):
            x = graph.tensors[layer.inputs[0]]
            xmax = 128 if x.dtype == "int8" else 255
            w = np.abs(layer.weights.reshape(layer.weights.shape[0], -1).astype(np.int64))
            worst = max(worst, int((w.sum(1) * xmax + np.abs(layer.bias.astype(np.int64))).max()))
    return max(18, worst.bit_length() + 1)


class _Planner:
    def __init__(self, graph: ir.Graph, lanes: int, where: str) -> None:
        self.graph = graph
        self.where = where
        self.plan = EnginePlan(lanes, accumulator_bits(graph))

    def run(self) -> EnginePlan:
        g, plan = self.graph, self.plan
        requants = [la.requant for la in g.layers if isinstance(la, (ir.Conv, ir.Dense)) and la.requant is not None]
        factors = [int(la.rescale[0].multiplier) for la in g.layers if isinstance(la, ir.Elementwise) and la.rescale]
        if any(power_of_two_shifts(rq, self.where) is None for rq in requants) or any(f <= 0 or f & (f - 1) for f in factors):
            plan.mult_bits = MULT_BITS
        if g.float_output:
            raise BuildError("the graph output is raw int32 accumulators (no QuantizeLinear on the output)", where=self.where,
                             hint="quantize the output too (the edgekd quantize pass does)")
        _check_tensor(g.input, self.where)
        current, buf = g.input.name, 0
        plan.input, plan.output = g.input, g.output
        plan.in_size, plan.out_size = g.input.size, g.output.size
        plan.buffer_depth[0] = g.input.size
        for layer in g.layers:
            where = f"{self.where} layer {layer.name} ({layer.kind})"
            if layer.inputs[0] != current or len(layer.inputs) != 1:
                raise BuildError("the rtl engine runs a chain of single-input layers; this layer reads "
                                 f"{', '.join(layer.inputs)}", where=where, hint="Add/Concat (skip connections) are hls-only")
            current = layer.output
            if isinstance(layer, ir.Reshape):
                continue  # the C-order buffer is unchanged
            out = g.tensors[layer.output]
            _check_tensor(out, where)
            values, macs = self._row(layer, where)
            values.update(src=buf, in_signed=int(g.tensors[layer.inputs[0]].dtype == "int8"), last=0)
            kind = {ir.Dense: "dense", ir.Pool: "maxpool", ir.Elementwise: "rescale"}.get(type(layer), layer.kind)
            plan.rows.append(LayerRow(layer.name, kind, values, macs))
            buf ^= 1
            plan.buffer_depth[buf] = max(plan.buffer_depth[buf], out.size)
        if not plan.rows:
            raise BuildError("the model has no compute layer", where=self.where)
        plan.rows[-1].values["last"] = 1
        for row in plan.rows:
            row.values.update({f"{k}_m1": row.values[k] - 1 for k in _MINUS_ONE})
        plan.out_buffer = buf
        return plan

    def _row(self, layer: ir.Layer, where: str) -> tuple[dict[str, int], int]:
        if isinstance(layer, ir.Pool):
            return self._pool_row(layer, where), 0
        if isinstance(layer, ir.Elementwise):
            return self._rescale_row(layer, where), 0
        if isinstance(layer, (ir.Conv, ir.Dense)):
            return self._mac_row(layer, where), layer.macs(self.graph.tensors)
        raise BuildError(f"{layer.kind} layers are not implemented in the rtl engine", where=where,
                         hint="supported: Conv (groups 1, dilation 1), Gemm/MatMul, MaxPool, Relu/Clip (folded), Flatten/Reshape")

    def _geometry(self, layer: ir.Layer, kernel: tuple[int, int], stride: tuple[int, int],
                  pads: tuple[int, int, int, int]) -> dict[str, int]:
        c, h, w = _shape3(self.graph.tensors[layer.inputs[0]].shape)
        _, oh, ow = _shape3(self.graph.tensors[layer.output].shape)
        return {"kh": kernel[0], "kw": kernel[1], "h": h, "w": w, "hw": h * w, "oh": oh, "ow": ow, "ohw": oh * ow,
                "sh": stride[0], "sw": stride[1], "shw": stride[0] * w, "ih0": -pads[0], "iw0": -pads[1],
                "ihw0": -pads[0] * w, "c": c}

    def _pool_row(self, layer: ir.Pool, where: str) -> dict[str, int]:
        x, y = self.graph.tensors[layer.inputs[0]], self.graph.tensors[layer.output]
        if layer.mode != "max":
            raise BuildError("average pooling is not implemented in the rtl engine", where=where,
                             hint="use MaxPool, or the hls backend")
        if (x.scale, x.zero_point, x.dtype) != (y.scale, y.zero_point, y.dtype):
            raise BuildError("MaxPool changes the quantization parameters", where=where, hint=HINT_NUMERICS)
        v = self._geometry(layer, layer.kernel, layer.stride, layer.pads)
        c = v.pop("c")
        lo, hi = ir.INT_RANGES[y.dtype]
        taps = v["kh"] * v["kw"]
        return {**v, "pool": 1, "rq": 0, "ngrp": c, "lanes": 1, "lanes_last": 1, "icn": 1, "taps": taps,
                "slots": max(taps, 2), "wbase": 0, "gout": v["ohw"], "gch": v["hw"], "chbase": 0, "lo": lo, "hi": hi}

    def _rescale_row(self, layer: ir.Elementwise, where: str) -> dict[str, int]:
        """A separate Relu/Clip between Q/DQ pairs: every element rescaled (x * m / 2^s) and clamped. Runs as a 1x1
        pool row over the flat tensor whose one channel-table entry holds m and s (bias 0)."""
        plan = self.plan
        if len(layer.rescale) != 1 or layer.rescale[0].in_zero_point != 0 or layer.zero_point != 0:
            raise BuildError("the rescale needs one input with zero point 0", where=where, hint=HINT_NUMERICS)
        mult, shift = int(layer.rescale[0].multiplier), int(layer.shift)
        if plan.mult_bits == 0:  # pure shifts: the factor must be 2^-k
            if mult <= 0 or mult & (mult - 1) or shift < mult.bit_length() - 1:
                raise BuildError(f"rescale factor {mult} / 2^{shift} is not 2^-k", where=where, hint=HINT_NUMERICS)
            mult, shift = 1, min(shift - (mult.bit_length() - 1), plan.acc_bits)
        chbase = len(plan.channel_words)
        plan.channel_words.append(((mult << 6) | shift) << plan.acc_bits)
        size = self.graph.tensors[layer.output].size
        v = {"kh": 1, "kw": 1, "h": 1, "w": size, "hw": size, "oh": 1, "ow": size, "ohw": size, "sh": 1, "sw": 1, "shw": size,
             "ih0": 0, "iw0": 0, "ihw0": 0}
        return {**v, "pool": 1, "rq": 1, "ngrp": 1, "lanes": 1, "lanes_last": 1, "icn": 1, "taps": 1, "slots": 2, "wbase": 0,
                "gout": size, "gch": size, "chbase": chbase, "lo": layer.lo, "hi": layer.hi}

    def _mac_row(self, layer: ir.Conv | ir.Dense, where: str) -> dict[str, int]:
        plan, p = self.plan, self.plan.lanes
        if isinstance(layer, ir.Conv):
            if layer.groups != 1 or layer.dilation != (1, 1):
                raise BuildError(f"Conv with group={layer.groups}, dilation={list(layer.dilation)} is not implemented in "
                                 "the rtl engine", where=where, hint="use group=1, dilation=1, or the hls backend")
            weights = layer.weights
            v = self._geometry(layer, weights.shape[2:], layer.stride, layer.pads)
        else:
            weights = layer.weights.reshape(*layer.weights.shape, 1, 1)
            v = self._geometry(layer, (1, 1), (1, 1), (0, 0, 0, 0))
            v.update(c=weights.shape[1], h=1, w=1, hw=1, shw=1)
        if layer.requant is None or weights.dtype != np.int8:
            raise BuildError("the rtl engine needs int8 weights and a quantized output", where=where, hint=HINT_NUMERICS)
        n_out, c = weights.shape[0], v.pop("c")
        ngrp, taps = math.ceil(n_out / p), c * v["kh"] * v["kw"]
        mults, shifts = _requant_words(layer.requant, n_out, plan.acc_bits, plan.mult_bits > 0, where)
        wbase, chbase = len(plan.weight_words), len(plan.channel_words)
        flat = weights.reshape(n_out, taps).astype(np.int64) & 0xFF
        padded = np.zeros((ngrp * p, taps), np.int64)
        padded[:n_out] = flat
        lane_shift = (8 * np.arange(p, dtype=object)).reshape(1, p, 1)
        words = (padded.reshape(ngrp, p, taps).astype(object) << lane_shift).sum(axis=1)  # [ngrp, taps]
        plan.weight_words.extend(int(w) for w in words.reshape(-1))
        mask = (1 << plan.acc_bits) - 1
        for oc in range(ngrp * p):
            bias, shift, mult = (int(layer.bias[oc]), int(shifts[oc]), int(mults[oc])) if oc < n_out else (0, 0, 0)
            plan.channel_words.append((((mult << 6) | shift) << plan.acc_bits) | (bias & mask))
        rq = layer.requant
        return {**v, "pool": 0, "rq": 1, "ngrp": ngrp, "lanes": p, "lanes_last": n_out - (ngrp - 1) * p, "icn": c, "taps": taps,
                "slots": max(taps, p + 1), "wbase": wbase, "gout": p * v["ohw"], "gch": 0, "chbase": chbase,
                "lo": rq.lo, "hi": rq.hi}


def plan_engine(graph: ir.Graph, lanes: int, where: str) -> EnginePlan:
    """The layer table and ROM images for ``graph``; a BuildError names the first layer the engine cannot run."""
    if not 1 <= lanes <= 64:
        raise BuildError(f"lanes must be in 1..64, got {lanes}", where=where)
    return _Planner(graph, lanes, where).run()


def _hex_lines(words: list[int], bits: int) -> str:
    digits = max(1, math.ceil(bits / 4))
    return "".join(f"{w:0{digits}x}\n" for w in (words or [0]))


def write_rtl(plan: EnginePlan, out: Path) -> list[str]:
    """engine.v, tb.v, the generated includes and the ROM images into ``out``; returns the file names."""
    out.mkdir(parents=True, exist_ok=True)
    bits = plan.bits()
    defines = {"P": plan.lanes, "ACC_W": plan.acc_bits, **bits, "BUF0": plan.buffer_depth[0], "BUF1": plan.buffer_depth[1],
               "WDEPTH": max(1, len(plan.weight_words)), "CDEPTH": max(1, len(plan.channel_words)),
               "OUT_BUF": plan.out_buffer, "MULT_W": plan.mult_bits, "IN_SIZE": plan.in_size, "OUT_SIZE": plan.out_size,
               "NL": len(plan.rows)}
    config = "`ifndef EKD_CONFIG_VH\n`define EKD_CONFIG_VH\n" + "".join(f"`define EKD_{k} {v}\n" for k, v in defines.items())
    (out / "edgekd_config.vh").write_text("// generated by edgekd: engine sizes\n" + config + "`endif\n")
    (out / "edgekd_layers.vh").write_text(_layer_table(plan))
    (out / "weights.hex").write_text(_hex_lines(plan.weight_words, 8 * plan.lanes))
    (out / "channels.hex").write_text(_hex_lines(plan.channel_words, plan.acc_bits + 6 + plan.mult_bits))
    for name in (ENGINE, TESTBENCH):
        shutil.copyfile(TEMPLATES / name, out / name)
    return [ENGINE, TESTBENCH, "edgekd_config.vh", "edgekd_layers.vh", "weights.hex", "channels.hex"]


def _layer_table(plan: EnginePlan) -> str:
    def assign(row: LayerRow) -> str:
        flags = " ".join(f"t_{k} <= 1'b{row.values[k]};" for k in FLAGS)
        nums = " ".join(f"t_{k} <= {row.values[k]};" for k in FIELDS)
        return f"{flags}\n                {nums}"

    cases = "".join(f"            {i}: begin  // {row.name} ({row.kind})\n                {assign(row)}\n            end\n"
                    for i, row in enumerate(plan.rows))
    return ("// generated by edgekd: one row per compute layer (reshapes are free: the buffer is C-order)\n"
            "    always @(posedge clk) if (state == S_TABLE) begin\n        case (li)\n" + cases +
            f"            default: begin\n                {assign(plan.rows[0])}\n            end\n        endcase\n    end\n")
