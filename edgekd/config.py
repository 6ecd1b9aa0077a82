"""Recipes and targets: TOML files loaded into frozen dataclasses.

A *recipe* is an ordered list of compression passes plus export settings.
A *target* is a backend, its options, the device, budgets, parity tolerances and
profiling settings. Unknown keys and wrong types are errors naming file and key.
This module is torch-free; pass configs are resolved through the pass registry.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekd.bundle.layout import RESERVED_NAMES
from edgekd.errors import ConfigError
from edgekd.typed import field_type, from_mapping, parse_text, to_mapping


@dataclass(frozen=True)
class PassSpec:
    """One step of a recipe: a registered pass name and its typed config."""

    name: str
    config: Any


@dataclass(frozen=True)
class ExportSettings:
    opset: int = 17
    dynamic_batch: bool = True
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    parity_samples: int = 64
    parity_atol: float = 1e-3

    def __post_init__(self) -> None:
        if self.opset < 13:
            raise ValueError(f"opset {self.opset} is too old; edgekd needs opset >= 13 (17 recommended)")
        if self.parity_samples < 1:
            raise ValueError(f"parity_samples must be >= 1 (got {self.parity_samples})")
        if self.parity_atol < 0:
            raise ValueError(f"parity_atol must be >= 0 (got {self.parity_atol})")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    passes: tuple[PassSpec, ...] = ()
    export: ExportSettings = field(default_factory=ExportSettings)
    source: str | None = None
    #: the ``[task]`` table (edgekd.tasks.resolve checks it against the model and the labels); None = not set
    task: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "passes": [{"name": p.name, **to_mapping(p.config)} for p in self.passes],
            "export": to_mapping(self.export),
            **({"task": dict(self.task)} if self.task else {}),
        }


@dataclass(frozen=True)
class Budgets:
    p90_ms: float | None = None
    max_accuracy_drop: float | None = None  # percentage points below the FP32 reference (edgekd/budgets.py)
    max_size_mb: float | None = None
    #: a design the backend estimates does not fit its part fails the target; false = the estimate is advisory
    must_fit: bool = True

    def __post_init__(self) -> None:
        for key in ("p90_ms", "max_size_mb"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be > 0 (got {value}); leave it out for no budget")


@dataclass(frozen=True)
class ParitySettings:
    atol: float = 1e-3
    rtol: float = 1e-3
    min_top1_agreement: float = 0.99
    #: extra difference allowed when the model's output is quantized, in steps of that output's scale:
    #: two INT8 runtimes round accumulators differently and the difference can reach the output (0 = none)
    output_steps: float = 2.0

    def __post_init__(self) -> None:
        for key in ("atol", "rtol", "output_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0 (got {getattr(self, key)})")
        if not 0 <= self.min_top1_agreement <= 1:
            raise ValueError(f"min_top1_agreement is a fraction in 0..1 (got {self.min_top1_agreement}"
                             + ("; for 99 % write 0.99)" if self.min_top1_agreement > 1 else ")"))


@dataclass(frozen=True)
class ProfilingSettings:
    warmup: int = 20
    iterations: int = 200
    batch_size: int = 1
    #: measure for at least this long too: a 0.1 ms model's 200 queries take 20 ms, so one stall of a shared host
    #: decides its p90
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 (got {self.warmup})")
        if self.duration_s < 0:
            raise ValueError(f"duration_s must be >= 0 (got {self.duration_s})")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be >= 1 (got {self.iterations}, {self.batch_size})")


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    device: str = "CPU"
    description: str = ""
    options: Any = None
    budgets: Budgets = field(default_factory=Budgets)
    parity: ParitySettings = field(default_factory=ParitySettings)
    profiling: ProfilingSettings = field(default_factory=ProfilingSettings)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = to_mapping(self)
        data.pop("source", None)
        return data


# ---------------------------------------------------------------- file lookup

_KINDS = ("recipes", "targets")


def search_dirs(kind: str) -> list[Path]:
    """Where NAME (not a path) is looked up: $EDGEKD_<KIND>_PATH, then the shipped folder."""
    assert kind in _KINDS
    dirs = [Path(p) for p in os.environ.get(f"EDGEKD_{kind.upper()}_PATH", "").split(os.pathsep) if p]
    if kind == "recipes" and os.environ.get("EDGEKD_PROFILES_PATH"):  # the old name, still read
        from edgekd.deprecation import deprecated

        deprecated("EDGEKD_PROFILES_PATH", "EDGEKD_RECIPES_PATH")
        dirs += [Path(p) for p in os.environ["EDGEKD_PROFILES_PATH"].split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / kind, here / "_data" / kind):
        if candidate.is_dir():
            dirs.append(candidate)
            break
    return dirs


def available(kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in search_dirs(kind):
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def resolve_file(kind: str, name_or_path: str | os.PathLike[str]) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text or "/" in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{kind[:-1]} file not found", where=text, hint=f"check the path, or use a name from `edgekd list {kind}`")
        return path
    known = available(kind)
    if text in known:
        return known[text]
    import difflib

    close = difflib.get_close_matches(text, list(known), n=3)
    raise ConfigError(
        f"unknown {kind[:-1]} {text!r}; known: {', '.join(known) or '(none)'}",
        where=f"--{kind[:-1]}",
        hint=f"did you mean {', '.join(close)}?" if close else f"pass a path to a .toml file or see `edgekd list {kind}`",
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", where=str(path)) from None


# ---------------------------------------------------------------- loaders

#: a target's name is its folder in the bundle: these names are the bundle's own files and folders
RESERVED_TARGET_NAMES = RESERVED_NAMES


def check_target_name(name: str, *, where: str) -> None:
    """A target name becomes a folder inside the bundle: one plain path component, not one of the bundle's own."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name or "") or name in RESERVED_TARGET_NAMES:
        raise ConfigError(f"target name {name!r} cannot be a folder name in the bundle", where=where,
                          hint="set name = \"...\" in the target file: letters, digits, '.', '_', '+' and '-' "
                               "(e.g. 'jetson-orin'), not one of "
                               + ", ".join(RESERVED_TARGET_NAMES))



def load_recipe(name_or_path: str | os.PathLike[str], overrides: Sequence[str] = (), *, origin: str = "--set") -> Recipe:
    """Load a compression recipe by name (``int8-kd``) or path; ``overrides`` are ``--set PASS.KEY=VALUE``
    settings applied to the file's tables before validation (see ``apply_override``)."""
    path = resolve_file("recipes", name_or_path)
    data = _read_toml(path)
    if "backend" in data and "passes" not in data:
        raise ConfigError("this is a target file (it has 'backend'), not a recipe", where=str(path),
                          hint="pass it with --target; --recipe takes a file with [[passes]] (edgekd list recipes)")
    data.setdefault("name", path.stem)
    for text in overrides:
        data = apply_override(data, text, origin=origin)
    where = str(path) + (f" (with --set {' --set '.join(overrides)})" if overrides else "")
    recipe = recipe_from_mapping(data, where=where)
    return dataclasses.replace(recipe, source=str(path)) if overrides else recipe


_OVERRIDE = re.compile(r"(?P<table>[A-Za-z_][\w-]*)(?:\[(?P<index>\d+)\])?\.(?P<keys>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)"
                       r"=(?P<value>.*)", re.DOTALL)


def apply_override(data: Mapping[str, Any], text: str, *, origin: str = "--set") -> dict[str, Any]:
    """A copy of recipe ``data`` with one ``--set`` applied: ``PASS.KEY=VALUE`` sets KEY of the recipe's pass
    PASS (``quantize.finetune.epochs=5`` reaches into its finetune table), ``PASS[N].KEY=VALUE`` the N-th
    (from 0) of several passes of that name, ``export.KEY=VALUE`` the export table. VALUE is a TOML value
    (``5``, ``1e-3``, ``true``, ``"hinton"``); a bare word is a string. Types are checked by the recipe loader."""
    where = f"{origin} {text}"  # origin: "--set", or "edgekd.toml set" for a build file's
    match = _OVERRIDE.fullmatch(text.strip())
    if not match:
        raise ConfigError("expected PASS.KEY=VALUE", where=where,
                          hint="e.g. --set distill.epochs=5, --set quantize.finetune.lr=1e-4, --set export.opset=17")
    data = _deep_copy(data)
    keys = match["keys"].split(".")
    if keys[0] == "name":
        raise ConfigError("a pass's name cannot be overridden (it selects the pass)", where=where,
                          hint="write another recipe file to change which passes run")
    if match["table"] == "export":
        table, config_type = data.setdefault("export", {}), ExportSettings
    else:
        from edgekd.passes import PASSES

        table = _override_pass(data, match, where)
        config_type = PASSES.get(match["table"], where=where).config_type
    # typed by the setting's own field (an unknown key is refused here, naming the valid keys, before any training)
    tp = field_type(config_type, keys, where=where) if dataclasses.is_dataclass(config_type) else None
    for key in keys[:-1]:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{key!r} is a value, not a table", where=where)
    table[keys[-1]] = parse_text(match["value"], tp, where=where) if tp is not None else _toml_value(match["value"])
    return data


def _override_pass(data: dict[str, Any], match: re.Match[str], where: str) -> dict[str, Any]:
    """The ``[[passes]]`` table a ``--set`` names."""
    passes = [p for p in data.get("passes", []) if isinstance(p, dict)]
    name, same = match["table"], [p for p in passes if p.get("name") == match["table"]]
    names = ", ".join(str(p.get("name")) for p in passes) or "(none)"
    if not same:
        raise ConfigError(f"the recipe has no {name!r} pass; its passes: {names}", where=where,
                          hint="--set overrides settings of the recipe's own passes (or export.KEY)")
    if match["index"] is None and len(same) > 1:
        raise ConfigError(f"the recipe has {len(same)} {name!r} passes", where=where,
                          hint=f"say which: {name}[0].KEY=VALUE ... {name}[{len(same) - 1}].KEY=VALUE (counting from 0)")
    index = int(match["index"] or 0)
    if index >= len(same):
        raise ConfigError(f"the recipe has {len(same)} {name!r} pass(es), so no {name}[{index}]", where=where)
    return same[index]


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def recipe_from_mapping(data: Mapping[str, Any], *, where: str) -> Recipe:
    from edgekd.passes import PASSES

    data = dict(data)
    task = data.pop("task", None)
    if task is not None and not isinstance(task, Mapping):
        raise ConfigError("'task' must be a table ([task] name = \"segmentation\" ...)", where=f"{where} task")
    raw_passes = data.pop("passes", [])
    if not isinstance(raw_passes, list):
        raise ConfigError("'passes' must be an array of tables ([[passes]])", where=where)
    specs, infos = [], []
    for i, raw in enumerate(raw_passes):
        loc = f"{where} passes[{i}]"
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise ConfigError("each [[passes]] table needs a 'name'", where=loc, hint=f"known passes: {', '.join(PASSES.names())}")
        raw = dict(raw)
        name = raw.pop("name")
        info = PASSES.get(name, where=loc)
        specs.append(PassSpec(name=name, config=from_mapping(info.config_type, raw, where=f"{loc} ({name})")))
        infos.append(info)
    _check_pass_order(infos, where=where)
    data["passes"] = ()
    data.setdefault("name", Path(where).stem)
    recipe = from_mapping(Recipe, data, where=where)
    return Recipe(
        name=recipe.name,
        description=recipe.description,
        passes=tuple(specs),
        export=recipe.export,
        source=where,
        task=dict(task) if task else None,
    )


def _check_pass_order(infos: Sequence[Any], *, where: str) -> None:
    """Refuse an order the passes themselves would refuse after the earlier ones ran (each pass declares which
    passes must not precede it: ``PassInfo.not_after``), so the error comes before hours of distillation."""
    for i, info in enumerate(infos):
        for j, earlier in enumerate(infos[:i]):
            if earlier.name in info.not_after:
                problem = (f"two {info.name!r} passes (passes[{j}] and passes[{i}]): one runs on the other's output"
                           if earlier.name == info.name else
                           f"{info.name!r} (passes[{i}]) cannot run after {earlier.name!r} (passes[{j}])")
                raise ConfigError(f"invalid pass order: {problem}", where=where,
                                  hint="order the passes distill, prune_channels, sparsify, quantize, with one quantize "
                                       "pass (it adapts to each target's numerics by itself)")


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """Load a deployment target by name (``cpu``, ``openvino-cpu``) or path."""
    path = resolve_file("targets", name_or_path)
    data = _read_toml(path)
    if "passes" in data and "backend" not in data:
        raise ConfigError("this is a recipe (it has [[passes]]), not a target file", where=str(path),
                          hint="pass it with --recipe; --target takes a file with backend = ... (edgekd list targets)")
    return target_from_mapping(data, where=str(path))


def target_from_mapping(data: Mapping[str, Any], *, where: str) -> Target:
    from edgekd.backends import BACKENDS

    data = dict(data)
    raw_options = data.pop("options", {})
    data.setdefault("name", Path(where).stem)
    if "backend" not in data:
        raise ConfigError("missing required key 'backend'", where=where, hint=f"one of: {', '.join(BACKENDS.names())}")
    backend = BACKENDS.get(str(data["backend"]), where=f"{where} backend")
    options = from_mapping(backend.options_type, raw_options, where=f"{where} [options]")
    target = from_mapping(Target, data, where=where)
    check_target_name(target.name, where=f"{where} name")
    return Target(
        name=target.name,
        backend=target.backend,
        device=target.device,
        description=target.description,
        options=options,
        budgets=target.budgets,
        parity=target.parity,
        profiling=target.profiling,
        source=where,
    )


def unique_targets(targets: list[Target]) -> list[Target]:
    """Drop repeats of the same target; two different targets with one name would share a bundle folder."""
    seen: dict[str, Target] = {}
    for target in targets:
        first = seen.get(target.name)
        if first is None:
            seen[target.name] = target
        elif first.to_dict() != target.to_dict():
            raise ConfigError(f"two different targets are named {target.name!r} ({first.source} and {target.source})",
                              where="--target", hint="each target is a folder in the bundle: give one of them "
                              "another name = \"...\" in its file")
    return list(seen.values())


# ---------------------------------------------------------------- deprecated names (a compression recipe was a "profile")

Profile = Recipe
profile_from_mapping = recipe_from_mapping


def load_profile(name_or_path: str | os.PathLike[str]) -> Recipe:
    """Deprecated: ``load_recipe``."""
    import warnings

    warnings.warn("edgekd.config.load_profile is deprecated; use load_recipe", DeprecationWarning, stacklevel=2)
    return load_recipe(name_or_path)
