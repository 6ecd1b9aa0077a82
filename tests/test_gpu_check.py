"""tools/gpu_check.sh --dry-run, run for real on a bundle built here (digits student, fp32, TensorRT target):
a good bundle is reported OK with every step's command line checked, a corrupted one fails naming the file,
and without TensorRT or its wheels the dry run says which wheels are missing. The helper's own parsers
(wheel names, trtexec's summary) and its failure records (a build without a GPU) are tested directly."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"
TARGET = ROOT / "tools" / "gpu_check" / "targets" / "trt-h200.toml"
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekd.pipeline import CompressOptions, compress

    root = tmp_path_factory.mktemp("gpu-check-bundles")
    compress("builtin:digits-student", data="builtin:digits", profile="fp32", targets=[str(TARGET)],
             out=str(root / "digits-fp32"), options=CompressOptions(measure=False))
    return root


def dry_run(tmp_path: Path, bundles: Path, wheels: Path, expect: str = "digits-fp32") -> tuple[int, str]:
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--bundles", str(bundles), "--wheels", str(wheels),
                           "--expect", expect, "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHON": sys.executable})
    return proc.returncode, proc.stdout + proc.stderr


def test_dry_run_reports_the_bundle_ok_checks_every_step_and_names_missing_wheels(bundles: Path, tmp_path: Path) -> None:
    (tmp_path / "no-wheels").mkdir()
    rc, out = dry_run(tmp_path, bundles, tmp_path / "no-wheels", expect="digits-fp32,resnet18-int8")
    # every checksummed file of the manifest (weights.pt made it 7)
    assert re.search(r"bundle digits-fp32: OK \(7 files verified", out) and "TensorRT target(s): trt-h200" in out, out
    assert "missing: bundle resnet18-int8" in out
    for step in ("build", "parity", "profile", "trtexec-script"):  # each step's command line is printed ...
        assert f"== step {step}:digits-fp32/trt-h200 " in out, step
    assert "build: would build" in out and "trt-h200/model.onnx for trt-h200" in out  # ... and its dry run passed
    if not HAS_TENSORRT:  # the backend's no-SDK build ran: its lint passed as it must on the GPU
        assert "build: lint and trtexec script as the GPU build will see them: lint: 0 error(s)" in out
    assert "parity: would run golden_parity" in out and "32 golden inputs" in out
    assert "edgekd profile: arguments parse" in out
    assert "gpu_check: FAILED at step build" not in out and "FAILED at step parity" not in out
    assert "carry: " in out and "OVER THE LIMIT" not in out
    if not HAS_TENSORRT:
        for dist in ("tensorrt_cu13", "tensorrt_cu13_bindings", "tensorrt_cu13_libs"):
            assert f"missing: {dist} wheel" in out, dist
        assert "gpu_check: FAILED at step wheels" in out
    assert rc == 1, out


def test_dry_run_fails_naming_the_corrupted_file(bundles: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "bundles"
    shutil.copytree(bundles / "digits-fp32", damaged / "digits-fp32")
    golden = damaged / "digits-fp32" / "golden.npz"
    golden.write_bytes(golden.read_bytes()[:-8] + b"tampered")
    rc, out = dry_run(tmp_path, damaged, tmp_path)
    assert rc == 1
    assert "bundle digits-fp32: FAILED: golden.npz: checksum mismatch" in out
    assert "gpu_check: FAILED at step bundles" in out
    assert "== step build:" not in out  # nothing is built from a bundle that failed its checksums


def test_wheel_check_wants_one_version_of_each_wheel(tmp_path: Path) -> None:
    names = ["tensorrt_cu13-10.16.1.11-py3-none-any.whl",
             "tensorrt_cu13_bindings-10.16.1.11-cp312-none-manylinux_2_28_x86_64.whl",
             "tensorrt_cu13_libs-10.16.1.11-py2.py3-none-manylinux_2_28_x86_64.whl"]
    for name in names:
        (tmp_path / name).write_bytes(b"x" * 10)
    assert gpu_check.check_wheels(tmp_path) == ([], names, 30)
    (tmp_path / "tensorrt_cu13_libs-11.4.0.106-py2.py3-none-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (tmp_path / names[1]).unlink()
    (tmp_path / "tensorrt_cu13_bindings-10.16.1.11-cp311-none-manylinux_2_28_x86_64.whl").write_bytes(b"")  # wrong Python
    problems, _, _ = gpu_check.check_wheels(tmp_path)
    assert any(p.startswith("tensorrt_cu13_bindings wheel") for p in problems)
    assert any(p.startswith("one tensorrt_cu13_libs wheel, not 2") for p in problems)
    assert any("must be one version, found 10.16.1.11, 11.4.0.106" in p for p in problems)


def test_trtexec_summary_is_parsed() -> None:
    log = """[12/01/2026-10:00:00] [I] === Performance summary ===
[12/01/2026-10:00:00] [I] Throughput: 8123.45 qps
[12/01/2026-10:00:00] [I] Latency: min = 0.101 ms, max = 0.402 ms, mean = 0.123 ms, median = 0.120 ms, \
percentile(90%) = 0.130 ms, percentile(95%) = 0.140 ms, percentile(99%) = 0.2 ms
[12/01/2026-10:00:00] [I] GPU Compute Time: min = 0.05 ms, max = 0.1 ms, mean = 0.06 ms, median = 0.058 ms, \
percentile(90%) = 0.07 ms, percentile(95%) = 0.08 ms, percentile(99%) = 0.09 ms
"""
    got = gpu_check.parse_trtexec(log)
    assert got["throughput"] == pytest.approx(8123.45)
    assert got["latency"]["median"] == pytest.approx(0.12) and got["latency"]["p90"] == pytest.approx(0.13)
    assert got["gpu_compute_time"]["p99"] == pytest.approx(0.09)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed: the engine would really be built")
def test_a_build_without_gpu_fails_loudly_and_the_summary_says_so(bundles: Path, tmp_path: Path) -> None:
    res = tmp_path / "work" / "results" / "digits-fp32__trt-h200"
    rc = gpu_check.main(["build", str(bundles / "digits-fp32"), "--target", "trt-h200", "--work",
                         str(tmp_path / "work" / "bundles"), "--json", str(res / "build.json")])
    assert rc == 1
    record = json.loads((res / "build.json").read_text())
    assert record["status"] == "failed" and any("engine not built here" in n for n in record["notes"])
    (tmp_path / "work" / "steps.tsv").write_text("build:digits-fp32/trt-h200\tfailed\t1\t2\tcmd\n")
    assert gpu_check.main(["summary", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 1
    doc = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert doc["ok"] is False and doc["failures"] == ["step build:digits-fp32/trt-h200: failed (exit 1)"]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| digits-fp32 | trt-h200 | not built | - | - |" in table


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed: the real run would go past its first step")
def test_the_real_run_without_tensorrt_stops_at_its_first_step_and_still_writes_its_results(tmp_path: Path) -> None:
    (tmp_path / "no-wheels").mkdir()
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out"), "--wheels", str(tmp_path / "no-wheels"),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: FAILED at step wheels: failed (exit 1)" in proc.stdout  # stderr goes into the log too
    assert "missing: tensorrt_cu13_libs wheel" in (tmp_path / "out" / "gpu_check.log").read_text()
    doc = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert doc["ok"] is False and doc["failures"] == ["step wheels: failed (exit 1)"]
    assert "machine not recorded" in (tmp_path / "out" / "gpu_check.md").read_text()
