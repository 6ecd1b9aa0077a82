"""precision = "auto" inside compress: every candidate profiled, the winner built, the table reported."""

from __future__ import annotations

from pathlib import Path

from edgekd.bundle import verify_bundle
from edgekd.pipeline import CompressOptions, compress

TARGET = """
name = "ov-auto"
backend = "openvino"
[options]
precision = "auto"
[budgets]
max_accuracy_drop = 1.0
[parity]
atol = 0.1
rtol = 0.05
min_top1_agreement = 0.95
[profiling]
warmup = 5
iterations = 40
"""


def test_auto_precision_builds_the_winner(tmp_path: Path) -> None:
    target = tmp_path / "ov-auto.toml"
    target.write_text(TARGET)
    report = compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=[str(target)],
                      out=tmp_path / "b", options=CompressOptions(golden_samples=8))
    entry = report["targets"]["ov-auto"]
    auto = entry["auto_precision"]
    labels = {c["label"] for c in auto["candidates"]}
    assert "f32" in labels  # bf16/f16 join where the CPU reports them (AMX here)
    assert auto["winner"] in labels and auto["reason"]
    winner = next(c for c in auto["candidates"] if c["label"] == auto["winner"])
    assert winner["within_budget"]
    # the shipped build runs the chosen precision, and the report says so
    assert entry["build"]["precision"] == winner["ran"]
    assert (tmp_path / "b" / "profile" / "auto-ov-auto" / "auto.md").is_file()
    assert "precision auto chose" in (tmp_path / "b" / "report.md").read_text()
    assert verify_bundle(tmp_path / "b") == []
