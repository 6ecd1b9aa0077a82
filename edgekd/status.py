"""The one status vocabulary: a compressed target in report.json and a hardware-in-the-loop check use the same words
(documented in docs/hil-and-app-builds.md, "Status words").

This module is torch-free and imports nothing of edgekd's.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A StrEnum: each member equals its word, so JSON, JUnit and comparisons with stored reports see plain text."""

    PASSED = "passed"  # every check (parity, budgets) held
    FAILED = "failed"  # a check ran and its limit was not met
    SKIPPED = "skipped"  # a check that had nothing to check (no budget, no data); the reason says which
    ERROR = "error"  # a check could not run (damaged bundle, runtime failure)
    #: a target whose artifact cannot run on this machine (TensorRT without a GPU): its files are prepared
    #: (linted ONNX, build_engine.sh for trtexec on the device) but no engine was built and nothing was measured
    NOT_RUN = "prepared, not run here"


#: statuses that do not fail a run (exit status 0)
PASSING = frozenset({Status.PASSED, Status.SKIPPED, Status.NOT_RUN})
#: words that older edgekd versions wrote into report.json, still read
_LEGACY = {"ok": Status.PASSED}


def parse_status(text: str) -> Status:
    """A stored status word as a Status (an older report's "ok" is PASSED); an unknown word is a ValueError."""
    return _LEGACY.get(text) or Status(text)


def is_passing(text: str | None) -> bool:
    """Whether a stored status word lets a run succeed; a missing or unknown word does not."""
    try:
        return parse_status(text or "") in PASSING
    except ValueError:
        return False
