"""Content never chooses code: a weight file must not make edgekd import or run anything the user did not name."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekd.errors import PassError, SourceError
from edgekd.models import DemoStudent, load_model, save_checkpoint
from edgekd.train import checkpoint as ckpt


def _booby_trapped(tmp_path: Path, marker: Path, name: str = "innocent.pt") -> Path:
    """The exploit from the report: the checkpoint's own 'arch' names a py: source that runs a shell command."""
    path = tmp_path / name
    torch.save({"arch": f"py:os:system?command=echo ran > {marker}", "state_dict": DemoStudent().state_dict()}, path)
    return path


@pytest.mark.parametrize("arch", ["py:os:system?command=true", "py:evil.py:build", "other.pt", "../x/y.pt2", 42])
def test_checkpoint_cannot_name_code_as_its_architecture(tmp_path: Path, arch: object) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"arch": arch, "state_dict": DemoStudent().state_dict()}, path)
    with pytest.raises(SourceError, match="takes an architecture from a file only") as info:
        load_model(str(path))
    assert "--arch" in (info.value.hint or "")
    assert "key 'arch'" in (info.value.where or "")


def test_exploit_checkpoint_runs_nothing_through_the_api(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED.txt"
    path = _booby_trapped(tmp_path, marker)
    with pytest.raises(SourceError):
        load_model(str(path))
    assert not marker.exists()
    # the user naming the architecture themselves is the way through, and the file's string is ignored
    loaded = load_model(str(path), arch="builtin:digits-student")
    assert isinstance(loaded.module, DemoStudent)
    assert not marker.exists()


def test_safe_architecture_names_from_a_checkpoint_still_load(tmp_path: Path) -> None:
    path = tmp_path / "student.pt"
    save_checkpoint(DemoStudent(), "builtin:digits-student", path)
    assert isinstance(load_model(str(path)).module, DemoStudent)


@pytest.mark.parametrize("role", ["--model", "--teacher"])
def test_exploit_checkpoint_runs_nothing_on_the_cli(tmp_path: Path, role: str) -> None:
    marker = tmp_path / "PWNED.txt"
    path = _booby_trapped(tmp_path, marker)
    model = str(path) if role == "--model" else "builtin:digits-student"
    cmd = [sys.executable, "-m", "edgekd", "compress", "--model", model, "--data", "random:1x8x8?n=16",
           "--recipe", "fp32", "--target", "cpu", "--out", str(tmp_path / "out"), "--no-measure"]
    if role == "--teacher":
        cmd += ["--teacher", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert not marker.exists(), "a checkpoint's 'arch' string ran a shell command"
    assert "takes an architecture from a file only" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_teacher_arch_loads_a_plain_state_dict_teacher(tmp_path: Path) -> None:
    from edgekd.pipeline import CompressOptions, compress

    plain = tmp_path / "teacher.pt"
    torch.save(DemoStudent().state_dict(), plain)
    report = compress("builtin:digits-student", data="random:1x8x8?n=16", recipe="fp32", targets=["cpu"],
                      teacher=str(plain), teacher_arch="builtin:digits-student", out=tmp_path / "out",
                      options=CompressOptions(measure=False))
    assert report["params"]["teacher"] == sum(p.numel() for p in DemoStudent().parameters())


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("__import__('pathlib').Path('PWNED_RESUME').write_text('ran')",))


def test_resume_checkpoint_is_loaded_without_running_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with (tmp_path / ckpt.LAST).open("wb") as fh:
        pickle.dump({"format": ckpt.FORMAT, "x": _Payload()}, fh)
    with pytest.raises(PassError, match="cannot read checkpoint"):
        ckpt.load_last(tmp_path, object())
    assert not (tmp_path / "PWNED_RESUME").exists()
