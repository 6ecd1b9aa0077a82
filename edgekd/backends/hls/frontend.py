"""Front end: standard QDQ ONNX -> the integer layer IR (``ir.Graph``).

It reads QuantizeLinear/DequantizeLinear as produced by ONNX Runtime's ``quantize_static``,
brevitas or edgekd's own quantization pass (per-tensor or per-channel, int8/uint8, any zero
point) and folds every ``DQ -> op -> (Relu|Clip) -> Q`` chain into one integer layer.

The walk is a small abstract interpretation over the value kinds of ``values.py``: each op
handler below reads its inputs' kinds and records its output's; a float result waits as a
``Pending`` until its QuantizeLinear, where ``lowering.GraphBuilder.finalize`` turns it into
a layer. Unsupported nodes are collected over the whole graph and reported in one error,
before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.hls import ir
from edgekd.backends.hls.frontend_ops import ExtraOps
from edgekd.backends.hls.lowering import c_name, pool_shape
from edgekd.backends.hls.values import KIND_WORDS, Act, Const, FloatIn, Pending, QAct, QConst, SoftmaxOut
from edgekd.errors import BuildError
from edgekd.onnxgraph import OnnxGraph, attributes

SUPPORTED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Add", "Flatten", "Reshape", "Concat", "Identity", "Constant", "ReduceMean",
    "Slice", "Split", "Resize", "ConvTranspose", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax",
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast",  # shape arithmetic (folded) and size-1 axes
})
_F32 = np.float32


class _Frontend(ExtraOps):
    """Walks the ONNX nodes in order; ``values`` maps every ONNX value name to what is known about it."""

    def __init__(self, model: Any, where: str) -> None:
        super().__init__(where)
        self.model = model
        self.graph = OnnxGraph(model)
        self.values: dict[str, Any] = {}
        for name in self.graph.initializer_names():
            self.values[name] = Const(self.graph.constant(name))

    # ------------------------------------------------------------------ helpers

    def attrs(self, node: Any) -> dict[str, Any]:
        return attributes(node)

    def get(self, node: Any, name: str, *kinds: type) -> Any:
        value = self.values.get(name)
        if value is None or (kinds and not isinstance(value, kinds)):
            got = KIND_WORDS.get(type(value), type(value).__name__) if value is not None else "an unknown value"
            want = " or ".join(KIND_WORDS.get(k, k.__name__) for k in kinds)
            raise self.err(node, f"input {name!r} is {got}; expected {want}",
                           hint="the HLS backend needs QDQ ONNX: DequantizeLinear on every activation and weight "
                                "input of compute ops, QuantizeLinear on their outputs")
        return value

    def const(self, node: Any, name: str) -> np.ndarray:
        return self.get(node, name, Const).value

    # ------------------------------------------------------------------ ops

    def run(self) -> ir.Graph:
        graph = self.model.graph
        init_names = set(self.values)
        inputs = [v for v in graph.input if v.name not in init_names]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise BuildError(f"the HLS backend supports one input and one output, got {len(inputs)} and {len(graph.output)}",
                             where=self.where)
        dims = inputs[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims[1:])
        if any(d <= 0 for d in shape):
            got = "x".join(d.dim_param or (str(d.dim_value) if d.dim_value else "?") for d in dims)
            raise BuildError(f"input {inputs[0].name!r} needs static non-batch dimensions, got {got}",
                             where=self.where, hint="export with only the batch axis dynamic (fixed H/W), or fix the "
                             "sizes with onnxruntime.tools.make_dynamic_shape_fixed before quantizing")
        self.input_name = inputs[0].name
        self.input_float_shape = shape
        self.values[self.input_name] = FloatIn(shape)
        self.input_tensor: str | None = None
        for node in graph.node:
            handler = getattr(self, f"op_{node.op_type}")
            handler(node)
        return self.finish(graph.output[0].name)

    def op_Constant(self, node: Any) -> None:
        value = self.graph.constant(node.output[0])
        if value is None:
            raise self.err(node, "only Constant nodes with a tensor 'value' are supported")
        self.values[node.output[0]] = Const(value)

    def op_Identity(self, node: Any) -> None:
        self.values[node.output[0]] = self.values.get(node.input[0])

    def _qparams(self, node: Any) -> tuple[np.ndarray, np.ndarray, str]:
        scale = self.const(node, node.input[1]).astype(_F32)
        has_zp = len(node.input) > 2 and bool(node.input[2])
        zp = self.const(node, node.input[2]) if has_zp else np.zeros(scale.shape, np.uint8)
        dtype = zp.dtype.name
        return scale, zp.astype(np.int64), dtype

    def op_DequantizeLinear(self, node: Any) -> None:
        value = self.values.get(node.input[0])
        scale, zp, _ = self._qparams(node)
        axis = int(self.attrs(node).get("axis", 1))
        if int(self.attrs(node).get("block_size", 0) or 0):
            raise self.err(node, f"blocked quantization (block_size {self.attrs(node)['block_size']}) is not supported",
                           hint="quantize weights per output channel or per tensor")
        if isinstance(value, Const):
            q = value.value
            if q.dtype.name in ("int4", "uint4"):  # opset 21 packed 4-bit weights (ml_dtypes): widen, same values
                q = q.astype(np.int8 if q.dtype.name == "int4" else np.uint8)
            if q.dtype.kind not in "iu":
                raise self.err(node, f"DequantizeLinear of a {q.dtype} initializer; weights must be stored as "
                                     "int8/uint8/int4/uint4", hint="quantize the weights to an integer type")
            self.values[node.output[0]] = QConst(q, scale, zp, axis)
        elif isinstance(value, SoftmaxOut) and value.scale is not None:
            self.values[node.output[0]] = value  # DQ(Q(softmax)): the host dequantizes
        elif isinstance(value, QAct):
            if scale.size != 1:
                raise self.err(node, "per-channel activation quantization is not supported",
                               hint="quantize activations per tensor")
            self.values[node.output[0]] = Act(value.tensor, float(scale.reshape(())), int(zp.reshape(())))
        else:
            self.get(node, node.input[0], Const, QAct)

    def op_QuantizeLinear(self, node: Any) -> None:
        value = self.get(node, node.input[0], FloatIn, Act, Pending, SoftmaxOut)
        scale, zp, dtype = self._qparams(node)
        if scale.size != 1:
            raise self.err(node, "per-channel activation quantization is not supported", hint="quantize activations per tensor")
        if dtype not in ("int8", "uint8"):
            raise self.err(node, f"activations must be int8 or uint8, got {dtype}")
        s, z = float(scale.reshape(())), int(zp.reshape(()))
        out = node.output[0]
        if isinstance(value, SoftmaxOut):
            self.values[out] = SoftmaxOut(value.act, value.axis, s, z, dtype)
        elif isinstance(value, FloatIn):
            if self.input_tensor is not None:
                raise self.err(node, "the float input is quantized twice")
            self.input_tensor = self.new_tensor(out, value.shape, dtype, s, z)
            self.values[out] = QAct(self.input_tensor)
        elif isinstance(value, Act):
            t = self.tensors[value.tensor]
            if t.dtype == dtype and _F32(value.scale) == _F32(s) and value.zero_point == z == t.zero_point \
                    and _F32(t.scale) == _F32(s):
                self.values[out] = QAct(value.tensor)  # Q(DQ(q)) with the same parameters is q
            else:
                self.values[out] = QAct(self.finalize(Pending("identity", node.name or out, [value]), out, s, z, dtype))
        else:
            self.values[out] = QAct(self.finalize(value, out, s, z, dtype))

    def op_Relu(self, node: Any) -> None:
        self._clamp(node, 0.0, np.inf)

    def op_Clip(self, node: Any) -> None:
        a = self.attrs(node)
        lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, node.input[1]))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, node.input[2]))
        self._clamp(node, lo, hi)

    def _clamp(self, node: Any, lo: float, hi: float) -> None:
        value = self.get(node, node.input[0], Pending, Act)
        if isinstance(value, Act):
            value = Pending("identity", node.name or node.output[0], [value])
        else:
            value = Pending(value.op, value.node, value.inputs, value.attrs, value.lo, value.hi)
        value.lo, value.hi = max(value.lo, lo), min(value.hi, hi)
        self.values[node.output[0]] = value

    def _bias(self, node: Any, names: list[str], n_out: int) -> np.ndarray | QConst | None:
        if len(names) < 3 or not names[2]:
            return None
        b = self.values.get(names[2])
        if isinstance(b, QConst):
            return b
        if isinstance(b, Const):
            return b.value.astype(_F32).reshape(n_out)
        raise self.err(node, f"bias {names[2]!r} must be an initializer (quantized int32 or float)")

    def op_Conv(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        w = self.get(node, node.input[1], QConst)
        a = self.attrs(node)
        shape = self.act_shape(x)
        kdims = w.q.ndim - 2
        if kdims not in (1, 2) or len(shape) != kdims + 1:
            raise self.err(node, f"only 1D and 2D convolutions are supported (weights {list(w.q.shape)}, input {list(shape)})")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.err(node, "auto_pad is not supported", hint="export with explicit pads")
        pads = list(a.get("pads", [0] * 2 * kdims))
        strides = list(a.get("strides", [1] * kdims))
        dil = list(a.get("dilations", [1] * kdims))
        if kdims == 1:  # 1D as 2D with H = 1
            pads, strides, dil = [0, pads[0], 0, pads[1]], [1, *strides], [1, *dil]
        attrs = {"pads": (pads[0], pads[1], pads[2], pads[3]), "stride": tuple(strides), "dilation": tuple(dil),
                 "groups": int(a.get("group", 1)), "w": w, "bias": self._bias(node, list(node.input), w.q.shape[0]),
                 "kdims": kdims}
        self.values[node.output[0]] = Pending("conv", node.name or node.output[0], [x], attrs)

    def op_Gemm(self, node: Any) -> None:
        a = self.attrs(node)
        if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
            raise self.err(node, "Gemm with transA or alpha/beta != 1 is not supported")
        x = self.get(node, node.input[0], Act)
        w = self.get(node, node.input[1], QConst)
        trans_b = bool(a.get("transB", 0))
        self._dense(node, x, w, trans_b, self._bias(node, list(node.input), w.q.shape[0 if trans_b else 1]))

    def op_MatMul(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        w = self.get(node, node.input[1], QConst)
        self._dense(node, x, w, False, None)

    def _dense(self, node: Any, x: Act, w: QConst, trans_b: bool, bias: Any) -> None:
        if w.q.ndim != 2 or len(self.act_shape(x)) != 1:
            raise self.err(node, f"dense layers need a flat input and 2D weights (input {list(self.act_shape(x))}, "
                                 f"weights {list(w.q.shape)})", hint="Flatten before Gemm/MatMul")
        out_axis = 0 if trans_b else 1
        if w.scale.size > 1 and w.axis % 2 != out_axis:
            raise self.err(node, "per-channel weight scales must be on the output axis")
        self.values[node.output[0]] = Pending("dense", node.name or node.output[0], [x],
                                              {"w": w, "trans_b": trans_b, "bias": bias})

    def _pool_attrs(self, node: Any, shape: tuple[int, ...]) -> dict[str, Any]:
        """Kernel, stride, pads as 2-D; 1-D pooling on [C, L] is pooling on [C, 1, L]."""
        a = self.attrs(node)
        k = list(a["kernel_shape"])
        if len(shape) != len(k) + 1 or len(k) not in (1, 2):
            raise self.err(node, f"only 1-D pooling on [C, L] and 2-D pooling on [C, H, W] are supported "
                                 f"(kernel {k}, input {list(shape)})")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or a.get("ceil_mode", 0) or any(
                d != 1 for d in a.get("dilations", [1] * len(k))):
            raise self.err(node, "pooling with auto_pad, ceil_mode or dilations is not supported")
        p = list(a.get("pads", [0] * 2 * len(k)))
        s = list(a.get("strides", [1] * len(k)))
        if len(k) == 1:
            k, s, p = [1, k[0]], [1, s[0]], [0, p[0], 0, p[1]]
        return {"kernel": (k[0], k[1]), "stride": (s[0], s[1]), "pads": (p[0], p[1], p[2], p[3]),
                "count_include_pad": bool(a.get("count_include_pad", 0))}

    def op_MaxPool(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        if len(node.output) > 1 and node.output[1]:
            raise self.err(node, "MaxPool with an Indices output is not supported")
        t = self.tensors[x.tensor]
        attrs = self._pool_attrs(node, t.shape)
        out = self.new_tensor(node.output[0], pool_shape(t.shape, attrs), t.dtype, t.scale, t.zero_point)
        self.layers.append(ir.Pool(self.layer_name(node.name or node.output[0]), [x.tensor], out, mode="max", **attrs))
        # max commutes with the (monotonic) dequantization: the result keeps the input's parameters
        self.values[node.output[0]] = Act(out, x.scale, x.zero_point)

    def op_AveragePool(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        attrs = self._pool_attrs(node, self.act_shape(x))
        self.values[node.output[0]] = Pending("avgpool", node.name or node.output[0], [x], attrs)

    def op_GlobalAveragePool(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        shape = ir.as_rank3(self.act_shape(x)) if len(self.act_shape(x)) in (2, 3) else ()
        if not shape:
            raise self.err(node, "only global pooling on [C, L] or [C, H, W] is supported")
        attrs = {"kernel": (shape[1], shape[2]), "stride": (1, 1), "pads": (0, 0, 0, 0), "count_include_pad": False,
                 "global": True}
        self.values[node.output[0]] = Pending("avgpool", node.name or node.output[0], [x], attrs)

    def op_ReduceMean(self, node: Any) -> None:
        """Mean over H and W (torch's dynamo exporter writes adaptive_avg_pool2d(1) / x.mean((2, 3)) this way):
        a global average pool; ORT runs it in float (DQ -> ReduceMean -> Q), as AveragePool."""
        x = self.get(node, node.input[0], Act)
        shape = self.act_shape(x)
        a = self.attrs(node)
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = [int(v) for v in self.const(node, node.input[1]).reshape(-1)]
        rank = len(shape) + 1
        if len(shape) != 3 or axes is None or sorted(int(v) % rank for v in axes) != [2, 3]:
            raise self.err(node, f"only ReduceMean over H and W of a [N, C, H, W] tensor is supported (axes {axes}, "
                                 f"input {list(shape)})", hint="use a global average pool over the spatial axes")
        attrs = {"kernel": (shape[1], shape[2]), "stride": (1, 1), "pads": (0, 0, 0, 0), "count_include_pad": False,
                 "reshapes": [] if int(a.get("keepdims", 1)) else [(node, lambda shape: (shape[0],))]}
        self.values[node.output[0]] = Pending("avgpool", node.name or node.output[0], [x], attrs)

    def op_Add(self, node: Any) -> None:
        a = self.get(node, node.input[0], Act)
        b = self.get(node, node.input[1], Act)
        if self.act_shape(a) != self.act_shape(b):
            raise self.err(node, f"Add needs equal shapes, got {list(self.act_shape(a))} and {list(self.act_shape(b))}")
        self.values[node.output[0]] = Pending("add", node.name or node.output[0], [a, b])

    def op_Concat(self, node: Any) -> None:
        if all(isinstance(self.values.get(n), Const) for n in node.input):  # shape arithmetic
            parts = [np.atleast_1d(self.const(node, n)) for n in node.input]
            self.values[node.output[0]] = Const(np.concatenate(parts, int(self.attrs(node)["axis"])))
            return
        xs = [self.get(node, n, Act, Pending) for n in node.input]
        for n, x in zip(node.input, xs):
            if isinstance(x, Pending) and (x.op not in ("conv", "dense") or np.isfinite(x.lo) or np.isfinite(x.hi)):
                raise self.err(node, f"input {n!r} is a float {x.op} result with no QuantizeLinear after it",
                               hint="only Conv/Gemm results may reach a Concat unquantized")
        rank = 1 if isinstance(xs[0], Pending) and xs[0].op == "dense" else len(self.act_shape(
            xs[0].inputs[0] if isinstance(xs[0], Pending) else xs[0]))
        axis = int(self.attrs(node)["axis"])
        axis = axis + rank + 1 if axis < 0 else axis
        if axis == 0:
            raise self.err(node, "concatenation along the batch axis is not supported")
        self.values[node.output[0]] = Pending("concat", node.name or node.output[0], xs, {"axis": axis - 1})

    def op_Flatten(self, node: Any) -> None:
        if int(self.attrs(node).get("axis", 1)) != 1:
            raise self.err(node, "only Flatten(axis=1) is supported")
        self._reshape(node, lambda shape: (int(np.prod(shape)),))

    def op_Reshape(self, node: Any) -> None:
        target = [int(d) for d in self.const(node, node.input[1])]
        if not target or target[0] not in (0, -1, 1):
            raise self.err(node, f"Reshape to {target} changes the batch dimension")

        def new_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
            dims = [shape[i - 1] if d == 0 else d for i, d in enumerate(target[1:], start=1)]
            if -1 in dims:
                known = int(np.prod([d for d in dims if d != -1]))
                dims[dims.index(-1)] = int(np.prod(shape)) // max(known, 1)
            return tuple(dims)

        self._reshape(node, new_shape)

    def _reshape(self, node: Any, fn: Any) -> None:
        value = self.values.get(node.input[0])
        if isinstance(value, Pending) and value.op == "avgpool":
            # ORT leaves ReduceMean (dynamo's global pooling) in float: DQ -> ReduceMean -> Reshape -> Q.
            # A reshape only relabels the pooled values, so it runs after the pool's requantization.
            attrs = {**value.attrs, "reshapes": [*value.attrs.get("reshapes", []), (node, fn)]}
            self.values[node.output[0]] = Pending(value.op, value.node, value.inputs, attrs, value.lo, value.hi)
            return
        value = self.get(node, node.input[0], Act, FloatIn)
        if isinstance(value, FloatIn):
            self.values[node.output[0]] = FloatIn(self.reshape_to(node, value.shape, fn(value.shape)))
            return
        t = self.tensors[value.tensor]
        out = self.new_tensor(node.output[0], self.reshape_to(node, t.shape, fn(t.shape)), t.dtype, t.scale, t.zero_point)
        self.layers.append(ir.Reshape(self.layer_name(node.name or node.output[0]), [value.tensor], out))
        self.values[node.output[0]] = Act(out, value.scale, value.zero_point)

    def finish(self, output_name: str) -> ir.Graph:
        value = self.values.get(output_name)
        if self.input_tensor is None:
            raise BuildError("the float input is never quantized (no QuantizeLinear on it)", where=self.where,
                             hint="the HLS backend builds quantized models only: run a quantize pass or quantize_static")
        output_layer = None
        softmax, output_dequant = None, None
        if isinstance(value, SoftmaxOut):
            softmax = ir.HostSoftmax(value.axis, value.scale, value.zero_point, value.dtype)
            value = value.act
        if isinstance(value, Act):
            t = self.tensors[value.tensor]
            out = ir.Tensor(t.name, t.shape, t.dtype, float(_F32(value.scale)), value.zero_point)
        elif isinstance(value, QAct):
            out = self.tensors[value.tensor]
        elif isinstance(value, Pending) and value.op == "concat":
            tensor, output_dequant = self.float_concat(value, output_name)
            out = self.tensors[tensor]
        elif isinstance(value, Pending):
            out = self.tensors[self.finalize(value, output_name, 1.0, 0, None)]
            output_layer = self.layers[-1]
        else:
            raise BuildError(f"graph output {output_name!r} is not a quantized tensor or a Conv/Gemm result", where=self.where)
        return ir.Graph(name=c_name(Path(self.where).stem), input_name=self.input_name, output_name=output_name,
                        input_float_shape=self.input_float_shape, input=self.tensors[self.input_tensor], output=out,
                        tensors=self.tensors, layers=self.layers, output_layer=output_layer, softmax=softmax,
                        output_dequant=output_dequant)


def input_count_problems(model: Any, engine: str) -> list[str]:
    """The generated engines (HLS C++ and the RTL engine built from its IR) stream exactly one input tensor: a model
    with several graph inputs is refused before training (edgekd.preflight), naming them."""
    inits = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in inits]
    if len(names) <= 1:
        return []
    return [f"the model has {len(names)} inputs ({', '.join(names)}); the {engine} engine streams one input tensor "
            "-- use a CPU/GPU target (cpu, openvino-cpu, tensorrt) for a multi-input model"]


def unsupported_nodes(model: Any) -> list[tuple[str, str]]:
    return [(n.name or n.output[0], n.op_type) for n in model.graph.node if n.op_type not in SUPPORTED_OPS]


def load_graph(onnx_path: Path) -> ir.Graph:
    """Read a QDQ ONNX file into the IR; raises BuildError listing every unsupported node."""
    from edgekd.onnx_files import read_onnx

    where = str(onnx_path)
    model = read_onnx(onnx_path, error=BuildError, what="a QDQ ONNX file")
    bad = unsupported_nodes(model)
    if bad:
        listing = ", ".join(f"{name} ({op})" for name, op in bad)
        raise BuildError(f"{len(bad)} node(s) are not supported by the HLS backend: {listing}", where=where,
                         hint=_format_hint({op for _, op in bad}))
    ops = {n.op_type for n in model.graph.node}
    if not ops & {"QuantizeLinear", "DequantizeLinear"}:
        raise BuildError("the model is not quantized (no QuantizeLinear/DequantizeLinear); the HLS backend builds "
                         "INT8 QDQ models only", where=where,
                         hint="quantize it first: an edgekd int8 recipe (e.g. --recipe ptq), or ONNX Runtime's "
                              "quantize_static(..., quant_format=QuantFormat.QDQ)")
    return _Frontend(model, where).run()


_QOPERATOR = ("QLinear", "QGemm", "QAttention")
_DYNAMIC = ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def _format_hint(bad_ops: set[str]) -> str:
    """What to do about the unsupported ops: name the quantization format when it is one we do not read."""
    hint = f"supported ops: {', '.join(sorted(SUPPORTED_OPS))}"
    if "Transpose" in bad_ops:
        hint = ("Transpose is not supported (a model whose input is NHWC permutes it to NCHW): export the model "
                "with an NCHW input; " + hint)
    if any(op.startswith(_QOPERATOR) for op in bad_ops):
        return ("this is ONNX Runtime's QOperator format (QLinearConv/QLinearMatMul/QGemm...), which the HLS backend "
                "does not read: quantize with quantize_static(..., quant_format=QuantFormat.QDQ); " + hint)
    if bad_ops & set(_DYNAMIC):
        return ("this is dynamic quantization (quantize_dynamic: activations quantized at run time), which an FPGA "
                "dataflow cannot run: quantize statically with quantize_static(..., quant_format=QuantFormat.QDQ) "
                "or an edgekd int8 recipe; " + hint)
    return hint
