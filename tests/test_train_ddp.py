"""2-process torchrun (gloo, CPU): DDP training completes, ranks end with identical weights, rank 0 writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import ConfigError
from edgekd.models import DemoStudent, DemoTeacher
from edgekd.train import FinetuneConfig, evaluate, fine_tune
from edgekd.train.ddp import state_checksum
from edgekd.train.launch import run_fine_tune


@pytest.mark.slow
def test_two_process_torchrun_ranks_end_identical(digits, tmp_path: Path) -> None:
    # all 1297 digits training samples (the validation split put back), as this test was sized for
    digits = dataclasses.replace(digits, x_train=np.concatenate([digits.x_train, digits.x_val]),
                                 y_train=np.concatenate([digits.y_train, digits.y_val]), x_val=None, y_val=None)
    torch.manual_seed(0)
    teacher = DemoTeacher(1, 10, width=8)
    fine_tune(teacher, None, digits, FinetuneConfig(epochs=3, loss="ce", lr=5e-3, schedule="onecycle"))
    torch.manual_seed(1)
    student = DemoStudent(1, 10, image_size=8)
    before = state_checksum(student)
    # a hint adapter too: its gradients must be all-reduced like the student's
    cfg = FinetuneConfig(epochs=3, batch_size=64, lr=1e-2, schedule="onecycle", features=("features.5:features.1",))
    result = run_fine_tune(student, teacher, digits, cfg, nproc=2, checkpoint_dir=tmp_path / "ck", workdir=tmp_path)
    sums = result.extra["rank_checksums"]
    assert result.extra["world_size"] == 2 and len(sums) == 2 and sums[0] == sums[1]
    assert state_checksum(student) == sums[0] != before  # rank 0's weights came back in place
    assert result.model is student and result.extra["adapters"] == 1
    # each rank took 32 of the 64-sample global batch: 1297 samples -> 649 per rank -> 21 steps per epoch
    assert result.steps == 3 * 21 and len(result.history) == 3
    assert evaluate(student, digits.x_test, digits.y_test) == result.final_accuracy > 60
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["best.pt", "last.pt"]  # rank 0 only, no temp files
    assert not any(p.name.startswith("edgekd-ddp-") for p in tmp_path.iterdir())  # job folder cleaned up


def test_batch_must_split_evenly_before_anything_is_launched(digits) -> None:
    with pytest.raises(ConfigError, match="not divisible by 2 processes") as exc:
        run_fine_tune(DemoStudent(1, 10, 8), None, digits, FinetuneConfig(epochs=1, loss="ce", batch_size=63), nproc=2)
    assert "multiple of 2" in str(exc.value)
