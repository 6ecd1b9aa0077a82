"""Shared helpers of the benchmark scripts: side-by-side timing, medians/ratios, subprocess cost,
the environment block, Markdown tables (writing and reading back) and goal verdicts.

Timings on a shared 2-core machine drift between runs: every
comparison here is a ratio measured *in the same round*, summarised by the median over rounds.

>>> r = ratio_stats([10.0, 12.0, 9.0], [5.0, 4.0, 4.5])
>>> r.median, r.low, r.high
(2.0, 2.0, 3.0)
>>> str(r)
'2.00x [2.00-3.00]'
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Ratio:
    """Median of per-round ratios with their range (higher = the numerator is slower, i.e. faster variant)."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}]"


def ratio_stats(num: Sequence[float], den: Sequence[float]) -> Ratio:
    """Per-round ``num[i] / den[i]``, then the median and the range. Both lists come from the same rounds.

    >>> ratio_stats([4.0], [2.0])
    Ratio(median=2.0, low=2.0, high=2.0)
    """
    if len(num) != len(den) or not num:
        raise ValueError(f"ratio_stats needs two equally long, non-empty lists (got {len(num)} and {len(den)})")
    values = [a / b for a, b in zip(num, den, strict=True)]
    return Ratio(float(statistics.median(values)), float(min(values)), float(max(values)))


def median(values: Sequence[float]) -> float:
    """The median as a float.

    >>> median([3.0, 1.0, 2.0, 10.0])
    2.5
    """
    return float(statistics.median(values))


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """'mean ± std' (sample std) for several values, the value alone for one.

    >>> mean_std([97.0, 97.4])
    '97.20 ± 0.28'
    >>> mean_std([96.5])
    '96.50'
    """
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def fmt_ms(value: float) -> str:
    """Milliseconds with 3 significant-ish digits.

    >>> fmt_ms(25.61), fmt_ms(1.734), fmt_ms(0.04321)
    ('25.6', '1.73', '0.043')
    """
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# ---------------------------------------------------------------- side-by-side timing


def time_calls(fn: Callable[[], Any], calls: int, samples: list[float] | None = None) -> float:
    """p50 in ms of ``calls`` timed calls of ``fn`` (every call's ms appended to ``samples`` when given)."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    if samples is not None:
        samples.extend(times)
    return median(times)


SETTLE_S = 0.5


def interleaved(runners: Mapping[str, Callable[[], Any]], *, rounds: int, calls: int, warmup: int = 3,
                samples: dict[str, list[float]] | None = None, settle_s: float = SETTLE_S) -> dict[str, list[float]]:
    """p50 (ms) of every runner in every round. All runners run once per round and the starting
    runner rotates, so slow drift (thermal, a neighbour's job) hits every runner alike.
    ``samples`` (optional) collects every call's ms per runner, for tail percentiles.

    Each runner's block starts after ``settle_s`` idle seconds: ONNX Runtime's thread pool keeps
    spinning after its last call and steals the cores from whatever runs next (measured here:
    one-off development check: OpenVINO resnet18 INT8 about 1.75x slower right after 40 ORT calls than alone
    or after a 0.5 s gap).

    >>> out = interleaved({"a": lambda: None, "b": lambda: None}, rounds=2, calls=3, warmup=0, settle_s=0)
    >>> sorted(out), [len(v) for v in out.values()]
    (['a', 'b'], [2, 2])
    """
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            time.sleep(settle_s)
            out[name].append(time_calls(runners[name], calls,
                                        None if samples is None else samples.setdefault(name, [])))
    return out


# ---------------------------------------------------------------- subprocess cost


@dataclass
class Measured:
    """One child process: exit status, wall seconds, peak resident set size (MiB) and its output."""

    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str = ""
    stderr: str = ""


# A tiny parent for the measured command: Linux starts a child's ru_maxrss at its parent's RSS (fork copies
# the memory map, exec keeps its high-water mark), so a big benchmark process must not fork the child itself.
_TRAMPOLINE = """import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""


def run_measured(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, unset: Sequence[str] = (),
                 cwd: Path | None = None, timeout: float | None = None) -> Measured:
    """Run ``cmd``; wall time and its peak RSS (``wait4`` ru_maxrss, read by a small trampoline parent so
    our own size does not leak into the figure): the largest resident set of that process or of any child
    it waited for (the biggest single process, not a sum). ``unset`` names variables removed
    from the inherited environment; a child still running after ``timeout`` seconds is killed with its
    process group (returncode 124).

    >>> m = run_measured([sys.executable, "-c", "print('hi')"])
    >>> m.returncode, m.stdout.strip(), m.peak_rss_mb > 1
    (0, 'hi', True)
    """
    import signal
    import tempfile

    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(write_fd), *cmd], stdout=out, stderr=err,
                                env=full_env, cwd=cwd, text=True, pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = 124
        wall = time.perf_counter() - t0
        with os.fdopen(read_fd, "rb") as pipe:
            raw = pipe.read().decode().strip()
        out.seek(0)
        err.seek(0)
        return Measured(list(cmd), returncode, wall, int(raw) / 1024 if raw else float("nan"), out.read(), err.read())


# ---------------------------------------------------------------- environment + command


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command as a user would type it again (with OMP_NUM_THREADS when it was set).

    >>> command_line("tools/bench.py", ["--only", "peers"]).endswith(".venv/bin/python tools/bench.py --only peers")
    True
    """
    omp = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={omp} " if omp else ""
    return (prefix + f".venv/bin/python {script} " + " ".join(shlex.quote(a) for a in argv)).strip()


def environment() -> dict[str, Any]:
    """edgekd's own environment capture (CPU model, ISA flags, cores, versions)."""
    sys.path.insert(0, str(ROOT))
    from edgekd.profiler.env import capture

    info = capture()
    info.pop("hostname", None)  # the files are committed: nothing machine-identifying beyond the hardware
    try:
        import nncf

        info["versions"]["nncf"] = str(nncf.__version__)
    except ImportError:
        pass
    for mod in ("timm", "torchvision"):
        try:
            info["versions"][mod] = str(__import__(mod).__version__)
        except ImportError:
            continue
    return info


def environment_lines(info: Mapping[str, Any]) -> list[str]:
    """The environment as Markdown bullet lines.

    >>> info = {"cpu": {"model": "Xeon", "logical_cpus": 2, "physical_cores": 1, "affinity_cpus": 2,
    ...         "flags": ["avx512f", "amx_int8"]}, "os": {"system": "Linux", "release": "6", "machine": "x86_64"},
    ...         "python": "3.11.7", "versions": {"torch": "2.14.1"}, "env_vars": {}}
    >>> environment_lines(info)[0]
    '- CPU: Xeon; 2 logical CPUs (1 physical cores), 2 usable by this process'
    """
    cpu = info["cpu"]
    o = info["os"]
    lines = [f"- CPU: {cpu.get('model') or 'unknown'}; {cpu.get('logical_cpus')} logical CPUs "
             f"({cpu.get('physical_cores')} physical cores), {cpu.get('affinity_cpus')} usable by this process",
             f"- ISA flags that decide kernels: {', '.join(cpu.get('flags') or []) or 'unknown'}",
             f"- OS: {o['system']} {o['release']} ({o['machine']}), Python {info['python']}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))]
    if info.get("env_vars"):
        lines.append("- Environment: " + ", ".join(f"{k}={v}" for k, v in info["env_vars"].items()))
    return lines


# ---------------------------------------------------------------- markdown


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    """A Markdown table; ``align`` is one letter per column (l/r), default: first left, rest right.

    >>> md_table(["a", "b"], [["x", 1.5]])
    ['| a | b |', '|---|---:|', '| x | 1.5 |']
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} letters for {len(header)} columns")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells for {len(header)} columns")
    sep = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(map(str, header)) + " |", sep,
            *("| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows)]


@dataclass
class MdTable:
    header: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)

    def column(self, name: str) -> list[str]:
        return [r[name] for r in self.rows]


def parse_md_tables(text: str) -> list[MdTable]:
    """Every pipe table in ``text``, rows as dicts keyed by header cell (Markdown emphasis kept).

    >>> t = parse_md_tables("x\\n\\n| a | b |\\n|---|---:|\\n| 1 | **2** |\\n")
    >>> t[0].header, t[0].rows
    (['a', 'b'], [{'a': '1', 'b': '**2**'}])
    """
    tables: list[MdTable] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) - 1:
        head, sep = lines[i].strip(), lines[i + 1].strip()
        if head.startswith("|") and sep.startswith("|") and set(sep) <= set("|-: "):
            table = MdTable([c.strip() for c in head.strip("|").split("|")])
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                table.rows.append(dict(zip(table.header, cells)))
                i += 1
            tables.append(table)
        else:
            i += 1
    return tables


def number(cell: str) -> float:
    """The first number in a table cell ('**2.65x** [2.6-2.7]' -> 2.65, '4998/5000' -> 4998).

    >>> number("**2.65x** [2.64-2.66]"), number("0.73 µs (+5.7 %)"), number("-0.20")
    (2.65, 0.73, -0.2)
    """
    import re

    m = re.search(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", cell.replace(",", ""))
    if m is None:
        raise ValueError(f"no number in table cell {cell!r}")
    return float(m.group(0))


# ---------------------------------------------------------------- goals


@dataclass(frozen=True)
class Goal:
    """A "must show" goal evaluated from measured numbers: met when ``value >= target`` (or <= for "max")."""

    name: str
    value: float | None
    target: float
    kind: str = "min"  # "min": value must reach target; "max": value must stay at or below it
    unit: str = ""
    detail: str = ""  # what was compared; why it was missed

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.kind == "min" else self.value <= self.target

    def verdict(self) -> str:
        """Bold verdict for the tables.

        >>> Goal("x", 1.2, 1.0).verdict(), Goal("y", 5.0, 4.0, "max").verdict(), Goal("z", None, 1).verdict()
        ('**met**', '**MISSED**', 'not measured')
        """
        return {True: "**met**", False: "**MISSED**", None: "not measured"}[self.met]

    def row(self) -> list[str]:
        value = "–" if self.value is None else f"{self.value:.2f}{self.unit}"
        op = ">=" if self.kind == "min" else "<="
        return [self.name, value, f"{op} {self.target:g}{self.unit}", self.verdict(), self.detail]


def goal_table(goals: Sequence[Goal]) -> list[str]:
    return md_table(["goal", "measured", "aim", "verdict", "what was compared / why"], [g.row() for g in goals],
                    "lrrll")


def python() -> str:
    """The interpreter benches run under (the project venv when present)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable
