"""TensorRT's lint: an ONNX file checked against TensorRT's explicit-quantization and 2:4 rules, before any build.

* opset >= 13 (per-channel Q/DQ needs it);
* INT8 Q/DQ only, symmetric: zero point 0 and of type int8 (uint8 / non-zero zero points are rejected);
* activations per-tensor; weights per-tensor or per-channel on the *output-channel* axis;
* no ``QLinear*`` / ``*Integer`` operators (TensorRT's parser rejects them);
* Q/DQ on every input of Conv/Gemm/MatMul, and on the residual input of skip Adds, else the layer
  runs in float or the Add cannot fuse into the convolution;
* 2:4 sparsity of each weight (groups of 4 input channels) and the "channels >= 256" hint.

Levels: ``error`` = TensorRT rejects the graph or quantizes it wrongly; ``warning`` = it builds, but
part of the model will not run (or fuse) in int8/sparse; ``info`` = facts. The backend exposes it as
``TensorRTBackend.linter``; ``edgekd lint`` finds it there. Torch-free; imports no tensorrt.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.lint import LintReport
from edgekd.onnxgraph import STORED_WEIGHT_OPS, OnnxGraph, attribute, opset
from edgekd.onnxgraph import label as node_label

#: operators TensorRT's ONNX parser refuses (integer-arithmetic formats instead of Q/DQ)
FORBIDDEN_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd",
                           "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool",
                           "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "MatMulIntegerToFloat",
                           "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention", "QEmbedLayerNormalization"})
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
SPARSE_MIN_CHANNELS = 256  # below this TensorRT rarely picks a sparse tactic (NVIDIA's guidance)


class _Graph(OnnxGraph):
    def is_weight(self, name: str) -> bool:
        """True if ``name`` is a stored weight: a constant, possibly behind Clip/Q/Reshape/... (not dequantized)."""
        return self.follow_weight(name, STORED_WEIGHT_OPS).root is not None

    def weight_array(self, name: str) -> np.ndarray | None:
        """The stored weight behind ``name`` (through DequantizeLinear/Clip/Q/...), or None."""
        root = self.follow_weight(name).root
        return self.constant(root) if root is not None else None

    def from_dq(self, name: str) -> bool:
        node = self.producer(name)
        return node is not None and node.op_type == "DequantizeLinear"


def _weight_axes(g: _Graph, node: Any, rank: int) -> tuple[int, int] | None:
    """(output-channel axis, input-channel axis) of a weighted node's weight (input 1)."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "ConvTranspose":
        return 1, 0
    if node.op_type == "Gemm":
        return (0, 1) if attribute(node, "transB", 0) else (1, 0)
    if node.op_type == "MatMul" and rank >= 2:
        return rank - 1, rank - 2
    return None


# ---------------------------------------------------------------- the TensorRT checks


def _feeds_bias(g: _Graph, node: Any) -> bool:
    return any(u.op_type in WEIGHTED_OPS and len(u.input) > 2 and u.input[2] == node.output[0]
               for u in g.consumers(node.output[0]))


def _check_qdq(g: _Graph, report: LintReport) -> None:
    from onnx import TensorProto

    for node in g.nodes:
        if node.op_type not in QDQ_OPS:
            continue
        label = node_label(node)
        scale = g.constant(node.input[1]) if len(node.input) > 1 else None
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = g.constant(zp_name)
        if zp_name and zp is None:
            report.add("error", "qdq-constant", f"{node.op_type} zero point is not a constant: {label}", label)
        elif not zp_name:
            if node.op_type == "QuantizeLinear" and not attribute(node, "output_dtype", 0):
                report.add("warning", "qdq-int8", f"QuantizeLinear has no zero point, so ONNX makes its output "
                           f"uint8: {label}", label, hint="give an explicit int8 zero point of 0")
        else:
            init = g.initializer(zp_name)
            elem = init.data_type if init is not None else None
            if zp.dtype == np.uint8 or elem == TensorProto.UINT8:
                report.add("error", "qdq-int8", f"Q/DQ uses uint8; TensorRT supports symmetric int8 only: {label} "
                           f"(zero point {int(zp.flat[0])})", label,
                           hint="quantize with int8 activations and weights, symmetric (zero point 0)")
            elif zp.dtype == np.int8 and np.any(zp != 0):
                report.add("error", "qdq-symmetric", f"Q/DQ is asymmetric (non-zero zero point): {label} "
                           f"(zero point {int(zp.flat[np.flatnonzero(zp)[0]])})", label,
                           hint="TensorRT needs zero point 0; quantize with symmetric activations")
            elif zp.dtype == np.int32 and node.op_type == "DequantizeLinear" and _feeds_bias(g, node):
                pass  # int32 bias DQ (ORT's QDQ format); TensorRT folds it back into a float bias
            elif zp.dtype != np.int8:
                report.add("info", "qdq-type", f"Q/DQ type is not int8: {label} ({zp.dtype})", label)
        if scale is None:
            report.add("error", "qdq-constant", f"{node.op_type} scale is not a constant: {label}", label)
            continue
        if scale.size <= 1:
            continue
        block = int(attribute(node, "block_size", 0) or 0)
        if block and g.is_weight(node.input[0]):
            # opset-21 blocked scales (one per `block` input channels): TensorRT 10 takes them for weight-only
            # INT4 Gemm/MatMul weights; the per-channel axis rule below does not apply to them
            report.add("info", "qdq-block", f"{node.op_type} has blocked scales (block_size {block}); TensorRT "
                       f"supports them for INT4 weight-only quantization of MatMul/Gemm weights: {label}", label)
            continue
        if not g.is_weight(node.input[0]):
            report.add("error", "qdq-per-tensor-activation", f"{node.op_type} on an activation has "
                       f"{scale.size} scales (per-channel); TensorRT needs per-tensor activations: {label}", label)
            continue
        if node.op_type != "DequantizeLinear":
            continue
        weight = g.weight_array(node.input[0])
        rank = weight.ndim if weight is not None else 0
        axis = int(attribute(node, "axis", 1))
        axis = axis + rank if axis < 0 else axis
        for user in g.consumers(node.output[0]):
            if user.op_type not in WEIGHTED_OPS or len(user.input) < 2 or user.input[1] != node.output[0]:
                continue
            axes = _weight_axes(g, user, rank)
            if axes is not None and axes[0] != axis:
                report.add("error", "qdq-weight-axis", f"per-channel weight scale of {user.op_type} "
                           f"{node_label(user)} is on axis {axis}, not the output-channel axis {axes[0]}: {label}", label,
                           hint="quantize weights per output channel (axis 0 for Conv weights [K, C, R, S])")


def _check_weighted_inputs(g: _Graph, report: LintReport) -> tuple[int, int]:
    """Q/DQ on every input of Conv/Gemm/MatMul. Returns (quantized layers, weighted layers)."""
    quantized = total = 0
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS:
            continue
        total += 1
        missing = [i for i, name in enumerate(node.input[:2]) if not g.from_dq(name)]
        if not missing:
            quantized += 1
            continue
        which = " and ".join("activation (input 0)" if i == 0 else "weight (input 1)" for i in missing)
        report.add("warning", "qdq-weighted-inputs", f"{node.op_type} has no Q/DQ on its {which}, so TensorRT runs "
                   f"it in float: {node_label(node)}", node_label(node),
                   hint="put QuantizeLinear/DequantizeLinear on every input of Conv/Gemm/MatMul")
    return quantized, total


def _check_residual_adds(g: _Graph, report: LintReport) -> int:
    """A skip Add (two activation inputs) needs Q/DQ on the residual input so it fuses into the conv in int8."""
    adds = 0
    for node in g.nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        if any(g.is_weight(name) for name in node.input):
            continue  # bias-like add, not a skip connection
        adds += 1
        from_dq = [g.from_dq(name) for name in node.input]
        if any(from_dq):
            continue
        producers = [g.producer(name) for name in node.input]
        residual = [name for name, p in zip(node.input, producers)
                    if p is None or p.op_type not in WEIGHTED_OPS] or list(node.input)
        report.add("warning", "qdq-residual-add", f"skip Add has no Q/DQ on its residual input "
                   f"{residual[0]!r}; TensorRT cannot fuse it into the convolution in int8: {node_label(node)}",
                   node_label(node), hint="quantize the residual (identity) branch input of the Add")
    return adds


def _check_sparsity(g: _Graph, report: LintReport, sparse_weights: bool | None) -> list[dict[str, Any]]:
    from edgekd.nm import check_nm, ineligible_reason

    layers = []
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight = g.weight_array(node.input[1])
        if weight is None or weight.ndim < 2:
            continue
        axes = _weight_axes(g, node, weight.ndim)
        if axes is None:
            continue
        groups = int(attribute(node, "group", 1)) if node.op_type in ("Conv", "ConvTranspose") else 1
        label = node_label(node)
        reason = ineligible_reason(tuple(weight.shape), axis=axes[1], groups=groups)
        entry: dict[str, Any] = {"node": label, "op": node.op_type, "shape": list(weight.shape),
                                 "in_channels": int(weight.shape[axes[1]]), "out_channels": int(weight.shape[axes[0]])}
        if reason is None:
            res = check_nm(weight, 2, 4, axis=axes[1])
            entry.update(eligible=True, compliant=res.compliant, sparsity=round(res.sparsity, 4),
                         groups_ok=res.groups_ok, groups=res.groups)
        else:
            entry.update(eligible=False, compliant=False, reason=reason,
                         sparsity=round(float(np.mean(weight == 0)), 4))
        layers.append(entry)
    compliant = [la for la in layers if la["compliant"]]
    if sparse_weights:
        if not compliant:
            report.add("warning", "sparsity-2to4", "SPARSE_WEIGHTS is requested but no weight follows the 2:4 "
                       "pattern", hint="run the sparsify_2to4 pass, or set sparse_weights = false")
        for la in layers:
            if la["eligible"] and not la["compliant"] and compliant:
                report.add("warning", "sparsity-2to4", f"weight is not 2:4 ({la['groups_ok']}/{la['groups']} "
                           f"groups ok), TensorRT uses a dense kernel: {la['node']}", la["node"])
    elif compliant:
        report.add("info", "sparsity-2to4", f"{len(compliant)} of {len(layers)} weighted layers are 2:4 sparse",
                   hint="set sparse_weights = true in the TensorRT target to allow sparse tensor-core tactics")
    for la in compliant:
        if la["in_channels"] < SPARSE_MIN_CHANNELS:
            report.add("info", "sparsity-channels", f"2:4 layer has {la['in_channels']} input channels "
                       f"(< {SPARSE_MIN_CHANNELS}); TensorRT rarely picks a sparse tactic there: {la['node']}",
                       la["node"])
    return layers


def lint_tensorrt(model: Any, *, sparse_weights: bool | None = None, require_int8: bool = False,
                  name: str | None = None) -> LintReport:
    """Check an ONNX model (path or ModelProto) against TensorRT's explicit-quantization and 2:4 rules.

    ``sparse_weights``: True when the target enables SPARSE_WEIGHTS (non-2:4 layers become warnings).
    ``require_int8``: a model without any Q/DQ is an error (the target asks for int8).
    """

    if isinstance(model, (str, Path)):
        from edgekd.onnx_files import read_onnx

        path = Path(model)
        name = name or str(path)
        model = read_onnx(path)
    report = LintReport(model=name or model.graph.name or "model", target="tensorrt")
    g = _Graph(model)
    opset_version = opset(model)
    ops = Counter(n.op_type for n in g.nodes)
    report.stats.update(opset=opset_version, nodes=len(g.nodes), quantize_linear=ops.get("QuantizeLinear", 0),
                        dequantize_linear=ops.get("DequantizeLinear", 0))
    quantized_model = ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0) > 0
    if opset_version < 13 and (quantized_model or require_int8):
        report.add("error", "opset", f"opset {opset_version} is below 13; TensorRT's per-channel Q/DQ needs opset >= 13",
                   hint="re-export with opset 13 or newer (edgekd exports 17)")
    elif opset_version < 13:  # a float model: TensorRT's parser reads opset 9+, only int8 (Q/DQ) needs 13
        report.add("info", "opset", f"opset {opset_version}: fine for a float build; int8 Q/DQ would need opset >= 13",
                   hint="re-export with opset 13 or newer before quantizing (edgekd exports 17)")
    for node in g.nodes:
        if node.op_type in FORBIDDEN_OPS or node.op_type.startswith("QLinear") or node.op_type.endswith("Integer"):
            report.add("error", "qlinear-ops", f"{node.op_type} is not supported by TensorRT: {node_label(node)}",
                       node_label(node), hint="export explicit QuantizeLinear/DequantizeLinear (QDQ format) instead")
    if quantized_model:
        _check_qdq(g, report)
        quantized, total = _check_weighted_inputs(g, report)
        adds = _check_residual_adds(g, report)
        report.stats.update(quantized_layers=quantized, weighted_layers=total, skip_adds=adds)
        report.stats["expected_precision"] = "int8" if quantized == total else ("mixed" if quantized else "fp32")
    else:
        total = sum(ops.get(op, 0) for op in WEIGHTED_OPS)
        report.stats.update(quantized_layers=0, weighted_layers=total, expected_precision="fp32")
        if require_int8:
            report.add("error", "qdq-missing", "the model has no Q/DQ nodes; TensorRT int8 needs explicit quantization",
                       hint="use an int8 profile (e.g. int8-kd), or set precision = \"fp32\"/\"fp16\" in the target")
        elif not any(f.check == "qlinear-ops" for f in report.findings):
            report.add("info", "float-model", "no Q/DQ nodes: TensorRT builds this model in float")
    report.stats["sparsity"] = _check_sparsity(g, report, sparse_weights)
    return report
