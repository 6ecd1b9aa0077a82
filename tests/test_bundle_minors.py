"""Issue 22's minor items: `inspect --require-nm` skips what its help says it skips, a TensorRT target that did
not run still reports the accuracy of the file it builds from, Jetson builds float models in fp16, and a bundle's
golden.npz is compressed and report.md says what is inside."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_lint import _qdq_block  # tests/ is on sys.path (rootdir conftest, no __init__)

from edgekd.backends.tensorrt import TensorRTBackend
from edgekd.cli import main
from edgekd.config import load_target

TRT = TensorRTBackend()
TRT_AVAILABLE = TRT.availability().available


def _two_convs(path: Path) -> Path:
    """conv_stem: 1 input channel (the N:M check skips it); conv_body: 8 -> 8 channels, 2:4 in every group."""
    rng = np.random.default_rng(0)
    stem = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    body = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    body.reshape(8, 2, 4, 3, 3)[:, :, :2] = 0  # two zeros in every group of 4 input channels
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "stem.weight"], ["h"], name="conv_stem", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["h", "body.weight"], ["out"], name="conv_body", pads=[1, 1, 1, 1])],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(stem, "stem.weight"), numpy_helper.from_array(body, "body.weight")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_require_nm_skips_ineligible_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(_two_convs(tmp_path / "m.onnx"))
    # "conv" names both layers: the stem is not eligible (1 input channel), as the help says it is skipped
    assert main(["inspect", path, "--require-nm", "conv"]) == 0
    err = capsys.readouterr().err
    assert "skipped conv_stem: not eligible (input channels 1 not a multiple of 4)" in err
    assert main(["inspect", path, "--require-nm", "*"]) == 0
    # a substring that names only skipped layers checks nothing: that is a mistake, like a name that matches none
    assert main(["inspect", path, "--require-nm", "stem"]) == 1
    assert "stem: matches only layers the N:M check skips" in capsys.readouterr().err
    assert main(["inspect", path, "--require-nm", "nothing"]) == 1
    assert "nothing: no layer matches" in capsys.readouterr().err


def _float_onnx(path: Path) -> Path:
    return _two_convs(path)


@pytest.mark.skipif(TRT_AVAILABLE, reason="a GPU is present: the engine is built instead of only the script")
def test_jetson_builds_float_models_in_fp16_and_qdq_in_int8(tmp_path: Path) -> None:
    base = load_target("tensorrt-orin-nano")
    assert base.options.precision == "auto" and base.options.float_precision == "fp16"
    target = dataclasses.replace(base, options=dataclasses.replace(base.options, lint="warn", sparse_weights=False))
    build = TRT.build(_float_onnx(tmp_path / "float.onnx"), target, tmp_path / "float")
    script = (tmp_path / "float" / "build_engine.sh").read_text()
    assert build.precision == "fp16" and "PRECISION=--fp16" in script and "  $PRECISION \\" in script
    assert "--fp16" in build.details["trtexec"] and "--stronglyTyped" not in build.details["trtexec"]
    assert "PRECISION=--stronglyTyped" in script  # TensorRT 11 has no --fp16: "auto" falls back to fp32
    qdq = tmp_path / "qdq.onnx"
    onnx.save(_qdq_block(), str(qdq))
    build = TRT.build(qdq, base, tmp_path / "qdq")
    script = (tmp_path / "qdq" / "build_engine.sh").read_text()
    assert build.precision == "int8" and "--stronglyTyped" in script and "--fp16" not in script
    # the data-center target keeps fp32 for float models (its default float_precision)
    a100 = load_target("tensorrt-a100")
    assert a100.options.float_precision == "fp32"


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from edgekd.pipeline import CompressOptions, compress

    out = tmp_path_factory.mktemp("minors") / "bundle"
    report = compress("builtin:digits-student", data="builtin:digits", recipe="fp32",
                      targets=["cpu", "tensorrt-orin-nano"], out=out, options=CompressOptions(measure=False))
    return out, report


@pytest.mark.skipif(TRT_AVAILABLE, reason="a GPU is present: the engine runs and reports its own accuracy")
def test_tensorrt_variant_accuracy_is_reported(trt_bundle: tuple[Path, dict]) -> None:
    out, report = trt_bundle
    entry = json.loads((out / "report.json").read_text())["targets"]["tensorrt-orin-nano"]
    assert entry["status"] == "prepared, not run here" and entry["build"]["precision"] == "fp16"
    variant = entry["variant_accuracy"]
    assert variant["accuracy"] == report["accuracy"]["onnx_reference"]  # fp32 recipe: the TensorRT file is model.onnx
    assert variant["runtime"] == f"ONNX Runtime on {Path(entry['source']).name}"
    assert "no tensorrt engine ran here" in variant["why"]
    md = (out / "report.md").read_text()
    assert f"accuracy {variant['accuracy']:.2f} % measured with ONNX Runtime on model.onnx" in md
    assert "variant_accuracy" not in report["targets"]["cpu"]  # a target that ran reports its own accuracy


def test_golden_is_compressed_and_report_lists_the_contents(trt_bundle: tuple[Path, dict]) -> None:
    out, _ = trt_bundle
    with zipfile.ZipFile(out / "golden.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    with np.load(out / "golden.npz") as golden:
        assert {"input", "labels", "reference"} <= set(golden.files)
    assert main(["check", str(out), "--target", "cpu"]) == 0  # the readers still read it
    contents = {r["file"]: r for r in json.loads((out / "report.json").read_text())["bundle_contents"]}
    for name in ("model.onnx", "golden.npz", "eval.npz", "tensorrt-orin-nano/build_engine.sh", "manifest.json"):
        assert name in contents, name
    assert contents["golden.npz"]["bytes"] == (out / "golden.npz").stat().st_size
    assert contents["tensorrt-orin-nano/build_engine.sh"]["what"] == "target tensorrt-orin-nano's build"
    # build_engine.sh reads the model.onnx beside it on the device: TensorRT keeps its copy; ONNX Runtime shares
    manifest = json.loads((out / "manifest.json").read_text())
    assert "tensorrt-orin-nano/model.onnx" in contents and "stored_as" not in manifest["targets"]["tensorrt-orin-nano"]
    assert "cpu/model.onnx" not in contents and manifest["targets"]["cpu"]["stored_as"]["model.onnx"]["path"] == "model.onnx"
    md = (out / "report.md").read_text()
    assert "## Bundle contents" in md and "| golden.npz |" in md and "golden inputs, labels" in md
