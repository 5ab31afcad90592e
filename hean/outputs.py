"""``--out DIR``: what a run leaves behind -- its summary, latency interval logs, journal and tables.

Why one directory per run: everything a user needs to audit, re-plot or share a run sits in one place,
readable without HEAN (JSON, HdrHistogram logs, Parquet or CSV) -- and ``hean report DIR`` turns it into a
terminal summary and an HTML page. The layout, for users, is in ``docs/outputs.md``:

* ``summary.json`` -- HEAN's version, the command, the effective configuration, the machine, start and end
  (UTC) and every figure of the printed summary;
* ``latency/<name>.hlog`` -- tick-to-trade and every stage histogram, 1 s intervals (HdrHistogram log 1.3);
* ``journal/<run id>/`` -- the run's journal (:mod:`hean.journal`);
* ``orders``, ``fills``, ``positions``, ``equity``, ``marks`` -- Parquet with pyarrow, else CSV.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["OutDirError", "check_out_dir", "write_outputs"]


class OutDirError(ValueError):
    """An ``--out`` directory that cannot take a run's results: the message says why."""


def check_out_dir(path: str | os.PathLike) -> Path:
    """``path`` if a run can write its results there: a new or empty folder (a run never mixes its files
    with another's, nor overwrites them)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutDirError(f"--out {p}: exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        raise OutDirError(f"--out {p}: not empty (a run writes into a new or empty folder; remove it or pick another)")
    parent = p.resolve().parent
    if not p.exists() and not os.access(parent if parent.exists() else Path.cwd(), os.W_OK):
        raise OutDirError(f"--out {p}: cannot create it (no write permission in {parent})")
    return p


def journal_dir(out: str | os.PathLike) -> str:
    """The ``journal.dir`` an ``--out`` run uses: its journal is ``<out>/journal/<run id>``."""
    return os.path.join(os.fspath(out), "journal")


def _times(result: Any) -> tuple[str, str]:
    import time

    end = time.time()
    start = end - float(getattr(result, "elapsed_s", 0.0))
    fmt = "%Y-%m-%dT%H:%M:%S"
    return (time.strftime(fmt, time.gmtime(start)) + f".{int(start % 1 * 1e3):03d}Z",
            time.strftime(fmt, time.gmtime(end)) + f".{int(end % 1 * 1e3):03d}Z")  # fmt: skip


def write_outputs(out: str | os.PathLike, cfg: Any, result: Any, summary: dict) -> list[Path]:
    """Write the results of a finished run into ``out`` (checked by :func:`check_out_dir` before the run).
    Returns the files written. The journal is already there (the run wrote it)."""
    import msgspec

    from hean import __version__
    from hean.bench.harness import machine_info

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, end = _times(result)
    doc = {
        "hean_version": __version__,
        "run_id": result.run_id,
        "command": list(sys.argv),
        "start_utc": start,
        "end_utc": end,
        "machine": machine_info(),
        "config": msgspec.to_builtins(cfg),
        "summary": summary,
    }
    files = [out / "summary.json"]
    files[0].write_text(json.dumps(doc, indent=2, default=int) + "\n")
    files += sorted((out / "latency").glob("*.hlog"))  # the supervisor wrote them as the run went
    if result.journal and Path(result.journal).is_dir():
        files += _tables(Path(result.journal), out)
    return files


def _tables(journal: Path, out: Path) -> list[Path]:
    from hean.journal.export import journal_tables, parquet_available, write_tables
    from hean.journal.reader import read_journal

    j = read_journal(journal)
    for w in j.warnings:
        print(f"hean: journal: {w}", file=sys.stderr)
    if not parquet_available():
        print(
            "hean: pyarrow is not installed: the tables are CSV (pip install 'hean[parquet]' for Parquet)",
            file=sys.stderr,
        )
    return write_tables(journal_tables(j), out, "auto")
