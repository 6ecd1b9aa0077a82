"""Progress on stderr: rich bars on a terminal, plain lines elsewhere (CI logs, nohup), nothing when quiet
(``--quiet`` or ``EDGEKD_QUIET``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_state = {"quiet": None}


# Plain-line mode prints a task's start, every 10 % (or every _LINE_SECONDS when the total is unknown or the
# steps are slow) and its end with the elapsed time.
_LINE_STEP = 0.10
_LINE_SECONDS = 30.0


def set_quiet(quiet: bool | None) -> None:
    """True forces quiet, False forces bars, None = automatic (bars on a TTY, plain lines elsewhere)."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    if _state["quiet"] is not None:
        return bool(_state["quiet"])
    return bool(os.environ.get("EDGEKD_QUIET"))


def _bars() -> bool:
    return _state["quiet"] is False or sys.stderr.isatty()


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


class _LineTask:
    """A task as plain stderr lines, for logs where a redrawn bar would be noise or nothing at all."""

    def __init__(self, description: str, total: float | None) -> None:
        self._description, self._total = description, total
        self._done, self._info = 0.0, ""
        self._start = self._last_time = time.monotonic()
        self._last_fraction = 0.0
        self._print(f"started ({_count(total)} steps)" if total else "started")

    def advance(self, n: float = 1, **fields: Any) -> None:
        self._done += n
        if fields:
            self._info = _fmt(fields)
        now = time.monotonic()
        fraction = self._done / self._total if self._total else 0.0
        due = fraction - self._last_fraction >= _LINE_STEP - 1e-9 or now - self._last_time >= _LINE_SECONDS
        if due and (not self._total or self._done < self._total):
            self._last_fraction, self._last_time = fraction, now
            where = f"{100 * fraction:.0f} % ({_count(self._done)}/{_count(self._total)})" if self._total else _count(self._done)
            self._print(f"{where}, {now - self._start:.1f} s" + (f"  {self._info}" if self._info else ""))

    def set_info(self, **fields: Any) -> None:
        self._info = _fmt(fields)

    def finish(self) -> None:
        count = f"{_count(self._done)}/{_count(self._total)}" if self._total else _count(self._done)
        self._print(f"done {count} in {time.monotonic() - self._start:.1f} s" + (f"  {self._info}" if self._info else ""))

    def _print(self, message: str) -> None:
        print(f"{self._description}: {message}", file=sys.stderr, flush=True)


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


@contextmanager
def task(description: str, total: float | None) -> Iterator[_Task | _LineTask]:
    """``with task("training", total=steps) as t: ... t.advance(loss=0.3)``"""
    if is_quiet():
        yield _Task(None, None)
        return
    if not _bars():
        lines = _LineTask(description, total)
        yield lines
        lines.finish()
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
    """One status line on stderr (suppressed when quiet, unless EDGEKD_VERBOSE)."""
    if not is_quiet() or os.environ.get("EDGEKD_VERBOSE"):
        print(message, file=sys.stderr)
