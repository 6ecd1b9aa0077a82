"""Proof that INT8 really runs: which Conv/Gemm/MatMul MACs ONNX Runtime executes in integer kernels.

Counts the MACs of every Conv/Gemm/MatMul in the exported graph (shapes from ONNX shape inference,
batch 1), lets ONNX Runtime optimize the graph exactly as the ``cpu`` target does, and calls a layer
int8 when an integer kernel (QLinearConv, QGemm, MatMulInteger, ...) consumes its weight initializer.
MatMuls between two activations (attention scores) have no weight and are counted as float unless
ONNX Runtime turned every such MatMul into an integer kernel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.onnxgraph import OnnxGraph, attribute

_COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _shape(value_info: dict[str, Any], name: str) -> list[int] | None:
    vi = value_info.get(name)
    if vi is None:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
    return dims or None


def _weight_source(g: OnnxGraph, name: str) -> tuple[str | None, str | None]:
    """(constant, key) behind a weight input, looking through DequantizeLinear / Transpose / Clip / ...

    The key is the weight's *scale* initializer when it is dequantized: ONNX Runtime may re-materialize a
    transposed int8 weight under a new name, but its integer kernel still reads the original scale.
    """
    path = g.follow_weight(name)
    if path.root is None:
        return None, None
    dq = next((n for n in reversed(path.nodes) if n.op_type == "DequantizeLinear"), None)
    return path.root, (dq.input[1] if dq is not None and len(dq.input) > 1 else path.root)


def layer_macs(model: Any) -> list[dict[str, Any]]:
    """[{node, op, macs, weight}] for every Conv/ConvTranspose/Gemm/MatMul (batch 1)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    value_info = {v.name: v for v in [*g.value_info, *g.input, *g.output]}
    index = OnnxGraph(g)
    rows = []
    for node in g.node:
        if node.op_type not in _COMPUTE:
            continue
        out = _shape(value_info, node.output[0])
        weight, key = _weight_source(index, node.input[1])
        # the shape the op reads (a Transpose/Reshape on the way changes it), else the stored constant's
        w_shape = _shape(value_info, node.input[1]) or (list(index.constant_proto(weight).dims) if weight else None)
        a_shape = _shape(value_info, node.input[0])
        macs = 0
        if out and w_shape:
            if node.op_type == "Conv":
                macs = int(np.prod(out[1:])) * int(np.prod(w_shape[1:]))
            elif node.op_type == "ConvTranspose":  # each input element meets C_out/groups x kernel weights
                macs = int(np.prod(a_shape[1:])) * int(np.prod(w_shape[1:])) if a_shape else 0
            elif node.op_type == "Gemm":
                trans_b = attribute(node, "transB", 0)
                k = w_shape[1] if trans_b else w_shape[0]
                macs = int(np.prod(out[1:])) * int(k)
            elif a_shape:
                macs = int(np.prod(out[1:] if len(out) > 2 else out)) * int(a_shape[-1])
        rows.append({"node": node.name, "op": node.op_type, "macs": macs, "weight": weight, "key": key,
                     "output": node.output[0]})
    return rows


def optimized_graph(path: Path, threads: int = 2) -> Any:
    """The graph ONNX Runtime executes (ORT_ENABLE_ALL, CPU), as an onnx ModelProto."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath, load_external_data=False)


def int8_mac_report(path: Path) -> dict[str, Any]:
    """Fraction of Conv/ConvTranspose/Gemm/MatMul MACs that ONNX Runtime runs in integer kernels, per layer."""
    import onnx

    from edgekd.backends.onnxruntime import INT8_KERNEL_OPS

    rows = layer_macs(onnx.load(str(path)))
    optimized = optimized_graph(path)
    int_nodes = [n for n in optimized.graph.node if n.op_type in INT8_KERNEL_OPS]
    int_inputs = {name for n in int_nodes for name in n.input}
    int_outputs = {name for n in int_nodes for name in n.output}
    float_ops = {"Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "FusedGemm", "NchwcConv"}
    float_weightless = sum(1 for n in optimized.graph.node if n.op_type in float_ops)
    total = int8 = 0
    layers = []
    for row in rows:
        # weightless MatMul (attention scores): int8 when an integer kernel now produces its output (ORT's
        # fusions keep the output name), or when no float compute op survived at all
        weightless_int8 = row["output"] in int_outputs or (float_weightless == 0 and bool(int_nodes))
        is_int8 = row["key"] in int_inputs if row["key"] is not None else weightless_int8
        total += row["macs"]
        int8 += row["macs"] if is_int8 else 0
        layers.append({**row, "int8": is_int8})
    ops: dict[str, int] = {}
    for n in optimized.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    unknown = [r["node"] for r in rows if r["macs"] == 0]
    return {
        "int8_mac_fraction": (int8 / total) if total else 0.0,
        "layers_with_unknown_macs": unknown,  # shapes ONNX could not infer: not counted either way
        "macs_total": total,
        "macs_int8": int8,
        "float_layers": [r["node"] for r in layers if not r["int8"]],
        "layers": layers,
        "optimized_ops": dict(sorted(ops.items())),
    }
