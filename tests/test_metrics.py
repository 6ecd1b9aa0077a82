"""edgekd.metrics: hand-computed small cases, sklearn cross-checks and edge cases for every metric."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd import metrics as m
from edgekd.metrics import MetricError


def one_hot_logits(labels: np.ndarray, num_classes: int, scale: float = 10.0) -> np.ndarray:
    """Logits whose argmax over axis 1 is ``labels``."""
    out = np.eye(num_classes, dtype=np.float32)[labels] * scale  # N x ... x C
    return np.moveaxis(out, -1, 1)


# --- top-1, pixel accuracy, mIoU ------------------------------------------------------------------------------


def test_top1_classification_by_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    assert m.top1(logits, np.array([0, 1, 1, 2])) == pytest.approx(0.5)


def test_top1_dense_ignores_ignore_index_and_uses_the_class_axis():
    labels = np.array([[[0, 1], [2, -100]]])  # 1 x 2 x 2, one ignored pixel
    logits = one_hot_logits(np.array([[[0, 1], [1, 0]]]), 3)  # 1 x 3 x 2 x 2
    assert m.top1(logits, labels) == pytest.approx(2 / 3)
    assert m.pixel_accuracy(logits, labels) == pytest.approx(2 / 3)
    # per-token N x L x C with class_axis=-1 gives the same
    assert m.top1(np.moveaxis(logits, 1, -1), labels, class_axis=-1) == pytest.approx(2 / 3)


def test_top1_matches_sklearn_accuracy():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((200, 5)), rng.integers(0, 5, 200)
    assert m.top1(logits, labels) == pytest.approx(accuracy_score(labels, logits.argmax(1)))


def test_top1_errors_name_the_problem():
    with pytest.raises(MetricError, match="need labels of shape"):
        m.top1(np.zeros((4, 3)), np.zeros((4, 2), dtype=int))
    with pytest.raises(MetricError, match="outside 0..2"):
        m.top1(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(MetricError, match="every position is ignore_index"):
        m.top1(np.zeros((2, 3)), np.array([-100, -100]))
    with pytest.raises(MetricError, match="class_axis=4"):
        m.top1(np.zeros((2, 3)), np.array([0, 1]), class_axis=4)


def test_miou_by_hand():
    # labels:  0 0 1 1 ; pred: 0 1 1 1  -> class 0: tp 1, fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3
    labels = np.array([[0, 0, 1, 1]])
    logits = one_hot_logits(np.array([[0, 1, 1, 1]]), 3)  # class 2 absent from labels and predictions
    assert m.per_class_iou(logits, labels, 3) == pytest.approx({0: 0.5, 1: 2 / 3})
    assert m.miou(logits, labels, 3) == pytest.approx((0.5 + 2 / 3) / 2)


def test_miou_counts_a_predicted_but_absent_class_and_sums_over_images():
    labels = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])  # class 2 predicted, never true: IoU 0 and it counts
    ious = m.per_class_iou(one_hot_logits(pred, 3), labels, 3)
    assert ious == pytest.approx({0: 0.5, 1: 1.0, 2: 0.0})
    assert m.miou(one_hot_logits(pred, 3), labels, 3) == pytest.approx(0.5)


def test_miou_matches_sklearn_jaccard_and_perfect_is_one():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (3, 6, 6))
    logits = rng.standard_normal((3, 4, 6, 6))
    pred = logits.argmax(1)
    present = np.union1d(labels, pred)
    expected = jaccard_score(labels.ravel(), pred.ravel(), labels=present, average="macro")
    assert m.miou(logits, labels, 4) == pytest.approx(expected)
    assert m.miou(one_hot_logits(labels, 4), labels, 4) == 1.0


def test_miou_rejects_a_wrong_class_count():
    with pytest.raises(MetricError, match="num_classes is 5"):
        m.miou(np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2), dtype=int), 5)


# --- token F1 ------------------------------------------------------------------------------------------------


def test_token_f1_by_hand():
    labels = np.array([[0, 1, 2, 0, 1]])
    pred = np.array([[0, 1, 1, 2, 0]])  # tp 1 (pos 1); fp: pos 2 (1!=2), pos 3 -> 2; fn: pos 2, pos 4 -> 2
    assert m.token_f1(one_hot_logits(pred, 3), labels) == pytest.approx(2 * 1 / (2 + 2 + 2))


def test_token_f1_matches_sklearn_micro_f1_over_non_background():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, (20, 16))
    labels[:, -3:] = -100  # padding
    logits = rng.standard_normal((20, 5, 16))
    keep = labels != -100
    expected = f1_score(labels[keep], logits.argmax(1)[keep], labels=[1, 2, 3, 4], average="micro")
    assert m.token_f1(logits, labels) == pytest.approx(expected)


def test_token_f1_all_background_is_one_like_sklearn_zero_division_one():
    from sklearn.metrics import f1_score

    labels = np.zeros((2, 4), dtype=int)
    assert m.token_f1(one_hot_logits(labels, 3), labels) == 1.0
    assert f1_score(labels.ravel(), labels.ravel(), labels=[1, 2], average="micro", zero_division=1.0) == 1.0
    pred = labels.copy()
    pred[0, 0] = 2  # one false alarm and nothing to find: F1 0
    assert m.token_f1(one_hot_logits(pred, 3), labels) == 0.0


BIO = ("O", "B-NUM", "I-NUM", "B-PRICE", "I-PRICE")


def test_span_f1_by_hand():
    labels = np.array([[0, 1, 2, 0, 3, 4, 4, 0]])  # spans: NUM 1..2, PRICE 4..6
    pred = np.array([[0, 1, 2, 0, 3, 4, 0, 0]])  # NUM 1..2 exact, PRICE 4..5 too short: 1 of 2 found, 1 of 2 right
    assert m.span_f1(one_hot_logits(pred, 5), labels, BIO) == pytest.approx(0.5)
    assert m.token_f1(one_hot_logits(pred, 5), labels) == pytest.approx(2 * 4 / (2 * 4 + 0 + 1))  # tokens forgive


def test_span_f1_conlleval_starts_rows_and_padding():
    # an I- tag after O starts a span (conlleval); a type change starts a new span
    labels = np.array([[0, 1, 2, 0], [1, 4, 0, 0]])
    pred = np.array([[0, 2, 2, 0], [1, 4, 0, 0]])  # I-NUM I-NUM == B-NUM I-NUM as a span; NUM 0..0 + PRICE 1..1
    assert m.span_f1(one_hot_logits(pred, 5), labels, BIO) == 1.0
    # a span never runs from the end of one row into the next
    labels = np.array([[0, 1], [2, 0]])
    assert m.span_f1(one_hot_logits(np.array([[0, 1], [0, 0]]), 5), labels, BIO) == pytest.approx(2 / 3)
    # ignored positions are "O" in the prediction too: a span predicted into the padding still matches
    labels = np.array([[1, 2, -100]])
    assert m.span_f1(one_hot_logits(np.array([[1, 2, 2]]), 5), labels, BIO) == 1.0
    assert m.span_f1(one_hot_logits(np.zeros((1, 3), int), 5), np.zeros((1, 3), int), BIO) == 1.0  # nothing, none


def test_span_f1_refuses_tags_that_are_not_bio():
    with pytest.raises(MetricError, match="is not BIO"):
        m.span_f1(np.zeros((1, 2, 3)), np.zeros((1, 3), int), ("O", "NUM"))
    with pytest.raises(MetricError, match="3 tag names for 5 classes"):
        m.span_f1(np.zeros((1, 5, 3)), np.zeros((1, 3), int), BIO[:3])


# --- regression, keypoints -------------------------------------------------------------------------------------


def test_mae_rmse_by_hand_and_against_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    pred, target = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 4.0]])
    assert m.mae(pred, target) == pytest.approx(5 / 4)
    assert m.rmse(pred, target) == pytest.approx(np.sqrt(13 / 4))
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    assert m.mae(a, b) == pytest.approx(mean_absolute_error(b, a))
    assert m.rmse(a, b) == pytest.approx(np.sqrt(mean_squared_error(b, a)))
    with pytest.raises(MetricError, match="must match"):
        m.mae(np.zeros((2, 4)), np.zeros((2, 2, 2)))


def test_pck_both_layouts_and_the_inclusive_threshold():
    target = np.array([[[0.0, 0.0], [10.0, 10.0]]])  # 1 x 2 x 2
    pred = np.array([[[3.0, 4.0], [10.0, 16.0]]])  # distances 5 and 6
    assert m.pck(pred, target, 5.0) == 0.5  # 5 <= 5 counts
    assert m.pck(pred, target, 4.9) == 0.0
    assert m.pck(pred.reshape(1, 4), target.reshape(1, 4), 6.0) == 1.0  # flattened x0, y0, x1, y1
    assert m.mean_keypoint_distance(pred, target) == pytest.approx(5.5)
    with pytest.raises(MetricError, match="must be positive"):
        m.pck(pred, target, 0)
    with pytest.raises(MetricError, match="N x K x 2 or N x 2K"):
        m.pck(np.zeros((2, 3)), np.zeros((2, 3)), 1.0)


# --- reconstruction, AUROC -------------------------------------------------------------------------------------


def test_reconstruction_error_per_sample_mse():
    x = np.zeros((2, 1, 2, 2))
    recon = x.copy()
    recon[1, 0, 0, 0] = 2.0  # sample 1: (2^2) / 4 = 1
    assert m.per_sample_reconstruction_error(recon, x).tolist() == [0.0, 1.0]
    assert m.reconstruction_error(recon, x) == pytest.approx(0.5)


def test_auroc_by_hand_with_ties():
    # positives 0.8, 0.5; negatives 0.5, 0.1: pairs (0.8>0.5), (0.8>0.1), (0.5=0.5 -> 1/2), (0.5>0.1) -> 3.5 / 4
    assert m.auroc([0.8, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert m.auroc([1.0, 1.0, 1.0], [1, 0, 0]) == pytest.approx(0.5)


def test_auroc_matches_sklearn_on_tied_scores():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.standard_normal(300) + labels, 1)  # rounding makes many ties
    assert m.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_average_ranks_match_scipy():
    from scipy.stats import rankdata

    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert m.average_ranks(values).tolist() == rankdata(values).tolist()


def test_auroc_needs_both_classes_and_binary_labels():
    with pytest.raises(MetricError, match="0 negatives"):
        m.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(MetricError, match="must be 0 or 1"):
        m.auroc([0.1, 0.2], [0, 2])


# --- detection -------------------------------------------------------------------------------------------------


def grid_targets() -> tuple[np.ndarray, np.ndarray]:
    """2 images, 2 object classes on a 2 x 2 grid: image 0 has a class-1 and a class-2 box, image 1 a class-1 box."""
    y_cls = np.zeros((2, 2, 2), dtype=np.int64)
    y_box = np.zeros((2, 4, 2, 2))
    y_cls[0, 0, 0], y_box[0, :, 0, 0] = 1, [0.0, 0.0, 0.4, 0.4]
    y_cls[0, 1, 1], y_box[0, :, 1, 1] = 2, [0.6, 0.6, 1.0, 1.0]
    y_cls[1, 0, 1], y_box[1, :, 0, 1] = 1, [0.5, 0.1, 0.9, 0.4]
    return y_cls, y_box


def test_ground_truth_as_prediction_gives_map_one_and_full_pr():
    y_cls, y_box = grid_targets()
    logits = one_hot_logits(y_cls, 3)
    assert m.detection_ap(logits, y_box, y_cls, y_box) == {1: 1.0, 2: 1.0}
    assert m.detection_map50(logits, y_box, y_cls, y_box) == 1.0
    pr = m.detection_pr(logits, y_box, y_cls, y_box)
    assert pr["all"] == {"tp": 3, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0}
    dets = m.decode_grid(logits, y_box)
    assert [[(c, round(s, 3)) for c, s, _ in image] for image in dets] == [[(1, 1.0), (2, 1.0)], [(1, 1.0)]]
    assert dets[0][1][2].tolist() == [0.6, 0.6, 1.0, 1.0]


def test_detection_ap_by_hand_with_a_duplicate_and_a_miss():
    """Class 1 has 2 ground-truth boxes. Detections by score: 0.9 hits image 0's box, 0.8 is a duplicate of it
    (false positive: that box is taken), image 1's box is missed. PR points: (r .5, p 1), (r .5, p .5) -> AP 0.5."""
    y_cls, y_box = grid_targets()
    y_cls[0, 1, 1] = 0  # only class 1 now: boxes in image 0 (cell 0,0) and image 1 (cell 0,1)
    logits = np.full((2, 3, 2, 2), -10.0)
    logits[:, 0] = 10.0  # every cell background ...
    boxes = np.zeros((2, 4, 2, 2))
    logits[0, :, 0, 0] = [0.0, np.log(9.0), -50]  # ... except: p(class 1) = 0.9, true box
    boxes[0, :, 0, 0] = y_box[0, :, 0, 0]
    logits[0, :, 1, 0] = [0.0, np.log(4.0), -50]  # p = 0.8, a near-copy of the same box
    boxes[0, :, 1, 0] = [0.0, 0.0, 0.4, 0.38]
    assert m.detection_ap(logits, boxes, y_cls, y_box) == {1: pytest.approx(0.5)}
    pr = m.detection_pr(logits, boxes, y_cls, y_box, score_threshold=0.5)
    assert pr["classes"][1] == {"tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5}


def test_detection_iou_threshold_and_wrong_class_are_misses():
    y_cls, y_box = grid_targets()
    logits = one_hot_logits(y_cls, 3)
    shifted = y_box.copy()
    shifted[0, :, 0, 0] = [0.2, 0.0, 0.6, 0.4]  # IoU with the true box: 0.08 / 0.24 = 1/3
    assert m.box_iou(shifted[0, :, 0, 0], y_box[0, :, 0, 0])[0, 0] == pytest.approx(1 / 3)
    # class 1, equal scores in image order: the shifted box (false positive), then image 1's hit -> 0.5 * 1/2
    assert m.detection_ap(logits, shifted, y_cls, y_box)[1] == pytest.approx(0.25)
    assert m.detection_ap(logits, shifted, y_cls, y_box, iou=0.3)[1] == 1.0
    swapped = y_cls.copy()
    swapped[0, 1, 1] = 1  # the class-2 object predicted as class 1: a false positive for 1, a miss for 2
    ap = m.detection_ap(one_hot_logits(swapped, 3), y_box, y_cls, y_box)
    # class 1 ranks (equal scores, image then cell order): hit, false positive, hit -> 0.5 * 1 + 0.5 * 2/3
    assert ap[2] == 0.0 and ap[1] == pytest.approx(5 / 6)
    pr = m.detection_pr(one_hot_logits(swapped, 3), y_box, y_cls, y_box)
    assert pr["classes"][2] == {"tp": 0, "fp": 0, "fn": 1, "precision": None, "recall": 0.0}


def test_detection_all_background_and_bad_shapes():
    y_cls, y_box = grid_targets()
    empty = np.zeros_like(y_cls)
    with pytest.raises(MetricError, match="no ground-truth object"):
        m.detection_map50(one_hot_logits(empty, 3), y_box, empty, y_box)
    # nothing detected: AP 0 for every class with ground truth
    assert m.detection_ap(one_hot_logits(empty, 3), y_box, y_cls, y_box) == {1: 0.0, 2: 0.0}
    with pytest.raises(MetricError, match="boxes has shape"):
        m.detection_map50(one_hot_logits(y_cls, 3), y_box[:, :2], y_cls, y_box)
    with pytest.raises(MetricError, match="integer class ids 0..2"):
        m.detection_map50(one_hot_logits(y_cls, 3), y_box, y_cls + 2, y_box)


def test_detection_ap_matches_a_reference_voc_computation():
    """Random detections on a 4 x 4 grid against an independent straightforward implementation of the matcher."""
    rng = np.random.default_rng(5)
    n, g, c = 6, 4, 3
    y_cls = np.where(rng.random((n, g, g)) < 0.3, rng.integers(1, c + 1, (n, g, g)), 0)
    lo = rng.random((n, 2, g, g)) * 0.6
    y_box = np.concatenate([lo, lo + 0.2 + rng.random((n, 2, g, g)) * 0.2], axis=1)
    logits = rng.standard_normal((n, c + 1, g, g)) * 2
    boxes = y_box + rng.normal(0, 0.05, y_box.shape)
    got = m.detection_ap(logits, boxes, y_cls, y_box, score_threshold=0.05)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for cls in got:
        dets = [(prob[i, 1:, r, q].max(), i, boxes[i, :, r, q]) for i in range(n) for r in range(g) for q in range(g)
                if prob[i, 1:, r, q].argmax() + 1 == cls and prob[i, 1:, r, q].max() >= 0.05]
        dets.sort(key=lambda d: -d[0])
        gts = {(i, r, q): y_box[i, :, r, q] for i in range(n) for r in range(g) for q in range(g) if y_cls[i, r, q] == cls}
        used, flags = set(), []
        for _, i, box in dets:
            cands = [(m.box_iou(box, b)[0, 0], k) for k, b in gts.items() if k[0] == i and k not in used]
            best = max(cands, default=(0.0, None))
            flags.append(best[0] >= 0.5)
            if best[0] >= 0.5:
                used.add(best[1])
        tp = np.cumsum(flags)
        rec, prec = tp / len(gts), tp / np.arange(1, len(flags) + 1)
        ap = sum((rec[k] - (rec[k - 1] if k else 0)) * prec[k:].max() for k in range(len(flags)))
        assert got[cls] == pytest.approx(ap), cls


# --- the table -------------------------------------------------------------------------------------------------


def test_metric_table_directions_and_drop():
    assert m.METRICS["miou"].higher_is_better and not m.METRICS["mae"].higher_is_better
    assert m.METRICS["top1"].drop(0.9, 0.85) == pytest.approx(0.05)
    assert m.METRICS["mae"].drop(2.0, 2.5) == pytest.approx(0.5)  # an error going up is a drop
    assert m.METRICS["reconstruction_error"].drop(0.02, 0.01) < 0  # better
    for name, info in m.METRICS.items():
        assert info.name == name and callable(info.fn) and info.unit and info.description


def test_metrics_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, edgekd.metrics; sys.exit('torch' in sys.modules or 'sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
