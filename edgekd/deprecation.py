"""One place that says an old spelling still works and what replaces it (a one-line note on stderr, once each)."""

from __future__ import annotations

import sys

_SAID: set[str] = set()


def deprecated(old: str, new: str) -> None:
    """Print ``edgekd: note: OLD is deprecated; use NEW`` once per process (stderr: stdout may be JSON)."""
    if old in _SAID:
        return
    _SAID.add(old)
    print(f"edgekd: note: {old} is deprecated; use {new}", file=sys.stderr)
