"""edgekd list: what recipes, targets, passes and backends exist here."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list recipes, targets, passes or backends",
                       description="List what exists. Backends show whether they are available and, if not, why.")
    # "profiles": the old name of "recipes", accepted with a note
    p.add_argument("what", choices=["recipes", "targets", "passes", "backends", "profiles"],
                   metavar="{recipes,targets,passes,backends}")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def collect(what: str) -> list[dict[str, str]]:
    if what == "profiles":
        from edgekd.deprecation import deprecated

        deprecated("`edgekd list profiles`", "`edgekd list recipes`")
        what = "recipes"
    if what in ("recipes", "targets"):
        import tomllib

        from edgekd.config import available

        rows = []
        for name, path in available(what).items():
            try:  # one broken file on $EDGEKD_*_PATH must not hide the others
                with path.open("rb") as fh:
                    data = tomllib.load(fh)
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                data = {"description": f"UNREADABLE: {exc}"}
            rows.append({"name": name, "description": str(data.get("description", "")), "path": str(path),
                         **({"backend": str(data.get("backend", ""))} if what == "targets" else {})})
        return rows
    if what == "passes":
        from edgekd.passes import PASSES, pass_listing

        return [pass_listing(n) for n in PASSES.names()]  # a built-in's row is static: no pass module (torch) imported
    from edgekd.backends import backend_status

    return [{"name": n, "status": "available" if s.available else "unavailable", "reason": s.reason}
            for n, s in backend_status().items()]


def run(args: argparse.Namespace) -> int:
    rows = collect(args.what)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"edgekd {args.what}")
    cols = [c for c in (rows[0] if rows else {"name": ""}) if c != "path"]
    for c in cols:
        table.add_column(c)
    for row in rows:
        table.add_row(*[escape(row.get(c, "")) for c in cols])  # "[tensorrt]" in a reason is not markup
    Console().print(table)
    return 0
