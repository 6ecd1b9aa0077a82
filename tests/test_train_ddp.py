"""2-process torchrun (gloo, CPU): DDP training completes, ranks end with identical weights, rank 0 writes;
BatchNorm over the global batch; user code from py: files and sys.path reaches the workers; clear job errors."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import ConfigError
from edgekd.models import DemoStudent, DemoTeacher, load_model
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


NETS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def student() -> nn.Module:
    return Net(4)


def teacher() -> nn.Module:
    return Net(8)
"""


@pytest.mark.slow
def test_batchnorm_cnns_from_one_py_file_train_on_two_processes_like_one(digits, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "nets.py").write_text(NETS)
    (code / "ddp_test_hooks.py").write_text("from edgekd.train import Hook\n\nclass Noop(Hook):\n    pass\n")
    monkeypatch.syspath_prepend(str(code))  # the hook's module: importable by name in this process only
    monkeypatch.chdir(tmp_path)  # not the py: file's folder
    from ddp_test_hooks import Noop  # type: ignore[import-not-found]

    (code / "unused.py").write_text(NETS)
    load_model("py:code/unused.py:student")
    (code / "unused.py").unlink()  # loaded before but not part of the job: the workers do not need it
    student = load_model("py:code/nets.py:student").module
    teacher = load_model("py:code/nets.py:teacher").module  # the same file: one module, classes pickle by reference
    reference = copy.deepcopy(student)
    # 17 steps: DistributedSampler splits each epoch's permutation between the ranks, so the 2-process global
    # batches are the 1-process batches (the 17 full batches of digits' 1,097 training samples; the 18th is
    # partial and padded by one sample on 2 ranks, and a second epoch is shuffled per rank count)
    steps = len(digits.x_train) // 64
    cfg = FinetuneConfig(steps=steps, batch_size=64, lr=1e-2, schedule="onecycle", loss="hinton")
    result = run_fine_tune(student, teacher, digits, cfg, nproc=2, hooks=[Noop()], workdir=tmp_path)
    sums = result.extra["rank_checksums"]
    assert result.extra["synced_batchnorm"] == 1 and len(sums) == 2 and sums[0] == sums[1]  # buffers included
    alone = fine_tune(reference, teacher, digits, cfg)
    assert alone.extra["synced_batchnorm"] == 0 and result.steps == alone.steps == steps
    # BatchNorm over the global batch: the 2-process model is the 1-process one, up to the order of float sums
    for (name, a), b in zip(student.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=2e-5), (name, float((a.float() - b.float()).abs().max()))
    assert result.final_accuracy == pytest.approx(alone.final_accuracy, abs=0.5)


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_job_is_a_clear_error(digits, tmp_path: Path) -> None:
    (tmp_path / "gone.py").write_text(NETS)
    student = load_model(f"py:{tmp_path / 'gone.py'}:student").module
    (tmp_path / "gone.py").unlink()  # the workers cannot import it any more
    with pytest.raises(ConfigError, match="a worker process cannot load the training job: FileNotFoundError") as exc:
        run_fine_tune(student, None, digits, FinetuneConfig(steps=1, loss="ce", batch_size=64), nproc=2)
    assert "module level" in str(exc.value.hint)


def test_what_the_workers_cannot_import_is_refused_before_launch(digits, tmp_path: Path) -> None:
    class Local(torch.nn.Linear):  # a class inside a function pickles by a name no worker can import
        pass

    with pytest.raises(ConfigError, match="cannot hand the training job to 2 worker processes") as exc:
        run_fine_tune(torch.nn.Sequential(torch.nn.Flatten(), Local(64, 10)), None, digits,
                      FinetuneConfig(epochs=1, loss="ce"), nproc=2, workdir=tmp_path)
    assert "module level" in str(exc.value.hint)
    script = tmp_path / "train_here.py"  # a user script defining its model in __main__
    script.write_text("import torch\nfrom edgekd.data import load_data\nfrom edgekd.errors import ConfigError\n"
                      "from edgekd.train import FinetuneConfig\nfrom edgekd.train.launch import run_fine_tune\n"
                      "class Net(torch.nn.Sequential):\n    pass\n"
                      "try:\n    run_fine_tune(Net(torch.nn.Flatten(), torch.nn.Linear(64, 10)), None, load_data('builtin:digits'),"
                      " FinetuneConfig(epochs=1, loss='ce'), nproc=2)\nexcept ConfigError as exc:\n    print('REFUSED', exc)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert "REFUSED" in out.stdout and "Net is defined in __main__" in out.stdout and "launching" not in out.stderr
