"""The HLS LUT estimate: its datapath terms per layer, and its coefficients against a real yosys run."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.backends.hls import estimate as est
from edgekd.backends.hls.lut_calibration import Datapath, lanes_verilog, requant_verilog


def test_luts_follow_the_datapath_terms() -> None:
    one = est._luts(8, 1, 9, "fixed_point")
    two = est._luts(16, 2, 9, "fixed_point")
    assert one["lut_terms"] == {"products": 8, "groups": 1, "x_bits": 9, "requant": "fixed_point"}
    assert two["lut"] == pytest.approx(2 * one["lut"], abs=1)  # two copies of the same datapath
    assert one["lut_products_in_fabric"] > 3 * one["lut"]  # a LUT multiplier costs far more than its adder
    assert est._luts(8, 1, 9, "power_of_two")["lut"] < one["lut"]  # a shift needs no rounding multiplier glue
    base, slope = est.LUT_DSP_TREE
    assert est._luts(8, 1, 9, None)["lut"] == round(base + 8 * slope)  # no requantizer: a raw int32 output
    assert est._luts(3, 1, 9, None)["lut"] == round(sum(est.LUT_DSP_CHAIN) + 2 * est.LUT_DSP_CHAIN[1])


def test_datapath_rejects_more_accumulators_than_products() -> None:
    with pytest.raises(ValueError, match="groups <= products"):
        Datapath(2, 3)


def test_layer_estimates_carry_luts(tmp_path: Path) -> None:
    from edgekd.backends.hls import HLSBackend
    from edgekd.config import load_target
    from edgekd.testing import ort_qdq

    path, _ = ort_qdq("student", tmp_path, epochs=1)
    layers = HLSBackend().estimate(path, load_target("fpga-zcu104")).to_dict()["layers"]
    datapaths = [la for la in layers if la["kind"] in ("conv", "dense")]
    assert datapaths and all(la["lut"] > 0 and la["lut_terms"]["products"] == la["multipliers"] for la in datapaths)
    assert all(la["lut"] is None for la in layers if la["kind"] == "pool")


@pytest.mark.parametrize(("products", "groups"), [(6, 2), (8, 1)])  # a post-adder chain each; a LUT tree
def test_coefficients_match_yosys(products: int, groups: int, tmp_path: Path) -> None:
    """A datapath with fixed-point requantizers: the estimate within 15 % of yosys synth_xilinx's LUT count."""
    from edgekd.backends.rtl import tools
    from edgekd.backends.rtl.synth import TOP, synthesize

    if tools.find("yosys") is None:
        pytest.skip("yosys is needed (pip install 'edgekd[rtl]')")
    counts = {}
    for name, text in (("lanes", lanes_verilog(Datapath(products, groups), TOP)),
                       ("rq", requant_verilog("fixed_point", TOP))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "engine.v").write_text(text)
        counts[name] = synthesize(tmp_path / name, "xcup").resources
    assert counts["lanes"]["dsp"] == products and counts["rq"]["dsp"] == est.REQUANT_DSP["fixed_point"]
    measured = counts["lanes"]["lut"] + groups * counts["rq"]["lut"]
    estimate = est._luts(products, groups, 9, "fixed_point")["lut"]
    assert abs(estimate - measured) <= 0.15 * measured, (estimate, measured)
