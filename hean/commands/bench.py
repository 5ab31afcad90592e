"""``hean bench TARGET [options]``: run one benchmark harness.

Each target is a module under :mod:`hean.bench` with ``main(argv: list[str]) -> int`` and its own argparse
parser, so a target's options and heavy imports stay with the target. ``hean bench TARGET --help`` shows
them.
"""

from __future__ import annotations

import argparse
import importlib

# target name -> (module, one-line description); the order is the order shown in --help
BENCHES: dict[str, tuple[str, str]] = {
    "book": ("hean.bench.book", "L2 book update/read, native replay, JSON conversion vs dict/hftbacktest/nautilus"),
    "ring": (
        "hean.bench.ring",
        "SPSC ring one-hop latency and throughput vs Python IPC and a C floor",
    ),
    "telemetry": ("hean.bench.telemetry", "cost of measuring: harness floor, hist_record, counter updates"),
    "indicators": ("hean.bench.indicators", "streaming indicator set and strategy stage ns/update; batch vs TA-Lib"),
    "risk": ("hean.bench.risk", "ns per full pre-trade risk check and per routed order incl. state machine"),
    "pipeline": ("hean.bench.pipeline", "whole engine: tick-to-trade at fixed rates, sustained rate, start-up"),
    "journal": (
        "hean.bench.journal",
        "the journal's cost: tick-to-trade and unpaced rate with it off and on; its records/s",
    ),
    "startup": ("hean.bench.startup", "start-up to every worker ready: cold (empty numba cache) and warm"),
    "sweep": (
        "hean.bench.sweep",
        "hean sweep: cells/s in process and on Ray with 1 and 2 workers, Ray's cost per cell",
    ),
    "noise": ("hean.bench.noise", "the machine's own stalls on each CPU: time lost, gaps, tail-latency floor"),
    "live": (
        "hean.bench.live",
        "live feed vs the local exchange: receive cost (picows vs websockets), decode, receive-to-book latency",
    ),
    "backtest": (
        "hean.bench.backtest",
        "a whole market-making backtest of the Binance recording: ns/event vs hftbacktest and NautilusTrader",
    ),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    lines = "\n".join(f"  {name:<12} {desc}" for name, (_, desc) in BENCHES.items())
    p = sub.add_parser(
        "bench",
        help="latency/throughput benchmarks (ring, book, indicators, risk, pipeline, ...)",
        description=f"Run a benchmark harness.\n\ntargets:\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", choices=sorted(BENCHES), help="what to benchmark")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of the target (see TARGET --help)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHES[args.target][0])
    return int(module.main(list(args.options)) or 0)
