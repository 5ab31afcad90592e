"""``hean doctor [--json OUT]``: check this host for low-latency deployment (:mod:`hean.doctor`)."""

from __future__ import annotations

import argparse


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
    from hean.commands import emit_json, text_out
    from hean.doctor import FAIL, as_json, run_checks

    checks = run_checks()
    _print(checks, text_out(args.json))  # with --json -, stdout is the JSON alone and the table on stderr
    if args.json:
        emit_json(args.json, as_json(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def _print(checks, file) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
    t = Table(show_lines=False, expand=False)
    for col in ("check", "status", "measured", "fix"):
        t.add_column(col, overflow="fold")
    for c in checks:
        t.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.value, c.fix)
    Console(file=file, width=max(100, Console(file=file).width)).print(t)
