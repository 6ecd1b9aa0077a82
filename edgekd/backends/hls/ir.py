"""The small typed layer IR between the ONNX front end and the C++ writer.

Everything here is integer-domain: activations are int8/uint8 tensors with one scale and
zero point, weights are stored with their zero point already subtracted, and every layer
that changes scale carries a ``Requant`` describing both arithmetic variants the writer
can emit (float32 multiply as ONNX Runtime does it, or integer multiplier + shift).
Shapes never include the batch dimension: the generated top function handles one sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-(2**31), 2**31 - 1)}


@dataclass(frozen=True)
class Tensor:
    """A quantized activation buffer (one sample)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # int8 | uint8 | int32 (int32 only for a float graph output fed by raw accumulators)
    scale: float  # float32 value; per-channel for int32 outputs lives in the producing layer
    zero_point: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


def fixed_point(value: float, bits: int = 31) -> tuple[int, int]:
    """``value ~= m / 2**s`` with ``2**(bits-1) <= m < 2**bits``. A float32 ``value`` (24-bit
    mantissa) is represented exactly, so the integer path differs from ORT's float path only
    where float32 rounding of the product itself moves a result across a .5 tie."""
    if value <= 0:
        raise ValueError(f"requantization scale must be positive, got {value}")
    mant, exp = np.frexp(np.float64(value))  # value = mant * 2**exp, 0.5 <= mant < 1
    shift = bits - int(exp)
    if shift < 0:
        raise ValueError(f"requantization scale {value} is too large for a {bits}-bit multiplier")
    if shift > 62:  # tiny scales: drop precision rather than overflow the 64-bit product
        return max(1, round(float(value) * 2.0**62)), 62
    return round(float(mant) * 2.0**bits), shift


@dataclass(frozen=True)
class Requant:
    """acc -> clamp(round(acc * M) + zero_point, lo, hi), per output channel.

    ``scale`` is the float32 multiplier exactly as ONNX Runtime's fused int8 kernels compute
    it; ``multiplier``/``shift`` is the same value as an integer pair (exact shifts when the
    scales are powers of two). Rounding is half-to-even in both variants, like ORT.
    """

    scale: np.ndarray  # float32 [C] (C = 1 for per-tensor)
    multiplier: np.ndarray  # int64 [C]
    shift: np.ndarray  # int64 [C]
    zero_point: int
    lo: int
    hi: int

    @classmethod
    def from_scale(cls, scale: np.ndarray, zero_point: int, lo: int, hi: int) -> Requant:
        scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
        pairs = [fixed_point(float(s)) for s in scale]
        return cls(scale, np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64),
                   int(zero_point), int(lo), int(hi))

    @property
    def power_of_two(self) -> bool:
        return all(float(s) == 2.0 ** np.round(np.log2(float(s))) for s in self.scale)


@dataclass(frozen=True)
class Rescale:
    """One input's dequantize-then-requantize factor for Add/Concat/Requant layers:
    float path ``float(x - zp) * in_scale`` (as ORT's DequantizeLinear), fixed path
    ``(x - zp) * multiplier`` summed and shifted by the layer's common ``shift``."""

    in_scale: float  # float32
    in_zero_point: int
    multiplier: int


@dataclass
class Layer:
    name: str  # ONNX node name it came from (sanitized for C++ by the writer)
    inputs: list[str]  # tensor names
    output: str  # tensor name
    reuse: int = 1

    kind = "layer"

    def macs(self, tensors: dict[str, Tensor]) -> int:
        return 0


@dataclass
class Conv(Layer):
    """2D convolution (1D is H = 1). ``weights`` [M, C/groups, KH, KW] with zero point removed."""

    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    requant: Requant | None = None  # None: raw int32 accumulators (float graph output)
    out_scale: np.ndarray | None = None  # float32 [M] dequantization scale when requant is None
    out_bias: np.ndarray | None = None  # float32 [M] float bias added after dequantization

    kind = "conv"

    def macs(self, tensors: dict[str, Tensor]) -> int:
        return tensors[self.output].size * int(np.prod(self.weights.shape[1:]))


@dataclass
class Dense(Layer):
    """Fully connected: ``weights`` [N_out, N_in] with zero point removed."""

    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    requant: Requant | None = None
    out_scale: np.ndarray | None = None
    out_bias: np.ndarray | None = None

    kind = "dense"

    def macs(self, tensors: dict[str, Tensor]) -> int:
        return int(self.weights.size)


@dataclass
class Pool(Layer):
    """Max or average pooling (global average pooling is a pool over the whole plane)."""

    mode: str = "max"  # max | avg
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False
    requant: Requant | None = None  # avg only: one entry per possible window count (index = count - 1)
    # AveragePool: ORT dequantizes, averages in float32 and quantizes (float32 mode follows that);
    # GlobalAveragePool: ORT sums integers and requantizes once (as the fixed-point path always does)
    float_average: bool = False
    in_scale: float = 1.0
    out_scale: float = 1.0

    kind = "pool"


@dataclass
class Add(Layer):
    """Elementwise sum of two quantized tensors of the same shape, each rescaled to the output."""

    rescale: tuple[Rescale, ...] = ()
    shift: int = 0
    out_scale: float = 1.0
    zero_point: int = 0
    lo: int = -128
    hi: int = 127

    kind = "add"


@dataclass
class Concat(Layer):
    """Concatenation along ``axis`` (without batch) with a per-input rescale."""

    axis: int = 0
    rescale: tuple[Rescale, ...] = ()
    shift: int = 0
    out_scale: float = 1.0
    zero_point: int = 0
    lo: int = -128
    hi: int = 127

    kind = "concat"


@dataclass
class Elementwise(Layer):
    """Requantize one tensor to new parameters, with an optional clamp (Relu/Clip on a
    dequantized activation); the identity when nothing changes."""

    rescale: tuple[Rescale, ...] = ()
    shift: int = 0
    out_scale: float = 1.0
    zero_point: int = 0
    lo: int = -128
    hi: int = 127

    kind = "requant"


@dataclass
class Reshape(Layer):
    """Flatten/Reshape: the C-order buffer is unchanged, only the shape changes."""

    kind = "reshape"


@dataclass
class Graph:
    """The whole model: input quantization, layers in execution order, output dequantization."""

    name: str
    input_name: str  # ONNX graph input name
    output_name: str  # ONNX graph output name
    input_float_shape: tuple[int, ...]  # float input without batch (before any float reshape)
    input: Tensor
    output: Tensor
    tensors: dict[str, Tensor]
    layers: list[Layer]
    output_layer: Layer | None = None  # set when the output is raw int32 accumulators

    @property
    def float_output(self) -> bool:
        return self.output.dtype == "int32"
