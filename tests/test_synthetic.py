"""synthetic:bn: inputs whose BatchNorm statistics match the teacher's, cached as npz, usable for KD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.data import DataContext, DataSplits, load_data
from edgekd.errors import SourceError
from edgekd.models import DemoStudent, DemoTeacher
from edgekd.synthetic import _BNStats
from edgekd.train import FinetuneConfig, evaluate, fine_tune

SRC = "synthetic:bn?n=96&test=32&iters=60&batch=64&lr=0.2"


@pytest.fixture(scope="module")
def teacher(digits: DataSplits) -> nn.Module:
    torch.manual_seed(7)
    model = DemoTeacher(1, 10, width=8)
    fine_tune(model, None, digits, FinetuneConfig(epochs=3, loss="ce", lr=5e-3, schedule="onecycle"))
    return model.eval()


def bn_distance(teacher: nn.Module, x: np.ndarray) -> float:
    bns = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = _BNStats(bns)
    with torch.no_grad():
        teacher(torch.from_numpy(x))
    stats.remove()
    return float(sum(stats.losses))


@pytest.fixture(scope="module")
def synth(teacher: nn.Module) -> DataSplits:
    return load_data(SRC, DataContext(teacher=teacher, input_shape=(1, 8, 8)))


def test_synthetic_inputs_match_bn_statistics(teacher: nn.Module, synth: DataSplits, digits: DataSplits) -> None:
    assert synth.x_train.shape == (96, 1, 8, 8) and synth.x_test.shape == (32, 1, 8, 8)
    assert not synth.labelled and synth.num_classes == 10
    noise = np.random.default_rng(0).standard_normal((96, 1, 8, 8)).astype(np.float32)
    d_synth, d_noise, d_real = (bn_distance(teacher, x) for x in (synth.x_train, noise, digits.x_train[:96]))
    assert d_synth < 0.5 * d_noise  # the optimisation did pull the statistics in
    quality = synth.preprocessing["quality"]
    assert quality["teacher_agreement"] > 80  # the teacher sees the requested (balanced) classes
    print(f"BN distance: synthetic {d_synth:.3f}, real {d_real:.3f}, noise {d_noise:.3f}")


def test_cache_hit_returns_the_same_samples(teacher: nn.Module, synth: DataSplits) -> None:
    cache = synth.preprocessing["cache"]
    assert cache and cache.endswith(".npz")
    again = load_data(SRC, DataContext(teacher=teacher, input_shape=(1, 8, 8)))
    assert np.array_equal(again.x_train, synth.x_train) and again.preprocessing["cache"] == cache
    other = load_data(SRC + "&seed=1", DataContext(teacher=teacher, input_shape=(1, 8, 8)))
    assert other.preprocessing["cache"] != cache and not np.array_equal(other.x_train, synth.x_train)


def test_data_free_kd_learns_real_digits(teacher: nn.Module, synth: DataSplits, digits: DataSplits) -> None:
    torch.manual_seed(0)
    student = DemoStudent(1, 10, image_size=8)
    chance = evaluate(student, digits.x_test, digits.y_test)
    fine_tune(student, teacher, synth, FinetuneConfig(epochs=30, batch_size=32, lr=1e-2, schedule="onecycle"))
    acc = evaluate(student, digits.x_test, digits.y_test)
    assert acc > 40 and acc > chance + 25  # 96 synthetic images, no real ones; the bench runs the full recipe


def test_errors_name_the_problem(teacher: nn.Module) -> None:
    with pytest.raises(SourceError, match="none was given") as exc:
        load_data("synthetic:bn", DataContext(input_shape=(1, 8, 8)))
    assert "--teacher" in str(exc.value)
    with pytest.raises(SourceError, match="unknown synthetic data method 'gan'"):
        load_data("synthetic:gan", DataContext(teacher=teacher, input_shape=(1, 8, 8)))
    with pytest.raises(SourceError, match="no BatchNorm"):
        load_data("synthetic:bn?n=4&iters=1", DataContext(teacher=DemoStudent(1, 10, 8), input_shape=(1, 8, 8)))
    with pytest.raises(SourceError, match="input shape is unknown") as exc:
        load_data("synthetic:bn", DataContext(teacher=teacher))
    assert "?shape=CxHxW" in str(exc.value)
    with pytest.raises(SourceError, match="clip"):
        load_data("synthetic:bn?clip=1", DataContext(teacher=teacher, input_shape=(1, 8, 8)))
