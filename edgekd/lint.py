"""Static checks of an ONNX file against a runtime's rules, before anyone builds on the device.

``lint_tensorrt`` encodes TensorRT's explicit-quantization and 2:4 rules (see ../shared DESIGN facts):

* opset >= 13 (per-channel Q/DQ needs it);
* INT8 Q/DQ only, symmetric: zero point 0 and of type int8 (uint8 / non-zero zero points are rejected);
* activations per-tensor; weights per-tensor or per-channel on the *output-channel* axis;
* no ``QLinear*`` / ``*Integer`` operators (TensorRT's parser rejects them);
* Q/DQ on every input of Conv/Gemm/MatMul, and on the residual input of skip Adds, else the layer
  runs in float or the Add cannot fuse into the convolution;
* 2:4 sparsity of each weight (groups of 4 input channels) and the "channels >= 256" hint.

Levels: ``error`` = TensorRT rejects the graph or quantizes it wrongly; ``warning`` = it builds, but
part of the model will not run (or fuse) in int8/sparse; ``info`` = facts. Torch-free.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.errors import ConfigError

Level = Literal["error", "warning", "info"]

#: operators TensorRT's ONNX parser refuses (integer-arithmetic formats instead of Q/DQ)
FORBIDDEN_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd",
                           "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool",
                           "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "MatMulIntegerToFloat",
                           "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention", "QEmbedLayerNormalization"})
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
SPARSE_MIN_CHANNELS = 256  # below this TensorRT rarely picks a sparse tactic (NVIDIA's guidance)
_PASS_THROUGH = ("Clip", "QuantizeLinear", "Identity", "Reshape", "Transpose", "Cast")  # between an initializer and its DQ


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str
    node: str | None = None
    hint: str | None = None


@dataclass
class LintReport:
    model: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, level: Level, check: str, message: str, node: str | None = None, hint: str | None = None) -> None:
        self.findings.append(Finding(level, check, message, node, hint))

    def count(self, level: Level) -> int:
        return sum(1 for f in self.findings if f.level == level)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return self.count("error") == 0

    @property
    def clean(self) -> bool:
        """No errors and no warnings."""
        return self.ok and self.count("warning") == 0

    def checks(self, level: Level | None = None) -> set[str]:
        return {f.check for f in self.findings if level is None or f.level == level}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "ok": self.ok, "clean": self.clean,
                "errors": self.count("error"), "warnings": self.count("warning"),
                "findings": [asdict(f) for f in self.findings], "stats": self.stats}

    def to_text(self, max_nodes: int = 5) -> str:
        """Findings grouped by (level, check): one line each with the first few node names."""
        lines = [f"lint {self.model} for {self.target}: {self.count('error')} error(s), "
                 f"{self.count('warning')} warning(s)"]
        groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
        order = {"error": 0, "warning": 1, "info": 2}
        for f in self.findings:
            groups[(f.level, f.check, f.message if f.node is None else _generic(f))].append(f)
        for (level, check, generic), items in sorted(groups.items(), key=lambda kv: order[kv[0][0]]):
            first = items[0]
            if len(items) == 1:
                lines.append(f"  {level.upper():7s} {check}: {first.message}")
            else:
                nodes = [f.node for f in items if f.node]
                more = f" (+{len(nodes) - max_nodes} more)" if len(nodes) > max_nodes else ""
                lines.append(f"  {level.upper():7s} {check}: {generic} (x{len(items)}): {', '.join(nodes[:max_nodes])}{more}")
            if first.hint:
                lines.append(f"          hint: {first.hint}")
        return "\n".join(lines)


def _generic(f: Finding) -> str:
    """The message without the node-specific part (messages put the node name after ': ')."""
    return f.message.split(": ", 1)[0]


# ---------------------------------------------------------------- graph helpers


class _Graph:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self._np = numpy_helper
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in self.nodes:
            for name in n.input:
                self.consumers[name].append(n)

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.inits:
            return self._np.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.HasField("t"):
                return self._np.to_array(attr.t)
        return None

    def is_weight(self, name: str) -> bool:
        """True if ``name`` is computed from constants only (initializer, possibly via Clip/Q/Reshape)."""
        seen = 0
        while seen < 4:
            if self.const(name) is not None:
                return True
            node = self.producer.get(name)
            if node is None or node.op_type not in _PASS_THROUGH:
                return False
            name = node.input[0]
            seen += 1
        return False

    def weight_array(self, name: str) -> np.ndarray | None:
        """The stored weight behind ``name`` (through DequantizeLinear/Clip/Q), or None."""
        for _ in range(4):
            value = self.const(name)
            if value is not None:
                return value
            node = self.producer.get(name)
            if node is None or node.op_type not in (*_PASS_THROUGH, "DequantizeLinear"):
                return None
            name = node.input[0]
        return None

    def attr(self, node: Any, key: str, default: Any) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == key:
                return helper.get_attribute_value(a)
        return default

    def label(self, node: Any) -> str:
        return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"

    def from_dq(self, name: str) -> bool:
        node = self.producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"


def _opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _weight_axes(g: _Graph, node: Any, rank: int) -> tuple[int, int] | None:
    """(output-channel axis, input-channel axis) of a weighted node's weight (input 1)."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "ConvTranspose":
        return 1, 0
    if node.op_type == "Gemm":
        return (0, 1) if g.attr(node, "transB", 0) else (1, 0)
    if node.op_type == "MatMul" and rank >= 2:
        return rank - 1, rank - 2
    return None


# ---------------------------------------------------------------- the TensorRT checks


def _feeds_bias(g: _Graph, node: Any) -> bool:
    return any(u.op_type in WEIGHTED_OPS and len(u.input) > 2 and u.input[2] == node.output[0]
               for u in g.consumers.get(node.output[0], []))


def _check_qdq(g: _Graph, report: LintReport) -> None:
    from onnx import TensorProto

    for node in g.nodes:
        if node.op_type not in QDQ_OPS:
            continue
        label = g.label(node)
        scale = g.const(node.input[1]) if len(node.input) > 1 else None
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = g.const(zp_name)
        if zp_name and zp is None:
            report.add("error", "qdq-constant", f"{node.op_type} zero point is not a constant: {label}", label)
        elif not zp_name:
            if node.op_type == "QuantizeLinear" and not g.attr(node, "output_dtype", 0):
                report.add("warning", "qdq-int8", f"QuantizeLinear has no zero point, so ONNX makes its output "
                           f"uint8: {label}", label, hint="give an explicit int8 zero point of 0")
        else:
            elem = (g.inits[zp_name].data_type if zp_name in g.inits else None)
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
        block = int(g.attr(node, "block_size", 0) or 0)
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
        axis = int(g.attr(node, "axis", 1))
        axis = axis + rank if axis < 0 else axis
        for user in g.consumers.get(node.output[0], []):
            if user.op_type not in WEIGHTED_OPS or len(user.input) < 2 or user.input[1] != node.output[0]:
                continue
            axes = _weight_axes(g, user, rank)
            if axes is not None and axes[0] != axis:
                report.add("error", "qdq-weight-axis", f"per-channel weight scale of {user.op_type} "
                           f"{g.label(user)} is on axis {axis}, not the output-channel axis {axes[0]}: {label}", label,
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
                   f"it in float: {g.label(node)}", g.label(node),
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
        producers = [g.producer.get(name) for name in node.input]
        residual = [name for name, p in zip(node.input, producers)
                    if p is None or p.op_type not in WEIGHTED_OPS] or list(node.input)
        report.add("warning", "qdq-residual-add", f"skip Add has no Q/DQ on its residual input "
                   f"{residual[0]!r}; TensorRT cannot fuse it into the convolution in int8: {g.label(node)}",
                   g.label(node), hint="quantize the residual (identity) branch input of the Add")
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
        groups = int(g.attr(node, "group", 1)) if node.op_type in ("Conv", "ConvTranspose") else 1
        label = g.label(node)
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
    opset = _opset(model)
    ops = Counter(n.op_type for n in g.nodes)
    report.stats.update(opset=opset, nodes=len(g.nodes), quantize_linear=ops.get("QuantizeLinear", 0),
                        dequantize_linear=ops.get("DequantizeLinear", 0))
    quantized_model = ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0) > 0
    if opset < 13 and (quantized_model or require_int8):
        report.add("error", "opset", f"opset {opset} is below 13; TensorRT's per-channel Q/DQ needs opset >= 13",
                   hint="re-export with opset 13 or newer (edgekd exports 17)")
    elif opset < 13:  # a float model: TensorRT's parser reads opset 9+, only int8 (Q/DQ) needs 13
        report.add("info", "opset", f"opset {opset}: fine for a float build; int8 Q/DQ would need opset >= 13",
                   hint="re-export with opset 13 or newer before quantizing (edgekd exports 17)")
    for node in g.nodes:
        if node.op_type in FORBIDDEN_OPS or node.op_type.startswith("QLinear") or node.op_type.endswith("Integer"):
            report.add("error", "qlinear-ops", f"{node.op_type} is not supported by TensorRT: {g.label(node)}",
                       g.label(node), hint="export explicit QuantizeLinear/DequantizeLinear (QDQ format) instead")
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


LINTERS = {"tensorrt": lint_tensorrt}


def lint(model_path: str | Path, target: str = "tensorrt", **kwargs: Any) -> LintReport:
    """Lint ``model_path`` for ``target``: a linter name (``tensorrt``) or a target name/path whose backend
    has a linter (its options supply ``sparse_weights`` and whether int8 is required)."""
    if target in LINTERS:
        return LINTERS[target](model_path, **kwargs)
    from edgekd.config import load_target

    tgt = load_target(target)
    if tgt.backend not in LINTERS:
        raise ConfigError(f"no linter for backend {tgt.backend!r}; linters exist for: {', '.join(LINTERS)}",
                          where=tgt.source)
    options = tgt.options
    kwargs.setdefault("sparse_weights", getattr(options, "sparse_weights", None))
    kwargs.setdefault("require_int8", getattr(options, "precision", None) == "int8")
    report = LINTERS[tgt.backend](model_path, **kwargs)
    report.target = f"{tgt.backend} ({tgt.name})"
    return report


def write_report(report: LintReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
