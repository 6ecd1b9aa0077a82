"""The held-out validation split: carved from train, never trained on, and where quantize makes its decisions with
a rule that one flipped sample cannot trigger; report.md lists every layer kept in higher precision; imagefolder
train/val folders; channels-last npz arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.artifact import Artifact
from edgekd.data import DataSplits, carve_validation, load_data
from edgekd.errors import SourceError
from edgekd.models import load_model
from edgekd.passes import PassContext
from edgekd.passes.quantize import QuantizeConfig, quantize
from edgekd.quant.sensitivity import EvalSet, judge_drop, outputs, score
from edgekd.train import FinetuneConfig, evaluate, fine_tune

torch.set_num_threads(1)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(x)}


def test_validation_is_carved_from_train_disjoint_stratified_and_stated(digits) -> None:
    assert len(digits.x_train) + len(digits.x_val) == 1297 and len(digits.x_val) == 200
    assert not _rows(digits.x_train) & _rows(digits.x_val)  # digits has no duplicate images: disjoint samples
    assert not _rows(digits.x_test) & _rows(digits.x_val)
    train_share = np.bincount(digits.y_train, minlength=10) / len(digits.y_train)
    val_share = np.bincount(digits.y_val, minlength=10) / len(digits.y_val)
    assert np.abs(train_share - val_share).max() < 0.01  # stratified by label
    assert "200 of 1297 training samples held out" in digits.validation["rule"]
    assert "stratified by label" in digits.validation["rule"]
    # unlabelled data: the same size rule, no stratification; a small set keeps no validation and says why
    x = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 1, 2, 2)  # every sample distinct
    plain = carve_validation(DataSplits("u", x, None, x[:5], None))
    assert len(plain.x_val) == 200 and len(plain.x_train) == 800 and not _rows(plain.x_train) & _rows(plain.x_val)
    small = load_data("random:1x4x4?n=64")
    assert small.x_val is None and small.validation["samples"] == 0
    assert "32 samples: too few to hold out a validation split" in small.validation["reason"]


class _Recorder(nn.Module):
    """The digits student, remembering every input it gets while training."""

    def __init__(self) -> None:
        super().__init__()
        self.net = load_model("builtin:digits-student").module
        self.seen: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().numpy().copy())
        return self.net(x)


def test_the_trainer_never_sees_a_validation_sample(digits) -> None:
    torch.manual_seed(0)
    model = _Recorder()
    fine_tune(model, None, digits, FinetuneConfig(epochs=1, batch_size=64, loss="ce", seed=0))
    seen = _rows(np.concatenate(model.seen))
    assert len(seen) >= len(digits.x_train) - 64  # the whole training split went through (one epoch)
    assert seen <= _rows(digits.x_train) and not seen & _rows(digits.x_val)


def _student(digits) -> nn.Module:
    torch.manual_seed(0)
    model = load_model("builtin:digits-student").module
    fine_tune(model, None, digits, FinetuneConfig(epochs=8, lr=5e-3, loss="ce", schedule="onecycle", seed=0))
    return model.eval()


@pytest.fixture(scope="module")
def student(digits) -> nn.Module:
    return _student(digits)


def _flip(logits: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """The logits with ``count`` correctly classified samples turned wrong (the runner-up class wins)."""
    out = logits.copy()
    right = np.flatnonzero(out.argmax(1) == y)[:count]
    for i in right:
        out[i, (y[i] + 1) % out.shape[1]] = out[i].max() + 1.0
    return out


def test_one_flipped_sample_never_misses_the_budget_but_a_real_drop_does(digits, student) -> None:
    fp32 = outputs(student, digits.x_val)
    ev = EvalSet(digits.x_val, digits.y_val, fp32)
    one = score(_flip(fp32, digits.y_val, 1), ev)
    assert one["drop"] == pytest.approx(0.5) and one["lost"] == 1
    assert not judge_drop(one, 0.25)["missed"]  # over the budget, but one sample is noise
    real = score(_flip(fp32, digits.y_val, 8), ev)  # 4 points on 200 samples
    verdict = judge_drop(real, 1.0)
    assert verdict["missed"] and verdict["p_value"] < 0.05 and verdict["min_detectable_drop"] == pytest.approx(2.5)
    # the case: 60 samples, one flip = 1.67 points > a 1-point budget
    ev60 = EvalSet(digits.x_val[:60], digits.y_val[:60], fp32[:60])
    assert not judge_drop(score(_flip(fp32[:60], digits.y_val[:60], 1), ev60), 1.0)["missed"]
    # unlabelled: disagreement with FP32, tested against the budget's rate
    unlabelled = EvalSet(digits.x_val, None, fp32)
    assert not judge_drop(score(_flip(fp32, digits.y_val, 2), unlabelled), 0.5)["missed"]
    assert judge_drop(score(_flip(fp32, digits.y_val, 12), unlabelled), 0.5)["missed"]


def test_quantize_judges_on_the_validation_split(digits, student, tmp_path) -> None:
    ctx = PassContext(data=digits, workdir=tmp_path)
    art = Artifact(kind="torch", payload=student, history=("test",))
    quantize(art, QuantizeConfig(check_int8=False, accuracy_budget=0.25), ctx)
    rep = ctx.report["quantize"]
    assert rep["eval"]["samples"] == 200 and rep["eval"]["split"].startswith("validation split (200 of 200")
    assert rep["eval"]["fp32_accuracy"] == pytest.approx(evaluate(student, digits.x_val, digits.y_val))
    decision = rep["budget"]["decision"]
    assert decision["samples"] == 200 and decision["test"].startswith("exact McNemar")
    # W8A8 loses at most a sample or two here: not significant, so nothing is kept in FP32 for it
    assert not decision["missed"] and rep["kept_higher_precision"] == [] and rep["higher_precision"] == []
    assert any("resolves drops of 2.50 points or more" in n for n in rep["notes"])
    assert "sensitivity" not in rep  # sensitivity = "auto" runs only on a missed budget


def test_report_md_lists_every_layer_kept_in_higher_precision_and_the_bit_widths(digits, student, tmp_path) -> None:
    from edgekd.compress_report import target_rows, write_report_md

    ctx = PassContext(data=digits, workdir=tmp_path)
    art = Artifact(kind="torch", payload=student, history=("test",))
    cfg = QuantizeConfig(weight_bits=4, exclude=("features.0",), accuracy_budget=-100.0, max_kept_layers=1)
    quantize(art, cfg, ctx)
    rep = ctx.report["quantize"]
    rows = {r["layer"]: r for r in rep["higher_precision"]}
    assert rows["features.0"] == {"layer": "features.0", "precision": "FP32", "why": 'exclude = ["features.0"] in the recipe',
                                  "macs": 4608}  # output positions x weights per output channel
    kept = rep["kept_higher_precision"]
    assert len(kept) == 1 and rows[kept[0]["layer"]]["precision"] == "W8" and rows[kept[0]["layer"]]["macs"] > 0
    total = 4608 + 18432 + 2048 + 320  # the digits student's Conv/Linear MACs
    assert rep["higher_precision_mac_fraction"] == pytest.approx((4608 + rows[kept[0]["layer"]]["macs"]) / total)
    report = {"sources": {"model": "m", "recipe": "w4a8", "data": "builtin:digits", "teacher": None},
              "passes": {"quantize": rep}, "targets": {"cpu": {"backend": "onnxruntime", "build": {"precision": "int8"}}}}
    write_report_md(report, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "## Quantization" in text and "2 layer(s) kept in higher precision" in text
    assert '| features.0 | FP32 | 4,608 | exclude = ["features.0"] in the recipe |' in text
    assert f"| {kept[0]['layer']} | W8 |" in text
    assert "judged on the validation split (200 of 200 held-out samples" in text
    assert target_rows(report)[0][2] == "int8 (W4A8)"  # the kernels are int8; the weights are 4-bit


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8), mode="L").save(path)


def test_imagefolder_train_and_val_folders_become_the_splits(tmp_path: Path) -> None:
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(5):
            _png(tmp_path / "train" / cls / f"{i}.png", value + i)
        for i in range(2):
            _png(tmp_path / "val" / cls / f"{i}.png", value + 50 + i)
    data = load_data(f"imagefolder:{tmp_path}")
    assert data.labels == ("cat", "dog") and len(data.x_train) == 10 and len(data.x_test) == 4  # val/ = the test split
    assert sorted(data.y_test.tolist()) == [0, 0, 1, 1]
    assert np.allclose(sorted(data.x_test[:, 0, 0, 0] * 255), [60, 61, 250, 251])  # exactly the val/ images
    assert data.preprocessing["split_folders"] == {"train": "train", "test": "val"}
    assert data.x_val is None and "too few" in data.validation["reason"]  # 10 training images: said, not silent
    _png(tmp_path / "test" / "dog" / "0.png", 99)
    data = load_data(f"imagefolder:{tmp_path}")  # with test/ too, val/ is the validation split
    assert len(data.x_test) == 1 and data.y_test.tolist() == [1] and len(data.x_val) == 4
    assert data.validation == {"samples": 4, "rule": "given by the data source"}
    with pytest.raises(SourceError, match="test_fraction does not apply"):
        load_data(f"imagefolder:{tmp_path}?test_fraction=0.3")
    _png(tmp_path / "val" / "bird" / "0.png", 1)
    with pytest.raises(SourceError, match="class folder\\(s\\) bird are not in the training folder"):
        load_data(f"imagefolder:{tmp_path}")


def test_channels_last_npz_is_a_clear_error_or_an_explicit_transpose(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8, 3), dtype=np.float32)
    np.savez(tmp_path / "nhwc.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(SourceError, match=r"shape \(8, 8, 3\): it looks channels-last") as err:
        load_data(str(tmp_path / "nhwc.npz"))
    assert "x.transpose(0, 3, 1, 2)" in err.value.hint and "?layout=nhwc" in err.value.hint
    data = load_data(f"{tmp_path / 'nhwc.npz'}?layout=nhwc")
    assert data.input_shape == (3, 8, 8) and data.preprocessing["transposed_from"] == "NHWC"
    assert _rows(np.concatenate([data.x_train, data.x_test])) == _rows(x.transpose(0, 3, 1, 2))
    assert load_data(f"{tmp_path / 'nhwc.npz'}?layout=nchw").input_shape == (8, 8, 3)  # taken as it is
    np.savez(tmp_path / "nchw.npz", x=x.transpose(0, 3, 1, 2), y=np.arange(20) % 2)
    assert load_data(str(tmp_path / "nchw.npz")).input_shape == (3, 8, 8)  # NCHW is not mistaken for NHWC


def test_npz_validation_arrays_are_used_as_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {name: rng.random((n, 1, 4, 4), dtype=np.float32) for name, n in (("x_train", 30), ("x_val", 6), ("x_test", 8))}
    np.savez(tmp_path / "d.npz", **arrays, y_train=np.arange(30) % 3, y_val=np.arange(6) % 3, y_test=np.arange(8) % 3)
    data = load_data(str(tmp_path / "d.npz"))
    assert len(data.x_train) == 30 and np.array_equal(data.x_val, arrays["x_val"]) and data.y_val.tolist() == [0, 1, 2] * 2
    assert data.validation["rule"] == "given by the data source"
    np.savez(tmp_path / "bad.npz", x=arrays["x_train"], y=np.arange(30) % 3, y_val=np.arange(6) % 3)
    with pytest.raises(SourceError, match="has y_val but no x_val"):
        load_data(str(tmp_path / "bad.npz"))
