"""The "brevitas-qdq" exporter: deploy twin -> QDQ ONNX, one variant per runtime flavor.

Registered with ``edgekd.export.register_exporter`` so the pipeline's one export stage handles
quantized artifacts (``artifact.meta["exporter"] == "brevitas-qdq"``). Always the TorchScript
exporter: the twin's custom ``symbolic`` functions are how the Q/DQ nodes get written, and the
dynamo exporter does not call them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.backends.base import QDQFlavor
from edgekd.backends.flavors import flavor_named
from edgekd.config import ExportSettings
from edgekd.errors import ExportError
from edgekd.export import INPUT_NAME, OUTPUT_NAME, register_exporter
from edgekd.inputs import TensorInputs, args
from edgekd.onnxgraph import OnnxGraph
from edgekd.quant.qdq import build_twin

_WEIGHTED_OPS = {"Conv", "Gemm", "MatMul"}


def _remove_identities(model: Any) -> None:
    """The TorchScript exporter emits Identity nodes for shared buffers; rewire and drop them."""
    g = OnnxGraph(model)
    dropped = []
    for node in g.nodes:
        if node.op_type == "Identity" and node.output[0] not in g.outputs:
            g.replace_uses(node.output[0], node.input[0])
            dropped.append(node)
    if dropped:
        g.rebuild(remove=dropped)


def _unshare_weight_dq_params(model: Any) -> int:
    """Give every weight/bias DequantizeLinear its own scale and zero-point initializers.

    The TorchScript exporter deduplicates equal-valued initializers, so e.g. the all-zero weight zero
    points of every 192-output layer of a ViT become one tensor. OpenVINO then cannot match its
    weight-dequantization pattern for those layers and runs them in f32 (measured: 24 of 49 vit_tiny
    FullyConnected layers); a private copy per node (a few hundred bytes each) keeps them int8.
    """
    g = OnnxGraph(model)
    copies = 0
    for node in g.nodes:
        if node.op_type != "DequantizeLinear" or g.initializer(node.input[0]) is None:
            continue
        for idx in range(1, len(node.input)):
            name = node.input[idx]
            if g.initializer(name) is None or len(g.consumers(name)) < 2:
                continue
            private = g.add_initializer(g.constant(name), f"{node.name or node.output[0]}.param{idx}")
            g.set_input(node, idx, private)
            copies += 1
    return copies


def _quantize_before_relu(model: Any) -> int:
    """ORT flavor: ``Conv/Gemm -> Relu -> QuantizeLinear`` with a zero point above the type minimum (a
    signed quantizer stored as uint8, e.g. a ReLU branch concatenated with a signed one, or symmetric
    activations) keeps the Conv in float: ONNX Runtime folds a Relu into a Q only when the zero point is
    the type minimum. Insert the same Q/DQ between the Conv and the Relu. Exact: rounding is monotone
    and 0 maps to the zero point, so Q(relu(y)) == max(Q(y), zp) == Q(relu(DQ(Q(y)))).
    Returns how many Relus were rewritten."""
    from onnx import helper

    g = OnnxGraph(model)
    inserts: dict[int, list[Any]] = {}
    for relu in [n for n in g.nodes if n.op_type == "Relu"]:
        src = g.producer(relu.input[0])
        users = g.consumers(relu.output[0])
        if (src is None or src.op_type not in ("Conv", "Gemm") or len(g.consumers(relu.input[0])) != 1
                or relu.input[0] in g.outputs or relu.output[0] in g.outputs or not users
                or any(u.op_type != "QuantizeLinear" or len(u.input) < 3 for u in users)):
            continue
        q = users[0]
        scale, zp = q.input[1], q.input[2]
        if g.initializer(scale) is None or g.initializer(zp) is None:
            continue
        if any(not (np.array_equal(g.constant(u.input[1]), g.constant(scale))
                    and np.array_equal(g.constant(u.input[2]), g.constant(zp))
                    and g.constant(u.input[2]).dtype == g.constant(zp).dtype) for u in users):
            continue
        zp_value = g.constant(zp)
        if zp_value.size != 1 or int(zp_value.reshape(())) == int(np.iinfo(zp_value.dtype).min):
            continue  # ORT already folds this Relu into the Q
        name = relu.name or relu.output[0]
        q_out, dq_out = f"{name}_edgekd_q", f"{name}_edgekd_dq"
        new_q = helper.make_node("QuantizeLinear", [relu.input[0], scale, zp], [q_out], name=f"{name}_edgekd_Q")
        new_dq = helper.make_node("DequantizeLinear", [q_out, scale, zp], [dq_out], name=f"{name}_edgekd_DQ")
        inserts[id(relu)] = [new_q, new_dq]
        g.set_input(relu, 0, dq_out)
    if inserts:
        g.rebuild(insert_before=inserts)
    return len(inserts)


def _drop_output_qdq(model: Any) -> int:
    """TensorRT flavor: no Q/DQ on a weighted op's output that only feeds the graph output
    (TensorRT's guidance: do not quantize weighted-op outputs; the logits stay float)."""
    g = OnnxGraph(model)
    dropped = []
    for out in model.graph.output:
        dq = g.producer(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = g.producer(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = g.producer(q.input[0])
        if src is None or src.op_type not in _WEIGHTED_OPS | {"Add"} or len(g.consumers(q.input[0])) != 1:
            continue
        idx = list(src.output).index(q.input[0])
        src.output[idx] = out.name
        dropped += [q, dq]
    if dropped:
        g.rebuild(remove=dropped)
    return len(dropped) // 2


#: graph rewrites a QDQFlavor names in ``rewrites`` (each takes the onnx.ModelProto, returns how many it changed)
REWRITES: dict[str, Callable[[Any], int]] = {"quantize_before_relu": _quantize_before_relu,
                                            "drop_output_qdq": _drop_output_qdq}


def postprocess(path: Path, flavor: QDQFlavor | str) -> None:
    import onnx

    flavor = flavor_named(flavor)
    unknown = [name for name in flavor.rewrites if name not in REWRITES]
    if unknown:
        raise ExportError(f"flavor {flavor.name!r} names unknown graph rewrites {unknown}; known: {', '.join(REWRITES)}",
                          hint="use one of those, or give the flavor its own postprocess function")
    model = onnx.load(str(path))
    _remove_identities(model)
    _unshare_weight_dq_params(model)
    for name in flavor.rewrites:
        REWRITES[name](model)
    if flavor.postprocess is not None:
        flavor.postprocess(model)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({"edgekd.exporter": "brevitas-qdq", "edgekd.flavor": flavor.name})
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


@register_exporter("brevitas-qdq")
def brevitas_qdq_export(module: torch.nn.Module, path: Path, example: torch.Tensor, settings: ExportSettings,
                        flavor: QDQFlavor | str) -> None:
    """Export a brevitas fake-quant module as QDQ ONNX for ``flavor`` (a backend's QDQFlavor, or a built-in name)."""
    flavor = flavor_named(flavor)
    twin = build_twin(module, example, flavor)
    in_names = list(example.names) if isinstance(example, TensorInputs) else [INPUT_NAME]  # one per input
    axes = {**{n: {0: "batch"} for n in in_names}, OUTPUT_NAME: {0: "batch"}} if settings.dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation notice
        torch.onnx.export(twin, args(example), str(path), dynamo=False, opset_version=max(settings.opset, 13),
                          input_names=in_names, output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True)
    postprocess(path, flavor)
