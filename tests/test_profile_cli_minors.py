"""`edgekd profile` command-line minors (issue 17): bad counts are usage errors, a closed pipe ends quietly, and a
reused output folder does not keep an earlier run's tables and plots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    from edgekd.testing.models import export_float, make_module

    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    return export_float(make_module("student", seed=0), tmp_path_factory.mktemp("minors") / "student.onnx", x)


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--iterations", "0", "must be >= 1, got 0"), ("--warmup", "-1", "must be >= 0, got -1"),
    ("--batch", "-3", "must be >= 1, got -3"), ("--layer-runs", "0", "must be >= 1"),
    ("--time", "-2", "must be >= 0"), ("--idle-gap", "nan", "must be >= 0"),
    ("--iterations", "many", "expected an integer, got 'many'")])
def test_bad_counts_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str,
                                     says: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(tmp_path / "m.onnx"), option, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}: {says}" in err and "Traceback" not in err


def test_closed_pipe_ends_quietly(tiny_onnx: Path, tmp_path: Path) -> None:
    """`edgekd profile ... | head -1` with the reader gone before the summary is printed: no traceback, no
    "Exception ignored" at exit, the shell's SIGPIPE status, and the profile is on disk."""
    out = tmp_path / "p"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "profile", str(tiny_onnx), "--target", "cpu", "--out",
                             str(out), "--iterations", "20", "--warmup", "2", "--no-layers", "--no-plots", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=300)
    assert rc == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err
    assert (out / "profile.json").is_file()


def test_reused_output_folder_drops_stale_tables_and_plots(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert main(["profile", str(tiny_onnx), "--target", "cpu", "--out", str(out), "--iterations", "20", "--warmup", "2",
                 "--batches", "1,2", "--layer-runs", "2", "-q"]) == 0
    first = {p.name for p in out.iterdir() if p.is_file()}
    assert {"layers.csv", "offline.csv", "latency_hist.png", "layers_top.png"} <= first
    (out / "notes.txt").write_text("mine")  # not the profiler's: kept
    assert main(["profile", str(tiny_onnx), "--target", "cpu", "--out", str(out), "--iterations", "20", "--warmup", "2",
                 "--no-layers", "--no-plots", "-q"]) == 0
    second = {p.name for p in out.iterdir() if p.is_file()}
    assert second == {"profile.json", "summary.csv", "latency.csv", "profile.md", "notes.txt"}
    assert (out / "notes.txt").read_text() == "mine"
