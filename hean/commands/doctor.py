"""``hean doctor [--json OUT]``: check this host for low-latency deployment (:mod:`hean.doctor`)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this host for low-latency trading and say how to fix each finding",
        description="Check the CPUs (count, SMT siblings, isolation, frequency governor, turbo), the clock source "
        "and TSC, transparent huge pages, swap, /dev/shm, the memlock limit, interrupts on the workers' CPUs, "
        "the numba/llvmlite versions and segments of dead runs. Each check prints OK, WARN or FAIL, what it "
        "measured and the fix. Exit status: 0 when nothing FAILs, 1 otherwise.",
    )
    p.add_argument("--json", metavar="OUT", help="also write the checks as JSON to OUT ('-': stdout, alone)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hean.doctor import FAIL, as_json, run_checks

    checks = run_checks()
    if args.json != "-":
        _print(checks)
    if args.json:
        text = json.dumps(as_json(checks), indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 1 if any(c.status == FAIL for c in checks) else 0


def _print(checks) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
    t = Table(show_lines=False, expand=False)
    for col in ("check", "status", "measured", "fix"):
        t.add_column(col, overflow="fold")
    for c in checks:
        t.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.value, c.fix)
    Console(width=max(100, Console().width)).print(t)
