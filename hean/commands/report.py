"""``hean report DIR [--html FILE | --no-html]``: a run's output directory as a summary and an HTML report.

The reading, drawing and writing are :mod:`hean.report`'s; this module parses the options and maps its
errors to exit statuses: 0 done, 2 bad input (a missing or garbled file, named) or the HTML's packages
missing -- the terminal summary is printed before that, so it is there even without matplotlib.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="summarise a run's output directory (hean run --out DIR) on screen and in DIR/report.html",
        description="Print the summary of a finished run from its output directory (hean run --out DIR or hean "
        "replay --out DIR) and write a self-contained HTML report: the figures, PnL per strategy and position "
        "per symbol over time, the fills on the bid/ask, and the latency by percentile of tick-to-trade and of "
        "each stage. The HTML needs matplotlib and hdrhistogram: pip install 'hean[plot]'. Exit status: 0 done, "
        "2 a file missing or unreadable, or the HTML's packages missing (the summary is printed first).",
    )
    p.add_argument("dir", metavar="DIR", help="the run's output directory (hean run --out DIR)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--html", metavar="FILE", help="write the HTML report to FILE (default: DIR/report.html)")
    out.add_argument("--no-html", action="store_true", help="print the summary only (needs no plotting packages)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hean.report import ReportError, load_output, print_summary, write_html

    try:
        out = load_output(args.dir)
    except ReportError as e:
        print(f"hean report: {e}", file=sys.stderr)
        return 2
    print_summary(out)
    if args.no_html:
        return 0
    dest = Path(args.html) if args.html else out.path / "report.html"
    try:
        write_html(out, dest)
    except ReportError as e:
        print(f"hean report: {e}", file=sys.stderr)
        return 2
    print(f"report: {dest}")
    return 0
