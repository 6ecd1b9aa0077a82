"""``edgekd search --replay search.toml``: rebuild the student a search chose from the same teacher and train it.

search.toml is data only (widths, removed blocks, budget, target and recipe *names*); the teacher comes from the
command line, so the file never chooses code (docs/security.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from edgekd.config import Recipe, load_recipe
from edgekd.errors import ConfigError
from edgekd.search.space import Candidate, SearchSpace
from edgekd.status import PASSING

_KEYS = {"budget", "target", "recipe", "granule", "student"}


def read_search_file(path: str | Path) -> dict[str, Any]:
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("search file not found", where=where, hint="pass the search.toml an edgekd search wrote") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=where) from None
    table = data.get("search")
    if not isinstance(table, dict) or set(data) != {"search"}:
        raise ConfigError("a search file holds one [search] table", where=where,
                          hint="pass the search.toml an edgekd search wrote")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}", where=f"{where} [search]",
                          hint=f"known: {', '.join(sorted(_KEYS))}")
    if not isinstance(table.get("granule", 8), int) or not isinstance(table.get("student"), dict):
        raise ConfigError("[search] needs granule = N and a [search.student] table", where=where)
    table["candidate"] = Candidate.from_dict(table["student"], where=f"{where} [search.student]")
    return table


def replay(path: str | Path, *, teacher: Any, data: Any, target: str | None, out: str | Path,
           recipe: Recipe | None = None, overrides: list[str] | None = None, seed: int = 0,
           task: str | None = None) -> dict[str, Any]:
    from edgekd.search.run import SearchOptions, _prepare

    table = read_search_file(path)
    recipe = recipe or load_recipe(str(table.get("recipe", "int8-kd")), overrides or [])
    from edgekd.budgets import parse_search_budget

    budget = parse_search_budget(str(table.get("budget", "macs=1G")), where=f"{path} [search] budget")
    options = SearchOptions(budgets=(budget,), recipe=recipe, seed=seed, task=task)
    setup = _prepare(teacher, data, target or str(table.get("target", "cpu")), options)
    space = SearchSpace.from_teacher(setup.teacher.module, setup.example, granule=int(table.get("granule", 8)))
    space.check(table["candidate"], where=f"{path} [search.student]")
    from edgekd.search.netadapt import Point
    from edgekd.search.run import _final

    point = Point(table["candidate"], 0.0, 0.0, 0, "replay")
    final = _final(setup, space, point, budget, Path(out), options)
    status = "passed" if final["status"] in PASSING and final.get("gate", {"ok": True})["ok"] else "failed"
    return {**final, "status": status, "candidate": table["candidate"].to_dict()}
