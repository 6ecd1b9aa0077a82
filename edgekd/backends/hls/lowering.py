"""Lowering: a pending float op and its QuantizeLinear become one integer layer of the IR.

``GraphBuilder`` holds the IR under construction (tensors, layers and their C++ names). The
front end walks the ONNX graph on top of it and calls ``finalize`` when a float result
(``values.Pending``) meets its QuantizeLinear, or the float graph output. The arithmetic
follows ONNX Runtime's int8 kernels (float32 scales, half-to-even rounding), so the C++
matches ORT bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.backends.hls import ir
from edgekd.backends.hls.values import Act, Pending, QConst
from edgekd.errors import BuildError

_F32 = np.float32
RESIZE_FRAC_BITS = 8  # bilinear weights in 1/256: exact for the 2x and 4x upsampling weights (1/4, 3/4, 1/8, ...)


def c_name(name: str) -> str:
    """A C++ identifier for an ONNX name."""
    text = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "t"
    return text if not text[0].isdigit() else f"n{text}"


@dataclass(frozen=True)
class _Output:
    """Where a finalized op writes: its layer, the ONNX output name and quantization, the integer clamp range."""

    layer: str
    tensor: str
    scale: float
    zero_point: int
    dtype: str | None  # None: int32 accumulators for a float graph output
    lo: int
    hi: int


class GraphBuilder:
    """The IR being built: tensors and layers with unique C++ names, and the lowering of pending ops into layers."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.tensors: dict[str, ir.Tensor] = {}
        self.layers: list[ir.Layer] = []
        self.names: set[str] = set()
        self.layer_names: set[str] = set()

    # ------------------------------------------------------------------ names and tensors

    def err(self, node: Any, message: str, hint: str | None = None) -> BuildError:
        return BuildError(message, where=f"{self.where} node {node.name or node.output[0]!r} ({node.op_type})", hint=hint)

    def unique(self, name: str, names: set[str] | None = None) -> str:
        """A fresh C++ name; tensors and layers have separate namespaces (layers only appear prefixed)."""
        names = self.names if names is None else names
        base = c_name(name)
        out, i = base, 1
        while out in names:
            out, i = f"{base}_{i}", i + 1
        names.add(out)
        return out

    def layer_name(self, name: str) -> str:
        return self.unique(name, self.layer_names)

    def new_tensor(self, name: str, shape: tuple[int, ...], dtype: str, scale: float, zp: int) -> str:
        tname = self.unique(name)
        self.tensors[tname] = ir.Tensor(tname, tuple(int(d) for d in shape), dtype, float(_F32(scale)), int(zp))
        return tname

    def act_shape(self, a: Act) -> tuple[int, ...]:
        return self.tensors[a.tensor].shape

    def reshape_to(self, node: Any, shape: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, ...]:
        if int(np.prod(new)) != int(np.prod(shape)):
            raise self.err(node, f"cannot reshape {list(shape)} to {list(new)}")
        return new

    def _output_tensor(self, out: _Output, shape: tuple[int, ...], name: str | None = None) -> str:
        return self.new_tensor(out.tensor if name is None else name, shape, out.dtype or "int32", out.scale, out.zero_point)

    # ------------------------------------------------------------------ folding into layers

    def finalize(self, p: Pending, out_name: str, s: float, z: int, dtype: str | None) -> str:
        """Turn a pending float op into an integer layer writing a new tensor (dtype None: int32 accumulators)."""
        if p.op == "concat" and dtype is not None and any(isinstance(a, Pending) for a in p.inputs):
            # ORT: Conv/Gemm in float, Concat, one Q = each part quantized with the Q's parameters, then concatenated
            parts = [Act(self.finalize(a, f"{out_name}_part{i}", s, z, dtype), s, z) if isinstance(a, Pending) else a
                     for i, a in enumerate(p.inputs)]
            p = Pending(p.op, p.node, parts, p.attrs, p.lo, p.hi)
        lo, hi = clamp_range(p, s, z, dtype)
        out = _Output(self.layer_name(p.node), out_name, s, z, dtype, lo, hi)
        if p.op in ("conv", "dense"):
            return self._lower_weighted(p, out)
        if dtype is None:
            raise BuildError(f"the graph output comes from {p.op} without a QuantizeLinear", where=f"{self.where} {p.node}",
                             hint="only Conv/Gemm may feed a float output directly")
        if p.op == "avgpool":
            return self._lower_avgpool(p, out)
        if p.op == "conv_transpose":
            return self._lower_conv_transpose(p, out)
        if p.op == "lut":
            return self._lower_lut(p, out)
        if p.op == "resize":
            return self._lower_resize(p, out)
        return self._lower_rescaled(p, out)

    def float_concat(self, p: Pending, out_name: str) -> tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A Concat as the float graph output with no Q after it (ORT concatenates dequantized values): each part keeps
        its codes -- int8 ones with their scale and zero point, raw int32 accumulators of a Conv/Gemm with its
        per-channel scale and float bias -- copied into one int32 output; the host dequantizes per element."""
        tensors, scales, zps, biases = [], [], [], []
        for i, part in enumerate(p.inputs):
            if isinstance(part, Pending):
                tensor = self.finalize(part, f"{out_name}_part{i}", 1.0, 0, None)
                layer = self.layers[-1]
                shape = self.tensors[tensor].shape
                per_channel = (-1,) + (1,) * (len(shape) - 1)
                scale = np.broadcast_to(np.asarray(layer.out_scale, _F32).reshape(per_channel), shape)
                bias = layer.out_bias if layer.out_bias is not None else np.zeros(shape[0], _F32)
                bias = np.broadcast_to(np.asarray(bias, _F32).reshape(per_channel), shape)
                zp = np.zeros(shape, np.int32)
            else:
                tensor, shape = part.tensor, self.act_shape(part)
                scale, zp, bias = np.full(shape, _F32(part.scale)), np.full(shape, part.zero_point, np.int32), np.zeros(shape, _F32)
            tensors.append(tensor)
            scales.append(scale)
            zps.append(zp)
            biases.append(bias)
        axis = p.attrs["axis"]
        shapes = [self.tensors[t].shape for t in tensors]
        if len({len(sh) for sh in shapes}) != 1 or any(sh[:axis] + sh[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
                                                        for sh in shapes):
            raise BuildError(f"Concat inputs {[list(sh) for sh in shapes]} differ off axis {axis + 1}",
                             where=f"{self.where} {p.node}")
        dequant = tuple(np.concatenate(arrays, axis).reshape(-1) for arrays in (scales, zps, biases))
        out_shape = list(shapes[0])
        out_shape[axis] = sum(sh[axis] for sh in shapes)
        tensor = self.new_tensor(out_name, tuple(out_shape), "int32", 1.0, 0)
        identity = tuple(ir.Rescale(1.0, 0, 1) for _ in tensors)
        self.layers.append(ir.Concat(self.layer_name(p.node), tensors, tensor, axis=axis, rescale=identity, raw=True,
                                     lo=ir.INT_RANGES["int32"][0], hi=ir.INT_RANGES["int32"][1]))
        return tensor, (dequant[0].astype(_F32), dequant[1].astype(np.int32), dequant[2].astype(_F32))

    def _lower_conv_transpose(self, p: Pending, out: _Output) -> str:
        """ORT runs DQ -> float ConvTranspose -> Q: the integer sum is exact, only ORT's float sum may differ (<= 1 LSB)."""
        x, w, groups = p.inputs[0], p.attrs["w"], p.attrs["groups"]
        wc = w.centered()  # [C_in, C_out/groups, kh, kw]
        cin = wc.shape[0]
        xs = self.act_shape(x)
        if cin != xs[0] or cin % groups:
            raise BuildError(f"ConvTranspose weights {list(w.q.shape)} do not fit input {list(xs)} with group={groups}",
                             where=f"{self.where} {p.node}")
        icg = cin // groups
        wt = np.concatenate([wc[g * icg:(g + 1) * icg].transpose(1, 0, *range(2, wc.ndim)) for g in range(groups)])
        one_d = p.attrs["kdims"] == 1
        n_out = wt.shape[0]
        weights = wt.reshape(n_out, icg, 1 if one_d else wt.shape[2], wt.shape[-1])
        sw = np.broadcast_to(w.scale.astype(_F32), (n_out,))
        acc_scale = (_F32(x.scale) * sw).astype(_F32)
        bias = int_bias(p.attrs.get("bias"), acc_scale, n_out)[0]
        requant = ir.Requant.from_scale(acc_scale / _F32(out.scale), out.zero_point, out.lo, out.hi)
        _, h, wdim = ir.as_rank3(xs)
        (pt, pl, pb, pr), (sh, sw_), (dh, dw) = p.attrs["pads"], p.attrs["stride"], p.attrs["dilation"]
        (oph, opw), (kh, kw) = p.attrs["output_padding"], weights.shape[2:]
        oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1
        ow = (wdim - 1) * sw_ - pl - pr + dw * (kw - 1) + opw + 1
        wdt = np.int8 if weights.min() >= -128 and weights.max() <= 127 else np.int16
        tensor = self._output_tensor(out, (n_out, ow) if one_d else (n_out, oh, ow))
        self.layers.append(ir.ConvTranspose(out.layer, [x.tensor], tensor, weights=weights.astype(wdt), bias=bias,
                                            stride=(sh, sw_), pads=(pt, pl, pb, pr), dilation=(dh, dw), groups=groups,
                                            requant=requant))
        return tensor

    def _lower_lut(self, p: Pending, out: _Output) -> str:
        """Sigmoid/HardSigmoid/HardSwish: ORT's float32 result for every input code, quantized as its Q does."""
        x = p.inputs[0]
        lo, hi = ir.INT_RANGES[self.tensors[x.tensor].dtype]
        v = (np.arange(lo, hi + 1) - x.zero_point).astype(_F32) * _F32(x.scale)  # DequantizeLinear
        q = np.rint(activation(p.attrs, v) / _F32(out.scale)) + out.zero_point  # QuantizeLinear, half to even
        table = np.clip(q, out.lo, out.hi).astype(np.int32)
        tensor = self._output_tensor(out, self.act_shape(x))
        self.layers.append(ir.Lookup(out.layer, [x.tensor], tensor, table=table, function=p.attrs["function"]))
        return tensor

    def _lower_resize(self, p: Pending, out: _Output) -> str:
        """Bilinear Resize, which ORT runs in float (DQ -> Resize -> Q): float32 weights as ORT's, or integer
        weights in 2**-frac units (the fixed-point path, within 1 LSB)."""
        x, frac = p.inputs[0], RESIZE_FRAC_BITS

        def ints(w: np.ndarray) -> np.ndarray:
            first = np.rint(w[:, 0].astype(np.float64) * 2**frac).astype(np.int32)
            return np.stack([first, 2**frac - first], 1).astype(np.int32)

        ratio = _F32(_F32(x.scale) / _F32(out.scale))
        requant = ir.Requant.from_scale(np.array([ratio / _F32(2.0 ** (2 * frac))], _F32), out.zero_point, out.lo, out.hi)
        tensor = self._output_tensor(out, p.attrs["out_shape"])
        self.layers.append(ir.Resize(out.layer, [x.tensor], tensor, y_index=p.attrs["y_index"], x_index=p.attrs["x_index"],
                                     wy=p.attrs["wy"], wx=p.attrs["wx"], wy_int=ints(p.attrs["wy"]),
                                     wx_int=ints(p.attrs["wx"]), frac_bits=frac, requant=requant,
                                     in_scale=float(_F32(x.scale)), out_scale=float(_F32(out.scale))))
        return tensor

    def _lower_weighted(self, p: Pending, out: _Output) -> str:
        """Conv / Gemm / MatMul: zero-point-centered integer weights and an int32 bias in accumulator units."""
        x, w = p.inputs[0], p.attrs["w"]
        n_out = w.q.shape[0] if p.op == "conv" or p.attrs["trans_b"] else w.q.shape[1]
        wc = w.centered()
        if p.op == "dense" and not p.attrs["trans_b"]:
            wc = wc.T
        sw = np.broadcast_to(w.scale.astype(_F32), (n_out,))
        acc_scale = (_F32(x.scale) * sw).astype(_F32)  # ORT: x_scale * w_scale[c] / y_scale in float32
        bias = int_bias(p.attrs.get("bias"), acc_scale, n_out)
        wdt = np.int8 if wc.min() >= -128 and wc.max() <= 127 else np.int16
        epilogue = self._epilogue(p, out, acc_scale, bias, n_out)
        if p.op == "conv":
            return self._conv_layer(p, out, wc, wdt, epilogue)
        return self._dense_layer(p, out, wc, wdt, epilogue)

    def _epilogue(self, p: Pending, out: _Output, acc_scale: np.ndarray, bias: tuple[np.ndarray, np.ndarray | None],
                  n_out: int) -> dict[str, Any]:
        """A weighted layer's bias and output stage: requantization to int8/uint8, or (float graph output) the
        per-channel accumulator scale and the float bias, added after dequantization and not in the accumulator too."""
        if out.dtype is not None:
            requant = ir.Requant.from_scale(acc_scale / _F32(out.scale), out.zero_point, out.lo, out.hi)
            return {"bias": bias[0], "requant": requant, "out_scale": None, "out_bias": None}
        if np.isfinite(p.lo) or np.isfinite(p.hi):
            raise BuildError("a Relu/Clip before a float graph output is not supported", where=f"{self.where} {p.node}",
                             hint="quantize the output (QuantizeLinear/DequantizeLinear) after the activation")
        acc_bias, float_bias = bias
        if float_bias is not None:
            acc_bias = np.zeros(n_out, np.int32)
        return {"bias": acc_bias, "requant": None, "out_scale": acc_scale, "out_bias": float_bias}

    def _conv_layer(self, p: Pending, out: _Output, wc: np.ndarray, wdt: type, epilogue: dict[str, Any]) -> str:
        x, n_out, groups, one_d = p.inputs[0], wc.shape[0], p.attrs["groups"], p.attrs["kdims"] == 1
        xs = self.act_shape(x)
        kh, kw = (1, wc.shape[2]) if one_d else wc.shape[2:]
        weights = wc.reshape(n_out, wc.shape[1], kh, kw).astype(wdt)
        cin, h, wdim = (xs[0], 1, xs[1]) if one_d else xs
        if weights.shape[1] * groups != cin or n_out % groups:
            raise BuildError(f"Conv weights {list(p.attrs['w'].q.shape)} do not fit input {list(xs)} with group={groups}",
                             where=f"{self.where} {p.node}")
        pt, pl, pb, pr = p.attrs["pads"]
        (sh, sw), (dh, dw) = p.attrs["stride"], p.attrs["dilation"]
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (wdim + pl + pr - dw * (kw - 1) - 1) // sw + 1
        tensor = self._output_tensor(out, (n_out, ow) if one_d else (n_out, oh, ow))
        self.layers.append(ir.Conv(out.layer, [x.tensor], tensor, weights=weights, stride=(sh, sw), pads=(pt, pl, pb, pr),
                                   dilation=(dh, dw), groups=groups, **epilogue))
        return tensor

    def _dense_layer(self, p: Pending, out: _Output, wc: np.ndarray, wdt: type, epilogue: dict[str, Any]) -> str:
        x = p.inputs[0]
        if wc.shape[1] != self.act_shape(x)[0]:
            raise BuildError(f"weights {list(p.attrs['w'].q.shape)} do not fit input {list(self.act_shape(x))}",
                             where=f"{self.where} {p.node}")
        tensor = self._output_tensor(out, (wc.shape[0],))
        self.layers.append(ir.Dense(out.layer, [x.tensor], tensor, weights=wc.astype(wdt), **epilogue))
        return tensor

    def _lower_avgpool(self, p: Pending, out: _Output) -> str:
        """AveragePool / GlobalAveragePool / ReduceMean, then the reshapes that stood between it and its Q."""
        x, sy = p.inputs[0], _F32(out.scale)
        kh, kw = p.attrs["kernel"]
        # ORT QLinear(Global)AveragePool: sum(x - zp) * (x_scale / (y_scale * count)), float32
        scales = np.array([_F32(x.scale) / (sy * _F32(n)) for n in range(1, kh * kw + 1)], _F32)
        attrs = {k: v for k, v in p.attrs.items() if k not in ("global", "reshapes")}
        reshapes = p.attrs.get("reshapes", [])
        shape = pool_shape(self.tensors[x.tensor].shape, attrs)
        tensor = self._output_tensor(out, shape, out.tensor + "_pool" if reshapes else None)
        self.layers.append(ir.Pool(out.layer, [x.tensor], tensor, mode="avg",
                                   requant=ir.Requant.from_scale(scales, out.zero_point, out.lo, out.hi),
                                   float_average=not p.attrs.get("global", False), in_scale=float(_F32(x.scale)),
                                   out_scale=float(sy), **attrs))
        return self._append_reshapes(reshapes, tensor, shape, out)

    def _append_reshapes(self, reshapes: list[tuple[Any, Any]], tensor: str, shape: tuple[int, ...], out: _Output) -> str:
        """ReduceMean(keepdims=0), Reshape/Flatten before the Q: relabel the pooled tensor; the last one is the output."""
        for k, (rnode, fn) in enumerate(reshapes):
            shape = self.reshape_to(rnode, shape, fn(shape))
            last = k == len(reshapes) - 1
            flat = self._output_tensor(out, shape, out.tensor if last else rnode.output[0])
            self.layers.append(ir.Reshape(self.layer_name(rnode.name or rnode.output[0]), [tensor], flat))
            tensor = flat
        return tensor

    def _lower_rescaled(self, p: Pending, out: _Output) -> str:
        """Add, Concat and a bare requantization (identity): every input rescaled to the output's scale."""
        rescale, shift = rescales(p.inputs, out.scale)
        common = {"rescale": rescale, "shift": shift, "out_scale": float(_F32(out.scale)), "zero_point": out.zero_point,
                  "lo": out.lo, "hi": out.hi}
        ins = [a.tensor for a in p.inputs]
        if p.op == "add":
            tensor = self._output_tensor(out, self.act_shape(p.inputs[0]))
            self.layers.append(ir.Add(out.layer, ins, tensor, **common))
        elif p.op == "concat":
            shapes = [self.act_shape(a) for a in p.inputs]
            axis = p.attrs["axis"]
            oshape = list(shapes[0])
            oshape[axis] = sum(sh[axis] for sh in shapes)
            tensor = self._output_tensor(out, tuple(oshape))
            self.layers.append(ir.Concat(out.layer, ins, tensor, axis=axis, **common))
        else:
            tensor = self._output_tensor(out, self.act_shape(p.inputs[0]))
            self.layers.append(ir.Elementwise(out.layer, ins, tensor, **common))
        return tensor


def clamp_range(p: Pending, s: float, z: int, dtype: str | None) -> tuple[int, int]:
    """The output's integer range. Q is monotonic, so Q(clip(v, a, b)) = clip(Q(v), Q(a), Q(b)): Relu/Clip fold in."""
    if dtype is None:
        return ir.INT_RANGES["int32"]
    lo, hi = ir.INT_RANGES[dtype]
    sy = _F32(s)
    if np.isfinite(p.lo):
        lo = max(lo, int(np.rint(_F32(p.lo) / sy)) + z)
    if np.isfinite(p.hi):
        hi = min(hi, int(np.rint(_F32(p.hi) / sy)) + z)
    return lo, hi


def int_bias(b: QConst | np.ndarray | None, acc_scale: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Bias as int32 in accumulator units (+ the float bias for float outputs)."""
    if b is None:
        return np.zeros(n_out, np.int32), None
    if isinstance(b, QConst):
        bs = np.broadcast_to(b.scale.astype(_F32), (n_out,))
        vals = b.centered().reshape(n_out)
        if np.array_equal(bs, acc_scale):  # ORT: bias scale = x_scale * w_scale exactly
            return vals.astype(np.int32), (vals * bs).astype(_F32)
        fb = (vals * bs).astype(_F32)
    else:
        fb = b
    return np.rint(fb.astype(np.float64) / acc_scale).astype(np.int32), fb


def activation(attrs: dict[str, Any], v: np.ndarray) -> np.ndarray:
    """What ORT's float kernels compute, in float32 (HardSwish runs as x * HardSigmoid(x, 1/6, 1/2) there)."""
    zero, one = _F32(0), _F32(1)
    fn = attrs["function"]
    if fn == "Sigmoid":
        return (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(_F32)
    alpha, beta = (_F32(1 / 6), _F32(0.5)) if fn == "HardSwish" else (_F32(attrs["alpha"]), _F32(attrs["beta"]))
    hard = np.maximum(zero, np.minimum(one, (alpha * v + beta).astype(_F32)))
    return (v * hard).astype(_F32) if fn == "HardSwish" else hard


def pool_shape(shape: tuple[int, ...], attrs: dict[str, Any]) -> tuple[int, ...]:
    """The pooled shape; a 1-D [C, L] input (pooled as [C, 1, L]) stays 1-D."""
    c, h, w = ir.as_rank3(shape)
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = attrs["kernel"], attrs["stride"], attrs["pads"]
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    return (c, ow) if len(shape) == 2 else (c, oh, ow)


def rescales(inputs: list[Act], out_scale: float) -> tuple[tuple[ir.Rescale, ...], int]:
    """Per-input fixed-point factors sharing one shift (largest factor just below 2**30)."""
    ratios = [float(_F32(a.scale)) / float(_F32(out_scale)) for a in inputs]
    shift = min(40, max(0, 30 - int(np.ceil(np.log2(max(ratios)))) - 1))
    return tuple(ir.Rescale(float(_F32(a.scale)), a.zero_point, round(r * 2.0**shift))
                 for a, r in zip(inputs, ratios)), shift
