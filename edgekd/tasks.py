"""Tasks: what each model output means, and how it is distilled, trained, scored and compared. Torch-free.

A task declares, per output: its kind, its class axis (logits), the KD loss against the teacher's output, the
loss against the labels, and the parity rule; and one metric for the whole model. Everything downstream asks the
resolved ``TaskSpec``: the trainer (losses), the quantize budget and the sensitivity pass (the metric and its
direction), the report, parity (argmax along each output's class axis, never over a flattened output) and
``edgekd check``. ``resolve`` checks the task against the model's outputs and the labels **before any training**
and names the output that does not fit.

Presets (``--task NAME`` or ``[task] name = ...`` in a recipe):

| task | outputs (kind, class axis) | KD | label loss | metric |
|---|---|---|---|---|
| classification | logits N x C | kl | ce | top-1 % |
| sequence-classification | logits N x C (token-id input) | kl | ce | top-1 % |
| segmentation | logits N x C x H x W, axis 1 | kl per pixel | ce per pixel | mIoU % |
| token-classification | logits N x C x L or N x L x C (axis from the labels) | kl per token | ce per token | token F1 % |
| keypoints / regression | regression | mse | smooth_l1 / mse | MAE (lower is better) |
| reconstruction | reconstruction (output vs input) | mse | mse vs input | reconstruction MSE, or AUROC % with anomaly labels |
| detection | cls logits N x (C+1) x G x G, axis 1; boxes N x 4 x G x G | kl + smooth_l1 | ce + smooth_l1 on object cells | mAP@0.5 % |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.errors import ConfigError
from edgekd.metrics import METRICS

#: output kinds and the losses that fit them
KINDS = ("class_logits", "regression", "boxes", "reconstruction")
SOFTMAX_KD = ("kl", "reverse_kl")
KD_LOSSES = ("kl", "reverse_kl", "mse", "l1", "smooth_l1", "cwd", "none")
LABEL_LOSSES = ("ce", "mse", "l1", "smooth_l1", "none")
#: label key meaning "the model's own input" (autoencoders)
INPUT_TARGET = "input"


@dataclass(frozen=True)
class OutputSpec:
    """One model output. ``class_axis`` is set for ``class_logits`` only (normalised to a positive axis of the
    batched output); ``target`` names the labels it is trained against (``y`` for one output, the output's name
    for several, ``input`` for reconstruction)."""

    name: str
    kind: str
    class_axis: int | None = None
    kd: str = "kl"
    loss: str = "ce"
    weight: float = 1.0
    target: str = "y"
    ignore_index: int = -100
    #: boxes: the label loss counts only cells whose class label (this output name) is not background
    mask_by: str | None = None

    @property
    def is_logits(self) -> bool:
        return self.kind == "class_logits"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    outputs: tuple[OutputSpec, ...]
    metric: str
    #: True when a larger metric value is better (top-1, mIoU); False for errors (MAE, reconstruction MSE)
    higher_is_better: bool = True
    unit: str = "%"
    metric_params: Mapping[str, Any] = field(default_factory=dict)
    #: where the task came from ("--task segmentation", "default: 1-D integer labels", a recipe file)
    origin: str = ""

    @property
    def single(self) -> OutputSpec:
        return self.outputs[0]

    @property
    def is_classification(self) -> bool:
        return self.name in ("classification", "sequence-classification")

    def drop(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference``, in the metric's units (positive = worse)."""
        return reference - value if self.higher_is_better else value - reference

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "higher_is_better": self.higher_is_better, "unit": self.unit,
                "outputs": [o.to_dict() for o in self.outputs], "origin": self.origin,
                **({"metric_params": dict(self.metric_params)} if self.metric_params else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "manifest.json task") -> TaskSpec:
        """Read back ``to_dict`` (a bundle's manifest); only known keys, only data."""
        try:
            outputs = tuple(OutputSpec(**{k: v for k, v in o.items() if k in _OUTPUT_FIELDS}) for o in data["outputs"])
            return cls(str(data["name"]), outputs, str(data["metric"]), bool(data["higher_is_better"]),
                       str(data.get("unit", "")), dict(data.get("metric_params") or {}), str(data.get("origin", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"the task record is malformed ({type(exc).__name__}: {exc})", where=where,
                              hint="rebuild the bundle with this edgekd") from None


@dataclass(frozen=True)
class _Preset:
    metric: str
    higher_is_better: bool
    unit: str
    outputs: tuple[dict[str, Any], ...]
    integer_input: bool = False


PRESETS: dict[str, _Preset] = {
    "classification": _Preset("top1", True, "%", ({"kind": "class_logits", "class_axis": 1, "kd": "kl", "loss": "ce"},)),
    "sequence-classification": _Preset("top1", True, "%", ({"kind": "class_logits", "class_axis": 1, "kd": "kl",
                                                            "loss": "ce"},), integer_input=True),
    "segmentation": _Preset("miou", True, "%", ({"kind": "class_logits", "class_axis": 1, "kd": "kl", "loss": "ce"},)),
    "token-classification": _Preset("token_f1", True, "%", ({"kind": "class_logits", "class_axis": "auto", "kd": "kl",
                                                             "loss": "ce"},), integer_input=True),
    "keypoints": _Preset("mae", False, "px", ({"kind": "regression", "kd": "mse", "loss": "smooth_l1"},)),
    "regression": _Preset("mae", False, "", ({"kind": "regression", "kd": "mse", "loss": "mse"},)),
    "reconstruction": _Preset("reconstruction_error", False, "", ({"kind": "reconstruction", "kd": "mse", "loss": "mse",
                                                                 "target": INPUT_TARGET},)),
    "detection": _Preset("map50", True, "%", (
        {"name": "cls", "kind": "class_logits", "class_axis": 1, "kd": "kl", "loss": "ce"},
        {"name": "box", "kind": "boxes", "kd": "smooth_l1", "loss": "smooth_l1", "mask_by": "cls"})),
}
TASKS = tuple(PRESETS)
#: metrics by name: (higher is better, unit in reports), from the one table of metric definitions
METRIC_DIRECTIONS = {name: (info.higher_is_better, "%" if info.unit == "fraction" else "")
                     for name, info in METRICS.items()}
_OUTPUT_FIELDS = ("name", "kind", "class_axis", "kd", "loss", "weight", "target", "ignore_index", "mask_by")
_OUTPUT_KEYS = ("kind", "class_axis", "kd", "loss", "weight", "target", "ignore_index", "mask_by")
_TASK_KEYS = ("name", "metric", "outputs", "metric_params")


def task_names_help() -> str:
    return ", ".join(TASKS)


# ---------------------------------------------------------------- resolution


def resolve(declared: Mapping[str, Any] | str | None, *, output_shapes: Sequence[tuple[str, tuple[int, ...]]],
            labels: Any, input_dtype: str = "float32", where: str = "--task") -> TaskSpec:
    """The task for a model with ``output_shapes`` (name, batched shape) trained on ``labels`` (an array, a dict of
    arrays by output name, or None), checked against both. ``declared``: a preset name, a ``[task]`` table, or None
    (classification when the model has one N x C output and the labels are 1-D class ids or absent)."""
    table = {"name": declared} if isinstance(declared, str) else dict(declared or {})
    unknown = set(table) - set(_TASK_KEYS)
    if unknown:
        raise ConfigError(f"unknown [task] key(s) {sorted(unknown)}", where=where, hint=f"allowed: {', '.join(_TASK_KEYS)}")
    name = table.get("name") or _default_task(output_shapes, labels, where)
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(str(name), TASKS, n=2)
        raise ConfigError(f"unknown task {name!r}", where=where,
                          hint=(f"did you mean {', '.join(close)}? " if close else "") + f"tasks: {task_names_help()}")
    preset = PRESETS[name]
    origin = where if table.get("name") else "default: one N x C output and 1-D integer labels"
    outputs = _resolve_outputs(name, preset, output_shapes, table.get("outputs") or {}, labels, where)
    metric = table.get("metric") or preset.metric
    if metric not in METRIC_DIRECTIONS:
        raise ConfigError(f"unknown metric {metric!r}", where=f"{where} metric", hint=f"metrics: {', '.join(METRIC_DIRECTIONS)}")
    if metric == "reconstruction_error" and labels is not None and not isinstance(labels, dict):
        metric = "auroc"  # anomaly labels (1 = anomaly) given: rank samples by reconstruction error
    if metric == "span_f1" and "tags" not in (table.get("metric_params") or {}):
        raise ConfigError("metric span_f1 needs the BIO name of each class", where=f"{where} metric_params",
                          hint='set [task] metric_params = { tags = ["O", "B-NUM", "I-NUM", ...] }')
    higher, unit = METRIC_DIRECTIONS[metric]
    if metric in ("mae", "keypoint_distance") and preset.unit:
        unit = preset.unit
    spec = TaskSpec(name, outputs, metric, higher, unit, dict(table.get("metric_params") or {}), origin)
    _check_labels(spec, labels, output_shapes, where)
    if preset.integer_input and not input_dtype.startswith("int"):
        raise ConfigError(f"task {name} takes token ids (an integer input), but the data's input is {input_dtype}",
                          where=where, hint="give int64 token ids (npz x as int64), or choose another task")
    return spec


def _default_task(output_shapes: Sequence[tuple[str, tuple[int, ...]]], labels: Any, where: str) -> str:
    shapes = ", ".join(f"{n}: {'x'.join(map(str, s))}" for n, s in output_shapes)
    one_2d = len(output_shapes) == 1 and len(output_shapes[0][1]) == 2
    labels_ok = labels is None or (isinstance(labels, np.ndarray) and labels.ndim == 1
                                   and np.issubdtype(labels.dtype, np.integer))
    if one_2d and labels_ok:
        return "classification"
    lab = _describe_labels(labels)
    raise ConfigError(f"the model's outputs ({shapes}) with labels {lab} are not a single-output classifier, and "
                      "no task was given", where=where,
                      hint=f"pass --task NAME (or [task] name = ... in the recipe); tasks: {task_names_help()}")


def _describe_labels(labels: Any) -> str:
    if labels is None:
        return "(none)"
    if isinstance(labels, dict):
        return "{" + ", ".join(f"{k}: {'x'.join(map(str, v.shape))} {v.dtype}" for k, v in labels.items()) + "}"
    return f"{'x'.join(map(str, labels.shape))} {labels.dtype}"


def _resolve_outputs(name: str, preset: _Preset, output_shapes: Sequence[tuple[str, tuple[int, ...]]],
                     declared: Mapping[str, Any], labels: Any, where: str) -> tuple[OutputSpec, ...]:
    if len(output_shapes) != len(preset.outputs):
        shapes = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in output_shapes)
        raise ConfigError(f"task {name} expects {len(preset.outputs)} output(s), the model returns "
                          f"{len(output_shapes)} ({shapes})", where=where,
                          hint="return the outputs the task lists (see docs/tasks.md), or choose another task")
    for key in declared:
        if key not in {n for n, _ in output_shapes}:
            raise ConfigError(f"[task.outputs.{key}]: the model has no output {key!r}", where=where,
                              hint=f"outputs: {', '.join(n for n, _ in output_shapes)}")
    specs = []
    for (out_name, shape), base in zip(output_shapes, preset.outputs, strict=True):
        over = dict(declared.get(out_name) or {})
        bad = set(over) - set(_OUTPUT_KEYS)
        if bad:
            raise ConfigError(f"unknown key(s) {sorted(bad)} for output {out_name!r}", where=f"{where} outputs.{out_name}",
                              hint=f"allowed: {', '.join(_OUTPUT_KEYS)}")
        values = {**{k: v for k, v in base.items() if k != "name"}, **over}
        target = values.get("target") or ("y" if len(output_shapes) == 1 else out_name)
        values["target"] = target
        values["class_axis"] = _class_axis(values, shape, _label_for(labels, target), out_name, where)
        specs.append(_output_spec(out_name, values, shape, where))
    return tuple(specs)


def _label_for(labels: Any, target: str) -> np.ndarray | None:
    if labels is None or target == INPUT_TARGET:
        return None
    if isinstance(labels, dict):
        return labels.get(target)
    return labels if target == "y" else None


def _class_axis(values: dict[str, Any], shape: tuple[int, ...], label: np.ndarray | None, out_name: str,
                where: str) -> int | None:
    if values.get("kind") != "class_logits":
        return None
    axis = values.get("class_axis", 1)
    ndim = len(shape)
    if axis == "auto":
        if label is None:
            axis = 1
        else:
            # the class axis is the one the labels do not have: N x C x L logits with N x L labels -> 1
            candidates = [a for a in range(1, ndim)
                          if tuple(shape[1:a]) + tuple(shape[a + 1:]) == tuple(label.shape[1:]) and label.ndim == ndim - 1]
            if len(candidates) != 1:
                raise ConfigError(f"cannot tell the class axis of output {out_name!r} ({'x'.join(map(str, shape))}) "
                                  f"from labels {'x'.join(map(str, label.shape))}", where=f"{where} outputs.{out_name}",
                                  hint=f"set [task.outputs.{out_name}] class_axis = 1 (or the axis holding the classes)")
            axis = candidates[0]
    if not isinstance(axis, int) or not -ndim < axis < ndim or axis % ndim == 0:
        raise ConfigError(f"class_axis {axis!r} is not a non-batch axis of output {out_name!r} "
                          f"({'x'.join(map(str, shape))})", where=f"{where} outputs.{out_name}")
    return axis % ndim


def _output_spec(out_name: str, values: dict[str, Any], shape: tuple[int, ...], where: str) -> OutputSpec:
    here = f"{where} outputs.{out_name}"
    kind = values.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"output {out_name!r}: unknown kind {kind!r}", where=here, hint=f"kinds: {', '.join(KINDS)}")
    kd, loss = values.get("kd", "none"), values.get("loss", "none")
    if kd not in KD_LOSSES:
        raise ConfigError(f"output {out_name!r}: unknown kd loss {kd!r}", where=here, hint=f"kd losses: {', '.join(KD_LOSSES)}")
    if loss not in LABEL_LOSSES:
        raise ConfigError(f"output {out_name!r}: unknown loss {loss!r}", where=here, hint=f"losses: {', '.join(LABEL_LOSSES)}")
    if kind != "class_logits" and (kd in SOFTMAX_KD or kd == "cwd" or loss == "ce"):
        what = f"kd = {kd!r}" if kd in SOFTMAX_KD or kd == "cwd" else "loss = 'ce'"
        raise ConfigError(f"output {out_name!r} is {kind} ({'x'.join(map(str, shape))}), but {what} is a softmax over "
                          "class logits: it does not fit this output", where=here,
                          hint="use kd = 'mse' / 'l1' / 'smooth_l1' for continuous outputs, or declare the output "
                               "kind = 'class_logits' with its class_axis if it holds logits")
    if kind == "class_logits" and (len(shape) < 2 or shape[values["class_axis"]] < 2):
        raise ConfigError(f"output {out_name!r} ({'x'.join(map(str, shape))}) has fewer than 2 classes on axis "
                          f"{values['class_axis']}", where=here, hint="set class_axis to the axis holding the classes")
    weight = values.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"output {out_name!r}: weight must be a number >= 0, got {weight!r}", where=here)
    return OutputSpec(out_name, kind, values["class_axis"], kd, loss, float(weight), values["target"],
                      int(values.get("ignore_index", -100)), values.get("mask_by"))


def _check_labels(spec: TaskSpec, labels: Any, output_shapes: Sequence[tuple[str, tuple[int, ...]]], where: str) -> None:
    """Labels must fit each output they train: class ids of the logits' shape without the class axis, or
    targets of the output's shape. Checked here, before any training."""
    if labels is None:
        return
    if isinstance(labels, dict) and len(spec.outputs) == 1 and spec.single.target == "y":
        raise ConfigError(f"labels are a dict ({', '.join(labels)}) but the model has one output", where=where,
                          hint="give one y array (npz key y)")
    shapes = dict(output_shapes)
    for out in spec.outputs:
        if out.target == INPUT_TARGET:
            continue
        label = _label_for(labels, out.target)
        if label is None:
            have = ", ".join(labels) if isinstance(labels, dict) else "y"
            raise ConfigError(f"no labels for output {out.name!r} (expected y_{out.name} / key {out.target!r})",
                              where=where, hint=f"labels given: {have}")
        shape = shapes[out.name]
        if out.is_logits:
            expected = tuple(shape[1:out.class_axis]) + tuple(shape[out.class_axis + 1:])
            if tuple(label.shape[1:]) != expected:
                raise ConfigError(f"labels for output {out.name!r} have shape {'x'.join(map(str, label.shape))}; its "
                                  f"logits {'x'.join(map(str, shape))} (classes on axis {out.class_axis}) need N"
                                  f"{''.join('x' + str(d) for d in expected)} class ids", where=where)
            if not (np.issubdtype(label.dtype, np.integer) or np.all(label == np.round(label))):
                raise ConfigError(f"labels for output {out.name!r} must be integer class ids, got {label.dtype}",
                                  where=where, hint="a continuous target needs a regression task (--task regression)")
            valid = label[label != out.ignore_index]
            n_classes = shape[out.class_axis]
            if valid.size and (valid.min() < 0 or valid.max() >= n_classes):
                raise ConfigError(f"labels for output {out.name!r} hold class ids {int(valid.min())}..{int(valid.max())} "
                                  f"but the output has {n_classes} classes", where=where,
                                  hint=f"class ids must be 0..{n_classes - 1} (or {out.ignore_index} to ignore)")
        elif tuple(label.shape[1:]) != tuple(shape[1:]):
            raise ConfigError(f"targets for output {out.name!r} have shape {'x'.join(map(str, label.shape))} but the "
                              f"output is {'x'.join(map(str, shape))}", where=where,
                              hint="targets of a regression output have the output's shape")


# ---------------------------------------------------------------- model outputs by name


def output_names(out: Any, task_hint: str | None = None) -> list[str]:
    """Names of a model's outputs in order: dict keys, ``logits`` for one tensor, ``output<i>`` for a tuple (a
    detection preset's names when the task is known)."""
    if isinstance(out, Mapping):
        return [str(k) for k in out]
    if isinstance(out, (tuple, list)):
        preset = PRESETS.get(task_hint or "")
        if preset is not None and len(preset.outputs) == len(out) and all("name" in o for o in preset.outputs):
            return [o["name"] for o in preset.outputs]
        return [f"output{i}" for i in range(len(out))]
    return ["logits"]



# ---------------------------------------------------------------- the task metric (one judge: edgekd.metrics)


def label_of(labels: Any, out: OutputSpec) -> Any:
    return _label_for(labels, out.target)


def task_metric(spec: TaskSpec, outputs: Mapping[str, np.ndarray], labels: Any, x: np.ndarray | None = None) -> float | None:
    """The task's metric on ``outputs`` (by output name) against ``labels``, in the task's unit (fractions as %);
    None when the data has no labels the metric needs."""
    from edgekd import metrics

    first = spec.outputs[0]
    out = np.asarray(outputs[first.name])
    name = spec.metric
    if name == "reconstruction_error":
        return None if x is None else float(metrics.reconstruction_error(out, x))
    if labels is None:
        return None
    if name == "auroc":
        if x is None or len(np.unique(labels)) < 2:
            return None  # AUROC needs normal and anomalous samples (a training split holds only normal ones)
        return 100.0 * float(metrics.auroc(metrics.per_sample_reconstruction_error(out, x), labels))
    if name == "map50":
        box = spec.outputs[1]
        return 100.0 * float(metrics.detection_map50(out, np.asarray(outputs[box.name]), label_of(labels, first),
                                                     label_of(labels, box), **dict(spec.metric_params)))
    label = label_of(labels, first)
    if label is None:
        return None
    axis = first.class_axis or 1
    if name == "top1":
        return 100.0 * float(metrics.top1(out, label, class_axis=axis, ignore_index=first.ignore_index))
    if name == "pixel_accuracy":
        return 100.0 * float(metrics.pixel_accuracy(out, label, class_axis=axis, ignore_index=first.ignore_index))
    if name == "miou":
        return 100.0 * float(metrics.miou(out, label, num_classes=out.shape[axis], class_axis=axis,
                                          ignore_index=first.ignore_index))
    if name == "span_f1":
        return 100.0 * float(metrics.span_f1(out, label, class_axis=axis, ignore_index=first.ignore_index,
                                             **dict(spec.metric_params)))
    if name == "token_f1":
        return 100.0 * float(metrics.token_f1(out, label, class_axis=axis, ignore_index=first.ignore_index,
                                              **dict(spec.metric_params)))
    if name == "mae":
        return float(metrics.mae(out, label))
    if name == "keypoint_distance":
        return float(metrics.mean_keypoint_distance(out, label))
    if name == "rmse":
        return float(metrics.rmse(out, label))
    if name == "pck":
        return 100.0 * float(metrics.pck(out, label, **{"threshold": 2.0, **dict(spec.metric_params)}))
    raise ConfigError(f"metric {name!r} has no evaluator", where="task.metric")


def subset(labels: Any, idx: np.ndarray) -> Any:
    """Labels (an array or a dict of arrays) at sample indices ``idx``."""
    if labels is None:
        return None
    if isinstance(labels, dict):
        return {k: v[idx] for k, v in labels.items()}
    return labels[idx]

