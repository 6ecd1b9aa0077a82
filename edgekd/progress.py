"""Progress bars (rich) that go quiet with --quiet or when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_state = {"quiet": None}


def set_quiet(quiet: bool | None) -> None:
    """True forces quiet, False forces bars, None = automatic (bars only on a TTY)."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    if _state["quiet"] is not None:
        return bool(_state["quiet"])
    if os.environ.get("EDGEKD_QUIET"):
        return True
    return not sys.stderr.isatty()


class _Task:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, n: float = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._id, advance=n, **({"info": _fmt(fields)} if fields else {}))

    def set_info(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._id, info=_fmt(fields))


def _fmt(fields: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


@contextmanager
def task(description: str, total: float | None) -> Iterator[_Task]:
    """``with task("training", total=steps) as t: ... t.advance(loss=0.3)``"""
    if is_quiet():
        yield _Task(None, None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), transient=True, console=None,
    )
    with progress:
        yield _Task(progress, progress.add_task(description, total=total, info=""))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as t:
        for item in items:
            yield item
            t.advance()


def log(message: str) -> None:
    """One status line on stderr (suppressed when quiet)."""
    if not is_quiet() or os.environ.get("EDGEKD_VERBOSE"):
        print(message, file=sys.stderr)
