"""How numbers appear in report tables (report.md, profile.md, the console): one rule for every report."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """``None`` as an em dash, floats with ``digits`` decimals, everything else as ``str``."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
