"""The one registry shape for every extension kind: passes, backends, exporters, model and data sources.

Modelled on timm's ``@register_model`` / ``list_models('resnet*')`` plus setuptools entry points:

- ``add(name, obj)`` / ``@register(name)`` registers an object that already exists;
- ``add_lazy(name, "module:attr", **meta)`` registers a reference that is imported on the first ``get``;
  ``meta`` (e.g. a pass's one-line summary) is what listing shows without importing the module;
- ``group="edgekd.<kind>"`` adds every installed entry point of that group as a lazy reference
  (its ``module:attr`` value, never imported to be listed).

A reference that fails to import (a broken plugin: ModuleNotFoundError, any Exception) makes that one
entry *unavailable* with the reason; it never breaks the other entries, listing or the command line.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from edgekd.errors import ConfigError, EdgekdError

T = TypeVar("T")

_MISSING: Any = object()


@dataclass
class Entry:
    """One registered name: the object once loaded, or the ``module:attr`` reference to load it from."""

    name: str
    ref: str | None = None
    origin: str = "edgekd"  # "edgekd" (built in) or "entry point <group>" (a plugin)
    meta: dict[str, Any] = field(default_factory=dict)
    item: Any = _MISSING
    error: str | None = None  # why loading failed: the entry is unavailable

    @property
    def loaded(self) -> bool:
        return self.item is not _MISSING

    @property
    def module(self) -> str | None:
        return self.ref.partition(":")[0] if self.ref else None


class Registry(Generic[T]):
    """Objects by name. ``kind`` appears in messages ("pass", "backend"); ``group`` is the entry-point group
    plugins register under; ``adapt`` turns what a reference names into the registered object (a backend
    class into an instance); ``error`` is the EdgekdError raised for an unknown or unavailable name."""

    def __init__(self, kind: str, *, group: str | None = None, adapt: Callable[[Any], T] | None = None,
                 error: type[EdgekdError] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self.group = group
        self._adapt = adapt
        self._entries: dict[str, Entry] = {}
        self._discovered = group is None

    # ------------------------------------------------------------ registering

    def add(self, name: str, item: T, *, module: str | None = None) -> T:
        """Register ``item``. When ``name`` is a lazy reference into ``module`` (the module that defines the item,
        registering itself as it is imported), this fills that reference instead of clashing with it."""
        entry = self._entries.get(name)
        if entry is not None and not entry.loaded and entry.ref and module is not None and entry.module == module:
            entry.item, entry.error = item, None
            return item
        if entry is not None and entry.item is not item:
            where = entry.ref or entry.origin
            raise ValueError(f"{self.kind} {name!r} is registered twice (first: {where})")
        self._entries[name] = Entry(name, origin="edgekd", item=item)
        return item

    def add_lazy(self, name: str, ref: str, *, origin: str = "edgekd", **meta: Any) -> None:
        """Register ``module:attr``, imported on the first ``get(name)``. A name already taken keeps its first entry
        (a plugin cannot replace a built-in)."""
        module, colon, attr = ref.partition(":")
        if not module or not colon or not attr:
            raise ValueError(f"{self.kind} {name!r}: reference {ref!r} is not 'module:attr'")
        self._entries.setdefault(name, Entry(name, ref=ref, origin=origin, meta=dict(meta)))

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@EXPORTERS.register("torch")``."""

        def deco(item: T) -> T:
            return self.add(name, item, module=getattr(item, "__module__", None))

        return deco

    # ------------------------------------------------------------ looking up

    def get(self, name: str, *, where: str | None = None) -> T:
        entry = self.entry(name, where=where)
        if not entry.loaded and entry.error is None:
            self._load(entry)
        if entry.error is not None:
            raise self._error(f"{self.kind} {name!r} is unavailable: {entry.error}", where=where or entry.ref,
                              hint=f"it comes from {entry.origin} ({entry.ref}): reinstall or uninstall that package")
        return entry.item

    def entry(self, name: str, *, where: str | None = None) -> Entry:
        """The entry for ``name`` without loading it (its ``meta`` is what listing shows)."""
        self._discover()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else None
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise self._error(f"unknown {self.kind} {name!r}; known: {known}", where=where, hint=hint) from None

    def unavailable_reason(self, name: str) -> str | None:
        """Load ``name`` if needed; None when it loads, else why not ("ModuleNotFoundError: No module named 'x'")."""
        try:
            self.get(name)
        except EdgekdError:
            return self.entry(name).error
        return None

    def names(self, pattern: str = "*", *, sort: bool = True) -> list[str]:
        """Every registered name matching the glob, loaded or not; ``sort=False`` keeps registration order."""
        self._discover()
        found = [n for n in self._entries if fnmatch.fnmatch(n, pattern)]
        return sorted(found) if sort else found

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # ------------------------------------------------------------ loading

    def _load(self, entry: Entry) -> None:
        assert entry.ref is not None
        module_name, _, attr = entry.ref.partition(":")
        try:
            obj = importlib.import_module(module_name)
            if entry.loaded:  # the module registered this name as it was imported (a decorator)
                return
            for part in attr.split("."):
                obj = getattr(obj, part)
            item = self._adapt(obj) if self._adapt is not None else obj
        except Exception as exc:  # a broken plugin is one unavailable entry, never a crash
            entry.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return
        if not entry.loaded:
            entry.item = item

    def _discover(self) -> None:
        """Add the entry points of ``group`` once, on first use (reading installed metadata costs ~50 ms)."""
        if self._discovered:
            return
        self._discovered = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            try:
                self.add_lazy(ep.name, ep.value.split("[")[0].strip(), origin=f"entry point {self.group}")
            except ValueError as exc:  # a malformed value: list it as unavailable, with the reason
                self._entries.setdefault(ep.name, Entry(ep.name, ref=ep.value, origin=f"entry point {self.group}",
                                                        error=str(exc)))
