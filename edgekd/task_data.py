"""Built-in task datasets made from data that ships with installed packages (no downloads), one per edge task.

``TASK_DATASETS`` maps a name to a loader ``(SourceSpec) -> DataSplits``; ``edgekd.data`` serves them as
``builtin:NAME``. Every composed or synthetic loader is seeded (``?seed=``, default 0); all are deterministic and
small enough to train a tiny model in seconds on two cores. Labels are numpy arrays of any shape, or a dict of
arrays keyed by output name for multi-output tasks. docs/tasks.md describes each dataset; the summary:

| name | x | y | task |
|---|---|---|---|
| ``mnist-seg`` | N x 1 x 20 x 20 float32 | N x 20 x 20 int64, 0 background, digit + 1 | segmentation (11 classes) |
| ``mnist-det`` | N x 1 x 32 x 32 float32 | {"cls": N x 4 x 4 int64, "box": N x 4 x 4 x 4 float32} | detection (10 + bg) |
| ``digits-keypoints`` | N x 1 x 32 x 32 float32 | N x 4 float32 (x1, y1, x2, y2) pixels | keypoints |
| ``digits-anomaly`` | N x 1 x 8 x 8 float32 | N int64, 1 = anomaly: digit 5-9 (train: all 0) | reconstruction |
| ``signal-synth`` | N x 1 x 128 float32 | N int64, waveform family | signal classification (4) |
| ``ucr-gunpoint`` ... | N x 1 x L float32 | N int64 | UCR series read from aeon's or sktime's wheel |
| ``tokens-synth`` | N x 16 int64 token ids | N x 16 int64 tags, -100 on padding | token classification (5) |
| ``tokens-seq`` | N x 16 int64 token ids | N int64 sentiment | sequence classification (3) |

The digit tasks compose sklearn's 8 x 8 digits (``load_digits``, 1797 images) on a canvas. The source digits are
split into train and test pools first (``data._split``, seed 0), so no test canvas shows a digit image a training
canvas used.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import DataSplits, _split
from edgekd.errors import SourceError
from edgekd.sources import SourceSpec

#: sklearn digits are 0..16 integers; a pixel above this fraction of full intensity is "ink" (masks, boxes)
INK = 0.3
SEG_CANVAS, DET_CANVAS, KEYPOINT_CANVAS = 20, 32, 32
DIGIT_NAMES = tuple(str(d) for d in range(10))


def _seed(spec: SourceSpec, allowed: tuple[str, ...] = ("seed",)) -> int:
    spec.check_params(allowed)
    return spec.int_param("seed", 0)


def _digit_pools() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train images, labels), (test images, labels): sklearn's digits scaled to 0..1, split 80 / 20 (seed 0)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    x_tr, y_tr, x_te, y_te = _split(images, bunch.target.astype(np.int64), 0.2, seed=0)
    return (x_tr, y_tr), (x_te, y_te)


@functools.cache
def _interpolation(size: int, source: int = 8) -> np.ndarray:
    """size x source matrix of bilinear weights (pixel centres aligned, edges clamped): resized = A @ image @ A.T."""
    centres = np.clip((np.arange(size) + 0.5) * source / size - 0.5, 0, source - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, source - 1)
    weights = np.zeros((size, source), dtype=np.float32)
    np.add.at(weights, (np.arange(size), low), 1 - (centres - low))
    np.add.at(weights, (np.arange(size), high), centres - low)
    return weights


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square digit to size x size."""
    a = _interpolation(size, image.shape[0])
    return a @ image @ a.T


def _ink_box(image: np.ndarray, top: int, left: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2): the first and last ink column and row of a digit placed at (top, left), inclusive pixel
    indices on the canvas."""
    rows, cols = np.nonzero(image > INK)
    return left + int(cols.min()), top + int(rows.min()), left + int(cols.max()), top + int(rows.max())


def _compose(rng: np.random.Generator, pool: tuple[np.ndarray, np.ndarray], n: int, count: tuple[int, int],
             size: tuple[int, int], canvas: int, distinct_cells: int | None = None) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
    """``n`` canvases of ``canvas`` x ``canvas`` pixels, each with ``count[0]..count[1]`` digits of side ``size[0]..size[1]`` pixels
    at random positions, not overlapping (their squares are disjoint); with ``distinct_cells = G`` no two ink-box
    centres fall in the same cell of a G x G grid. Returns (N x 1 x H x W float32, per canvas the placed digits:
    {"digit", "image", "top", "left", "box"})."""
    images, labels = pool
    canvases = np.zeros((n, 1, canvas, canvas), dtype=np.float32)
    placed: list[list[dict[str, Any]]] = []
    for i in range(n):
        items: list[dict[str, Any]] = []
        for _ in range(int(rng.integers(count[0], count[1] + 1))):
            for _attempt in range(50):  # rejection sampling; a crowded canvas keeps fewer digits
                u = rng.random(4)  # one draw per attempt: size, digit, top, left
                k = size[0] + int(u[0] * (size[1] - size[0] + 1))
                pick = int(u[1] * len(images))
                top, left = int(u[2] * (canvas - k + 1)), int(u[3] * (canvas - k + 1))
                if any(top < o["top"] + o["size"] and o["top"] < top + k and left < o["left"] + o["size"]
                       and o["left"] < left + k for o in items):
                    continue
                digit = _resize(images[pick], k)
                box = _ink_box(digit, top, left)
                if distinct_cells and any(_cell(box, distinct_cells, canvas) == _cell(o["box"], distinct_cells, canvas) for o in items):
                    continue
                items.append({"digit": int(labels[pick]), "image": digit, "top": top, "left": left, "size": k,
                              "box": box})
                region = canvases[i, 0, top:top + k, left:left + k]
                np.maximum(region, digit, out=region)
                break
        placed.append(items)
    return canvases, placed


def _cell(box: tuple[int, int, int, int], grid: int, canvas: int) -> tuple[int, int]:
    """(row, column) of the grid cell holding the centre of an inclusive pixel box."""
    cx, cy = (box[0] + box[2] + 1) / 2 / canvas, (box[1] + box[3] + 1) / 2 / canvas
    return min(int(cy * grid), grid - 1), min(int(cx * grid), grid - 1)


def _digit_task(spec: SourceSpec, n: tuple[int, int], label_fn: Callable[[list[list[dict[str, Any]]]], Any],
                **compose: Any) -> tuple[np.ndarray, Any, np.ndarray, Any, int]:
    """Train and test canvases from the two digit pools, labelled by ``label_fn``; returns (x_tr, y_tr, x_te, y_te,
    seed)."""
    seed = _seed(spec)
    train_pool, test_pool = _digit_pools()
    x_tr, placed_tr = _compose(np.random.default_rng([seed, 0]), train_pool, n[0], **compose)
    x_te, placed_te = _compose(np.random.default_rng([seed, 1]), test_pool, n[1], **compose)
    return x_tr, label_fn(placed_tr), x_te, label_fn(placed_te), seed


def _preprocessing(task: str, seed: int, **extra: Any) -> dict[str, Any]:
    return {"layout": "NCHW", "scale": 1 / 16, "task": task, "seed": seed,
            "source": "sklearn.datasets.load_digits (0..16 ints) composed by edgekd.task_data", **extra}


# ---------------------------------------------------------------------------------------------------------------
# segmentation, detection, keypoints, anomaly


def _seg_masks(placed: list[list[dict[str, Any]]]) -> np.ndarray:
    masks = np.zeros((len(placed), SEG_CANVAS, SEG_CANVAS), dtype=np.int64)
    for mask, items in zip(masks, placed, strict=True):
        for o in items:
            region = mask[o["top"]:o["top"] + o["size"], o["left"]:o["left"] + o["size"]]
            region[o["image"] > INK] = o["digit"] + 1
    return masks


def mnist_seg(spec: SourceSpec) -> DataSplits:
    """Segmentation: 1-2 digits (8-10 px) per 20 x 20 canvas; y[i, r, c] = digit + 1 where the pixel is ink
    (> 0.3 of full intensity) of that digit, 0 (background) elsewhere. 11 classes."""
    x_tr, y_tr, x_te, y_te, seed = _digit_task(spec, (1600, 400), _seg_masks, count=(1, 2), size=(8, 10),
                                               canvas=SEG_CANVAS)
    return DataSplits("mnist-seg", x_tr, y_tr, x_te, y_te, 11, ("background", *DIGIT_NAMES),
                      _preprocessing("segmentation", seed, ink_threshold=INK, class_axis=1))


DET_GRID = 4


def _det_targets(placed: list[list[dict[str, Any]]]) -> dict[str, np.ndarray]:
    cls = np.zeros((len(placed), DET_GRID, DET_GRID), dtype=np.int64)
    box = np.zeros((len(placed), 4, DET_GRID, DET_GRID), dtype=np.float32)
    for i, items in enumerate(placed):
        for o in items:
            row, col = _cell(o["box"], DET_GRID, DET_CANVAS)
            x1, y1, x2, y2 = o["box"]
            cls[i, row, col] = o["digit"] + 1
            box[i, :, row, col] = np.array([x1, y1, x2 + 1, y2 + 1], dtype=np.float32) / DET_CANVAS
    return {"cls": cls, "box": box}


def mnist_det(spec: SourceSpec) -> DataSplits:
    """Detection: 1-3 digits (10-16 px) per 32 x 32 canvas, at most one ink-box centre per cell of a 4 x 4 grid.
    y["cls"][i, r, c] = digit + 1 in the cell holding a digit's ink-box centre, 0 elsewhere; y["box"][i, :, r, c] =
    that box as (x1, y1, x2, y2) / 32 (pixel edges: x2 is one past the last ink column), zeros elsewhere. The
    format ``edgekd.metrics.detection_map50`` scores (cls head N x 11 x 4 x 4, box head N x 4 x 4 x 4)."""
    x_tr, y_tr, x_te, y_te, seed = _digit_task(spec, (2000, 500), _det_targets, count=(1, 3), size=(10, 16),
                                               canvas=DET_CANVAS, distinct_cells=DET_GRID)
    return DataSplits("mnist-det", x_tr, y_tr, x_te, y_te, 11, ("background", *DIGIT_NAMES),
                      _preprocessing("detection", seed, grid=DET_GRID, box_format="x1y1x2y2 normalised to 0..1",
                                     outputs={"cls": "class per grid cell, 0 = background", "box": "box per grid cell"}))


def _corners(placed: list[list[dict[str, Any]]]) -> np.ndarray:
    return np.array([o["box"] for items in placed for o in items], dtype=np.float32).reshape(len(placed), 4)


def digits_keypoints(spec: SourceSpec) -> DataSplits:
    """Keypoints: one digit (8-24 px) at a random position of a 32 x 32 canvas; y = (x1, y1, x2, y2) float32, the
    pixel coordinates (pixel centres, 0..31) of 2 landmarks: the top-left and bottom-right corners of the digit's
    ink box (first / last column and row with ink > 0.3)."""
    x_tr, y_tr, x_te, y_te, seed = _digit_task(spec, (1600, 400), _corners, count=(1, 1), size=(8, 24),
                                               canvas=KEYPOINT_CANVAS)
    return DataSplits("digits-keypoints", x_tr, y_tr, x_te, y_te, None, ("x1", "y1", "x2", "y2"),
                      _preprocessing("keypoints", seed, keypoints="2 landmarks (x, y) in pixels: ink box top-left, "
                                     "bottom-right", unit="pixel"))


#: the "normal" digits of digits-anomaly; with digit 0 alone even an untrained-for-long student separates it
#: perfectly (AUROC 1.0 measured), leaving nothing for distillation to show
NORMAL_DIGITS = (0, 1, 2, 3, 4)


def digits_anomaly(spec: SourceSpec) -> DataSplits:
    """Anomaly detection by reconstruction on sklearn's 8 x 8 digits: digits 0-4 are normal, 5-9 anomalies. Train
    holds only normal digits (y_train all 0, ~600); validation and test each hold a sixth of the normal digits
    (y = 0, ~150) and twice as many anomalies (y = 1), none seen in training. The reconstruction target is the input
    itself; y serves the AUROC of the per-sample reconstruction error."""
    from sklearn.datasets import load_digits

    seed = _seed(spec)
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    is_normal = np.isin(bunch.target, NORMAL_DIGITS)
    rng = np.random.default_rng([seed, 2])
    normal, other = rng.permutation(np.flatnonzero(is_normal)), rng.permutation(np.flatnonzero(~is_normal))
    n_hold = len(normal) // 6
    parts = {"val": normal[:n_hold], "test": normal[n_hold:2 * n_hold], "train": normal[2 * n_hold:]}
    anomalies = {"val": other[:2 * n_hold], "test": other[2 * n_hold:4 * n_hold]}

    def mixed(role: str) -> tuple[np.ndarray, np.ndarray]:
        idx = np.r_[parts[role], anomalies[role]]
        return x[idx], np.r_[np.zeros(n_hold, np.int64), np.ones(len(anomalies[role]), np.int64)]

    (x_val, y_val), (x_te, y_te) = mixed("val"), mixed("test")
    x_tr = x[parts["train"]]
    return DataSplits("digits-anomaly", x_tr, np.zeros(len(x_tr), np.int64), x_te, y_te, 2, ("normal", "anomaly"),
                      {"layout": "NCHW", "scale": 1 / 16, "task": "reconstruction", "seed": seed,
                       "normal_digits": list(NORMAL_DIGITS), "target": "the input itself",
                       "source": "sklearn.datasets.load_digits (0..16 ints)"},
                      x_val=x_val, y_val=y_val)


# ---------------------------------------------------------------------------------------------------------------
# 1-D signals


SIGNAL_FAMILIES = ("sine", "square", "sawtooth", "triangle")
SIGNAL_LENGTH = 128


def _waves(family: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Unit-amplitude waveforms of each family at ``phase`` (in cycles, N x L)."""
    frac = phase % 1.0
    shapes = {
        0: np.sin(2 * np.pi * phase),
        1: np.sign(np.sin(2 * np.pi * phase)),
        2: 2 * frac - 1,
        3: 2 * np.abs(2 * frac - 1) - 1,
    }
    out = np.zeros_like(phase)
    for k, wave in shapes.items():
        out[family == k] = wave[family == k]
    return out


def signal_synth(spec: SourceSpec) -> DataSplits:
    """Signal classification: N x 1 x 128 float32 series, class = waveform family (sine, square, sawtooth,
    triangle). Each series: 2-6 cycles over its length (frequency jitter), random phase, amplitude 0.5-1.5, a
    random offset of +-0.3 and Gaussian noise of standard deviation 0.35. 2000 series, 20 % test."""
    seed = _seed(spec)
    rng = np.random.default_rng([seed, 3])
    n = 2000
    family = rng.integers(0, len(SIGNAL_FAMILIES), n)
    cycles = rng.uniform(2, 6, (n, 1))
    t = np.arange(SIGNAL_LENGTH) / SIGNAL_LENGTH
    phase = cycles * t[None] + rng.random((n, 1))
    x = rng.uniform(0.5, 1.5, (n, 1)) * _waves(family[:, None].repeat(SIGNAL_LENGTH, 1), phase)
    x = x + rng.uniform(-0.3, 0.3, (n, 1)) + rng.normal(0, 0.35, x.shape)
    x_tr, y_tr, x_te, y_te = _split(x.astype(np.float32)[:, None], family.astype(np.int64), 0.2, seed=seed)
    return DataSplits("signal-synth", x_tr, y_tr, x_te, y_te, len(SIGNAL_FAMILIES), SIGNAL_FAMILIES,
                      {"layout": "NCL", "task": "classification", "seed": seed, "length": SIGNAL_LENGTH,
                       "source": "synthetic waveforms (edgekd.task_data.signal_synth)"})


#: UCR archive problems that aeon's and sktime's wheels ship (name -> folder/file stem in PKG/datasets/data/)
UCR_PROBLEMS = {"ucr-gunpoint": "GunPoint", "ucr-italypowerdemand": "ItalyPowerDemand", "ucr-arrowhead": "ArrowHead"}
UCR_PACKAGES = ("aeon", "sktime")


def ucr_folder(problem: str) -> tuple[str, Path] | None:
    """(package, the folder holding ``problem``'s .ts files) inside an installed aeon or sktime, found without
    importing either (``find_spec`` of a top-level package runs none of its code); None when neither is installed."""
    for package in UCR_PACKAGES:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            continue
        folder = Path(next(iter(found.submodule_search_locations))) / "datasets" / "data" / problem
        if (folder / f"{problem}_TRAIN.ts").is_file():
            return package, folder
    return None


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A ``.ts`` file (sktime / aeon format, equal-length series) as (N x D x L float32, N int64 class ids, class
    names in the order of the file's ``@classLabel`` line)."""
    classes: tuple[str, ...] = ()
    rows: list[list[list[float]]] = []
    names: list[str] = []
    in_data = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            words = line.split()
            if words[0].lower() == "@classlabel" and len(words) > 2 and words[1].lower() == "true":
                classes = tuple(words[2:])
            in_data = words[0].lower() == "@data"
            continue
        *dims, label = line.split(":")
        try:
            rows.append([[float(v) for v in dim.split(",")] for dim in dims])
        except ValueError:
            raise SourceError(f"line {number}: cannot read the series as numbers (missing values are not supported)",
                              where=str(path)) from None
        names.append(label.strip())
    lengths = {len(dim) for row in rows for dim in row}
    if not rows or len(lengths) != 1 or len({len(row) for row in rows}) != 1:
        raise SourceError("expected equal-length series after @data", where=str(path))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise SourceError(f"class label(s) {', '.join(unknown)} are not in the @classLabel line", where=str(path))
    y = np.array([classes.index(n) for n in names], dtype=np.int64)
    return np.array(rows, dtype=np.float32), y, classes


def _ucr(name: str) -> Callable[[SourceSpec], DataSplits]:
    problem = UCR_PROBLEMS[name]

    def load(spec: SourceSpec) -> DataSplits:
        spec.check_params(())
        found = ucr_folder(problem)
        if found is None:
            raise SourceError(f"builtin:{name} reads the UCR {problem} files that aeon's or sktime's wheel ships, and "
                              "neither is installed", where=spec.text,
                              hint="pip install --no-deps aeon (a 6.4 MB wheel; only its data files are read), "
                                   "or use builtin:signal-synth")
        package, folder = found
        x_tr, y_tr, classes = read_ts(folder / f"{problem}_TRAIN.ts")
        x_te, y_te, _ = read_ts(folder / f"{problem}_TEST.ts")
        return DataSplits(name, x_tr, y_tr, x_te, y_te, len(classes), classes,
                          {"layout": "NCL", "task": "classification", "split": "the UCR archive's train/test split",
                           "scale": "as shipped (UCR series are z-normalised)",
                           "source": f"{package} package: datasets/data/{problem}/{problem}_TRAIN.ts, _TEST.ts"})

    load.__doc__ = f"UCR {problem}, the archive's own train/test split, read from aeon's or sktime's data folder."
    return load


# ---------------------------------------------------------------------------------------------------------------
# tokens


TOKEN_LENGTH = 16
VOCAB = 32
PAD, DOLLAR, NOT = 0, 1, 2
NUMBER_TOKENS = np.arange(3, 13)  # "0".."9" number words
WORD_TOKENS = np.arange(13, VOCAB)  # ordinary words; 13..18 positive, 19..24 negative in tokens-seq
TAGS = ("O", "B-NUM", "I-NUM", "B-PRICE", "I-PRICE")
IGNORE = -100


def _token_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """N x 16 ids: lengths 8..16 (padded with 0), words and number spans of 1-3 tokens, a span preceded by "$"
    (id 1) half of the time."""
    x = np.full((n, TOKEN_LENGTH), PAD, dtype=np.int64)
    words = np.r_[WORD_TOKENS, NOT]
    for row in x:
        length, pos = int(rng.integers(8, TOKEN_LENGTH + 1)), 0
        draws = rng.random((TOKEN_LENGTH, 3))  # span kind, "$", span length: one row of draws per step
        while pos < length:
            u = draws[pos]
            if u[0] < 0.3 and (pos == 0 or not NUMBER_TOKENS[0] <= row[pos - 1] <= NUMBER_TOKENS[-1]):
                span = [DOLLAR] * int(u[1] < 0.5) + rng.integers(NUMBER_TOKENS[0], NUMBER_TOKENS[-1] + 1, 1 + int(u[2] * 3)).tolist()
            else:
                span = [int(words[int(u[1] * len(words))])]
            span = span[: length - pos]
            row[pos:pos + len(span)] = span
            pos += len(span)
    return x


def _number_tags(x: np.ndarray) -> np.ndarray:
    """Tags per token: a maximal run of number tokens is B-/I-PRICE after "$", B-/I-NUM otherwise; padding -100."""
    is_num = np.isin(x, NUMBER_TOKENS)
    prev = np.pad(x[:, :-1], ((0, 0), (1, 0)), constant_values=PAD)
    starts = is_num & ~np.isin(prev, NUMBER_TOKENS)
    span_start = np.maximum.accumulate(np.where(starts, np.arange(x.shape[1])[None], 0), axis=1)
    before = np.take_along_axis(np.pad(x, ((0, 0), (1, 0)), constant_values=PAD), span_start, axis=1)
    price = before == DOLLAR
    tags = np.zeros(x.shape, dtype=np.int64)
    tags[is_num & starts] = 1
    tags[is_num & ~starts] = 2
    tags[is_num & price] += 2
    tags[x == PAD] = IGNORE
    return tags


def _token_preprocessing(task: str, seed: int, **extra: Any) -> dict[str, Any]:
    return {"layout": "NL token ids (int64)", "task": task, "seed": seed, "vocab_size": VOCAB, "pad_id": PAD,
            "length": TOKEN_LENGTH, "source": "synthetic tokens (edgekd.task_data)", **extra}


def tokens_synth(spec: SourceSpec) -> DataSplits:
    """Token classification (NER-like): N x 16 int64 ids (vocab 32, 0 = padding, 1 = "$", 3..12 number words);
    y = N x 16 int64 tags O / B-NUM / I-NUM / B-PRICE / I-PRICE: a run of number tokens is a PRICE span when "$"
    precedes it, a NUM span otherwise (context decides, not the token); padding positions are -100 (ignored)."""
    seed = _seed(spec)
    x = _token_rows(np.random.default_rng([seed, 4]), 2500)
    x_tr, y_tr, x_te, y_te = _split(x, _number_tags(x), 0.2, seed=seed)
    return DataSplits("tokens-synth", x_tr, y_tr, x_te, y_te, len(TAGS), TAGS,
                      _token_preprocessing("token-classification", seed, ignore_index=IGNORE, class_axis=1))


SENTIMENTS = ("negative", "neutral", "positive")
POSITIVE, NEGATIVE = np.arange(13, 19), np.arange(19, 25)


def sentiment(x: np.ndarray) -> np.ndarray:
    """N int64 classes of tokens-seq: score = sum of +1 per positive word and -1 per negative word, a word right
    after "not" (id 2) counting with the opposite sign; class 0 / 1 / 2 for score < 0 / = 0 / > 0."""
    sign = np.where(np.isin(x, POSITIVE), 1, 0) - np.where(np.isin(x, NEGATIVE), 1, 0)
    negated = np.pad(x[:, :-1], ((0, 0), (1, 0)), constant_values=PAD) == NOT
    score = np.sum(np.where(negated, -sign, sign), axis=1)
    return (np.sign(score) + 1).astype(np.int64)


def tokens_seq(spec: SourceSpec) -> DataSplits:
    """Sequence classification (sentiment-like): N x 16 int64 ids as in tokens-synth; y = ``sentiment`` (3
    classes), 8000 rows. Negation makes it a context task: "not good" is negative."""
    seed = _seed(spec)
    x = _token_rows(np.random.default_rng([seed, 5]), 8000)
    x_tr, y_tr, x_te, y_te = _split(x, sentiment(x), 0.2, seed=seed)
    return DataSplits("tokens-seq", x_tr, y_tr, x_te, y_te, len(SENTIMENTS), SENTIMENTS,
                      _token_preprocessing("sequence-classification", seed))


TASK_DATASETS: dict[str, Callable[[SourceSpec], DataSplits]] = {
    "mnist-seg": mnist_seg,
    "mnist-det": mnist_det,
    "digits-keypoints": digits_keypoints,
    "digits-anomaly": digits_anomaly,
    "signal-synth": signal_synth,
    **{name: _ucr(name) for name in UCR_PROBLEMS},
    "tokens-synth": tokens_synth,
    "tokens-seq": tokens_seq,
}
