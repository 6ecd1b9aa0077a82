"""Static checks of an ONNX file against a runtime's rules, before anyone builds on the device.

This module holds what every linter shares: ``Finding``, ``LintReport`` and the driver ``lint``. The rules
live with their runtime: a backend that can lint has a ``linter`` attribute (``TensorRTBackend.linter`` is
``edgekd.backends.tensorrt.lint.lint_tensorrt``), a callable ``(model, *, sparse_weights, require_int8,
name) -> LintReport``. Torch-free.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekd.errors import ConfigError

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str
    node: str | None = None
    hint: str | None = None


@dataclass
class LintReport:
    model: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, level: Level, check: str, message: str, node: str | None = None, hint: str | None = None) -> None:
        self.findings.append(Finding(level, check, message, node, hint))

    def count(self, level: Level) -> int:
        return sum(1 for f in self.findings if f.level == level)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return self.count("error") == 0

    @property
    def clean(self) -> bool:
        """No errors and no warnings."""
        return self.ok and self.count("warning") == 0

    def checks(self, level: Level | None = None) -> set[str]:
        return {f.check for f in self.findings if level is None or f.level == level}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "ok": self.ok, "clean": self.clean,
                "errors": self.count("error"), "warnings": self.count("warning"),
                "findings": [asdict(f) for f in self.findings], "stats": self.stats}

    def to_text(self, max_nodes: int = 5) -> str:
        """Findings grouped by (level, check): one line each with the first few node names."""
        lines = [f"lint {self.model} for {self.target}: {self.count('error')} error(s), "
                 f"{self.count('warning')} warning(s)"]
        groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
        order = {"error": 0, "warning": 1, "info": 2}
        for f in self.findings:
            groups[(f.level, f.check, f.message if f.node is None else _generic(f))].append(f)
        for (level, check, generic), items in sorted(groups.items(), key=lambda kv: order[kv[0][0]]):
            first = items[0]
            if len(items) == 1:
                lines.append(f"  {level.upper():7s} {check}: {first.message}")
            else:
                nodes = [f.node for f in items if f.node]
                more = f" (+{len(nodes) - max_nodes} more)" if len(nodes) > max_nodes else ""
                lines.append(f"  {level.upper():7s} {check}: {generic} (x{len(items)}): {', '.join(nodes[:max_nodes])}{more}")
            if first.hint:
                lines.append(f"          hint: {first.hint}")
        return "\n".join(lines)


def _generic(f: Finding) -> str:
    """The message without the node-specific part (messages put the node name after ': ')."""
    return f.message.split(": ", 1)[0]


def _linter(backend_name: str) -> Any:
    from edgekd.backends import BACKENDS

    return getattr(BACKENDS.get(backend_name), "linter", None) if backend_name in BACKENDS else None


def linter_names() -> list[str]:
    """The backends that have a linter."""
    from edgekd.backends import BACKENDS

    return [name for name in BACKENDS.names() if _linter(name) is not None]


def lint(model_path: str | Path, target: str = "tensorrt", **kwargs: Any) -> LintReport:
    """Lint ``model_path`` for ``target``: a backend name with a linter (``tensorrt``) or a target name/path
    whose backend has a linter (its options supply ``sparse_weights`` and whether int8 is required)."""
    linter = _linter(target)
    if linter is not None:
        return linter(model_path, **kwargs)
    from edgekd.config import load_target

    tgt = load_target(target)
    linter = _linter(tgt.backend)
    if linter is None:
        raise ConfigError(f"no linter for backend {tgt.backend!r}; linters exist for: {', '.join(linter_names())}",
                          where=tgt.source)
    options = tgt.options
    kwargs.setdefault("sparse_weights", getattr(options, "sparse_weights", None))
    kwargs.setdefault("require_int8", getattr(options, "precision", None) == "int8")
    report = linter(model_path, **kwargs)
    report.target = f"{tgt.backend} ({tgt.name})"
    return report


def write_report(report: LintReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
