"""Per-layer precision from measurement: a layer the target runs faster in float than in int8 (thin layers: the
Q/DQ around a small GEMM costs more than the int8 kernel saves; onnxruntime#20052, #17389) stays float, and the
shipped INT8 artifact is compared with its FP32 twin measured on the same target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def layer_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Conv/Linear module names in call order: the order ``latency.model_blocks`` lists their blocks in."""
    from edgekd.passes.sparsity import execution_order

    return execution_order(model, example)


@dataclass(frozen=True)
class LayerPrecision:
    layer: str
    int8_ms: float
    fp32_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "int8_ms": self.int8_ms, "fp32_ms": self.fp32_ms,
                "float_speedup": self.int8_ms / self.fp32_ms if self.fp32_ms else None}


def float_faster_layers(model: nn.Module, example: torch.Tensor, int8_table: Any, fp32_table: Any, *,
                        margin: float = 0.10) -> list[LayerPrecision]:
    """Layers whose FP32 table entry is more than ``margin`` faster than their INT8 entry on the table's target."""
    names = layer_names(model, example)
    int8 = int8_table.blocks(model, example)
    fp32 = fp32_table.blocks(model, example)
    if not (len(names) == len(int8) == len(fp32)):
        return []  # a layer the hooks saw that the table did not time (e.g. Conv1d): decide nothing
    return [LayerPrecision(n, i_ms, f_ms) for n, (_, i_ms), (_, f_ms) in zip(names, int8, fp32, strict=True)
            if f_ms < i_ms * (1 - margin)]


def with_float_layers(recipe: Any, layers: list[str]) -> Any:
    """``recipe`` with ``layers`` added to its quantize pass's ``exclude`` (kept FP32)."""
    import dataclasses

    passes = []
    for spec in recipe.passes:
        if spec.name == "quantize" and layers:
            config = dataclasses.replace(spec.config, exclude=tuple(dict.fromkeys([*spec.config.exclude, *layers])))
            spec = dataclasses.replace(spec, config=config)
        passes.append(spec)
    return dataclasses.replace(recipe, passes=tuple(passes))


def slower_than_fp32(int8: dict[str, Any], fp32: dict[str, Any]) -> bool:
    """True when the INT8 artifact is slower than its FP32 twin beyond noise: the lower CI end of its p90 is above
    the upper CI end of the twin's."""
    return float(int8["p90_ci_ms"][0]) > float(fp32["p90_ci_ms"][1])
