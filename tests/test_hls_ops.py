"""The HLS ops of segmentation, signal, anomaly and detection students, each on a tiny seeded model quantized by
ONNX Runtime (QDQ, per tensor): g++ C simulation against ORT INT8 on the int8 grid, in both requantization modes.

Exact (0 LSB) wherever ORT runs integer code or the C++ repeats its float steps; the documented 1 LSB only where
the fixed-point path replaces a float op of ORT (AveragePool, bilinear Resize: exact .5 ties). docs/fpga-hls.md
lists which is which."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.backends.hls import HLSBackend, csim
from edgekd.backends.hls.frontend import load_graph
from edgekd.config import load_target

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed for C simulation")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hls_ops")


def _target(**changes: object) -> object:
    target = load_target("fpga-zcu104")
    return dataclasses.replace(target, options=dataclasses.replace(target.options, **changes))


def _agreement(name: str, workdir: Path, fixed_lsb: int) -> tuple[dict, dict, object]:
    """Build ``name`` (fixed point, checked at ``fixed_lsb``), then the same sources with ORT's float32
    requantization, checked at 0 LSB; returns both agreements and the IR."""
    from edgekd.testing.hls_ops import op_qdq

    path, x = op_qdq(name, workdir)
    out = workdir / name
    result = HLSBackend().build(path, _target(tolerance_lsb=fixed_lsb), out, golden=x)
    binary, _ = csim.compile_project(out, requant="float32", output="build/csim_f32")
    return result.agreement.to_dict(), csim.run_check(out, binary, tolerance_lsb=0), load_graph(path)


def _exact(agreement: dict) -> bool:
    return agreement["ok"] and agreement["max_lsb"] == 0 and agreement["exact"] == agreement["elements"]


def test_slice_split_and_concat_to_the_output_are_exact(workdir: Path) -> None:
    fixed, f32, graph = _agreement("slice_concat", workdir, 0)
    kinds = [layer.kind for layer in graph.layers]
    assert kinds.count("gather") == 4 and kinds[-1] == "concat"  # 2 Split outputs, 2 Slices; Concat writes the output
    assert graph.output.shape == (2, 7, 8)
    assert _exact(fixed) and _exact(f32), (fixed, f32)


def test_nearest_resize_is_an_exact_copy(workdir: Path) -> None:
    fixed, f32, graph = _agreement("resize_nearest", workdir, 0)
    gather = next(la for la in graph.layers if la.kind == "gather")
    assert [ix.tolist() for ix in gather.index[1:]] == [[0, 0, 1, 1, 2, 2, 3, 3]] * 2
    assert _exact(fixed) and _exact(f32), (fixed, f32)


def test_resize_to_the_skip_size_folds_the_shape_arithmetic(workdir: Path) -> None:
    """F.interpolate(size=skip.shape[-2:]) exports Shape/Gather/Unsqueeze/Concat/Slice/Cast on shapes: folded to the
    constant sizes (one sample), the Resize is a Gather and the whole U-Net step matches ORT exactly."""
    import onnx

    from edgekd.testing.hls_ops import op_qdq

    path, _ = op_qdq("unet", workdir)
    assert {"Shape", "Gather", "Unsqueeze", "Cast"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    fixed, f32, graph = _agreement("unet", workdir, 0)
    assert [la.kind for la in graph.layers] == ["conv", "conv", "gather", "concat", "conv"]
    assert _exact(fixed) and _exact(f32), (fixed, f32)


def test_bilinear_resize(workdir: Path) -> None:
    """ORT runs it in float (DQ -> Resize -> Q): the float32 path repeats its weights and sum exactly; the integer
    path (weights in 1/256) rounds exact .5 ties half to even where ORT's float rounding breaks them either way."""
    fixed, f32, graph = _agreement("resize_bilinear", workdir, 1)
    resize = next(la for la in graph.layers if la.kind == "resize")
    assert resize.wx[:3].tolist() == [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75]]  # pytorch_half_pixel: -0.25 clamps to 0
    assert _exact(f32), f32
    assert fixed["ok"] and fixed["max_lsb"] <= 1 and fixed["exact"] >= 0.9 * fixed["elements"], fixed


def test_conv_transpose_2d(workdir: Path) -> None:
    """ORT runs ConvTranspose in float: the integer sum is exact, ORT's float sum could differ by 1 LSB (here it does not)."""
    fixed, f32, graph = _agreement("conv_transpose", workdir, 1)
    grouped, last = (la for la in graph.layers if la.kind == "conv_transpose")
    assert graph.tensors[grouped.output].shape == (6, 6, 6) and grouped.weights.shape == (6, 2, 3, 3) and grouped.groups == 2
    assert graph.tensors[last.output].shape == (3, 7, 13) and last.dilation == (1, 2) and last.stride == (1, 2)
    assert fixed["ok"] and f32["ok"] and fixed["max_lsb"] <= 1 and f32["max_lsb"] <= 1, (fixed, f32)
    assert f32["exact"] == f32["elements"], f32


def test_signal_path_1d_conv_pools_and_conv_transpose(workdir: Path) -> None:
    """Conv1d, MaxPool1d, AvgPool1d and ConvTranspose1d on [C, L]. ORT averages in float: float32 mode is exact,
    the fixed-point average within 1 LSB."""
    fixed, f32, graph = _agreement("signal", workdir, 1)
    assert [la.kind for la in graph.layers] == ["conv", "pool", "pool", "conv_transpose"]
    assert [graph.tensors[la.output].shape for la in graph.layers] == [(4, 16), (4, 8), (4, 8), (3, 16)]
    assert _exact(f32), f32
    assert fixed["ok"] and fixed["max_lsb"] <= 1, fixed


def test_signal_classifier_global_pool_1d_and_softmax(workdir: Path) -> None:
    """Conv1d -> MaxPool1d -> GlobalAveragePool over L (ORT: QLinearGlobalAveragePool, integer sum) -> Gemm ->
    host Softmax: exact."""
    fixed, f32, graph = _agreement("signal_classifier", workdir, 0)
    assert [(la.kind, graph.tensors[la.output].shape) for la in graph.layers] == [
        ("conv", (8, 32)), ("pool", (8, 16)), ("pool", (8, 1)), ("reshape", (8,)), ("dense", (4,))]
    assert graph.softmax is not None
    assert _exact(fixed) and _exact(f32), (fixed, f32)


def test_linear_resize_of_a_signal(workdir: Path) -> None:
    """1-D linear upsampling: ORT runs it as trilinear over [N, C, L] in float, whose sum order differs by a float
    ulp from the two-tap sum: within 1 LSB in both modes (documented)."""
    fixed, f32, graph = _agreement("signal_linear", workdir, 1)
    resize = graph.layers[1]
    assert resize.kind == "resize" and graph.tensors[resize.output].shape == (4, 32) and resize.wy.tolist() == [[1.0, 0.0]]
    assert fixed["ok"] and fixed["max_lsb"] <= 1, fixed
    binary = csim.compile_project(workdir / "signal_linear", requant="float32", output="build/csim_f32")[0]
    f32 = csim.run_check(workdir / "signal_linear", binary, tolerance_lsb=1)
    assert f32["ok"] and f32["max_lsb"] <= 1, f32


def test_activation_tables_are_exact(workdir: Path) -> None:
    fixed, f32, graph = _agreement("activations", workdir, 0)
    assert sorted(la.function for la in graph.layers if la.kind == "lut") == ["HardSigmoid", "HardSwish", "Sigmoid"]
    assert _exact(fixed) and _exact(f32), (fixed, f32)


@pytest.mark.parametrize("function", ["Sigmoid", "HardSigmoid", "HardSwish"])
def test_activation_table_equals_onnxruntime_on_every_code(function: str) -> None:
    """The whole int8 grid for several input/output scales: the table is what ORT's DQ -> op -> Q gives."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.backends.hls.lowering import GraphBuilder
    from edgekd.backends.hls.values import Act, Pending

    codes = np.arange(-128, 128, dtype=np.int8)
    rng = np.random.default_rng(0)
    for _ in range(8):
        s_in, z_in = float(np.float32(rng.uniform(0.005, 0.1))), int(rng.integers(-20, 20))
        s_out, z_out = float(np.float32(rng.uniform(0.002, 0.05))), int(rng.integers(-128, 0))
        params = {"alpha": 0.2, "beta": 0.5} if function == "HardSigmoid" else {}
        inits = [numpy_helper.from_array(np.array(v, t), n) for v, t, n in
                 [(s_in, np.float32, "si"), (z_in, np.int8, "zi"), (s_out, np.float32, "so"), (z_out, np.int8, "zo")]]
        nodes = [helper.make_node("DequantizeLinear", ["x", "si", "zi"], ["d"]), helper.make_node(function, ["d"], ["f"]),
                 helper.make_node("QuantizeLinear", ["f", "so", "zo"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, [256])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT8, [256])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": codes})[0]
        builder = GraphBuilder("m.onnx")
        x = builder.new_tensor("x", (256,), "int8", s_in, z_in)
        builder.finalize(Pending("lut", "f", [Act(x, s_in, z_in)], {"function": function, **params}), "y", s_out, z_out, "int8")
        np.testing.assert_array_equal(builder.layers[-1].table, expected.astype(np.int32))


def test_softmax_at_the_output_runs_on_the_host(workdir: Path) -> None:
    """The top function ends at the logits' int8 codes; io.h repeats ORT's QLinearSoftmax (float32 table and sum)."""
    fixed, f32, graph = _agreement("softmax", workdir, 0)
    notes = (workdir / "softmax" / "README.md").read_text()
    assert graph.softmax is not None and graph.softmax.axis == 0 and graph.layers[-1].kind == "dense"
    assert "QLinearSoftmax" in (workdir / "softmax" / "firmware" / "io.h").read_text() and "softmax" in notes.lower()
    assert _exact(fixed) and _exact(f32), (fixed, f32)


def test_unsupported_variants_name_the_node(tmp_path: Path) -> None:
    import onnx
    import torch
    from torch.nn import functional as F

    from edgekd.testing import export_float, ort_quantize

    class Odd(torch.nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind, self.conv = kind, torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(x)
            if self.kind == "cubic":
                return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
            if self.kind == "softmax":
                return self.conv(torch.softmax(x, 1)[:, :1])
            return torch.tanh(x)

    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    messages = {}
    for kind in ("cubic", "softmax", "tanh"):
        torch.manual_seed(0)
        src = export_float(Odd(kind), tmp_path / f"{kind}.onnx", x)
        path = ort_quantize(src, tmp_path / f"{kind}.qdq.onnx", x, per_channel=False)
        assert onnx.load(str(path)).graph.node
        with pytest.raises(Exception) as info:
            HLSBackend().build(path, _target(), tmp_path / f"out-{kind}", golden=x)
        messages[kind] = str(info.value)
        assert not (tmp_path / f"out-{kind}").exists()
    assert "Resize mode 'cubic' is not supported" in messages["cubic"] and "(Resize)" in messages["cubic"]
    assert "Softmax is supported over the last axis only" in messages["softmax"] and "(Softmax)" in messages["softmax"]
    assert "(Tanh)" in messages["tanh"] and "not supported by the HLS backend" in messages["tanh"]


def _build(path: Path, x: np.ndarray, out: Path, tolerance: int) -> tuple[dict, dict]:
    result = HLSBackend().build(path, _target(tolerance_lsb=tolerance), out, golden=x)
    binary, _ = csim.compile_project(out, requant="float32", output="build/csim_f32")
    return result.agreement.to_dict(), csim.run_check(out, binary, tolerance_lsb=tolerance)


def test_quantized_heads_concatenated_into_the_output(workdir: Path) -> None:
    """ORT's QDQ: both heads and the Concat quantized (QLinearConcat): exact."""
    from edgekd.testing.hls_ops import op_qdq

    path, x = op_qdq("heads", workdir)
    fixed, f32 = _build(path, x, workdir / "heads", 0)
    assert _exact(fixed) and _exact(f32), (fixed, f32)


def test_float_concat_output_of_differently_quantized_parts(workdir: Path) -> None:
    """The Concat left in float (nodes_to_exclude): ORT concatenates two dequantized heads of different scales
    into the float output. The top function copies both heads' codes; the host dequantizes per element: exact."""
    from edgekd.testing.hls_ops import op_qdq

    path, x = op_qdq("heads_flat", workdir, exclude=["/Concat"], tag="_float_concat")
    graph = load_graph(path)
    assert graph.output_dequant is not None and graph.output.dtype == "int32" and graph.output.shape == (180,)
    scales = graph.output_dequant[0]
    assert len(set(scales[:72].tolist())) == 1 and len(set(scales[72:].tolist())) == 1 and scales[0] != scales[-1]
    fixed, f32 = _build(path, x, workdir / "float_concat", 0)
    assert _exact(fixed) and _exact(f32), (fixed, f32)


@pytest.mark.parametrize("float_concat", [True, False])
def test_raw_conv_heads_concatenated(float_concat: bool, workdir: Path) -> None:
    """Heads with no QuantizeLinear (NNCF-style float heads) into a float Concat output: their int32 accumulators
    are concatenated and dequantized on the host with each head's per-channel scale and bias. Into a quantized
    Concat: each head is requantized straight to the Concat's parameters. ORT's float conv: within 1 LSB."""
    import onnx

    from edgekd.testing.hls_ops import op_qdq

    tag = "_raw_float" if float_concat else "_raw_q"
    path, x = op_qdq("heads", workdir, exclude=["/Concat"] if float_concat else None, tag=tag)
    model = onnx.load(str(path))
    nodes = {n.output[0]: n for n in model.graph.node}
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    for i, name in enumerate(concat.input):
        dq = nodes[name]
        q = nodes[dq.input[0]]
        assert (dq.op_type, q.op_type, nodes[q.input[0]].op_type) == ("DequantizeLinear", "QuantizeLinear", "Conv")
        concat.input[i] = q.input[0]
        model.graph.node.remove(dq)
        model.graph.node.remove(q)
    raw = workdir / f"heads{tag}_stripped.onnx"
    onnx.save(model, str(raw))
    graph = load_graph(raw)
    assert graph.layers[-1].kind == "concat" and graph.layers[-1].raw == float_concat and graph.output.shape == (5, 6, 6)
    assert [la.requant is None for la in graph.layers if la.kind == "conv"] == [False, float_concat, float_concat]
    assert (graph.output_dequant is not None) == float_concat
    fixed, f32 = _build(raw, x, workdir / f"heads{tag}", 1)
    assert fixed["ok"] and f32["ok"] and fixed["max_lsb"] <= 1, (fixed, f32)


def _probe(op: str, inputs: list[str], outputs: list[str], shape: list[int], consts: dict[str, np.ndarray],
           **attrs: object) -> tuple:
    """A QDQ graph Q -> DQ -> op -> Q -> DQ with scale 1 whose input codes are all distinct: ORT's output names the
    source element of every output, which the IR's Gather index tables must name too."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node(op, ["d", *inputs], outputs, name="probe", **attrs),
             helper.make_node("QuantizeLinear", ["o", "s", "z"], ["q2"]), helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["out"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *shape])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    x = (np.arange(int(np.prod(shape))) - 128).astype(np.float32).reshape(1, *shape)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return model, x, expected


@pytest.mark.parametrize(("case", "shape", "attrs", "consts"), [
    ("slice", [3, 5, 6], {}, {"st": np.array([1, -1, 4], np.int64), "en": np.array([3, -6, 2**63 - 1], np.int64),
                              "ax": np.array([1, 2, -1], np.int64), "sp": np.array([1, -2, 1], np.int64)}),
    ("slice", [4, 10], {}, {"st": np.array([-2, 1], np.int64), "en": np.array([-100, 9], np.int64),
                            "ax": np.array([1, 2], np.int64), "sp": np.array([-1, 3], np.int64)}),
    ("nearest", [2, 3, 5], {"mode": "nearest"}, {"sc": np.array([1, 1, 2, 1.5], np.float32)}),
    ("nearest", [2, 3, 5], {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     {"sc": np.array([1, 1, 3, 2], np.float32)}),
    ("nearest", [2, 6, 7], {"mode": "nearest", "coordinate_transformation_mode": "align_corners",
                            "nearest_mode": "round_prefer_ceil"}, {"sz": np.array([1, 2, 3, 10], np.int64)}),
    ("nearest", [2, 4, 20], {"mode": "nearest", "coordinate_transformation_mode": "pytorch_half_pixel"},
     {"sc": np.array([1, 1, 1, 1.6], np.float32)}),
    ("nearest", [2, 8, 9], {"mode": "nearest"}, {"sc": np.array([1, 1, 0.5, 0.6], np.float32)}),  # downsampling
    ("nearest", [2, 5, 4], {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn",
                            "nearest_mode": "ceil"}, {"sc": np.array([1, 1, 1.5, 2.5], np.float32)}),
    ("split", [6, 2, 3], {"axis": 1}, {"sp": np.array([1, 3, 2], np.int64)}),
])
def test_gather_index_tables_match_onnxruntime(case: str, shape: list[int], attrs: dict, consts: dict, tmp_path: Path) -> None:
    import onnx

    from edgekd.backends.hls import ir

    inputs = {"slice": ["st", "en", "ax", "sp"], "nearest": ["", "sc"] if "sc" in consts else ["", "", "sz"],
              "split": ["sp"]}[case]
    op = {"slice": "Slice", "nearest": "Resize", "split": "Split"}[case]
    outputs = ["a", "o", "b"] if case == "split" else ["o"]  # a Split probe reads its middle output
    model, x, expected = _probe(op, inputs, outputs, shape, consts, **attrs)
    path = tmp_path / "probe.onnx"
    onnx.save(model, str(path))
    graph = load_graph(path)
    gather = next(la for la in graph.layers if isinstance(la, ir.Gather) and la.output == graph.output.name)
    ic, ih, iw = gather.index
    view = x.reshape(ir.as_rank3(tuple(shape)))
    got = view[np.ix_(ic, ih, iw)].reshape(expected.shape[1:])
    np.testing.assert_array_equal(got, expected[0])


@pytest.mark.parametrize(("coordinate_mode", "scales"), [("half_pixel", (2.0, 2.0)), ("pytorch_half_pixel", (1.5, 2.5)),
                                                         ("align_corners", (2.0, 3.0)), ("asymmetric", (1.75, 0.5))])
def test_bilinear_weights_and_sum_order_match_onnxruntime(coordinate_mode: str, scales: tuple[float, float]) -> None:
    """ORT's float Resize(linear) on random floats equals, bit for bit, the float32 formula the C++ float path runs
    with the front end's taps and weights: so the float32 C simulation of a bilinear Resize is exact."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.backends.hls.frontend_ops import bilinear_taps, original_coordinate

    shape = (1, 3, 5, 6)
    sc = numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "sc")
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear", coordinate_transformation_mode=coordinate_mode)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [sc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0][0]
    oh, ow = (int(np.float32(s) * np.float32(d)) for s, d in zip(scales, shape[2:]))
    (yi, wy), (xi, wx) = (bilinear_taps(original_coordinate(coordinate_mode, o, d, s), d)
                          for o, d, s in zip((oh, ow), shape[2:], scales))
    v = x[0]
    x11, x21 = v[:, yi[:, 0]][:, :, xi[:, 0]], v[:, yi[:, 0]][:, :, xi[:, 1]]
    x12, x22 = v[:, yi[:, 1]][:, :, xi[:, 0]], v[:, yi[:, 1]][:, :, xi[:, 1]]
    w1, w2 = wy[:, 0][:, None], wy[:, 1][:, None]
    got = (wx[:, 0] * w1) * x11 + (wx[:, 1] * w1) * x21 + (wx[:, 0] * w2) * x12 + (wx[:, 1] * w2) * x22
    np.testing.assert_array_equal(got.astype(np.float32), expected)


@pytest.mark.parametrize(("op", "axes", "shape"), [("Unsqueeze", [2], [3, 4]), ("Unsqueeze", [-1], [3, 4]),
                                                   ("Squeeze", [2], [3, 1, 4]), ("Squeeze", [-2], [3, 1, 4])])
def test_size_one_axes_are_reshapes(op: str, axes: list[int], shape: list[int], tmp_path: Path) -> None:
    import onnx

    model, _, expected = _probe(op, ["ax"], ["o"], shape, {"ax": np.array(axes, np.int64)})
    path = tmp_path / "axes.onnx"
    onnx.save(model, str(path))
    graph = load_graph(path)
    assert graph.layers[-1].kind == "reshape" and graph.output.shape == expected.shape[1:]


@pytest.mark.parametrize("axes", [[0], None])
def test_squeezing_the_batch_is_refused(axes: list[int] | None, tmp_path: Path) -> None:
    import onnx

    consts = {} if axes is None else {"ax": np.array(axes, np.int64)}
    model, _, _ = _probe("Squeeze", [] if axes is None else ["ax"], ["o"], [3, 1, 4], consts)
    onnx.save(model, str(tmp_path / "sq.onnx"))
    with pytest.raises(Exception, match=r"batch axis.*node 'probe' \(Squeeze\)|node 'probe' \(Squeeze\)[\s\S]*batch"):
        load_graph(tmp_path / "sq.onnx")
