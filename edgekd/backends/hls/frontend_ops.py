"""Front-end handlers for the layout, upsampling, activation and output ops of segmentation, signal, anomaly and
detection models: Slice, Split, Resize, ConvTranspose, Sigmoid/HardSigmoid/HardSwish and a final Softmax.

``ExtraOps`` is a base of the front end's walker (``frontend._Frontend``), which supplies ``get``/``const``/
``attrs``. What ONNX Runtime does with each on the QDQ graph decides the lowering:
  Slice, Split, nearest Resize   ORT drops their QDQ pair and copies int8 codes: a ``Gather`` (exact)
  bilinear Resize, ConvTranspose ORT runs DQ -> float op -> Q: a ``Pending`` lowered at its Q
  Sigmoid, HardSigmoid, HardSwish ORT runs them in float between DQ and Q: a 256-entry table of its results
  Softmax (graph output only)   computed in float32 on the host after the top function
  Shape, Gather, Unsqueeze, Squeeze, Cast, Slice/Concat of constants: the shape arithmetic an exporter writes
  around a Resize to a skip connection's size, folded to constants (every non-batch size is static; batch = 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.backends.hls import ir
from edgekd.backends.hls.lowering import GraphBuilder
from edgekd.backends.hls.values import Act, Const, FloatIn, Pending, QAct, QConst, SoftmaxOut

_F32 = np.float32
_INT64_MAX = 2**63 - 1


def _text(value: Any, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def original_coordinate(mode: str, out_len: int, in_len: int, scale: float) -> np.ndarray:
    """ONNX Runtime's output -> input coordinate per coordinate_transformation_mode, in float32 as it computes it."""
    x = np.arange(out_len, dtype=_F32)
    s, half = _F32(scale), _F32(0.5)
    if mode == "asymmetric":
        return x / s
    if mode == "half_pixel":
        return (x + half) / s - half
    if mode == "pytorch_half_pixel":
        return (x + half) / s - half if out_len > 1 else np.zeros(out_len, _F32)
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / s
    if mode == "align_corners":
        return np.zeros(out_len, _F32) if out_len == 1 else x * _F32(in_len - 1) / _F32(out_len - 1)
    raise ValueError(mode)


def nearest_index(mode: str, coord: np.ndarray, in_len: int, downsample: bool) -> np.ndarray:
    """ONNX Runtime's nearest pixel for each original coordinate (nearest_mode), clamped into the input."""
    c = coord.astype(np.float64)
    away = np.where(c >= 0, np.floor(c + 0.5), np.ceil(c - 0.5))  # std::round: halves away from zero
    if mode == "round_prefer_floor":
        idx = np.where(c == np.trunc(c) + 0.5, np.floor(c), away)
    elif mode == "round_prefer_ceil":
        idx = away
    elif mode == "floor":
        idx = np.floor(coord)
    elif mode == "ceil":
        idx = np.ceil(coord)
    else:  # opset 10 "simple"
        idx = np.ceil(coord) if downsample else np.trunc(coord)
    return np.clip(idx.astype(np.int64), 0, in_len - 1).astype(np.int32)


def bilinear_taps(coord: np.ndarray, in_len: int) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's bilinear setup for one axis: the two input indices and their float32 weights per output."""
    c = np.clip(coord, _F32(0), _F32(in_len - 1)).astype(_F32)
    i1 = np.minimum(c.astype(np.int64), in_len - 1)
    i2 = np.minimum(i1 + 1, in_len - 1)
    d1 = np.abs(c - i1.astype(_F32)).astype(_F32)  # distance to the first tap: the weight of the second
    d2 = np.abs(c - i2.astype(_F32)).astype(_F32)
    same = i1 == i2
    d1, d2 = np.where(same, _F32(0.5), d1), np.where(same, _F32(0.5), d2)
    return np.stack([i1, i2], 1).astype(np.int32), np.stack([d2, d1], 1).astype(_F32)


class ExtraOps(GraphBuilder):
    """Handlers ``op_<OpType>``; ``values`` maps each ONNX value name to what is known about it."""

    values: dict[str, Any]

    def get(self, node: Any, name: str, *kinds: type) -> Any:
        raise NotImplementedError

    def const(self, node: Any, name: str) -> np.ndarray:
        raise NotImplementedError

    def attrs(self, node: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _reshape(self, node: Any, fn: Any) -> None:
        raise NotImplementedError

    def _optional_const(self, node: Any, index: int) -> np.ndarray | None:
        if len(node.input) > index and node.input[index]:
            value = self.const(node, node.input[index])
            return value if value.size else None
        return None

    def _gather(self, node: Any, x: Act, out_name: str, ranges: list[np.ndarray]) -> None:
        """Copy ``x`` through per-axis index ranges (original rank, without batch) into a new tensor of x's parameters."""
        t = self.tensors[x.tensor]
        if len(t.shape) not in (1, 2, 3):
            raise self.err(node, f"{node.op_type} on a tensor of rank {len(t.shape) + 1} ({[1, *t.shape]}) is not supported",
                           hint="the HLS layers work on [N, F], [N, C, L] and [N, C, H, W]")
        rank3 = [np.arange(d, dtype=np.int32) for d in ir.as_rank3(t.shape)]
        slots = {1: [2], 2: [0, 2], 3: [0, 1, 2]}[len(t.shape)]
        for slot, r in zip(slots, ranges):
            rank3[slot] = np.asarray(r, np.int32)
        shape = tuple(len(r) for r in ranges)
        if 0 in shape:
            raise self.err(node, f"{node.op_type} gives an empty tensor ({list(shape)}) from input {list(t.shape)}")
        out = self.new_tensor(out_name, shape, t.dtype, t.scale, t.zero_point)
        self.layers.append(ir.Gather(self.layer_name(node.name or out_name), [x.tensor], out,
                                     index=(rank3[0], rank3[1], rank3[2])))
        self.values[out_name] = Act(out, x.scale, x.zero_point)  # a copy keeps the quantization

    def _axis(self, node: Any, axis: int, rank: int) -> int:
        """An ONNX axis (with batch) as an index into the shape without batch; the batch axis is refused."""
        axis = axis + rank if axis < 0 else axis
        if axis <= 0 or axis >= rank:
            raise self.err(node, f"{node.op_type} along axis {axis} (the batch axis or out of range) is not supported")
        return axis - 1

    # ------------------------------------------------------------------ copies of int8 codes

    def _slices(self, node: Any) -> list[tuple[int, int, int, int]]:
        """Slice's (axis, start, end, step) per sliced axis, axes as given (with batch, maybe negative)."""
        a = self.attrs(node)
        if len(node.input) >= 3:  # opset >= 10: starts, ends, axes, steps as inputs
            starts, ends = self.const(node, node.input[1]), self.const(node, node.input[2])
            axes, steps = self._optional_const(node, 3), self._optional_const(node, 4)
        else:
            starts, ends, axes, steps = np.array(a["starts"]), np.array(a["ends"]), a.get("axes"), None
        starts_, ends_ = [int(v) for v in np.ravel(starts)], [int(v) for v in np.ravel(ends)]
        axes_ = list(range(len(starts_))) if axes is None else [int(v) for v in np.ravel(axes)]
        steps_ = [1] * len(starts_) if steps is None else [int(v) for v in np.ravel(steps)]
        # Python slicing clamps start/end exactly as the ONNX Slice spec does
        return [(ax, max(min(st, _INT64_MAX), -_INT64_MAX), en, sp) for ax, st, en, sp in zip(axes_, starts_, ends_, steps_)]

    def op_Slice(self, node: Any) -> None:
        value = self.get(node, node.input[0], Act, Const)
        if isinstance(value, Const):  # shape arithmetic
            index = [slice(None)] * value.value.ndim
            for axis, start, end, step in self._slices(node):
                index[axis] = slice(start, end, step)
            self.values[node.output[0]] = Const(value.value[tuple(index)])
            return
        shape = self.act_shape(value)
        ranges = [np.arange(d) for d in shape]
        for axis, start, end, step in self._slices(node):
            if (axis + len(shape) + 1) % (len(shape) + 1) == 0:
                if start == 0 and end >= 1 and step == 1:
                    continue  # the whole batch
                raise self.err(node, "Slice along the batch axis is not supported")
            k = self._axis(node, axis, len(shape) + 1)
            ranges[k] = np.arange(shape[k])[slice(start, end, step)]
        self._gather(node, value, node.output[0], ranges)

    def op_Split(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        shape = self.act_shape(x)
        a = self.attrs(node)
        k = self._axis(node, int(a.get("axis", 0)), len(shape) + 1)
        sizes = self._optional_const(node, 1)
        n_out, dim = len(node.output), shape[k]
        if sizes is not None:
            parts = [int(v) for v in np.ravel(sizes)]
        elif "split" in a:
            parts = [int(v) for v in a["split"]]
        else:  # equal parts; opset 18 num_outputs makes the last one smaller when it does not divide
            chunk = -(-dim // n_out)
            parts = [chunk] * (n_out - 1) + [dim - chunk * (n_out - 1)]
        if sum(parts) != dim or len(parts) != n_out:
            raise self.err(node, f"Split sizes {parts} do not cover axis length {dim} with {n_out} outputs")
        offset = 0
        for out_name, size in zip(node.output, parts):
            ranges = [np.arange(d) for d in shape]
            ranges[k] = np.arange(offset, offset + size)
            offset += size
            if out_name:
                self._gather(node, x, out_name, ranges)

    def op_Resize(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        shape = self.act_shape(x)
        a = self.attrs(node)
        mode = _text(a.get("mode"), "nearest")
        coord_mode = _text(a.get("coordinate_transformation_mode"), "half_pixel" if len(node.input) > 2 else "asymmetric")
        if mode not in ("nearest", "linear"):
            raise self.err(node, f"Resize mode {mode!r} is not supported", hint="use nearest or (bi)linear upsampling")
        if coord_mode == "tf_crop_and_resize" or int(a.get("antialias", 0)) or a.get("axes") is not None or \
                _text(a.get("keep_aspect_ratio_policy"), "stretch") != "stretch":
            raise self.err(node, f"Resize with coordinate_transformation_mode {coord_mode!r}, antialias, axes or a "
                                 "keep_aspect_ratio_policy is not supported")
        in_dims = (1, *shape)
        scales = self._optional_const(node, 1 if len(node.input) == 2 else 2)
        sizes = self._optional_const(node, 3)
        if sizes is not None:
            out_dims = [int(v) for v in np.ravel(sizes)]
            scales = np.array([_F32(o) / _F32(i) for o, i in zip(out_dims, in_dims)], _F32)
        elif scales is not None:
            scales = np.ravel(scales).astype(_F32)
            out_dims = [int(_F32(s) * _F32(d)) for s, d in zip(scales, in_dims)]
        else:
            raise self.err(node, "Resize needs constant scales or sizes")
        if len(out_dims) != len(in_dims) or out_dims[:2] != list(in_dims[:2]):
            raise self.err(node, f"Resize may only change the spatial axes (input {list(in_dims)}, output {out_dims})")
        spatial = list(range(2, len(in_dims)))
        coords = [original_coordinate(coord_mode, out_dims[i], in_dims[i], float(scales[i])) for i in spatial]
        if mode == "nearest":
            nearest = _text(a.get("nearest_mode"), "round_prefer_floor" if len(node.input) > 2 else "simple")
            ranges = [np.arange(shape[0])] + [nearest_index(nearest, c, in_dims[i], float(scales[i]) < 1)
                                              for c, i in zip(coords, spatial)]
            self._gather(node, x, node.output[0], ranges)
            return
        if len(shape) not in (2, 3):
            raise self.err(node, f"linear Resize is supported on [N, C, L] and [N, C, H, W], got input {[1, *shape]}")
        taps = [bilinear_taps(c, in_dims[i]) for c, i in zip(coords, spatial)]
        if len(shape) == 2:  # 1-D: one row with weight 1 (ORT runs it as trilinear: within 1 LSB, not bit-exact)
            taps.insert(0, (np.zeros((1, 2), np.int32), np.array([[1.0, 0.0]], _F32)))
        (yi, wy), (xi, wx) = taps
        attrs = {"y_index": yi, "x_index": xi, "wy": wy, "wx": wx, "out_shape": (shape[0], *out_dims[2:])}
        self.values[node.output[0]] = Pending("resize", node.name or node.output[0], [x], attrs)

    # ------------------------------------------------------------------ float ops between DQ and Q

    def _table_op(self, node: Any, function: str, **params: float) -> None:
        x = self.get(node, node.input[0], Act)
        self.values[node.output[0]] = Pending("lut", node.name or node.output[0], [x], {"function": function, **params})

    def op_Sigmoid(self, node: Any) -> None:
        self._table_op(node, "Sigmoid")

    def op_HardSigmoid(self, node: Any) -> None:
        a = self.attrs(node)
        self._table_op(node, "HardSigmoid", alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)))

    def op_HardSwish(self, node: Any) -> None:
        self._table_op(node, "HardSwish")

    def op_ConvTranspose(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        w = self.get(node, node.input[1], QConst)
        a = self.attrs(node)
        shape = self.act_shape(x)
        kdims = w.q.ndim - 2
        if kdims not in (1, 2) or len(shape) != kdims + 1:
            raise self.err(node, f"only 1-D and 2-D ConvTranspose is supported (weights {list(w.q.shape)}, input {list(shape)})")
        if _text(a.get("auto_pad"), "NOTSET") != "NOTSET" or a.get("output_shape") is not None:
            raise self.err(node, "ConvTranspose with auto_pad or output_shape is not supported",
                           hint="export with explicit pads (and output_padding)")
        groups = int(a.get("group", 1))
        if w.scale.size > 1 and (w.axis % w.q.ndim != 1 or groups != 1):
            raise self.err(node, "per-channel ConvTranspose weights must be quantized along the output axis (1), "
                                 "with group = 1", hint="quantize ConvTranspose weights per tensor")
        pads = list(a.get("pads", [0] * 2 * kdims))
        strides, dil = list(a.get("strides", [1] * kdims)), list(a.get("dilations", [1] * kdims))
        out_pad = list(a.get("output_padding", [0] * kdims))
        if kdims == 1:
            pads, strides, dil, out_pad = [0, pads[0], 0, pads[1]], [1, *strides], [1, *dil], [0, *out_pad]
        n_out = w.q.shape[1] * groups
        bias = None
        if len(node.input) > 2 and node.input[2]:
            b = self.values.get(node.input[2])
            bias = b if isinstance(b, QConst) else np.asarray(self.const(node, node.input[2]), _F32).reshape(n_out)
        attrs = {"pads": tuple(pads), "stride": tuple(strides), "dilation": tuple(dil), "output_padding": tuple(out_pad),
                 "groups": groups, "w": w, "bias": bias, "kdims": kdims}
        self.values[node.output[0]] = Pending("conv_transpose", node.name or node.output[0], [x], attrs)

    def op_Softmax(self, node: Any) -> None:
        x = self.get(node, node.input[0], Act)
        shape = self.act_shape(x)
        a = self.attrs(node)
        axis = self._axis(node, int(a.get("axis", -1)), len(shape) + 1)
        if axis != len(shape) - 1:
            raise self.err(node, f"Softmax is supported over the last axis only (axis {a.get('axis', -1)}, input "
                                 f"{[1, *shape]})")
        self.values[node.output[0]] = SoftmaxOut(x, axis)

    # ------------------------------------------------------------------ shape arithmetic, folded

    def _static_shape(self, node: Any, name: str) -> tuple[int, ...]:
        """The full shape (batch 1) of a value the front end knows."""
        value = self.get(node, name, Act, QAct, FloatIn, Const)
        if isinstance(value, Const):
            return tuple(value.value.shape)
        if isinstance(value, FloatIn):
            return (1, *value.shape)
        return (1, *self.tensors[value.tensor].shape)

    def op_Shape(self, node: Any) -> None:
        a = self.attrs(node)
        dims = np.array(self._static_shape(node, node.input[0]), np.int64)
        start, end = int(a.get("start", 0)), a.get("end")
        self.values[node.output[0]] = Const(dims[start:None if end is None else int(end)])

    def op_Gather(self, node: Any) -> None:
        data = self.get(node, node.input[0], Const, Act)
        if isinstance(data, Act):
            raise self.err(node, "Gather of an activation is not supported (only shape arithmetic on constants)",
                           hint="index with Slice, or keep the gather outside the exported model")
        index = self.const(node, node.input[1])
        self.values[node.output[0]] = Const(np.take(data.value, index, axis=int(self.attrs(node).get("axis", 0))))

    def op_Cast(self, node: Any) -> None:
        from onnx import helper

        value = self.get(node, node.input[0], Const)
        to = helper.tensor_dtype_to_np_dtype(int(self.attrs(node)["to"]))
        self.values[node.output[0]] = Const(value.value.astype(to))

    def _axes(self, node: Any) -> list[int] | None:
        axes = self._optional_const(node, 1)
        if axes is None:
            axes = self.attrs(node).get("axes")
        return None if axes is None else [int(v) for v in np.ravel(axes)]

    def op_Unsqueeze(self, node: Any) -> None:
        axes = self._axes(node) or []
        value = self.get(node, node.input[0], Const, Act)
        if isinstance(value, Const):
            rank = value.value.ndim + len(axes)
            self.values[node.output[0]] = Const(np.expand_dims(value.value, tuple(sorted(a % rank for a in axes))))
            return
        rank = len(self.act_shape(value)) + 1 + len(axes)
        if 0 in [a % rank for a in axes]:
            raise self.err(node, "Unsqueeze before the batch axis is not supported")
        self._reshape(node, lambda shape: np.expand_dims(np.zeros((1, *shape)), tuple(sorted(a % rank for a in axes))).shape[1:])

    def op_Squeeze(self, node: Any) -> None:
        axes = self._axes(node)
        value = self.get(node, node.input[0], Const, Act)
        if isinstance(value, Const):
            self.values[node.output[0]] = Const(np.squeeze(value.value, None if axes is None else tuple(axes)))
            return
        rank = len(self.act_shape(value)) + 1
        if axes is None:
            raise self.err(node, "Squeeze without axes would squeeze the batch axis too (for a batch of 1)",
                           hint="give Squeeze its axes (torch: x.squeeze(dim))")
        if 0 in [a % rank for a in axes]:
            raise self.err(node, "Squeeze of the batch axis is not supported")
        self._reshape(node, lambda shape: tuple(d for i, d in enumerate(shape, start=1) if i not in [a % rank for a in axes]))
