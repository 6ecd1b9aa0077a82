"""One status vocabulary for compressed targets (report.json) and hardware-in-the-loop checks."""

from __future__ import annotations

import json

import pytest

from edgekd.hil import CheckResult
from edgekd.status import PASSING, Status, is_passing, parse_status


def test_words_and_which_pass() -> None:
    assert [s.value for s in Status] == ["passed", "failed", "skipped", "error", "prepared, not run here"]
    assert {Status.PASSED, Status.SKIPPED, Status.NOT_RUN} == PASSING
    assert [is_passing(w) for w in ("passed", "skipped", "prepared, not run here")] == [True] * 3
    assert [is_passing(w) for w in ("failed", "error", "", None, "nonsense")] == [False] * 5


def test_older_reports_ok_reads_as_passed() -> None:
    assert parse_status("ok") is Status.PASSED and is_passing("ok")
    with pytest.raises(ValueError):
        parse_status("fine")


def test_statuses_serialise_as_their_words() -> None:
    assert json.dumps({"status": Status.NOT_RUN}) == '{"status": "prepared, not run here"}'
    result = CheckResult("size", Status.SKIPPED)
    assert result.status == "skipped" and result.ok and f"{result.status}" == "skipped"
