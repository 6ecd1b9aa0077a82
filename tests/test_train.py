"""fine_tune: KD training, determinism, hooks, NaN detection, hints, attention, kill + exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.data import DataSplits
from edgekd.errors import ConfigError
from edgekd.models import DemoTeacher
from edgekd.train import FinetuneConfig, Hook, TrainingError, evaluate, fine_tune
from edgekd.train.hooks import HookSet
from edgekd.train.losses import attention_loss, attention_probs

HERE = Path(__file__).resolve().parent


def small_digits() -> DataSplits:
    from edgekd.data import load_data

    d = load_data("builtin:digits")
    return DataSplits("digits-small", d.x_train[:512], d.y_train[:512], d.x_test[:200], d.y_test[:200], 10)


def make_student(seed: int = 0) -> nn.Module:
    """BN (buffers) and dropout (RNG) so that resume has to restore both."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 16, 10),
    )


def make_teacher(data: DataSplits) -> nn.Module:
    torch.manual_seed(123)
    teacher = DemoTeacher(1, 10, width=8)
    fine_tune(teacher, None, data, FinetuneConfig(epochs=4, loss="ce", lr=5e-3, schedule="onecycle"))
    return teacher


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return small_digits()


@pytest.fixture(scope="module")
def teacher(data: DataSplits) -> nn.Module:
    return make_teacher(data)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_fixture_is_trained(teacher: nn.Module, data: DataSplits) -> None:
    assert evaluate(teacher, data.x_test, data.y_test) > 85


def test_kd_trains_in_place_deterministically_and_leaves_teacher_alone(teacher: nn.Module, data: DataSplits) -> None:
    cfg = FinetuneConfig(epochs=8, schedule="onecycle", lr=1e-2)
    t_before = weights(teacher)
    s1 = make_student()
    rng_before = torch.get_rng_state()
    r1 = fine_tune(s1, teacher, data, cfg)
    assert r1.model is s1 and not s1.training
    assert torch.equal(torch.get_rng_state(), rng_before)  # the trainer's seeding does not leak
    assert same(weights(teacher), t_before) and all(p.grad is None for p in teacher.parameters())
    assert r1.steps == 8 * 8 and len(r1.history) == 8
    assert r1.final_accuracy == r1.history[-1]["accuracy"] and r1.best_accuracy >= r1.final_accuracy
    assert r1.final_accuracy > 60
    s2 = make_student()
    fine_tune(s2, teacher, data, cfg)
    assert same(weights(s1), weights(s2))  # bitwise deterministic on CPU
    s3 = make_student()
    fine_tune(s3, teacher, data, FinetuneConfig(epochs=8, schedule="onecycle", lr=1e-2, seed=1))
    assert not same(weights(s1), weights(s3))  # the seed matters (data order, dropout)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def before_epoch(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self.calls.append(("epoch", epoch, epochs, model.training))

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        self.calls.append(("step", step, total))

    def after_train(self, model: nn.Module) -> None:
        self.calls.append(("end",))


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "step"), ("adamw", "cosine"), ("adamw", "constant")])
def test_steps_hooks_and_schedules(teacher: nn.Module, data: DataSplits, optimizer: str, schedule: str) -> None:
    rec = Recorder()
    cfg = FinetuneConfig(steps=11, batch_size=128, optimizer=optimizer, schedule=schedule, warmup_steps=2, lr=0.01)
    result = fine_tune(make_student(), teacher, data, cfg, hooks=[rec, object()])
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [c[1] for c in steps] == list(range(1, 12)) and all(c[2] == 11 for c in steps)
    assert [c[1:3] for c in rec.calls if c[0] == "epoch"] == [(0, 3), (1, 3), (2, 3)]  # 4 steps/epoch -> 3 epochs
    assert rec.calls[-1] == ("end",) and result.steps == 11


def test_typed_hook_overrides_only_what_it_needs(teacher: nn.Module, data: DataSplits) -> None:
    class Steps(Hook):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
            self.seen.append((step, total_steps))

    steps, rec = Steps(), Recorder()
    fine_tune(make_student(), teacher, data, FinetuneConfig(steps=3, batch_size=128), hooks=[steps, rec])
    assert steps.seen == [(1, 3), (2, 3), (3, 3)] and rec.calls[-1] == ("end",)
    hooks = HookSet.of([steps, object(), rec])  # methods looked up once, in the order the hooks were given
    assert hooks.after_step == (steps.after_step, rec.after_step) and hooks.after_train == (steps.after_train, rec.after_train)


def test_nan_loss_names_the_step(teacher: nn.Module, data: DataSplits) -> None:
    class Poison:
        def after_step(self, model: nn.Module, step: int, total: int) -> None:
            if step == 3:
                with torch.no_grad():
                    model[-1].weight.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"loss is nan at step 4 \(epoch 1, batch 4\)") as exc:
        fine_tune(make_student(), teacher, data, FinetuneConfig(epochs=1), hooks=[Poison()], description="distill")
    assert "lower lr" in str(exc.value) and exc.value.where == "distill"


def test_unlabelled_data_uses_soft_targets_only(teacher: nn.Module, data: DataSplits) -> None:
    unlabelled = DataSplits("u", data.x_train, None, data.x_test, None, 10)
    student = make_student()
    fine_tune(student, teacher, unlabelled, FinetuneConfig(epochs=10, lr=1e-2, schedule="onecycle"))
    assert evaluate(student, data.x_test, data.y_test) > 50  # learned from the teacher alone
    with pytest.raises(ConfigError, match="labelled"):
        fine_tune(make_student(), teacher, unlabelled, FinetuneConfig(epochs=1, loss="ce"))


def test_feature_hints_build_adapters_and_change_training(teacher: nn.Module, data: DataSplits) -> None:
    # teacher features.5: 16ch 8x8 and features.12: 32ch 4x4; student "2": 8ch 8x8 -> 1x1 conv (+ pool)
    cfg = FinetuneConfig(epochs=2, features=("features.5:2", "features.12:2"), feature_weight=1.0)
    hinted = make_student()
    result = fine_tune(hinted, teacher, data, cfg)
    assert result.extra["adapters"] == 2 and result.final_accuracy is not None
    plain = make_student()
    fine_tune(plain, teacher, data, FinetuneConfig(epochs=2))
    assert not same(weights(hinted), weights(plain))
    assert not hinted._forward_hooks and not hinted[2]._forward_hooks  # taps removed afterwards
    with pytest.raises(ConfigError, match="no layer named 'features.55'") as exc:
        fine_tune(make_student(), teacher, data, FinetuneConfig(epochs=1, features=("features.55:2",)))
    assert "did you mean" in str(exc.value)


class TokenNet(nn.Module):
    """Digits rows as 8 tokens -> one transformer encoder layer (nn.MultiheadAttention) -> classes."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.flatten(1, 2))).mean(1))


def _attention_gap(student: TokenNet, teacher: TokenNet, x: np.ndarray) -> float:
    with torch.no_grad():
        xs = torch.from_numpy(x[:64])
        def tokens(m: TokenNet) -> torch.Tensor:
            return m.embed(xs.flatten(1, 2))
        return float(attention_loss(attention_probs(student.encoder.self_attn, tokens(student)),
                                    attention_probs(teacher.encoder.self_attn, tokens(teacher)), "t"))


def test_attention_transfer_pulls_student_attention_towards_teacher(data: DataSplits) -> None:
    torch.manual_seed(5)
    teacher = TokenNet(32, 4).eval()
    def student() -> TokenNet:
        torch.manual_seed(6)
        return TokenNet(16, 2)
    base = FinetuneConfig(epochs=3, lr=3e-3)
    without = fine_tune(student(), teacher, data, base).model
    with_at = fine_tune(student(), teacher, data, FinetuneConfig(epochs=3, lr=3e-3, attention_weight=5.0)).model
    gap_without, gap_with = _attention_gap(without, teacher, data.x_test), _attention_gap(with_at, teacher, data.x_test)
    assert gap_with < 0.5 * gap_without
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    with pytest.raises(ConfigError, match="has no nn.MultiheadAttention"):
        fine_tune(make_student(), teacher, data, FinetuneConfig(epochs=1, attention_weight=1.0))


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {here!r})
import torch
from test_train import make_student, small_digits, make_teacher_from
from edgekd.train import FinetuneConfig, fine_tune
data = small_digits()
teacher = make_teacher_from({teacher_path!r})
class Kill:
    def after_step(self, model, step, total):
        if step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
fine_tune(make_student(), teacher, data, FinetuneConfig(**{cfg!r}), hooks=[Kill()],
          checkpoint_dir={ckdir!r}, checkpoint_every=5)
"""


def make_teacher_from(path: str) -> nn.Module:
    teacher = DemoTeacher(1, 10, width=8)
    teacher.load_state_dict(torch.load(path, weights_only=True))
    return teacher.eval()


def test_resume_after_kill_reproduces_uninterrupted_run(teacher: nn.Module, data: DataSplits, tmp_path: Path) -> None:
    cfg = {"epochs": 3, "schedule": "onecycle", "lr": 5e-3, "features": ["features.5:2"]}
    # the killed run uses one thread; float sums depend on the thread count, so every run here does too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_matches_reference(cfg, teacher, data, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_matches_reference(cfg: dict, teacher: nn.Module, data: DataSplits, tmp_path: Path) -> None:
    reference = fine_tune(make_student(), teacher, data, FinetuneConfig(**cfg))
    teacher_path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), teacher_path)
    ckdir = tmp_path / "ck"
    # 8 steps per epoch; killed at step 22 = epoch 3 batch 6, after the mid-epoch checkpoint at step 20
    script = _KILLED_RUN.format(here=str(HERE), teacher_path=str(teacher_path), kill_at=22, cfg=cfg, ckdir=str(ckdir))
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (ckdir / "last.pt").is_file() and (ckdir / "best.pt").is_file()
    resumed = fine_tune(make_student(seed=99), teacher, data, FinetuneConfig(**cfg), checkpoint_dir=ckdir, resume=True)
    assert resumed.extra["resumed_from"] == {"step": 20, "epoch": 2, "batch": 4}
    assert same(weights(resumed.model), weights(reference.model))
    assert resumed.history == [{**h, "seconds": resumed.history[i]["seconds"]} for i, h in enumerate(reference.history)]
    best = torch.load(ckdir / "best.pt", weights_only=True)
    assert best["accuracy"] == reference.best_accuracy
    with pytest.raises(Exception, match="different training config"):
        fine_tune(make_student(), teacher, data, FinetuneConfig(**{**cfg, "lr": 1e-3}), checkpoint_dir=ckdir, resume=True)
