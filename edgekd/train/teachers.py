"""The trained builtin teachers (``builtin:digits-teacher``, ``builtin:mnist-teacher``): trained once, by ``fine_tune``.

The weights are cached under ``$EDGEKD_TEACHER_CACHE_DIR`` (default ``<cache_dir>/teachers``), in a file named by a
key over everything that decides them: the recipe (a FinetuneConfig), the torch version, and the source of the model
class, of the dataset's loader and of the trainer package. Changing any of those trains anew; stale weights are
never served. Training runs on this process alone, also under torchrun, so the weights never depend on the world size.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.progress import log
from edgekd.train import ddp
from edgekd.train.config import FinetuneConfig

#: the data source each builtin teacher trains on
DATA_SOURCES = {"digits": "builtin:digits", "mnist": "builtin:mnist5k"}
_TRAIN_PACKAGE = Path(__file__).resolve().parent
_TASK_FILES = [_TRAIN_PACKAGE.parent / "tasks.py", _TRAIN_PACKAGE.parent / "metrics.py"]


def recipe(seed: int, epochs: int) -> FinetuneConfig:
    """Plain cross-entropy, AdamW (no weight decay) with a one-cycle schedule peaking at 3e-3, batches of 64."""
    return FinetuneConfig(epochs=epochs, batch_size=64, lr=3e-3, schedule="onecycle", loss="ce", seed=seed)


def cache_folder() -> Path:
    from edgekd.models import cache_dir

    return Path(os.environ.get("EDGEKD_TEACHER_CACHE_DIR") or cache_dir() / "teachers")


def _source(fn: Callable[..., Any] | type) -> str:
    """``fn``'s source and that of the module-level functions it calls by name (one level: a loader's helpers)."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):  # no source (frozen install): the qualified name at least
        return f"{fn.__module__}.{fn.__qualname__}"
    module = sys.modules.get(fn.__module__)
    code = getattr(fn, "__code__", None)
    for name in sorted(set(code.co_names) if code is not None else ()):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == fn.__module__ and helper is not fn:
            try:
                text += inspect.getsource(helper)
            except OSError:
                text += name
    return text


def _data_source(dataset: str) -> str:
    """The loader of the teacher's data set; the whole data module when the loader cannot be found by name."""
    import edgekd.data
    import edgekd.task_data

    name = DATA_SOURCES.get(dataset, f"builtin:{dataset}").partition(":")[2]
    loader = getattr(edgekd.data, "_BUILTIN_DATA", {}).get(name) or edgekd.task_data.TASK_DATASETS.get(name)
    held_out = _source(edgekd.data.carve_validation) + repr(edgekd.data.VALIDATION_RULE)  # decides x_train too
    return (_source(loader) if loader is not None else Path(edgekd.data.__file__).read_text()) + held_out


def weights_key(name: str, architecture: type, dataset: str, config: FinetuneConfig, task: str = "") -> str:
    """16 hex digits over what decides a builtin teacher's weights (see the module docstring)."""
    h = hashlib.sha256()
    for part in (name, repr(config), torch.__version__, _source(architecture), _data_source(dataset), task):
        h.update(part.encode())
        h.update(b"\0")
    for path in [*sorted(_TRAIN_PACKAGE.glob("*.py")), *_TASK_FILES]:  # the trainer, and the task's losses and metrics
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def load_or_train(name: str, module: nn.Module, dataset: str, seed: int, epochs: int, task: str | None = None) -> Path:
    """Fill ``module`` (a fresh, seeded builtin teacher) with its trained weights, from the cache or by training
    (then cached) for ``task`` (a task preset; None = classification). Returns the cache file."""
    config = recipe(seed, epochs)
    path = cache_folder() / f"{name}-{weights_key(name, type(module), dataset, config, task or '')}.pt"
    if path.is_file():
        try:
            module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
            return path
        except Exception as exc:  # a damaged cache file is retrained, not an error
            log(f"builtin:{name}: cached weights {path} unreadable ({type(exc).__name__}); training again")
    _train(module, dataset, config, name, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(module.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def _train(module: nn.Module, dataset: str, config: FinetuneConfig, name: str, task: str | None = None) -> None:
    from edgekd.data import load_data
    from edgekd.train.trainer import RunOptions, train

    data = load_data(DATA_SOURCES.get(dataset, f"builtin:{dataset}"))
    data.task = task  # a preset name: resolved against the module by the trainer
    result = train(module, None, data, config, RunOptions(description=f"training builtin:{name}"), ddp.DistInfo())
    final = "—" if result.final_accuracy is None else f"{result.final_accuracy:.4g}"
    log(f"builtin:{name}: trained {result.steps} steps, final {task or 'classification'} metric {final}")
