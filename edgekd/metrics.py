"""Task metrics: pure numpy functions, one per metric, each with its exact definition. Torch-free.

Every function takes arrays (numpy, or anything ``np.asarray`` accepts) and returns a Python float (or a dict of
them for the per-class views). Conventions shared by all of them:

- **class axis**: logits carry their classes on ``class_axis`` (1 by default: N x C, N x C x H x W, N x C x L);
  labels have the logits' shape without that axis. A prediction is the argmax over the class axis (first maximum
  on ties, as ``np.argmax``).
- **ignore_index** (-100 by default, PyTorch's ``CrossEntropyLoss`` convention): label positions holding it are left
  out of every count.
- Bad input (shapes that do not fit, labels out of range, nothing to measure) raises ``MetricError`` naming the
  argument and what was expected.

``METRICS`` says, per metric, whether higher is better and its unit; ``MetricInfo.drop`` turns a reference and a
measured value into "how much worse" in that metric's direction (a drop of an error metric is an increase).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError

IGNORE_INDEX = -100


class MetricError(EdgekdError, ValueError):
    """A metric's inputs do not fit its definition."""


# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def _array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: no torch import needed to read it
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise MetricError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def _class_predictions(logits: Any, labels: Any, class_axis: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(argmax over the class axis, integer labels, number of classes), with the shapes checked."""
    logits, labels = _array(logits, "logits"), _array(labels, "labels")
    if logits.ndim < 1:
        raise MetricError("logits must have a class axis, got a scalar")
    axis = class_axis % logits.ndim if -logits.ndim <= class_axis < logits.ndim else None
    if axis is None:
        raise MetricError(f"class_axis={class_axis} does not exist in logits of shape {logits.shape}")
    expected = logits.shape[:axis] + logits.shape[axis + 1:]
    if labels.shape != expected:
        raise MetricError(f"labels have shape {labels.shape} but logits {logits.shape} with classes on axis {axis} "
                          f"need labels of shape {expected}", hint="labels hold one class id per prediction")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise MetricError(f"labels must hold integer class ids, got dtype {labels.dtype} with fractions")
        labels = labels.astype(np.int64)
    return np.argmax(logits, axis=axis), labels.astype(np.int64), logits.shape[axis]


def _valid(labels: np.ndarray, ignore_index: int | None, num_classes: int) -> np.ndarray:
    """Mask of the label positions that count; an id outside 0..num_classes-1 (other than ignore_index) is an error."""
    valid = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, dtype=bool)
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise MetricError(f"labels hold class id {int(labels[bad][0])} outside 0..{num_classes - 1}",
                          hint=f"use ignore_index={ignore_index} for positions that must not count")
    if not valid.any():
        raise MetricError("no label to score: every position is ignore_index" if labels.size else "labels are empty")
    return valid


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C counts: row = true class, column = predicted class (inputs already masked, both in 0..C-1)."""
    flat = labels.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _same_shape(pred: Any, target: Any, names: tuple[str, str] = ("pred", "target")) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _array(pred, names[0]).astype(np.float64), _array(target, names[1]).astype(np.float64)
    if pred.shape != target.shape:
        raise MetricError(f"{names[0]} has shape {pred.shape} but {names[1]} {target.shape}; they must match")
    if pred.size == 0:
        raise MetricError(f"{names[0]} is empty")
    return pred, target


# ---------------------------------------------------------------------------------------------------------------
# classification, segmentation, tokens


def top1(logits: Any, labels: Any, class_axis: int = 1, ignore_index: int | None = IGNORE_INDEX) -> float:
    """Top-1 accuracy: the fraction of label positions (not ``ignore_index``) whose argmax over ``class_axis`` equals
    the label. Works for N x C logits with N labels and for dense N x C x ... logits with N x ... labels (per pixel,
    per token): every position counts once. Range 0..1."""
    pred, labels, num_classes = _class_predictions(logits, labels, class_axis)
    valid = _valid(labels, ignore_index, num_classes)
    return float(np.mean(pred[valid] == labels[valid]))


def pixel_accuracy(logits: Any, labels: Any, class_axis: int = 1, ignore_index: int | None = IGNORE_INDEX) -> float:
    """Pixel accuracy of a segmentation map: correct pixels / counted pixels (``top1`` over every pixel; background
    pixels count like any class). Range 0..1."""
    return top1(logits, labels, class_axis, ignore_index)


def per_class_iou(logits: Any, labels: Any, num_classes: int, class_axis: int = 1,
                  ignore_index: int | None = IGNORE_INDEX) -> dict[int, float]:
    """IoU of each class c that occurs in the labels or the predictions (over counted positions):
    IoU_c = TP_c / (TP_c + FP_c + FN_c), the counts summed over the whole batch (not averaged per image).
    A class that neither occurs nor is predicted is absent from the dict (its IoU is 0/0)."""
    pred, labels, classes = _class_predictions(logits, labels, class_axis)
    if classes != num_classes:
        raise MetricError(f"logits have {classes} classes on axis {class_axis} but num_classes is {num_classes}")
    valid = _valid(labels, ignore_index, num_classes)
    cm = confusion_matrix(pred[valid], labels[valid], num_classes)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    return {int(c): float(tp[c] / union[c]) for c in np.flatnonzero(union)}


def miou(logits: Any, labels: Any, num_classes: int, class_axis: int = 1, ignore_index: int | None = IGNORE_INDEX) -> float:
    """Mean intersection over union: the mean of ``per_class_iou`` over the classes present in the labels or the
    predictions of the batch (background, class 0, included like any class). Per-class counts are summed over all
    images first (the Cityscapes / torchmetrics "global" convention). Range 0..1."""
    ious = per_class_iou(logits, labels, num_classes, class_axis, ignore_index)
    return float(np.mean(list(ious.values())))


def token_f1(logits: Any, labels: Any, class_axis: int = 1, ignore_index: int | None = IGNORE_INDEX,
             background: int = 0) -> float:
    """Micro F1 over the non-background tags of a token-classification output (NER-style, token level, not span
    level). Over counted positions (labels != ignore_index):

    - TP = tokens with pred == label != background,
    - FP = tokens with pred != background and pred != label,
    - FN = tokens with label != background and pred != label,

    F1 = 2 TP / (2 TP + FP + FN). A mislabelled entity token counts once as FP and once as FN. This is
    ``sklearn.metrics.f1_score(labels, pred, labels=<every class but background>, average="micro")``. When no token
    is, or is predicted, non-background (nothing to find, nothing claimed) F1 is 1.0 (sklearn's
    ``zero_division=1.0``). Range 0..1."""
    pred, labels, num_classes = _class_predictions(logits, labels, class_axis)
    valid = _valid(labels, ignore_index, num_classes)
    pred, labels = pred[valid], labels[valid]
    hit = pred == labels
    tp = int(np.sum(hit & (labels != background)))
    fp = int(np.sum(~hit & (pred != background)))
    fn = int(np.sum(~hit & (labels != background)))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _bio_types(tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per tag id: (entity type id, 0 for "O"; whether it is a B- tag). Types are numbered from 1 in order of first
    appearance."""
    types: dict[str, int] = {}
    type_of, begins = np.zeros(len(tags), dtype=np.int64), np.zeros(len(tags), dtype=bool)
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        prefix, dash, name = tag.partition("-")
        if not dash or prefix not in ("B", "I") or not name:
            raise MetricError(f"tag {tag!r} is not BIO", hint='tags must be "O", "B-TYPE" or "I-TYPE"')
        type_of[i], begins[i] = types.setdefault(name, len(types) + 1), prefix == "B"
    return type_of, begins


def _spans(tag_ids: np.ndarray, type_of: np.ndarray, begins: np.ndarray) -> np.ndarray:
    """Every entity span of N x L tag ids as one integer code of (row, first, last, type)."""
    n, length = tag_ids.shape
    kind = type_of[tag_ids]
    prev = np.pad(kind[:, :-1], ((0, 0), (1, 0)))
    starts = (kind > 0) & (begins[tag_ids] | (prev != kind))
    first = np.maximum.accumulate(np.where(starts, np.arange(length)[None], -1), axis=1)  # inside a span: its start
    rows, cols = np.nonzero(kind > 0)
    key = rows * length + first[rows, cols]
    last = np.full(n * length, -1, dtype=np.int64)
    np.maximum.at(last, key, cols)
    begin_keys = np.flatnonzero(starts.ravel())
    width = int(type_of.max()) + 1
    return (begin_keys * length + last[begin_keys]) * width + kind.ravel()[begin_keys]


def span_f1(logits: Any, labels: Any, tags: Sequence[str], class_axis: int = 1,
            ignore_index: int | None = IGNORE_INDEX) -> float:
    """Entity-level micro F1 of BIO tags (the conlleval / seqeval default): ``tags[i]`` names class i as "O",
    "B-TYPE" or "I-TYPE". A span starts at a B- tag, or at an I- tag that does not continue a span of its type,
    and runs over the following I- tags of its type. A predicted span counts only when its first and last token
    and its type all equal a true span's. F1 = 2 |pred & true| / (|pred| + |true|); 1.0 when both are empty.
    Labels N x L (one sequence per row); positions holding ``ignore_index`` are "O" in both."""
    pred, labels, num_classes = _class_predictions(logits, labels, class_axis)
    if labels.ndim != 2:
        raise MetricError(f"span_f1 needs labels of shape N x L (one sequence per row), got {labels.shape}")
    if len(tags) != num_classes:
        raise MetricError(f"{len(tags)} tag names for {num_classes} classes", hint="name every class, in class order")
    valid = _valid(labels, ignore_index, num_classes)
    outside = tags.index("O") if "O" in tags else None
    if outside is None:
        raise MetricError('span_f1 needs an "O" tag among the tag names')
    type_of, begins = _bio_types(tags)
    truth = _spans(np.where(valid, labels, outside), type_of, begins)
    found = _spans(np.where(valid, pred, outside), type_of, begins)
    total = len(truth) + len(found)
    return 1.0 if total == 0 else 2 * len(np.intersect1d(truth, found)) / total


# ---------------------------------------------------------------------------------------------------------------
# regression, keypoints


def mae(pred: Any, target: Any) -> float:
    """Mean absolute error over every element: mean(|pred - target|), in the target's unit (pixels for keypoints).
    ``pred`` and ``target`` must have the same shape."""
    pred, target = _same_shape(pred, target)
    return float(np.mean(np.abs(pred - target)))


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error over every element: sqrt(mean((pred - target)^2)), in the target's unit."""
    pred, target = _same_shape(pred, target)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


def _keypoints(arr: np.ndarray, name: str) -> np.ndarray:
    """N x K x 2 from N x K x 2 or N x 2K (x0, y0, x1, y1, ...)."""
    if arr.ndim == 3 and arr.shape[2] == 2:
        return arr
    if arr.ndim == 2 and arr.shape[1] % 2 == 0:
        return arr.reshape(len(arr), -1, 2)
    raise MetricError(f"{name} has shape {arr.shape}; keypoints must be N x K x 2 or N x 2K (x0, y0, x1, y1, ...)")


def keypoint_distances(pred: Any, target: Any) -> np.ndarray:
    """N x K Euclidean distances between predicted and true keypoints (same layout as ``pck``)."""
    pred, target = _same_shape(pred, target)
    diff = _keypoints(pred, "pred") - _keypoints(target, "target")
    return np.sqrt(np.sum(diff ** 2, axis=-1))


def pck(pred: Any, target: Any, threshold: float) -> float:
    """Percentage of correct keypoints: the fraction of keypoints whose Euclidean distance to the true keypoint is
    at most ``threshold`` (same unit as the coordinates, pixels for the built-in tasks). Keypoints are N x K x 2 or
    flattened N x 2K as (x0, y0, x1, y1, ...). Range 0..1."""
    if not threshold > 0:
        raise MetricError(f"pck threshold must be positive, got {threshold}")
    return float(np.mean(keypoint_distances(pred, target) <= threshold))


def mean_keypoint_distance(pred: Any, target: Any) -> float:
    """Mean Euclidean keypoint error (the "mean pixel error" of landmark papers), same layout as ``pck``."""
    return float(np.mean(keypoint_distances(pred, target)))


# ---------------------------------------------------------------------------------------------------------------
# reconstruction, anomaly


def per_sample_reconstruction_error(recon: Any, x: Any) -> np.ndarray:
    """Per-sample mean squared error, shape (N,): mean over every non-batch axis of (recon - x)^2. This is the usual
    anomaly score of an autoencoder (higher = more anomalous)."""
    recon, x = _same_shape(recon, x, ("recon", "x"))
    if recon.ndim < 2:
        raise MetricError(f"recon has shape {recon.shape}; expected (N, ...) with a batch axis")
    return np.mean((recon - x).reshape(len(x), -1) ** 2, axis=1)


def reconstruction_error(recon: Any, x: Any) -> float:
    """Mean over samples of ``per_sample_reconstruction_error`` (equal to the MSE over all elements)."""
    return float(np.mean(per_sample_reconstruction_error(recon, x)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given the mean of the ranks they span (``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of each tie group's last member
    mean_rank = ends - (counts - 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve for binary ``labels`` (1 = positive / anomaly, 0 = negative / normal) and ``scores``
    (higher = more positive), rank-based (Mann-Whitney U): AUROC = (R_pos - P (P + 1) / 2) / (P * Q), R_pos the sum
    of the positives' ranks among all scores with ties given their average rank, P positives, Q negatives. Equals
    ``sklearn.metrics.roc_auc_score``; a tie between a positive and a negative counts one half. Needs both classes."""
    scores, labels = _array(scores, "scores").astype(np.float64).ravel(), _array(labels, "labels").ravel()
    if scores.shape != labels.shape:
        raise MetricError(f"scores have {scores.size} values but labels {labels.size}")
    if not np.isin(labels, (0, 1)).all():
        raise MetricError(f"auroc labels must be 0 or 1, got {np.unique(labels)[:5].tolist()}")
    if not np.isfinite(scores).all():
        raise MetricError("scores contain NaN or inf")
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricError(f"auroc needs positives and negatives, got {n_pos} positives and {n_neg} negatives")
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# ---------------------------------------------------------------------------------------------------------------
# detection (anchor-free grid decoder + matcher)

#
# Output format: ``cls_logits`` N x (C+1) x Gh x Gw (class 0 = background, softmax over axis 1) and ``boxes``
# N x 4 x Gh x Gw, each cell's box as (x1, y1, x2, y2) in image coordinates normalised to 0..1. Targets: ``y_cls``
# N x Gh x Gw int (0 = background, 1..C = the class of the object whose box centre falls in that cell) and ``y_box``
# N x 4 x Gh x Gw (that object's box; ignored where y_cls is 0).


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A x B intersection over union of (x1, y1, x2, y2) boxes; a box with x2 < x1 or y2 < y1 has area 0, and two
    boxes of zero union have IoU 0."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Boxes:
    """Detections or ground truth as flat arrays, in (image, row-major cell) order."""

    image: np.ndarray
    cls: np.ndarray
    score: np.ndarray
    box: np.ndarray


def _grid_outputs(cls_logits: Any, boxes: Any) -> tuple[np.ndarray, np.ndarray]:
    cls_logits, boxes = _array(cls_logits, "cls_logits").astype(np.float64), _array(boxes, "boxes").astype(np.float64)
    if cls_logits.ndim != 4 or cls_logits.shape[1] < 2:
        raise MetricError(f"cls_logits has shape {cls_logits.shape}; expected N x (C+1) x Gh x Gw with class 0 = "
                          "background and at least one object class")
    expected = (cls_logits.shape[0], 4, *cls_logits.shape[2:])
    if boxes.shape != expected:
        raise MetricError(f"boxes has shape {boxes.shape}; with cls_logits {cls_logits.shape} it must be {expected} "
                          "(x1, y1, x2, y2 per cell)")
    return cls_logits, boxes


def _decode(cls_logits: np.ndarray, boxes: np.ndarray, score_threshold: float) -> _Boxes:
    """One detection per cell: the most probable object class (softmax over all C+1 classes), scored by its
    probability, kept when the score is at least ``score_threshold``."""
    shifted = np.exp(cls_logits - cls_logits.max(axis=1, keepdims=True))
    prob = shifted / shifted.sum(axis=1, keepdims=True)
    fg = prob[:, 1:]
    cls = np.argmax(fg, axis=1) + 1  # N x Gh x Gw
    score = np.max(fg, axis=1)
    keep = score >= score_threshold
    image = np.nonzero(keep)[0]
    return _Boxes(image, cls[keep], score[keep], boxes.transpose(0, 2, 3, 1)[keep])


def _ground_truth(y_cls: Any, y_box: Any, cls_logits: np.ndarray, boxes: np.ndarray) -> _Boxes:
    y_cls, y_box = _array(y_cls, "y_cls"), _array(y_box, "y_box").astype(np.float64)
    if y_cls.shape != (cls_logits.shape[0], *cls_logits.shape[2:]):
        raise MetricError(f"y_cls has shape {y_cls.shape}; with cls_logits {cls_logits.shape} it must be "
                          f"{(cls_logits.shape[0], *cls_logits.shape[2:])} (one class id per cell, 0 = background)")
    if y_box.shape != boxes.shape:
        raise MetricError(f"y_box has shape {y_box.shape}; it must match boxes {boxes.shape}")
    num_classes = cls_logits.shape[1] - 1
    if y_cls.min() < 0 or y_cls.max() > num_classes or not np.all(y_cls == np.round(y_cls)):
        raise MetricError(f"y_cls must hold integer class ids 0..{num_classes}, got values "
                          f"{float(y_cls.min()):g}..{float(y_cls.max()):g}")
    y_cls = y_cls.astype(np.int64)
    present = y_cls > 0
    return _Boxes(np.nonzero(present)[0], y_cls[present], np.ones(int(present.sum())),
                  y_box.transpose(0, 2, 3, 1)[present])


def _match(dets: _Boxes, gts: _Boxes, iou: float) -> np.ndarray:
    """True positive flag per detection: per image and class, detections in descending score each take the
    not-yet-matched ground-truth box of highest IoU, if that IoU is at least ``iou``; every other detection is a
    false positive."""
    tp = np.zeros(len(dets.image), dtype=bool)
    if not len(tp):
        return tp
    truth: dict[tuple[int, int], list[int]] = {}
    for j, key in enumerate(zip(gts.image.tolist(), gts.cls.tolist(), strict=True)):
        truth.setdefault(key, []).append(j)
    order = np.lexsort((-dets.score, dets.cls, dets.image))  # stable: equal scores keep cell order
    keys = np.stack([dets.image[order], dets.cls[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    for start, end in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        gt_rows = truth.get((int(keys[start, 0]), int(keys[start, 1])))
        if not gt_rows:
            continue
        rows = order[start:end]
        ious = box_iou(dets.box[rows], gts.box[gt_rows])
        taken = np.zeros(len(gt_rows), dtype=bool)
        for r in np.flatnonzero((ious >= iou).any(axis=1)):
            free = np.where(taken, -1.0, ious[r])
            best = int(np.argmax(free))  # ties: the first ground truth in cell order
            if free[best] >= iou:
                tp[rows[r]], taken[best] = True, True
                if taken.all():
                    break
    return tp


def _average_precision(score: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """VOC 2010+ all-point AP: the area under the precision-recall curve with precision made monotone
    (p(r) = max precision at any recall >= r)."""
    order = np.argsort(-score, kind="mergesort")
    hits = tp[order]
    ctp, cfp = np.cumsum(hits), np.cumsum(~hits)
    recall = np.r_[0.0, ctp / n_gt, 1.0]
    precision = np.r_[0.0, ctp / np.maximum(ctp + cfp, 1), 0.0]
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def decode_grid(cls_logits: Any, boxes: Any, score_threshold: float = 0.5) -> list[list[tuple[int, float, np.ndarray]]]:
    """Per image, the detections ``(class, score, box)`` of an anchor-free grid head: each cell proposes its most
    probable object class (softmax over the C+1 classes, argmax over classes 1..C), scored by that class's
    probability, with the cell's box (x1, y1, x2, y2, normalised); cells scoring below ``score_threshold`` are
    dropped. No NMS: a grid trained with one cell per object (the centre cell) does not propose duplicates."""
    cls_logits, boxes = _grid_outputs(cls_logits, boxes)
    dets = _decode(cls_logits, boxes, score_threshold)
    per_image: list[list[tuple[int, float, np.ndarray]]] = [[] for _ in range(len(cls_logits))]
    for i, c, s, b in zip(dets.image.tolist(), dets.cls.tolist(), dets.score.tolist(), dets.box, strict=True):
        per_image[i].append((c, s, b))
    return per_image


def detection_ap(cls_logits: Any, boxes: Any, y_cls: Any, y_box: Any, iou: float = 0.5,
                 score_threshold: float = 0.05) -> dict[int, float]:
    """Average precision per object class that has ground truth (class id -> AP), VOC all-point interpolation.

    Detections: ``decode_grid`` at ``score_threshold`` (0.05, torchvision's default: low-scoring detections only
    extend the tail of the precision-recall curve). Ground truth: every cell with y_cls > 0. Matcher: per class,
    detections of all images ranked by descending score (ties: image, then row-major cell order); each takes the
    unmatched ground-truth box of the same image and class with the highest IoU, a true positive when that IoU is
    at least ``iou``; each ground-truth box is matched at most once, so duplicates are false positives."""
    cls_logits, boxes = _grid_outputs(cls_logits, boxes)
    gts = _ground_truth(y_cls, y_box, cls_logits, boxes)
    dets = _decode(cls_logits, boxes, score_threshold)
    tp = _match(dets, gts, iou)
    return {int(c): _average_precision(dets.score[dets.cls == c], tp[dets.cls == c], int(np.sum(gts.cls == c)))
            for c in np.unique(gts.cls)}


def detection_map50(cls_logits: Any, boxes: Any, y_cls: Any, y_box: Any, iou: float = 0.5,
                    score_threshold: float = 0.05) -> float:
    """mAP@0.5: the mean of ``detection_ap`` over the object classes that have ground truth in the batch (a class
    with detections but no ground truth does not count). Range 0..1."""
    ap = detection_ap(cls_logits, boxes, y_cls, y_box, iou, score_threshold)
    if not ap:
        raise MetricError("no ground-truth object in y_cls (every cell is background): mAP is undefined")
    return float(np.mean(list(ap.values())))


def detection_pr(cls_logits: Any, boxes: Any, y_cls: Any, y_box: Any, iou: float = 0.5,
                 score_threshold: float = 0.5) -> dict[str, Any]:
    """Precision and recall at one operating point: the detections of ``decode_grid`` at ``score_threshold``,
    matched as in ``detection_ap``. Returns ``{"classes": {class: counts}, "all": counts}`` where counts are
    ``{"tp", "fp", "fn", "precision", "recall"}``, precision = tp / (tp + fp) (None without detections), recall =
    tp / (tp + fn) (None without ground truth); "all" sums the counts over classes (micro average)."""
    cls_logits, boxes = _grid_outputs(cls_logits, boxes)
    gts = _ground_truth(y_cls, y_box, cls_logits, boxes)
    dets = _decode(cls_logits, boxes, score_threshold)
    tp = _match(dets, gts, iou)

    def counts(n_tp: int, n_det: int, n_gt: int) -> dict[str, Any]:
        return {"tp": n_tp, "fp": n_det - n_tp, "fn": n_gt - n_tp, "precision": n_tp / n_det if n_det else None,
                "recall": n_tp / n_gt if n_gt else None}

    classes = {int(c): counts(int(tp[dets.cls == c].sum()), int(np.sum(dets.cls == c)), int(np.sum(gts.cls == c)))
               for c in np.union1d(dets.cls, gts.cls)}
    return {"classes": classes, "all": counts(int(tp.sum()), len(tp), len(gts.cls))}


# ---------------------------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class MetricInfo:
    """A metric's name, function, direction and unit."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    unit: str
    description: str

    def drop(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference`` in this metric's unit: reference - value when higher is
        better, value - reference when lower is (an error metric's "drop" is its increase). Negative = better."""
        return reference - value if self.higher_is_better else value - reference


METRICS: dict[str, MetricInfo] = {info.name: info for info in (
    MetricInfo("top1", top1, True, "fraction", "top-1 accuracy over counted label positions"),
    MetricInfo("pixel_accuracy", pixel_accuracy, True, "fraction", "correct pixels / counted pixels"),
    MetricInfo("miou", miou, True, "fraction", "mean IoU over classes present in labels or predictions"),
    MetricInfo("token_f1", token_f1, True, "fraction", "micro F1 over non-background token tags"),
    MetricInfo("span_f1", span_f1, True, "fraction", "entity-level micro F1 of BIO tags (exact span and type)"),
    MetricInfo("mae", mae, False, "target unit", "mean absolute error over every element"),
    MetricInfo("rmse", rmse, False, "target unit", "root mean squared error over every element"),
    MetricInfo("pck", pck, True, "fraction", "keypoints within a distance threshold"),
    MetricInfo("keypoint_distance", mean_keypoint_distance, False, "coordinate unit", "mean Euclidean keypoint error"),
    MetricInfo("reconstruction_error", reconstruction_error, False, "squared input unit", "mean per-sample MSE"),
    MetricInfo("auroc", auroc, True, "fraction", "ROC area of anomaly scores against 0/1 labels"),
    MetricInfo("map50", detection_map50, True, "fraction", "VOC all-point mAP at IoU 0.5 of the grid decoder"),
)}
