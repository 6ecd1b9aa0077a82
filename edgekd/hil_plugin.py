"""pytest plugin (entry point ``pytest11: edgekd``): hardware-in-the-loop checks inside a test suite.

    pytest --edgekd-bundle build/digits --edgekd-target cpu [--edgekd-baseline base.json] -m hil

collects one test per check (``edgekd-hil.cpu::latency_p90`` ...), each marked ``hil``; a check
without a budget is reported as skipped with its reason. ``--junitxml`` gives CI its report.
Without ``--edgekd-bundle`` the plugin adds nothing: importing this module must stay cheap
(pytest loads it in every session of every project that has edgekd installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgekd", "edgekd hardware-in-the-loop checks")
    group.addoption("--edgekd-bundle", metavar="DIR", help="bundle to check on this machine (enables the HIL tests)")
    group.addoption("--edgekd-target", metavar="T", action="append", default=None,
                    help="target name in the bundle, or a target .toml whose budgets override; repeat for several")
    group.addoption("--edgekd-baseline", metavar="JSON", help="baseline latency profile for the regression check")
    group.addoption("--edgekd-data", metavar="SRC", help="labelled data for the accuracy check instead of eval.npz")
    group.addoption("--edgekd-max-regression", metavar="PCT", default="25%",
                    help="allowed slow-down vs the baseline: 10%% (or 0.1; a bare 10 is 10%%) [25%%]")
    group.addoption("--edgekd-iterations", metavar="N", type=int, default=None,
                    help="latency queries (default: the target's [profiling] iterations)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: hardware-in-the-loop check collected by the edgekd pytest plugin")


class HilCheckFailed(Exception):
    """A check failed; its message is the check's reason."""


class HilItem(pytest.Item):
    def __init__(self, *, session_obj: Any, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session_obj = session_obj
        self.check = check
        self.add_marker("hil")

    def runtest(self) -> None:
        result = self.session_obj.run(self.check)
        for key in ("value", "limit", "reason"):
            if getattr(result, key):
                self.user_properties.append((key, getattr(result, key)))
        if result.status == "skipped":  # reported at the item, not at this line of the plugin
            raise pytest.skip.Exception(result.reason, _use_item_location=True)
        if result.status in ("failed", "error"):
            raise HilCheckFailed(f"{result.status}: {result.reason}\n  measured: {result.value}\n  limit: {result.limit}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, HilCheckFailed):
            return f"edgekd {self.check}: {excinfo.value}"
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, self.name


class HilTarget(pytest.Collector):
    def __init__(self, *, session_obj: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session_obj = session_obj

    def collect(self) -> list[pytest.Item]:
        from edgekd.hil import CHECKS

        return [HilItem.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}", session_obj=self.session_obj,
                                    check=name) for name in CHECKS]


@pytest.hookimpl(tryfirst=True)  # before -m/-k deselection, so `-m hil` keeps these
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    bundle = config.getoption("edgekd_bundle")
    if not bundle:
        return
    from edgekd.budgets import parse_fraction
    from edgekd.errors import EdgekdError
    from edgekd.hil import CheckOptions, HilSession

    targets = config.getoption("edgekd_target") or [None]
    baseline = config.getoption("edgekd_baseline")
    new_items: list[pytest.Item] = []
    for target in targets:
        try:
            options = CheckOptions(target=target, baseline=Path(baseline) if baseline else None,
                                   data=config.getoption("edgekd_data"),
                                   max_regression=parse_fraction(config.getoption("edgekd_max_regression"),
                                                                 where="--edgekd-max-regression"),
                                   iterations=config.getoption("edgekd_iterations"))
            hil = HilSession(bundle, options)
        except EdgekdError as exc:  # no manifest, unknown target, bad option: a usage error, not a failing check
            raise pytest.UsageError(f"edgekd: {exc}") from None
        label = hil.target_name if hil.override is None else f"{hil.target_name}@{Path(str(target)).stem}"
        collector = HilTarget.from_parent(session, name=f"edgekd-hil.{label}", nodeid=f"edgekd-hil.{label}",
                                          session_obj=hil)
        new_items += collector.collect()
    items[:0] = new_items
