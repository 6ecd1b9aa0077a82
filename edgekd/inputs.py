"""A model's inputs: names, dtypes and per-sample shapes, and the one place data becomes model inputs.

A single-input model's batch is one numpy array (the graph input is called ``input``); a model with several inputs
(``forward(img, meta)``, token ids + attention mask) gets a ``ModelInputs``: one array per input name, in the
forward signature's order, indexed like one array (``len(x)``, ``x[i:j]``, ``x[idx]`` slice every input alike), so
splitting, carving and batching code does not care how many inputs there are.

Conversions, one rule: integer inputs (token ids, masks, indices) stay int64, everything else is float32. Files:

- data (``npz:``): ``x_<name>`` per input (or ``x_train_<name>`` / ``x_test_<name>`` / ``x_val_<name>``), plus ``y``;
- golden.npz: ``input#<name>`` per input (a single-input model keeps ``input``);
- eval.npz: ``x_<name>`` per input (a single-input model keeps ``x``).

Torch-free (the runtime and ``edgekd check`` use it); the torch helpers import torch when called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import SourceError

#: the graph input name of a single-input model
SINGLE_NAME = "input"
#: split names that cannot be input names (``x_train`` is the training split, not an input called "train")
RESERVED = ("train", "test", "val")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, dtype (``float32`` or ``int64``) and shape without the batch axis."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def model_dtype(dtype: Any) -> np.dtype:
    """The dtype a model takes for data of ``dtype``: integers (token ids, masks) int64, everything else float32."""
    return np.dtype(np.int64 if np.issubdtype(np.dtype(dtype), np.integer) else np.float32)


def as_model_array(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=model_dtype(x.dtype))


class ModelInputs:
    """A batch of several named inputs with one sample count, indexed like one array."""

    __slots__ = ("arrays",)

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays: dict[str, np.ndarray] = {str(k): np.asarray(v) for k, v in arrays.items()}
        counts = {k: len(v) for k, v in self.arrays.items()}
        if len(set(counts.values())) > 1:
            raise SourceError("the inputs have different sample counts: "
                              + ", ".join(f"{k} {n}" for k, n in counts.items()),
                              hint="every input needs one row per sample (the same N)")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, idx: Any) -> ModelInputs:
        return ModelInputs({k: v[idx] for k, v in self.arrays.items()})

    def __repr__(self) -> str:
        return "ModelInputs(" + ", ".join(f"{k}={list(v.shape)} {v.dtype}" for k, v in self.arrays.items()) + ")"

    def specs(self) -> tuple[InputSpec, ...]:
        return tuple(InputSpec(k, str(model_dtype(v.dtype)), tuple(v.shape[1:])) for k, v in self.arrays.items())


Batch = np.ndarray | ModelInputs


def is_multi(x: Any) -> bool:
    return isinstance(x, ModelInputs)


def names_of(x: Batch) -> tuple[str, ...]:
    return x.names if isinstance(x, ModelInputs) else (SINGLE_NAME,)


def specs_of(x: Batch) -> tuple[InputSpec, ...]:
    """Each input's name, dtype and per-sample shape (a single array is the input ``input``)."""
    if isinstance(x, ModelInputs):
        return x.specs()
    return (InputSpec(SINGLE_NAME, str(model_dtype(x.dtype)), tuple(x.shape[1:])),)


def sample_shape(x: Batch) -> Any:
    """``x.shape[1:]`` for one array; for several inputs a dict of each input's shape."""
    if isinstance(x, ModelInputs):
        return {k: tuple(v.shape[1:]) for k, v in x.arrays.items()}
    return tuple(x.shape[1:])


def repeat_first(x: Batch, n: int) -> Batch:
    """The first sample repeated ``n`` times (a latency batch)."""
    if isinstance(x, ModelInputs):
        return ModelInputs({k: np.repeat(v[:1], n, axis=0) for k, v in x.arrays.items()})
    return np.repeat(x[:1], n, axis=0)


def feeds(x: Batch, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Runtime feeds for graph inputs ``names``: a single array goes to the only input; several by name. Each array
    in the model's dtype."""
    names = list(names)
    if not isinstance(x, ModelInputs):
        if len(names) != 1:
            raise SourceError(f"the model has {len(names)} inputs ({', '.join(names)}) but the data is one array",
                              hint="give one array per input: npz keys x_<name>, or a dict {name: array}")
        return {names[0]: as_model_array(x)}
    missing = [n for n in names if n not in x.arrays]
    if missing or len(names) != len(x.arrays):
        raise SourceError(f"the model's inputs are {', '.join(names)} but the data has {', '.join(x.names)}"
                          + (f" (missing: {', '.join(missing)})" if missing else ""),
                          hint="name each data array after a model input (npz keys x_<name>)")
    return {n: as_model_array(x.arrays[n]) for n in names}


def run_batched(infer: Callable[[dict[str, np.ndarray]], Any], input_specs: Any, x: Batch,
                output_names: Iterable[str], batch: int = 256) -> dict[str, np.ndarray]:
    """Every output of ``infer`` on ``x`` by name, in chunks; a fixed-batch artifact (``input_specs[0].shape[0]`` an
    int) runs one batch at a time. ``input_specs``: the runner's inputs (IOSpec-like: ``name``, ``shape``)."""
    first = input_specs[0].shape[0] if input_specs[0].shape else None
    step = first if isinstance(first, int) else batch
    names = [s.name for s in input_specs]
    parts = [infer(feeds(x[i: i + step], names)) for i in range(0, len(x), step)]
    outs = list(output_names)
    if parts and not isinstance(parts[0], Mapping):  # a hot-path runner's positional outputs
        return {o: np.concatenate([p[k] for p in parts]) for k, o in enumerate(outs)}
    return {o: np.concatenate([p[o] for p in parts]) for o in outs}


# ---------------------------------------------------------------- files


def to_npz(x: Batch, key: str, sep: str) -> dict[str, np.ndarray]:
    """The arrays ``x`` is stored as: ``{key: x}`` for one array, ``{key + sep + name: ...}`` for several."""
    if isinstance(x, ModelInputs):
        return {f"{key}{sep}{k}": v for k, v in x.arrays.items()}
    return {key: x}


def from_npz(arrays: Mapping[str, np.ndarray], key: str, sep: str, *, where: str = "") -> Batch | None:
    """The inverse of ``to_npz`` (None when neither ``key`` nor ``key<sep>NAME`` is there)."""
    if key in arrays:
        return arrays[key]
    named = {k[len(key) + len(sep):]: v for k, v in arrays.items() if k.startswith(key + sep) and k != key + sep}
    # x_test / x_train_img are splits of a data file, not inputs called "test" / "train_img"
    named = {k: v for k, v in named.items() if k not in RESERVED and not k.startswith(tuple(r + "_" for r in RESERVED))}
    if not named:
        return None
    try:
        return ModelInputs(named)
    except SourceError as exc:
        raise SourceError(exc.message, where=where or None, hint=exc.hint) from None


def group_npz_inputs(arrays: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """A data file's ``x_<name>`` arrays (and ``x_train_<name>`` / ``x_test_<name>`` / ``x_val_<name>``) as one
    ``ModelInputs`` per split, under ``x`` / ``x_train`` / ``x_test`` / ``x_val``; other keys stay as they are."""
    out: dict[str, Any] = {}
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        for split in ("x_train_", "x_test_", "x_val_", "x_"):
            rest = key[len(split):]
            if key.startswith(split) and rest and key not in ("x_train", "x_test", "x_val"):
                grouped.setdefault(split.rstrip("_"), {})[rest] = value
                break
        else:
            out[key] = value
    for split, named in grouped.items():
        if split in out:
            raise SourceError(f"has both {split} and {', '.join(f'{split}_{k}' for k in named)}", where=where,
                              hint=f"one {split} array for a single-input model, or {split}_<input> per input")
        out[split] = checked(named, where=where, role=split)
    if grouped:
        names = {split: tuple(out[split].names) for split in grouped}
        if len({tuple(sorted(n)) for n in names.values()}) > 1:
            raise SourceError("the splits name different inputs: "
                              + "; ".join(f"{s}: {', '.join(n)}" for s, n in names.items()), where=where,
                              hint="every split needs one array per model input, with the same names")
    return out


def checked(arrays: Mapping[str, Any], *, where: str, role: str = "x") -> ModelInputs:
    """A dict of per-input arrays, validated: names, at least (N, ...) numeric and finite, one sample count.
    Integer arrays stay int64, all else float32."""
    if not arrays:
        raise SourceError(f"{role} is an empty dict", where=where, hint="one array per model input")
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        name = str(name)
        key = f"{role}_{name}"
        if not name.isidentifier() or name in RESERVED:
            raise SourceError(f"input name {name!r} ({key}) is not usable", where=where,
                              hint="name inputs like Python identifiers, not train/test/val: x_img, x_mask")
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if arr.ndim < 1 or len(arr) == 0:
            raise SourceError(f"{key} must be an array of shape (N, ...), got {list(arr.shape)}", where=where)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise SourceError(f"{key} has non-numeric dtype {arr.dtype}", where=where,
                              hint="float arrays for features, integer arrays for token ids and masks")
        if arr.ndim == 1:
            arr = arr[:, None]  # one scalar per sample: a (N, 1) feature
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise SourceError(f"{key} contains NaN or inf", where=where)
        out[name] = as_model_array(arr)
    counts = {k: len(v) for k, v in out.items()}
    if len(set(counts.values())) > 1:
        raise SourceError(f"the inputs of {role} have different sample counts: "
                          + ", ".join(f"{role}_{k} {n}" for k, n in counts.items()), where=where,
                          hint="every input needs one row per sample (the same N)")
    return ModelInputs(out)


# ---------------------------------------------------------------- the model's side


def forward_names(module: Any) -> tuple[str, ...] | None:
    """The positional parameter names of ``module.forward`` (None when it takes ``*args``)."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    return tuple(names)


def required_inputs(module: Any) -> int | None:
    """How many positional inputs ``module.forward`` needs (no default value); None for ``*args``."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return None
    return sum(1 for p in sig.parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


def order_for(module: Any, x: Batch, role: str, where: str, names: tuple[str, ...] | None = None) -> Batch:
    """``x`` with its inputs in the model's order: ``names`` given by the user, else the forward signature. Every
    mismatch (a missing or unknown input, a single array for a multi-input model) is an error naming it."""
    order = names or forward_names(module)
    signature = order or ()
    need = required_inputs(module)
    if not isinstance(x, ModelInputs):
        if need is not None and need > 1:
            params = ", ".join((order or ())[:need])
            raise SourceError(f"{role} takes {need} inputs ({params}) but the data is one array", where=where,
                              hint="give one array per input: npz keys " + ", ".join(f"x_{n}" for n in (order or ())[:need])
                              + ", or a dict {name: array} in the Python API; nothing was trained")
        return x
    if order is None:
        return x  # forward(*args): the data's order
    if names is None:  # the parameters the data must fill: every required one, and any optional one it names
        order = order[: max(len(x.names), need or 0)]
    if sorted(order) != sorted(x.names):
        missing = [n for n in order if n not in x.arrays]
        unknown = [n for n in x.names if n not in order]
        params = ", ".join(order)
        later = [n for n in unknown if n in signature]  # a later optional parameter, with one before it left out
        hint = ("model(*inputs) passes inputs by position: give every forward() parameter up to the last one used "
                f"({', '.join('x_' + n for n in signature[: max(signature.index(n) for n in later) + 1])})" if later
                else "name each data array x_<input> after the forward() parameter, or pass input_names= to say "
                     "which array is which")
        raise SourceError(f"{role}'s inputs are ({params}) but the data has " + ", ".join(f"x_{n}" for n in x.names)
                          + (f"; missing: {', '.join('x_' + n for n in missing)}" if missing else "")
                          + (f"; {'after a parameter left out' if later else 'not an input'}: "
                             f"{', '.join('x_' + n for n in unknown)}" if unknown else ""),
                          where=where, hint=hint + "; nothing was trained")
    if need is not None and need > len(order):
        raise SourceError(f"{role} needs {need} inputs but the data has {len(order)}", where=where,
                          hint="give one array per forward() parameter; nothing was trained")
    return ModelInputs({n: x.arrays[n] for n in order})


def to_torch(x: Batch, device: Any = None) -> Any:
    """A batch as torch takes it: one tensor, or a ``TensorInputs`` for several inputs (each in its model dtype)."""
    import torch

    if isinstance(x, ModelInputs):
        return TensorInputs(tuple(torch.from_numpy(as_model_array(v)) for v in x.arrays.values()), x.names).to(device)
    t = torch.from_numpy(as_model_array(x))
    return t.to(device) if device is not None else t


class TensorInputs:
    """Several input tensors indexed like one: ``xb[idx]``, ``xb.to(device)``, ``len(xb)``; ``call`` unpacks them."""

    __slots__ = ("names", "tensors")

    def __init__(self, tensors: tuple[Any, ...], names: tuple[str, ...]) -> None:
        self.tensors = tensors
        self.names = names

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, idx: Any) -> TensorInputs:
        return TensorInputs(tuple(t[idx] for t in self.tensors), self.names)

    def to(self, device: Any) -> TensorInputs:
        return self if device is None else TensorInputs(tuple(t.to(device) for t in self.tensors), self.names)

    @property
    def shape(self) -> Any:
        return self.tensors[0].shape  # the batch axis, for code that reads len/shape[0]

    @property
    def device(self) -> Any:
        return self.tensors[0].device


def args(xb: Any) -> tuple[Any, ...]:
    """The positional arguments of ``model(*args(xb))``."""
    return xb.tensors if isinstance(xb, TensorInputs) else (xb,)


def call(module: Any, xb: Any) -> Any:
    """``module(*inputs)``: the one way a batch is fed to a torch model."""
    return module(*args(xb))
