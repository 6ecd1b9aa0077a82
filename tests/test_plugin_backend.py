"""The plugin example, installed for real: an out-of-tree backend with its own numerics quantizes and builds.

examples/plugin_backend is pip-installed into a temporary folder (no network, no build isolation: setuptools from
the venv) and `edgekd compress` runs in a subprocess that finds the backend only through its entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin_backend"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(EXAMPLE, source)  # setuptools writes build/ and *.egg-info next to the sources: not into the repo
    site = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "edgekd_ort_symmetric" / "targets" / "ort-symmetric.toml").is_file()
    return site


def _edgekd(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False, cwd=site.parent)


def _activation_zero_points(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_listed_through_its_entry_point(installed: Path) -> None:
    proc = _edgekd(installed, "list", "backends")
    assert proc.returncode == 0, proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if "ort-symmetric" in ln), "")
    assert "available" in line and "unavailable" not in line, proc.stdout


def test_compress_int8_through_the_plugin(installed: Path, tmp_path: Path) -> None:
    target = installed / "edgekd_ort_symmetric" / "targets" / "ort-symmetric.toml"
    out = tmp_path / "bundle"
    proc = _edgekd(installed, "compress", "--model", "builtin:digits-student", "--data", "builtin:digits",
                   "--recipe", "ptq", "--target", str(target), "--out", str(out), "--no-measure", "-q")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    quantize = report["passes"]["quantize"]
    # the quantize pass asked the plugin's numerics, not a list of backend names
    assert "ort-symmetric" in quantize["decisions"]["symmetric_activations"], quantize["decisions"]
    assert quantize["activations"].startswith("int8 per-tensor symmetric")
    entry = report["targets"]["ort-symmetric"]
    assert entry["backend"] == "ort-symmetric" and entry["source"] == "variants/model.ort-symmetric.onnx"
    assert entry["status"] == "passed" and entry["parity_ok"] is True, entry
    assert entry["build"]["precision"] == "int8"  # ONNX Runtime ran every Conv/Gemm as an integer kernel
    # the plugin's own flavor wrote the variant: signed int8 activations, every zero point 0
    zero_points = _activation_zero_points(out / "variants" / "model.ort-symmetric.onnx")
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    # model.onnx (ONNX Runtime's reference flavor) holds the same symmetric values stored as uint8 + 128
    assert {int(zp) for zp in _activation_zero_points(out / "model.onnx") if zp.dtype == np.uint8} <= {0, 128}
    meta = {p.key: p.value for p in onnx.load(str(out / "variants" / "model.ort-symmetric.onnx")).metadata_props}
    assert meta["edgekd.flavor"] == "ort-symmetric"
