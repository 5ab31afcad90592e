"""``hean journal info|tail|export``: read a run's journal (:mod:`hean.journal`).

A journal is named by its folder (``<journal.dir>/<run id>``, or an ``--out`` directory, whose journal is
under ``journal/``) or, while the run goes on, by its run id (the run's manifest says where it writes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "journal",
        help="read a run's journal: info, tail (follow a live run), export as Parquet/CSV",
        description="Read a run's journal of orders, reports, rejects, controls and top-of-book marks. RUN is a "
        "journal folder, an --out directory, or the id of a running engine.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="{info,tail,export}")
    info = verbs.add_parser("info", help="segments, records by kind, how it ended")
    info.add_argument("run", metavar="RUN")
    info.add_argument("--json", metavar="OUT", help="also write it as JSON to OUT ('-': stdout, alone)")
    tail = verbs.add_parser("tail", help="print records as the run writes them (Ctrl-C to stop)")
    tail.add_argument("run", metavar="RUN")
    tail.add_argument("--kinds", default="orders,reports,rejects,controls,risk",
                      help="comma-separated kinds to print (also: marks, market); default: the order flow")  # fmt: skip
    tail.add_argument("--no-follow", action="store_true", help="print what is there and stop")
    exp = verbs.add_parser("export", help="write orders, fills, positions, equity and marks tables")
    exp.add_argument("run", metavar="RUN")
    exp.add_argument("--format", choices=("parquet", "csv", "auto"), default="auto",
                     help="auto (the default): Parquet when pyarrow is installed, else CSV")  # fmt: skip
    exp.add_argument("-o", "--out", metavar="DIR", help="where to write the tables (default: the journal's parent)")
    p.set_defaults(func=run)


def journal_folder(name: str) -> Path:
    """The journal folder RUN names (see the module docstring); JournalError when there is none."""
    from hean.journal.format import SUFFIX, JournalError

    path = Path(name)
    if path.is_dir():
        if list(path.glob(f"journal-*{SUFFIX}")):
            return path
        runs = sorted(d for d in (path / "journal").glob("*") if d.is_dir()) if (path / "journal").is_dir() else []
        if len(runs) == 1:
            return runs[0]
        if len(runs) > 1:
            raise JournalError(f"{path}: several journals under journal/ ({', '.join(r.name for r in runs)}); name one")
        raise JournalError(f"{path}: no journal in it (journal-*.hj, or journal/<run id>/)")
    from hean.telemetry.manifest import ManifestError, find_run

    try:
        m = find_run(name)
    except ManifestError:
        raise JournalError(f"{name}: neither a journal folder nor a running engine's id") from None
    if not m.journal:
        raise JournalError(f"run {m.run_id} keeps no journal (set journal.dir, or run with --out DIR)")
    return Path(m.journal)


def run(args: argparse.Namespace) -> int:
    from hean.journal.format import JournalError

    try:
        folder = journal_folder(args.run)
        return {"info": _info, "tail": _tail, "export": _export}[args.verb](folder, args)
    except JournalError as e:
        print(f"hean journal: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _warn(j) -> None:
    for w in j.warnings:
        print(f"hean journal: warning: {w}", file=sys.stderr)


def _info(folder: Path, args: argparse.Namespace) -> int:
    from hean.commands import emit_json, text_out
    from hean.journal.reader import read_journal

    j = read_journal(folder)
    _warn(j)
    out = text_out(args.json)
    info = {
        "folder": str(folder),
        "run_id": j.meta.get("run_id", ""),
        "hean_version": j.meta.get("hean_version", ""),
        "segments": j.segments,
        "closed": j.closed,
        "records": j.counts(),
        "symbols": [s["name"] for s in j.meta.get("symbols", [])],
        "strategies": j.meta.get("strategies", []),
        "warnings": j.warnings,
    }
    print(f"journal {folder} (run {info['run_id']}, HEAN {info['hean_version']})", file=out)
    print(f"  {j.segments} segment(s), {'closed' if j.closed else 'NOT closed (cut short or still running)'}", file=out)
    for k, n in info["records"].items():
        print(f"  {k:<9} {n:>12,}", file=out)
    if args.json:
        emit_json(args.json, info)
    return 0


def _tail(folder: Path, args: argparse.Namespace) -> int:
    from hean.journal.reader import follow, read_journal

    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    if args.no_follow:
        j = read_journal(folder)
        _warn(j)
        for kind in ("controls", "risk", "orders", "rejects", "reports", "marks", "market"):
            if kind in kinds:
                for rec in j[kind]:
                    print(_line(kind, rec))
        return 0
    for kind, rec in follow(folder):
        if kind in kinds:
            print(_line(kind, rec), flush=True)
    return 0


def _line(kind: str, rec) -> str:
    """One record as ``kind field=value ...`` (padding fields left out)."""
    fields = " ".join(f"{n}={rec[n]}" for n in rec.dtype.names if not n.startswith("_"))
    return f"{kind:<8} {fields}"


def _export(folder: Path, args: argparse.Namespace) -> int:
    from hean.journal.export import journal_tables, parquet_available, write_tables
    from hean.journal.reader import read_journal

    j = read_journal(folder)
    _warn(j)
    fmt = args.format
    if fmt == "auto" and not parquet_available():
        print(
            "hean journal: pyarrow is not installed: writing CSV (pip install 'hean[parquet]' for Parquet)",
            file=sys.stderr,
        )
        fmt = "csv"
    out = Path(args.out) if args.out else folder.parent
    try:
        files = write_tables(journal_tables(j), out, fmt)
    except (OSError, ValueError) as e:
        print(f"hean journal: cannot write the tables to {out}: {e}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0
