"""``hean bench pipeline``: the whole engine -- tick-to-trade percentiles at fixed feed rates, the highest
sustained rate, and start-up time, for each placement this machine allows.

Every figure comes from a real run of the engine (supervisor, worker processes, rings, telemetry): the
feed stamps each message with its *scheduled* send time, so a pipeline that falls behind is charged for
the backlog (no coordinated omission); tick-to-trade is that stamp to the order leaving the router
(the router's ``e2e`` histogram). "Sustained" means the feed published at least 99 % of its scheduled
messages (it never drops: a full ring makes it fall behind, which shows up here as a shortfall).

Placements: ``fused`` (one worker runs every stage -- the default on two CPUs, where it runs on the
second and leaves the first to the OS and the supervisor), ``two`` (the feed alone, the rest fused, a CPU
each), ``split`` (one process per stage; on fewer than six CPUs they are unpinned and spin-then-yield).
The unpaced row (rate ``max``) gives the throughput through book, indicators, risk, router and venue.

Before each row, the machine's own noise is measured on every CPU this process may use
(:mod:`hean.bench.noise`, ``--noise-s`` seconds per CPU): the share of time a pinned spinning process loses
to the machine, and the *wait floor* -- what a message scheduled at a random instant waits because of those
stalls alone, at p99 and p99.9. Tick-to-trade tails are only comparable between rows of similar noise.

``--json FILE`` writes every figure (``-``: the JSON alone on stdout, the table on stderr); ``--hlog FILE``
writes the tick-to-trade histogram of every run into one HdrHistogram interval log, one interval per run,
tagged ``<placement>.<rate>`` (``fused.100000``, ``two.unpaced``) -- the whole distribution, for
HistogramLogAnalyzer or the ``hdrhistogram`` package, where the table shows six percentiles.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from hean.bench.harness import machine_info
from hean.bench.noise import machine_noise
from hean.bench.report import fmt_ns, fmt_rate
from hean.commands import HeanParser, emit_json, text_out
from hean.engine.config import STAGES
from hean.paths import output_problem
from hean.telemetry.histogram import new_histogram
from hean.telemetry.hlog import EncodedHistogram, encode_interval, write_hlog

PLACEMENTS = {
    "fused": [list(STAGES)],
    "two": [["feed"], ["book", "strategy", "risk", "router", "venue"]],
    "split": [[s] for s in STAGES],
}
DEFAULT_RATES = (10_000, 100_000, 1_000_000, 0)


def parse_placements(p: argparse.ArgumentParser, text: str) -> list[str]:
    """``--placements``' comma list, each a key of :data:`PLACEMENTS` (else the parser's usage error)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in PLACEMENTS]
    if bad:
        p.error(f"unknown placement(s) {bad}; choose from {sorted(PLACEMENTS)}")
    return names


def _parse(argv: list[str]) -> argparse.Namespace:
    p = HeanParser(prog="hean bench pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--placements", default="fused,two,split", help="comma list of fused, two, split")
    p.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES), help="messages/s; 0 = unpaced")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument(
        "--noise-s", type=float, default=1.0, help="seconds of noise probe per CPU before each row (0: none)"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="run this configuration (e.g. your strategy) instead of the default; "
        "the benchmark sets its duration, placement and pacing",
    )
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON ('-': to stdout, the table to stderr)")
    p.add_argument(
        "--hlog",
        metavar="FILE",
        help="write each run's tick-to-trade histogram to an HdrHistogram interval log, tagged PLACEMENT.RATE",
    )
    args = p.parse_args(argv)
    args.placements = parse_placements(p, args.placements)
    args.rates = [int(float(x)) for x in args.rates.split(",") if x.strip()]
    for opt in ("json", "hlog"):  # before minutes of runs: a result is never lost to a typo
        path = getattr(args, opt)
        problem = path and path != "-" and output_problem(path)
        if problem:
            p.error(f"--{opt} {path}: {problem}")
    if args.hlog == "-":
        p.error("--hlog needs a file (the log is not text for a terminal)")
    return args


def hlog_tag(placement: str, rate: int) -> str:
    """The interval tag of one run: ``<placement>.<rate or 'unpaced'>`` (only ``[A-Za-z0-9_.-]``)."""
    return f"{placement}.{rate if rate > 0 else 'unpaced'}"


def run_one(placement: str, rate: int, duration: float, config: str | None = None) -> dict:
    """One engine run (of ``config``, default: the built-in configuration); the figures this benchmark reports."""
    return run_measured(placement, rate, duration, config)[0]


def run_measured(placement: str, rate: int, duration: float, config: str | None = None) -> tuple[dict, np.ndarray]:
    """:func:`run_one`'s figures and the run's tick-to-trade histogram (the router's ``e2e`` counts, 200 KiB:
    kept out of the figures so the JSON stays small; an empty histogram when the run had no router)."""
    from hean.engine.config import load_config
    from hean.engine.summary import build_summary
    from hean.engine.supervisor import Supervisor
    from hean.records import RejectReason

    overrides = {"engine.duration_s": duration, "placement.workers": PLACEMENTS[placement]}
    if rate > 0:
        overrides.update({"feed.pace": "rate", "feed.rate": float(rate)})
    else:
        overrides["feed.pace"] = "fast"
    cfg = load_config(config, overrides=overrides)
    result = Supervisor(cfg).run()
    s = build_summary(result, [x.name for x in cfg.symbols], {int(r): r.name for r in RejectReason})
    elapsed = max(s["feed_s"], 1e-9)  # the feed's publishing time (start-up and drain excluded)
    e2e = result.telemetry.get("router", {}).get("hists", {}).get("e2e")
    row = {
        "placement": placement,
        "workers": s["placement"]["workers"],
        "target_rate": rate,
        "events": s["events"],
        "events_per_s": s["events"] / elapsed,
        "messages": s["messages"],
        "messages_per_s": s["messages"] / elapsed,
        "exit_code": s["exit_code"],
        "error": s["error"],
        "startup_s": s["startup_s"],
        "orders": s["orders"],
        "fills": s["fills"],
        "tick_to_trade_ns": s["tick_to_trade_ns"],
        "book_age_ns": s["stages"].get("book", {}).get("age_ns", {}),
        "service_p50_ns": {k: v["service_ns"]["p50"] for k, v in s["stages"].items()},
    }
    return row, (np.array(e2e, dtype=np.int64) if e2e is not None else new_histogram())


def _noise_cols(noise: list[dict]) -> str:
    """The worst CPU's share of time lost to the machine and its wait floor (see hean.bench.noise)."""
    if not noise:
        return ""
    lost = max(n["lost_pct"] for n in noise)
    f99 = max(n["wait_floor_p99_ns"] for n in noise)
    f999 = max(n["wait_floor_p999_ns"] for n in noise)
    return f"{lost:>10.2f}% {fmt_ns(int(f99)):>9} {fmt_ns(int(f999)):>7}"


def _sustained(row: dict) -> bool:
    """The feed kept up with its schedule (>= 99 % of the scheduled messages went out) and nothing failed."""
    if not row["target_rate"]:
        return row["exit_code"] == 0
    return row["exit_code"] == 0 and row["messages_per_s"] >= 0.99 * row["target_rate"]


def main(argv: list[str]) -> int:
    args = _parse(argv)
    out = text_out(args.json)  # with --json -, stdout is the JSON alone
    rows = []
    intervals: list[tuple[str, float, float, EncodedHistogram]] = []  # (tag, start s, length s, tick-to-trade)
    start_unix = time.time()
    print(f"hean bench pipeline: {len(args.placements)} placement(s) x {len(args.rates)} rate(s), "
          f"{args.duration:g} s each, CPUs {sorted(os.sched_getaffinity(0))}", file=sys.stderr)  # fmt: skip
    head = f"{'placement':<9} {'rate':>8} {'achieved':>10} {'orders':>8} {'t2t p50':>9} {'p90':>9} {'p99':>9} " \
           f"{'p99.9':>9} {'p99.99':>9} {'max':>9} {'start':>6}  " \
           f"{'noise: lost':>11} {'floor p99':>9} {'p99.9':>7}"  # fmt: skip
    print(head, file=out)
    for placement in args.placements:
        for rate in args.rates:
            noise = [machine_noise(c, args.noise_s) for c in sorted(os.sched_getaffinity(0))] if args.noise_s else []
            t0 = time.monotonic()
            t0_unix = time.time()
            row, e2e = run_measured(placement, rate, args.duration, args.config)
            row["noise"] = noise
            row["wall_s"] = time.monotonic() - t0
            row["sustained"] = _sustained(row)
            rows.append(row)
            intervals.append((hlog_tag(placement, rate), t0_unix - start_unix, row["wall_s"], encode_interval(e2e)))
            t = row["tick_to_trade_ns"]
            print(
                f"{placement:<9} {fmt_rate(rate):>8} {fmt_rate(row['messages_per_s']):>10} {row['orders']:>8,} "
                f"{fmt_ns(t['p50']):>9} {fmt_ns(t['p90']):>9} {fmt_ns(t['p99']):>9} {fmt_ns(t['p999']):>9} "
                f"{fmt_ns(t['p9999']):>9} {fmt_ns(t['max']):>9} {row['startup_s']:>5.1f}s  {_noise_cols(noise)}"
                + ("" if row["exit_code"] == 0 else f"  FAILED: {row['error']}"),
                file=out,
            )
            out.flush()
    for placement in args.placements:
        ok = [r for r in rows if r["placement"] == placement and r["sustained"] and r["target_rate"]]
        best = max((r["target_rate"] for r in ok), default=0)
        unpaced = [r for r in rows if r["placement"] == placement and not r["target_rate"]]
        top = (
            f", unpaced {fmt_rate(unpaced[0]['messages_per_s'])} messages = {fmt_rate(unpaced[0]['events_per_s'])} "
            "events through book, strategy, risk, router, venue"
            if unpaced
            else ""
        )
        print(f"{placement}: highest sustained paced rate {fmt_rate(best) if best else 'none'}{top}", file=out)
    if args.hlog:
        n = write_hlog(args.hlog, intervals, start_unix, comment="hean bench pipeline: tick-to-trade (ns), a run each")
        print(f"wrote {args.hlog} ({n} runs)", file=out)
    if args.json:
        emit_json(args.json, {"machine": machine_info(), "duration_s": args.duration, "runs": rows})
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1
