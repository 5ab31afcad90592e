"""``hean strategy new NAME [--dir DIR] [--force]``: write a commented, working starter strategy.

Why: the fastest way into :mod:`hean.api` is a file that already loads, compiles and trades, explained line by
line (:mod:`hean.strategies.template`). The file is written only after the name and the place are checked,
never over an existing file unless asked, and atomically (a reader never sees half of it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategy", help="write a commented starter strategy (hean.api)")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = act.add_parser(
        "new",
        help="write NAME.py: a commented mean-reversion strategy to start from",
        description="Write DIR/NAME.py, a complete strategy on hean.api (a mean-reversion trader with every "
        "part of the API explained), and say how to run it.",
    )
    new.add_argument("name", metavar="NAME", help="the strategy's name, a Python identifier (the file is NAME.py)")
    new.add_argument("--dir", default=".", metavar="DIR", help="the folder to write it in (default: here)")
    new.add_argument("--force", action="store_true", help="overwrite an existing NAME.py")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hean.paths import output_problem, write_atomically
    from hean.strategies.template import render

    try:
        text = render(args.name)
    except ValueError as e:
        print(f"hean: {e}", file=sys.stderr)
        return 2
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"hean: --dir {folder}: no such folder", file=sys.stderr)
        return 2
    path = folder / f"{args.name}.py"
    if (path.exists() or path.is_symlink()) and not args.force:
        print(f"hean: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    problem = output_problem(path)
    if problem:
        print(f"hean: cannot write {path}: {problem}", file=sys.stderr)
        return 2
    try:
        write_atomically(path, lambda f: f.write(text))
    except OSError as e:
        print(f"hean: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(_next_steps(path))
    return 0


def _next_steps(path: Path) -> str:
    return (
        f"wrote {path}: a mean-reversion strategy on hean.api, commented line by line.\n"
        "To run it, put in a configuration file (`hean config init CONFIG.toml` writes a starter one):\n\n"
        "    [[strategies]]\n"
        f'    path = "{path.as_posix()}:STRATEGY"\n\n'
        "and run `hean run -c CONFIG.toml` from this directory (the path is relative to where hean runs)."
    )
