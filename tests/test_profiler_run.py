"""Real profiles of a tiny seeded ONNX model on ONNX Runtime and OpenVINO (small iteration counts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.profiler import layers as layermod
from edgekd.profiler import report


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    torch.onnx.export(model, torch.randn(1, 1, 8, 8), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def test_profile_onnx_on_ort(tiny_onnx: Path, tmp_path: Path) -> None:
    from edgekd.cli import main

    out = tmp_path / "cpu"
    rc = main(["profile", str(tiny_onnx), "--target", "cpu", "--out", str(out), "--iterations", "80",
               "--warmup", "5", "--batches", "1,4", "--layer-runs", "5", "-q"])
    assert rc == 0
    doc = report.load(out / "profile.json")
    ss = doc["single_stream"]
    assert ss["iterations"] == 80 and len(ss["times_ms"]) == 80
    assert ss["min_ms"] <= ss["p50_ms"] <= ss["p90_ms"] <= ss["p99_ms"] <= ss["max_ms"]
    assert ss["p90_early_stop"]["ok"] and ss["p90_early_stop"]["estimate_ms"] >= ss["p90_ms"]
    assert ss["first_call_ms"] > 0 and doc["load_s"] > 0 and doc["artifact"]["size_mb"] > 0
    assert doc["environment"]["threads"]["intra_op_threads"] == 2
    assert doc["runtime"]["runtime"] == "onnxruntime"
    ops = {r["op_type"] for r in doc["layers"]["rows"]}
    assert "Gemm" in ops and any("Conv" in o for o in ops)
    assert abs(sum(r["share"] for r in doc["layers"]["rows"]) - 1) < 1e-6
    assert doc["layers"]["precision_mix"] == {"fp32": pytest.approx(1.0)}
    points = doc["offline"]["points"]
    assert [p["batch_size"] for p in points] == [1, 4] and all(p["throughput_per_s"] > 0 for p in points)
    for name in ("profile.md", "summary.csv", "latency.csv", "layers.csv", "offline.csv", "latency_hist.png",
                 "latency_cdf.png", "layers_top.png"):
        assert (out / name).is_file(), name
    assert "Per-layer time" in (out / "profile.md").read_text()
    # the gate passes against itself and the budget check reads the target's p90 budget (50 ms)
    assert main(["profile", "--compare", str(out / "profile.json"), str(out / "profile.json"),
                 "--max-regression", "5%", "-q"]) == 0


def test_profile_onnx_on_openvino(tiny_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from edgekd.cli import main

    out = tmp_path / "ov"
    rc = main(["profile", str(tiny_onnx), "--target", "openvino-cpu", "--out", str(out), "--iterations", "64",
               "--warmup", "5", "--layer-runs", "5", "--check-budget", "-q"])
    assert rc == 0
    doc = json.loads((out / "profile.json").read_text())
    assert doc["runtime"]["runtime"] == "openvino"
    rows = doc["layers"]["rows"]
    assert doc["layers"]["source"] == "openvino perf counters"
    # the target asks for f32: every executed compute layer must say so (bf16 would be a silent downgrade)
    compute = [r for r in rows if r["op_type"] in ("Convolution", "FullyConnected")]
    assert compute and all(r["precision"] == "fp32" for r in compute)


def test_ort_trace_parsing_skips_warmup() -> None:
    def node(name: str, dur: int, op: str, t: str = "float") -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider", "input_type_shape": [{t: [1]}]}}

    run = {"cat": "Session", "name": "model_run", "dur": 1}
    events = [node("a", 1000, "Conv"), run, node("a", 10, "Conv"), node("b", 30, "QLinearConv", "uint8"), run,
              node("a", 20, "Conv"), node("b", 50, "QLinearConv", "uint8"), run]
    rows, runs = layermod.parse_ort_trace(events, skip_runs=1)
    assert runs == 2
    by = {r.layer: r for r in rows}
    assert by["a"].time_ms == pytest.approx(0.015) and by["b"].time_ms == pytest.approx(0.040)
    assert by["b"].precision == "int8" and by["a"].precision == "fp32"
    assert rows[0].layer == "b" and by["b"].share == pytest.approx(80 / 110)
    assert [r.layer for r in layermod.heavy_layers_not_in(rows, "int8")] == ["a"]


def test_make_feeds_rejects_fixed_batch_mismatch() -> None:
    from edgekd.artifact import IOSpec
    from edgekd.errors import ConfigError
    from edgekd.profiler.measure import make_feeds

    feeds = make_feeds([IOSpec("x", (None, 3), "float32")], 4, sample=np.ones((2, 3)))
    assert feeds["x"].shape == (4, 3) and np.all(feeds["x"] == 1)
    with pytest.raises(ConfigError, match="fixed batch"):
        make_feeds([IOSpec("x", (1, 3), "float32")], 4)


def test_profile_token_ids_with_dynamic_length_needs_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An int64 token-id input with a dynamic sequence length: --shape gives it; without, the hint says how."""
    import torch
    from torch import nn

    from edgekd.cli import main

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.fc = nn.Embedding(50, 8), nn.Linear(8, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(ids).mean(1))

    path = tmp_path / "text.onnx"
    torch.onnx.export(Text().eval(), (torch.zeros(1, 6, dtype=torch.long),), str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "N", 1: "T"}})
    common = ["--target", "cpu", "--iterations", "5", "--warmup", "1", "--no-plots", "--no-layers", "-q"]
    assert main(["profile", str(path), "--out", str(tmp_path / "a"), *common]) == 2
    assert "--shape input_ids=1x?" in capsys.readouterr().err
    assert main(["profile", str(path), "--out", str(tmp_path / "b"), "--shape", "input_ids=1x16", "--batches", "1,2",
                 *common]) == 0
    doc = report.load(tmp_path / "b" / "profile.json")
    assert doc["single_stream"]["iterations"] == 5
    assert [p["batch_size"] for p in doc["offline"]["points"]] == [1, 2]
    assert main(["profile", str(path), "--out", str(tmp_path / "c"), "--shape", "ids=1x16", *common]) == 2
    assert "the model's inputs: input_ids" in capsys.readouterr().err


def test_profile_unreadable_artifacts_are_short_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.cli import main

    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "model.xml").write_text("<?xml version='1.0'?>\n<net name='m' version='11'></net>\n")
    common = ["--iterations", "3", "--no-plots", "-q"]
    assert main(["profile", str(tmp_path / "empty.onnx"), "--target", "cpu", "--out", str(tmp_path / "o1"), *common]) == 2
    assert "empty (0 bytes)" in capsys.readouterr().err
    pytest.importorskip("openvino")
    assert main(["profile", str(tmp_path / "model.xml"), "--target", "openvino-cpu", "--out", str(tmp_path / "o2"),
                 *common]) == 2
    assert "weights file model.bin is missing" in capsys.readouterr().err


def test_precision_auto_on_models_it_cannot_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Seeded float probes cannot feed token ids, two inputs or a dynamic H/W: a clear error, not an ORT traceback."""
    pytest.importorskip("openvino")
    import torch
    from torch import nn

    from edgekd.cli import main

    ids = tmp_path / "ids.onnx"
    torch.onnx.export(nn.Embedding(10, 4).eval(), (torch.zeros(1, 3, dtype=torch.long),), str(ids), dynamo=False,
                      input_names=["input_ids"], output_names=["out"], opset_version=17)
    dyn = tmp_path / "dyn.onnx"
    torch.onnx.export(nn.Conv2d(1, 2, 3).eval(), (torch.randn(1, 1, 8, 8),), str(dyn), dynamo=False,
                      input_names=["input"], output_names=["out"], opset_version=17,
                      dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}})
    common = ["--target", "openvino-cpu", "--precision", "auto", "--iterations", "3", "--no-plots", "-q"]
    assert main(["profile", str(ids), "--out", str(tmp_path / "a"), *common]) == 2
    assert "input 'input_ids' is int64" in capsys.readouterr().err
    assert main(["profile", str(dyn), "--out", str(tmp_path / "b"), *common]) == 2
    assert "--shape input=1x" in capsys.readouterr().err
