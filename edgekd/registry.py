"""A small name -> object registry with glob listing and close-match errors.

Modelled on timm's ``@register_model`` / ``list_models('resnet*')``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgekd.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Holds objects by name. ``kind`` appears in error messages ("pass", "backend")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@PASSES.register("distill")``."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str, *, where: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else None
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {known}", where=where, hint=hint
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
