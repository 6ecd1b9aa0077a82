"""The distill pass: profile validation, a pure pass (input untouched), errors, and the CLI with --nproc 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekd.artifact import Artifact
from edgekd.config import load_recipe, recipe_from_mapping
from edgekd.errors import ConfigError, PassError
from edgekd.models import DemoStudent
from edgekd.passes import PASSES, PassContext
from edgekd.passes.distill import DistillConfig
from edgekd.train import evaluate


def test_kd_profile_loads_as_distill_config() -> None:
    profile = load_recipe("kd")
    (spec,) = profile.passes
    assert spec.name == "distill" and isinstance(spec.config, DistillConfig)
    cfg = spec.config
    assert (cfg.epochs, cfg.schedule, cfg.loss, cfg.temperature, cfg.alpha) == (40, "onecycle", "hinton", 4.0, 0.9)
    with pytest.raises(ConfigError, match="unknown key 'epoch'") as exc:
        recipe_from_mapping({"passes": [{"name": "distill", "epoch": 3}]}, where="my.toml")
    assert "my.toml passes[0] (distill)" in str(exc.value) and "did you mean 'epochs'" in str(exc.value)


def test_distill_pass_returns_new_artifact_and_report(digits, digits_teacher) -> None:
    torch.manual_seed(0)
    module = DemoStudent(1, 10, image_size=8)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    art = Artifact(kind="torch", payload=module, history=("load:x",))
    ctx = PassContext(teacher=digits_teacher, data=digits, seed=3)
    cfg = DistillConfig(epochs=4, lr=1e-2, schedule="onecycle")
    out = PASSES.get("distill").fn(art, cfg, ctx)
    assert out.payload is not module and out.history == ("load:x", "distill")
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # input untouched
    acc = evaluate(out.payload, digits.x_test, digits.y_test)
    # the trainer monitors (and picks best.pt) on the validation split, never on the test split
    assert acc > 75 and out.meta["distilled"]["final_accuracy"] == evaluate(out.payload, digits.x_val, digits.y_val)
    rep = ctx.report["distill"]
    # 1097 training samples (200 of digits' 1297 are held out for validation) in batches of 64: 18 steps an epoch
    assert rep["seed"] == 3 and rep["steps"] == 4 * 18 and len(rep["history"]) == 4 and rep["processes"] == 1


def test_distill_pass_errors_say_what_to_do(digits) -> None:
    art = Artifact(kind="torch", payload=DemoStudent(1, 10, 8))
    with pytest.raises(PassError, match="needs a teacher") as exc:
        PASSES.get("distill").fn(art, DistillConfig(epochs=1), PassContext(data=digits))
    assert "--teacher" in str(exc.value)
    with pytest.raises(PassError, match="needs a torch model"):
        PASSES.get("distill").fn(Artifact(kind="onnx", payload=Path("m.onnx")), DistillConfig(), PassContext())


@pytest.mark.slow
def test_cli_compress_with_nproc_2_runs_torchrun(tmp_path: Path) -> None:
    from edgekd.cli import main

    profile = tmp_path / "kd-short.toml"
    profile.write_text('name = "kd-short"\n[[passes]]\nname = "distill"\nepochs = 3\nlr = 1e-2\nschedule = "onecycle"\n')
    out = tmp_path / "bundle"
    rc = main(["compress", "--model", "builtin:digits-student", "--teacher", "builtin:digits-teacher",
               "--data", "builtin:digits", "--recipe", str(profile), "--target", "cpu", "--nproc", "2",
               "--no-measure", "--json", "--quiet", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    distill = report["passes"]["distill"]
    assert distill["processes"] == 2 and len(set(distill["rank_checksums"])) == 1 and len(distill["rank_checksums"]) == 2
    assert report["accuracy"]["student_after"] > report["accuracy"]["student_before"] + 30
    # student_after is the test split; the trainer's final_accuracy is the validation split it monitors
    stage = next(row for row in report["stages"] if row["stage"] == "after distill")
    assert report["accuracy"]["student_after"] == pytest.approx(stage["accuracy"])
    assert distill["final_accuracy"] > report["accuracy"]["student_before"] + 30
