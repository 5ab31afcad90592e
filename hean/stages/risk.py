"""Pre-trade risk: every order intent is checked here before the router sees it.

The risk stage owns the account view -- positions and PnL (:mod:`hean.stages.positions`), open order
quantity per symbol and side, rate-limit windows, the equity high-water mark -- and the *trading state*:

=========  =====  ==========================================================================================
state      value  what passes
=========  =====  ==========================================================================================
ACTIVE     0      everything that passes the checks
REDUCING   1      only orders that reduce the position (including open orders on that side), and cancels
HALTED     2      only cancels
=========  =====  ==========================================================================================

The state that applies to a symbol is the strictest of: the global manual state (CONTROL, symbol -1), the
symbol's manual state (CONTROL, symbol s), the *trip* state set automatically when the daily loss limit or
the drawdown limit is breached (``loss_trip_state``, REDUCING by default so the position can still be
flattened), and HALTED while the symbol's book is stale (BOOK_STATE flagged F_STALE or F_CROSSED, or no
book yet). A trip holds until a RESUME control; RESUME also re-bases the drawdown high-water mark to the
current equity, while the daily loss keeps counting from the start of the day (:func:`risk_new_day`).
Entering HALTED (kill switch, stale book, or a trip configured to HALTED) owes a CANCEL_ALL, which the next
call with an output buffer (:func:`risk_on_control`, :func:`risk_on_book`, :func:`risk_poll`) emits.

Checks on a NEW or REPLACE intent, in this order (the first failure is the reason; one counter per reason in
``RiskState.rejects``):

1. well-formed: symbol id, side, action, order type, time in force, flag combination; qty > 0; LIMIT
   price > 0; REPLACE/CANCEL carry an order id
2. tick and lot alignment: ``price % price_increment == 0`` and ``qty % qty_increment == 0`` (the record's
   tick/lot may be finer than the venue's), ``qty >= min_qty``
3. trading state: HALTED (stale book, then manual/trip halt); for orders that do not reduce the position:
   daily loss and drawdown (breaching one trips the state), then REDUCING; then the reduce-only flag
4. book freshness (a mark exists, and is younger than ``stale_after_ns`` when that is set)
5. max order qty, max notional per order
6. price collar (LIMIT only): ``|price - mid|`` within ``collar_ticks`` and within ``collar_frac * mid``
7. max position after the order, counting open orders on the same side (worst case)
8. for orders that do not reduce: gross exposure and leverage after the order (worst case over open
   orders, marked to mid)
9. max open orders (per symbol and in total), order rate per symbol and in total (sliding 1 s window)

An order *reduces* when it is on the opposite side of the position and its qty plus the open orders on its
side do not exceed the position.

Cancels and CANCEL_ALL always pass (a HALTED engine must still be able to pull its orders). A REPLACE is
checked as if its new quantity were added to the open quantity (risk does not know the old quantity), which
is conservative. CANCEL and REPLACE may carry ``order_id`` 0: "this strategy's live order on this side of this
symbol", which the router resolves; a REPLACE that finds no live order is sent as a NEW, and its first report
carries F_OPENS_ORDER so that risk counts it open then (``leaves_qty + qty`` lots, one order).

Open quantity: a forwarded NEW adds its qty to ``open_buy``/``open_sell`` at once (in flight counts).
Reports from the router release it: fills by ``qty``; CANCELED/EXPIRED/REJECTED by ``qty``, which the
router sets to the lots the report removed from the open quantity; REPLACED by ``qty`` (old open lots) and
adds ``leaves_qty`` (new open lots). Terminal reports (FILL, CANCELED, EXPIRED, REJECTED) close one order.

Usage in the engine's risk stage (``out`` an ORDER array or ring slots, ``rep``/``bs``/``ctl`` records)::

    risk = make_risk(n_symbols, capital=1e5, value_per_tick_lot=vptl, max_position=..., ...,
                     position_lots=shm_positions)            # the strategy reads position_lots
    n = risk_on_intent(risk, intent, now_ns(), out, k)       # 0 or 1 ORDER for the router
    n = risk_on_book(risk, book_state, now_ns(), out, k)     # mark to mid; CANCEL_ALLs owed (<= n_symbols+1)
    risk_on_report(risk, report_from_router)                 # positions, PnL, open orders, trips
    n = risk_on_control(risk, control, now_ns(), out, k)     # kill switch etc.; CANCEL_ALLs (<= n_symbols+1)
    n = risk_poll(risk, now_ns(), out, k)                    # owed CANCEL_ALLs, when idle
    risk_to_telemetry(risk, tm.counters, tm.risk, now_ns())  # every few ms

The entry kernels are ``inline="always"``: passing the RiskState tuple to a non-inlined call costs ~120 ns
(its ~30 arrays are passed as ~250 scalars); call them from a stage loop compiled with ``_nrt=False``.

Kernels are compiled with ``_nrt=False``: they never allocate, and numba would otherwise reference-count
every array of a NamedTuple argument on each call (hundreds of ns; see :mod:`hean.stages.book`).
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from hean.atomics import load_relaxed, store_relaxed
from hean.jit import kernel
from hean.records import (
    A_CANCEL,
    A_CANCEL_ALL,
    A_NEW,
    A_REPLACE,
    BOOK_STATE,
    CONTROL,
    EXEC_REPORT,
    F_CROSSED,
    F_OPENS_ORDER,
    F_POST_ONLY,
    F_REDUCE_ONLY,
    F_STALE,
    K_HALT,
    K_NEW_DAY,
    K_REDUCE,
    K_RESUME,
    K_SET,
    K_STOP,
    N_REASONS,
    ORDER,
    R_BAD_ORDER_ID,
    R_BAD_PRICE,
    R_BAD_QTY,
    R_BAD_SIDE,
    R_BAD_SYMBOL,
    R_BAD_TYPE,
    R_BOOK_STALE,
    R_DAILY_LOSS,
    R_DRAWDOWN,
    R_LOT_SIZE,
    R_MAX_GROSS_EXPOSURE,
    R_MAX_LEVERAGE,
    R_MAX_NOTIONAL,
    R_MAX_OPEN_ORDERS,
    R_MAX_ORDER_QTY,
    R_MAX_POSITION,
    R_MIN_QTY,
    R_PRICE_COLLAR,
    R_RATE_SYMBOL,
    R_RATE_TOTAL,
    R_REDUCE_ONLY,
    R_STATE_HALTED,
    R_STATE_REDUCING,
    R_TICK_SIZE,
    T_LIMIT,
    T_MARKET,
    X_ACK,
    X_CANCEL_REJECTED,
    X_CANCELED,
    X_EXPIRED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    X_REPLACED,
    RejectReason,
)
from hean.rings.layout import MASK, READ
from hean.rings.spsc import available
from hean.stages.declare import Stage, Stream, parameters_of, per_item
from hean.stages.ports import (
    BATCH,
    age,
    goal_if_waiting,
    out_each_nearest_first,
    put_each,
    release_to,
    room_each,
    service,
    stage_clock,
)
from hean.stages.positions import Positions, make_positions, pos_equity, pos_fill, pos_mark
from hean.telemetry.block import (
    C_EVENTS_IN,
    C_REJECTS,
    bits_f64,
    risk_set_position,
    risk_set_state,
    risk_set_totals,
    tm_add,
    tm_copy_rejects,
)

__all__ = [
    "RiskState",
    "TradingState",
    "make_risk",
    "risk_effective_state",
    "risk_new_day",
    "risk_on_book",
    "risk_on_control",
    "risk_on_intent",
    "risk_on_report",
    "risk_poll",
    "risk_reject_counts",
    "risk_to_telemetry",
]


class TradingState(IntEnum):
    ACTIVE = 0
    REDUCING = 1
    HALTED = 2


# g[] (int64 globals) indices
G_STATE = 0  # manual global TradingState
G_TRIP = 1  # TradingState set by a loss/drawdown trip (0 = none)
G_OPEN_TOTAL = 2  # open orders, all symbols
G_RATE_HEAD = 3  # oldest slot of the total-rate window
G_SEQ = 4  # seq of the last ORDER this stage emitted
G_CANCEL_ALL_OWED = 5  # a global CANCEL_ALL must be emitted
G_LEN = 8
# gf[] (float64 globals) indices
GF_DAY_START = 0  # equity at the start of the day (daily loss reference)
GF_HWM = 1  # equity high-water mark (drawdown reference)
GF_LEN = 4
# counters[] indices
C_PASSED = 0  # intents forwarded (NEW + REPLACE)
C_CANCELS = 1  # cancels / cancel-alls forwarded
C_REJECTED = 2  # intents rejected (sum of rejects[])
C_REPORTS = 3  # execution reports applied
C_BAD_REPORTS = 4  # reports with a symbol or side outside range, or an unknown kind
C_TRIPS = 5  # loss/drawdown trips
C_STALE_HALTS = 6  # symbol halts because the book went stale
C_CONTROLS = 7  # control commands applied
C_BAD_CONTROLS = 8  # control commands with an unknown kind or symbol
C_LAST_REASON = 9  # reason of the most recent reject
C_BOOKS = 10  # book states applied
C_LEN = 16

_ACTIVE, _REDUCING, _HALTED = int(TradingState.ACTIVE), int(TradingState.REDUCING), int(TradingState.HALTED)
_NO_TS = np.iinfo(np.int64).min // 2  # "never" in the rate windows (now - _NO_TS cannot overflow)


class RiskState(NamedTuple):
    """Everything the risk kernels read and write. Per-symbol arrays have length n_symbols."""

    pos: Positions
    # per-symbol limits (int64 lots/ticks; 0 disables the limit where noted)
    price_increment: np.ndarray  # ticks, >= 1
    qty_increment: np.ndarray  # lots, >= 1
    min_qty: np.ndarray  # lots, >= 1
    max_order_qty: np.ndarray  # lots; 0 = no limit
    max_position: np.ndarray  # |lots|; 0 = no limit
    max_open_symbol: np.ndarray  # open orders; 0 = no limit
    rate_symbol: np.ndarray  # orders per window; 0 = no limit
    collar_ticks: np.ndarray  # ticks; 0 = no limit
    max_notional: np.ndarray  # float64 quote ccy per order; 0 = no limit
    collar_frac: np.ndarray  # float64 fraction of mid; 0 = no limit
    # global limits
    lim_i: np.ndarray  # int64[LI_LEN]
    lim_f: np.ndarray  # float64[LF_LEN]
    # per-symbol state
    sym_state: np.ndarray  # int64 manual TradingState
    stale: np.ndarray  # int64 1 while the book is unusable
    book_ns: np.ndarray  # int64 now_ns of the last book state (0 = never)
    open_buy: np.ndarray  # int64 lots
    open_sell: np.ndarray  # int64 lots
    open_count: np.ndarray  # int64 open orders
    cancel_owed: np.ndarray  # int64 1: a CANCEL_ALL for the symbol must be emitted
    rate_ts: np.ndarray  # int64[n_symbols, W] sliding-window ring of pass times
    rate_head: np.ndarray  # int64[n_symbols]
    rate_total_ts: np.ndarray  # int64[W_total]
    # globals and telemetry
    g: np.ndarray  # int64[G_LEN]
    gf: np.ndarray  # float64[GF_LEN]
    rejects: np.ndarray  # int64[N_REASONS]: rejects per RejectReason
    counters: np.ndarray  # int64[C_LEN]
    # int64[n_symbols]: 1 for another venue's listing of an instrument ([[symbols]] instrument): its book is a
    # quote of the instrument for the router, and an order names the instrument, never the listing
    listing: np.ndarray


# limits a running engine may change (CONTROL SET, ``hean risk set KEY VALUE``): name -> (code, per symbol)
LIMIT_KEYS: dict[str, tuple[int, bool]] = {
    "max_order_qty": (1, True), "max_position": (2, True), "rate_per_symbol": (3, True), "collar_ticks": (4, True),
    "max_notional": (5, True), "collar_frac": (6, True), "max_open_orders_symbol": (7, True),
    "rate_total": (8, False), "max_open_orders": (9, False), "max_gross_exposure": (10, False),
    "max_leverage": (11, False), "daily_loss_limit": (12, False), "max_drawdown": (13, False),
}  # fmt: skip
(
    L_MAX_ORDER_QTY, L_MAX_POSITION, L_RATE_PER_SYMBOL, L_COLLAR_TICKS, L_MAX_NOTIONAL, L_COLLAR_FRAC,
    L_MAX_OPEN_ORDERS_SYMBOL, L_RATE_TOTAL, L_MAX_OPEN_ORDERS, L_MAX_GROSS_EXPOSURE, L_MAX_LEVERAGE,
    L_DAILY_LOSS_LIMIT, L_MAX_DRAWDOWN,
) = (code for code, _ in LIMIT_KEYS.values())  # fmt: skip
# limits in the instrument's own units (0.5 = half a BTC), converted to lots with each symbol's lot size
UNIT_KEYS = {"max_position_units": "max_position", "max_order_qty_units": "max_order_qty"}
INT_LIMITS = frozenset({"max_order_qty", "max_position", "rate_per_symbol", "collar_ticks", "max_open_orders_symbol",
                        "rate_total", "max_open_orders"})  # fmt: skip

# lim_i / lim_f indices
LI_RATE_TOTAL = 0  # orders per window, all symbols; 0 = no limit
LI_MAX_OPEN = 1  # open orders, all symbols; 0 = no limit
LI_STALE_NS = 2  # a book older than this is stale at intent time; 0 = age not checked
LI_WINDOW_NS = 3  # rate-limit window, ns
LI_TRIP_STATE = 4  # TradingState a loss/drawdown trip switches to
LI_LEN = 8
LF_MAX_GROSS = 0  # quote ccy; 0 = no limit
LF_MAX_LEVERAGE = 1  # gross / equity; 0 = no limit
LF_DAILY_LOSS = 2  # quote ccy (positive number); 0 = no limit
LF_MAX_DRAWDOWN = 3  # quote ccy below the high-water mark; 0 = no limit
LF_LEN = 4


def _per_symbol(value, n: int, dtype, name: str, minimum) -> np.ndarray:
    vals = per_item(value, n)
    if dtype == np.int64 and not all(math.isfinite(x) and x == round(x) for x in vals):
        raise ValueError(f"{name} must be whole numbers, got {value!r}")
    if not all(math.isfinite(x) and x >= minimum for x in vals):
        raise ValueError(f"{name} must be >= {minimum} (per symbol), got {value!r}")
    return np.array(vals, dtype)


def make_risk(
    n_symbols: int,
    *,
    value_per_tick_lot: float | np.ndarray = 1.0,
    capital: float = 0.0,
    price_increment: int | np.ndarray = 1,
    qty_increment: int | np.ndarray = 1,
    min_qty: int | np.ndarray = 1,
    max_order_qty: int | np.ndarray = 1_000,
    max_notional: float | np.ndarray = 1_000_000.0,
    max_position: int | np.ndarray = 1_000,
    max_gross_exposure: float = 0.0,
    max_leverage: float = 0.0,
    daily_loss_limit: float = 100_000.0,
    max_drawdown: float = 0.0,
    rate_per_symbol: int | np.ndarray = 25_000,
    rate_total: int = 50_000,
    rate_window_ns: int = 1_000_000_000,
    max_open_orders: int = 50,
    max_open_orders_symbol: int | np.ndarray = 0,
    collar_ticks: int | np.ndarray = 0,
    collar_frac: float | np.ndarray = 0.0,
    stale_after_ns: int = 0,
    loss_trip_state: TradingState | int = TradingState.REDUCING,
    position_lots: np.ndarray | None = None,
    listing: np.ndarray | None = None,
) -> RiskState:
    """Build the risk state. Per-symbol parameters take a scalar (all symbols) or one value per symbol.

    A limit of 0 disables that check. Units:

    - ``value_per_tick_lot`` (quote ccy per tick per lot, default 1.0): tick_size * lot_size * multiplier
    - ``capital`` (quote ccy, default 0): starting equity; leverage needs it > 0
    - ``price_increment`` (ticks, default 1), ``qty_increment`` (lots, default 1), ``min_qty`` (lots, 1)
    - ``max_order_qty`` (lots), ``max_notional`` (quote ccy per order), ``max_position`` (|lots| after the
      order, open orders counted)
    - ``max_gross_exposure`` (quote ccy, sum over symbols of worst-case |position| * mid), ``max_leverage``
      (gross exposure / equity)
    - ``daily_loss_limit`` (quote ccy, > 0), ``max_drawdown`` (quote ccy below the equity high-water mark)
    - ``rate_per_symbol``, ``rate_total`` (orders per ``rate_window_ns``, default window 1 s; NEW and
      REPLACE count, cancels do not)
    - ``max_open_orders`` (all symbols), ``max_open_orders_symbol``
    - ``collar_ticks`` (ticks from mid), ``collar_frac`` (fraction of mid, e.g. 0.01 = 1 %)
    - ``stale_after_ns``: refuse orders when the symbol's last book state is older than this
    - ``loss_trip_state``: REDUCING (default) or HALTED, entered when daily loss or drawdown trips
    - ``position_lots``: an int64[n_symbols] array (e.g. shared memory) to hold the positions
    """
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    n = n_symbols
    if int(loss_trip_state) not in (_REDUCING, _HALTED):
        raise ValueError(f"loss_trip_state must be REDUCING or HALTED, got {loss_trip_state!r}")
    for name, v in (
        ("max_gross_exposure", max_gross_exposure),
        ("max_leverage", max_leverage),
        ("daily_loss_limit", daily_loss_limit),
        ("max_drawdown", max_drawdown),
    ):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    for name, v in (
        ("rate_total", rate_total),
        ("max_open_orders", max_open_orders),
        ("stale_after_ns", stale_after_ns),
    ):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if int(rate_window_ns) != rate_window_ns or rate_window_ns <= 0:
        raise ValueError(f"rate_window_ns must be an integer > 0, got {rate_window_ns!r}")
    pos = make_positions(n, value_per_tick_lot, capital, position_lots)
    i64, f64 = np.int64, np.float64
    rate_sym = _per_symbol(rate_per_symbol, n, i64, "rate_per_symbol", 0)
    lim_i = np.zeros(LI_LEN, dtype=i64)
    lim_i[LI_RATE_TOTAL] = rate_total
    lim_i[LI_MAX_OPEN] = max_open_orders
    lim_i[LI_STALE_NS] = stale_after_ns
    lim_i[LI_WINDOW_NS] = rate_window_ns
    lim_i[LI_TRIP_STATE] = int(loss_trip_state)
    lim_f = np.zeros(LF_LEN, dtype=f64)
    lim_f[LF_MAX_GROSS] = max_gross_exposure
    lim_f[LF_MAX_LEVERAGE] = max_leverage
    lim_f[LF_DAILY_LOSS] = daily_loss_limit
    lim_f[LF_MAX_DRAWDOWN] = max_drawdown
    gf = np.zeros(GF_LEN, dtype=f64)
    gf[GF_DAY_START] = capital
    gf[GF_HWM] = capital
    return RiskState(
        pos=pos,
        price_increment=_per_symbol(price_increment, n, i64, "price_increment", 1),
        qty_increment=_per_symbol(qty_increment, n, i64, "qty_increment", 1),
        min_qty=_per_symbol(min_qty, n, i64, "min_qty", 1),
        max_order_qty=_per_symbol(max_order_qty, n, i64, "max_order_qty", 0),
        max_position=_per_symbol(max_position, n, i64, "max_position", 0),
        max_open_symbol=_per_symbol(max_open_orders_symbol, n, i64, "max_open_orders_symbol", 0),
        rate_symbol=rate_sym,
        collar_ticks=_per_symbol(collar_ticks, n, i64, "collar_ticks", 0),
        max_notional=_per_symbol(max_notional, n, f64, "max_notional", 0.0),
        collar_frac=_per_symbol(collar_frac, n, f64, "collar_frac", 0.0),
        lim_i=lim_i,
        lim_f=lim_f,
        sym_state=np.zeros(n, dtype=i64),
        stale=np.ones(n, dtype=i64),  # no book seen yet
        book_ns=np.zeros(n, dtype=i64),
        open_buy=np.zeros(n, dtype=i64),
        open_sell=np.zeros(n, dtype=i64),
        open_count=np.zeros(n, dtype=i64),
        cancel_owed=np.zeros(n, dtype=i64),
        rate_ts=np.full((n, max(1, int(rate_sym.max()))), _NO_TS, dtype=i64),
        rate_head=np.zeros(n, dtype=i64),
        rate_total_ts=np.full(max(1, int(rate_total)), _NO_TS, dtype=i64),
        g=np.zeros(G_LEN, dtype=i64),
        gf=gf,
        rejects=np.zeros(N_REASONS, dtype=i64),
        counters=np.zeros(C_LEN, dtype=i64),
        listing=np.zeros(n, dtype=i64) if listing is None else np.asarray(listing, i64).copy(),
    )


def risk_reject_counts(risk: RiskState) -> dict[str, int]:
    """Non-zero reject counters by reason name (for telemetry and tests)."""
    return {RejectReason(i).name: int(c) for i, c in enumerate(risk.rejects) if c and i < len(RejectReason)}


# ---------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------
@kernel
def risk_effective_state(risk, s):
    """The TradingState that applies to symbol ``s`` (the strictest of manual, trip and staleness)."""
    st = max(risk.g[G_STATE], risk.g[G_TRIP], risk.sym_state[s])
    if risk.stale[s] != 0:
        st = _HALTED
    return st


# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def _reject(risk, reason):
    risk.rejects[reason] += 1
    risk.counters[C_REJECTED] += 1
    risk.counters[C_LAST_REASON] = reason
    return 0


@kernel
def _enter_trip(risk):
    """Switch to the configured trip state (once); owe a CANCEL_ALL if that state is HALTED."""
    trip = risk.lim_i[LI_TRIP_STATE]
    if risk.g[G_TRIP] < trip:
        risk.g[G_TRIP] = trip
        risk.counters[C_TRIPS] += 1
        if trip == _HALTED:
            risk.g[G_CANCEL_ALL_OWED] = 1


@kernel
def _loss_check(risk):
    """Update the high-water mark; trip and return the reason when daily loss or drawdown is breached."""
    eq = pos_equity(risk.pos)
    if eq > risk.gf[GF_HWM]:
        risk.gf[GF_HWM] = eq
    daily = risk.lim_f[LF_DAILY_LOSS]
    if daily > 0.0 and eq - risk.gf[GF_DAY_START] <= -daily:
        _enter_trip(risk)
        return R_DAILY_LOSS
    dd = risk.lim_f[LF_MAX_DRAWDOWN]
    if dd > 0.0 and risk.gf[GF_HWM] - eq >= dd:
        _enter_trip(risk)
        return R_DRAWDOWN
    return 0


@kernel
def _rate_ok(ts, head, now_ns, window_ns):
    """Sliding window of capacity len(ts): the oldest of the last len(ts) passes must be a window old."""
    return now_ns - ts[head] >= window_ns


@kernel
def _worst_lots(p, ob, os_):
    """Largest |position| reachable if every open order on one side fills."""
    return max(abs(p + ob), abs(p - os_))


@kernel
def _emit(out, k, seq, ts_origin, ts_exch, symbol, action, side, flags, order_id, price, qty, otype, tif, strat, venue,
          client_id):  # fmt: skip
    o = out[k]
    o.seq = seq
    o.ts_origin = ts_origin
    o.ts_exch = ts_exch
    o.symbol = symbol
    o.kind = action
    o.side = side
    o.flags = flags
    o.order_id = order_id
    o.price = price
    o.qty = qty
    o.order_type = otype
    o.tif = tif
    o.strategy = strat
    o.reason = 0
    o.venue = venue
    o.client_id = client_id


@kernel
def _emit_cancel_all(risk, symbol, now_ns, out, k):
    """A CANCEL_ALL risk decided on its own (kill switch, trip, stale book): stamped with risk's exchange
    clock (``ts_exch``) and no origin (``ts_origin`` 0) -- no market event caused it, so it is not a
    tick-to-trade sample."""
    risk.g[G_SEQ] += 1
    risk.counters[C_CANCELS] += 1
    _emit(out, k, risk.g[G_SEQ], 0, now_ns, symbol, A_CANCEL_ALL, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0)


@kernel(inline=True)
def risk_on_intent(risk, intent, now_ns, out, k):
    """Check one ORDER intent; on pass write the ORDER for the router to ``out[k]`` and return 1, else 0.

    At most 1 record is written. ``now_ns``: CLOCK_MONOTONIC ns (rate windows and book age).
    """
    s = intent.symbol
    n = risk.stale.shape[0]
    action = intent.kind
    if (s < 0 or s >= n) and not (action == A_CANCEL_ALL and s == -1):  # CANCEL_ALL -1: every symbol
        return _reject(risk, R_BAD_SYMBOL)
    if action == A_CANCEL or action == A_CANCEL_ALL:  # always pass
        if action == A_CANCEL and intent.order_id < 0:
            return _reject(risk, R_BAD_ORDER_ID)
        if action == A_CANCEL and intent.order_id == 0 and intent.side != 1 and intent.side != -1:
            return _reject(risk, R_BAD_SIDE)  # "my order on this side" needs a side
        risk.g[G_SEQ] += 1
        risk.counters[C_CANCELS] += 1
        _emit(
            out,
            k,
            risk.g[G_SEQ],
            intent.ts_origin,
            intent.ts_exch,
            s,
            action,
            intent.side,
            intent.flags,
            intent.order_id,
            intent.price,
            intent.qty,
            intent.order_type,
            intent.tif,
            intent.strategy,
            intent.venue,
            intent.client_id,
        )
        return 1
    if action != A_NEW and action != A_REPLACE:
        return _reject(risk, R_BAD_TYPE)
    if risk.listing[s] != 0:  # a listing's book is a quote of its instrument: orders name the instrument
        return _reject(risk, R_BAD_SYMBOL)
    side = np.int64(intent.side)
    if side != 1 and side != -1:
        return _reject(risk, R_BAD_SIDE)
    qty = np.int64(intent.qty)
    price = np.int64(intent.price)
    otype = intent.order_type
    tif = intent.tif
    flags = np.int64(intent.flags)
    if otype != T_LIMIT and otype != T_MARKET:
        return _reject(risk, R_BAD_TYPE)
    if tif < 1 or tif > 3:
        return _reject(risk, R_BAD_TYPE)
    if otype == T_MARKET and (flags & F_POST_ONLY) != 0:
        return _reject(risk, R_BAD_TYPE)  # a market order cannot be post-only
    if action == A_REPLACE and intent.order_id < 0:
        return _reject(risk, R_BAD_ORDER_ID)
    if qty <= 0:
        return _reject(risk, R_BAD_QTY)
    if otype == T_LIMIT and price <= 0:
        return _reject(risk, R_BAD_PRICE)
    if otype == T_LIMIT and price % risk.price_increment[s] != 0:
        return _reject(risk, R_TICK_SIZE)
    if qty % risk.qty_increment[s] != 0:
        return _reject(risk, R_LOT_SIZE)
    if qty < risk.min_qty[s]:
        return _reject(risk, R_MIN_QTY)

    # trading state and reduce-only
    p = risk.pos.position_lots[s]
    ob = risk.open_buy[s]
    os_ = risk.open_sell[s]
    reducing = False
    if p > 0 and side < 0:
        reducing = qty + os_ <= p
    elif p < 0 and side > 0:
        reducing = qty + ob <= -p
    if risk.stale[s] != 0:
        return _reject(risk, R_BOOK_STALE)  # the symbol is halted while its book is unusable
    st = risk_effective_state(risk, s)
    if st == _HALTED:
        return _reject(risk, R_STATE_HALTED)
    if not reducing:
        why = _loss_check(risk)  # before REDUCING, so a tripped limit names itself as the reason
        if why != 0:
            return _reject(risk, why)
        st = risk_effective_state(risk, s)
    if st == _REDUCING and not reducing:
        return _reject(risk, R_STATE_REDUCING)
    if (flags & F_REDUCE_ONLY) != 0 and not reducing:
        return _reject(risk, R_REDUCE_ONLY)
    stale_ns = risk.lim_i[LI_STALE_NS]
    mid = risk.pos.mark[s]
    if mid <= 0.0 or (stale_ns > 0 and now_ns - risk.book_ns[s] > stale_ns):
        return _reject(risk, R_BOOK_STALE)

    # size, notional, collar
    vptl = risk.pos.value_per_tick_lot[s]
    if risk.max_order_qty[s] > 0 and qty > risk.max_order_qty[s]:
        return _reject(risk, R_MAX_ORDER_QTY)
    px = float(price) if otype == T_LIMIT else mid
    if risk.max_notional[s] > 0.0 and px * qty * vptl > risk.max_notional[s]:
        return _reject(risk, R_MAX_NOTIONAL)
    if otype == T_LIMIT:
        dist = abs(price - mid)
        if risk.collar_ticks[s] > 0 and dist > risk.collar_ticks[s]:
            return _reject(risk, R_PRICE_COLLAR)
        if risk.collar_frac[s] > 0.0 and dist > risk.collar_frac[s] * mid:
            return _reject(risk, R_PRICE_COLLAR)

    # position after the order, worst case over open orders on the same side
    nb = ob + qty if side > 0 else ob
    ns = os_ + qty if side < 0 else os_
    if risk.max_position[s] > 0 and _worst_lots(p, nb, ns) > risk.max_position[s]:
        return _reject(risk, R_MAX_POSITION)

    if not reducing:
        max_gross = risk.lim_f[LF_MAX_GROSS]
        max_lev = risk.lim_f[LF_MAX_LEVERAGE]
        if max_gross > 0.0 or max_lev > 0.0:
            gross = 0.0
            pl = risk.pos.position_lots
            for j in range(n):
                if j == s:
                    w = _worst_lots(p, nb, ns)
                else:
                    w = _worst_lots(pl[j], risk.open_buy[j], risk.open_sell[j])
                gross += w * risk.pos.mark[j] * risk.pos.value_per_tick_lot[j]
            if max_gross > 0.0 and gross > max_gross:
                return _reject(risk, R_MAX_GROSS_EXPOSURE)
            if max_lev > 0.0:
                eq = pos_equity(risk.pos)
                if eq <= 0.0 or gross > max_lev * eq:
                    return _reject(risk, R_MAX_LEVERAGE)

    # open orders and rates (last: passing consumes rate budget)
    if action == A_NEW:
        if risk.max_open_symbol[s] > 0 and risk.open_count[s] >= risk.max_open_symbol[s]:
            return _reject(risk, R_MAX_OPEN_ORDERS)
        if risk.lim_i[LI_MAX_OPEN] > 0 and risk.g[G_OPEN_TOTAL] >= risk.lim_i[LI_MAX_OPEN]:
            return _reject(risk, R_MAX_OPEN_ORDERS)
    window = risk.lim_i[LI_WINDOW_NS]
    rs = risk.rate_symbol[s]
    head = risk.rate_head[s]
    if rs > 0 and not _rate_ok(risk.rate_ts[s], head, now_ns, window):
        return _reject(risk, R_RATE_SYMBOL)
    rt = risk.lim_i[LI_RATE_TOTAL]
    th = risk.g[G_RATE_HEAD]
    if rt > 0 and not _rate_ok(risk.rate_total_ts, th, now_ns, window):
        return _reject(risk, R_RATE_TOTAL)

    # pass
    if rs > 0:
        risk.rate_ts[s, head] = now_ns
        head += 1
        risk.rate_head[s] = 0 if head >= rs else head
    if rt > 0:
        risk.rate_total_ts[th] = now_ns
        th += 1
        risk.g[G_RATE_HEAD] = 0 if th >= rt else th
    if action == A_NEW:
        if side > 0:
            risk.open_buy[s] = ob + qty
        else:
            risk.open_sell[s] = os_ + qty
        risk.open_count[s] += 1
        risk.g[G_OPEN_TOTAL] += 1
    risk.counters[C_PASSED] += 1
    risk.g[G_SEQ] += 1
    _emit(
        out,
        k,
        risk.g[G_SEQ],
        intent.ts_origin,
        intent.ts_exch,
        s,
        action,
        side,
        flags,
        intent.order_id,
        price,
        qty,
        otype,
        tif,
        intent.strategy,
        intent.venue,
        intent.client_id,
    )
    return 1


@kernel
def _release(risk, s, side, qty):
    if side > 0:
        risk.open_buy[s] = max(np.int64(0), risk.open_buy[s] - qty)
    else:
        risk.open_sell[s] = max(np.int64(0), risk.open_sell[s] - qty)


@kernel
def _close_one(risk, s):
    if risk.open_count[s] > 0:
        risk.open_count[s] -= 1
    if risk.g[G_OPEN_TOTAL] > 0:
        risk.g[G_OPEN_TOTAL] -= 1


@kernel(inline=True)
def risk_on_report(risk, rep):
    """Apply one EXEC_REPORT forwarded by the router: positions, PnL, open orders, loss trips.

    Returns the realized PnL of a fill (0.0 otherwise). Bad reports are counted, never raise.
    """
    s = rep.symbol
    side = np.int64(rep.side)
    if s < 0 or s >= risk.stale.shape[0] or (side != 1 and side != -1):
        risk.counters[C_BAD_REPORTS] += 1
        return 0.0
    kind = rep.kind
    qty = np.int64(rep.qty)
    realized = 0.0
    if (rep.flags & F_OPENS_ORDER) != 0:  # a REPLACE-by-side the router sent as a NEW: count it open now
        opened = qty if kind == X_REPLACED else np.int64(rep.leaves_qty) + qty
        _release(risk, s, side, -opened)
        risk.open_count[s] += 1
        risk.g[G_OPEN_TOTAL] += 1
    if kind == X_PARTIAL or kind == X_FILL:
        if qty <= 0:
            risk.counters[C_BAD_REPORTS] += 1
            return 0.0
        realized = pos_fill(risk.pos, s, side, np.int64(rep.price), qty, rep.fee)
        _release(risk, s, side, qty)
        if kind == X_FILL:
            _close_one(risk, s)
    elif kind == X_CANCELED or kind == X_REJECTED or kind == X_EXPIRED:
        _release(risk, s, side, qty)
        _close_one(risk, s)
    elif kind == X_REPLACED:  # qty = old open lots, leaves_qty = new open lots
        _release(risk, s, side, qty)
        _release(risk, s, side, -np.int64(rep.leaves_qty))
    elif kind != X_ACK and kind != X_CANCEL_REJECTED:  # ACK and CANCEL_REJECTED change nothing here
        risk.counters[C_BAD_REPORTS] += 1
        return 0.0
    risk.counters[C_REPORTS] += 1
    _loss_check(risk)
    return realized


@kernel
def _mark_stale(risk, s):
    """The symbol's book is unusable: HALTED for it (a CANCEL_ALL is owed unless it was halted already)."""
    if risk.stale[s] == 0:
        if risk_effective_state(risk, s) != _HALTED:
            risk.cancel_owed[s] = 1
        risk.stale[s] = 1
        risk.counters[C_STALE_HALTS] += 1


@kernel
def risk_poll(risk, now_ns, out, k):
    """Book age and owed CANCEL_ALLs: call it when idle (the engine's loop) -- also runs on every book state.

    A symbol whose last usable book state is older than ``stale_after_ns`` (when set) is marked stale, as if
    the book stage had flagged it: a silent feed halts the symbol too. Then the owed CANCEL_ALLs (global
    first, then per symbol) are written to ``out[k:]``: at most ``min(n_symbols + 1, len(out) - k)``.
    Returns how many.
    """
    stale_ns = risk.lim_i[LI_STALE_NS]
    if stale_ns > 0:
        for s in range(risk.stale.shape[0]):
            if risk.stale[s] == 0 and now_ns - risk.book_ns[s] > stale_ns:
                _mark_stale(risk, s)
    w = 0
    cap = out.shape[0] - k
    if risk.g[G_CANCEL_ALL_OWED] != 0 and w < cap:
        risk.g[G_CANCEL_ALL_OWED] = 0
        risk.cancel_owed[:] = 0  # covered by the global cancel
        _emit_cancel_all(risk, -1, now_ns, out, k + w)
        w += 1
    for s in range(risk.cancel_owed.shape[0]):
        if w >= cap:
            break
        if risk.cancel_owed[s] != 0:
            risk.cancel_owed[s] = 0
            _emit_cancel_all(risk, s, now_ns, out, k + w)
            w += 1
    return w


@kernel(inline=True)
def risk_on_book(risk, bs, now_ns, out, k):
    """Apply one BOOK_STATE: mark to mid, staleness (-> symbol HALTED), loss/drawdown trips.

    Emits owed CANCEL_ALLs into ``out[k:]`` (at most ``n_symbols + 1``, bounded by ``len(out) - k``) and
    returns how many it wrote.
    """
    s = bs.symbol
    if s < 0 or s >= risk.stale.shape[0]:
        risk.counters[C_BAD_REPORTS] += 1
        return 0
    risk.counters[C_BOOKS] += 1
    unusable = (bs.flags & (F_STALE | F_CROSSED)) != 0 or bs.bid_px <= 0 or bs.bid_px >= bs.ask_px
    if unusable:
        _mark_stale(risk, s)
    else:
        risk.stale[s] = 0
        risk.book_ns[s] = now_ns
        pos_mark(risk.pos, s, bs.mid)
        _loss_check(risk)
    return risk_poll(risk, now_ns, out, k)


@kernel
def risk_set_limit(risk, key, s, bits):
    """Set limit ``key`` (:data:`LIMIT_KEYS`) to the float64 whose bits are ``bits``, for symbol ``s`` (-1:
    every symbol; a global limit ignores ``s``); False for an unknown key or a bad value (negative)."""
    v = bits_f64(bits)
    if not v >= 0.0:
        return False
    lo = 0 if s < 0 else s
    hi = risk.stale.shape[0] if s < 0 else s + 1
    iv = np.int64(v)
    if key == L_MAX_ORDER_QTY:
        risk.max_order_qty[lo:hi] = iv
    elif key == L_MAX_POSITION:
        risk.max_position[lo:hi] = iv
    elif key == L_RATE_PER_SYMBOL:
        risk.rate_symbol[lo:hi] = min(iv, risk.rate_ts.shape[1])
    elif key == L_COLLAR_TICKS:
        risk.collar_ticks[lo:hi] = iv
    elif key == L_MAX_NOTIONAL:
        risk.max_notional[lo:hi] = v
    elif key == L_COLLAR_FRAC:
        risk.collar_frac[lo:hi] = v
    elif key == L_MAX_OPEN_ORDERS_SYMBOL:
        risk.max_open_symbol[lo:hi] = iv
    elif key == L_RATE_TOTAL:
        risk.lim_i[LI_RATE_TOTAL] = min(iv, risk.rate_total_ts.shape[0])
    elif key == L_MAX_OPEN_ORDERS:
        risk.lim_i[LI_MAX_OPEN] = iv
    elif key == L_MAX_GROSS_EXPOSURE:
        risk.lim_f[LF_MAX_GROSS] = v
    elif key == L_MAX_LEVERAGE:
        risk.lim_f[LF_MAX_LEVERAGE] = v
    elif key == L_DAILY_LOSS_LIMIT:
        risk.lim_f[LF_DAILY_LOSS] = v
    elif key == L_MAX_DRAWDOWN:
        risk.lim_f[LF_MAX_DRAWDOWN] = v
    else:
        return False
    return True


@kernel(inline=True)
def risk_on_control(risk, ctl, now_ns, out, k):
    """Apply one CONTROL (kill switch etc.); returns how many CANCEL_ALLs it wrote to ``out[k:]``.

    HALT and STOP: HALTED + cancel every open order (of the symbol, or all when symbol == -1). REDUCE:
    REDUCING. RESUME: ACTIVE, clears a loss/drawdown trip (global) and re-bases the high-water mark. SET: a
    limit (:func:`risk_set_limit`). NEW_DAY: the daily loss counts from now (:func:`risk_new_day`).
    """
    s = ctl.symbol
    n = risk.stale.shape[0]
    cmd = ctl.kind
    if s < -1 or s >= n or cmd < K_STOP or cmd > K_NEW_DAY:
        risk.counters[C_BAD_CONTROLS] += 1
        return 0
    if cmd == K_SET:
        if risk_set_limit(risk, np.int64(ctl.side), s, ctl.arg):
            risk.counters[C_CONTROLS] += 1
        else:
            risk.counters[C_BAD_CONTROLS] += 1
        return 0
    risk.counters[C_CONTROLS] += 1
    if cmd == K_NEW_DAY:
        risk_new_day(risk)
        return 0
    if cmd == K_STOP or cmd == K_HALT:
        st = _HALTED
    elif cmd == K_REDUCE:
        st = _REDUCING
    else:  # RESUME
        st = _ACTIVE
    if s == -1:
        risk.g[G_STATE] = st
        if cmd == K_RESUME:
            risk.g[G_TRIP] = 0
            risk.gf[GF_HWM] = pos_equity(risk.pos)
            risk.sym_state[:] = 0
        elif st == _HALTED:
            risk.g[G_CANCEL_ALL_OWED] = 1
    else:
        risk.sym_state[s] = st
        if st == _HALTED:
            risk.cancel_owed[s] = 1
    return risk_poll(risk, now_ns, out, k)


@kernel
def risk_new_day(risk):
    """Start a new trading day: the daily loss counts from the current equity again."""
    risk.gf[GF_DAY_START] = pos_equity(risk.pos)


@kernel
def risk_to_telemetry(risk, tm_counters, tm_risk, now_ns):
    """Publish to the risk stage's telemetry block (:mod:`hean.telemetry.block`): the strictest trading state
    over the symbols, open orders, PnL, per-symbol positions, and the reject counters by reason (copied as
    cumulative totals into ``C_REJECTS`` / ``C_REJECT_BASE + reason``; reasons >= 31 share the last slot).

    O(n_symbols + reasons): call it every few ms from the stage loop, not per event. The block's reject
    slots then belong to this call: do not also count them with ``tm_reject``.
    """
    n = risk.stale.shape[0]
    st = 0
    for s in range(n):
        st = max(st, risk_effective_state(risk, s))
    risk_set_state(tm_risk, st + 1, risk.g[G_OPEN_TOTAL], risk.counters[C_REJECTED], now_ns)  # TS_* = state + 1
    t = risk.pos.totals
    risk_set_totals(tm_risk, t[0], t[2], t[1])
    for s in range(n):
        p = risk.pos
        risk_set_position(tm_risk, s, p.position_lots[s], p.avg_px[s], p.realized[s], p.unrealized[s])
    tm_copy_rejects(tm_counters, risk.rejects)
    store_relaxed(tm_counters, C_REJECTS, risk.counters[C_REJECTED])


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------
RISK_OUT = 16  # the most ORDER records one risk kernel call may write


class RiskStage(NamedTuple):
    """The risk stage's state: its limits, positions and counters, the orders it writes, its clock."""

    risk: RiskState
    out: np.ndarray  # ORDER[RISK_OUT]
    rej: np.ndarray  # EXEC_REPORT[1]: the REJECTED report of an intent risk refused (to its strategy)
    rstate: np.ndarray  # int64[n_symbols]: the TradingState of each symbol, for the strategies (a shared view)
    clock: np.ndarray  # int64[1]: risk's exchange clock, the latest book state's ts_exch it applied


# histogram rows: an input's age when risk takes it
H_AGE_STATES = 1
H_AGE_INTENTS = 2
H_AGE_REPORTS = 3


@kernel(forceinline=True, error_model="numpy")
def risk_reject_report(buf, k, intent, reason):
    """``buf[k]``: the REJECTED report of an intent risk refused, for the strategy that sent it."""
    r = buf[k]
    r.seq = intent.seq
    r.ts_origin = intent.ts_origin
    r.ts_exch = intent.ts_exch
    r.symbol = intent.symbol
    r.kind = X_REJECTED if intent.kind == A_NEW else X_CANCEL_REJECTED
    r.side = intent.side
    r.flags = 0
    r.order_id = intent.order_id
    r.price = intent.price
    r.qty = intent.qty
    r.leaves_qty = 0
    r.cum_qty = 0
    r.fee = 0.0
    r.ts_venue = 0
    r.client_id = intent.client_id
    r.venue = -1
    r.reason = reason
    r.liquidity = 0
    r.strategy = intent.strategy


@kernel(forceinline=True, error_model="numpy")
def risk_step(Rk, ins, outs, tm, now, flags):
    """Control, reports, book states, then intents (only once every given book state is applied).

    ``ins``: (states, intents, reports, control); ``outs``: (orders, rejects). An intent risk refuses goes
    back to its strategy as a REJECTED report on ``rejects`` (reason and client id), so the strategy's order
    table never waits for an order that was never sent.
    """
    bs_in, intents, reports, control = ins
    orders = outs[0]  # every consumer: the router, then the journal when there is one (off the t2t path)
    rejects = outs[1]
    risk = Rk.risk
    clock = Rk.clock
    done = 0
    # control (the kill switch): cancel-alls out
    start, n = available(control.hdr)
    k = 0
    while k < n and room_each(orders, RISK_OUT, tm.counters):
        rec = control.slots[(start + k) & control.hdr[MASK]]
        out_each_nearest_first(orders, Rk.out, risk_on_control(risk, rec, clock[0], Rk.out, 0), tm)
        k += 1
    if k:
        release_to(control, start + k)
        done += k
    # execution reports: positions, PnL, open orders (no output)
    start, n = available(reports.hdr)
    m = reports.hdr[MASK]
    n = min(n, BATCH)
    if n:
        t0 = stage_clock(flags)
        for j in range(n):
            rep = reports.slots[(start + j) & m]
            age(tm.hists[H_AGE_REPORTS], t0, rep.ts_origin)
            risk_on_report(risk, rep)
        service(tm.hists, t0, n)
        release_to(reports, start + n)
        done += n
    # book states: marks, staleness; owed cancel-alls out. When intents wait, first every book state
    # published before them (they were published before the intents they caused): a snapshot of the
    # book-state ring's WRITE taken now bounds them, so a continuous flow of states cannot starve intents.
    goal, i0, n_int = goal_if_waiting(bs_in, intents)
    start, n = available(bs_in.hdr)
    if n:
        m = bs_in.hdr[MASK]
        k = 0
        t0 = stage_clock(flags)
        while k < min(n, max(BATCH, goal - start)) and room_each(orders, RISK_OUT, tm.counters):
            bs = bs_in.slots[(start + k) & m]
            clock[0] = bs.ts_exch
            age(tm.hists[H_AGE_STATES], t0, bs.ts_origin)
            out_each_nearest_first(orders, Rk.out, risk_on_book(risk, bs, bs.ts_exch, Rk.out, 0), tm)
            k += 1
        if k:
            service(tm.hists, t0, k)
            release_to(bs_in, start + k)
            done += k
    # intents, once every book state published before them is applied
    if goal >= 0 and load_relaxed(bs_in.hdr, READ) >= goal:
        m = intents.hdr[MASK]
        k = 0
        t0 = stage_clock(flags)
        while k < min(n_int, BATCH) and room_each(orders, RISK_OUT, tm.counters) and room_each(rejects, 1, tm.counters):
            it = intents.slots[(i0 + k) & m]
            age(tm.hists[H_AGE_INTENTS], t0, it.ts_origin)
            w = risk_on_intent(risk, it, it.ts_exch, Rk.out, 0)
            out_each_nearest_first(orders, Rk.out, w, tm)
            if w == 0:
                risk_reject_report(Rk.rej, 0, it, risk.counters[C_LAST_REASON])
                put_each(rejects, Rk.rej[0])
            k += 1
        if k:
            service(tm.hists, t0, k)
            release_to(intents, i0 + k)
            done += k
    # cancel-alls owed after trips (loss, drawdown, staleness): only state changes above can owe one
    if done and room_each(orders, RISK_OUT, tm.counters):
        out_each_nearest_first(orders, Rk.out, risk_poll(risk, clock[0], Rk.out, 0), tm)
    if done:
        tm_add(tm.counters, C_EVENTS_IN, done)
    return done


@kernel(forceinline=True, error_model="numpy")
def risk_view(Rk, tm, now):
    """What risk shows observers: its trading state, PnL, positions and rejects (hean top, the summary)."""
    risk_to_telemetry(Rk.risk, tm.counters, tm.risk, Rk.clock[0])
    for s in range(Rk.rstate.shape[0]):
        store_relaxed(Rk.rstate, s, risk_effective_state(Rk.risk, s))


def risk_limits(table: dict, symbols: list, error=ValueError) -> dict:
    """``[risk]`` as :func:`make_risk`'s keyword arguments: the ``*_units`` keys (instrument units) turned into
    lots with each symbol's lot size, and ``[risk.symbols.NAME]`` overrides into per-symbol arrays. ``error``
    builds the exception for a bad key or value (its message names the key)."""
    from hean.symbols import to_lots

    t = dict(table)
    per = t.pop("symbols", {}) or {}
    if not isinstance(per, dict):
        raise error("key 'risk.symbols': a table of [risk.symbols.NAME] tables")
    names = [s.name for s in symbols]
    defaults = {k: p.default for k, p in parameters_of(make_risk).items()}

    def column(key: str) -> np.ndarray:
        v = t.get(key, defaults[key])
        dtype = np.float64 if isinstance(defaults[key], float) else np.int64
        return np.array(v, dtype) if np.ndim(v) else np.full(len(names), v, dtype)

    for key, base in UNIT_KEYS.items():
        if key in t:
            v = t.pop(key)
            try:
                t[base] = np.array([to_lots(v, s.lot_size, f"key 'risk.{key}'") for s in symbols], np.int64)
            except ValueError as e:
                raise error(str(e)) from None
    for name, over in per.items():
        if name not in names:
            raise error(f"key 'risk.symbols.{name}': no symbol {name!r} in this run; its symbols: {names}")
        if not isinstance(over, dict):
            raise error(f"key 'risk.symbols.{name}': a table of limits")
        s = names.index(name)
        for key, v in over.items():
            base = UNIT_KEYS.get(key, key)
            if base not in LIMIT_KEYS or not LIMIT_KEYS[base][1]:
                per_symbol = sorted([k for k, (_, ps) in LIMIT_KEYS.items() if ps] + list(UNIT_KEYS))
                raise error(f"key 'risk.symbols.{name}.{key}': not a per-symbol limit; one of {per_symbol}")
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise error(f"key 'risk.symbols.{name}.{key}': a number >= 0, got {v!r}")
            try:
                v = to_lots(v, symbols[s].lot_size, f"key 'risk.symbols.{name}.{key}'") if key in UNIT_KEYS else v
            except ValueError as e:
                raise error(str(e)) from None
            col = column(base)
            col[s] = v
            t[base] = col
    return t


def min_lots(symbols: list) -> np.ndarray:
    """Each symbol's ``min_qty`` (instrument units, 0: none) in whole lots, rounded up, at least 1."""
    from decimal import ROUND_CEILING, Decimal

    out = []
    for s in symbols:
        low, lot = Decimal(str(s.min_qty)), Decimal(str(s.lot_size))
        out.append(max(1, int((low / lot).to_integral_value(rounding=ROUND_CEILING))))
    return np.array(out, np.int64)


def make_risk_stage(ctx) -> RiskStage:
    """The risk stage from ``[risk]``; positions live in the shared view the strategy reads."""
    raw = dict(ctx.cfg.risk) if ctx.real else {}
    ctx.kwargs("risk", {k: v for k, v in raw.items() if k != "symbols" and k not in UNIT_KEYS}, make_risk)
    table = risk_limits(raw, ctx.symbols, ctx.error)
    if "value_per_tick_lot" not in table:  # quote currency per tick x lot of each symbol
        table["value_per_tick_lot"] = ctx.value_per_tick_lot
    if "min_qty" not in table:  # each instrument's own minimum ([[symbols]] min_qty, an instrument file's)
        table["min_qty"] = min_lots(ctx.cfg.symbols)
    table["listing"] = (ctx.instrument_of != np.arange(len(ctx.instrument_of))).astype(np.int64)
    position = ctx.views["pos"] if ctx.real else None
    risk = ctx.call("risk", make_risk, len(ctx.symbols), position_lots=position, **table)
    rstate = ctx.views["rstate"] if ctx.real else np.zeros(max(1, len(ctx.symbols)), np.int64)
    return RiskStage(risk, np.zeros(RISK_OUT, ORDER), np.zeros(1, EXEC_REPORT), rstate, np.zeros(1, np.int64))


RISK = Stage(
    name="risk",
    module=__name__,
    step="risk_step",
    view="risk_view",
    inputs=(
        Stream("states", BOOK_STATE),
        Stream("intents", ORDER),
        Stream("reports", EXEC_REPORT),
        Stream("control", CONTROL, external=True),
    ),
    outputs=(Stream("orders", ORDER), Stream("rejects", EXEC_REPORT)),
    build=make_risk_stage,
    hists=("service", "age:states", "age:intents", "age:reports"),
    feedback=frozenset({"reports"}),
    config="risk",
    risk_region=True,
)
