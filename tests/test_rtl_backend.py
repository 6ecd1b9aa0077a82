"""RTL backend: the folded int8 engine simulated against ONNX Runtime INT8, synthesized, placed and routed.

One tiny design (the digits MLP) goes end to end through ``edgekd compress`` onto fpga-ice40-up5k; the
digits student (Conv, MaxPool, Flatten, Gemm) is simulated exactly without synthesis to keep CI short.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.backends.rtl import RTLBackend, codegen, sim, tools
from edgekd.config import load_target, recipe_from_mapping
from edgekd.errors import BuildError

_AVAILABLE = RTLBackend().availability()
_PNR = tools.find("nextpnr-ice40")
pytestmark = pytest.mark.skipif(not _AVAILABLE.available, reason=f"rtl backend unavailable: {_AVAILABLE.reason}")

PTQ = {"name": "ptq-only", "passes": [{"name": "quantize", "mode": "ptq", "calibration": "minmax", "calibration_samples": 64,
                                        "bias_correction": False, "sensitivity": "off"}]}


def _compress(model: str, target: str, out: Path, golden: int) -> dict:
    from edgekd.pipeline import CompressOptions, compress

    return compress(model, data="builtin:digits", recipe=recipe_from_mapping(PTQ, where="test"), targets=[target], out=out,
                    options=CompressOptions(measure=False, golden_samples=golden))


@pytest.mark.skipif(_PNR is None, reason=f"rtl backend unavailable: {'; '.join(tools.missing(('nextpnr-ice40',)))}")
def test_mlp_on_ice40_up5k_end_to_end(tmp_path: Path) -> None:
    """compress -> power-of-two quantization -> Verilog -> every golden input exact in simulation -> yosys ->
    nextpnr: fits the UP5K with DSP <= 8, BRAM <= 30, fmax >= 30 MHz."""
    report = _compress("builtin:digits-mlp", "fpga-ice40-up5k", tmp_path / "bundle", golden=360)
    entry = report["targets"]["fpga-ice40-up5k"]
    assert entry["status"] == "passed" and entry["parity"]["max_abs_error"] == 0.0, entry
    details = entry["build"]["details"]
    agreement = details["agreement"]
    assert agreement["samples"] == 360 and agreement["exact"] == agreement["elements"] == 3600, agreement
    est = details["estimates"]
    assert est["fits"] is True and est["measured_by"] == "yosys/nextpnr"
    checks = est["fit_checks"]
    assert checks["dsp"]["used"] <= 8 and checks["bram"]["used"] <= 30 and checks["lc"]["used"] <= 5280
    assert checks["fmax_mhz"]["used"] >= 30.0
    pnr = details["measured"]["place_and_route"]
    assert pnr["seed"] == 1 and pnr["fmax_mhz"] == checks["fmax_mhz"]["used"]
    # cycles: the simulation measures exactly what the layer table predicts (the engine never stalls)
    assert est["total"]["cycles"] == details["cycles_per_image"] == est["analytical"]["cycles"]
    assert est["total"]["latency_us"] == pytest.approx(est["total"]["cycles"] / pnr["fmax_mhz"], rel=1e-3)
    assert details["measured"]["synthesis"]["resources"]["dsp"] == 8  # one SB_MAC16 per lane
    gate = details["measured"]["netlist_check"]
    assert gate["samples"] == 4 and gate["identical"] == 4, gate  # the synthesized gates compute the same codes
    assert entry["latency"]["label"].startswith("measured: cycles in RTL simulation / fmax from nextpnr-ice40 (seed 1)")
    target_dir = tmp_path / "bundle" / "fpga-ice40-up5k"
    assert (target_dir / "rtl" / "build" / "engine.asc").is_file()
    assert json.loads((target_dir / "measured.json").read_text())["fits"] is True
    assert "identical to ONNX Runtime" in (target_dir / "README.md").read_text()


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from edgekd.data import load_data

    out = tmp_path_factory.mktemp("rtl-student")
    report = _compress("builtin:digits-student", "fpga-zcu104", out / "bundle", golden=8)  # power-of-two QDQ model
    assert report["targets"]["fpga-zcu104"]["status"] == "passed"
    return out / "bundle" / "variants" / "model.hls.onnx", load_data("builtin:digits")


def test_student_conv_pool_dense_simulate_exactly(student: tuple[Path, object], tmp_path: Path) -> None:
    """Conv (padding), MaxPool, Flatten, Gemm: every value of 64 test images identical to ONNX Runtime INT8."""
    from edgekd.backends.hls.frontend import load_graph
    from edgekd.export import onnx_outputs

    path, data = student
    graph = load_graph(path)
    plan = codegen.plan_engine(graph, 8, "test")
    assert [row.kind for row in plan.rows] == ["conv", "maxpool", "conv", "maxpool", "dense", "dense"]
    codegen.write_rtl(plan, tmp_path)
    simulator, _ = sim.compile_sim(tmp_path)
    x = data.x_test[:64]
    result = sim.run_sim(tmp_path, simulator, sim.quantize(x, graph.input), graph.output.size, graph.output.dtype)
    y = sim.dequantize(result.codes, graph.output)
    np.testing.assert_array_equal(y, onnx_outputs(path, x).reshape(64, -1))
    assert (result.cycles == plan.cycles()).all()


def test_refusals_name_the_layer_and_the_fix(tmp_path: Path) -> None:
    from edgekd.backends.hls.frontend import load_graph
    from edgekd.testing import export_float, make_module, ort_qdq

    path, data = ort_qdq("mlp", tmp_path, epochs=1)  # ONNX Runtime's default: asymmetric activations
    with pytest.raises(BuildError, match="zero point 0") as err:
        codegen.plan_engine(load_graph(path), 8, "fpga-ice40-up5k")
    assert "quantize for an rtl target" in str(err.value)
    target = load_target("fpga-ice40-up5k")
    assert RTLBackend().preflight(tmp_path / "mlp.onnx", target) == []
    residual = export_float(make_module("residual"), tmp_path / "residual.onnx", data.x_test)
    problems = RTLBackend().preflight(residual, target)
    assert any(p.startswith("op Add") and "no RTL implementation" in p for p in problems), problems


def test_scales_that_are_not_powers_of_two_use_a_multiplier(tmp_path: Path) -> None:
    """ONNX Runtime's symmetric quantizer (zero point 0, arbitrary scales): the requantizer multiplies by the IR's
    31-bit fixed-point factor and stays within 1 LSB of ORT's float32 rounding."""
    from edgekd.backends.hls.frontend import load_graph
    from edgekd.export import onnx_outputs
    from edgekd.testing import ort_qdq

    path, data = ort_qdq("mlp", tmp_path, epochs=1, extra={"ActivationSymmetric": True})
    graph = load_graph(path)
    plan = codegen.plan_engine(graph, 8, "test")
    assert plan.mult_bits == codegen.MULT_BITS
    codegen.write_rtl(plan, tmp_path / "rtl")
    simulator, _ = sim.compile_sim(tmp_path / "rtl")
    x = data.x_test[:100]
    result = sim.run_sim(tmp_path / "rtl", simulator, sim.quantize(x, graph.input), graph.output.size, graph.output.dtype)
    lsb = np.abs(sim.dequantize(result.codes, graph.output) - onnx_outputs(path, x)) / graph.output.scale
    assert lsb.max() <= 1.0 + 1e-6 and (lsb == 0).mean() > 0.95, (lsb.max(), (lsb == 0).mean())


def test_missing_tools_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    status = RTLBackend().availability()
    assert not status.available
    assert "yosys: pip install 'edgekd[rtl]'" in status.reason and "simulator" in status.reason
    assert str(status).startswith("unavailable: ")
