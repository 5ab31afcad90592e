"""``hean bench journal``: what the journal costs the hot path, and how fast the journal stage writes.

Two measurements, in one run:

* **side by side** -- the whole engine (``hean bench pipeline``'s run) with the journal off and on, rounds
  interleaved (off, on, off, on, ...) so the machine's drift falls on both: tick-to-trade at a paced rate and
  the unpaced message rate. The journal's cost on the hot path is one more ring publish per order, report
  and book state (the journal itself runs in a worker of its own, on the CPU kept for the OS). Reported as
  the median of each round's on/off ratio.
* **the stage alone** -- the journal's step in this process over a private ring it is fed from compiled
  code, into a real segment file: records/s and MB/s it sustains (checksum, copy, release store).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from hean.jit import entry
from hean.stages.journal import journal_step
from hean.stages.ports import put_all


def _parse(argv: list[str]) -> argparse.Namespace:
    from hean.commands import plain

    p = argparse.ArgumentParser(prog="hean bench journal", description=plain(__doc__.split("\n\n")[0]))
    p.add_argument("--rounds", type=int, default=3, help="interleaved off/on rounds (default 3)")
    p.add_argument("--rate", type=float, default=100_000, help="paced rate, messages/s (default 100k)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per engine run (default 3)")
    p.add_argument("--placement", default="fused", help="hean bench pipeline's placement (default fused)")
    p.add_argument("--records", type=int, default=2_000_000, help="records for the stage alone (default 2M)")
    p.add_argument("--no-pipeline", action="store_true", help="only the stage alone")
    p.add_argument("--json", metavar="OUT", help="every figure as JSON to OUT ('-': stdout, alone)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------
# the engine, journal off and on
# ---------------------------------------------------------------------------------------------------------
def _config(folder: str, journal: bool) -> str:
    """A configuration file for one run: the built-in one, with the journal into ``folder`` when on."""
    path = os.path.join(folder, f"journal-{int(journal)}.toml")
    with open(path, "w") as f:
        f.write(f'[journal]\ndir = "{os.path.join(folder, "j")}"\n' if journal else "")
    return path


def engine_run(journal: bool, placement: str, rate: float, duration: float) -> dict:
    """One engine run (``rate`` 0: unpaced): tick-to-trade and the message rate; the journal's files removed."""
    from hean.bench.pipeline import run_measured

    folder = tempfile.mkdtemp(prefix="hean-bench-journal-")
    try:
        row, _ = run_measured(placement, int(rate), duration, _config(folder, journal))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if row["exit_code"]:
        raise RuntimeError(f"the engine run failed: {row['error']}")
    return {
        "journal": journal,
        "rate": rate,
        "t2t_p50_ns": row["tick_to_trade_ns"]["p50"],
        "t2t_p99_ns": row["tick_to_trade_ns"]["p99"],
        "messages_per_s": row["messages_per_s"],
        "orders": row["orders"],
        "journal_service_p50_ns": row["service_p50_ns"].get("journal"),
    }


def side_by_side(rounds: int, placement: str, rate: float, duration: float, say=print) -> dict:
    """Rounds of (off, on) at ``rate`` and unpaced; per-round ratios and their medians."""
    runs: list[dict] = []
    for k in range(rounds):
        for r in (rate, 0.0):
            for on in (False, True):
                row = engine_run(on, placement, r, duration)
                row["round"] = k
                runs.append(row)
                what = f"{r:,.0f} msg/s" if r else "unpaced"
                say(f"  round {k + 1} {what:>14} journal {'on ' if on else 'off'}: t2t p50 {row['t2t_p50_ns']} ns, "
                    f"p99 {row['t2t_p99_ns']} ns, {row['messages_per_s']:,.0f} msg/s")  # fmt: skip

    def ratio(key: str, r: float) -> float:
        pairs = [
            ([x for x in runs if x["round"] == k and x["rate"] == r and x["journal"]][0][key],
             [x for x in runs if x["round"] == k and x["rate"] == r and not x["journal"]][0][key])
            for k in range(rounds)
        ]  # fmt: skip
        return statistics.median(on / off for on, off in pairs if off)

    return {
        "runs": runs,
        "t2t_p50_ratio": ratio("t2t_p50_ns", rate),
        "t2t_p99_ratio": ratio("t2t_p99_ns", rate),
        "unpaced_ratio": ratio("messages_per_s", 0.0),
    }


# ---------------------------------------------------------------------------------------------------------
# the stage alone
# ---------------------------------------------------------------------------------------------------------
@entry(error_model="numpy")
def _pump(S, ports, tm, batch, total):
    """Feed ``total`` copies of ``batch`` through the reports port (one of ``ports``) and step the journal
    until each is taken; returns the records the journal took (fewer if its segment filled)."""
    src = ports[3]
    done = 0
    while done < total:
        n = min(len(batch), total - done)
        put_all(src, batch, n)
        left = n
        while left > 0:
            k = journal_step(S, ports, (), tm, 0, 0)
            if k == 0:
                return done + n - left
            left -= k
        done += n
    return done


def stage_rate(records: int) -> dict:
    """The journal stage alone: ``records`` reports into one segment file (sized to hold them all)."""
    import gc

    from hean.engine.build import _dummy_tm
    from hean.engine.config import load_config
    from hean.journal import format as J
    from hean.records import CONTROL, EXEC_REPORT, ORDER
    from hean.stages import journal as SJ
    from hean.stages.ports import BATCH, private_port
    from hean.stages.tops import make_venue_tops

    folder = tempfile.mkdtemp(prefix="hean-bench-journal-")
    entry_bytes = 8 * J.ENTRY_WORDS + EXEC_REPORT.itemsize
    mb = max(1, (records * entry_bytes >> 20) + 2)
    try:
        cfg = load_config(None, {"journal.dir": folder, "journal.segment_mb": mb})
        svc = SJ.JournalService(cfg, "bench")
        act = np.zeros(1, np.int64)
        ports = tuple(private_port(dt, 4 * BATCH, act) for dt in (CONTROL, ORDER, EXEC_REPORT, EXEC_REPORT))
        n = len(cfg.symbols)
        S = svc.start(SJ.journal_state(make_venue_tops(1, n), np.zeros(n, np.int64), np.zeros(n, np.int64), 0))
        tm = _dummy_tm(SJ.JOURNAL, len(cfg.symbols))
        batch = np.zeros(BATCH, EXEC_REPORT)
        batch["seq"] = np.arange(1, BATCH + 1)
        _pump(S, ports, tm, batch, 4 * BATCH)  # compile, and touch the first pages
        t0 = time.perf_counter()
        took = _pump(S, ports, tm, batch, records)
        dt = time.perf_counter() - t0
        S = svc.serve(S, True)
        del S
        gc.collect()
        svc.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"records": int(took), "seconds": dt, "records_per_s": took / dt, "mb_per_s": took * entry_bytes / dt / 1e6,
            "ns_per_record": dt * 1e9 / max(1, took), "entry_bytes": entry_bytes}  # fmt: skip


def main(argv: list[str]) -> int:
    from hean.bench.harness import machine_info
    from hean.commands import emit_json, text_out

    args = _parse(argv)
    out = text_out(args.json)

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    say(f"hean bench journal: the stage alone, {args.records:,} reports")
    stage = stage_rate(args.records)
    say(f"  {stage['records_per_s'] / 1e6:.2f} M records/s, {stage['mb_per_s']:,.0f} MB/s, "
        f"{stage['ns_per_record']:.1f} ns/record ({stage['entry_bytes']} bytes per entry)")  # fmt: skip
    doc = {"machine": machine_info(), "stage": stage}
    if not args.no_pipeline:
        cpus = sorted(os.sched_getaffinity(0))
        say(f"hean bench journal: the engine ({args.placement}), journal off and on, {args.rounds} round(s) of "
            f"{args.duration:g} s at {args.rate:,.0f} msg/s and unpaced, CPUs {cpus}")  # fmt: skip
        sbs = side_by_side(args.rounds, args.placement, args.rate, args.duration, say)
        say(f"  journal on / off (median of rounds): t2t p50 {sbs['t2t_p50_ratio']:.3f}, "
            f"p99 {sbs['t2t_p99_ratio']:.3f}, unpaced messages/s {sbs['unpaced_ratio']:.3f}")  # fmt: skip
        doc.update({"placement": args.placement, "rate": args.rate, "duration_s": args.duration, **sbs})
    if args.json:
        emit_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
