"""``hean config show|init``: the effective configuration, or a commented starter file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective configuration or write a starter file")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = act.add_parser("show", help="print the effective configuration (defaults filled in) as TOML")
    show.add_argument("--config", "-c", metavar="FILE", help="the file to read (default: the embedded one)")
    init = act.add_parser("init", help="write a commented starter configuration")
    init.add_argument("path", nargs="?", default="hean.toml", help="where to write it (default hean.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hean.engine.config import DEFAULT_TOML, ConfigError, dump_toml, load_config

    if args.action == "show":
        try:
            cfg = load_config(args.config)
            from hean.engine.build import check_config

            check_config(cfg)
        except ConfigError as e:
            print(f"hean: configuration error: {e}", file=sys.stderr)
            return 2
        print(dump_toml(cfg))
        return 0
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"hean: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    path.write_text(DEFAULT_TOML)
    print(f"wrote {path}")
    return 0
