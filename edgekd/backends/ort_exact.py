"""ONNX Runtime's int8 kernels are exact only on some x86 CPUs: make every session edgekd opens exact.

On x86-64 CPUs without VNNI (AVX2 or AVX-512F only), MLAS multiplies uint8/int8 activations by **int8** weights
with ``vpmaddubsw``, which adds pairs of products into int16 with saturation. ONNX Runtime's own quantization
guide names the problem ("U8S8 ... might suffer from saturation"); measured on an AVX2-only AMD EPYC: a 3x3x64
QLinearConv off by up to 4 output steps with uint8 activations and 74 steps with int8 activations, and edgekd's
digits student at 51 % top-1 agreement with its brevitas twin. **uint8** weights take MLAS's U8U8 kernels, which
widen to int16 before multiplying and never saturate.

So when the host saturates (probed once per process on a one-node model), a session is made from a copy of the
model whose int8 weights feeding DequantizeLinear are stored as uint8 with zero point + 128. That is an exact
rewrite (``(w + 128) - (zp + 128) == w - zp``), the graph still fuses into the same QLinearConv / QGemm integer
kernels, and the artifact on disk is left as exported (U8S8 is the fast path on VNNI and AMX CPUs).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

#: what a runner's describe() and the build notes say when the rewrite is in effect
EXACT_NOTE = ("int8 weights run as uint8 with zero point +128 (an exact rewrite): this CPU has no VNNI, and ONNX "
              "Runtime's U8S8 kernels would saturate int16 pair sums")

SATURATING_NOTE = ("this CPU's ONNX Runtime U8S8 kernels saturate (no VNNI) and the model is too large for the exact "
                   "uint8-weight rewrite: int8 results may be off")


@functools.cache
def host_int8_saturates() -> bool:
    """True when this CPU's ONNX Runtime U8S8 kernels saturate (255 x 127 x 64 products, summed)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    weights = np.full((k, 4), 127, np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "saturation_probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": np.full((1, k), 255, np.uint8)})[0]
    return not np.array_equal(got, np.full((1, 4), 255 * 127 * k, np.int32))


def _int8_weight_dequantizers(model: Any) -> list[tuple[Any, Any, Any]]:
    """(node, weight initializer, zero-point initializer) for each DequantizeLinear of a constant int8 tensor."""
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zero_point = inits.get(node.input[0]), inits.get(node.input[2])
        if weight is None or zero_point is None:
            continue
        if weight.data_type == TensorProto.INT8 and zero_point.data_type == TensorProto.INT8:
            found.append((node, weight, zero_point))
    return found


def exact_copy(model: Any) -> int:
    """Rewrite ``model`` in place: int8 weights (and their zero points) -> uint8 + 128. Returns how many.

    A tensor shared by two DequantizeLinear nodes is converted once; an int8 tensor that is also read by any
    other node keeps its type (that reader would see different values).
    """
    from onnx import TensorProto, numpy_helper

    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    dequantizers = _int8_weight_dequantizers(model)
    dq_readers: dict[str, int] = {}
    for node, _, _ in dequantizers:
        for name in (node.input[0], node.input[2]):
            dq_readers[name] = dq_readers.get(name, 0) + 1
    converted: set[str] = set()
    for _, weight, zero_point in dequantizers:
        if readers.get(weight.name) != dq_readers.get(weight.name) or readers.get(zero_point.name) != dq_readers.get(
                zero_point.name):
            continue
        for tensor in (weight, zero_point):
            if tensor.name in converted:
                continue
            shifted = (numpy_helper.to_array(tensor).astype(np.int16) + 128).astype(np.uint8)
            tensor.CopyFrom(numpy_helper.from_array(shifted, tensor.name))
            assert tensor.data_type == TensorProto.UINT8
            converted.add(tensor.name)
    return len({w.name for _, w, _ in dequantizers} & converted)


def session_source(model_path: Path) -> tuple[str | bytes, int]:
    """What to hand ``ort.InferenceSession``: the path itself, or the exact uint8-weight copy's bytes on a
    saturating host. Returns (source, number of weight tensors rewritten; -1 when a model over 2 GB could not be
    rewritten in memory and runs with ORT's saturating kernels)."""
    if not host_int8_saturates():
        return str(model_path), 0
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    if not _int8_weight_dequantizers(model):
        return str(model_path), 0
    model = onnx.load(str(model_path))  # with external data, resolved next to the file
    if model.ByteSize() >= 2**31 - 2**20:  # one protobuf cannot hold it: run the file as it is, and say so
        return str(model_path), -1
    rewritten = exact_copy(model)
    return (model.SerializeToString(), rewritten) if rewritten else (str(model_path), 0)
