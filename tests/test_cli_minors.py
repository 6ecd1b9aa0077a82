"""Console and recipe handling: plain progress lines off a terminal, whole target names at 80 columns, pass
orders refused when a recipe is loaded, ``--set`` overrides of recipe settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.config import available, load_recipe
from edgekd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

_PROGRESS_SCRIPT = """
from edgekd.progress import log, track
log("loading")
for _ in track(range(20), "training"):
    pass
"""


def _run_progress(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("EDGEKD_QUIET", "EDGEKD_VERBOSE")}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-c", _PROGRESS_SCRIPT], env={**base, **env}, capture_output=True,
                          text=True, timeout=120, check=True)


def test_plain_progress_lines_when_stderr_is_a_pipe() -> None:
    lines = _run_progress().stderr.splitlines()
    assert lines[0] == "loading"
    assert lines[1] == "training: started (20 steps)"
    assert "training: 10 % (2/20)" in lines[2] and "training: 90 % (18/20)" in lines[-2]
    assert len(lines) == 2 + 9 + 1  # start, every 10 % below 100 %, end
    assert lines[-1].startswith("training: done 20/20 in ") and lines[-1].endswith(" s")


def test_quiet_prints_nothing() -> None:
    assert _run_progress(EDGEKD_QUIET="1").stderr == ""


def _report(names: list[str]) -> dict:
    return {"accuracy": {"student": 97.0}, "passes": {"quantize": {"scheme": "w4a8"}},
            "targets": {name: {"backend": "openvino", "build": {"precision": "int8"}, "accuracy": 97.125,
                               "parity": {"top1_agreement": 0.998}, "size_mb": 0.1234,
                               "latency": {"p50_ms": 0.1234, "p90_ms": 0.2345}, "status": "passed"}
                        for name in names}}


@pytest.mark.parametrize("width", [80, 140])
def test_summary_keeps_target_names_and_values_whole(width: int) -> None:
    from rich.console import Console

    from edgekd.compress_report import print_summary

    names = ["openvino-cpu-throughput", "tensorrt-orin-nano", "fpga-zcu104"]
    console = Console(width=width, record=True)
    print_summary(_report(names), title="edgekd bundle: out/x", console=console)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    for name in names:
        assert name in text
    for value in ("97.12", "99.80", "0.123", "0.234", "passed", "int8 (w4a8)", "openvino"):
        assert value in text


def test_every_shipped_recipe_still_loads() -> None:
    for name in available("recipes"):
        assert load_recipe(name).name == name


@pytest.mark.parametrize(("order", "match"), [
    (["quantize", "sparsify"], r"'sparsify' \(passes\[1\]\) cannot run after 'quantize' \(passes\[0\]\)"),
    (["quantize", "prune_channels"], r"'prune_channels' \(passes\[1\]\) cannot run after 'quantize'"),
    (["sparsify", "prune_channels"], r"'prune_channels' \(passes\[1\]\) cannot run after 'sparsify'"),
    (["quantize", "distill", "quantize"], r"two 'quantize' passes \(passes\[0\] and passes\[2\]\)"),
])
def test_impossible_pass_order_is_refused_on_load(tmp_path: Path, order: list[str], match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("".join(f'[[passes]]\nname = "{name}"\n' for name in order))
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_working_orders_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("".join(f'[[passes]]\nname = "{n}"\n' for n in ("distill", "prune_channels", "sparsify", "quantize",
                                                                      "distill")))
    assert [p.name for p in load_recipe(path).passes] == ["distill", "prune_channels", "sparsify", "quantize", "distill"]


def test_set_overrides_pass_finetune_and_export_settings() -> None:
    recipe = load_recipe("int8-kd", ["distill.epochs=5", "quantize.finetune.lr=1e-4", "export.opset=18",
                                     "distill.loss=ce", 'quantize.calibration="minmax"'])
    distill, quantize = (p.config for p in recipe.passes)
    assert (distill.epochs, distill.loss) == (5, "ce")
    assert quantize.finetune.lr == 1e-4 and quantize.finetune.epochs == 10 and quantize.calibration == "minmax"
    assert recipe.export.opset == 18 and recipe.name == "int8-kd"
    assert recipe.source == str(available("recipes")["int8-kd"])
    assert load_recipe("int8-kd").passes[0].config.epochs == 40  # the file is untouched


@pytest.mark.parametrize(("override", "match"), [
    ("distill.epoch=5", r"--set distill.epoch=5: unknown key 'epoch'; allowed keys: epochs, steps, batch_size"),
    ("quantize.finetune.lrr=1", r"unknown key 'finetune.lrr'; allowed keys in finetune: epochs, steps"),
    ("distill.epochs=five", r"--set distill.epochs=five: expected an integer, got 'five'"),
    ("distill.resume=maybe", r"expected true or false, got 'maybe'"),
    ("export.opset=11", "opset 11 is too old"),
    ("sparsify.n=1", r"--set sparsify.n=1: the recipe has no 'sparsify' pass; its passes: distill, quantize"),
    ("epochs=5", r"--set epochs=5: expected PASS.KEY=VALUE"),
    ("distill.name=quantize", "a pass's name cannot be overridden"),
    ("distill.epochs.max=3", r"epochs is a int value, not a table"),
])
def test_bad_set_names_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_recipe("int8-kd", [override])


def test_set_parses_by_the_field_type() -> None:
    """The setting's dataclass field decides how VALUE reads: "5" is a string for a str field, a,b a list."""
    distill = load_recipe("int8-kd", ["distill.checkpoint_dir=5", "distill.resume=yes", "distill.lr=1",
                                      "distill.features=a.x:b.y,c:d", "distill.steps=7"]).passes[0].config
    assert (distill.checkpoint_dir, distill.resume, distill.lr, distill.features, distill.steps) == (
        "5", True, 1.0, ("a.x:b.y", "c:d"), 7)
    assert load_recipe("int8-kd", ["distill.steps=none", 'distill.features=["a:b"]']).passes[0].config.steps is None


def test_set_on_a_repeated_pass_needs_an_index(tmp_path: Path) -> None:
    path = tmp_path / "twice.toml"
    path.write_text('[[passes]]\nname = "distill"\nepochs = 3\n[[passes]]\nname = "distill"\nepochs = 4\n')
    with pytest.raises(ConfigError, match="the recipe has 2 'distill' passes") as info:
        load_recipe(path, ["distill.epochs=9"])
    assert "distill[0].KEY=VALUE ... distill[1].KEY=VALUE" in str(info.value)
    assert [p.config.epochs for p in load_recipe(path, ["distill[1].epochs=9"]).passes] == [3, 9]
    with pytest.raises(ConfigError, match=r"no distill\[2\]"):
        load_recipe(path, ["distill[2].epochs=9"])


def test_cli_set_is_applied_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.cli import main

    recipe = tmp_path / "sup.toml"
    recipe.write_text('[[passes]]\nname = "distill"\nloss = "ce"\nepochs = 40\n')
    out = tmp_path / "b"
    code = main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--recipe", str(recipe),
                 "--set", "distill.epochs=1", "--set", "distill.steps=3", "--target", "cpu", "--out", str(out),
                 "--no-measure", "--quiet", "--json"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    distill = manifest["config"]["recipe"]["passes"][0]
    assert (distill["epochs"], distill["steps"], distill["loss"]) == (1, 3, "ce")
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["passes"][0] == distill and report["passes"]["distill"]["steps"] == 3
    assert json.loads(capsys.readouterr().out)["recipe"] == report["recipe"]
    assert main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--recipe", str(recipe),
                 "--set", "distill.epoch=1", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_columns_env_sets_the_width_off_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.compress_report import print_summary

    monkeypatch.setenv("COLUMNS", "80")
    print_summary(_report(["openvino-cpu-throughput"]))
    out = capsys.readouterr().out
    assert "openvino-cpu-throughput" in out and "…" not in out and max(len(line) for line in out.splitlines()) <= 80
