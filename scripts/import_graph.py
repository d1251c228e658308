"""Print which mlfs_edge package imports which (direct imports, by top-level package or module), so
the floors of `.importlinter` can be seen, not only checked:

    .venv/bin/python scripts/import_graph.py            # this checkout
    .venv/bin/python scripts/import_graph.py --dot      # Graphviz source instead of a list
    .venv/bin/python scripts/import_graph.py --checkout /tmp/old   # another checkout (git worktree)
"""

from __future__ import annotations

import argparse
import sys

import grimp


def package_edges(root: str = "mlfs_edge") -> dict[str, set[str]]:
    graph = grimp.build_graph(root)
    units = sorted(m.split(".")[1] for m in graph.find_children(root))
    edges: dict[str, set[str]] = {u: set() for u in units}
    for a in units:
        for b in units:
            if a != b and graph.direct_import_exists(importer=f"{root}.{a}", imported=f"{root}.{b}", as_packages=True):
                edges[a].add(b)
    return edges


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dot", action="store_true", help="print Graphviz dot source")
    p.add_argument("--checkout", default=None, help="the repository checkout to read (default: the installed one)")
    args = p.parse_args(argv)
    if args.checkout:
        # the editable install's finder sits in sys.meta_path ahead of sys.path: take it out
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                            and "editable" not in repr(f).lower()]
        sys.path.insert(0, args.checkout)
    edges = package_edges()
    if args.dot:
        print("digraph mlfs_edge {")
        for a, targets in edges.items():
            for b in sorted(targets):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    width = max(map(len, edges))
    for a, targets in edges.items():
        print(f"{a:<{width}} -> {', '.join(sorted(targets)) or '(nothing)'}")
    cycles = sorted({tuple(sorted((a, b))) for a, t in edges.items() for b in t if a in edges.get(b, set())})
    print("cycles between two packages: " + (", ".join(f"{a} <-> {b}" for a, b in cycles) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
