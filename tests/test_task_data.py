"""edgekd.task_data: the built-in task datasets: shapes, dtypes, determinism, label rules, metric round trips."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgekd import metrics, task_data
from edgekd.errors import SourceError
from edgekd.sources import SourceSpec

SYNTHETIC = [name for name in task_data.TASK_DATASETS if not name.startswith("ucr-")]
UCR_INSTALLED = any(importlib.util.find_spec(p) is not None for p in task_data.UCR_PACKAGES)


def load(name: str, **params: str):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return task_data.TASK_DATASETS[name](SourceSpec(f"builtin:{name}" + (f"?{query}" if query else ""), "builtin",
                                                    name, dict(params)))


_cache: dict[str, object] = {}


def cached(name: str):
    if name not in _cache:
        _cache[name] = load(name)
    return _cache[name]


def label_arrays(y) -> dict[str, np.ndarray]:
    return y if isinstance(y, dict) else {"y": y}


EXPECTED = {  # name: (sample shape, x dtype, {label key: (per-sample shape, dtype)})
    "mnist-seg": ((1, 20, 20), np.float32, {"y": ((20, 20), np.int64)}),
    "mnist-det": ((1, 32, 32), np.float32, {"cls": ((4, 4), np.int64), "box": ((4, 4, 4), np.float32)}),
    "digits-keypoints": ((1, 32, 32), np.float32, {"y": ((4,), np.float32)}),
    "digits-anomaly": ((1, 8, 8), np.float32, {"y": ((), np.int64)}),
    "signal-synth": ((1, 128), np.float32, {"y": ((), np.int64)}),
    "tokens-synth": ((16,), np.int64, {"y": ((16,), np.int64)}),
    "tokens-seq": ((16,), np.int64, {"y": ((), np.int64)}),
}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_shapes_dtypes_and_label_lengths(name):
    data = cached(name)
    shape, x_dtype, labels = EXPECTED[name]
    splits = [("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)]
    if data.x_val is not None:
        splits.append(("val", data.x_val, data.y_val))
    for split, x, y in splits:
        assert x.shape[1:] == shape and x.dtype == x_dtype, split
        assert np.isfinite(x).all()
        ys = label_arrays(y)
        assert set(ys) == set(labels)
        for key, (per_sample, dtype) in labels.items():
            assert ys[key].shape == (len(x), *per_sample) and ys[key].dtype == dtype, (split, key)
    assert len(data.x_train) >= 100 and len(data.x_test) >= 50
    assert data.preprocessing["task"] and data.preprocessing["seed"] == 0


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic_and_seeded(name):
    again, other = load(name), load(name, seed="1")
    data = cached(name)
    assert np.array_equal(data.x_train, again.x_train) and np.array_equal(data.x_test, again.x_test)
    for key, y in label_arrays(data.y_test).items():
        assert np.array_equal(y, label_arrays(again.y_test)[key])
    assert not np.array_equal(data.x_train, other.x_train)


def test_unknown_parameter_is_refused():
    with pytest.raises(SourceError, match="unknown parameter 'sed'"):
        load("mnist-seg", sed="1")


def test_segmentation_masks_follow_the_ink_and_round_trip_through_miou():
    data = cached("mnist-seg")
    assert data.num_classes == 11 and data.labels[0] == "background"
    y, x = data.y_test, data.x_test[:, 0]
    assert y.min() == 0 and y.max() == 10
    assert np.all(x[y > 0] > task_data.INK) and np.all(y[x > task_data.INK] > 0)  # a label where ink is, only there
    per_image = [len(np.unique(m[m > 0])) for m in y]
    assert min(per_image) >= 1 and max(per_image) <= 2
    one_hot = np.moveaxis(np.eye(11, dtype=np.float32)[y], -1, 1)
    assert metrics.miou(one_hot, y, 11) == 1.0
    assert metrics.pixel_accuracy(one_hot, y) == 1.0


def test_detection_targets_are_consistent_and_round_trip_through_map():
    data = cached("mnist-det")
    cls, box = data.y_test["cls"], data.y_test["box"]
    objects = (cls > 0).sum(axis=(1, 2))
    assert objects.min() >= 1 and objects.max() <= 3
    assert np.all(box[np.broadcast_to((cls == 0)[:, None], box.shape)] == 0)  # zeros where no object
    n, row, col = np.nonzero(cls)
    b = box[n, :, row, col]  # objects x 4
    assert np.all((b >= 0) & (b <= 1)) and np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    centre_row, centre_col = ((b[:, 1] + b[:, 3]) / 2 * 4).astype(int), ((b[:, 0] + b[:, 2]) / 2 * 4).astype(int)
    assert np.array_equal(np.minimum(centre_row, 3), row) and np.array_equal(np.minimum(centre_col, 3), col)
    for i, r, c, (x1, y1, x2, y2) in zip(n[:50], row[:50], col[:50], b[:50] * 32, strict=True):
        # the box holds ink on all four edges
        ink = data.x_test[i, 0, round(y1):round(y2), round(x1):round(x2)] > task_data.INK
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any(), (i, r, c)
    logits = np.moveaxis(np.eye(11, dtype=np.float32)[cls], -1, 1) * 10
    assert metrics.detection_map50(logits, box, cls, box) == 1.0


def test_keypoints_are_the_ink_box_corners():
    data = cached("digits-keypoints")
    y = data.y_test
    assert y.min() >= 0 and y.max() <= 31 and np.all(y[:, 2] >= y[:, 0]) and np.all(y[:, 3] >= y[:, 1])
    for image, (x1, y1, x2, y2) in zip(data.x_test[:, 0], y.astype(int), strict=True):
        rows, cols = np.nonzero(image > task_data.INK)
        assert (cols.min(), rows.min(), cols.max(), rows.max()) == (x1, y1, x2, y2)
    assert metrics.pck(y, y, 1.0) == 1.0


def test_anomaly_trains_on_normals_only_and_tests_both():
    from sklearn.datasets import load_digits

    data = cached("digits-anomaly")
    assert not data.y_train.any()
    for y in (data.y_test, data.y_val):
        assert set(np.unique(y)) == {0, 1}
    bunch = load_digits()
    digits = (bunch.images / 16.0).reshape(len(bunch.images), -1)
    lookup = {row.tobytes(): i for i, row in enumerate(digits.astype(np.float32))}

    def index(x):
        return [lookup[row.tobytes()] for row in x.reshape(len(x), -1)]

    train, test, val = index(data.x_train), index(data.x_test), index(data.x_val)
    assert np.all(bunch.target[train] <= 4) and len(train) > 500
    assert np.array_equal(bunch.target[test] >= 5, data.y_test.astype(bool))
    assert not (set(train) & set(test)) and not (set(train) & set(val)) and not (set(test) & set(val))
    assert metrics.auroc(data.y_test.astype(float), data.y_test) == 1.0


def test_signal_classes_are_balanced_and_distinct():
    data = cached("signal-synth")
    counts = np.bincount(data.y_train, minlength=4)
    assert data.num_classes == 4 and counts.min() > 0.2 * len(data.y_train)
    means = [np.abs(np.diff(data.x_train[data.y_train == k, 0], axis=1)).mean() for k in range(4)]
    assert len(set(np.round(means, 3))) == 4  # the families differ in shape, not only by noise


def reference_tags(row: np.ndarray) -> list[int]:
    """Straightforward reading of the tokens-synth rule."""
    tags, in_span, price = [], False, False
    for k, tok in enumerate(row.tolist()):
        if tok == task_data.PAD:
            tags.append(-100)
            in_span = False
            continue
        if tok in task_data.NUMBER_TOKENS:
            if not in_span:
                price = k > 0 and row[k - 1] == task_data.DOLLAR
            tags.append((3 if price else 1) + (1 if in_span else 0))
            in_span = True
        else:
            tags.append(0)
            in_span = False
    return tags


def test_token_tags_follow_the_documented_rule():
    data = cached("tokens-synth")
    assert data.x_train.min() >= 0 and data.x_train.max() < task_data.VOCAB
    for row, tags in zip(data.x_test[:200], data.y_test[:200], strict=True):
        assert tags.tolist() == reference_tags(row)
    assert set(np.unique(data.y_train)) == {-100, 0, 1, 2, 3, 4}
    logits = np.moveaxis(np.eye(5)[np.where(data.y_test < 0, 0, data.y_test)], -1, 1)
    assert metrics.token_f1(logits, data.y_test) == 1.0
    assert metrics.span_f1(logits, data.y_test, task_data.TAGS) == 1.0


def test_sentiment_follows_the_documented_rule():
    data = cached("tokens-seq")
    for row, label in zip(data.x_test[:200], data.y_test[:200], strict=True):
        score, toks = 0, row.tolist()
        for k, tok in enumerate(toks):
            sign = 1 if tok in task_data.POSITIVE else -1 if tok in task_data.NEGATIVE else 0
            score += -sign if k > 0 and toks[k - 1] == task_data.NOT else sign
        assert label == np.sign(score) + 1
    assert np.bincount(data.y_train, minlength=3).min() > 0.1 * len(data.y_train)


TS_FILE = """# a comment
@problemName Tiny
@univariate true
@equalLength true
@classLabel true a b
@data
1.0,2.0,3.0:b
4.0,5.0,6.0:a
"""


def test_read_ts(tmp_path):
    path = tmp_path / "Tiny_TRAIN.ts"
    path.write_text(TS_FILE)
    x, y, classes = task_data.read_ts(path)
    assert x.shape == (2, 1, 3) and x[1, 0].tolist() == [4.0, 5.0, 6.0]
    assert y.tolist() == [1, 0] and classes == ("a", "b")
    path.write_text(TS_FILE.replace(":a", ":c"))
    with pytest.raises(SourceError, match="class label"):
        task_data.read_ts(path)
    path.write_text(TS_FILE.replace("4.0,", "?,"))
    with pytest.raises(SourceError, match="line 8"):
        task_data.read_ts(path)


@pytest.mark.skipif(UCR_INSTALLED, reason="aeon or sktime is installed")
def test_ucr_without_the_package_says_what_to_install():
    with pytest.raises(SourceError, match="pip install --no-deps aeon"):
        load("ucr-gunpoint")


@pytest.mark.skipif(not UCR_INSTALLED, reason="neither aeon nor sktime is installed")
def test_ucr_gunpoint_from_the_installed_package():
    data = load("ucr-gunpoint")
    assert data.x_train.shape == (50, 1, 150) and data.x_test.shape == (150, 1, 150)
    assert data.num_classes == 2 and set(np.unique(data.y_test)) == {0, 1}
