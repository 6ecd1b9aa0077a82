"""Writer: IR -> a Vitis HLS project (firmware/, testbench, build_prj.tcl, README).

The generated code is plain C++14 with fixed-width integers, so the same sources compile with
g++ for C simulation; ``-DEDGEKD_AP_TYPES`` switches the accumulators to ``ap_int<N>`` for
synthesis. Layer arithmetic lives in ``templates/edgekd_nnet.h``; this module only writes
configuration structs, weight headers and the top function that calls the layers in order.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.backends.hls import ir

TEMPLATES = Path(__file__).resolve().parent / "templates"
TOP = "edgekd_top"
CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t"}


@dataclass(frozen=True)
class CodegenSettings:
    part: str
    clock_period_ns: float
    io_type: str  # io_parallel | io_stream
    accum_bits: int
    requant: str  # float32 | fixed_point


def _f(v: float) -> str:
    """An exact float32 literal (9 significant digits round-trip)."""
    text = f"{float(np.float32(v)):.9g}"
    if not np.isfinite(np.float32(v)):
        raise ValueError(f"non-finite float constant {v}")
    return (text if any(c in text for c in ".e") else text + ".0") + "f"


def _array(ctype: str, name: str, values: np.ndarray, per_line: int = 16) -> str:
    flat = np.asarray(values).reshape(-1)
    fmt = _f if ctype == "float" else (lambda v: str(int(v)))
    rows = [", ".join(fmt(v) for v in flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(rows) if rows else "0"
    return f"static const {ctype} {name}[{max(len(flat), 1)}] = {{\n    {body}\n}};\n"


def n_mult(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> int:
    """Parallel multipliers: the multiplications of one pipeline iteration divided by the reuse factor."""
    if isinstance(layer, (ir.Conv, ir.ConvTranspose)):
        per_pixel = layer.weights.shape[0] * int(np.prod(layer.weights.shape[1:]))
        return max(1, math.ceil(per_pixel / layer.reuse))
    if isinstance(layer, ir.Dense):
        return max(1, math.ceil(layer.weights.size / layer.reuse))
    return 0


def _requant_fields(rq: ir.Requant | None, raw: bool) -> list[str]:
    if rq is None:
        return ["static const bool raw = true;", "static const bool per_channel = false;", "static const int32_t out_zp = 0;",
                "static const int32_t lo = -2147483647 - 1;", "static const int32_t hi = 2147483647;"]
    return [f"static const bool raw = {'true' if raw else 'false'};",
            f"static const bool per_channel = {'true' if len(rq.scale) > 1 else 'false'};",
            f"static const int32_t out_zp = {rq.zero_point};", f"static const int32_t lo = {rq.lo};",
            f"static const int32_t hi = {rq.hi};"]


def _struct(name: str, fields: list[str]) -> str:
    return f"struct {name} {{\n" + "".join(f"    {f}\n" for f in fields) + "};\n"


def layer_config(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> str:
    cfg = f"config_{layer.name}"
    x = tensors[layer.inputs[0]]
    y = tensors[layer.output]
    if isinstance(layer, (ir.Conv, ir.ConvTranspose)):
        m, _, kh, kw = layer.weights.shape
        _, ih, iw = ir.as_rank3(x.shape)
        _, oh, ow = ir.as_rank3(y.shape)
        f = [f"static const int in_c = {x.shape[0]};", f"static const int in_h = {ih};", f"static const int in_w = {iw};",
             f"static const int out_c = {m};", f"static const int out_h = {oh};", f"static const int out_w = {ow};",
             f"static const int k_h = {kh};", f"static const int k_w = {kw};", f"static const int s_h = {layer.stride[0]};",
             f"static const int s_w = {layer.stride[1]};", f"static const int p_t = {layer.pads[0]};",
             f"static const int p_l = {layer.pads[1]};", f"static const int d_h = {layer.dilation[0]};",
             f"static const int d_w = {layer.dilation[1]};", f"static const int groups = {layer.groups};",
             f"static const int32_t in_zp = {x.zero_point};", f"static const int reuse = {layer.reuse};",
             f"static const int n_mult = {n_mult(layer, tensors)};", *_requant_fields(layer.requant, layer.requant is None)]
        return _struct(cfg, f)
    if isinstance(layer, ir.Dense):
        f = [f"static const int n_in = {layer.weights.shape[1]};", f"static const int n_out = {layer.weights.shape[0]};",
             f"static const int32_t in_zp = {x.zero_point};", f"static const int reuse = {layer.reuse};",
             f"static const int n_mult = {n_mult(layer, tensors)};", *_requant_fields(layer.requant, layer.requant is None)]
        return _struct(cfg, f)
    if isinstance(layer, ir.Pool):
        (c, ih, iw), (_, oh, ow) = ir.as_rank3(x.shape), ir.as_rank3(y.shape)
        f = [f"static const int c = {c};", f"static const int in_h = {ih};", f"static const int in_w = {iw};",
             f"static const int out_h = {oh};", f"static const int out_w = {ow};",
             f"static const int k_h = {layer.kernel[0]};", f"static const int k_w = {layer.kernel[1]};",
             f"static const int s_h = {layer.stride[0]};", f"static const int s_w = {layer.stride[1]};",
             f"static const int p_t = {layer.pads[0]};", f"static const int p_l = {layer.pads[1]};",
             f"static const bool count_include_pad = {'true' if layer.count_include_pad else 'false'};",
             f"static const bool is_max = {'true' if layer.mode == 'max' else 'false'};",
             f"static const int32_t in_zp = {x.zero_point};", f"static const int reuse = {layer.reuse};",
             f"static const bool float_average = {'true' if layer.float_average else 'false'};",
             f"static constexpr float in_scale = {_f(layer.in_scale)};",
             f"static constexpr float out_scale = {_f(layer.out_scale)};"]
        rq = layer.requant or ir.Requant.from_scale(np.ones(1, np.float32), 0, -128, 127)
        # per_channel here means "one multiplier per window count"
        f += [*_requant_fields(rq, False)[1:]]
        f[-4] = "static const bool per_channel = true;"
        return _struct(cfg, f)
    extra = _extra_config(layer, tensors)
    if extra is not None:
        return _struct(cfg, extra)
    common = [f"static const int32_t out_zp = {layer.zero_point};", f"static const int32_t lo = {layer.lo};",
              f"static const int32_t hi = {layer.hi};", f"static constexpr float out_scale = {_f(layer.out_scale)};",
              f"static const int shift = {layer.shift};"]
    if isinstance(layer, ir.Add):
        a, b = layer.rescale
        f = [f"static const int n = {y.size};", f"static const int32_t a_zp = {a.in_zero_point};",
             f"static const int32_t b_zp = {b.in_zero_point};", f"static constexpr float a_scale = {_f(a.in_scale)};",
             f"static constexpr float b_scale = {_f(b.in_scale)};", f"static const int64_t a_mult = {a.multiplier};",
             f"static const int64_t b_mult = {b.multiplier};", f"static const int reuse = {layer.reuse};", *common]
        return _struct(cfg, f)
    if isinstance(layer, ir.Elementwise):
        r = layer.rescale[0]
        f = [f"static const int n = {y.size};", f"static const int32_t in_zp = {r.in_zero_point};",
             f"static constexpr float in_scale = {_f(r.in_scale)};", f"static const int64_t mult = {r.multiplier};",
             f"static const int unroll = {max(1, math.ceil(y.size / layer.reuse))};", *common]
        return _struct(cfg, f)
    if isinstance(layer, ir.Concat):
        out = []
        outer = int(np.prod(y.shape[: layer.axis]))
        out_inner = int(np.prod(y.shape[layer.axis :]))
        offset = 0
        for i, (tname, r) in enumerate(zip(layer.inputs, layer.rescale)):
            inner = int(np.prod(tensors[tname].shape[layer.axis :]))
            out.append(_struct(f"{cfg}_{i}", [
                f"static const int outer = {outer};", f"static const int inner = {inner};",
                f"static const int out_inner = {out_inner};", f"static const int offset = {offset};",
                f"static const int32_t in_zp = {r.in_zero_point};", f"static constexpr float in_scale = {_f(r.in_scale)};",
                f"static const int64_t mult = {r.multiplier};", f"static const bool raw = {'true' if layer.raw else 'false'};",
                *common]))
            offset += inner
        return "".join(out)
    return ""


def _extra_config(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> list[str] | None:
    """Config fields of the gather, table, bilinear-resize layers (None for the others)."""
    x, y = tensors[layer.inputs[0]], tensors[layer.output]
    if isinstance(layer, ir.Lookup):
        return [f"static const int n = {y.size};", f"static const int32_t in_lo = {ir.INT_RANGES[x.dtype][0]};",
                f"static const int unroll = {max(1, math.ceil(y.size / layer.reuse))};"]
    if not isinstance(layer, (ir.Gather, ir.Resize)):
        return None
    (c, ih, iw), (oc, oh, ow) = ir.as_rank3(x.shape), ir.as_rank3(y.shape)
    dims = [f"static const int in_c = {c};", f"static const int in_h = {ih};", f"static const int in_w = {iw};",
            f"static const int out_c = {oc};", f"static const int out_h = {oh};", f"static const int out_w = {ow};"]
    if isinstance(layer, ir.Gather):
        return dims
    assert isinstance(layer, ir.Resize) and layer.requant is not None
    return [*dims, f"static const int32_t in_zp = {x.zero_point};", f"static constexpr float in_scale = {_f(layer.in_scale)};",
            f"static constexpr float out_scale = {_f(layer.out_scale)};", f"static const int reuse = {layer.reuse};",
            *_requant_fields(layer.requant, False)]


def _weights_header(layer: ir.Layer) -> str:
    lines = [f"// {layer.kind} {layer.name}: integer weights (zero point removed), int32 bias, requantization\n"]
    if isinstance(layer, ir.Gather):
        lines += [_array("int32_t", f"i{axis}_{layer.name}", index) for axis, index in zip("chw", layer.index)]
    if isinstance(layer, ir.Lookup):
        lines.append(f"// {layer.function} of every input code, as ONNX Runtime computes it (DQ -> float -> Q)\n")
        lines.append(_array("int16_t", f"t_{layer.name}", layer.table))
    if isinstance(layer, ir.Resize):
        lines += [_array("int32_t", f"yi_{layer.name}", layer.y_index), _array("int32_t", f"xi_{layer.name}", layer.x_index),
                  _array("float", f"wyf_{layer.name}", layer.wy), _array("float", f"wxf_{layer.name}", layer.wx),
                  _array("int32_t", f"wyi_{layer.name}", layer.wy_int), _array("int32_t", f"wxi_{layer.name}", layer.wx_int)]
    if isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        wt = CTYPES[layer.weights.dtype.name]
        lines.append(_array(wt, f"w_{layer.name}", layer.weights))
        lines.append(_array("int32_t", f"b_{layer.name}", layer.bias))
    rq = getattr(layer, "requant", None)
    if rq is not None:
        lines.append(_array("float", f"mf_{layer.name}", rq.scale))
        lines.append(_array("int32_t", f"m_{layer.name}", rq.multiplier))
        lines.append(_array("int8_t", f"s_{layer.name}", rq.shift))
    guard = f"EDGEKD_W_{layer.name.upper()}_H_"
    return f"#ifndef {guard}\n#define {guard}\n\n#include <cstdint>\n\n" + "\n".join(lines) + "\n#endif\n"


def _call(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> str:
    t = {n: CTYPES[tensors[n].dtype] for n in [*layer.inputs, layer.output]}
    x, y, n = layer.inputs[0], layer.output, layer.name
    cfg = f"config_{n}"
    if isinstance(layer, ir.Gather):
        return f"ekd::gather<{cfg}, {t[x]}, {t[y]}>({x}, {y}, ic_{n}, ih_{n}, iw_{n});"
    if isinstance(layer, ir.Lookup):
        return f"ekd::lookup<{cfg}, {t[x]}, {t[y]}>({x}, {y}, t_{n});"
    if isinstance(layer, ir.Resize):
        return (f"ekd::resize_bilinear<{cfg}, {t[x]}, {t[y]}>({x}, {y}, yi_{n}, xi_{n}, wyf_{n}, wxf_{n}, wyi_{n}, wxi_{n}, "
                f"mf_{n}, m_{n}, s_{n});")
    if isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        fn = {ir.Conv: "conv2d", ir.Dense: "dense", ir.ConvTranspose: "conv_transpose2d"}[type(layer)]
        wt = CTYPES[layer.weights.dtype.name]
        rq = f"mf_{n}, m_{n}, s_{n}" if layer.requant is not None else "nullptr, nullptr, nullptr"
        return f"ekd::{fn}<{cfg}, {t[x]}, {t[y]}, {wt}>({x}, {y}, w_{n}, b_{n}, {rq});"
    if isinstance(layer, ir.Pool):
        rq = f"mf_{n}, m_{n}, s_{n}" if layer.requant is not None else "nullptr, nullptr, nullptr"
        return f"ekd::pool2d<{cfg}, {t[x]}, {t[y]}>({x}, {y}, {rq});"
    if isinstance(layer, ir.Add):
        b = layer.inputs[1]
        return f"ekd::add<{cfg}, {t[x]}, {t[b]}, {t[y]}>({x}, {b}, {y});"
    if isinstance(layer, ir.Elementwise):
        return f"ekd::requant_copy<{cfg}, {t[x]}, {t[y]}>({x}, {y});"
    if isinstance(layer, ir.Concat):
        return "\n    ".join(f"ekd::concat_part<{cfg}_{i}, {t[src]}, {t[y]}>({src}, {y});" for i, src in enumerate(layer.inputs))
    if isinstance(layer, ir.Reshape):
        return f"ekd::copy<{tensors[y].size}, {t[x]}, {t[y]}>({x}, {y});"
    raise AssertionError(layer)


def _partition_pragmas(layer: ir.Layer, tensors: dict[str, ir.Tensor]) -> list[str]:
    """ARRAY_PARTITION factors follow the multipliers a pipeline iteration needs (reuse factor)."""
    if not isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        return []
    factor = n_mult(layer, tensors)
    size = layer.weights.size
    if factor >= size:
        return [f"#pragma HLS ARRAY_PARTITION variable = w_{layer.name} complete dim = 1"]
    return [f"#pragma HLS ARRAY_PARTITION variable = w_{layer.name} cyclic factor = {factor} dim = 1"]


def write_project(graph: ir.Graph, settings: CodegenSettings, out_dir: Path) -> list[str]:
    """Write the project into ``out_dir``; returns the files written (relative paths)."""
    fw = out_dir / "firmware"
    (fw / "weights").mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def put(rel: str, text: str) -> None:
        (out_dir / rel).write_text(text)
        written.append(rel)

    tensors = graph.tensors
    shutil.copyfile(TEMPLATES / "edgekd_nnet.h", fw / "edgekd_nnet.h")
    written.append("firmware/edgekd_nnet.h")
    accum = "int64_t" if settings.accum_bits > 32 else "int32_t"
    in_t, out_t = CTYPES[graph.input.dtype], CTYPES[graph.output.dtype]
    put("firmware/defines.h", f"""// Generated by edgekd: sizes and types of the {graph.name} HLS project.
#ifndef EDGEKD_DEFINES_H_
#define EDGEKD_DEFINES_H_

#include <cstdint>

// 1: requantize with a float32 multiply exactly as ONNX Runtime's int8 kernels do;
// 0: integer multiplier + shift (no floating point in the datapath).
#ifndef EDGEKD_REQUANT_FLOAT
#define EDGEKD_REQUANT_FLOAT {1 if settings.requant == "float32" else 0}
#endif

#define N_INPUT {graph.input.size}
#define N_OUTPUT {graph.output.size}
#define ACCUM_BITS {settings.accum_bits}

#ifdef EDGEKD_AP_TYPES
#include "ap_int.h"
typedef ap_int<ACCUM_BITS> accum_t;
#else
typedef {accum} accum_t;
#endif

typedef {in_t} input_t;
typedef {out_t} result_t;

#endif
""")
    put("firmware/parameters.h", "// Generated by edgekd: one configuration struct per layer.\n"
        "#ifndef EDGEKD_PARAMETERS_H_\n#define EDGEKD_PARAMETERS_H_\n\n#include <cstdint>\n\n#include \"defines.h\"\n\n"
        + "\n".join(layer_config(layer, tensors) for layer in graph.layers if not isinstance(layer, ir.Reshape))
        + "\n#endif\n")
    includes = []
    for layer in graph.layers:
        if isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose, ir.Gather, ir.Lookup)) or \
                getattr(layer, "requant", None) is not None:
            put(f"firmware/weights/{layer.name}.h", _weights_header(layer))
            includes.append(f'#include "weights/{layer.name}.h"')
    out_desc = ("raw int32 accumulators" if graph.float_output else
                f"quantized output ({graph.output.dtype}, scale {graph.output.scale:.9g}, zero point {graph.output.zero_point})")
    put(f"firmware/{TOP}.h", f"""#ifndef EDGEKD_TOP_H_
#define EDGEKD_TOP_H_

#include "defines.h"

// One sample: quantized input ({graph.input.dtype}, scale {graph.input.scale:.9g}, zero point {graph.input.zero_point}) ->
// {out_desc}.
void {TOP}(const input_t input[N_INPUT], result_t output[N_OUTPUT]);

#endif
""")
    body = []
    if settings.io_type == "io_stream":
        iface = ["#pragma HLS INTERFACE mode = axis port = input", "#pragma HLS INTERFACE mode = axis port = output",
                 "#pragma HLS DATAFLOW"]
    else:
        iface = ["#pragma HLS INTERFACE mode = ap_vld port = input,output",
                 "#pragma HLS ARRAY_RESHAPE variable = input complete dim = 0",
                 "#pragma HLS ARRAY_PARTITION variable = output complete dim = 0",
                 "#pragma HLS DATAFLOW"]
    for layer in graph.layers:
        iface += _partition_pragmas(layer, tensors)
    aliases = {graph.input.name: "input", graph.output.name: "output"}
    for layer in graph.layers:
        y = tensors[layer.output]
        if y.name not in aliases:
            body.append(f"    {CTYPES[y.dtype]} {y.name}[{y.size}];")
            if settings.io_type == "io_stream":
                body.append(f"#pragma HLS STREAM variable = {y.name} depth = 2 type = pipo")
        body.append(f"    {_call(layer, tensors)}  // {layer.kind} {layer.name}")
    code = "\n".join(f"    {line}" if line.startswith("#pragma") else line for line in iface) + "\n\n" + "\n".join(body)
    for old, new in aliases.items():
        code = _rename(code, old, new)
    put(f"firmware/{TOP}.cpp", f"""// Generated by edgekd from {graph.name}: {len(graph.layers)} layers, {settings.io_type}.
#include "{TOP}.h"

#include "edgekd_nnet.h"
#include "parameters.h"
{chr(10).join(includes)}

void {TOP}(const input_t input[N_INPUT], result_t output[N_OUTPUT]) {{
{code}
}}
""")
    put("firmware/io.h", _io_header(graph))
    put("testbench.cpp", (TEMPLATES / "testbench.cpp").read_text().replace("@TOP@", TOP))
    put("build_prj.tcl", (TEMPLATES / "build_prj.tcl").read_text()
        .replace("@TOP@", TOP).replace("@PART@", settings.part).replace("@CLOCK@", f"{settings.clock_period_ns:g}")
        .replace("@NAME@", graph.name))
    return written


def _rename(code: str, old: str, new: str) -> str:
    import re

    return re.sub(rf"\b{re.escape(old)}\b", new, code)


def _io_header(graph: ir.Graph) -> str:
    """Host-side float <-> integer conversion, exactly as ONNX Runtime's Quantize/DequantizeLinear."""
    lo, hi = ir.INT_RANGES[graph.input.dtype]
    text = [f"""// Generated by edgekd: float input quantization and output dequantization (host / testbench side).
#ifndef EDGEKD_IO_H_
#define EDGEKD_IO_H_

#include <cmath>
#include <cstdint>

#include "defines.h"

#define N_OUTPUT_CHANNELS {graph.output.shape[0] if graph.float_output else 1}

static inline void quantize_input(const float *x, input_t *q) {{
    for (int i = 0; i < N_INPUT; i++) {{
        float v = std::nearbyint(x[i] / {_f(graph.input.scale)}) + {graph.input.zero_point}.0f;
        q[i] = (input_t)(v < {lo}.0f ? {lo} : (v > {hi}.0f ? {hi} : (int)v));
    }}
}}
"""]
    if graph.output_dequant is not None:
        scale, zero_point, bias = graph.output_dequant
        text += [_array("float", "output_scale", scale), _array("int32_t", "output_zp", zero_point),
                 _array("float", "output_bias", bias)]
        text.append("""// a Concat of differently quantized parts: int8 codes and raw int32 accumulators, dequantized per element
static inline void dequantize_output(const result_t *q, float *y) {
    for (int i = 0; i < N_OUTPUT; i++) y[i] = (float)((int32_t)q[i] - output_zp[i]) * output_scale[i] + output_bias[i];
}
static inline float output_lsb(int i) { return output_scale[i]; }
static inline int32_t output_int(float v, int i) {
    return (int32_t)std::nearbyint((v - output_bias[i]) / output_scale[i]) + output_zp[i];
}
""")
    elif graph.float_output:
        layer = graph.output_layer
        assert layer is not None and layer.out_scale is not None
        bias = layer.out_bias if layer.out_bias is not None else np.zeros_like(layer.out_scale)
        text.append(_array("float", "output_scale", layer.out_scale))
        text.append(_array("float", "output_bias", bias))
        text.append(f"""// raw int32 accumulators -> float, channel-major ({graph.output.size // graph.output.shape[0]} per channel)
static inline void dequantize_output(const result_t *q, float *y) {{
    for (int i = 0; i < N_OUTPUT; i++) {{
        const int c = i / (N_OUTPUT / N_OUTPUT_CHANNELS);
        y[i] = (float)q[i] * output_scale[c] + output_bias[c];
    }}
}}
// the output's LSB (quantization step) of element i, to report differences in LSB
static inline float output_lsb(int i) {{ return output_scale[i / (N_OUTPUT / N_OUTPUT_CHANNELS)]; }}
static inline int32_t output_int(float v, int i) {{
    return (int32_t)std::nearbyint((v - output_bias[i / (N_OUTPUT / N_OUTPUT_CHANNELS)]) / output_lsb(i));
}}
""")
    else:
        text.append(f"""static inline void dequantize_output(const result_t *q, float *y) {{
    for (int i = 0; i < N_OUTPUT; i++) y[i] = (float)((int32_t)q[i] - {graph.output.zero_point}) * {_f(graph.output.scale)};
}}
static inline float output_lsb(int) {{ return {_f(graph.output.scale)}; }}
// a dequantized reference value back to its integer code (exact for DequantizeLinear outputs)
static inline int32_t output_int(float v, int) {{
    return (int32_t)std::nearbyint(v / {_f(graph.output.scale)}) + {graph.output.zero_point};
}}
""")
    if graph.softmax is not None:
        text = [part.replace("dequantize_output(", "dequantize_logits(").replace("output_lsb(", "logits_lsb(")
                .replace("output_int(", "logits_int(") for part in text]
        text.append(_softmax_io(graph, graph.softmax))
    text.append("\n#endif\n")
    return "\n".join(text)


def _softmax_io(graph: ir.Graph, sm: ir.HostSoftmax) -> str:
    """The final Softmax over the last axis on the host. Quantized (DQ -> Softmax -> Q), ONNX Runtime runs its
    QLinearSoftmax: a float32 exp table indexed by int8 codes, a float32 sum and one rounding; this follows it
    step by step. Unquantized, a plain float32 softmax of the dequantized logits."""
    k = graph.output.shape[-1]
    head = f"// Softmax over the last axis ({k} values), computed here on the host in float32, not by the top function\n"
    if sm.scale is None or sm.dtype is None:
        return head + f"""static inline void dequantize_output(const result_t *q, float *y) {{
    dequantize_logits(q, y);
    for (int row = 0; row < N_OUTPUT / {k}; row++) {{
        float *v = y + row * {k};
        float top = v[0], sum = 0.0f;
        for (int i = 1; i < {k}; i++) top = v[i] > top ? v[i] : top;
        for (int i = 0; i < {k}; i++) {{ v[i] = std::exp(v[i] - top); sum += v[i]; }}
        for (int i = 0; i < {k}; i++) v[i] = v[i] / sum;
    }}
}}
// a float softmax is compared on a 2^-16 grid
static inline float output_lsb(int) {{ return 1.0f / 65536.0f; }}
static inline int32_t output_int(float v, int) {{ return (int32_t)std::nearbyint(v * 65536.0f); }}
"""
    signed = graph.output.dtype == "int8"
    top = 127 if signed else 255
    # as ORT: it clamps at 255 only, so an int8 code above 127 wraps (a probability near 1 reads as 0)
    store = "(int32_t)(int8_t)(vq > 255 ? 255 : vq)" if sm.dtype == "int8" else "vq > 255 ? 255 : vq"
    return head + f"""#include <algorithm>
#include <limits>
// ONNX Runtime's QLinearSoftmax (what it runs for DQ -> Softmax -> Q): exp table, float32 sum, one rounding
static inline void dequantize_output(const result_t *q, float *y) {{
    static float table[256];
    static bool ready = false;
    const float x_scale = {_f(graph.output.scale)};
    if (!ready) {{
        double shift = std::log((double)(std::numeric_limits<float>::max() / (float){k}));
        shift = std::max(0.0, shift - 5) / x_scale;
        for (int i = 0; i < 256; i++)
            table[(uint8_t)({"i - 128" if signed else "i"})] = (float)std::exp(((double)i - 255 + shift) * (double)x_scale);
        ready = true;
    }}
    const float y_scale = std::floor(1.0f / {_f(sm.scale)});
    for (int row = 0; row < N_OUTPUT / {k}; row++) {{
        const result_t *x = q + row * {k};
        int32_t xmax = x[0];
        for (int i = 1; i < {k}; i++) xmax = (int32_t)x[i] > xmax ? (int32_t)x[i] : xmax;
        float vsum = 0.0f;
        for (int i = 0; i < {k}; i++) vsum += table[(uint8_t)({top} - xmax + (int32_t)x[i])];
        for (int i = 0; i < {k}; i++) {{
            const float vt = table[(uint8_t)({top} - xmax + (int32_t)x[i])];
            const int32_t vq = (int32_t)std::nearbyint((vt * y_scale) / vsum) + {sm.zero_point};
            const int32_t code = {store};
            y[row * {k} + i] = (float)(code - {sm.zero_point}) * {_f(sm.scale)};
        }}
    }}
}}
static inline float output_lsb(int) {{ return {_f(sm.scale)}; }}
static inline int32_t output_int(float v, int) {{ return (int32_t)std::nearbyint(v / {_f(sm.scale)}) + {sm.zero_point}; }}
"""
