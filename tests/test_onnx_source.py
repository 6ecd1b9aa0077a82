"""Models that arrive as ONNX: a QDQ file from ONNX Runtime's quantize_static and one from NNCF built as they are,
a float file through ONNX-level PTQ, and the refusals (what, where, what to do; no traceback, no bundle)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli import main
from edgekd.config import load_target
from edgekd.errors import ConfigError
from edgekd.onnx_source import AS_IS, AS_IS_FLOAT, ONNX_PTQ, converter_available
from edgekd.pipeline import CompressOptions, compress

FAST = ["--iterations", "20", "--warmup", "2"]
NO_MEASURE = CompressOptions(measure=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A briefly trained digits student: its float export and ONNX Runtime's QDQ quantization of it."""
    from edgekd.testing import ort_qdq

    work = tmp_path_factory.mktemp("onnx-source")
    qdq, _ = ort_qdq("student", work, epochs=2)
    return {"qdq": qdq, "float": work / "student.onnx", "work": work}


def _exact_fpga() -> object:
    """fpga-zcu104 with ONNX Runtime's float32 requantization and 0 LSB tolerance: bit-exact or failed."""
    target = load_target("fpga-zcu104")
    return dataclasses.replace(target, options=dataclasses.replace(target.options, requant="float32", tolerance_lsb=0))


def _openvino_ok(entry: dict) -> None:
    """OpenVINO runs the file in int8; its int8 sums are exact only on CPUs with VNNI (host_int8_exact), and even
    there it requantizes in its own order: 10 of 320 logits flipped on a Zen 4, every one a rounding tie
    (parity.compare_outputs counts those as agreeing)."""
    from edgekd.backends.openvino import host_int8_exact

    assert entry["build"]["precision"] == "int8", entry["build"]
    if host_int8_exact():
        assert entry["status"] == "passed", entry.get("reasons")
    else:  # int16 pair sums saturate in OpenVINO's kernels here: close, not exact (docs/backends.md)
        assert all(r.startswith(("parity:", "accuracy")) for r in entry["reasons"]), entry["reasons"]
        assert entry["parity"]["top1_agreement"] >= 0.9, entry["parity"]


def _ops(path: Path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_ort_qdq_file_is_built_as_it_is(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    report = compress(str(files["qdq"]), data="builtin:digits", targets=["cpu", "openvino-cpu", _exact_fpga()],
                      out=out, options=NO_MEASURE)
    assert report["onnx_source"]["path"] == AS_IS and report["passes"] == {}
    assert _ops(out / "model.onnx") == _ops(files["qdq"])  # no pass touched the graph
    cpu, fpga = report["targets"]["cpu"], report["targets"]["fpga-zcu104"]
    assert cpu["status"] == "passed" and cpu["parity"]["max_abs_error"] == 0.0 and cpu["build"]["precision"] == "int8"
    agreement = fpga["build"]["details"]["agreement"]
    assert fpga["status"] == "passed" and agreement["exact"] == agreement["elements"] == 320, agreement  # bit-exact
    _openvino_ok(report["targets"]["openvino-cpu"])
    assert report["accuracy"]["onnx_reference"] == cpu["accuracy"] > 30  # 2 epochs on digits: above chance (10 %)
    assert "path that ran: **as-is QDQ**" in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["onnx_source"]["path"] == AS_IS
    assert {t["golden_reference"] for t in manifest["targets"].values()} == {"reference"}
    for target in ("cpu", "fpga-zcu104"):  # the bundle checks on the device as any other
        assert main(["check", str(out), "--target", target, *FAST]) == 0, target


def test_without_data_golden_inputs_come_from_the_input_spec(files: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    assert main(["compress", "--model", str(files["qdq"]), "--target", "cpu", "--out", str(out), "--no-measure"]) == 0
    report = json.loads((out / "report.json").read_text())
    how = report["onnx_source"]["golden_inputs"]
    assert how.startswith("generated from the input spec input ['batch', 1, 8, 8]") and "random:1x8x8" in how
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["golden_inputs"] == how and manifest["reference_metrics"] is None
    assert not (out / "eval.npz").exists() and report["targets"]["cpu"]["parity"]["max_abs_error"] == 0.0
    capsys.readouterr()
    assert main(["check", str(out), "--target", "cpu", *FAST]) == 0


def test_nncf_qdq_file(files: dict[str, Path], tmp_path: Path) -> None:
    nncf = pytest.importorskip("nncf")
    import onnx

    from edgekd.data import load_data

    x = load_data("builtin:digits").x_train
    quantized = nncf.quantize(onnx.load(str(files["float"])), nncf.Dataset([{"input": x[i : i + 1]} for i in range(64)]),
                              subset_size=64)
    path = tmp_path / "student.nncf.onnx"
    onnx.save(quantized, str(path))
    out = tmp_path / "bundle"
    report = compress(str(path), data="builtin:digits", targets=["cpu", "openvino-cpu", "fpga-zcu104"], out=out,
                      options=NO_MEASURE)
    assert report["onnx_source"]["path"] == AS_IS and report["onnx_source"]["quant_nodes"] >= 8
    cpu = report["targets"]["cpu"]
    assert cpu["status"] == "passed" and cpu["parity"]["max_abs_error"] == 0.0
    _openvino_ok(report["targets"]["openvino-cpu"])
    # NNCF leaves the logits float (no Q/DQ after the last Gemm): parity within tolerance, not an LSB count
    assert report["targets"]["fpga-zcu104"]["parity_ok"]
    assert main(["check", str(out), "--target", "cpu", *FAST]) == 0


def test_float_onnx_through_onnx_level_ptq(files: dict[str, Path], tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "bundle"
    report = compress(str(files["float"]), data="builtin:digits", recipe="ptq", targets=["cpu", _exact_fpga()],
                      out=out, options=NO_MEASURE)
    assert report["onnx_source"]["path"] == ONNX_PTQ
    assert set(report["passes"]) == {"onnx-ptq", "onnx-ptq@fpga-zcu104"}  # one quantization per numerics group
    assert report["passes"]["onnx-ptq"]["activations"] == "uint8 asymmetric"
    assert report["passes"]["onnx-ptq@fpga-zcu104"]["activations"] == "int8 symmetric"
    cpu, fpga = report["targets"]["cpu"], report["targets"]["fpga-zcu104"]
    assert (cpu["source"], fpga["source"]) == ("model.onnx", "variants/model.ptq-1.onnx")
    for entry in (cpu, fpga):
        assert entry["status"] == "passed" and entry["build"]["precision"] == "int8", entry.get("reasons")
        assert abs(entry["accuracy_drop"]) <= 3.0, entry  # against the float file run by ONNX Runtime
    variant = onnx.load(str(out / "variants" / "model.ptq-1.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in variant.graph.initializer}
    zero_points = [inits[n.input[2]] for n in variant.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric for the FPGA
    agreement = fpga["build"]["details"]["agreement"]
    assert agreement["exact"] == agreement["elements"], agreement
    assert "onnx-ptq via onnxruntime.quantization" in (out / "report.md").read_text()
    assert main(["check", str(out), "--target", "fpga-zcu104", *FAST]) == 0


def test_float_onnx_with_fp32_is_built_as_it_is(files: dict[str, Path], tmp_path: Path) -> None:
    report = compress(str(files["float"]), data="builtin:digits", targets=["cpu"], out=tmp_path / "b", options=NO_MEASURE)
    assert report["onnx_source"]["path"] == AS_IS_FLOAT
    assert report["targets"]["cpu"]["status"] == "passed" and report["targets"]["cpu"]["build"]["precision"] == "fp32"


def test_onnx_model_source_is_a_frozen_module(files: dict[str, Path]) -> None:
    """``models.load_model("x.onnx")``: what a teacher given as ONNX is (ONNX Runtime behind forward)."""
    import torch

    from edgekd.data import load_data
    from edgekd.export import onnx_outputs
    from edgekd.models import load_model

    loaded = load_model(str(files["qdq"]))
    x = load_data("builtin:digits").x_test[:16]
    assert loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.module(torch.from_numpy(x)).numpy(), onnx_outputs(files["qdq"], x))


def _refused(args: list[str], out: Path, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main([*args, "--out", str(out), "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(n in err for n in needles), err
    assert not out.exists()


def test_bad_inputs_are_refused_before_anything_runs(files: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    compress_ = ["compress", "--model"]
    _refused([*compress_, str(text)], tmp_path / "a", capsys, "text file", "notes.onnx")
    _refused([*compress_, str(files["qdq"]), "--recipe", "ptq"], tmp_path / "b", capsys, "already quantized",
             "--recipe fp32")
    _refused([*compress_, str(files["float"]), "--data", "builtin:digits", "--target", "fpga-zcu104"], tmp_path / "c",
             capsys, "needs a quantized model", "--recipe ptq")
    _refused([*compress_, str(files["float"]), "--recipe", "ptq"], tmp_path / "d", capsys, "calibrates on --data")
    _refused([*compress_, "builtin:digits-student"], tmp_path / "e", capsys, "--data is required")
    _refused([*compress_, str(files["float"]), "--data", "random:3x8x8"], tmp_path / "f", capsys, "(3, 8, 8)", "takes")
    two_heads = _graph_with(tmp_path / "two.onnx", "Relu", extra_output=True)
    _refused([*compress_, str(two_heads)], tmp_path / "i", capsys, "1 input(s) (input ['batch', 64]) and 2 output(s)",
             "extract_model")
    erf = _graph_with(tmp_path / "erf.onnx", "Erf")  # Softmax at the output now builds (on the host)
    _refused([*compress_, str(erf), "--data", "random:64", "--recipe", "ptq", "--target", "fpga-zcu104"],
             tmp_path / "j", capsys, "op Erf (1x, e.g. node head) has no HLS implementation", "nothing was built")
    hardmax = _graph_with(tmp_path / "hardmax.onnx", "Hardmax")
    if converter_available():
        _refused([*compress_, str(hardmax), "--data", "random:64", "--recipe", "kd"], tmp_path / "g", capsys,
                 "onnx2torch cannot convert op Hardmax", "--recipe ptq")
        _refused([*compress_, str(files["qdq"]), "--data", "builtin:digits", "--recipe", "kd"], tmp_path / "h", capsys,
                 "already quantized")


def test_training_recipe_without_the_converter(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Where onnx2torch is not installed, a training recipe on an ONNX model says what, why and what to do."""
    monkeypatch.setattr("edgekd.onnx_source.converter_available", lambda: False)
    _refused(["compress", "--model", str(files["float"]), "--data", "builtin:digits", "--recipe", "kd"], tmp_path / "g",
             capsys, "trains the model (distill)", "onnx2torch", "is not installed", "--recipe ptq")


def _graph_with(path: Path, op: str, extra_output: bool = False) -> Path:
    """input [batch, 64] -> Gemm -> ``op`` -> logits (and the Gemm's output ``h`` as a second graph output)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", ["input", "w"], ["h"], name="fc"), helper.make_node(op, ["h"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 10])
                               for name in ("logits", "h")[: 1 + extra_output]], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_training_recipe_converts_the_graph_with_an_onnx_teacher(files: dict[str, Path], tmp_path: Path) -> None:
    """A float ONNX model with a distillation recipe: onnx2torch converts it, the ONNX file itself teaches (run
    by ONNX Runtime), and the report names the path that ran."""
    pytest.importorskip("onnx2torch")
    from edgekd.config import load_recipe

    recipe = load_recipe("kd", ["distill.epochs=1"])
    report = compress(str(files["float"]), data="builtin:digits", recipe=recipe, teacher=str(files["float"]),
                      targets=["cpu"], out=tmp_path / "b", options=NO_MEASURE)
    assert report["sources"]["model"] == f"onnx2torch:{files['float']}"
    assert [row["stage"] for row in report["stages"]] == ["loaded", "after distill"]
    assert report["params"]["teacher"] == report["params"]["student_before"] > 3000
    assert report["accuracy"]["teacher"] == report["stages"][0]["accuracy"]  # the same weights, two runtimes
    assert report["targets"]["cpu"]["status"] == "passed"


def test_edgekd_toml_with_an_onnx_model_and_external_data(files: dict[str, Path], tmp_path: Path) -> None:
    """An .onnx in edgekd.toml: no data needed for a QDQ file; the cache key covers external-data files."""
    import onnx

    from edgekd.buildfile import build, cache_key, load_buildfile

    app = tmp_path / "app"
    app.mkdir()
    model = onnx.load(str(files["float"]))
    onnx.save(model, str(app / "float.onnx"), save_as_external_data=True, location="float.onnx.data", size_threshold=0)
    (app / "edgekd.toml").write_text('model = "float.onnx"\nrecipe = "ptq"\ndata = "builtin:digits"\nout = "build/ptq"\n'
                                     'targets = ["cpu"]\nmeasure = false\n[cache]\ndir = ".cache"\n')
    bf = load_buildfile(app)
    _, material = cache_key(bf)
    assert list(material["model"]["external_data"]) == ["float.onnx.data"]
    first = build(bf)
    assert first.report["targets"]["cpu"]["status"] == "passed" and not list((app / "build/ptq").rglob("*.data"))
    assert build(bf).up_to_date  # unchanged inputs: served from the cache
    (app / "float.onnx.data").write_bytes((app / "float.onnx.data").read_bytes()[:-4] + b"\0\0\0\0")
    assert cache_key(bf)[0] != first.key  # the weights changed, the key with them
    (app / "edgekd.toml").write_text('model = "builtin:digits-student"\nout = "build/x"\n')
    with pytest.raises(ConfigError, match="missing required key"):
        load_buildfile(app)
    (app / "student.qdq.onnx").write_bytes(files["qdq"].read_bytes())
    (app / "edgekd.toml").write_text('model = "student.qdq.onnx"\nout = "build/qdq"\nmeasure = false\n[cache]\nenabled = false\n')
    outcome = build(load_buildfile(app))
    assert outcome.report["onnx_source"]["golden_inputs"].startswith("generated from the input spec")


def _export(module: object, path: Path, opset: int, axes: dict | None, batch: int = 1) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(batch, 1, 8, 8),), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes)
    return path


@pytest.mark.parametrize("opset", [13, 21])
def test_opsets_13_to_21(opset: int, tmp_path: Path) -> None:
    """The oldest opset with per-channel Q/DQ and the newest ONNX Runtime runs, through ONNX-level PTQ."""
    import onnx
    from onnx import version_converter

    from edgekd.testing import make_module

    path = _export(make_module("student"), tmp_path / "op13.onnx", 13, {"input": {0: "batch"}, "logits": {0: "batch"}})
    if opset != 13:
        path = tmp_path / f"op{opset}.onnx"
        onnx.save(version_converter.convert_version(onnx.load(str(tmp_path / "op13.onnx")), opset), str(path))
    report = compress(str(path), data="builtin:digits", recipe="ptq", targets=["cpu", "fpga-zcu104"],
                      out=tmp_path / "b", options=NO_MEASURE)
    assert report["onnx_source"]["opset"] == opset
    assert all(e["status"] == "passed" for e in report["targets"].values()), report["targets"]


def test_dynamic_and_fixed_input_dims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Dynamic height/width are fixed to the data's (stated); a fixed batch of 1 runs sample by sample."""
    from edgekd.testing import make_module

    module = make_module("residual")
    dynamic = _export(module, tmp_path / "dyn.onnx", 17, {"input": {0: "batch", 2: "h", 3: "w"}, "logits": {0: "batch"}})
    report = compress(str(dynamic), data="builtin:digits", targets=["cpu"], out=tmp_path / "b1", options=NO_MEASURE)
    assert report["onnx_source"]["dims"] == ["input dim 2 (h) = 8", "input dim 3 (w) = 8"]
    manifest = json.loads((tmp_path / "b1" / "manifest.json").read_text())
    assert manifest["model"]["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    _refused(["compress", "--model", str(dynamic)], tmp_path / "b2", capsys, "dynamic dimensions", "--data")
    batch4 = _export(module, tmp_path / "b4.onnx", 17, None, batch=4)
    report = compress(str(batch4), data="builtin:digits", targets=["cpu"], out=tmp_path / "b4",
                      options=CompressOptions(measure=False, golden_samples=30))
    golden = np.load(tmp_path / "b4" / "golden.npz")
    assert report["targets"]["cpu"]["status"] == "passed" and golden["input"].shape == (28, 1, 8, 8)
    fixed = _export(module, tmp_path / "b1.onnx", 17, None)
    report = compress(str(fixed), data="builtin:digits", recipe="ptq", targets=["cpu"], out=tmp_path / "b3",
                      options=NO_MEASURE)
    assert report["onnx_source"]["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert report["targets"]["cpu"]["status"] == "passed" and report["targets"]["cpu"]["build"]["precision"] == "int8"


def test_tensorrt_gets_its_own_variant_where_the_file_allows(files: dict[str, Path], tmp_path: Path) -> None:
    """PTQ: TensorRT's symmetric group gets the tensorrt flavor's rewrite (float logits); an asymmetric QDQ file is
    built as it is, and TensorRT's lint fails that target with the reason while the others ship."""
    report = compress(str(files["float"]), data="builtin:digits", recipe="ptq", targets=["cpu", "tensorrt-orin-nano"],
                      out=tmp_path / "b1", options=NO_MEASURE)
    trt = report["targets"]["tensorrt-orin-nano"]
    assert trt["source"] == "variants/model.tensorrt-1.onnx" and trt["status"] in ("passed", "prepared, not run here")
    assert report["onnx_source"]["flavors"]["tensorrt@1"]["changes"] == ["drop_output_qdq: 1 rewritten"]
    assert trt["build"]["notes"][0].startswith("lint: 0 error(s)")
    report = compress(str(files["qdq"]), data="builtin:digits", targets=["cpu", "tensorrt-orin-nano"],
                      out=tmp_path / "b2", options=NO_MEASURE)
    assert report["targets"]["cpu"]["status"] == "passed"
    assert report["targets"]["tensorrt-orin-nano"]["status"] == "failed"
    assert "qdq-symmetric" in report["targets"]["tensorrt-orin-nano"]["reasons"][0]
    assert any("TensorRT reads symmetric int8" in c for c in report["onnx_source"]["flavors"]["tensorrt"]["changes"])
