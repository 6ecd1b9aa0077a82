"""TensorRT backend. Without tensorrt + a CUDA GPU (this machine): build() still writes the ONNX copy,
lint.json and build_engine.sh and says the engine was not built. The engine build and runner tests
run only where tensorrt and a GPU exist, and skip with the reason otherwise."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_lint import _qdq_block  # tests/ is on sys.path (rootdir conftest, no __init__)

from edgekd.backends.tensorrt import (
    TensorRTBackend,
    TensorRTOptions,
    overall_precision,
    parse_layer_info,
    timing_cache_path,
    trtexec_args,
)
from edgekd.config import load_target, target_from_mapping
from edgekd.errors import BuildError, ConfigError

BACKEND = TensorRTBackend()
STATUS = BACKEND.availability()
needs_gpu = pytest.mark.skipif(not STATUS.available, reason=f"TensorRT backend {STATUS}")


def _target(**options: object):
    base = load_target("tensorrt-orin-nano")
    return dataclasses.replace(base, options=dataclasses.replace(base.options, **options))


@pytest.fixture()
def qdq_model(tmp_path: Path) -> Path:
    path = tmp_path / "qdq.onnx"
    onnx.save(_qdq_block(), str(path))
    return path


def test_availability_names_the_reason() -> None:
    if STATUS.available:
        pytest.skip("tensorrt and a GPU are present; the unavailable path cannot be observed here")
    assert not STATUS.available
    assert "tensorrt" in STATUS.reason
    assert ("not installed" in STATUS.reason and "edgekd[tensorrt]" in STATUS.reason) or "no CUDA GPU" in STATUS.reason


@pytest.mark.skipif(STATUS.available, reason="a GPU is present: the engine is really built (see test_engine_*)")
def test_build_without_sdk_writes_script_and_lint(qdq_model: Path, tmp_path: Path) -> None:
    target = _target()
    out = tmp_path / "trt"
    build = BACKEND.build(qdq_model, target, out)
    assert not build.runnable
    assert build.precision == "int8"  # expected from the graph: every Conv/Gemm has Q/DQ inputs
    assert build.details["precision_source"].startswith("expected")
    assert sorted(p.name for p in out.iterdir()) == ["build_engine.sh", "lint.json", "model.onnx"]
    assert any("engine not built here" in n for n in build.notes)
    script = (out / "build_engine.sh").read_text()
    for flag in ("--onnx=model.onnx", "--saveEngine=model.engine", "--stronglyTyped", "--sparsity=enable",
                 "--memPoolSize=workspace:1024M", "--minShapes=input:1x8x4x4", "--maxShapes=input:8x8x4x4",
                 "--timingCacheFile=", "--exportLayerInfo=layers.json"):
        assert flag in script, flag
    assert "--fp16" not in script and "--int8" not in script  # strongly typed: precision comes from Q/DQ
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(out / "build_engine.sh")], check=True)
    assert '"ok": true' in (out / "lint.json").read_text()


def test_script_runs_until_trtexec_is_missing(qdq_model: Path, tmp_path: Path) -> None:
    if STATUS.available or shutil.which("trtexec"):
        pytest.skip("trtexec/GPU present")
    out = tmp_path / "trt"
    BACKEND.build(qdq_model, _target(), out)
    proc = subprocess.run(["bash", str(out / "build_engine.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TRTEXEC": "trtexec-not-here"})
    assert proc.returncode == 1 and "trtexec not found" in proc.stderr


def test_lint_errors_stop_the_build(tmp_path: Path) -> None:
    bad = tmp_path / "asym.onnx"
    onnx.save(_qdq_block(act_zp=3), str(bad))
    with pytest.raises(BuildError, match="qdq-symmetric"):
        BACKEND.build(bad, _target(), tmp_path / "a")
    if not STATUS.available:  # lint = "warn": files are written, the report keeps the findings
        build = BACKEND.build(bad, _target(lint="warn"), tmp_path / "b")
        assert build.notes[0].startswith("lint: ") and not build.notes[0].startswith("lint: 0 error")
        assert "qdq-symmetric" in (tmp_path / "b" / "lint.json").read_text()


def test_fp16_plan_and_guard(qdq_model: Path) -> None:
    opts = TensorRTOptions(precision="fp16", sparse_weights=False)
    args = trtexec_args(opts, (), has_qdq=True)
    assert "--fp16" in args and "--int8" in args and "--stronglyTyped" not in args
    assert "--sparsity=enable" not in args
    assert TensorRTBackend._plan(opts, True).startswith("fp16 weak typing")
    assert TensorRTBackend._plan(TensorRTOptions(), False) == "fp32, strongly typed"


def test_fp16_script_refuses_tensorrt_11(qdq_model: Path, tmp_path: Path) -> None:
    if STATUS.available:
        pytest.skip("GPU present")
    out = tmp_path / "trt"
    BACKEND.build(qdq_model, _target(precision="fp16"), out)
    assert "ModelOpt AutoCast" in (out / "build_engine.sh").read_text()


def test_timing_cache_keyed_by_gpu_and_version() -> None:
    a = timing_cache_path("~/tc", "NVIDIA A100-SXM4-40GB", "10.3.0")
    b = timing_cache_path("~/tc", "Orin (nvgpu)", "10.3.0")
    c = timing_cache_path("~/tc", "NVIDIA A100-SXM4-40GB", "11.4.0")
    assert len({a, b, c}) == 3
    assert "~" not in str(a) and a.name == "timing-NVIDIA_A100-SXM4-40GB-trt10.3.0.cache"


def test_parse_layer_info_both_schemas() -> None:
    """Field names from NVIDIA's docs: 10.x 'Format/Datatype', 11.x split 'DataType'/'Format'."""
    v10 = {"Layers": [
        {"Name": "conv1 + relu", "LayerType": "CaskConvolution", "TacticName": "sm80_xmma_fprop_sparse_conv_i8i8",
         "Inputs": [{"Name": "x", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]},
        {"Name": "fc", "LayerType": "CaskGemmConvolution", "TacticName": "sm80_xmma_gemm_i8i8",
         "Inputs": [{"Name": "y", "Format/Datatype": "Row major linear Int8 format"}]},
        {"Name": "reformat", "LayerType": "Reformat", "Inputs": [{"Format/Datatype": "Row major linear FP32"}]}],
        "Bindings": ["input", "logits"]}
    layers, summary = parse_layer_info(v10)
    assert [la["precision"] for la in layers] == ["int8", "int8", "fp32"]
    assert summary["compute_layers"] == 2 and summary["compute_precision"] == {"int8": 2}
    assert summary["sparse_layers"] == ["conv1 + relu"] and overall_precision(summary) == "int8"
    v11 = {"Layers": [
        {"Name": "conv1", "LayerType": "CaskConvolution", "TacticName": "sm90_conv_f16",
         "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Channel major FP16 format (kHWC8)"}]},
        {"Name": "fc", "LayerType": "CaskGemm", "TacticName": "sm90_gemm_i8",
         "Inputs": [{"Name": "y", "DataType": "Int8", "Format": "Row major linear"}]}],
        "I/O Tensors": [{"Name": "input", "IOMode": "Input"}]}
    _, summary11 = parse_layer_info(v11)
    assert summary11["compute_precision"] == {"fp16": 1, "int8": 1} and overall_precision(summary11) == "mixed"
    assert parse_layer_info({"Layers": ["a", "b"]})[1]["layers"] == 2  # LAYER_NAMES_ONLY verbosity


def test_targets_and_option_validation() -> None:
    for name in ("tensorrt-orin-nano", "tensorrt-a100"):
        t = load_target(name)
        assert t.backend == "tensorrt" and t.budgets.p90_ms is not None and t.options.sparse_weights
    with pytest.raises(ConfigError, match="min_batch"):
        target_from_mapping({"backend": "tensorrt", "options": {"min_batch": 4, "opt_batch": 2}}, where="t.toml")
    with pytest.raises(ConfigError, match="unknown key 'workspace'"):
        target_from_mapping({"backend": "tensorrt", "options": {"workspace": 1}}, where="t.toml")


@pytest.mark.skipif(STATUS.available, reason="GPU present: the pipeline runs the engine instead")
def test_pipeline_bundle_has_tensorrt_files(tmp_path: Path) -> None:
    from edgekd.pipeline import CompressOptions, compress

    report = compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=["tensorrt-orin-nano"],
                      out=tmp_path / "bundle", options=CompressOptions(measure=False))
    entry = report["targets"]["tensorrt-orin-nano"]
    # a float model (recipe fp32) builds fp16 on the Jetson target (float_precision = "fp16")
    assert entry["status"] == "prepared, not run here" and entry["build"]["precision"] == "fp16"
    assert (tmp_path / "bundle" / "tensorrt-orin-nano" / "build_engine.sh").is_file()

    # the documented device step (build_engine.sh) adds model.engine and layers.json to the checksummed target
    # folder: the manifest declares them as device outputs, so integrity still passes; anything else still fails
    from edgekd.bundle import read_manifest, verify_bundle
    from edgekd.hil import CheckOptions, run_checks

    bundle = tmp_path / "bundle"
    assert read_manifest(bundle)["targets"]["tensorrt-orin-nano"]["device_outputs"] == ["model.engine", "layers.json",
                                                                                   "engine.json"]
    (bundle / "tensorrt-orin-nano" / "model.engine").write_bytes(b"engine bytes from the device")
    (bundle / "tensorrt-orin-nano" / "layers.json").write_text("{}")
    (bundle / "tensorrt-orin-nano" / "engine.json").write_text("{}")
    assert verify_bundle(bundle) == []
    assert run_checks(bundle, CheckOptions(), checks=("integrity",)).result("integrity").status == "passed"
    (bundle / "tensorrt-orin-nano" / "notes.txt").write_text("not a device output")
    assert verify_bundle(bundle) == ["tensorrt-orin-nano/notes.txt: not listed in manifest.json"]


# ---------------------------------------------------------------- engine stamp

_STAND_IN_TRTEXEC = """#!/usr/bin/env bash
# stands in for trtexec on a machine without TensorRT: prints the version banner, writes what trtexec writes
if [ "${1:-}" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec"; exit 0; fi
for a in "$@"; do
  case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; --exportLayerInfo=*) echo {} > "${a#*=}";; esac
done
"""


def test_build_script_stamps_the_engine_and_a_stale_engine_is_refused(qdq_model: Path, tmp_path: Path) -> None:
    """build_engine.sh (really run by bash; trtexec itself is a stand-in, as no TensorRT runs here) writes
    engine.json: TensorRT version, GPU and model.onnx checksum; check_stamp accepts it only for that TensorRT,
    GPU and file, and says what differs."""
    from edgekd.backends.tensorrt.stamp import check_stamp, read_stamp, version_code
    from edgekd.bundle.layout import sha256_file

    out = tmp_path / "trt"
    BACKEND.build(qdq_model, _target(timing_cache_dir=str(tmp_path / "tc")), out)
    fake = tmp_path / "trtexec"
    fake.write_text(_STAND_IN_TRTEXEC)
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake), "HOME": str(tmp_path)}
    subprocess.run(["bash", str(out / "build_engine.sh")], check=True, env=env, capture_output=True, text=True)
    stamp = read_stamp(out / "engine.json")
    onnx_sha = sha256_file(out / "model.onnx")
    assert stamp.tensorrt_code == version_code("10.3.0") and stamp.onnx_sha256 == onnx_sha
    assert stamp.built_by == "build_engine.sh"
    gpu = stamp.gpu  # what the script read (nvidia-smi, else the device tree, else unknown-gpu)
    assert check_stamp(out, onnx_sha256=onnx_sha, tensorrt_version="10.3.0.26", gpu=gpu) == stamp
    with pytest.raises(BuildError, match=r"stale: it was built by TensorRT 10\.3\.0, this is TensorRT 10\.4\.0"):
        check_stamp(out, onnx_sha256=onnx_sha, tensorrt_version="10.4.0.1", gpu=gpu)
    with pytest.raises(BuildError, match="built from another ONNX file") as exc:
        check_stamp(out, onnx_sha256="0" * 64, tensorrt_version="10.3.0", gpu=gpu)
    assert "build_engine.sh" in (exc.value.hint or "")
    (out / "engine.json").write_text(stamp_json := (out / "engine.json").read_text().replace(gpu, "NVIDIA Orin"))
    assert "NVIDIA Orin" in stamp_json
    with pytest.raises(BuildError, match="built on a NVIDIA Orin, this GPU is a NVIDIA H200"):
        check_stamp(out, onnx_sha256=onnx_sha, tensorrt_version="10.3.0", gpu="NVIDIA H200")
    (out / "engine.json").unlink()
    with pytest.raises(BuildError, match="has no engine.json"):
        check_stamp(out, onnx_sha256=onnx_sha, tensorrt_version="10.3.0", gpu=None)


def test_version_codes_match_trtexec_banner() -> None:
    from edgekd.backends.tensorrt.stamp import version_code, version_text

    assert [version_code(v) for v in ("10.3.0.26", "8.6.1.6", "11.0.0")] == [100300, 8601, 110000]
    assert [version_text(c) for c in (100300, 8601, 110000)] == ["10.3.0", "8.6.1", "11.0.0"]


# ---------------------------------------------------------------- real engine (GPU machines only)


@needs_gpu
@pytest.mark.gpu
def test_engine_build_and_run_int8(qdq_model: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    target = _target(timing_cache_dir=str(tmp_path / "tc"))
    out = tmp_path / "trt"
    build = BACKEND.build(qdq_model, target, out)
    assert build.runnable and (out / "model.engine").is_file() and (out / "layers.json").is_file()
    assert build.details["precision_source"] == "engine inspector"
    assert build.details["compute_precision"].get("int8", 0) >= 1
    assert any((tmp_path / "tc").iterdir())
    runner = BACKEND.load(out, target, build)
    x = np.random.default_rng(0).standard_normal((4, 8, 4, 4)).astype(np.float32)
    got = runner.infer({"input": x})["logits"]
    ref = ort.InferenceSession(str(qdq_model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() < 0.1
    assert runner.describe()["runtime"] == "tensorrt"
