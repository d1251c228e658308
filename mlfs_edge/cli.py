"""mlfs-edge: command-line entry point.

Each sub-command lives in its own module under ``mlfs_edge.commands`` with ``ORDER`` (its place in
``--help``), ``register(subparsers)`` and a ``run(args) -> int`` set as the parser's ``func``.
Commands are discovered, so adding one means adding one file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import mlfs_edge.commands as commands_pkg


def _command_modules() -> list:
    mods = [importlib.import_module(f"{commands_pkg.__name__}.{m.name}")
            for m in pkgutil.iter_modules(commands_pkg.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlfs-edge",
        description="Turn one pretrained transformer into a palette of smaller models for edge CPUs: "
                    "MLFS supernet training, slicing, int8/fp16 quantization, ExecuTorch export and a "
                    "native C++ engine.",
        epilog="Start with `mlfs-edge info`, then `mlfs-edge demo`. Every command has --help.")
    p.add_argument("--verbose", action="store_true",
                   help="show every third-party warning and log line (by default the known ones that need no "
                        "action, listed in mlfs_edge/quiet.py, are hidden)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given: commands record it beside their results
    if not args.verbose:
        from mlfs_edge import quiet

        quiet.install()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Expected user errors: one line that says what to do, no traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mlfs-edge {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
