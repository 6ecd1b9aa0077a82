"""The search's latency cost model (edgekd/search/latency.py): deployed-precision whole-model timing, the block
table and its cache, calibration, the granule rule, and `edgekd lut build`. Tiny seeded models; no assertion on
absolute wall times (only on what the measurement must structurally give)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekd.errors import ConfigError, ExportError
from edgekd.profiler.measure import MeasureSettings
from edgekd.search.latency import (
    BlockKey,
    BlockSettings,
    LatencyTable,
    cache_path,
    deployed_onnx,
    detect_granule,
    fit_affine,
    load_or_build,
    measure_forms,
    measure_model,
    model_blocks,
    resolve_target,
)
from edgekd.search.lut_granule import choose_granule

REPO = Path(__file__).resolve().parents[1]
FAST = MeasureSettings(warmup=3, iterations=30)
QUICK_BLOCKS = BlockSettings(rounds=3, warmup=2, iterations=10)


def tiny_net(width: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, groups=width), nn.BatchNorm2d(width), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


EXAMPLE = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _ops(path: str | Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


# ---------------------------------------------------------------- whole-model measurement


@pytest.mark.parametrize("target", ["cpu", "openvino-cpu"])
def test_measure_model_int8_runs_the_qdq_file(target: str, tmp_path: Path) -> None:
    got = measure_model(tiny_net(), EXAMPLE, target, settings=FAST, workdir=tmp_path)
    assert "QuantizeLinear" in _ops(got.onnx) and "DequantizeLinear" in _ops(got.onnx)
    assert got.precision == "int8" and got.build_precision in ("int8", "mixed")
    assert got.iterations == 30
    assert 0 < got.p50_ms <= got.p90_ms < 1000
    assert got.p90_ci_ms[0] <= got.p90_ms <= got.p90_ci_ms[1]


def test_int8_convs_with_shared_folded_biases_run_int8(tmp_path: Path) -> None:
    """Bias-free convs + fresh BatchNorm fold to equal zero biases, which the exporter shares through Identity
    nodes; ORT's QDQ fusion needs a constant bias, so without the clean-up these convs stayed float ("mixed")."""
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(3) for m in (nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                                        nn.ReLU())]).eval()
    x = torch.randn(1, 8, 12, 12)
    from edgekd.config import ExportSettings
    from edgekd.export import torch_export

    torch_export(net, tmp_path / "plain.onnx", x, ExportSettings(dynamic_batch=False), "ort")
    assert "Identity" in _ops(tmp_path / "plain.onnx"), "the exporter no longer shares biases: test is moot"
    got = measure_model(net, x, "cpu", settings=FAST, workdir=tmp_path / "deployed")
    assert got.build_precision == "int8"


def test_measure_model_fp32_is_the_plain_export(tmp_path: Path) -> None:
    got = measure_model(tiny_net(), EXAMPLE, "cpu", precision="fp32", settings=FAST, workdir=tmp_path)
    assert not _ops(got.onnx) & {"QuantizeLinear", "DequantizeLinear"}
    assert got.build_precision == "fp32" and got.p50_ms > 0


def test_fpga_target_and_unknown_precision_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not supported by the latency table") as exc:
        resolve_target("fpga-artix7")
    assert "HLS/RTL estimate" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        measure_model(tiny_net(), EXAMPLE, "cpu", precision="int4")
    with pytest.raises(ConfigError, match="unknown precision"):
        load_or_build("cpu", precision="bf16", cache_dir=tmp_path)


def _float_weighted_ops(path: Path) -> list[str]:
    """Conv/Gemm nodes whose weight input is not a DequantizeLinear output (they run in float)."""
    graph = onnx.load(str(path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] not in dq_outputs]


def test_deployed_int8_form_keeps_named_layers_float(tmp_path: Path) -> None:
    """The search's mixed form is the quantize pass's ``exclude``: the named layer's node stays float, the rest
    Q/DQ; a layer with no node is refused (silently measuring all-INT8 would judge the wrong form)."""
    target = resolve_target("cpu")
    all_int8 = deployed_onnx(tiny_net(), EXAMPLE, target, "int8", tmp_path / "a")
    assert _float_weighted_ops(all_int8) == []
    mixed = deployed_onnx(tiny_net(), EXAMPLE, target, "int8", tmp_path / "b", float_layers=["0"])
    assert _float_weighted_ops(mixed) == ["/0/Conv"]
    with pytest.raises(ExportError, match=r"\['classifier'\] have no node"):
        deployed_onnx(tiny_net(), EXAMPLE, target, "int8", tmp_path / "c", float_layers=["classifier"])


def test_measure_forms_times_every_form_side_by_side() -> None:
    got = measure_forms(tiny_net(), EXAMPLE, "cpu", {"int8": (), "mixed": ("8",)}, rounds=3, settings=FAST)
    assert set(got) == {"int8", "mixed"}
    for m in got.values():
        assert m.iterations == 3 * 16  # 30 // 3 = 10 per round, raised to the 16-query minimum
        assert 0 < m.p50_ms <= m.p90_ms and m.p90_ci_ms[0] <= m.p90_ms <= m.p90_ci_ms[1]
    assert got["int8"].build_precision == "int8" and got["mixed"].build_precision == "mixed"


# ---------------------------------------------------------------- blocks


def test_model_blocks_find_fused_conv_bn_act_depthwise_and_linear() -> None:
    blocks = model_blocks(tiny_net(8), EXAMPLE)
    assert [b.kind for b in blocks] == ["conv", "depthwise", "linear"]
    conv, dw, fc = blocks
    assert (conv.cin, conv.cout, conv.kernel, conv.h, conv.w, conv.bn, conv.act) == (3, 8, (3, 3), 16, 16, True, "relu")
    assert (dw.groups, dw.act) == (8, "relu6")
    assert (fc.cin, fc.cout, fc.bn, fc.act) == (8, 10, False, "none")
    assert conv.macs == 16 * 16 * 8 * 3 * 9
    assert BlockKey.from_dict(json.loads(json.dumps(conv.to_dict()))) == conv
    assert len({b.id for b in blocks}) == 3


# ---------------------------------------------------------------- the table and its cache


def test_table_is_cached_and_keyed_by_precision(tmp_path: Path) -> None:
    table = load_or_build("cpu", cache_dir=tmp_path, granule=8, settings=QUICK_BLOCKS)
    first = table.predict_ms(tiny_net(), EXAMPLE)
    assert first > 0 and table.measured_now == 3 and table.path is not None and table.path.is_file()
    again = load_or_build("cpu", cache_dir=tmp_path, granule=8)
    assert again.predict_ms(tiny_net(), EXAMPLE) == pytest.approx(first)
    assert again.measured_now == 0, "the second call measured blocks the cache holds"
    stored = json.loads(table.path.read_text())
    assert stored["schema"] == "edgekd.latency-table/1" and len(stored["entries"]) == 3
    assert all(len(e["rounds_ms"]) == QUICK_BLOCKS.rounds for e in stored["entries"].values())
    target = resolve_target("cpu")
    assert cache_path(target, "int8", tmp_path) != cache_path(target, "fp32", tmp_path)
    assert "onnxruntime" in table.path.name and table.path.name.startswith("cpu-int8-")
    fp32 = load_or_build("cpu", precision="fp32", cache_dir=tmp_path, granule=8)
    assert fp32.path != table.path and not fp32.entries


def test_wider_nets_predict_more(tmp_path: Path) -> None:
    table = load_or_build("cpu", cache_dir=tmp_path, granule=8, settings=QUICK_BLOCKS)
    x = torch.randn(1, 3, 28, 28)

    def net(w: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, w, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(w, w, 3, padding=1), nn.ReLU()).eval()

    # sums of table entries (blocks of 8x and 64x the MACs), not wall times of the two nets
    raw = {w: table.raw_ms(net(w), x) for w in (8, 128)}
    assert raw[128] > 1.5 * raw[8], raw


def test_calibrate_fits_whole_models(tmp_path: Path) -> None:
    table = load_or_build("cpu", cache_dir=tmp_path, granule=8, settings=QUICK_BLOCKS)
    models = [tiny_net(w) for w in (8, 32, 96)]
    cal = table.calibrate(models, EXAMPLE, settings=FAST)
    assert cal["a"] > 0 and cal["models"] == 3 and len(cal["points"]) == 3
    assert table.predict_ms(models[0], EXAMPLE) == pytest.approx(cal["a"] * cal["points"][0]["sum_ms"] + cal["b"])
    reloaded = LatencyTable.from_dict(json.loads(table.path.read_text()))
    assert reloaded.calibration["a"] == pytest.approx(cal["a"])
    with pytest.raises(ConfigError, match="at least 2 whole models"):
        table.calibrate(models[:1], EXAMPLE)


def test_fit_affine_recovers_a_line_and_falls_back_to_a_ratio() -> None:
    x = np.array([1.0, 2.0, 3.0, 5.0])
    assert fit_affine(x, 1.5 * x + 0.2) == pytest.approx((1.5, 0.2))
    a, b = fit_affine(np.array([2.0, 2.0, 2.0]), np.array([3.0, 3.2, 2.8]))  # one size: no slope to fit
    assert (a, b) == pytest.approx((1.5, 0.0))


# ---------------------------------------------------------------- granule


def _steps(widths: range, g: int, noise: float = 0.01, seed: int = 0, drop: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    rounds = {}
    for w in widths:
        base = 0.05 + 0.004 * (-(-w // g) * g)  # time of the padded width
        if drop and w % g == 0:
            base *= 0.8  # a faster kernel exactly at the multiple
        rounds[w] = list(base * (1 + noise * rng.standard_normal(7)))
    return {w: float(np.median(r)) for w, r in rounds.items()}, rounds


@pytest.mark.parametrize("g", [8, 16, 32])
def test_granule_rule_reads_plateaus(g: int) -> None:
    times, rounds = _steps(range(8, 129, 4), g)
    assert choose_granule(times, rounds)["granule"] == g


def test_granule_rule_reads_drops_and_rejects_linear_and_flat_sweeps() -> None:
    times, rounds = _steps(range(8, 129, 4), 16, drop=True)
    assert choose_granule(times, rounds)["granule"] == 16
    linear = {w: 0.05 + 0.004 * w for w in range(8, 129, 4)}
    verdict = choose_granule(linear)
    assert verdict["granule"] == 4 and "linear" in verdict["why"]
    flat = {w: 0.05 * (1 + 0.003 * np.sin(w)) for w in range(8, 129, 4)}
    verdict = choose_granule(flat)
    assert verdict["granule"] == 4 and "flat" in verdict["why"]
    with pytest.raises(ValueError, match="at least 3"):
        choose_granule({8: 1.0, 16: 1.0})


def test_granule_sweep_on_the_target_reports_every_width() -> None:
    got = detect_granule("cpu", widths=[8, 16, 24, 32], cin=16, hw=14, settings=QUICK_BLOCKS)
    assert [p["width"] for p in got["sweep"]] == [8, 16, 24, 32]
    assert all(p["p50_ms"] > 0 and len(p["rounds_ms"]) == 3 for p in got["sweep"])
    assert got["granule"] in (8, 16) and got["why"]


# ---------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO), "EDGEKD_QUIET": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_help_teaches_and_imports_no_torch(tmp_path: Path) -> None:
    proc = _cli("lut", "build", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    for word in ("--target", "--precision", "granule", "calibration", "Examples:", "FPGA"):
        assert word in proc.stdout, word
    code = "import sys; from edgekd.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO)}, capture_output=True,
                           text=True, timeout=60)
    assert probe.stdout.strip() == "False", probe.stderr


def test_cli_tiny_build_and_fpga_refusal(tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    proc = _cli("lut", "build", "--target", "cpu", "--granule", "8", "--model", "builtin:digits-student", "--data",
                "random:1x8x8", "--variants", "3", "--out", str(out), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["granule"] == 8 and summary["entries"] >= 3 and summary["calibration"]["models"] == 3
    assert Path(summary["cache"]).is_file() and Path(summary["cache"]).is_relative_to(tmp_path / ".edgekd-cache")
    table = json.loads(out.read_text())
    assert table["target"] == "cpu" and table["calibration"]["a"] > 0
    proc = _cli("lut", "build", "--target", "fpga-artix7", cwd=tmp_path)
    assert proc.returncode == 2 and "HLS/RTL estimate" in proc.stderr and "Traceback" not in proc.stderr


def test_pruned_variants_keep_rounded_widths_and_the_classifier() -> None:
    from edgekd.search.lut_variants import calibration_models, pruned_variant

    net = tiny_net(32)
    pruned, meta = pruned_variant(net, EXAMPLE, seed=3, max_ratio=0.7, round_to=8, levels=(0.0, 0.5, 0.7))
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 32, widths
    assert pruned[-1].out_features == 10 and meta["round_to"] == 8
    assert pruned(EXAMPLE).shape == (1, 10)
    family = calibration_models(net, EXAMPLE, 3, seed=1)
    assert len(family) == 3 and family[0][0].out_channels == 32
