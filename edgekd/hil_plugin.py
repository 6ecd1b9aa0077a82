"""pytest plugin (entry point ``pytest11: edgekd``): hardware-in-the-loop checks inside a test suite.

    pytest --edgekd-bundle=build/digits --edgekd-target cpu [--edgekd-baseline base.json] -m hil

collects one test per check (``edgekd-hil.cpu::latency_p90`` ...), each marked ``hil``; a check
without a budget is reported as skipped with its reason. ``--junitxml`` gives CI its report. A node id that
pytest prints (``edgekd-hil.cpu::latency_p90``, or ``edgekd-hil.cpu`` for a target's checks) can be given back as a
positional argument to re-run just that check. Several targets take one baseline each: every
``--edgekd-baseline`` file is used for the target it was measured for.
Without ``--edgekd-bundle`` the plugin adds nothing: importing this module must stay cheap
(pytest loads it in every session of every project that has edgekd installed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgekd", "edgekd hardware-in-the-loop checks")
    group.addoption("--edgekd-bundle", metavar="DIR", help="bundle to check on this machine (enables the HIL tests)")
    group.addoption("--edgekd-target", metavar="T", action="append", default=None,
                    help="target name in the bundle, or a target .toml whose budgets override; repeat for several")
    group.addoption("--edgekd-baseline", metavar="JSON", action="append", default=None,
                    help="baseline latency profile for the regression check; repeat for several targets (each file "
                         "is used for the target it was measured for)")
    group.addoption("--edgekd-data", metavar="SRC", help="labelled data for the accuracy check instead of eval.npz")
    group.addoption("--edgekd-max-regression", metavar="PCT", default="25%",
                    help="allowed slow-down vs the baseline: 10%% (or 0.1; a bare 10 is 10%%) [25%%]")
    group.addoption("--edgekd-iterations", metavar="N", type=int, default=None,
                    help="latency queries (default: the target's [profiling] iterations)")


NODE_PREFIX = "edgekd-hil."
_SELECTED = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: hardware-in-the-loop check collected by the edgekd pytest plugin")
    bundle = config.getoption("edgekd_bundle")
    if not bundle:
        return
    _refuse_space_form(config, bundle)
    # node ids pytest printed (edgekd-hil.cpu::latency_p90) are no paths: take them out of the paths to collect
    # and select by them; with nothing left to collect, collect the bundle folder (it holds no tests)
    selected = [a for a in config.args if a.startswith(NODE_PREFIX)]
    if selected:
        config.args[:] = [a for a in config.args if a not in selected] or [str(bundle)]
        config.stash[_SELECTED] = selected


def _refuse_space_form(config: pytest.Config, bundle: str) -> None:
    """``--edgekd-bundle PATH`` (two words) is read as a test path when pytest picks its rootdir, before any plugin
    loads: a bundle outside the project then moves the rootdir (and the ini file, conftest.py with it)."""
    args = list(config.invocation_params.args)
    if "--edgekd-bundle" not in args[:-1]:
        return
    where = (config.invocation_params.dir / bundle).resolve()
    if not where.is_relative_to(config.invocation_params.dir.resolve()):
        raise pytest.UsageError(f"--edgekd-bundle {bundle}: written as two words, pytest takes the bundle for a test "
                                f"path when it picks its rootdir, and it picked {config.rootpath} (the project's "
                                f"ini file and conftest.py may be missed); write --edgekd-bundle={bundle}")


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
    baselines = [Path(b) for b in config.getoption("edgekd_baseline") or []]
    new_items: list[pytest.Item] = []
    for target in targets:
        try:
            options = CheckOptions(target=target, data=config.getoption("edgekd_data"),
                                   max_regression=parse_fraction(config.getoption("edgekd_max_regression"),
                                                                 where="--edgekd-max-regression"),
                                   iterations=config.getoption("edgekd_iterations"))
            hil = HilSession(bundle, options)
            baseline = baseline_for(hil.target_name, baselines)
            if baseline is not None:
                hil = HilSession(bundle, dataclasses.replace(options, baseline=baseline))
        except EdgekdError as exc:  # no manifest, unknown target, bad option: a usage error, not a failing check
            raise pytest.UsageError(f"edgekd: {exc}") from None
        label = hil.target_name if hil.override is None else f"{hil.target_name}@{Path(str(target)).stem}"
        collector = HilTarget.from_parent(session, name=f"{NODE_PREFIX}{label}", nodeid=f"{NODE_PREFIX}{label}",
                                          session_obj=hil)
        collected = collector.collect()
        # the terminal's "collected N items" counts collect reports: without one these items read as "-7 selected"
        config.hook.pytest_collectreport(report=pytest.CollectReport(collector.nodeid, "passed", None, collected))
        new_items += collected
    items[:0] = new_items
    _keep_selected(config, items)


def baseline_for(target: str, baselines: list[Path]) -> Path | None:
    """The ``--edgekd-baseline`` file measured for ``target``: one file is every target's (the regression check
    refuses it for another target, saying so); of several, the one whose recorded target is ``target``."""
    if len(baselines) <= 1:
        return baselines[0] if baselines else None
    import json

    from edgekd.errors import EdgekdError

    found = []
    for path in baselines:
        try:
            recorded = ((json.loads(path.read_text()).get("target") or {}).get("name"))
        except (OSError, ValueError, AttributeError) as exc:
            raise EdgekdError(f"cannot read the baseline's target: {exc}", where=str(path),
                              hint="pass files written by `edgekd profile` or `edgekd check --save-baseline`") from None
        if recorded == target:
            found.append(path)
    if len(found) > 1:
        raise EdgekdError(f"{len(found)} baselines were measured for target {target!r}: "
                          + ", ".join(map(str, found)), where="--edgekd-baseline", hint="pass one per target")
    return found[0] if found else None


def _keep_selected(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Node ids given back on the command line (``edgekd-hil.cpu::latency_p90``, ``edgekd-hil.cpu``) select."""
    selected = config.stash.get(_SELECTED, None)
    if not selected:
        return
    known = {i.nodeid for i in items if i.nodeid.startswith(NODE_PREFIX)}
    unknown = [s for s in selected if s not in known and not any(k.startswith(s + "::") for k in known)]
    if unknown:
        raise pytest.UsageError(f"edgekd: no such HIL check {', '.join(unknown)}; collected: {', '.join(sorted(known))}")
    keep = [i for i in items if any(i.nodeid == s or i.nodeid.startswith(s + "::") for s in selected)]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
