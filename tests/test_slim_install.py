"""The device-side install works without torch: `edgekd check`, `edgekd profile` and edgekd.runtime run in a
subprocess whose imports of torch, torchvision, brevitas, torch_pruning and scipy are refused (what `pip install
edgekd` without the [train] extra leaves out); commands that need torch say which install they need.
tools/slim_install_check.sh does the same in a fresh venv installed from the package index (CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edgekd.profiler import special

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchvision", "brevitas", "torch_pruning", "scipy")

# runs CODE with the blocked modules refused; prints which blocked modules were asked for
_RUNNER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
asked = []

class RefuseTrainSide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            asked.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, RefuseTrainSide())
try:
{code}
finally:
    print("ASKED", sorted(set(asked)), "LOADED", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
"""


def _without_torch(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    body = "\n".join("    " + line for line in code.strip().splitlines())
    script = _RUNNER.format(blocked=BLOCKED, code=body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "EDGEKD_QUIET": "1", "PYTHONPATH": str(REPO)})


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _without_torch(f"from edgekd.cli import main\nrc = main({args!r})\nprint('RC', rc)", cwd)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built normally (with torch) on the build side, before any torch-free step runs."""
    from edgekd.buildfile import BuildFile, CacheSettings, build

    root = tmp_path_factory.mktemp("app")
    cache = tmp_path_factory.getbasetemp() / "hil-build-cache"  # shared with the other HIL test files
    bf = BuildFile(model="builtin:digits-student", data="builtin:digits", out="bundle", measure=False,
                   cache=CacheSettings(dir=str(cache)), root=str(root))
    return build(bf).out


def test_check_passes_without_torch_or_scipy(bundle: Path, tmp_path: Path) -> None:
    proc = _cli(["check", str(bundle), "--target", "cpu"], tmp_path)
    assert "RC 0" in proc.stdout, proc.stdout + proc.stderr
    assert "RESULT: PASSED" in proc.stdout
    latency = next(line for line in proc.stdout.splitlines() if line.startswith("latency_p90"))
    assert latency.split()[1] == "passed", latency  # the early-stopping p90 ran (it used scipy before)
    assert "LOADED []" in proc.stdout


def test_profile_runs_without_torch_or_scipy(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    proc = _cli(["profile", str(bundle / "model.onnx"), "--target", "cpu", "--out", str(out)], tmp_path)
    assert "RC 0" in proc.stdout, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout
    doc = json.loads((out / "profile.json").read_text())
    single = doc["single_stream"]
    early = single["p90_early_stop"]  # LoadGen early stopping: scipy's betainc before, edgekd.profiler.special now
    assert early["ok"] and early["queries"] >= early["min_queries"] == 64 and early["estimate_ms"] > 0, early
    assert (out / "latency_hist.png").stat().st_size > 0
    gate = _cli(["profile", "--compare", str(out / "profile.json"), str(out / "profile.json")], tmp_path)
    assert "RC 0" in gate.stdout and "LOADED []" in gate.stdout, gate.stdout + gate.stderr
    assert "Mann-Whitney U (distributions differ): p = 1" in gate.stdout  # scipy's mannwhitneyu before


def test_runtime_infers_without_torch_or_scipy(bundle: Path, tmp_path: Path) -> None:
    code = f"""
import numpy as np
import edgekd.runtime as rt
model = rt.load({str(bundle)!r}, target="cpu")
golden = rt.load_npz(model.bundle / "golden.npz")
out = model.infer({{"input": golden["input"]}})["logits"]
print("MAXERR", float(np.abs(out - golden["reference"]).max()))
"""
    proc = _without_torch(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    max_err = float(proc.stdout.split("MAXERR")[1].split()[0])
    assert max_err <= 1e-5


@pytest.mark.parametrize("command", [["demo"], ["compress", "--model", "builtin:digits-student", "--data", "builtin:digits",
                                                 "--target", "cpu", "--out", "bundle"]])
def test_torch_commands_name_the_train_extra(command: list[str], tmp_path: Path) -> None:
    proc = _cli(command, tmp_path)
    assert proc.returncode == 0 and "RC 2" in proc.stdout, proc.stdout + proc.stderr
    assert f"`edgekd {command[0]}` needs the [train] extra (torch is not installed): pip install 'edgekd[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_base_dependencies_hold_no_training_stack() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower() for dep in meta["dependencies"]}
    assert not names & {"torch", "torchvision", "brevitas", "torch-pruning", "scipy", "scikit-learn", "onnxscript"}, names
    train = {dep.split(">")[0].split("=")[0].strip().lower() for dep in meta["optional-dependencies"]["train"]}
    assert {"torch", "torchvision", "brevitas", "torch-pruning", "scipy"} <= train
    every = meta["dependencies"] + [d for deps in meta["optional-dependencies"].values() for d in deps]
    assert not [d for d in every if "==" in d], "exact pins belong in constraints.txt"
    assert "train" in (REPO / "Makefile").read_text().split("-e \".[")[1].split("]")[0].split(",")


def test_vendored_statistics_match_scipy() -> None:
    sp_special = pytest.importorskip("scipy.special")
    sp_stats = pytest.importorskip("scipy.stats")
    for a in (1, 2, 64, 662, 5000, 100_000):
        for b in (1, 3, 100, 2000):
            for x in (0.1, 0.5, 0.9, 0.99, 0.999):
                want = float(sp_special.betainc(a, b, x))
                assert special.betainc(a, b, x) == pytest.approx(want, rel=1e-9, abs=1e-300), (a, b, x)
    rng = np.random.default_rng(0)
    for n1, n2 in ((1, 1), (3, 5), (8, 8), (2, 300), (9, 9), (50, 60), (500, 400)):
        for _ in range(3):
            a, b = rng.random(n1), rng.random(n2) + 0.3 * rng.random()
            for x, y in ((a, b), (np.round(a * 10), np.round(b * 10))):  # the second with ties
                want = float(sp_stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
                assert special.mannwhitneyu_two_sided(x, y) == pytest.approx(want, abs=1e-12), (n1, n2)
