"""The ``hean`` command line: one sub-command per module under :mod:`hean.commands`.

Each command module keeps its top-level imports light (argparse only) and exposes ``add_parser(sub)``,
which adds its sub-parser and sets ``func`` to a ``run(args) -> int`` that imports numpy/numba lazily, so
``hean --help`` answers instantly and one command's import cost is not paid by another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hean.commands import HeanParser

# command name -> module; the order is the order shown in --help. A module may add several commands
# (run and replay; stop, halt and resume): it is imported and asked once.
COMMANDS: dict[str, str] = {
    "run": "hean.commands.run",
    "replay": "hean.commands.run",
    "record": "hean.commands.record",
    "config": "hean.commands.config",
    "stop": "hean.commands.stop",
    "halt": "hean.commands.stop",
    "resume": "hean.commands.stop",
    "risk": "hean.commands.risk",
    "rings": "hean.commands.rings",
    "bench": "hean.commands.bench",
    "book": "hean.commands.book",
    "convert": "hean.commands.convert",
    "top": "hean.commands.top",
    "strategy": "hean.commands.strategy",
    "cache": "hean.commands.cache",
    "sweep": "hean.commands.sweep",
    "journal": "hean.commands.journal",
    "report": "hean.commands.report",
    "doctor": "hean.commands.doctor",
    "metrics": "hean.commands.metrics",
    "completion": "hean.commands.completion",
}


def build_parser() -> argparse.ArgumentParser:
    parser = HeanParser(
        prog="hean",
        description="HEAN: low-latency tick-to-trade engine (numba stages over shared-memory SPSC rings).",
    )
    from hean import __version__

    parser.add_argument("--version", action="version", version=f"hean {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
