"""The per-stage telemetry block: one shared-memory segment per stage, written only by that stage.

Why one segment per stage: the stage is the block's only writer, it can be created by (and die with) the
worker that runs the stage, and an observer maps exactly the stages it wants. A block is named
``hean-<run_id>-tm-<stage>`` (:func:`block_name`) and is self-describing: ``attach_block(name)`` needs no
other argument.

Segment layout (all int64, little-endian)::

    offset        size               contents                                     written by
    ------------  -----------------  -------------------------------------------  ---------------------------
    0             64                 META: magic, version, geometry (below)        create_block(), once
    64            4032               description: UTF-8 JSON (stage, run id,       create_block(), once
                                     histogram names, user counter names)
    4096          N_COUNTERS * 8     counters (indices ``C_*`` below)              the stage (relaxed stores)
    COUNTERS_END  RISK_LEN * 8       risk state (``R_*``; only when risk_symbols)  the risk stage
    HISTS_OFF     n_hists*HIST_LEN*8 latency histograms, one row per name          the stage (relaxed stores)

META words: 0 MAGIC (``b"HEANTELM"``, written last), 1 LAYOUT_VERSION, 2 N_COUNTERS, 3 number of histograms,
4 HIST_LEN, 5 number of risk symbols, 6 description length in bytes, 7 CLOCK_REALTIME ns at creation.

Counters (``int64[N_COUNTERS]``). "cum" counters only grow, so an interval is ``current - previous``;
"gauge" slots hold a current value and are copied, not differenced (see :data:`GAUGES`):

=================  =====  =====  ======================================================================
name               index  kind   meaning
=================  =====  =====  ======================================================================
C_EVENTS_IN        0      cum    records consumed from the input ring(s)
C_EVENTS_OUT       1      cum    records published to the output ring(s)
C_ORDERS           2      cum    orders sent (strategy/risk/router)
C_FILLS            3      cum    fills seen
C_REJECTS          4      cum    rejects, all reasons (also counted per reason at C_REJECT_BASE + reason)
C_RING_FULL        5      cum    times an output ring was found full (back-pressure)
C_DROPS            6      cum    records dropped (full ring under a drop policy, or invalid input)
C_SEQ_GAPS         7      cum    sequence gaps seen on input
C_BUSY_LOOPS       8      cum    loop iterations that did work
C_IDLE_LOOPS       9      cum    loop iterations that found nothing to do
C_BUSY_NS          10     cum    ns spent in busy iterations (useful-work % = d(BUSY_NS) / d(wall))
C_MAX_LOOP_NS      11     gauge  longest busy iteration since start, ns
C_HEARTBEAT_NS     12     gauge  CLOCK_MONOTONIC ns of the stage's last heartbeat
C_PID              13     gauge  pid of the process running the stage
C_CPU              14     gauge  CPU the stage is pinned to (-1: not pinned)
C_STATE            15     gauge  ST_INIT / ST_RUNNING / ST_STOPPED
C_START_NS         16     gauge  CLOCK_MONOTONIC ns when the stage started its loop
C_STOP_NS          17     gauge  CLOCK_MONOTONIC ns when it stopped (0 while running)
C_PREEMPTED        18     gauge  involuntary context switches of its process from start to stop: times
                                 the kernel took the CPU away mid-run (0 on a quiet, well-placed run)
C_REJECT_BASE      32-63  cum    rejects by reason code (N_REJECT_REASONS slots; codes >= 31 land in 31)
C_USER_BASE        64-127 cum    stage-specific counters, named in the description ("user_counters")
=================  =====  =====  ======================================================================

Risk state (``int64[RISK_HEADER + RISK_SYM_SLOTS * n_symbols]``, only in the block that has it; float
values are stored as their IEEE-754 bits so every slot is written with an atomic int64 store; read it with
:func:`hean.telemetry.reader.risk_state`):

==================  =====  =====  ==================================================================
name                index  type   meaning
==================  =====  =====  ==================================================================
R_TRADING_STATE     0      int    TS_ACTIVE / TS_REDUCING / TS_HALTED (0: not yet set)
R_N_SYMBOLS         1      int    number of symbol rows
R_REJECTS           2      int    orders rejected by risk (by reason: the block's C_REJECT_BASE slots)
R_OPEN_ORDERS       3      int    open orders
R_REALIZED_PNL      4      f64    realized PnL, quote currency
R_UNREALIZED_PNL    5      f64    unrealized PnL
R_FEES              6      f64    fees paid
R_UPDATED_NS        7      int    CLOCK_MONOTONIC ns of the last update
per symbol s        8+4s   int    position, lots (signed)
                    9+4s   f64    average entry price, ticks
                    10+4s  f64    realized PnL of the symbol
                    11+4s  f64    unrealized PnL of the symbol
==================  =====  =====  ==================================================================

Usage in a stage kernel (all :mod:`hean.jit` kernels; ``tm`` is the :class:`TelemetryBlock`)::

    tm_start(tm.counters, cpu)                       # once, in the worker, before the loop
    while running:
        t0 = now_ns()
        n = ...consume...
        if n == 0:
            tm_idle(tm.counters)
            continue
        tm_add(tm.counters, C_EVENTS_IN, n)
        hist_record(tm.hists[QUEUE_ROW], t0 - rec.ts_origin)   # queueing time of the input hop
        ...work...
        t1 = now_ns()
        hist_record(tm.hists[SERVICE_ROW], t1 - t0)
        tm_busy(tm.counters, t0, t1)                  # busy loops, busy ns, max loop time, heartbeat
    tm_stop(tm.counters, now_ns())
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from hean.atomics import getpid, now_ns, store_relaxed
from hean.jit import kernel
from hean.shm import Segment, attach_segment, create_segment, unlink_segment
from hean.telemetry.histogram import HIST_LEN

__all__ = [
    "BLOCK_MAGIC",
    "GAUGES",
    "LAYOUT_VERSION",
    "N_COUNTERS",
    "N_REJECT_REASONS",
    "N_USER_COUNTERS",
    "BlockError",
    "TelemetryBlock",
    "TelemetrySegment",
    "attach_block",
    "block_name",
    "create_block",
    "bits_f64",
    "f64_bits",
    "risk_len",
    "risk_set_position",
    "risk_set_state",
    "risk_set_totals",
    "tm_add",
    "tm_copy_rejects",
    "tm_busy",
    "tm_heartbeat",
    "tm_idle",
    "tm_reject",
    "tm_start",
    "tm_stop",
    "validate_id",
]

BLOCK_MAGIC = int.from_bytes(b"HEANTELM", "little")
LAYOUT_VERSION = 1
META_WORDS = 8
DESC_OFFSET = 64
DESC_MAX = 4096 - DESC_OFFSET
COUNTERS_OFFSET = 4096
N_COUNTERS = 128

# ---- counters ------------------------------------------------------------------------------------------
C_EVENTS_IN = 0
C_EVENTS_OUT = 1
C_ORDERS = 2
C_FILLS = 3
C_REJECTS = 4
C_RING_FULL = 5
C_DROPS = 6
C_SEQ_GAPS = 7
C_BUSY_LOOPS = 8
C_IDLE_LOOPS = 9
C_BUSY_NS = 10
C_MAX_LOOP_NS = 11
C_HEARTBEAT_NS = 12
C_PID = 13
C_CPU = 14
C_STATE = 15
C_START_NS = 16
C_STOP_NS = 17
C_PREEMPTED = 18
C_REJECT_BASE = 32
N_REJECT_REASONS = 32
C_USER_BASE = 64
N_USER_COUNTERS = N_COUNTERS - C_USER_BASE

GAUGES: tuple[int, ...] = (
    C_MAX_LOOP_NS,
    C_HEARTBEAT_NS,
    C_PID,
    C_CPU,
    C_STATE,
    C_START_NS,
    C_STOP_NS,
    C_PREEMPTED,
)
"""Counter slots holding a current value (copied, not differenced, by interval views)."""

COUNTER_NAMES: dict[str, int] = {
    "events_in": C_EVENTS_IN,
    "events_out": C_EVENTS_OUT,
    "orders": C_ORDERS,
    "fills": C_FILLS,
    "rejects": C_REJECTS,
    "ring_full": C_RING_FULL,
    "drops": C_DROPS,
    "seq_gaps": C_SEQ_GAPS,
    "busy_loops": C_BUSY_LOOPS,
    "idle_loops": C_IDLE_LOOPS,
    "busy_ns": C_BUSY_NS,
    "max_loop_ns": C_MAX_LOOP_NS,
    "heartbeat_ns": C_HEARTBEAT_NS,
    "pid": C_PID,
    "cpu": C_CPU,
    "state": C_STATE,
    "start_ns": C_START_NS,
    "stop_ns": C_STOP_NS,
    "preempted": C_PREEMPTED,
}

ST_INIT = 0
ST_RUNNING = 1
ST_STOPPED = 2

# ---- risk state ----------------------------------------------------------------------------------------
R_TRADING_STATE = 0
R_N_SYMBOLS = 1
R_REJECTS = 2
R_OPEN_ORDERS = 3
R_REALIZED_PNL = 4
R_UNREALIZED_PNL = 5
R_FEES = 6
R_UPDATED_NS = 7
RISK_HEADER = 8
RISK_SYM_SLOTS = 4  # position lots, avg price (f64), realized (f64), unrealized (f64)
RISK_F64_SLOTS: tuple[int, ...] = (R_REALIZED_PNL, R_UNREALIZED_PNL, R_FEES)

TS_ACTIVE = 1  # trading states, as in NautilusTrader's risk engine
TS_REDUCING = 2
TS_HALTED = 3
TRADING_STATE_NAMES = {0: "UNSET", TS_ACTIVE: "ACTIVE", TS_REDUCING: "REDUCING", TS_HALTED: "HALTED"}

_ID_RE = re.compile(r"^[A-Za-z0-9_]{1,48}$")


class BlockError(RuntimeError):
    """A telemetry block is missing, malformed or of another layout; the message names the segment."""


class TelemetryBlock(NamedTuple):
    """What a stage kernel receives: numpy views onto its segment (writable for the owner)."""

    counters: np.ndarray  # int64[N_COUNTERS]
    hists: np.ndarray  # int64[n_hists, HIST_LEN], one row per histogram name
    risk: np.ndarray  # int64[risk_len(n_symbols)], empty when the block has no risk state


@dataclass
class TelemetrySegment:
    """A mapped telemetry block with its description; ``block`` is what kernels get."""

    name: str
    run_id: str
    stage: str
    hist_names: list[str]
    user_counters: list[str]
    n_symbols: int
    block: TelemetryBlock
    segment: Segment = field(repr=False)

    def hist_row(self, hist_name: str) -> int:
        """Row of ``hist_name`` in ``block.hists`` (a clear error listing the names otherwise)."""
        try:
            return self.hist_names.index(hist_name)
        except ValueError:
            raise BlockError(
                f"telemetry block {self.name!r} has no histogram {hist_name!r} (has {self.hist_names})"
            ) from None

    def user_counter(self, counter_name: str) -> int:
        """Counter index of a stage-specific counter declared at creation."""
        try:
            return C_USER_BASE + self.user_counters.index(counter_name)
        except ValueError:
            raise BlockError(
                f"telemetry block {self.name!r} has no counter {counter_name!r} (has {self.user_counters})"
            ) from None

    def close(self) -> None:
        self.segment.close()

    def unlink(self) -> None:
        unlink_segment(self.name)


def validate_id(value: str, what: str) -> str:
    """Run ids and stage names are ``[A-Za-z0-9_]{1,48}`` so segment names parse unambiguously."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise BlockError(f"bad {what} {value!r}: use 1-48 characters of [A-Za-z0-9_]")
    return value


def block_name(run_id: str, stage: str) -> str:
    """``hean-<run_id>-tm-<stage>``: the segment name of a stage's telemetry block."""
    return f"hean-{validate_id(run_id, 'run id')}-tm-{validate_id(stage, 'stage name')}"


def risk_len(n_symbols: int) -> int:
    """int64 slots of a risk-state region for ``n_symbols`` symbols (0 when there is none)."""
    return 0 if n_symbols <= 0 else RISK_HEADER + RISK_SYM_SLOTS * n_symbols


def _geometry(n_hists: int, n_symbols: int) -> tuple[int, int, int]:
    """(risk offset, histogram offset, total size) in bytes; histograms start on a cache line."""
    risk_off = COUNTERS_OFFSET + N_COUNTERS * 8
    hists_off = risk_off + -(-risk_len(n_symbols) * 8 // 64) * 64
    return risk_off, hists_off, hists_off + n_hists * HIST_LEN * 8


def _views(seg: Segment, n_hists: int, n_symbols: int) -> TelemetryBlock:
    risk_off, hists_off, _ = _geometry(n_hists, n_symbols)
    counters = seg.array(np.int64, N_COUNTERS, COUNTERS_OFFSET)
    risk = seg.array(np.int64, risk_len(n_symbols), risk_off)
    hists = seg.array(np.int64, n_hists * HIST_LEN, hists_off).reshape(n_hists, HIST_LEN)
    return TelemetryBlock(counters, hists, risk)


def create_block(
    run_id: str,
    stage: str,
    hist_names: list[str],
    *,
    user_counters: list[str] | None = None,
    risk_symbols: int = 0,
) -> TelemetrySegment:
    """Create and initialise the telemetry block of ``stage`` (the caller unlinks it at shutdown).

    ``hist_names``: one latency histogram per name, e.g. ``["service", "queue.md", "e2e"]`` (by convention
    ``service`` = the stage's own processing time, ``queue.<ring>`` = time a record waited in input ring
    ``<ring>``, ``e2e`` = tick-to-trade). ``user_counters``: up to 64 stage-specific counter names.
    ``risk_symbols``: > 0 adds a risk-state region with that many symbol rows.
    """
    name = block_name(run_id, stage)
    hist_names = list(hist_names)
    user_counters = list(user_counters or [])
    if len(set(hist_names)) != len(hist_names) or not all(isinstance(h, str) and h for h in hist_names):
        raise BlockError(f"telemetry block {name!r}: histogram names must be unique non-empty strings")
    if len(user_counters) > N_USER_COUNTERS or len(set(user_counters)) != len(user_counters):
        raise BlockError(f"telemetry block {name!r}: at most {N_USER_COUNTERS} unique user counters")
    if risk_symbols < 0:
        raise BlockError(f"telemetry block {name!r}: risk_symbols must be >= 0, got {risk_symbols}")
    desc = json.dumps({"run_id": run_id, "stage": stage, "hists": hist_names, "user_counters": user_counters}).encode()
    if len(desc) > DESC_MAX:
        raise BlockError(f"telemetry block {name!r}: description is {len(desc)} bytes, max {DESC_MAX}")
    _, _, size = _geometry(len(hist_names), risk_symbols)
    seg = create_segment(name, size)
    try:
        meta = seg.array(np.int64, META_WORDS, 0)
        seg.buf[DESC_OFFSET : DESC_OFFSET + len(desc)] = desc
        meta[1:] = [LAYOUT_VERSION, N_COUNTERS, len(hist_names), HIST_LEN, risk_symbols, len(desc)] + [time.time_ns()]
        block = _views(seg, len(hist_names), risk_symbols)
        block.counters[C_CPU] = -1
        if risk_symbols:
            block.risk[R_N_SYMBOLS] = risk_symbols
        meta[0] = BLOCK_MAGIC  # last: a reader never accepts a half-initialised block
    except Exception:
        seg.close()
        unlink_segment(name)
        raise
    return TelemetrySegment(name, run_id, stage, hist_names, user_counters, risk_symbols, block, seg)


def attach_block(name: str, readonly: bool = True) -> TelemetrySegment:
    """Map an existing telemetry block (read-only by default: observers never write)."""
    try:
        seg = attach_segment(name, readonly=readonly)
    except Exception as e:
        raise BlockError(f"telemetry block {name!r}: {e}") from None
    try:
        if seg.size < COUNTERS_OFFSET:
            raise BlockError(f"segment {name!r} ({seg.size} bytes) is too small to be a telemetry block")
        meta = seg.array(np.int64, META_WORDS, 0).copy()
        if meta[0] != BLOCK_MAGIC:
            raise BlockError(f"segment {name!r} is not an initialised telemetry block (bad magic)")
        if meta[1] != LAYOUT_VERSION or meta[2] != N_COUNTERS or meta[4] != HIST_LEN:
            raise BlockError(
                f"telemetry block {name!r}: layout version {meta[1]} / {meta[2]} counters / hist len "
                f"{meta[4]}, this HEAN expects {LAYOUT_VERSION} / {N_COUNTERS} / {HIST_LEN}"
            )
        n_hists, n_symbols, desc_len = int(meta[3]), int(meta[5]), int(meta[6])
        if not 0 < desc_len <= DESC_MAX or _geometry(n_hists, n_symbols)[2] > seg.size:
            raise BlockError(f"telemetry block {name!r}: geometry does not fit its {seg.size} bytes")
        desc = json.loads(bytes(seg.buf[DESC_OFFSET : DESC_OFFSET + desc_len]))
        block = _views(seg, n_hists, n_symbols)
    except Exception:
        seg.close()
        raise
    return TelemetrySegment(
        name, desc["run_id"], desc["stage"], list(desc["hists"]), list(desc["user_counters"]),
        n_symbols, block, seg,
    )  # fmt: skip


@kernel
def tm_copy_rejects(counters, rejects) -> None:
    """A stage's reject counts by reason (cumulative) into ``C_REJECT_BASE + reason``; reasons past the
    block's slots share the last one. The stage's own array is the truth; this copies it for observers."""
    nr = rejects.shape[0]
    for i in range(min(N_REJECT_REASONS, nr)):
        store_relaxed(counters, C_REJECT_BASE + i, rejects[i])
    extra = 0
    for i in range(N_REJECT_REASONS, nr):
        extra += rejects[i]
    if extra:
        last = C_REJECT_BASE + N_REJECT_REASONS - 1
        store_relaxed(counters, last, rejects[N_REJECT_REASONS - 1] + extra)


# ---------------------------------------------------------------------------------------------------------
# writers (the owning stage only)
# ---------------------------------------------------------------------------------------------------------
# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def tm_add(counters, idx: int, n: int) -> None:
    """``counters[idx] += n`` (single writer; relaxed store so observers see it)."""
    store_relaxed(counters, idx, counters[idx] + n)


@kernel
def tm_heartbeat(counters, now: int) -> None:
    """Record that the stage is alive at ``now`` (CLOCK_MONOTONIC ns)."""
    store_relaxed(counters, C_HEARTBEAT_NS, now)


@kernel
def tm_reject(counters, reason: int) -> None:
    """Count one reject, in total and by reason (codes outside 0..30 are counted in slot 31)."""
    r = reason if 0 <= reason < N_REJECT_REASONS else N_REJECT_REASONS - 1
    store_relaxed(counters, C_REJECTS, counters[C_REJECTS] + 1)
    store_relaxed(counters, C_REJECT_BASE + r, counters[C_REJECT_BASE + r] + 1)


@kernel
def tm_idle(counters) -> None:
    """One iteration that found nothing to do."""
    store_relaxed(counters, C_IDLE_LOOPS, counters[C_IDLE_LOOPS] + 1)


@kernel
def tm_busy(counters, t0: int, t1: int) -> None:
    """One iteration that did work from ``t0`` to ``t1`` (ns): busy loops, busy ns, max loop, heartbeat."""
    d = t1 - t0
    store_relaxed(counters, C_BUSY_LOOPS, counters[C_BUSY_LOOPS] + 1)
    store_relaxed(counters, C_BUSY_NS, counters[C_BUSY_NS] + d)
    if d > counters[C_MAX_LOOP_NS]:
        store_relaxed(counters, C_MAX_LOOP_NS, d)
    store_relaxed(counters, C_HEARTBEAT_NS, t1)


@kernel
def tm_start(counters, cpu: int) -> None:
    """Mark the stage running in this process (pid, pinned CPU or -1, start time, heartbeat)."""
    t = now_ns()
    store_relaxed(counters, C_PID, getpid())
    store_relaxed(counters, C_CPU, cpu)
    store_relaxed(counters, C_START_NS, t)
    store_relaxed(counters, C_STOP_NS, 0)
    store_relaxed(counters, C_HEARTBEAT_NS, t)
    store_relaxed(counters, C_STATE, ST_RUNNING)


@kernel
def tm_stop(counters, now: int) -> None:
    """Mark the stage stopped at ``now``."""
    store_relaxed(counters, C_STOP_NS, now)
    store_relaxed(counters, C_HEARTBEAT_NS, now)
    store_relaxed(counters, C_STATE, ST_STOPPED)


@intrinsic
def f64_bits(typingctx, x):
    """The IEEE-754 bits of a float64 as an int64 (so a float can be stored with an atomic int64 store)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float64)
        return builder.bitcast(v, ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def bits_f64(typingctx, x):
    """The float64 whose IEEE-754 bits are the int64 ``x`` (the inverse of :func:`f64_bits`)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.bitcast(v, ir.DoubleType())

    return types.float64(x), codegen


@kernel
def risk_set_state(risk, trading_state: int, open_orders: int, rejects: int, now: int) -> None:
    """Trading state (TS_*), open orders and total risk rejects."""
    store_relaxed(risk, R_TRADING_STATE, trading_state)
    store_relaxed(risk, R_OPEN_ORDERS, open_orders)
    store_relaxed(risk, R_REJECTS, rejects)
    store_relaxed(risk, R_UPDATED_NS, now)


@kernel
def risk_set_totals(risk, realized: float, unrealized: float, fees: float) -> None:
    """Portfolio PnL and fees (quote currency)."""
    store_relaxed(risk, R_REALIZED_PNL, f64_bits(realized))
    store_relaxed(risk, R_UNREALIZED_PNL, f64_bits(unrealized))
    store_relaxed(risk, R_FEES, f64_bits(fees))


@kernel
def risk_set_position(
    risk, symbol: int, position_lots: int, avg_price: float, realized: float, unrealized: float
) -> None:
    """One symbol's position (lots), average entry price (ticks) and PnL; ignores an out-of-range id."""
    if symbol < 0 or symbol >= risk[R_N_SYMBOLS]:
        return
    base = RISK_HEADER + RISK_SYM_SLOTS * symbol
    store_relaxed(risk, base, position_lots)
    store_relaxed(risk, base + 1, f64_bits(avg_price))
    store_relaxed(risk, base + 2, f64_bits(realized))
    store_relaxed(risk, base + 3, f64_bits(unrealized))
