"""One index over an ONNX graph: who produces a value, who reads it, which values are constants.

Every module that reads or rewrites ONNX protobuf (inspect, lint, the int8 proof, OpenVINO's clip
folding, the exporter's rewrites, parity, the HLS front end) goes through ``OnnxGraph`` instead of
building its own dictionaries. The index is built once in O(nodes + edges); lookups are O(1);
constants are converted to numpy on first use and cached. It works on the ``onnx.ModelProto`` the
caller already holds and edits it in place (see ARCHITECTURE.md for why not ``onnx_ir``).
Torch-free; imports only numpy at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: ops that carry a stored weight to the compute op reading it: the weight is the first input, the
#: other inputs are parameters (scale, zero point, bounds, shape). The one list every "follow a weight
#: back to its initializer" walk uses.
WEIGHT_PATH_OPS = frozenset({"DequantizeLinear", "QuantizeLinear", "Clip", "Transpose", "Reshape", "Cast", "Identity"})
#: the same, short of dequantization: a value reached through these is the stored (integer) weight itself
STORED_WEIGHT_OPS = WEIGHT_PATH_OPS - {"DequantizeLinear"}
_MAX_PATH = 16  # longer chains do not occur in exported models; the bound keeps a malformed cyclic file finite


def attribute(node: Any, name: str, default: Any = None) -> Any:
    """The Python value of attribute ``name`` of ``node`` (``default`` when absent)."""
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def attributes(node: Any) -> dict[str, Any]:
    """Every attribute of ``node`` as {name: Python value}."""
    from onnx import helper

    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def opset(model: Any) -> int:
    """The default-domain opset of ``model`` (0 when none is declared)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def label(node: Any) -> str:
    """A node's name, or ``Op->first output`` for unnamed nodes."""
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


@dataclass
class WeightPath:
    """Where a weight input comes from: ``root`` is the constant the chain starts at (None when the chain
    reaches a non-constant), ``nodes`` the pass-through nodes from the compute op back towards it."""

    root: str | None
    nodes: list[Any] = field(default_factory=list)

    def first(self, op_type: str) -> Any:
        """The pass-through node of ``op_type`` nearest the compute op, or None."""
        return next((n for n in self.nodes if n.op_type == op_type), None)


class OnnxGraph:
    """Producer, consumers and constants of one graph (a ModelProto's main graph, or a GraphProto).

    Rewrites (``set_input``, ``replace_uses``, ``add_initializer``, ``rebuild``) keep the index true.
    After ``rebuild`` the node objects handed out before are stale: look nodes up again.
    """

    def __init__(self, model_or_graph: Any) -> None:
        self.graph = model_or_graph.graph if hasattr(model_or_graph, "graph") else model_or_graph
        self._index()

    def _index(self) -> None:
        graph = self.graph
        self.nodes: list[Any] = list(graph.node)
        self._initializers: dict[str, Any] = {t.name: t for t in graph.initializer}
        self._producer: dict[str, Any] = {}
        self._consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for out in node.output:
                self._producer[out] = node
            for name in node.input:
                self._consumers.setdefault(name, []).append(node)
        self._arrays: dict[str, np.ndarray | None] = {}
        self.outputs: set[str] = {o.name for o in graph.output}

    # ------------------------------------------------------------------ lookups

    def producer(self, name: str) -> Any:
        """The node that writes ``name`` (None for graph inputs, initializers and unknown names)."""
        return self._producer.get(name)

    def consumers(self, name: str) -> list[Any]:
        """The nodes that read ``name``, one entry per use (a node reading it twice appears twice)."""
        return self._consumers.get(name, [])

    def initializer(self, name: str) -> Any:
        """The TensorProto initializer called ``name``, or None."""
        return self._initializers.get(name)

    def initializer_names(self) -> list[str]:
        return list(self._initializers)

    def constant_proto(self, name: str) -> Any:
        """The TensorProto behind ``name``: an initializer or a ``Constant`` node's ``value``, else None."""
        if not name:
            return None
        init = self._initializers.get(name)
        if init is not None:
            return init
        node = self._producer.get(name)
        if node is not None and node.op_type == "Constant":
            return next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        return None

    def constant(self, name: str) -> np.ndarray | None:
        """``name`` as a numpy array when it is an initializer or a Constant's value, else None (cached)."""
        if name not in self._arrays:
            from onnx import numpy_helper

            proto = self.constant_proto(name)
            self._arrays[name] = numpy_helper.to_array(proto) if proto is not None else None
        return self._arrays[name]

    def is_constant(self, name: str) -> bool:
        return self.constant_proto(name) is not None

    def follow_weight(self, name: str, through: frozenset[str] = WEIGHT_PATH_OPS) -> WeightPath:
        """Walk from a compute op's weight input back through ``through`` ops (first input each) to a constant."""
        path: list[Any] = []
        for _ in range(_MAX_PATH):
            if self.is_constant(name):
                return WeightPath(name, path)
            node = self._producer.get(name)
            if node is None or node.op_type not in through or not node.input:
                break
            path.append(node)
            name = node.input[0]
        return WeightPath(None, path)

    # ------------------------------------------------------------------ rewrites

    def set_input(self, node: Any, index: int, name: str) -> None:
        """Make input ``index`` of ``node`` read ``name``."""
        old = node.input[index]
        if old == name:
            return
        uses = self._consumers.get(old, [])
        for i, user in enumerate(uses):
            if user is node:
                del uses[i]
                break
        node.input[index] = name
        self._consumers.setdefault(name, []).append(node)

    def replace_uses(self, old: str, new: str) -> int:
        """Every node that reads ``old`` reads ``new`` instead (graph outputs are left alone). Returns the count."""
        count = 0
        for user in list(self.consumers(old)):
            for i, name in enumerate(user.input):
                if name == old:
                    self.set_input(user, i, new)
                    count += 1
        return count

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        """Append ``array`` as initializer ``name``; returns the name."""
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self._initializers[name] = self.graph.initializer[-1]
        self._arrays.pop(name, None)
        return name

    def remove_initializers(self, names: Iterable[str]) -> None:
        drop = set(names)
        if not drop:
            return
        keep = [t for t in self.graph.initializer if t.name not in drop]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        self._index()

    def rebuild(self, remove: Iterable[Any] = (), insert_before: Mapping[int, list[Any]] | None = None) -> None:
        """Drop the ``remove`` nodes and insert new nodes before anchors (keyed by ``id(anchor)``), in one
        O(n) pass over the node list, then re-index."""
        dropped = {id(n) for n in remove}
        inserts = insert_before or {}
        keep = [new for node in self.nodes if id(node) not in dropped
                for new in (*inserts.get(id(node), ()), node)]
        del self.graph.node[:]
        self.graph.node.extend(keep)
        self._index()
