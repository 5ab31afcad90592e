"""``hean rings``: list, inspect and clean up HEAN ring segments in /dev/shm.

* ``hean rings`` (or ``hean rings list``): every ``/dev/shm/hean*`` ring with capacity, fill level,
  high-water mark, counters, and the producer/consumer pids with whether each is alive.
* ``hean rings inspect NAME``: the full header of one ring (layout, dtype, cursors, counters).
* ``hean rings clean [NAME...]``: remove what no live process owns: every segment and temp folder of a run
  none of whose processes is left (whoever holds one of its segments open or mapped is an owner), and rings
  of no run whose recorded owners are all dead; all of them, or only the named runs or segments. A live
  run is never touched, nor another user's. ``--dry-run`` lists what would go and why.
  ``hean rings --remove-stale`` lists, then cleans.

Reading a ring maps it read-only and never changes it.
"""

from __future__ import annotations

import argparse
import sys

from hean.commands import JSON_HELP, emit_json, text_out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rings",
        help="list, inspect and remove stale shared-memory rings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", metavar="OUT", help=JSON_HELP)
    p.add_argument("--remove-stale", action="store_true", help="list, then remove stale rings")
    p.set_defaults(func=run, action="list", names=[])
    ss = p.add_subparsers(dest="action", metavar="ACTION")
    lp = ss.add_parser("list", help="list rings (the default)")
    lp.add_argument("--json", metavar="OUT", help=JSON_HELP)
    lp.add_argument("--remove-stale", action="store_true", help="list, then remove stale rings")
    ip = ss.add_parser("inspect", help="show one ring's full header")
    ip.add_argument("names", nargs="*", metavar="NAME", help="ring segment name(s)")
    ip.add_argument("--json", metavar="OUT", help=JSON_HELP)
    cp = ss.add_parser("clean", help="remove every segment and temp folder of runs with no process left")
    cp.add_argument("names", nargs="*", metavar="NAME", help="only consider these runs (ids) or segments")
    cp.add_argument("--dry-run", action="store_true", help="only say what would be removed")


def run(args: argparse.Namespace) -> int:
    from hean.rings import inspect as ri

    action = args.action or "list"
    out = text_out(getattr(args, "json", None))  # with --json -, stdout is the JSON alone
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
        for info in infos:
            print(ri.format_info(info), file=out)
        if args.json:
            emit_json(args.json, [i.as_dict() for i in infos])
        return rc

    if action == "list":
        infos, errors = ri.scan()
        print(ri.format_table(infos, errors), file=out)
        if args.json:
            emit_json(args.json, {"rings": [i.as_dict() for i in infos], "unreadable": dict(errors)})
        if not args.remove_stale:
            return 0
    return clean(set(args.names) if action == "clean" and args.names else None, dry_run, out)


def clean(only: set[str] | None, dry_run: bool, out) -> int:
    """Remove what no live process owns (every segment and temp folder of a dead run, stale loose rings) and
    say what went and what was kept, and why."""
    from hean.engine.runs import clean_stale

    removed, kept = clean_stale(only, dry_run=dry_run)
    for line in removed + kept:
        print(line, file=out)
    if not removed:
        print("nothing stale to remove (stale: no process of the run is left)", file=out)
    return 0
