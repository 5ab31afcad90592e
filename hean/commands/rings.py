"""``hean rings``: list, inspect and clean up HEAN ring segments in /dev/shm.

* ``hean rings`` (or ``hean rings list``): every ``/dev/shm/hean*`` ring with capacity, fill level,
  high-water mark, counters, and the producer/consumer pids with whether each is alive.
* ``hean rings inspect NAME``: the full header of one ring (layout, dtype, cursors, counters).
* ``hean rings clean [NAME...]``: unlink stale rings (every recorded owner dead), all of them or only the
  named ones; ``--dry-run`` only lists them. ``hean rings --remove-stale`` lists, then cleans.

Reading a ring maps it read-only and never changes it. Top-level imports stay light (argparse only).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rings",
        help="list, inspect and remove stale shared-memory rings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.add_argument("--remove-stale", action="store_true", help="list, then remove stale rings")
    p.set_defaults(func=run, action="list", names=[])
    ss = p.add_subparsers(dest="action", metavar="ACTION")
    lp = ss.add_parser("list", help="list rings (the default)")
    lp.add_argument("--json", action="store_true", help="machine-readable JSON")
    lp.add_argument("--remove-stale", action="store_true", help="list, then remove stale rings")
    ip = ss.add_parser("inspect", help="show one ring's full header")
    ip.add_argument("names", nargs="*", metavar="NAME", help="ring segment name(s)")
    ip.add_argument("--json", action="store_true", help="machine-readable JSON")
    cp = ss.add_parser("clean", help="unlink stale rings (all, or only the named ones)")
    cp.add_argument("names", nargs="*", metavar="NAME", help="only consider these rings")
    cp.add_argument("--dry-run", action="store_true", help="only say what would be removed")


def run(args: argparse.Namespace) -> int:
    from hean.rings import inspect as ri

    out = sys.stdout
    action = args.action or "list"
    dry_run = getattr(args, "dry_run", False)
    if action == "inspect":
        if not args.names:
            print("hean rings inspect: give at least one ring name (see `hean rings`)", file=sys.stderr)
            return 2
        rc = 0
        infos = []
        for name in args.names:
            try:
                infos.append(ri.ring_info(name))
            except Exception as e:  # a clear one-line error per bad name, keep going
                print(f"hean rings inspect: {e}", file=sys.stderr)
                rc = 1
        if args.json:
            print(json.dumps([i.as_dict() for i in infos], indent=2), file=out)
        else:
            for info in infos:
                print(ri.format_info(info), file=out)
        return rc

    infos, errors = ri.scan()
    if args.names and action == "clean":
        infos = [i for i in infos if i.name in set(args.names)]
    if action == "list":
        if args.json:
            print(
                json.dumps({"rings": [i.as_dict() for i in infos], "unreadable": dict(errors)}, indent=2),
                file=out,
            )
        else:
            print(ri.format_table(infos, errors), file=out)
        if not args.remove_stale:
            return 0
    removed = ri.remove_stale(infos, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    if not removed:
        print("no stale HEAN rings (stale: no recorded owner alive)", file=out)
    for name in removed:
        print(f"{verb} stale ring {name}", file=out)
    return 0
