"""mlfs-edge info: version, CPU features, bundled assets; --families: the family support table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="version, CPU features, bundled models and datasets",
                       description="Show the package version, the CPU features the native core detected "
                                   "and the kernels it will use, and where each bundled asset was found "
                                   "(or the command that installs it).")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--families", action="store_true",
                   help="print which pipeline stages work for each model family (the support table)")
    p.add_argument("--markdown", action="store_true", help="with --families: the README's Markdown table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.families:
        from mlfs_edge.families import markdown_table, text_table

        print(markdown_table() if args.markdown else text_table(), end="")
        return 0
    import mlfs_edge
    from mlfs_edge import _core
    from mlfs_edge.assets import asset_report, cache_dir
    from mlfs_edge.report import markdown_table

    feats = _core.cpu_features()
    print(f"mlfs_edge {mlfs_edge.__version__}  (native core for {_core.arch()})")
    print(f"cpu features : {', '.join(k for k, v in feats.items() if v) or 'none'}")
    print(f"missing      : {', '.join(k for k, v in feats.items() if not v) or 'none'}")
    print(f"kernel ISAs  : {', '.join(_core.supported_isas())} (selected: {_core.selected_isa()})")
    print(f"cache dir    : {cache_dir()}")
    print()
    report = asset_report()
    rows = [{"asset": r["name"], "kind": r["kind"], "status": "found" if r["path"] else "MISSING",
             "where / how to install": r["path"] or r["install"]} for r in report]
    print(markdown_table(rows))
    missing = [r for r in rows if r["status"] == "MISSING"]
    if missing:
        print(f"\n{len(missing)} asset(s) missing: run `make assets` to install them.")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_features": feats, "assets": report}, indent=2))
    return 0
