"""edgekd compress -> quantize pass (hls flavor: power-of-two scales, zero point 0) -> HLS C simulation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekd.config import recipe_from_mapping

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed for C simulation")


def test_compress_to_fpga_target_is_bit_exact(tmp_path: Path) -> None:
    from edgekd.pipeline import CompressOptions, compress

    profile = recipe_from_mapping({"name": "ptq-only", "passes": [
        {"name": "quantize", "mode": "ptq", "calibration": "minmax", "calibration_samples": 64, "bias_correction": False,
         "sensitivity": "off"}]}, where="test")
    report = compress("builtin:digits-student", data="builtin:digits", recipe=profile, targets=["fpga-zcu104"],
                      out=tmp_path / "bundle", options=CompressOptions(measure=False, golden_samples=32))
    entry = report["targets"]["fpga-zcu104"]
    assert entry["status"] == "passed" and entry["parity"]["top1_agreement"] == 1.0
    assert "not FPGA timing" in entry["runtime"]["description"]
    agreement = entry["build"]["details"]["agreement"]
    assert agreement["exact"] == agreement["elements"] == 320, agreement
    assert report["passes"]["quantize"]["power_of_two_scales"] is True
    bundle = tmp_path / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["targets"]["fpga-zcu104"]["artifact"] == "build/csim"
    header = next((bundle / "fpga-zcu104" / "firmware" / "weights").glob("*Conv*.h")).read_text()
    assert "1073741824" in header  # power-of-two requantization: multiplier 2^30 (a pure shift)
