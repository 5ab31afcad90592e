"""``hean bench telemetry``: what measuring costs -- the harness's own floor, ``hist_record``, ``tm_busy``.

Every stage records its service time and every hop's queueing time, so the price of one record is paid on
every event. Two views:

* per-call cost in a tight loop (10 M calls, mean ns per call: what a stage pays);
* the latency harness run on an empty kernel (its own measurement floor: two clock reads and a record)
  and on kernels that record into a histogram or update counters -- subtract the floor to compare.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hean.atomics import now_ns
from hean.bench.harness import bench_kernel
from hean.bench.report import add_harness_args, emit
from hean.commands import HeanParser, emit_json, text_out
from hean.jit import entry, kernel
from hean.telemetry.block import C_EVENTS_IN, N_COUNTERS, tm_add, tm_busy
from hean.telemetry.histogram import HIST_LEN, hist_record

RATES = (1_000_000, 0)


@kernel
def _empty(state, i):
    pass


@kernel
def _record(state, i):
    hist, _ = state
    hist_record(hist, 100 + (i * 7919) % 100_000)


@kernel
def _counters(state, i):
    _, counters = state
    tm_add(counters, C_EVENTS_IN, 1)
    tm_busy(counters, i, i + 100)


@entry
def _loop_record(hist, n):
    for i in range(n):
        hist_record(hist, 100 + (i * 7919) % 100_000)


@entry
def _loop_counters(counters, n):
    for i in range(n):
        tm_add(counters, C_EVENTS_IN, 1)
        tm_busy(counters, i, i + 100)


@entry
def _loop_clock(n):
    acc = 0
    for _ in range(n):
        acc += now_ns() & 1
    return acc


def per_call_ns(n: int = 10_000_000) -> dict[str, float]:
    """Mean ns per call of now_ns, hist_record and (tm_add + tm_busy), each in a tight loop."""
    hist = np.zeros(HIST_LEN, np.int64)
    counters = np.zeros(N_COUNTERS, np.int64)
    out = {}
    for name, fn, args in (
        ("now_ns", _loop_clock, ()),
        ("hist_record", _loop_record, (hist,)),
        ("tm_add+tm_busy", _loop_counters, (counters,)),
    ):
        fn(*args, 1000)
        t0 = time.perf_counter_ns()
        fn(*args, n)
        out[name] = (time.perf_counter_ns() - t0) / n
    return out


def main(argv: list[str]) -> int:
    p = HeanParser(prog="hean bench telemetry", description=__doc__)
    add_harness_args(p, RATES)
    p.add_argument("--calls", type=int, default=10_000_000, help="calls per tight-loop measurement")
    args = p.parse_args(argv)
    out = text_out(args.json)  # with --json -, stdout is the JSON alone: one document of the three kernels
    costs = per_call_ns(args.calls)
    print("per call (tight loop, mean): " + ", ".join(f"{k} {v:.1f} ns" for k, v in costs.items()), file=out)
    state = (np.zeros(HIST_LEN, np.int64), np.zeros(N_COUNTERS, np.int64))
    rc = 0
    to_stdout: dict[str, dict] = {}
    for slug, name, fn in (("floor", "harness floor (empty kernel)", _empty), ("record", "hist_record", _record),
                           ("counters", "tm_add+tm_busy", _counters)):  # fmt: skip
        res = bench_kernel(name, fn, state, rates=args.rates, duration_s=args.duration, warmup_s=args.warmup)
        res.config["per_call_ns"] = costs
        # one set of output files per kernel: out.json -> out.floor.json, out.record.json, ...
        per = argparse.Namespace(**vars(args))
        for opt in ("json", "hlog", "plot"):
            if getattr(args, opt):
                setattr(per, opt, _suffixed(getattr(args, opt), slug))
        if args.json == "-":
            per.json = None
            to_stdout[slug] = res.as_dict()
        rc |= emit(res, per, out)
    if args.json == "-":
        emit_json("-", to_stdout)
    return rc


def _suffixed(path: str, slug: str) -> str:
    stem, dot, ext = path.rpartition(".")
    return f"{stem}.{slug}.{ext}" if dot and stem else f"{path}.{slug}"
