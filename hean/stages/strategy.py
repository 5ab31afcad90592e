"""The strategy stage: hosts the run's strategies -- book states and their own execution reports in, orders out.

Each strategy is a plug-in (:mod:`hean.api`, loaded by :mod:`hean.strategies.plugin`) in one of
:data:`MAX_STRATEGIES` *slots*; its id is its slot, written to ``ORDER.strategy`` and echoed in every report.
Per record, with no interpreter in between:

* a **book state** goes to every strategy trading its symbol (``subs``): the stage copies it into the
  strategy's ``book``, keeps its trade ring, advances its bars and indicators (its own periods), fires its
  timer when event time passed it, then calls ``on_trade`` (a TRADE state) or ``on_book``;
* a **report** (the router's ``reports``, and risk's ``rejects`` of intents it refused) goes to the strategy
  that sent the order (``r.strategy``): the stage updates the order (``hean.api`` states), its position and
  cash from fills, sends a cancel the strategy asked for before the router's id was known, then calls
  ``on_report``;
* after each callback, the actions it queued (``ctx.acts``) become ORDER intents: a NEW carries the
  strategy's client id, a CANCEL/REPLACE the router's id of the target.

Callbacks are called through their C addresses (:mod:`hean.strategies.abi`), so this stage -- and the worker
loop it is compiled into -- never changes with a strategy: editing a strategy recompiles only its own
callbacks, in its own cache folder.

Reports are taken before book states in every pass: a strategy learns of a fill before it sees the next
book. Intents caused by a report or a timer carry ``ts_origin`` 0: no market event caused them, so they are
not tick-to-trade samples.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from hean import api as A
from hean.indicators.streaming import IndicatorConfig, IndicatorSet, indicators_update, make_indicator_set
from hean.jit import entry, kernel
from hean.records import (
    A_CANCEL,
    A_NEW,
    A_REPLACE,
    BOOK_STATE,
    EXEC_REPORT,
    F_CROSSED,
    F_STALE,
    ORDER,
    X_ACK,
    X_CANCEL_REJECTED,
    X_CANCELED,
    X_EXPIRED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    X_REPLACED,
    BookStateKind,
)
from hean.rings.spsc import available
from hean.shm import lazy_zeros
from hean.stages.bars import (
    B_CLOSE,
    B_HIGH,
    B_LOW,
    B_VOLUME,
    B_VWAP,
    K_SOURCE,
    SOURCE_MID,
    SOURCE_TRADES,
    SOURCES,
    BarConfig,
    BarState,
    bar_add,
    bar_roll,
    make_bar_state,
)
from hean.stages.declare import Stage, Stream
from hean.stages.depth import DW_LEVELS, MAX_DEPTH, N_DP, depth_copy, depth_levels
from hean.stages.ports import BATCH, age, put_each, release_to, room_each, service, slot, stage_clock
from hean.strategies import abi
from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT, C_USER_BASE, f64_bits, tm_add
from hean.telemetry.block import C_ORDERS as TM_ORDERS

MAX_STRATEGIES = 8  # slots: strategies in one run

MODE_TICK = 0
MODE_BAR = 1
MODES = {"tick": MODE_TICK, "bar": MODE_BAR}

# slot.cfg[S_*]
S_ACTIVE = 0  # 1: a strategy runs in this slot
S_ON_BOOK = 1  # addresses of the callbacks' C entry points (0: not given)
S_ON_TRADE = 2
S_ON_REPORT = 3
S_ON_TIMER = 4
S_DESC = 5  # address of the descriptor (hean.strategies.abi)
S_MODE = 6  # MODE_TICK / MODE_BAR
S_TICK_SOURCE = 7  # SOURCE_TRADES / SOURCE_MID (tick mode)
S_TIMER_NS = 8  # on_timer's period (0: none)
S_NEXT_TIMER = 9  # event time of the next on_timer (0: not started)
S_INTENTS = 10  # intents published
S_FILLS = 11  # fills received (partial and full)
S_SAMPLES = 12  # indicator samples taken
S_UNKNOWN = 13  # reports naming an order the strategy's table no longer holds
S_RECORD = 14  # 1: keep the logs below (a backtest); 0: not (a live run keeps no history in the hot path)
S_EQUITY_NS = 15  # equity sample period in event time (0: at fills only)
S_NEXT_EQUITY = 16
S_FAULT = 17  # the callback (S_ON_BOOK .. S_ON_TIMER) that raised; the strategy is called no more (0: none)
S_FAULT_S = 18  # its arguments (to reproduce the fault in Python: hean.strategies.plugin.reproduce_fault)
S_FAULT_ARG = 19
S_DEBUG = 20  # 1: the state is copied to ``snap`` before each callback (so a fault can be replayed in Python)
S_DEPTH = 21  # levels per side copied to ``depth`` with each book state (0: none)
S_DEPTH_MISS = 22  # book states whose depth entry was not theirs (never, unless the table is mis-sized)
N_SCFG = 24
CALLBACK_OF = {S_ON_BOOK: "on_book", S_ON_TRADE: "on_trade", S_ON_REPORT: "on_report", S_ON_TIMER: "on_timer"}

# the recorder (a backtest's results): slot.rec_n[R_*] rows written to each log
R_ORDERS = 0  # rec_orders: every intent sent
R_REPORTS = 1  # rec_reports: every report applied (fills, acks, cancels, rejects)
R_EQUITY = 2  # rec_equity: the strategy's PnL over time
R_LOST = 3  # rows that found their log full (the backtest sizes the logs; a lost row is reported)
N_REC = 4

EQUITY = np.dtype([("ts", "<i8"), ("pnl", "<f8"), ("fees", "<f8"), ("gross_lots", "<i8"), ("notional", "<f8")])
"""One equity sample: event time, PnL (cash + positions at the mid - fees), fees, sum of |positions|, traded
notional -- over the strategy's symbols, in quote currency."""

# stage.g[G_*]
G_SEQ = 0  # seq of the last intent
G_PER_RECORD = 1  # most intents one record can cause (room asked before taking it)
N_G = 4

# histogram rows: an input's age when the stage takes it
H_AGE_STATES = 1
H_AGE_REPORTS = 2
H_AGE_REJECTS = 3

QUOTE = int(BookStateKind.QUOTE)
TRADE = int(BookStateKind.TRADE)


class Slot(NamedTuple):
    """One strategy's state as the stage sees it; ``desc`` holds the addresses its callbacks see it by."""

    cfg: np.ndarray  # int64[N_SCFG]
    local: np.ndarray  # int64[engine symbols]: the strategy's index of each engine symbol, -1 if not traded
    desc: np.ndarray  # int64[abi.N_DESC]
    params: np.ndarray  # uint8: one record of the strategy's params dtype
    state: np.ndarray  # uint8: n records of its state dtype
    book: np.ndarray  # BOOK_STATE[n]
    symbols: np.ndarray  # int64[n]
    ind: IndicatorSet
    bars: BarState
    info: np.ndarray  # int64[n, N_INFO]
    trades: np.ndarray  # int64[n, TRADES_KEPT, N_TRADE]
    orders: np.ndarray  # int64[ORDERS_CAP, N_OF]
    acts: np.ndarray  # int64[MAX_ACTIONS, N_OF]
    meta: np.ndarray  # int64[N_META]
    pos: np.ndarray  # int64[n]
    money: np.ndarray  # float64[n, N_MONEY]
    value: np.ndarray  # float64[n]
    risk_pos: np.ndarray  # int64[engine symbols]: the shared positions risk writes
    risk_state: np.ndarray  # int64[engine symbols]: the shared trading states risk writes
    rec_orders: np.ndarray  # ORDER[cap]: the recorder's logs (one row each when not recording)
    rec_reports: np.ndarray  # EXEC_REPORT[cap]
    rec_equity: np.ndarray  # EQUITY[cap]
    rec_n: np.ndarray  # int64[N_REC]
    snap: np.ndarray  # uint8: the state before the current callback (debug; one byte otherwise)
    depth: np.ndarray  # int64[n, N_DP, max(1, depth)]: the top levels with each symbol's latest state
    report: np.ndarray  # EXEC_REPORT[1]: the report of the current on_report (debug: to replay a fault)


class StrategyStage(NamedTuple):
    """The stage's state: the slots, who trades which symbol, and its intent buffer.

    Kernels reach slot ``j`` through ``hd[j]`` (:func:`slot_at`): taking a slot out of a tuple of slots by a
    run-time index made LLVM copy it out of a switch over all of them (~30 ns per record); views made from
    addresses cost a few instructions each. The slots themselves -- what keeps the arrays alive, and Python's
    handle on them (:func:`slots_of`) -- stay out of the compiled state: in it, their ~300 arrays made every
    function taking the worker unbox and pass them.
    """

    hd: np.ndarray  # int64[MAX_STRATEGIES, N_HD]: each slot's arrays by address and dims (SLOT_ARRAYS)
    subs: np.ndarray  # int64[engine symbols, 1 + MAX_STRATEGIES]: count, then the slots trading it
    g: np.ndarray  # int64[N_G]
    out: np.ndarray  # ORDER[1]
    depth: np.ndarray  # int64[rows, 2 + 4N]: the book's depth entries (hean.stages.depth)


# every array of a slot, in the order of hd[j, 4 * k : 4 * k + 4] = (address, dim0, dim1, dim2)
SLOT_ARRAYS = (
    "cfg", "local", "desc", "params", "state", "book", "symbols",
    "ind.iparams", "ind.fparams", "ind.fstate", "ind.istate", "ind.sma_ring", "ind.bb_ring", "ind.vwap_pv",
    "ind.vwap_v", "ind.out",
    "bars.params", "bars.cur", "bars.cur_i", "bars.last", "bars.last_i",
    "info", "trades", "orders", "acts", "meta", "pos", "money", "value", "risk_pos", "risk_state",
    "rec_orders", "rec_reports", "rec_equity", "rec_n", "snap", "depth", "report",
)  # fmt: skip
N_HD = 4 * len(SLOT_ARRAYS)
_K = {name: k for k, name in enumerate(SLOT_ARRAYS)}

_i1 = abi.array_view(np.int64, 1)
_i2 = abi.array_view(np.int64, 2)
_i3 = abi.array_view(np.int64, 3)
_f1 = abi.array_view(np.float64, 1)
_f2 = abi.array_view(np.float64, 2)
_u1 = abi.array_view(np.uint8, 1)
_states = abi.array_view(BOOK_STATE, 1)
_orders = abi.array_view(ORDER, 1)
_reports = abi.array_view(EXEC_REPORT, 1)
_equity = abi.array_view(EQUITY, 1)


def slot_addresses(sl: Slot) -> np.ndarray:
    """The row of ``hd`` for slot ``sl``: each array of SLOT_ARRAYS by address and shape."""
    row = np.zeros(N_HD, np.int64)
    for k, name in enumerate(SLOT_ARRAYS):
        arr = sl
        for part in name.split("."):
            arr = getattr(arr, part)
        assert arr.flags.c_contiguous and arr.ndim <= 3, name
        row[4 * k] = arr.ctypes.data
        row[4 * k + 1 : 4 * k + 1 + arr.ndim] = arr.shape
    return row


# ---------------------------------------------------------------------------------------------------------
# kernels
@kernel(forceinline=True, error_model="numpy")
def slot_at(hd, j):
    """Slot ``j`` as views over its arrays (from ``hd[j]``, :func:`slot_addresses`): no copy, the same type
    for every slot."""
    h = hd[j]
    return Slot(
        _i1(h[0], (h[1],)),
        _i1(h[4], (h[5],)),
        _i1(h[8], (h[9],)),
        _u1(h[12], (h[13],)),
        _u1(h[16], (h[17],)),
        _states(h[20], (h[21],)),
        _i1(h[24], (h[25],)),
        IndicatorSet(
            _i1(h[28], (h[29],)),
            _f1(h[32], (h[33],)),
            _f2(h[36], (h[37], h[38])),
            _i2(h[40], (h[41], h[42])),
            _f2(h[44], (h[45], h[46])),
            _f2(h[48], (h[49], h[50])),
            _f2(h[52], (h[53], h[54])),
            _f2(h[56], (h[57], h[58])),
            _f2(h[60], (h[61], h[62])),
        ),
        BarState(
            _i1(h[64], (h[65],)),
            _f2(h[68], (h[69], h[70])),
            _i2(h[72], (h[73], h[74])),
            _f2(h[76], (h[77], h[78])),
            _i2(h[80], (h[81], h[82])),
        ),
        _i2(h[84], (h[85], h[86])),
        _i3(h[88], (h[89], h[90], h[91])),
        _i2(h[92], (h[93], h[94])),
        _i2(h[96], (h[97], h[98])),
        _i1(h[100], (h[101],)),
        _i1(h[104], (h[105],)),
        _f2(h[108], (h[109], h[110])),
        _f1(h[112], (h[113],)),
        _i1(h[116], (h[117],)),
        _i1(h[120], (h[121],)),
        _orders(h[124], (h[125],)),
        _reports(h[128], (h[129],)),
        _equity(h[132], (h[133],)),
        _i1(h[136], (h[137],)),
        _u1(h[140], (h[141],)),
        _i3(h[144], (h[145], h[146], h[147])),
        _reports(h[148], (h[149],)),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def event_time(bs):
    """The event's time in ns: the exchange's when known (deterministic in replay), else the origin stamp."""
    return bs.ts_exch if bs.ts_exch > 0 else bs.ts_origin


@kernel(forceinline=True, error_model="numpy")
def advance_indicators(cfg, ind, bars, s, bs):
    """Feed the record to a slot's bars/indicators per its mode; True if the indicators took a sample."""
    kind = bs.kind
    sound_quote = kind == QUOTE and 0 < bs.bid_px < bs.ask_px and (bs.flags & (F_STALE | F_CROSSED)) == 0
    trade = kind == TRADE and bs.last_trade_qty > 0
    sample = False
    price = high = low = close = volume = 0.0
    if cfg[S_MODE] == MODE_BAR:
        ts = event_time(bs)
        if bar_roll(bars, s, ts) == 1:
            last = bars.last
            sample = True
            price = last[s, B_VWAP]
            high = last[s, B_HIGH]
            low = last[s, B_LOW]
            close = last[s, B_CLOSE]
            volume = last[s, B_VOLUME]
        source = bars.params[K_SOURCE]
        if source == SOURCE_TRADES and trade:
            bar_add(bars, s, ts, float(bs.last_trade_px), float(bs.last_trade_qty))
        elif source == SOURCE_MID and sound_quote:
            bar_add(bars, s, ts, bs.mid, 0.0)
    else:
        source = cfg[S_TICK_SOURCE]
        if source == SOURCE_TRADES and trade:
            sample = True
            price = high = low = close = float(bs.last_trade_px)
            volume = float(bs.last_trade_qty)
        elif source == SOURCE_MID and sound_quote:
            sample = True
            price = high = low = close = bs.mid
    if not sample:
        return False
    fresh = indicators_update(ind, s, price, high, low, close, volume)
    if fresh:
        cfg[S_SAMPLES] += 1
    return fresh


@kernel(forceinline=True, error_model="numpy")
def _log(log, n, which, rec):
    """Append ``rec`` to a recorder log (counted as lost when it is full)."""
    k = n[which]
    if k < log.shape[0]:
        log[k] = rec
        n[which] = k + 1
    else:
        n[R_LOST] += 1


@kernel(forceinline=True, error_model="numpy")
def slot_pnl(sl):
    """(PnL, fees, gross lots, notional) of a slot over its symbols, positions marked to the latest sound mid."""
    total = 0.0
    fees = 0.0
    gross = 0
    notional = 0.0
    for s in range(sl.symbols.shape[0]):
        b = sl.book[s]
        mark = b.mid if b.bid_px > 0 and b.ask_px > b.bid_px else 0.0
        total += sl.money[s, A.Y_CASH] - sl.money[s, A.Y_FEES] + sl.pos[s] * mark * sl.value[s]
        fees += sl.money[s, A.Y_FEES]
        gross += abs(sl.pos[s])
        notional += sl.money[s, A.Y_NOTIONAL]
    return total, fees, gross, notional


@kernel(forceinline=True, error_model="numpy")
def _sample_equity(sl, t):
    k = sl.rec_n[R_EQUITY]
    if k >= sl.rec_equity.shape[0]:
        sl.rec_n[R_LOST] += 1
        return
    e = sl.rec_equity[k]
    e.ts = t
    e.pnl, e.fees, e.gross_lots, e.notional = slot_pnl(sl)
    sl.rec_n[R_EQUITY] = k + 1


@kernel(forceinline=True, error_model="numpy")
def _intent(S, sl, j, row, action, order_id, ts_origin, ts_exch, intents):
    """Publish one ORDER intent of slot ``sl`` (id ``j``) from an order-table row."""
    seq = S.g[G_SEQ] + 1
    S.g[G_SEQ] = seq
    o = S.out[0]
    o.seq = seq
    o.ts_origin = ts_origin
    o.ts_exch = ts_exch
    o.symbol = sl.symbols[row[A.OF_SYMBOL]]
    o.kind = action
    o.side = row[A.OF_SIDE]
    o.flags = row[A.OF_FLAGS]
    o.order_id = order_id
    o.price = row[A.OF_PRICE]
    o.qty = row[A.OF_QTY] if action == A_NEW else row[A.OF_LEAVES]
    o.order_type = row[A.OF_TYPE]
    o.tif = row[A.OF_TIF]
    o.strategy = j
    o.reason = 0
    o.venue = -1
    o.client_id = row[A.OF_CID]
    put_each(intents, o)
    if sl.cfg[S_RECORD] != 0:
        _log(sl.rec_orders, sl.rec_n, R_ORDERS, o)
    sl.cfg[S_INTENTS] += 1


@kernel(forceinline=True, error_model="numpy")
def _flush(S, sl, j, ts_origin, ts_exch, intents):
    """Turn the actions the callback queued into intents; returns how many were published."""
    n = sl.meta[A.M_N_ACTS]
    sent = 0
    for k in range(n):
        row = sl.acts[k]
        action = row[A.OF_ACTION]
        if action == A_NEW:
            _intent(S, sl, j, row, A_NEW, 0, ts_origin, ts_exch, intents)
            sent += 1
        else:
            r = row[A.OF_CID] & (A.ORDERS_CAP - 1)
            rid = sl.orders[r, A.OF_ID]
            if rid == 0:  # not acknowledged yet: a cancel goes out with the first report naming the order
                sl.orders[r, A.OF_DEFERRED] = 1
                continue
            if action == A_REPLACE:  # the requested price and open quantity
                sl.orders[r, A.OF_ACTION] = A_REPLACE
                row[A.OF_LEAVES] = row[A.OF_QTY]
            _intent(S, sl, j, row, action, rid, ts_origin, ts_exch, intents)
            sent += 1
    sl.meta[A.M_N_ACTS] = 0
    return sent


@kernel(forceinline=True, error_model="numpy")
def _call(fn, which, sl, s, arg):
    """Call a callback of the slot unless it is absent or the strategy faulted; a callback that raised (only
    possible with ``debug``: an index out of bounds) faults the strategy: it is called no more."""
    if fn != 0 and sl.cfg[S_FAULT] == 0:
        if sl.cfg[S_DEBUG] != 0:
            for b in range(sl.state.shape[0]):
                sl.snap[b] = sl.state[b]
        if abi.call_callback(fn, sl.cfg[S_DESC], s, arg) != 0:
            sl.cfg[S_FAULT] = which
            sl.cfg[S_FAULT_S] = s
            sl.cfg[S_FAULT_ARG] = arg


@kernel(forceinline=True, error_model="numpy")
def _timers(S, sl, j, t, intents):
    """Fire the slot's timer for every period that event time ``t`` passed (at most one call per record: a
    gap in the data does not replay every missed period)."""
    period = sl.cfg[S_TIMER_NS]
    if period <= 0:
        return 0
    nxt = sl.cfg[S_NEXT_TIMER]
    if nxt == 0:
        sl.cfg[S_NEXT_TIMER] = t - t % period + period
        return 0
    if t < nxt:
        return 0
    sl.cfg[S_NEXT_TIMER] = t - t % period + period
    sl.meta[A.M_NOW] = nxt
    _call(sl.cfg[S_ON_TIMER], S_ON_TIMER, sl, -1, nxt)
    return _flush(S, sl, j, 0, nxt, intents)


@kernel(forceinline=True, error_model="numpy")
def on_book_state(S, bs, intents, k):
    """One book state -- sequence ``k`` of the states ring (its depth entry's) -- to every strategy trading
    its symbol; returns the intents published."""
    sym = bs.symbol
    if sym < 0 or sym >= S.subs.shape[0]:
        return 0
    sent = 0
    for i in range(S.subs[sym, 0]):
        j = S.subs[sym, 1 + i]
        sent += _slot_on_book_state(S, slot_at(S.hd, j), j, sym, bs, intents, k)
    return sent


@kernel(forceinline=True, error_model="numpy")
def _slot_on_book_state(S, sl, j, sym, bs, intents, k):
    """The book state ``bs`` (sequence ``k``) to the strategy of slot ``sl`` (id ``j``)."""
    s = sl.local[sym]
    # the strategy's clock: the records' event time, never going back (a recording's streams interleave:
    # a trade may carry an earlier exchange time than the depth update before it)
    t = max(event_time(bs), sl.meta[A.M_NOW])
    sl.book[s] = bs
    if sl.cfg[S_DEPTH] > 0:
        if not depth_copy(S.depth, k, bs.seq, sym, sl.depth[s]) and depth_levels(S.depth) > 0:
            sl.cfg[S_DEPTH_MISS] += 1
    if sl.cfg[S_RECORD] != 0 and sl.cfg[S_EQUITY_NS] > 0 and t >= sl.cfg[S_NEXT_EQUITY]:
        if sl.cfg[S_NEXT_EQUITY] != 0:
            _sample_equity(sl, t)
        period = sl.cfg[S_EQUITY_NS]
        sl.cfg[S_NEXT_EQUITY] = t - t % period + period
    info = sl.info
    info[s, A.I_EVENTS] += 1
    if bs.kind == TRADE and bs.last_trade_qty > 0:
        row = sl.trades[s, info[s, A.I_TRADES] % A.TRADES_KEPT]
        row[A.T_TS] = t
        row[A.T_PX] = bs.last_trade_px
        row[A.T_QTY] = bs.last_trade_qty
        row[A.T_SIDE] = bs.side
        info[s, A.I_TRADES] += 1
    info[s, A.I_FRESH] = 1 if advance_indicators(sl.cfg, sl.ind, sl.bars, s, bs) else 0
    sent = _timers(S, sl, j, t, intents)
    sl.meta[A.M_NOW] = t
    if bs.kind == TRADE and sl.cfg[S_ON_TRADE] != 0:
        _call(sl.cfg[S_ON_TRADE], S_ON_TRADE, sl, s, 0)
    else:
        _call(sl.cfg[S_ON_BOOK], S_ON_BOOK, sl, s, 0)
    return sent + _flush(S, sl, j, bs.ts_origin, bs.ts_exch, intents)


@kernel(forceinline=True, error_model="numpy")
def _apply_report(sl, o, rep):
    """The order table row ``o``, position and cash after report ``rep``."""
    kind = rep.kind
    st = o[A.OF_STATE]
    if kind == X_PARTIAL or kind == X_FILL:
        q = np.int64(rep.qty)
        s = o[A.OF_SYMBOL]
        side = o[A.OF_SIDE]
        o[A.OF_CUM] += q
        o[A.OF_LEAVES] = 0 if kind == X_FILL else max(np.int64(0), o[A.OF_LEAVES] - q)
        notional = q * rep.price * sl.value[s]
        sl.pos[s] += side * q
        sl.money[s, A.Y_CASH] -= side * notional
        sl.money[s, A.Y_FEES] += rep.fee
        sl.money[s, A.Y_NOTIONAL] += notional
        sl.cfg[S_FILLS] += 1
        if kind == X_FILL:
            o[A.OF_STATE] = A.FILLED
        elif st == A.PENDING:
            o[A.OF_STATE] = A.OPEN
    elif kind == X_ACK:
        if st == A.PENDING:
            o[A.OF_STATE] = A.OPEN
    elif kind == X_CANCELED or kind == X_EXPIRED or kind == X_REJECTED:
        o[A.OF_LEAVES] = 0
        o[A.OF_STATE] = A.CANCELED if kind == X_CANCELED else (A.EXPIRED if kind == X_EXPIRED else A.REJECTED)
    elif kind == X_REPLACED:
        o[A.OF_PRICE] = rep.price
        o[A.OF_LEAVES] = rep.leaves_qty
        o[A.OF_QTY] = o[A.OF_CUM] + rep.leaves_qty
        if st == A.REPLACE_PENDING:
            o[A.OF_STATE] = A.OPEN
    elif kind == X_CANCEL_REJECTED:
        if (st == A.CANCEL_PENDING or st == A.REPLACE_PENDING) and o[A.OF_LEAVES] > 0:
            o[A.OF_STATE] = A.OPEN


@kernel(forceinline=True, error_model="numpy")
def on_report(S, rep, intents):
    """One execution report (or risk's reject) to the strategy whose order it is; returns intents published."""
    j = np.int64(rep.strategy)
    if j >= MAX_STRATEGIES:
        return 0
    sl = slot_at(S.hd, j)
    if sl.cfg[S_ACTIVE] == 0:
        return 0
    cid = rep.client_id
    r = cid & (A.ORDERS_CAP - 1)
    if cid <= 0 or sl.orders[r, A.OF_CID] != cid:
        sl.cfg[S_UNKNOWN] += 1
        return 0
    o = sl.orders[r]
    sent = 0
    if o[A.OF_ID] == 0 and rep.order_id > 0:
        o[A.OF_ID] = rep.order_id
    _apply_report(sl, o, rep)
    if sl.cfg[S_RECORD] != 0:
        _log(sl.rec_reports, sl.rec_n, R_REPORTS, rep)
        if rep.kind == X_FILL or rep.kind == X_PARTIAL:
            _sample_equity(sl, sl.meta[A.M_NOW])
    if o[A.OF_DEFERRED] != 0 and o[A.OF_ID] != 0:
        o[A.OF_DEFERRED] = 0
        if A.NONE < o[A.OF_STATE] < A.TERMINAL:
            _intent(S, sl, j, o, A_CANCEL, o[A.OF_ID], 0, sl.meta[A.M_NOW], intents)
            sent += 1
    if sl.cfg[S_ON_REPORT] != 0:
        if sl.cfg[S_DEBUG] != 0:
            sl.report[0] = rep
        _call(sl.cfg[S_ON_REPORT], S_ON_REPORT, sl, o[A.OF_SYMBOL], abi.record_address(rep))
        sent += _flush(S, sl, j, 0, sl.meta[A.M_NOW], intents)
    return sent


@kernel(forceinline=True, error_model="numpy")
def _take(port, intents, per, tmc):
    """``(start, n)``: records of ``port`` to take now -- up to BATCH when the intents' rings have room for
    ``per`` intents each, else one, else none."""
    start, n = available(port.hdr)
    if n == 0:
        return start, 0
    n = min(n, BATCH)
    if room_each(intents, per * n, tmc):
        return start, n
    if room_each(intents, per, tmc):
        return start, 1
    return start, 0


@kernel(forceinline=True, error_model="numpy")
def strategy_step(S, ins, outs, tm, now, flags):
    """Reports, then risk's rejects, then book states; each record taken only when every consumer of the
    intents has room for all it can cause."""
    states, reports, rejects = ins
    intents = outs[0]
    per = S.g[G_PER_RECORD]
    total = 0
    sent = 0
    t0 = np.int64(0)  # read once, and only when there is something to take: an idle pass costs no clock read
    for which in range(2):
        port = reports if which == 0 else rejects
        start, n = _take(port, intents, per, tm.counters)
        if n == 0:
            continue
        if t0 == 0:
            t0 = stage_clock(flags)
        for k in range(n):
            rep = slot(port, start + k)
            age(tm.hists[H_AGE_REPORTS + which], t0, rep.ts_origin)
            sent += on_report(S, rep, intents)
        release_to(port, start + n)
        total += n
    start, n = _take(states, intents, per, tm.counters)
    if n:
        if t0 == 0:
            t0 = stage_clock(flags)
        for k in range(n):
            bs = slot(states, start + k)
            age(tm.hists[H_AGE_STATES], t0, bs.ts_origin)
            sent += on_book_state(S, bs, intents, start + k)
        release_to(states, start + n)
        total += n
    if total:
        service(tm.hists, t0, total)
        tm_add(tm.counters, C_EVENTS_IN, total)
    if sent:
        tm_add(tm.counters, C_EVENTS_OUT, sent)
        tm_add(tm.counters, TM_ORDERS, sent)
    return total


# user counters, per slot j: U_* + j * U_STRIDE
U_INTENTS = C_USER_BASE
U_FILLS = C_USER_BASE + 1
U_REFUSED = C_USER_BASE + 2
U_PNL = C_USER_BASE + 3  # float64 bits: the slot's PnL over its symbols (hean.api.pnl)
U_FAULT = C_USER_BASE + 4  # S_FAULT: the callback that raised (0: none)
U_STRIDE = 5
USER_COUNTERS = tuple(
    f"{what}.{j}" for j in range(MAX_STRATEGIES) for what in ("intents", "fills", "refused", "pnl", "fault")
)


@kernel(forceinline=True, error_model="numpy")
def strategy_view(S, tm, now):
    """Per strategy: intents, fills, refused actions and PnL (the summary's breakdown, ``hean top``)."""
    c = tm.counters
    for j in range(MAX_STRATEGIES):
        sl = slot_at(S.hd, j)
        if sl.cfg[S_ACTIVE] == 0:
            continue
        total, _, _, _ = slot_pnl(sl)
        base = j * U_STRIDE
        c[U_INTENTS + base] = sl.cfg[S_INTENTS]
        c[U_FILLS + base] = sl.cfg[S_FILLS]
        c[U_REFUSED + base] = sl.meta[A.M_REFUSED]
        c[U_PNL + base] = f64_bits(total)
        c[U_FAULT + base] = sl.cfg[S_FAULT]


# ---------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------
def _bytes(dtype: np.dtype, n: int) -> np.ndarray:
    """``n`` zeroed records of ``dtype`` as 8-byte-aligned raw bytes (the stage's type does not depend on a
    strategy's dtypes; its callbacks see them through the descriptor)."""
    words = np.zeros(-(-dtype.itemsize * n // 8), np.int64)
    return words.view(np.uint8)[: dtype.itemsize * n]


# Recorder logs a finished backtest gave back, for the next slot made in this process (hean.research). A log is
# read only below its row count, every row written before, so a reused one needs no zeroing; and its pages are
# already the process's: a fresh log's first rows cost page faults (~4.5 us each on a VM, ~50 a backtest)
# or, for numpy's arrays of 4 MiB and more, the zeroing of a 2 MiB page per log.
_FREE_LOGS: dict[tuple[np.dtype, int], list[np.ndarray]] = {}
LOGS_KEPT = 2  # logs of one dtype and size kept for reuse (a few backtests at once in one process)
LOG_KEPT_BYTES = 16 << 20  # a log whose rows in use went past this goes back to the system: memory it holds


def _take_log(rows: int, dtype: np.dtype) -> np.ndarray:
    """A recorder log of ``rows`` records: one given back (:func:`give_back_logs`), else a new one whose pages
    the kernel maps as the rows are first written."""
    free = _FREE_LOGS.get((dtype, rows))
    return free.pop() if free else lazy_zeros(rows, dtype)


def give_back_logs(sl: Slot) -> None:
    """Keep a finished slot's recorder logs for the next slot made in this process. The caller owns the slot
    and reads nothing of its logs afterwards (a backtest, once its result tables are copied out)."""
    for log, which in ((sl.rec_orders, R_ORDERS), (sl.rec_reports, R_REPORTS), (sl.rec_equity, R_EQUITY)):
        free = _FREE_LOGS.setdefault((log.dtype, log.shape[0]), [])
        if int(sl.rec_n[which]) * log.dtype.itemsize <= LOG_KEPT_BYTES and len(free) < LOGS_KEPT:
            free.append(log)


def make_slot(
    loaded: Any | None,
    strategy_id: int,
    symbols: list[int],
    n_engine: int,
    params: dict[str, float] | None = None,
    value: np.ndarray | None = None,
    risk_pos: np.ndarray | None = None,
    *,
    risk_state: np.ndarray | None = None,
    indicators: dict | None = None,
    mode: str | None = None,
    tick_source: str | None = None,
    bar_ms: int | None = None,
    bar_source: str | None = None,
    timer_ms: int | None = None,
    depth: int | None = None,
    record: int = 0,
    equity_ms: int = 1000,
    debug: bool = False,
) -> Slot:
    """Slot ``strategy_id`` for a loaded strategy (:func:`hean.strategies.plugin.load`) trading engine
    symbols ``symbols``; ``loaded`` None gives an empty slot. Overrides (None: the declaration's) come from the
    configuration."""
    n = max(1, len(symbols))
    decl = loaded.decl if loaded is not None else None
    st = decl.strategy if decl is not None else None
    ind_cfg = IndicatorConfig.from_mapping({**(st.indicators if st else {}), **(indicators or {})})
    mode = mode or (st.mode if st else "tick")
    tick_source = tick_source or (st.tick_source if st else "trades")
    bar_cfg = BarConfig(
        interval_ms=bar_ms or (st.bar_ms if st else 1000), source=bar_source or (st.bar_source if st else "trades")
    )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if tick_source not in SOURCES:
        raise ValueError(f"tick_source must be one of {sorted(SOURCES)}, got {tick_source!r}")
    timer_ms = timer_ms if timer_ms is not None else (st.timer_ms if st else 0)
    depth = depth if depth is not None else (st.depth if st else 0)
    if not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be in 0 .. {MAX_DEPTH} levels per side, got {depth}")
    cfg = np.zeros(N_SCFG, np.int64)
    local = np.full(n_engine, -1, np.int64)
    for k, sym in enumerate(symbols):
        local[sym] = k
    pdt = decl.params_dtype if decl else np.dtype([("_none", "<f8")])
    sdt = decl.state_dtype if decl else np.dtype([("_none", "<i8")])
    p_raw = _bytes(pdt, 1)
    if decl is not None:
        rec = p_raw.view(pdt)
        for k, v in (params if params is not None else decl.params).items():
            rec[k] = v
    sl = Slot(
        cfg=cfg,
        local=local,
        desc=np.zeros(abi.N_DESC, np.int64),
        params=p_raw,
        state=_bytes(sdt, n),
        book=np.zeros(n, BOOK_STATE),
        symbols=np.array(symbols or [0], np.int64),
        ind=make_indicator_set(n, ind_cfg),
        bars=make_bar_state(n, bar_cfg),
        info=np.zeros((n, A.N_INFO), np.int64),
        trades=np.zeros((n, A.TRADES_KEPT, A.N_TRADE), np.int64),
        orders=np.zeros((A.ORDERS_CAP, A.N_OF), np.int64),
        acts=np.zeros((A.MAX_ACTIONS, A.N_OF), np.int64),
        meta=np.zeros(A.N_META, np.int64),
        pos=np.zeros(n, np.int64),
        money=np.zeros((n, A.N_MONEY)),
        value=np.ones(n) if value is None else np.ascontiguousarray(value, np.float64),
        risk_pos=np.zeros(n_engine, np.int64) if risk_pos is None else risk_pos,
        risk_state=np.zeros(n_engine, np.int64) if risk_state is None else risk_state,
        rec_orders=_take_log(max(1, record), ORDER),
        rec_reports=_take_log(max(1, record), EXEC_REPORT),
        rec_equity=_take_log(max(1, record), EQUITY),
        rec_n=np.zeros(N_REC, np.int64),
        snap=np.zeros(max(1, sdt.itemsize * n if debug else 1), np.uint8),
        depth=np.zeros((n, N_DP, max(1, depth)), np.int64),
        report=np.zeros(1, EXEC_REPORT),
    )
    if sl.value.shape != (n,):
        raise ValueError(f"value must have one entry per symbol of the strategy ({n}), got {sl.value.shape}")
    sl.meta[A.M_NEXT_CID] = 1
    sl.meta[A.M_STRATEGY] = strategy_id
    if loaded is None:
        return sl
    d = sl.desc
    d[abi.D_N] = n
    for word, arr in (
        (abi.D_PARAMS, sl.params), (abi.D_STATE, sl.state), (abi.D_BOOK, sl.book), (abi.D_SYMBOLS, sl.symbols),
        (abi.D_IND, sl.ind.out), (abi.D_INFO, sl.info), (abi.D_TRADES, sl.trades), (abi.D_ORDERS, sl.orders),
        (abi.D_ACTS, sl.acts), (abi.D_META, sl.meta), (abi.D_POS, sl.pos), (abi.D_MONEY, sl.money),
        (abi.D_VALUE, sl.value), (abi.D_RISK_POS, sl.risk_pos), (abi.D_RISK_STATE, sl.risk_state),
        (abi.D_DEPTH, sl.depth),
    ):  # fmt: skip
        assert arr.flags.c_contiguous, word
        d[word] = arr.ctypes.data
    d[abi.D_N_ENGINE] = n_engine
    d[abi.D_DEPTH_N] = sl.depth.shape[2]
    cfg[S_ACTIVE] = 1
    cfg[S_ON_BOOK] = loaded.addresses["on_book"]
    cfg[S_ON_TRADE] = loaded.addresses["on_trade"]
    cfg[S_ON_REPORT] = loaded.addresses["on_report"]
    cfg[S_ON_TIMER] = loaded.addresses["on_timer"]
    cfg[S_DESC] = d.ctypes.data
    cfg[S_MODE] = MODES[mode]
    cfg[S_TICK_SOURCE] = SOURCES[tick_source]
    cfg[S_TIMER_NS] = int(timer_ms) * 1_000_000
    cfg[S_RECORD] = 1 if record > 0 else 0
    cfg[S_EQUITY_NS] = int(equity_ms) * 1_000_000
    cfg[S_DEBUG] = 1 if debug else 0
    cfg[S_DEPTH] = depth
    return sl


def make_strategy_stage(slots: list[Slot], n_engine: int, depth: np.ndarray | None = None) -> StrategyStage:
    """The stage over ``slots`` (strategy id = position; at most MAX_STRATEGIES), empty slots filling the rest;
    ``depth``: the book's depth table (:mod:`hean.stages.depth`; None: no book -- ``ctx.depth`` stays empty)."""
    if len(slots) > MAX_STRATEGIES:
        raise ValueError(f"at most {MAX_STRATEGIES} strategies in one run, got {len(slots)}")
    # the slots no strategy takes share one empty slot: nothing writes to a slot whose S_ACTIVE is 0, and
    # building seven of them (their ~40 arrays each, and the address rows) was ~1.5 ms of every backtest
    spare = MAX_STRATEGIES - len(slots)
    empty = [_empty_slot(len(slots), max(1, n_engine))] if spare else []
    full = list(slots) + [sl for sl, _row in empty] * spare
    subs = np.zeros((max(1, n_engine), 1 + MAX_STRATEGIES), np.int64)
    for j, sl in enumerate(slots):
        if sl.cfg[S_ACTIVE] == 0:
            continue
        for sym in sl.symbols:
            subs[sym, 1 + subs[sym, 0]] = j
            subs[sym, 0] += 1
    g = np.zeros(N_G, np.int64)
    # a record reaches every strategy of its symbol; each may act MAX_ACTIONS times (a timer too), plus a
    # deferred cancel for a report
    g[G_PER_RECORD] = (2 * A.MAX_ACTIONS + 1) * max(1, int(subs[:, 0].max()) if n_engine else 1)
    rows = {id(sl): slot_addresses(sl) for sl in slots} | {id(sl): row for sl, row in empty}  # one per slot
    hd = np.stack([rows[id(sl)] for sl in full])
    key = hd.ctypes.data
    _SLOTS[key] = tuple(full)
    weakref.finalize(hd, _SLOTS.pop, key, None)  # the slots live exactly as long as the table of addresses
    if depth is None:
        depth = np.zeros((1, DW_LEVELS), np.int64)
    need = max((int(sl.cfg[S_DEPTH]) for sl in slots), default=0)
    kept = (depth.shape[1] - DW_LEVELS) // N_DP
    if need and depth.shape[0] > 1 and kept < need:  # (a 1-row table: no book, as in StrategyDriver)
        raise ValueError(f"the book's depth table keeps {kept} levels per side; a strategy reads {need}")
    return StrategyStage(hd, subs, g, np.zeros(1, ORDER), depth)


_SLOTS: dict[int, tuple] = {}  # the slots of each live stage, by the address of its table

# The empty slot of each (first free position, engine symbols), with its address row, made once per process:
# as the free positions of one stage share it, so do the stages of one process (a sweep's backtests), for
# nothing writes to a slot whose S_ACTIVE is 0 (tests/test_backtest.py checks it after a backtest). Making
# it was ~0.25 ms of every backtest.
_EMPTY: dict[tuple[int, int], tuple[Slot, np.ndarray]] = {}


def _empty_slot(strategy_id: int, n_engine: int) -> tuple[Slot, np.ndarray]:
    key = (strategy_id, n_engine)
    if key not in _EMPTY:
        sl = make_slot(None, strategy_id, [], n_engine)
        _EMPTY[key] = (sl, slot_addresses(sl))
    return _EMPTY[key]


def slots_of(S: StrategyStage) -> tuple:
    """The slots of stage ``S`` (Python's view of each strategy's arrays: results, tests)."""
    return _SLOTS[S.hd.ctypes.data]


def slot_arrays(sl: Slot, loaded: Any) -> dict[str, np.ndarray]:
    """The slot's params and state as the strategy's own dtypes (research, tests, results)."""
    decl = loaded.decl
    return {"params": sl.params.view(decl.params_dtype), "state": sl.state.view(decl.state_dtype)}


@dataclass(frozen=True)
class Entry:
    """One strategy of a run, as the stage builds it: a ``[[strategies]]`` table with the run-wide
    ``[indicators]`` and ``[bars]`` folded in (the entry's own keys win)."""

    path: str
    symbols: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    indicators: dict = field(default_factory=dict)
    mode: str = ""
    tick_source: str = ""
    bar_ms: int = 0
    bar_source: str = ""
    timer_ms: int = -1
    depth: int = -1


def strategy_entries(cfg: Any) -> list[Entry]:
    """The run's strategies (``cfg``: hean.engine.config.Config): ``[[strategies]]``, or the ``[strategy]``
    shorthand as one entry on every symbol."""
    if cfg.strategies:
        raw = [
            Entry(e.path, tuple(e.symbols), dict(e.params), dict(e.indicators), e.mode, e.tick_source, e.bar_ms,
                  e.bar_source, e.timer_ms, e.depth)
            for e in cfg.strategies
        ]  # fmt: skip
    else:
        st = cfg.strategy
        raw = [Entry(st.name, (), dict(st.params), {}, st.mode, st.tick_source)]
    bars = dict(cfg.bars)
    return [
        replace(
            e,
            indicators={**dict(cfg.indicators), **e.indicators},
            bar_ms=e.bar_ms or int(bars.get("interval_ms", 0) or 0),
            bar_source=e.bar_source or str(bars.get("source", "") or ""),
        )
        for e in raw
    ]


def strategy_depth(cfg: Any) -> int:
    """Levels per side the run's strategies read: the most any asks for (its ``depth``, or the entry's), which
    the book's depth table keeps (:mod:`hean.stages.depth`)."""
    from hean.strategies.plugin import declaration

    return max(
        (e.depth if e.depth >= 0 else declaration(e.path).strategy.depth for e in strategy_entries(cfg)), default=0
    )


def make_strategy(ctx) -> StrategyStage:
    """The stage from the configuration's strategies (:func:`strategy_entries`)."""
    from hean.strategies.plugin import load, resolve_params

    n_engine = len(ctx.symbols)
    if not ctx.real:
        return make_strategy_stage([], n_engine)
    names = [s.name for s in ctx.symbols]
    value = ctx.value_per_tick_lot
    eng = ctx.cfg.engine
    slots = []
    for j, e in enumerate(strategy_entries(ctx.cfg)):
        unknown = [x for x in e.symbols if x not in names]
        if unknown:
            raise ctx.error(f"key 'strategies[{j}].symbols': no symbol {unknown} in this run; its symbols: {names}")
        loaded = load(e.path, debug=eng.debug)
        params = resolve_params(loaded.decl, dict(e.params))
        syms = [names.index(x) for x in e.symbols] if e.symbols else list(range(n_engine))
        slots.append(
            ctx.call(
                f"strategies[{j}]",
                make_slot,
                loaded,
                j,
                syms,
                n_engine,
                params,
                value[syms],
                ctx.views["pos"],
                risk_state=ctx.views["rstate"],
                indicators=dict(e.indicators),
                mode=e.mode or None,
                tick_source=e.tick_source or None,
                bar_ms=e.bar_ms or None,
                bar_source=e.bar_source or None,
                timer_ms=e.timer_ms if e.timer_ms >= 0 else None,
                depth=e.depth if e.depth >= 0 else None,
                record=eng.record_rows,
                equity_ms=eng.equity_ms,
                debug=eng.debug,
            )
        )
    return make_strategy_stage(slots, n_engine, ctx.views["depth"])


STRATEGY = Stage(
    name="strategy",
    module=__name__,
    step="strategy_step",
    view="strategy_view",
    inputs=(Stream("states", BOOK_STATE), Stream("reports", EXEC_REPORT), Stream("rejects", EXEC_REPORT)),
    outputs=(Stream("intents", ORDER),),
    build=make_strategy,
    hists=("service", "age:states", "age:reports", "age:rejects"),
    user_counters=USER_COUNTERS,
    feedback=frozenset({"reports", "rejects"}),
    config="strategies",
)


# ---------------------------------------------------------------------------------------------------------
# the stage without a pipeline: research, tests, benchmarks
# ---------------------------------------------------------------------------------------------------------
@entry(error_model="numpy")
def drive_states(S, records, intents):
    """Every BOOK_STATE of ``records`` through the stage, intents published to ``intents`` (a 1-tuple of
    ports with room); returns how many."""
    n = 0
    for r in range(records.shape[0]):
        n += on_book_state(S, records[r], intents, r)
    return n


@entry(error_model="numpy")
def drive_reports(S, reports, intents):
    """Every EXEC_REPORT of ``reports`` through the stage (as from the router or risk); returns intents."""
    n = 0
    for r in range(reports.shape[0]):
        n += on_report(S, reports[r], intents)
    return n


class StrategyDriver:
    """The strategy stage in this process, fed from arrays: book states and reports in, ORDER intents out.

    ``strategies``: ``[(path, symbols, params), ...]`` -- engine symbol ids, params overrides (or None).
    For tests and research on one stage; ``hean.backtest`` runs the whole pipeline.
    """

    def __init__(
        self,
        strategies: list[tuple[str, list[int], dict | None]],
        n_symbols: int,
        *,
        value: np.ndarray | None = None,
        risk_pos: np.ndarray | None = None,
        risk_state: np.ndarray | None = None,
        capacity: int = 1 << 16,
        debug: bool = False,
        **overrides: Any,
    ) -> None:
        from hean.stages.ports import private_port
        from hean.strategies.plugin import load, resolve_params

        self.loaded = [load(path, debug=debug) for path, _, _ in strategies]
        value = np.ones(n_symbols) if value is None else np.asarray(value, np.float64)
        self.risk_pos = np.zeros(n_symbols, np.int64) if risk_pos is None else risk_pos
        self.risk_state = np.zeros(n_symbols, np.int64) if risk_state is None else risk_state
        slots = [
            make_slot(
                L,
                j,
                list(syms),
                n_symbols,
                resolve_params(L.decl, p),
                value[list(syms)],
                self.risk_pos,
                risk_state=self.risk_state,
                debug=debug,
                **overrides,
            )
            for j, (L, (_, syms, p)) in enumerate(zip(self.loaded, strategies, strict=True))
        ]
        self.stage = make_strategy_stage(slots, n_symbols)
        self._act = np.zeros(1, np.int64)
        self.port = private_port(ORDER, capacity, self._act)

    def states(self, records: np.ndarray) -> np.ndarray:
        """Feed BOOK_STATE records; the intents they caused, in order."""
        drive_states(self.stage, records, (self.port,))
        self._check()
        return self._drain()

    def reports(self, reports: np.ndarray) -> np.ndarray:
        """Feed EXEC_REPORT records; the intents they caused (deferred cancels, on_report's actions)."""
        drive_reports(self.stage, reports, (self.port,))
        self._check()
        return self._drain()

    def _check(self) -> None:
        for j, L in enumerate(self.loaded):
            sl = slots_of(self.stage)[j]
            if sl.cfg[S_FAULT]:
                from hean.strategies.plugin import fault_error

                raise fault_error(L, sl)

    def slot(self, j: int = 0) -> Slot:
        return slots_of(self.stage)[j]

    def state(self, j: int = 0) -> np.ndarray:
        """Strategy ``j``'s per-symbol state records (its own dtype)."""
        return slot_arrays(slots_of(self.stage)[j], self.loaded[j])["state"]

    def _drain(self) -> np.ndarray:
        from hean.rings.layout import MASK, READ, WRITE

        hdr = self.port.hdr
        r, w = int(hdr[READ]), int(hdr[WRITE])
        idx = np.arange(r, w) & int(hdr[MASK])
        out = self.port.slots[idx].copy()
        hdr[READ] = w
        return out
