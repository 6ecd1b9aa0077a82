"""Model sources: ``builtin:NAME``, ``torchvision:NAME``, ``timm:NAME``, ``py:pkg.mod:factory``,
and saved files (``.pt`` checkpoints loaded with ``weights_only=True``, ``.pt2`` torch.export programs, ``.onnx``
files run by ONNX Runtime) and ``onnx2torch:model.onnx`` (a float ONNX graph converted to a trainable module; see
``edgekd.onnx_source``).

Security: a ``.pt``/``.pt2`` file never runs code (``weights_only=True`` / torch.export), and the architecture a
checkpoint names for itself is used only when it is a ``builtin:``/``torchvision:``/``timm:`` name (shown in the log).
A ``py:`` source imports and runs the named Python code: it is taken only from the user (CLI, build file, API).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import SourceError
from edgekd.registry import Registry
from edgekd.sources import SourceSpec, import_callable, parse_source


@dataclass
class LoadedModel:
    module: nn.Module
    name: str
    source: str
    input_shape: tuple[int, ...] | None = None  # (C, H, W) when the source knows it
    num_classes: int | None = None
    #: True when the model takes only ``input_shape`` (builtin demo models, fixed-size programs, ``?input_size=``);
    #: False when it is the pretrained default of a model that takes other sizes (torchvision/timm CNNs):
    #: the data's size then wins, and ``check_fits_data`` proves the model runs on it
    shape_required: bool = True


# ---------------------------------------------------------------- builtin demo models


class DemoTeacher(nn.Module):
    """4x conv-BN-ReLU + fc256. BatchNorm statistics make data-free distillation possible."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, w), *block(w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), *block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * w, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DemoStudent(nn.Module):
    """conv8 - conv16 - fc32: ~3.7k parameters on 8x8 digits, ~26.7k on 28x28 MNIST."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        spatial = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * spatial * spatial, 32), nn.ReLU(), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResidualCNN(nn.Module):
    """A small CNN with a skip Add: exercises residual quantization and HLS Add."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
        )
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.act(x + self.body(x)))


class TinyMLP(nn.Module):
    def __init__(self, in_features: int = 64, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# name -> (factory, dataset the input shape comes from, trained?)
_DATASET_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}
BUILTIN_MODELS: dict[str, tuple[str, str, bool]] = {
    "digits-teacher": ("teacher", "digits", True),
    "digits-student": ("student", "digits", False),
    "digits-residual": ("residual", "digits", False),
    "digits-mlp": ("mlp", "digits", False),
    "mnist-teacher": ("teacher", "mnist", True),
    "mnist-student": ("student", "mnist", False),
    "mnist-residual": ("residual", "mnist", False),
}


def _build_builtin(arch: str, dataset: str) -> nn.Module:
    c, h, _ = _DATASET_SHAPES[dataset]
    if arch == "teacher":
        return DemoTeacher(c, 10)
    if arch == "student":
        return DemoStudent(c, 10, image_size=h)
    if arch == "residual":
        return ResidualCNN(c, 10)
    if arch == "mlp":
        return TinyMLP(c * h * h, 32, 10)
    raise AssertionError(arch)


def cache_dir() -> Path:
    root = os.environ.get("EDGEKD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "edgekd")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


#: the task each built-in task dataset trains its teacher for (the pairs: edgekd/task_models.TASK_PAIRS)
TASK_OF_DATASET = {"mnist-seg": "segmentation", "mnist-det": "detection", "digits-keypoints": "keypoints",
                   "digits-anomaly": "reconstruction", "signal-synth": "classification",
                   "tokens-synth": "token-classification", "tokens-seq": "sequence-classification"}


def _task_builtins() -> dict[str, tuple[str, bool]]:
    """``builtin:seg-teacher`` ...: name -> (dataset, trained?) for every built-in task pair."""
    from edgekd.task_models import TASK_PAIRS

    names: dict[str, tuple[str, bool]] = {}
    for dataset, (teacher, student, _shape, _dtype) in TASK_PAIRS.items():
        names[teacher], names[student] = (dataset, True), (dataset, False)
    return names


def _load_task_builtin(spec: SourceSpec, dataset: str, trained: bool) -> LoadedModel:
    from edgekd.task_models import TASK_PAIRS, build_arch

    spec.check_params(("seed", "epochs") if trained else ("seed",))
    seed = spec.int_param("seed", 0)
    torch.manual_seed(seed)
    module = build_arch(spec.arg)
    if trained:  # trained once for its task on its dataset, cached like the digits teacher
        from edgekd.train.teachers import load_or_train

        load_or_train(spec.arg, module, dataset, seed, spec.int_param("epochs", 15), task=TASK_OF_DATASET[dataset])
    module.eval()
    shape = TASK_PAIRS[dataset][2]
    return LoadedModel(module, spec.arg, spec.text, shape)


def _load_builtin(spec: SourceSpec) -> LoadedModel:
    tasks = _task_builtins()
    if spec.arg in tasks:
        return _load_task_builtin(spec, *tasks[spec.arg])
    if spec.arg not in BUILTIN_MODELS:
        import difflib

        known = [*BUILTIN_MODELS, *tasks]
        close = difflib.get_close_matches(spec.arg, known, n=3)
        raise SourceError(
            f"unknown builtin model {spec.arg!r}; known: {', '.join(known)}",
            where=spec.text, hint=f"did you mean {', '.join(close)}?" if close else None,
        )
    arch, dataset, trained = BUILTIN_MODELS[spec.arg]
    spec.check_params(("seed", "epochs") if trained else ("seed",))
    seed = spec.int_param("seed", 0)
    torch.manual_seed(seed)
    module = _build_builtin(arch, dataset)
    if trained:  # trained once by fine_tune, cached by a key over recipe and code (edgekd/train/teachers.py)
        from edgekd.train.teachers import load_or_train

        load_or_train(spec.arg, module, dataset, seed, spec.int_param("epochs", 12 if dataset == "digits" else 8))
    module.eval()
    return LoadedModel(module, spec.arg, spec.text, _DATASET_SHAPES[dataset], 10)


#: query parameters edgekd consumes itself (never passed to a model factory)
_OWN_PARAMS = ("seed", "input_size")


def _input_size(spec: SourceSpec, channels: int) -> tuple[int, ...] | None:
    """``?input_size=224`` (square, the model's channels), ``HxW`` or ``CxHxW``: the size the user fixes."""
    text = spec.params.get("input_size")
    if text is None:
        return None
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or len(dims) > 3 or min(dims) < 1:
        raise SourceError(f"input_size={text!r} is not a size", where=spec.text,
                          hint="use input_size=224 (square), input_size=HxW or input_size=CxHxW")
    if len(dims) == 1:
        dims = (dims[0], dims[0])
    return dims if len(dims) == 3 else (channels, *dims)


def _kwargs(spec: SourceSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.params.items():
        if key in _OWN_PARAMS:
            continue
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def _load_torchvision(spec: SourceSpec) -> LoadedModel:
    import torchvision

    if spec.arg not in torchvision.models.list_models():
        import difflib

        close = difflib.get_close_matches(spec.arg, torchvision.models.list_models(), n=3)
        raise SourceError(f"torchvision has no model {spec.arg!r}", where=spec.text,
                          hint=f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()")
    torch.manual_seed(spec.int_param("seed", 0))
    # weights=None: nothing is downloaded; random weights are fine for latency work.
    module = _call_user(functools.partial(torchvision.models.get_model, spec.arg, weights=None),
                        f"torchvision model {spec.arg}", spec.text,
                        hint=f"query parameters are passed to the model's constructor: see help(torchvision.models.{spec.arg})",
                        **_kwargs(spec)).eval()
    fixed = _input_size(spec, 3)
    size = 299 if spec.arg.startswith("inception") else 224
    return LoadedModel(module, spec.arg, spec.text, fixed or (3, size, size), getattr(module, "num_classes", None),
                       shape_required=fixed is not None)


def _load_timm(spec: SourceSpec) -> LoadedModel:
    try:
        import timm
    except ImportError:
        raise SourceError("timm is not installed", where=spec.text, hint="pip install 'edgekd[timm]'") from None
    if not timm.list_models(spec.arg) or any(c in spec.arg for c in "*?["):
        import difflib

        close = difflib.get_close_matches(spec.arg, timm.list_models(), n=3)
        raise SourceError(f"timm has no model {spec.arg!r}", where=spec.text,
                          hint=f"did you mean {', '.join(close)}?" if close else "see timm.list_models('pattern*')")
    torch.manual_seed(spec.int_param("seed", 0))
    module = _call_user(functools.partial(timm.create_model, spec.arg, pretrained=False), f"timm model {spec.arg}", spec.text,
                        hint="query parameters are passed to timm.create_model as keyword arguments",
                        **_kwargs(spec)).eval()
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    shape = tuple(cfg.get("input_size", (3, 224, 224)))
    fixed = _input_size(spec, int(shape[0]))
    return LoadedModel(module, spec.arg, spec.text, fixed or shape, getattr(module, "num_classes", None),
                       shape_required=fixed is not None)


def _call_user(fn: Any, what: str, where: str, hint: str | None = None, **kwargs: Any) -> Any:
    """Call a model factory; its exceptions become a SourceError naming the factory and the failing line."""
    try:
        return fn(**kwargs)
    except SourceError:
        raise
    except Exception as exc:
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
        at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        args = f" with {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}" if kwargs else ""
        raise SourceError(f"{what}{args} raised {type(exc).__name__}: {exc}{at}", where=where,
                          hint=hint) from exc


def _load_py(spec: SourceSpec) -> LoadedModel:
    spec_size = spec.params.get("input_size")
    factory = import_callable(spec.arg, where=spec.text)
    torch.manual_seed(spec.int_param("seed", 0))
    if callable(factory) and not isinstance(factory, nn.Module):
        module = _call_user(factory, spec.arg, spec.text, hint="query parameters (?key=value) are passed to "
                            "the factory as keyword arguments", **_kwargs(spec))
    else:
        module = factory
    if not isinstance(module, nn.Module):
        raise SourceError(f"{spec.arg} returned {type(module).__name__}, expected a torch.nn.Module", where=spec.text)
    fixed = _input_size(spec, 3) if spec_size is not None else None
    return LoadedModel(module.eval(), spec.arg.rpartition(":")[2], spec.text, fixed)


def _sniff(path: Path) -> str:
    """What a saved file is: "export" (torch.export), "torchscript", "torch" (torch.save) or "unknown"."""
    import zipfile

    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (OSError, zipfile.BadZipFile):
            return "unknown"
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "export"
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "unknown"
    with path.open("rb") as fh:
        head = fh.read(2)
    return "torch" if head[:1] == b"\x80" else "unknown"  # legacy (non-zip) torch.save: a pickle


def _load_program(path: Path, spec: SourceSpec) -> LoadedModel:
    import logging

    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)  # torch logs the whole deserialization traceback as warnings
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise SourceError(f"not a torch.export program: {exc}", where=str(path),
                          hint="save with torch.export.save(torch.export.export(model, example), 'model.pt2')") from None
    finally:
        logger.setLevel(level)
    user_inputs = set(program.graph_signature.user_inputs)
    shapes = [tuple(n.meta["val"].shape) for n in program.graph.nodes
              if n.op == "placeholder" and n.name in user_inputs and hasattr(n.meta.get("val"), "shape")]
    static = [s for s in shapes if s and isinstance(s[0], int)]
    if static:
        raise SourceError(f"the program was exported with a fixed batch size {static[0][0]} (input shape "
                          f"{list(static[0])}); edgekd runs it on batches of calibration, training and test data",
                          where=str(path), hint="export with a dynamic batch axis: torch.export.export(model, (x,), "
                          "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}) with an example batch of 2 or more")
    module = program.module()
    # ExportedProgram.module() replaces train()/eval() with methods that raise; every pass and the exporter call
    # them. The exported graph has its train/eval behaviour (BatchNorm, dropout) baked in already.
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    shape = tuple(shapes[0][1:]) if len(shapes) == 1 and all(isinstance(d, int) for d in shapes[0][1:]) else None
    return LoadedModel(module.eval(), path.stem, spec.text, shape or None)


#: keys under which training scripts commonly nest the weights (Lightning, timm, torchvision references)
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "net", "module")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap_state(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """A plain state_dict, or the one nested inside a training checkpoint; DDP's ``module.`` prefix removed."""
    if not _is_tensor_dict(obj):
        found = [k for k in _NESTED_KEYS if _is_tensor_dict(obj.get(k))]
        if not found:
            keys = ", ".join(map(str, list(obj)[:10])) or "none"
            raise SourceError(f"no state_dict found: the file holds a dict with keys {keys}", where=str(path),
                              hint="save torch.save(model.state_dict(), path), or a checkpoint with the weights "
                                   f"under one of: {', '.join(_NESTED_KEYS)}")
        obj = obj[found[0]]
    return _strip_wrapper_prefix(obj)


#: prefixes wrappers add to every key: DDP (``module.``), Lightning modules holding the net as ``self.model`` /
#: ``self.net`` / ``self.student``, torch.compile (``_orig_mod.``)
_WRAPPER_PREFIXES = ("module.", "model.", "net.", "student.", "_orig_mod.")


def _strip_wrapper_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Remove prefixes that every key shares (repeatedly: ``model.module.``); a real submodule name that happens
    to prefix every key is put back by ``_fit_state`` when the architecture wants it."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(str(k).startswith(prefix) for k in state):
                state = {str(k)[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _fit_state(state: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """Keys as the module names them: a stripped prefix that is a real submodule name is put back."""
    wanted = set(module.state_dict())
    if set(state) <= wanted or not wanted:
        return state
    for prefix in _WRAPPER_PREFIXES:
        if {prefix + k for k in state} <= wanted:
            return {prefix + k: v for k, v in state.items()}
    return state


def _mismatch(exc: RuntimeError) -> str:
    """torch's load_state_dict error, without the first line and with long key lists cut."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    parts = []
    for line in lines[:4]:
        parts.append(line if len(line) <= 300 else line[:300] + " ...")
    if len(lines) > 4:
        parts.append(f"(+{len(lines) - 4} more)")
    return "; ".join(parts) or str(exc)


def _load_file(spec: SourceSpec, arch: str | None) -> LoadedModel:
    path = Path(spec.arg)
    if path.is_dir():
        raise SourceError("is a folder, not a model file", where=str(path),
                          hint="pass the .pt/.pth/.pt2 file inside it")
    if not path.is_file():
        raise SourceError("model file not found", where=str(path), hint="check the path")
    if path.suffix.lower() == ".onnx":  # the ONNX flow: edgekd/onnx_source.py
        if arch:
            raise SourceError("--arch applies to a .pt state_dict file; an ONNX file holds its architecture",
                              where=str(path), hint="leave out --arch")
        from edgekd.onnx_source import load_onnx_model

        return load_onnx_model(path, spec.text)
    if path.suffix not in (".pt", ".pth", ".ckpt", ".pt2"):
        raise SourceError(f"unsupported model file type {path.suffix!r}", where=str(path),
                          hint="use .pt/.pth/.ckpt (state_dict, edgekd or Lightning checkpoint), .pt2 (torch.export) "
                               "or .onnx")
    kind = _sniff(path)
    if kind == "export" or (path.suffix == ".pt2" and kind == "unknown"):
        return _load_program(path, spec)
    if kind == "torchscript":
        raise SourceError("is a TorchScript archive (torch.jit.save); edgekd needs a module it can train and "
                          "quantize, which TorchScript is not", where=str(path),
                          hint="save the weights (torch.save(model.state_dict(), path)) and pass --arch SRC, "
                               "or export a .pt2 with torch.export.save")
    if kind == "unknown":
        raise SourceError("is not a PyTorch file (neither torch.save nor torch.export output)", where=str(path),
                          hint="is the file complete? (truncated downloads and Git LFS pointers look like this)")
    if path.suffix == ".pt2":
        raise SourceError("holds torch.save data, not a torch.export program", where=str(path),
                          hint="rename it to .pt (a state_dict needs --arch SRC)")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found and path.suffix == ".ckpt":
            message = (f"this Lightning-style checkpoint holds a pickled {found.group(1)} object (hyper-parameters or "
                       "callback state); edgekd refuses pickles because loading them runs code")
        elif found:
            message = (f"holds a pickled {found.group(1)} object (a whole module saved with torch.save(model)?); "
                       "edgekd refuses pickles because loading them runs code")
        else:
            message = f"cannot load with weights_only=True: {text.splitlines()[0] if text else type(exc).__name__}"
        raise SourceError(
            message, where=str(path),
            hint=("if you trust the file, keep only its weights: torch.save(torch.load(path, weights_only=False)"
                  "['state_dict'], 'weights.pt'), then pass weights.pt with --arch SRC") if path.suffix == ".ckpt" else
                 "save a state_dict (torch.save(model.state_dict(), path)) and pass --arch SRC, or a .pt2 from torch.export",
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and "arch" in obj:
        state = _unwrap_state(obj["state_dict"], path)
        arch = arch or _arch_named_by_file(obj["arch"], path)
    elif isinstance(obj, dict):
        state = _unwrap_state(obj, path)
    else:
        raise SourceError(f"file holds a {type(obj).__name__}, expected a state_dict", where=str(path))
    if not arch:
        raise SourceError("a plain state_dict needs the architecture", where=str(path),
                          hint="pass --arch builtin:NAME|torchvision:NAME|py:mod:factory")
    loaded = load_model(arch)
    try:
        loaded.module.load_state_dict(_fit_state(state, loaded.module))
    except RuntimeError as exc:
        raise SourceError(f"weights do not fit architecture {arch!r}: {_mismatch(exc)}", where=str(path),
                          hint="is --arch the architecture (and its parameters, e.g. ?num_classes=N) the weights "
                               "were trained with?") from None
    loaded.source = spec.text
    loaded.name = path.stem
    return loaded


#: architecture schemes a checkpoint may name for itself: each builds a known model from a name and runs no
#: code of the file's choosing. ``py:`` (imports and runs Python) and file paths are taken only from the user.
FILE_NAMEABLE_SCHEMES = ("builtin", "torchvision", "timm")


def _arch_named_by_file(value: Any, path: Path) -> str:
    """The architecture a checkpoint names for itself, accepted only when it selects no code (security)."""
    text = str(value).strip() if isinstance(value, str) else ""
    scheme = text.partition(":")[0] if ":" in text else "file"
    if scheme not in FILE_NAMEABLE_SCHEMES:
        shown = text if len(text) <= 120 else text[:120] + " ..."
        raise SourceError(
            f"the checkpoint names its architecture as {shown or repr(value)}; edgekd takes an architecture from a "
            f"file only when it is a {'/'.join(s + ':' for s in FILE_NAMEABLE_SCHEMES)} name, because a py: source "
            "or a path would run code the file chose", where=f"{path} (key 'arch')",
            hint="if you trust that code, name it yourself: --arch SRC (--teacher-arch SRC for a teacher)")
    from edgekd.progress import log

    log(f"{path.name}: architecture {text} (named by the checkpoint)")
    return text


#: model source schemes by name (``timm`` in ``timm:resnet18``): ``(spec) -> LoadedModel``. Plugins add theirs under
#: the ``edgekd.model_sources`` entry-point group (value: ``module:function``). Saved files (``file:``, the default
#: scheme for a plain path) are not in it: they alone take ``--arch``.
ModelSource = Callable[[SourceSpec], LoadedModel]
MODEL_SOURCES: Registry[ModelSource] = Registry("model source scheme", group="edgekd.model_sources", error=SourceError)
for _scheme, _loader in (("builtin", _load_builtin), ("torchvision", _load_torchvision), ("timm", _load_timm),
                         ("py", _load_py)):
    MODEL_SOURCES.add(_scheme, _loader)
MODEL_SOURCES.add_lazy("onnx2torch", "edgekd.onnx_source:load_converted")  # a float .onnx as a trainable module


def load_model(source: str | nn.Module | Any, *, arch: str | None = None) -> LoadedModel:
    """Load a model from a source string (see module docstring), or take an ``nn.Module`` object (or a zero-argument
    callable returning one) from the Python API as it is."""
    if not isinstance(source, str):
        module = source() if callable(source) and not isinstance(source, nn.Module) else source
        if not isinstance(module, nn.Module):
            raise SourceError(f"expected a source string or an nn.Module, got {type(module).__name__}",
                              where="model", hint="pass e.g. 'builtin:digits-student', a .pt path, or a module object")
        return LoadedModel(module, type(module).__name__, source_label(source), shape_required=False)
    schemes = (*MODEL_SOURCES.names(sort=False), "file")
    spec = parse_source(source, kind="model", schemes=schemes, default_scheme="file")
    if arch and spec.scheme != "file":
        raise SourceError(f"--arch applies to a .pt state_dict file, but the model is a {spec.scheme}: source",
                          where=source, hint="leave out --arch (the source names its architecture)")
    if spec.scheme == "file":
        return _load_file(spec, arch)
    return MODEL_SOURCES.get(spec.scheme, where=source)(spec)


def source_label(source: Any) -> str | None:
    """How a model source is written in reports and manifests: the string, or ``<ClassName object>`` for an object."""
    if source is None or isinstance(source, str):
        return source
    name = type(source).__name__ if isinstance(source, nn.Module) else getattr(source, "__qualname__", type(source).__name__)
    return f"<{name} object>"


def save_checkpoint(module: nn.Module, arch: str, path: Path) -> None:
    """Save weights in the format ``load_model`` reads back (``{"arch", "state_dict"}``)."""
    torch.save({"arch": arch, "state_dict": module.state_dict()}, path)


def _fit_hint(loaded: LoadedModel, data_shape: tuple[int, ...]) -> str:
    if isinstance(data_shape, dict):  # several inputs (edgekd.inputs)
        return "each x_<input> array must have the shape (and dtype) its forward() parameter takes"
    nominal = tuple(loaded.input_shape or ())
    if nominal and nominal != data_shape:
        size = "x".join(map(str, nominal[1:]))
        return (f"{loaded.name} is built for {list(nominal)}: resize the data to it (e.g. imagefolder:DIR?size={size}), "
                "or use a model that takes the data's size")
    if len(data_shape) == 3 and data_shape[0] == 1:
        return ("use data of the model's input shape; a 1-D signal N x C x L read from npz needs ?layout=ncl (a 3-D "
                "array is otherwise read as N x H x W grayscale and given a channel axis)")
    return "use data of the model's input shape (float32, N x C x H x W for images)"


def check_fits_data(student: LoadedModel, teacher: LoadedModel | None, x: Any, num_classes: int | None,
                    where: str) -> None:
    """Run two samples through the models before hours of work: a model that cannot take the data, fewer
    outputs than the labels have classes, or a teacher with another number of outputs than the student."""
    from edgekd import inputs as model_inputs

    sample = model_inputs.to_torch(x[:2])
    shape = model_inputs.sample_shape(x)
    # several inputs: each input's shape and dtype, so a float array meant as token ids is visible in the error
    shown = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in model_inputs.specs_of(x)) \
        if isinstance(shape, dict) else list(shape)
    widths: dict[str, int] = {}
    for role, loaded in (("model", student), ("teacher", teacher)):
        if loaded is None:
            continue
        try:
            with torch.no_grad():
                out = model_inputs.call(loaded.module, sample)
        except TypeError as exc:
            if "required positional argument" in str(exc):  # forward(img, meta) given one array
                raise SourceError(f"{role} {loaded.name} takes several inputs ({str(exc).splitlines()[0]}) but the "
                                  f"data gives {len(model_inputs.names_of(x))}", where=where,
                                  hint="give one array per input: npz keys x_<name> (or a dict {name: array}); "
                                       "nothing was trained") from None
            raise SourceError(f"{role} {loaded.name} cannot run on the data's samples of shape "
                              f"{shown}: TypeError: {str(exc).splitlines()[0] if str(exc) else ''}",
                              where=where, hint=_fit_hint(loaded, shape)) from None
        except Exception as exc:
            raise SourceError(f"{role} {loaded.name} cannot run on the data's samples of shape "
                              f"{shown}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                              where=where, hint=_fit_hint(loaded, shape)) from None
        if isinstance(out, torch.Tensor) and out.ndim == 2:
            widths[role] = int(out.shape[1])
    if num_classes is not None and "model" in widths and widths["model"] < num_classes:
        raise SourceError(f"model {student.name} has {widths['model']} outputs but the data's labels have "
                          f"{num_classes} classes", where=where,
                          hint="build the model with num_classes matching the data (e.g. ?num_classes=N)")
    if len(widths) == 2 and widths["model"] != widths["teacher"]:
        raise SourceError(f"model {student.name} has {widths['model']} outputs but teacher "
                          f"{teacher.name if teacher else ''} has {widths['teacher']}; distillation compares them "
                          "class by class", where=where, hint="use a student and a teacher with the same classes")
