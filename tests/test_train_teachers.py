"""Builtin teachers: trained by fine_tune (the trainer every pass uses), cached by a key over recipe and code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from edgekd.data import load_data
from edgekd.models import DemoStudent, DemoTeacher, load_model
from edgekd.train import fine_tune, teachers


def test_builtin_teacher_is_what_fine_tune_trains_and_is_cached(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEKD_TEACHER_CACHE_DIR", str(tmp_path))
    loaded = load_model("builtin:digits-teacher?epochs=1&seed=3").module
    (cached,) = tmp_path.iterdir()
    assert cached.name == f"digits-teacher-{teachers.weights_key('digits-teacher', DemoTeacher, 'digits', teachers.recipe(3, 1))}.pt"
    torch.manual_seed(3)
    reference = DemoTeacher(1, 10)
    data = load_data("builtin:digits")
    result = fine_tune(reference, None, data, teachers.recipe(3, 1))
    # 1097 training samples (200 of 1297 held out for validation) / 64; one epoch already learns (the trainer's
    # final_accuracy is its validation split; the test split is judged here as before)
    test_acc = float((reference.eval()(torch.from_numpy(data.x_test)).argmax(1).numpy() == data.y_test).mean() * 100)
    assert result.steps == 18 and test_acc > 50 and result.final_accuracy > 10
    assert _same(loaded, reference)
    stamp = cached.stat().st_mtime_ns
    assert _same(load_model("builtin:digits-teacher?epochs=1&seed=3").module, reference)
    assert cached.stat().st_mtime_ns == stamp  # served from the cache, not trained again


def test_weights_key_covers_recipe_model_and_trainer_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def key(**kw: object) -> str:
        args = {"name": "digits-teacher", "architecture": DemoTeacher, "dataset": "digits", "config": teachers.recipe(0, 12)}
        return teachers.weights_key(**{**args, **kw})  # type: ignore[arg-type]

    base = key()
    assert base == key() and len(base) == 16
    others = {key(config=teachers.recipe(1, 12)), key(config=teachers.recipe(0, 11)), key(architecture=DemoStudent),
              key(name="mnist-teacher", dataset="mnist")}
    assert base not in others and len(others) == 4
    edited = tmp_path / "train"
    shutil.copytree(teachers._TRAIN_PACKAGE, edited, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(teachers, "_TRAIN_PACKAGE", edited)
    assert key() == base  # the same code, elsewhere
    with (edited / "losses.py").open("a") as fh:
        fh.write("\n# a change to the trainer\n")
    assert key() != base


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
