"""What the HLS front end knows about each ONNX value while it walks a QDQ graph.

The walk is a small abstract interpretation: each ONNX value is known as one of
  FloatIn   the float graph input (possibly flattened) before its QuantizeLinear
  QConst    a dequantized initializer (weights, bias)
  Const     a plain initializer / Constant (shapes, clip bounds, float bias)
  QAct      a quantized activation tensor (output of Q)
  Act       the float view DQ(q) of a quantized activation
  Pending   a float result (Conv, Gemm, Add, pooling, ...) waiting for its QuantizeLinear
  SoftmaxOut  a final Softmax, computed on the host
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FloatIn:
    shape: tuple[int, ...]


@dataclass
class Const:
    value: np.ndarray


@dataclass
class QConst:
    q: np.ndarray  # integer values
    scale: np.ndarray  # float32, scalar or [C]
    zero_point: np.ndarray
    axis: int

    def centered(self) -> np.ndarray:
        zp = self.zero_point
        if zp.ndim == 1 and self.q.ndim > 1:
            zp = zp.reshape([-1 if i == self.axis % self.q.ndim else 1 for i in range(self.q.ndim)])
        return self.q.astype(np.int64) - zp.astype(np.int64)


@dataclass
class QAct:
    tensor: str


@dataclass
class Act:
    tensor: str
    scale: float
    zero_point: int


@dataclass
class Pending:
    op: str  # conv | dense | add | avgpool | concat | identity | conv_transpose | lut | resize
    node: str
    inputs: list[Any]  # Act; a concat may also hold pending Conv/Gemm results (lowered at its Q or the output)
    attrs: dict[str, Any] = field(default_factory=dict)
    lo: float = -np.inf  # float clamp from Relu/Clip
    hi: float = np.inf


@dataclass
class SoftmaxOut:
    """Softmax of a dequantized activation, left to the host: only the graph output (or its Q/DQ) may follow it."""

    act: Act
    axis: int
    scale: float | None = None  # the QuantizeLinear after it, if any
    zero_point: int = 0
    dtype: str | None = None


KIND_WORDS = {
    FloatIn: "the float graph input (not quantized yet)",
    Const: "a float/plain constant",
    QConst: "a dequantized constant (weight or bias)",
    QAct: "a quantized tensor (QuantizeLinear output)",
    Act: "a dequantized activation (DequantizeLinear output)",
    Pending: "a float result with no QuantizeLinear after it",
    SoftmaxOut: "a Softmax result (computed on the host: only the graph output may follow it)",
}
