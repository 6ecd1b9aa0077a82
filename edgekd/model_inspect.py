"""Per-layer facts about any ONNX file: shape, MACs, sparsity, N:M compliance, quantization.

Works on edgekd's exports and on other tools' files: float models, QDQ models (weights as
int8/int4 initializers behind DequantizeLinear, with or without brevitas' Clip in between,
or float weights quantized at run time by a QuantizeLinear), and QOperator models
(QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger). Compliance is computed on the
weights the runtime will see (dequantized), so an integer weight equal to its zero point
counts as a zero. Torch-free.

MACs are per sample: a symbolic batch dimension counts as 1; other symbolic dimensions (dynamic
H/W, sequence length) make a layer's MACs unknown, with a note.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.nm import NMCheck, check_nm, ineligible_reason
from edgekd.onnx_files import read_onnx
from edgekd.onnxgraph import OnnxGraph, attribute, opset

# op -> (weight input index, weight-scale index, weight-zero-point index); -1 = none
_WEIGHTED = {
    "Conv": (1, -1, -1), "FusedConv": (1, -1, -1), "ConvTranspose": (1, -1, -1),
    "Gemm": (1, -1, -1), "MatMul": (1, -1, -1), "FusedMatMul": (1, -1, -1),
    "QLinearConv": (3, 4, 5), "QLinearMatMul": (3, 4, 5),
    "ConvInteger": (1, -1, 3), "MatMulInteger": (1, -1, 3),
    # com.microsoft contrib ops that ORT's quantizers write
    "QGemm": (3, 4, 5), "MatMulIntegerToFloat": (1, 3, 5), "DynamicQuantizeMatMul": (1, 2, 3),
}
_INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul"}
_BITS = {"int8": 8, "uint8": 8, "int4": 4, "uint4": 4, "int16": 16, "uint16": 16, "int32": 32,
         "float8e4m3fn": 8, "float8e5m2": 8}


@dataclass
class QuantInfo:
    """How a weight (or activation) is quantized."""

    dtype: str
    bits: int
    per_channel: bool = False
    axis: int | None = None
    symmetric: bool = True
    storage: str = "integer initializer"  # or "float, quantized at run time", "integer (QOperator)"
    clip: tuple[float, float] | None = None
    value_bits: int | None = None  # signed bits the stored integers (minus zero point) really use
    block_size: int | None = None  # opset 21 blocked quantization: one scale per block_size elements along axis


    def short(self) -> str:
        text = f"{'u' if self.dtype.startswith('u') else 's'}{self.bits}"
        text += f" blk{self.block_size}" if self.block_size else (" per-ch" if self.per_channel else " per-t")
        text += "" if self.symmetric else " asym"
        if self.storage.startswith("float"):
            text += " (rt)"
        if self.value_bits is not None and self.value_bits < self.bits:
            text += f" ({self.value_bits}b values)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "bits": self.bits, "per_channel": self.per_channel, "axis": self.axis,
                "symmetric": self.symmetric, "storage": self.storage, "value_bits": self.value_bits,
                "clip": list(self.clip) if self.clip else None, "block_size": self.block_size}


@dataclass
class LayerInfo:
    name: str
    op_type: str
    weight: str | None
    shape: tuple[int, ...] | None
    macs: int | None
    params: int
    zeros: int
    nm: NMCheck | None = None
    reason: str | None = None  # why N:M does not apply (None when it does)
    weight_quant: QuantInfo | None = None
    input_quant: QuantInfo | None = None
    output_quantized: bool = False

    @property
    def sparsity(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    @property
    def nm_status(self) -> str:
        if self.nm is None:
            return "n/a"
        return "yes" if self.nm.compliant else "no"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "weight": self.weight,
                "shape": list(self.shape) if self.shape else None, "macs": self.macs, "params": self.params,
                "zeros": self.zeros, "sparsity": round(self.sparsity, 6), "nm_status": self.nm_status,
                "nm": self.nm.to_dict() if self.nm else None, "not_eligible": self.reason,
                "weight_quant": self.weight_quant.to_dict() if self.weight_quant else None,
                "input_quant": self.input_quant.to_dict() if self.input_quant else None,
                "output_quantized": self.output_quantized}


@dataclass
class ModelInfo:
    path: str
    opset: int | None
    producer: str
    n: int
    m: int
    layers: list[LayerInfo]
    op_histogram: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        eligible = [la for la in self.layers if la.nm is not None]
        compliant = [la for la in eligible if la.nm is not None and la.nm.compliant]
        macs = [la.macs for la in self.layers if la.macs is not None]
        params = sum(la.params for la in self.layers)
        zeros = sum(la.zeros for la in self.layers)
        total_macs = sum(macs)
        nm_macs = sum(la.macs or 0 for la in compliant)
        return {"layers": len(self.layers), "params": params, "zeros": zeros,
                "sparsity": round(zeros / params, 6) if params else 0.0,
                "macs": total_macs, "macs_unknown_layers": len(self.layers) - len(macs),
                "eligible": len(eligible), "nm_compliant": len(compliant),
                "nm_macs_fraction": round(nm_macs / total_macs, 6) if total_macs else 0.0,
                "weight_quantized": sum(la.weight_quant is not None for la in self.layers),
                "quantize_linear": self.op_histogram.get("QuantizeLinear", 0),
                "dequantize_linear": self.op_histogram.get("DequantizeLinear", 0)}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgekd.inspect/1", "path": self.path, "opset": self.opset, "producer": self.producer,
                "pattern": f"{self.n}:{self.m}", "layers": [la.to_dict() for la in self.layers],
                "totals": self.totals(), "op_histogram": self.op_histogram, "notes": self.notes}


class _Graph(OnnxGraph):
    """The graph index plus the element types and shapes that shape inference recorded."""

    def __init__(self, model: Any) -> None:
        from onnx import helper

        super().__init__(model)
        self.types: dict[str, str] = {}
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        for vi in (*self.graph.value_info, *self.graph.input, *self.graph.output):
            t = vi.type.tensor_type
            if t.elem_type:
                self.types[vi.name] = helper.tensor_dtype_to_np_dtype(t.elem_type).name
            if t.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)

    def dtype(self, name: str) -> str | None:
        value = self.constant(name)
        return _dtype_name(value) if value is not None else self.types.get(name)

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        value = self.constant(name)
        return tuple(value.shape) if value is not None else self.shapes.get(name)


def _dtype_name(arr: np.ndarray) -> str:
    name = arr.dtype.name
    # onnx maps int4/uint4 to custom numpy dtypes (ml_dtypes) with names like "int4"
    return str(name)


def _bits(dtype: str) -> int:
    return _BITS.get(dtype, 32)


def _clip_bits(lo: float, hi: float) -> int:
    return max(1, math.ceil(math.log2(hi - lo + 1)))


def _value_bits(q: np.ndarray) -> int:
    """Smallest signed bit width holding every value of ``q`` (4 for [-8, 7]; w4 weights in an int8 container)."""
    if q.size == 0:
        return 1
    lo, hi = float(q.min()), float(q.max())
    bits = 1
    while lo < -(2 ** (bits - 1)) or hi > 2 ** (bits - 1) - 1:
        bits += 1
    return bits


def _broadcast(param: np.ndarray, axis: int, ndim: int, block: int = 0, length: int = 0) -> np.ndarray:
    """A scale/zero point shaped to broadcast against the tensor: scalar, per-channel along ``axis``,
    or (opset 21 ``block_size``) one value per ``block`` elements along ``axis`` (``length`` of them)."""
    if block and param.ndim == ndim:
        return np.repeat(param, block, axis=axis % ndim).take(range(length), axis=axis % ndim)
    if param.size <= 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


class _Resolver:
    """Follows a weight input back to constants, undoing DequantizeLinear/Clip/Transpose/...

    Returns the effective float weight and the quantization facts seen on the way.
    """

    def __init__(self, g: _Graph) -> None:
        self.g = g
        self.root: str | None = None  # the constant the chain starts from (the stored weight)

    def resolve(self, name: str) -> tuple[np.ndarray | None, QuantInfo | None]:
        path = self.g.follow_weight(name)
        self.root = path.root
        if path.root is None:
            return None, None
        value: np.ndarray | None = self.g.constant(path.root)
        quant: QuantInfo | None = None
        for node in reversed(path.nodes):  # from the stored constant towards the compute op
            value, quant = self._step(node, value, quant)
            if value is None:
                return None, None
        return value, quant

    def _step(self, node: Any, value: np.ndarray, quant: QuantInfo | None) -> tuple[np.ndarray | None, QuantInfo | None]:
        """Apply one pass-through node to the weight computed so far."""
        g = self.g
        op = node.op_type
        if op == "Identity":
            return value, quant
        if op == "Cast":
            from onnx import helper

            return value.astype(helper.tensor_dtype_to_np_dtype(attribute(node, "to"))), quant
        if op == "Transpose":
            perm = attribute(node, "perm")
            return np.transpose(value, perm), quant
        if op == "Reshape":
            shape = g.constant(node.input[1])
            if shape is None:
                return None, None
            return value.reshape(tuple(int(s) for s in shape)), quant
        if op == "Clip":
            lo, hi = self._clip_bounds(node)
            clipped = np.clip(value, lo, hi).astype(value.dtype)
            if quant is not None and lo is not None and hi is not None:
                quant.clip = (float(lo), float(hi))
                quant.bits = min(quant.bits, _clip_bits(float(lo), float(hi)))
            elif np.issubdtype(value.dtype, np.integer) and lo is not None and hi is not None:
                quant = QuantInfo(dtype=_dtype_name(value), bits=min(_bits(_dtype_name(value)),
                                  _clip_bits(float(lo), float(hi))), clip=(float(lo), float(hi)))
            return clipped, quant
        axis = int(attribute(node, "axis", 1))
        block = int(attribute(node, "block_size", 0) or 0)
        length = value.shape[axis % value.ndim] if block and value.ndim else 0
        scale = g.constant(node.input[1]) if len(node.input) > 1 else None
        zp = g.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            return None, None
        if op == "QuantizeLinear":
            # float weights quantized on every call (brevitas' default export)
            out_dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
            info = np.iinfo(out_dtype) if np.issubdtype(out_dtype, np.integer) else None
            q = np.rint(value.astype(np.float64) / _broadcast(scale.astype(np.float64), axis, value.ndim, block, length))
            q = q + (_broadcast(zp.astype(np.float64), axis, value.ndim, block, length) if zp is not None else 0.0)
            if info is not None:
                q = np.clip(q, info.min, info.max)
            return q.astype(out_dtype), QuantInfo(dtype=np.dtype(out_dtype).name, bits=_bits(np.dtype(out_dtype).name),
                                                  per_channel=scale.size > 1, axis=axis if scale.size > 1 else None,
                                                  symmetric=zp is None or not np.any(zp),
                                                  storage="float, quantized at run time")
        # DequantizeLinear
        dtype = _dtype_name(value)
        if quant is None:
            quant = QuantInfo(dtype=dtype, bits=_bits(dtype))
        quant.per_channel = scale.size > 1
        quant.axis = axis if scale.size > 1 else None
        quant.symmetric = zp is None or not np.any(zp.astype(np.int64))
        deq = value.astype(np.float64)
        if zp is not None:
            deq = deq - _broadcast(zp.astype(np.float64), axis, value.ndim, block, length)
        if np.issubdtype(value.dtype, np.integer):
            quant.value_bits = _value_bits(deq)
        quant.block_size = block or None
        return (deq * _broadcast(scale.astype(np.float64), axis, value.ndim, block, length)).astype(np.float32), quant

    def _clip_bounds(self, node: Any) -> tuple[Any, Any]:
        g = self.g
        if len(node.input) > 1:  # opset >= 11: bounds are inputs
            lo = g.constant(node.input[1]) if node.input[1] else None
            hi = g.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            return (lo.item() if lo is not None else None), (hi.item() if hi is not None else None)
        return attribute(node, "min"), attribute(node, "max")


def _activation_quant(g: _Graph, name: str) -> QuantInfo | None:
    """The input of a weighted op is quantized if it comes out of a DequantizeLinear."""
    node = g.producer(name)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    dtype = g.dtype(node.input[0]) or "uint8"
    scale = g.constant(node.input[1])
    zp = g.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return QuantInfo(dtype=dtype, bits=_bits(dtype), per_channel=scale is not None and scale.size > 1,
                     symmetric=zp is None or not np.any(zp.astype(np.int64)), storage="activation")


# integer ops whose output zero point is not their last input (QLinearConv: B comes after y_zero_point)
_Y_ZERO_POINT = {"QLinearConv": 7, "QLinearConcat": 1}
_SHAPE_ONLY = {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool", "Slice", "Gather",
               "Split", "Concat", "Resize", "Pad", "SpaceToDepth", "DepthToSpace", "GlobalMaxPool"}


def _int_dtype(g: _Graph, name: str, depth: int = 0) -> str | None:
    """Element type of an integer activation. Shape inference does not type the outputs of
    com.microsoft ops (QLinearGlobalAveragePool, QGemm, QLinearAdd...), so follow the producers:
    a QuantizeLinear / QLinear* output has the type of its output zero point."""
    known = g.dtype(name)
    node = g.producer(name)
    if known is not None or node is None or depth > 32:
        return known
    op = node.op_type
    if op in ("QuantizeLinear", "DynamicQuantizeLinear") or op.startswith("QLinear") or op == "QGemm":
        if op == "DynamicQuantizeLinear":
            return "uint8"
        idx = 2 if op == "QuantizeLinear" else _Y_ZERO_POINT.get(op, len(node.input) - 1)
        zp = node.input[idx] if idx < len(node.input) else ""
        if zp:
            return g.dtype(zp)
        output_dtype = attribute(node, "output_dtype", 0) if op == "QuantizeLinear" else 0
        if output_dtype:
            from onnx import helper

            return helper.tensor_dtype_to_np_dtype(output_dtype).name
        return "uint8" if op == "QuantizeLinear" else None
    if op in _SHAPE_ONLY and node.input:
        return _int_dtype(g, node.input[0], depth + 1)
    return None


def _output_quantized(g: _Graph, name: str) -> bool:
    for consumer in g.consumers(name):
        if consumer.op_type == "QuantizeLinear":
            return True
        if consumer.op_type in ("Relu", "Clip") and _output_quantized(g, consumer.output[0]):
            return True
    return False


def _numel(shape: tuple[int | None, ...] | None) -> int | None:
    if shape is None:
        return None
    return int(np.prod([d if d else 1 for d in shape], dtype=np.int64))


def _layer(g: _Graph, node: Any, n: int, m: int) -> LayerInfo | None:
    w_idx, s_idx, z_idx = _WEIGHTED[node.op_type]
    if len(node.input) <= w_idx:
        return None
    resolver = _Resolver(g)
    weight, quant = resolver.resolve(node.input[w_idx])
    w_name = resolver.root or node.input[w_idx]
    op = node.op_type
    if weight is None:
        if op in ("MatMul", "FusedMatMul"):
            return None  # activation x activation (attention scores): no weights to speak of
        shape = g.shape(w_name)
        return LayerInfo(node.name or node.output[0], op, w_name, shape, None, _numel(shape) or 0, 0,
                         reason="weight is computed at run time (not a constant)")
    if op in _INTEGER_OPS:
        scale = g.constant(node.input[s_idx]) if s_idx >= 0 else None
        zp = g.constant(node.input[z_idx]) if z_idx >= 0 and len(node.input) > z_idx and node.input[z_idx] else None
        # per-channel scales/zero points run along K for convs (axis 0), along N for MatMul (last axis)
        if op in ("QLinearConv", "ConvInteger"):
            axis_zp = 0
        elif op == "QGemm":
            axis_zp = 0 if attribute(node, "transB", 0) else weight.ndim - 1
        else:
            axis_zp = weight.ndim - 1
        dtype = _dtype_name(weight)
        per_channel = scale is not None and scale.size > 1
        quant = QuantInfo(dtype=dtype, bits=_bits(dtype), per_channel=per_channel, axis=axis_zp if per_channel else None,
                          symmetric=zp is None or not np.any(zp.astype(np.int64)), storage="integer (QOperator)")
        weight = weight.astype(np.float64) - (_broadcast(zp.astype(np.float64), axis_zp, weight.ndim) if zp is not None else 0)
        quant.value_bits = _value_bits(weight)
    shape = tuple(int(d) for d in weight.shape)
    groups = int(attribute(node, "group", 1))
    if op in ("Gemm", "QGemm"):
        axis = 1 if attribute(node, "transB", 0) else 0
    elif "MatMul" in op:
        axis = weight.ndim - 2 if weight.ndim >= 2 else 0
    else:
        axis = 1
    reason: str | None
    if op == "ConvTranspose":
        reason = "ConvTranspose (sparse tensor cores take Conv/Gemm/MatMul)"
    else:
        reason = ineligible_reason(shape, m=m, axis=axis, groups=groups)
    nm = check_nm(weight, n, m, axis=axis) if reason is None else None
    params = int(weight.size)
    zeros = int(weight.size - np.count_nonzero(weight))
    macs = _macs(g, node, shape, axis, groups)
    input_quant = _activation_quant(g, node.input[0])
    if op in _INTEGER_OPS and op not in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        dtype = _int_dtype(g, node.input[0]) or "uint8"
        input_quant = QuantInfo(dtype=dtype, bits=_bits(dtype), storage="activation")
    out_q = op in ("QLinearConv", "QLinearMatMul", "QGemm") or _output_quantized(g, node.output[0])
    return LayerInfo(node.name or node.output[0], op, w_name, shape, macs, params, zeros, nm, reason,
                     quant, input_quant, out_q)


def _sized(shape: tuple[int | None, ...] | None) -> tuple[int | None, ...] | None:
    """``shape`` if only its first (batch) dimension may be symbolic; None when another one is
    (dynamic H/W or sequence length: MACs per sample are unknown, not 1 per dynamic dimension)."""
    if shape is None or any(d is None or d == 0 for d in shape[1:]):
        return None
    return shape


def _macs(g: _Graph, node: Any, shape: tuple[int, ...], axis: int, groups: int) -> int | None:
    op = node.op_type
    out_shape = g.shape(node.output[0])
    if op in ("Conv", "FusedConv", "QLinearConv", "ConvInteger"):
        if _sized(out_shape) is None:
            return None
        per_output = int(np.prod(shape[1:]))  # (C/groups) * R * S
        return (_numel(out_shape) or 0) * per_output
    if op == "ConvTranspose":
        in_shape = g.shape(node.input[0])
        if _sized(in_shape) is None:
            return None
        return (_numel(in_shape) or 0) * int(np.prod(shape[1:]))
    # Gemm / MatMul: every output element needs K multiply-adds
    if out_shape is not None:
        return (_numel(out_shape) or 0) * shape[axis] if _sized(out_shape) is not None else None
    # contrib ops (QGemm) defeat shape inference: rows x K x N; a Gemm's rows are the batch (1 per sample)
    in_shape = g.shape(node.input[0])
    if in_shape is None and op in ("Gemm", "QGemm"):
        in_shape = (1, None)
    if in_shape is None or len(shape) != 2 or any(d is None for d in in_shape[1:-1]):
        return None
    return (_numel(in_shape[:-1]) or 1) * shape[0] * shape[1]


def _weighted_in_subgraphs(graph: Any) -> int:
    count = 0
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                count += sum(n.op_type in _WEIGHTED for n in sub.node) + _weighted_in_subgraphs(sub)
    return count


def inspect_onnx(path: str | Path, *, n: int = 2, m: int = 4) -> ModelInfo:
    """Read ``path`` and describe every weighted layer (Conv, Gemm, MatMul and their quantized forms)."""
    import onnx

    p = Path(path)
    model = read_onnx(p)
    notes = []
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # shapes are optional here: MACs become "?" where unknown, and we say why
        notes.append(f"shape inference failed ({exc}); MACs unknown where shapes are missing")
    g = _Graph(model)
    layers = [layer for node in model.graph.node if node.op_type in _WEIGHTED
              for layer in [_layer(g, node, n, m)] if layer is not None]
    opset_version = opset(model) or None
    producer = f"{model.producer_name} {model.producer_version}".strip()
    histogram = dict(Counter(node.op_type for node in model.graph.node).most_common())
    nested = _weighted_in_subgraphs(model.graph)
    if nested:
        notes.append(f"{nested} weighted op(s) inside If/Loop/Scan subgraphs are not inspected")
    dynamic = [la.name for la in layers if la.macs is None and la.shape is not None]
    dyn_inputs = [f"{vi.name} {[d.dim_param or d.dim_value or '?' for d in vi.type.tensor_type.shape.dim]}"
                  for vi in model.graph.input if not g.is_constant(vi.name)
                  and any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim[1:])]
    if dynamic and dyn_inputs:
        notes.append(f"MACs unknown for {len(dynamic)} layer(s) ({', '.join(dynamic[:3])}"
                     f"{', ...' if len(dynamic) > 3 else ''}): input(s) {'; '.join(dyn_inputs)} have dynamic "
                     "dimensions besides the batch; export with fixed sizes (or fix them with "
                     "onnxruntime.tools.make_dynamic_shape_fixed) to count them")
    return ModelInfo(str(p), opset_version, producer, n, m, layers, histogram, notes)


# ---------------------------------------------------------------- text table


def _human(x: int | None) -> str:
    if x is None:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return str(x)


def format_table(info: ModelInfo, *, max_name: int = 36) -> str:
    """A plain-text per-layer table plus totals (no terminal width assumptions)."""
    pat = f"{info.n}:{info.m}"
    header = ["#", "layer", "op", "weight shape", "MACs", "params", "zeros", pat, "weight q", "act q", "note"]
    rows = []
    for i, la in enumerate(info.layers):
        name = la.name if len(la.name) <= max_name else "…" + la.name[-(max_name - 1):]
        if la.nm is None:
            status, note = "n/a", la.reason or ""
        elif la.nm.compliant:
            status, note = "yes", ""
        else:
            status, note = "no", f"{la.nm.groups_ok}/{la.nm.groups} groups ok"
        rows.append([str(i), name, la.op_type, "x".join(map(str, la.shape)) if la.shape else "?",
                     _human(la.macs), _human(la.params), f"{100 * la.sparsity:.1f}%", status,
                     la.weight_quant.short() if la.weight_quant else "-",
                     la.input_quant.short().replace(" per-t", "") if la.input_quant else "-", note])
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(header)]
    right = {0, 4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    t = info.totals()
    out = [f"{info.path}  (opset {info.opset}, {info.producer or 'unknown producer'})", line(header),
           line(["-" * w for w in widths]), *(line(r) for r in rows), "",
           f"layers {t['layers']}  params {_human(t['params'])}  MACs {_human(t['macs'])} per sample"
           f"{' (+ ' + str(t['macs_unknown_layers']) + ' layer(s) unknown)' if t['macs_unknown_layers'] else ''}  "
           f"weight sparsity {100 * t['sparsity']:.2f}%",
           f"{pat}: {t['nm_compliant']} of {t['eligible']} eligible layers compliant "
           f"({100 * t['nm_macs_fraction']:.1f}% of MACs)",
           f"quantization: {t['weight_quantized']} of {t['layers']} layers with quantized weights; "
           f"{t['quantize_linear']} QuantizeLinear, {t['dequantize_linear']} DequantizeLinear",
           *(f"note: {note}" for note in info.notes)]
    return "\n".join(out)
