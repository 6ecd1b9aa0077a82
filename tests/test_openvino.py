"""OpenVINO backend on the real OpenVINO CPU plugin: IR build, properties, parity, and the runtime
graph as proof of the precision that runs (f32 forced for FP32, int8 kernels for Q/DQ)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from edgekd.artifact import Artifact
from edgekd.backends.openvino import OpenVINOBackend, OpenVINOOptions, fold_weight_clips
from edgekd.config import ExportSettings, load_target, target_from_mapping
from edgekd.errors import ConfigError
from edgekd.export import compare_outputs, export_onnx, onnx_outputs
from edgekd.models import load_model

BACKEND = OpenVINOBackend()


def _target(tmp_path: Path, **options: object):
    base = load_target("openvino-cpu")
    opts = dataclasses.replace(base.options, cache_dir=str(tmp_path / "ovcache"), **options)
    return dataclasses.replace(base, options=opts)


@pytest.fixture(scope="module")
def ov_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The demo digits student (random init, seeded) exported by edgekd, plus U8S8 per-channel INT8 QDQ."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ov")
    student = load_model("builtin:digits-student")
    x = np.random.default_rng(0).standard_normal((64, *student.input_shape)).astype(np.float32)
    art = Artifact(kind="torch", payload=student.module)
    fp32 = export_onnx(art, d / "fp32.onnx", example=x, settings=ExportSettings()).path

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x[i : i + 1]} for i in range(32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    int8 = d / "int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return {"x": x, "fp32": fp32, "int8": int8}


def _parity(runner, path: Path, x: np.ndarray):
    ref = onnx_outputs(path, x)
    cand = runner.infer({runner.inputs[0].name: x})[runner.outputs[0].name]
    return compare_outputs(ref, cand)


def test_fp32_student_runs_f32_with_parity(ov_models, tmp_path: Path) -> None:
    target = _target(tmp_path)
    out = tmp_path / "ov"
    build = BACKEND.build(ov_models["fp32"], target, out)
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    assert build.precision == "fp32"
    assert build.details["inference_precision_hint"] == "f32"
    layers = build.details["layers"]
    convs = [la for la in layers if la["type"] == "Convolution"]
    assert convs and all(la["precision"] == "f32" for la in convs)
    runner = BACKEND.load(out, target, build)
    parity = _parity(runner, ov_models["fp32"], ov_models["x"])
    assert parity.top1_agreement == 1.0
    assert parity.max_abs_error <= target.parity.atol
    assert np.allclose(runner.infer_unchecked({"input": ov_models["x"][:1]})[0],
                       runner.infer({"input": ov_models["x"][:1]})["logits"])
    facts = runner.describe()
    assert facts["precision"] == "fp32" and facts["inference_num_threads"] == 2


def test_int8_qdq_runs_int8_convolutions(ov_models, tmp_path: Path) -> None:
    target = _target(tmp_path)
    out = tmp_path / "ov8"
    build = BACKEND.build(ov_models["int8"], target, out)
    convs = [la for la in build.details["layers"] if la["type"] == "Convolution"]
    assert convs, build.details["compute_kernels"]
    assert all(la["precision"] in ("u8", "i8") for la in convs), convs
    assert all("I8" in la["kernel"] or "i8" in la["kernel"] for la in convs), convs
    assert build.details["compute_precision"].get("int8", 0) >= len(convs)
    assert build.precision in ("int8", "mixed")
    parity = _parity(BACKEND.load(out, target, build), ov_models["int8"], ov_models["x"])
    assert parity.top1_agreement >= target.parity.min_top1_agreement
    # the IR keeps int8 weights: much smaller than the FP32 IR
    fp32_dir = tmp_path / "ov32"
    BACKEND.build(ov_models["fp32"], target, fp32_dir)
    assert (out / "model.bin").stat().st_size < 0.5 * (fp32_dir / "model.bin").stat().st_size


def _bf16_capable() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(not _bf16_capable(), reason="this CPU has no BF16 support, so OpenVINO's default stays f32")
def test_default_precision_is_reported_truthfully(ov_models, tmp_path: Path) -> None:
    """precision = "auto" leaves OpenVINO's default, which is bf16 on this CPU: the report must say so."""
    build = BACKEND.build(ov_models["fp32"], _target(tmp_path, precision="auto"), tmp_path / "auto")
    assert build.precision == "bf16", build.details["compute_precision"]
    bf16 = BACKEND.build(ov_models["fp32"], _target(tmp_path, precision="bf16"), tmp_path / "bf16")
    assert bf16.precision == "bf16" and bf16.details["inference_precision_hint"] == "bf16"


def _with_weight_clips(src: Path, dst: Path) -> int:
    """Insert brevitas-style Clip(-127, 127) nodes between each int8 weight and its DequantizeLinear."""
    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.INT8}
    lo, hi = numpy_helper.from_array(np.array(-127, np.int8), "clip_lo"), numpy_helper.from_array(
        np.array(127, np.int8), "clip_hi")
    g.initializer.extend([lo, hi])
    added = 0
    for node in list(g.node):
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            clipped = node.input[0] + "_clipped"
            g.node.insert(list(g.node).index(node), helper.make_node("Clip", [node.input[0], "clip_lo", "clip_hi"],
                                                                      [clipped], name=node.input[0] + "_clip"))
            node.input[0] = clipped
            added += 1
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return added


def test_weight_clips_are_folded_so_int8_kernels_stay(ov_models, tmp_path: Path) -> None:
    clipped = tmp_path / "clipped.onnx"
    added = _with_weight_clips(ov_models["int8"], clipped)
    assert added >= 2
    kept = BACKEND.build(clipped, _target(tmp_path, fold_weight_clips=False), tmp_path / "kept")
    folded = BACKEND.build(clipped, _target(tmp_path), tmp_path / "folded")
    assert folded.details["folded_weight_clips"] == added
    kept_convs = [la for la in kept.details["layers"] if la["type"] == "Convolution"]
    folded_convs = [la for la in folded.details["layers"] if la["type"] == "Convolution"]
    assert all(la["precision"] in ("u8", "i8") for la in folded_convs)
    assert any(la["precision"] == "f32" for la in kept_convs), kept_convs  # the trap the fold avoids
    # a Clip that really clips is kept
    model = onnx.load(str(clipped))
    for init in model.graph.initializer:
        if init.name == "clip_hi":
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), "clip_hi"))
    assert fold_weight_clips(model) == 0


def test_properties_and_option_validation(tmp_path: Path) -> None:
    opts = OpenVINOOptions(threads=2, streams=1, pinning=True, cache_dir="~/x", sparse_weights_decompression_rate=0.5)
    props = opts.properties()
    assert props["INFERENCE_PRECISION_HINT"] == "f32" and props["NUM_STREAMS"] == 1
    assert props["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] == 0.5 and not props["CACHE_DIR"].startswith("~")
    assert "INFERENCE_PRECISION_HINT" not in OpenVINOOptions(precision="auto").properties()
    with pytest.raises(ConfigError, match="unknown key 'thread'"):
        target_from_mapping({"backend": "openvino", "options": {"thread": 2}}, where="t.toml")
    with pytest.raises(ConfigError, match="precision"):
        target_from_mapping({"backend": "openvino", "options": {"precision": "int4"}}, where="t.toml")
    with pytest.raises(ConfigError, match="decompression"):
        target_from_mapping({"backend": "openvino", "options": {"sparse_weights_decompression_rate": 2.0}},
                            where="t.toml")
    for name in ("openvino-cpu", "openvino-cpu-throughput", "openvino-cpu-int8"):
        assert load_target(name).backend == "openvino"


def test_cache_dir_and_fixed_batch(ov_models, tmp_path: Path) -> None:
    target = _target(tmp_path, batch=1)
    build = BACKEND.build(ov_models["fp32"], target, tmp_path / "b1")
    runner = BACKEND.load(tmp_path / "b1", target, build)
    assert runner.inputs[0].shape[0] == 1
    assert any((tmp_path / "ovcache").iterdir())  # compiled blobs cached for the next start


def test_compile_cache_is_bounded_and_load_says_cold_or_warm(ov_models, tmp_path: Path) -> None:
    """OpenVINO never evicts its CACHE_DIR: edgekd prunes it (oldest blobs first) to cache_max_mb before a
    compile, and the runner says whether its load compiled (cold) or read a blob (warm)."""
    import os
    import time

    cache = tmp_path / "ovcache"
    cache.mkdir()
    for i in range(3):  # stale blobs of earlier models, 2 MB each, the oldest first
        old = cache / f"old{i}.blob"
        old.write_bytes(b"\0" * 2_000_000)
        os.utime(old, (time.time() - 1000 + i, time.time() - 1000 + i))
    from edgekd.backends.openvino import OpenVINORunner

    build = BACKEND.build(ov_models["int8"], _target(tmp_path / "elsewhere"), tmp_path / "b")
    options = dataclasses.replace(load_target("openvino-cpu").options, cache_dir=str(cache), cache_max_mb=3.0)
    cold = OpenVINORunner(tmp_path / "b" / build.artifact, options).describe()["compile_cache"]
    assert cold["pruned"] == ["old0.blob", "old1.blob"] and not (cache / "old0.blob").exists()
    assert cold["state"].startswith("cold") and cold["blobs"] >= 2  # old2 + the blob written now
    warm = OpenVINORunner(tmp_path / "b" / build.artifact, options).describe()["compile_cache"]
    assert warm["state"].startswith("warm") and warm["pruned"] == []
    with pytest.raises(ValueError, match="cache_max_mb"):
        OpenVINOOptions(cache_max_mb=-1)


def test_pipeline_builds_openvino_target(tmp_path: Path) -> None:
    from edgekd.pipeline import CompressOptions, compress

    report = compress("builtin:digits-student", data="builtin:digits", recipe="fp32",
                      targets=[_target(tmp_path)], out=tmp_path / "bundle", options=CompressOptions(measure=False))
    entry = report["targets"]["openvino-cpu"]
    assert entry["status"] == "passed" and entry["parity_ok"]
    assert entry["build"]["precision"] == "fp32" and entry["runtime"]["precision"] == "fp32"
    assert (tmp_path / "bundle" / "openvino-cpu" / "model.xml").is_file()
