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
    raw: bool = False  # copy the inputs' codes unchanged into an int32 float graph output (Graph.output_dequant)

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
class Gather(Layer):
    """A copy through per-axis index tables: ``y[c, h, w] = x[index[0][c], index[1][h], index[2][w]]`` on the
    input viewed as rank 3 (leading axes of size 1 added). Slice, each Split output and nearest Resize are this;
    the values and their quantization are unchanged."""

    index: tuple[np.ndarray, np.ndarray, np.ndarray] = ()  # type: ignore[assignment]  # int32, one per axis

    kind = "gather"


@dataclass
class Lookup(Layer):
    """An elementwise function of one int8/uint8 input as a table (hls4ml's way with activations): ``y = table[x - lo]``
    with ``lo`` the input type's minimum; the table holds what ONNX Runtime computes for every input code."""

    table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # output codes, 256 entries
    function: str = ""  # Sigmoid | HardSigmoid | HardSwish

    kind = "lut"


@dataclass
class ConvTranspose(Layer):
    """Transposed convolution (1-D is H = 1): ``y[o] += (x[i] - zp) * w`` for every input tap that reaches ``o``.
    ``weights`` [M, C/groups, KH, KW] (output channel first, as ``Conv``) with the zero point removed."""

    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    requant: Requant | None = None

    kind = "conv_transpose"

    def macs(self, tensors: dict[str, Tensor]) -> int:
        return tensors[self.inputs[0]].size * self.weights.shape[0] // self.groups * int(np.prod(self.weights.shape[2:]))


@dataclass
class Resize(Layer):
    """Bilinear resize of [C, H, W] (1-D: H = 1): each output pixel mixes rows ``y0/y1`` and columns ``x0/x1``.
    ``wy``/``wx`` [n, 2] are ONNX Runtime's float32 weights (float path); ``wy_int``/``wx_int`` the same weights
    in units of 2**-frac_bits, whose integer sum ``requant`` brings to the output scale (fixed-point path)."""

    y_index: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    x_index: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    wy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    wx: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    wy_int: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    wx_int: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    frac_bits: int = 8
    requant: Requant | None = None
    in_scale: float = 1.0
    out_scale: float = 1.0

    kind = "resize"


@dataclass(frozen=True)
class HostSoftmax:
    """Softmax over ``axis`` (without batch) of the dequantized top-function output, computed in float32 on the
    host (io.h), then quantized with ``scale``/``zero_point`` when the graph quantizes it (``dtype``), as ORT does."""

    axis: int
    scale: float | None = None
    zero_point: int = 0
    dtype: str | None = None


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
    # per output element (C order) float = (q - zero_point) * scale + bias, when a Concat mixes quantized tensors
    # and raw accumulators with different scales into the float graph output (None: one scale / output_layer)
    output_dequant: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    softmax: HostSoftmax | None = None  # a Softmax after the top function, on the host

    @property
    def float_output(self) -> bool:
        return self.output.dtype == "int32"


def as_rank3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A tensor shape (without batch) as [C, H, W]: 1-D tensors are [C, 1, L], flat ones [1, 1, N]."""
    dims = (1,) * (3 - len(shape)) + tuple(shape)
    if len(shape) == 2:
        dims = (shape[0], 1, shape[1])
    if len(dims) != 3:
        raise ValueError(f"tensors of rank {len(shape)} (without batch) are not supported, got {list(shape)}")
    return dims[0], dims[1], dims[2]
