"""Parsing of source strings shared by model and data sources: ``scheme:arg?key=value&k2=v2``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekd.errors import SourceError


@dataclass(frozen=True)
class SourceSpec:
    text: str
    scheme: str
    arg: str
    params: dict[str, str]

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    def check_params(self, allowed: tuple[str, ...]) -> None:
        """An unknown ``?key=`` is a typo that would otherwise be ignored without a word."""
        unknown = [k for k in self.params if k not in allowed]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            raise SourceError(f"unknown parameter {unknown[0]!r} for a {self.scheme}: source; allowed: "
                              f"{', '.join(allowed) or 'none'}", where=self.text,
                              hint=f"did you mean {close[0]!r}?" if close else None)

    def int_param(self, key: str, default: int) -> int:
        value = self.params.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise SourceError(f"parameter {key}={value!r} must be an integer", where=self.text) from None


def parse_source(text: str, *, kind: str, schemes: tuple[str, ...], default_scheme: str | None = None) -> SourceSpec:
    """Split ``scheme:arg?params``. Windows drive letters and plain paths go to ``default_scheme``."""
    raw, _, query = text.partition("?")
    params: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SourceError(f"parameter {item!r} must look like key=value", where=text)
        params[key] = value
    scheme, colon, arg = raw.partition(":")
    if not colon or scheme not in schemes:
        if default_scheme is not None and (not colon or len(scheme) == 1):
            return SourceSpec(text, default_scheme, raw, params)
        raise SourceError(
            f"unknown {kind} source scheme {scheme!r}",
            where=text,
            hint=f"use one of: {', '.join(s + ':' for s in schemes)}",
        )
    if not arg:
        raise SourceError(f"{kind} source {text!r} names no {scheme} item", where=text)
    return SourceSpec(text, scheme, arg, params)


def import_callable(ref: str, *, where: str) -> Any:
    """``package.module:attr`` or ``path/to/file.py:attr`` -> the object. Runs user code."""
    module_ref, colon, attr = ref.rpartition(":")
    if not colon or not module_ref or not attr:
        raise SourceError(f"expected 'module:function', got {ref!r}", where=where, hint="e.g. py:mypkg.models:build")
    try:
        if module_ref.endswith(".py"):
            if not Path(module_ref).is_file():
                raise SourceError("python file not found", where=module_ref)
            module = import_file(Path(module_ref))
        else:
            module = importlib.import_module(module_ref)
    except SourceError:
        raise
    except ImportError as exc:
        raise SourceError(f"cannot import {module_ref!r}: {exc}", where=where,
                          hint="is the package installed / on PYTHONPATH?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SourceError(f"module {module_ref!r} has no attribute {attr!r}", where=where) from None


# resolved path -> (module name, (mtime_ns, size) when it was executed)
_FILE_MODULES: dict[Path, tuple[str, tuple[int, int]]] = {}


def file_module_name(path: Path) -> str:
    """The ``sys.modules`` name of a ``py:`` file: stable for its resolved path, so that every process (the
    training workers too) gives the same file the same name, and distinct for two files with one stem."""
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", resolved.stem)
    return f"_edgekd_py_{stem}_{digest}"


def import_file(path: Path) -> ModuleType:
    """Execute a ``.py`` file once per resolved path (again only if it changed) and register it in ``sys.modules``
    under ``file_module_name``: the student and the teacher from one file share their classes, and objects of
    those classes pickle by reference (``--nproc``)."""
    resolved = path.resolve()
    stat = resolved.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    name = file_module_name(resolved)
    known = _FILE_MODULES.get(resolved)
    if known is not None and known[1] == version and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        _FILE_MODULES.pop(resolved, None)
        raise
    _FILE_MODULES[resolved] = (name, version)
    return module


def file_of_module(name: str) -> Path | None:
    """The ``.py`` file ``import_file`` executed as module ``name`` (None for any other module)."""
    return next((path for path, (known, _) in _FILE_MODULES.items() if known == name), None)
