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
from edgekd.quant.qdq import build_twin

_WEIGHTED_OPS = {"Conv", "Gemm", "MatMul"}


def _remove_identities(model: Any) -> None:
    """The TorchScript exporter emits Identity nodes for shared buffers; rewire and drop them."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def _unshare_weight_dq_params(model: Any) -> int:
    """Give every weight/bias DequantizeLinear its own scale and zero-point initializers.

    The TorchScript exporter deduplicates equal-valued initializers, so e.g. the all-zero weight zero
    points of every 192-output layer of a ViT become one tensor. OpenVINO then cannot match its
    weight-dequantization pattern for those layers and runs them in f32 (measured: 24 of 49 vit_tiny
    FullyConnected layers); a private copy per node (a few hundred bytes each) keeps them int8.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    copies = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        for idx in range(1, len(node.input)):
            name = node.input[idx]
            if name not in inits or users[name] < 2:
                continue
            private = f"{node.name or node.output[0]}.param{idx}"
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]), private))
            node.input[idx] = private
            users[name] -= 1
            copies += 1
    return copies


def _quantize_before_relu(model: Any) -> int:
    """ORT flavor: ``Conv/Gemm -> Relu -> QuantizeLinear`` with a zero point above the type minimum (a
    signed quantizer stored as uint8, e.g. a ReLU branch concatenated with a signed one, or symmetric
    activations) keeps the Conv in float: ONNX Runtime folds a Relu into a Q only when the zero point is
    the type minimum. Insert the same Q/DQ between the Conv and the Relu. Exact: rounding is monotone
    and 0 maps to the zero point, so Q(relu(y)) == max(Q(y), zp) == Q(relu(DQ(Q(y)))).
    Returns how many Relus were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    rewritten = 0
    for relu in [n for n in graph.node if n.op_type == "Relu"]:
        src = producers.get(relu.input[0])
        users = consumers.get(relu.output[0], [])
        if (src is None or src.op_type not in ("Conv", "Gemm") or len(consumers.get(relu.input[0], [])) != 1
                or relu.input[0] in graph_outputs or relu.output[0] in graph_outputs or not users
                or any(u.op_type != "QuantizeLinear" or len(u.input) < 3 for u in users)):
            continue
        q = users[0]
        scale, zp = q.input[1], q.input[2]
        if scale not in inits or zp not in inits:
            continue
        if any(not (np.array_equal(values[u.input[1]], values[scale]) and np.array_equal(values[u.input[2]], values[zp])
                    and values[u.input[2]].dtype == values[zp].dtype) for u in users):
            continue
        zp_value = values[zp]
        if zp_value.size != 1 or int(zp_value.reshape(())) == int(np.iinfo(zp_value.dtype).min):
            continue  # ORT already folds this Relu into the Q
        name = relu.name or relu.output[0]
        q_out, dq_out = f"{name}_edgekd_q", f"{name}_edgekd_dq"
        new_q = helper.make_node("QuantizeLinear", [relu.input[0], scale, zp], [q_out], name=f"{name}_edgekd_Q")
        new_dq = helper.make_node("DequantizeLinear", [q_out, scale, zp], [dq_out], name=f"{name}_edgekd_DQ")
        idx = list(graph.node).index(relu)
        graph.node.insert(idx, new_dq)
        graph.node.insert(idx, new_q)
        relu.input[0] = dq_out
        rewritten += 1
    return rewritten


def _drop_output_qdq(model: Any) -> int:
    """TensorRT flavor: no Q/DQ on a weighted op's output that only feeds the graph output
    (TensorRT's guidance: do not quantize weighted-op outputs; the logits stay float)."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    removed = 0
    for out in graph.output:
        dq = producers.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = producers.get(q.input[0])
        if src is None or src.op_type not in _WEIGHTED_OPS | {"Add"}:
            continue
        consumers = [n for n in graph.node if q.input[0] in n.input]
        if len(consumers) != 1:
            continue
        idx = list(src.output).index(q.input[0])
        src.output[idx] = out.name
        graph.node.remove(q)
        graph.node.remove(dq)
        removed += 1
    return removed


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
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if settings.dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation notice
        torch.onnx.export(twin, (example,), str(path), dynamo=False, opset_version=max(settings.opset, 13),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True)
    postprocess(path, flavor)
