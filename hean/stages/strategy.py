"""The strategy stage: BOOK_STATE in, at most one ORDER intent out, per event, with no interpreter in between.

Per BOOK_STATE record :func:`strategy_on_book` (one ``@kernel``, cached)

1. advances the symbol's bars and indicators -- in ``"bar"`` mode the bar closes on the first event at or
   after its interval's end and the closed bar (vwap, high, low, close, volume) is the indicator sample; in
   ``"tick"`` mode every trade (``tick_source = "trades"``: last trade price and quantity) or every sound
   quote (``"mid"``: the mid, volume 0) is a sample. Prices are in ticks (float64).
2. calls the configured strategy (``decide_by_id``) with the strategy's state, its parameters, the
   indicators, the record, the symbol's position (``position_lots[symbol]``, kept current by the risk stage,
   possibly from another process: read with a relaxed atomic load, see :mod:`hean.stages.positions`)
   and ``fresh`` (the indicators took a sample on this event);
3. writes the intent, if any, into ``out_orders[k]`` (ts_origin/ts_exch/symbol copied from the record, a
   gap-free ``seq`` per stage, ``order_id`` 0, ``venue`` -1, ``strategy`` = the configured index) and
   returns 1, else 0.

How a strategy is chosen by name inside compiled loops -- measured with numba 0.68:

* A strategy passed as a first-class function argument (``stage(fn, ...)``, or a closure over ``fn``)
  compiles and runs, but ``cache=True`` never hits: the cache index is keyed by the dispatcher object, so
  every process recompiles the stage (a cold compile: ~13 s of CPU here) and the cache grows an entry per run.
* A ``types.FunctionType`` argument with explicit signatures caches, but the call is indirect (no inlining)
  and every caller up to the engine's loop must be compiled with explicit signatures.
* So: a compiled switch, :func:`decide_by_id`, over the registered strategies (``hean.strategies.REGISTRY``
  maps the name to the branch id). One kernel, cached once, chosen at run time by ``strat.cfg[C_STRATEGY]``;
  the branch is perfectly predicted. Adding a strategy = one module, one registry entry, one branch here.
  The engine builds its fused loop around the global :func:`strategy_on_book` -- no function arguments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean import strategies
from hean.atomics import load_relaxed
from hean.indicators.streaming import IndicatorConfig, IndicatorSet, indicators_update, make_indicator_set
from hean.jit import entry, kernel
from hean.records import BOOK_STATE, F_CROSSED, F_STALE, ORDER, BookStateKind
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
from hean.stages.ports import put_each, slot
from hean.strategies import market_maker, rsi_macd
from hean.strategies.intent import event_time, no_order
from hean.telemetry.block import C_ORDERS as TM_ORDERS
from hean.telemetry.block import tm_add
from hean.telemetry.histogram import hist_record

MODE_TICK = 0
MODE_BAR = 1
MODES = {"tick": MODE_TICK, "bar": MODE_BAR}

# strat.cfg[C_*]
C_STRATEGY = 0  # branch of decide_by_id
C_INDEX = 1  # ORDER.strategy
C_MODE = 2  # MODE_TICK / MODE_BAR
C_TICK_SOURCE = 3  # SOURCE_TRADES / SOURCE_MID (tick mode)
C_SEQ = 4  # last ORDER seq written
C_SAMPLES = 5  # indicator samples taken
C_ORDERS = 6  # intents written
N_CFG = 7

QUOTE = int(BookStateKind.QUOTE)
TRADE = int(BookStateKind.TRADE)


class StrategyState(NamedTuple):
    """Stage configuration/counters and the strategy's per-symbol state (one row per symbol)."""

    cfg: np.ndarray  # int64[N_CFG]
    f: np.ndarray  # float64[n_symbols, max(1, STATE_F)]
    i: np.ndarray  # int64[n_symbols, max(1, STATE_I)]


class StrategyStage(NamedTuple):
    """The strategy stage's state: everything :func:`strategy_on_book` needs besides the records, built by
    the strategy's name."""

    strat: StrategyState
    ind: IndicatorSet
    bars: BarState
    params: np.ndarray  # float64, in the strategy's PARAMS order
    position: np.ndarray  # int64[n_symbols]: the positions risk writes (a shared view across processes)
    out: np.ndarray  # ORDER[1]: the intent strategy_on_book writes


# the branch ids decide_by_id has; make_strategy_stage refuses a registered strategy without one
DECIDE_BRANCHES = {0: rsi_macd, 1: market_maker}


@kernel(inline=True, error_model="numpy")
def decide_by_id(sid, strat, params, ind, sym, bs, position, fresh):
    """The registered strategies, by branch id (``hean.strategies.REGISTRY[name].id``)."""
    if sid == 0:
        return rsi_macd.decide(strat, params, ind, sym, bs, position, fresh)
    if sid == 1:
        return market_maker.decide(strat, params, ind, sym, bs, position, fresh)
    return no_order()


@kernel(inline=True, error_model="numpy")
def advance_indicators(strat, ind, bars, bs):
    """Feed the record to bars/indicators per the stage mode; True if the indicators took a new sample.

    One call site of the indicator update, whatever the mode: every call site of a kernel the stage inlines
    costs compile time.
    """
    sym = bs.symbol
    kind = bs.kind
    sound_quote = kind == QUOTE and 0 < bs.bid_px < bs.ask_px and (bs.flags & (F_STALE | F_CROSSED)) == 0
    trade = kind == TRADE and bs.last_trade_qty > 0
    sample = False
    price = high = low = close = volume = 0.0
    if strat.cfg[C_MODE] == MODE_BAR:
        ts = event_time(bs)
        if bar_roll(bars, sym, ts) == 1:
            last = bars.last
            sample = True
            price = last[sym, B_VWAP]
            high = last[sym, B_HIGH]
            low = last[sym, B_LOW]
            close = last[sym, B_CLOSE]
            volume = last[sym, B_VOLUME]
        source = bars.params[K_SOURCE]
        if source == SOURCE_TRADES and trade:
            bar_add(bars, sym, ts, float(bs.last_trade_px), float(bs.last_trade_qty))
        elif source == SOURCE_MID and sound_quote:
            bar_add(bars, sym, ts, bs.mid, 0.0)
    else:
        source = strat.cfg[C_TICK_SOURCE]
        if source == SOURCE_TRADES and trade:
            sample = True
            price = high = low = close = float(bs.last_trade_px)
            volume = float(bs.last_trade_qty)
        elif source == SOURCE_MID and sound_quote:
            sample = True
            price = high = low = close = bs.mid
    if not sample:
        return False
    fresh = indicators_update(ind, sym, price, high, low, close, volume)
    if fresh:
        strat.cfg[C_SAMPLES] += 1
    return fresh


@kernel(forceinline=True, error_model="numpy")  # inlined into the loop
def strategy_on_book(strat, ind, bars, params, position_lots, bs, out_orders, k):
    """Run the stage on one BOOK_STATE record ``bs``; write at most one ORDER into ``out_orders[k]``.

    Returns the number of records written (0 or 1).
    """
    fresh = advance_indicators(strat, ind, bars, bs)
    sym = bs.symbol
    action, side, qty, price, order_type, tif, flags = decide_by_id(
        strat.cfg[C_STRATEGY], strat, params, ind, sym, bs, load_relaxed(position_lots, sym), fresh
    )  # the position risk stores, maybe from another process: one int64, relaxed (hean.stages.positions)
    if action == 0:
        return 0
    seq = strat.cfg[C_SEQ] + 1
    strat.cfg[C_SEQ] = seq
    strat.cfg[C_ORDERS] += 1
    o = out_orders[k]
    o.seq = seq
    o.ts_origin = bs.ts_origin
    o.ts_exch = bs.ts_exch
    o.symbol = sym
    o.kind = action
    o.side = side
    o.flags = flags
    o.order_id = 0
    o.price = price
    o.qty = qty
    o.order_type = order_type
    o.tif = tif
    o.strategy = strat.cfg[C_INDEX]
    o.reason = 0
    o.venue = -1
    return 1


@entry(error_model="numpy")
def run_book_states(strat, ind, bars, params, position_lots, records, out_orders):
    """Run the stage over an array of BOOK_STATE records (replay, research, tests); returns orders written.

    Stops when ``out_orders`` is full (the caller sizes it; at most one order per record).
    """
    n = 0
    for r in range(records.shape[0]):
        if n == out_orders.shape[0]:
            break
        n += strategy_on_book(strat, ind, bars, params, position_lots, records[r], out_orders, n)
    return n


def make_strategy_stage(
    name: str,
    n_symbols: int,
    params: dict | None = None,
    *,
    mode: str = "bar",
    tick_source: str = "trades",
    indicators: IndicatorConfig | dict | None = None,
    bars: BarConfig | dict | None = None,
    index: int = 0,
    position: np.ndarray | None = None,
) -> StrategyStage:
    """Build the stage for strategy ``name`` with ``params`` over ``n_symbols`` symbols (all checked).

    ``mode``: ``"bar"`` (indicators on bar closes) or ``"tick"`` (on every trade, or every sound quote's mid
    with ``tick_source="mid"``). ``index`` is written to ORDER.strategy (0..255).
    """
    spec = strategies.get(name)
    if DECIDE_BRANCHES.get(spec.id) is not spec.module:
        raise ValueError(
            f"strategy {name!r} is registered as id {spec.id}, which decide_by_id does not run: add its branch "
            f"to decide_by_id and {spec.id}: {spec.module.__name__.rsplit('.', 1)[-1]} to DECIDE_BRANCHES "
            "(hean/stages/strategy.py; docs/strategies.md)"
        )
    resolved = strategies.resolve_params(name, params)
    if mode not in MODES:
        raise ValueError(f"strategy mode must be one of {sorted(MODES)}, got {mode!r}")
    if tick_source not in SOURCES:
        raise ValueError(f"strategy tick_source must be one of {sorted(SOURCES)}, got {tick_source!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 255:
        raise ValueError(f"strategy index must be an int in [0, 255], got {index!r}")
    ind_cfg = indicators if isinstance(indicators, IndicatorConfig) else IndicatorConfig.from_mapping(indicators)
    bar_cfg = bars if isinstance(bars, BarConfig) else BarConfig.from_mapping(bars)
    ind = make_indicator_set(n_symbols, ind_cfg)
    bar_state = make_bar_state(n_symbols, bar_cfg)
    cfg = np.zeros(N_CFG, dtype=np.int64)
    cfg[C_STRATEGY] = spec.id
    cfg[C_INDEX] = index
    cfg[C_MODE] = MODES[mode]
    cfg[C_TICK_SOURCE] = SOURCES[tick_source]
    strat = StrategyState(
        cfg=cfg,
        f=np.zeros((n_symbols, max(1, spec.module.STATE_F))),
        i=np.zeros((n_symbols, max(1, spec.module.STATE_I)), dtype=np.int64),
    )
    names = tuple(spec.module.PARAMS)
    return StrategyStage(
        strat=strat,
        ind=ind,
        bars=bar_state,
        params=np.array([resolved[n] for n in names], dtype=np.float64),
        position=np.zeros(n_symbols, np.int64) if position is None else position,
        out=np.zeros(1, ORDER),
    )


STAGE_KEYS = ("name", "index", "mode", "tick_source", "params")


def stage_from_config(cfg: dict, n_symbols: int) -> StrategyStage:
    """Build the stage from the engine configuration: ``[strategy]`` (name, index, mode, tick_source,
    ``[strategy.params]``), ``[indicators]`` and ``[bars]`` tables."""
    s = dict(cfg.get("strategy") or {})
    unknown = sorted(set(s) - set(STAGE_KEYS))
    if unknown:
        raise ValueError(f"unknown [strategy] keys {unknown}; known: {list(STAGE_KEYS)}")
    if "name" not in s:
        raise ValueError(f"[strategy] needs a name; known: {sorted(strategies.REGISTRY)}")
    return make_strategy_stage(
        s["name"],
        n_symbols,
        s.get("params"),
        mode=s.get("mode", "bar"),
        tick_source=s.get("tick_source", "trades"),
        indicators=cfg.get("indicators"),
        bars=cfg.get("bars"),
        index=s.get("index", 0),
    )


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------
H_AGE_STATES = 1  # histogram row: a book state's age when the strategy takes it


@kernel(forceinline=True, error_model="numpy")
def strategy_batch(S, src, intents, start, n, tm, t0):
    """Book states in; at most one intent per state out, to every consumer of ``intents`` (a batch kernel:
    hean.stages.declare). Returns the intents published."""
    decided = 0
    for j in range(n):
        bs = slot(src, start + j)
        hist_record(tm.hists[H_AGE_STATES], t0 - bs.ts_origin)
        if strategy_on_book(S.strat, S.ind, S.bars, S.params, S.position, bs, S.out, 0):
            put_each(intents, S.out[0])
            decided += 1
    if decided:
        tm_add(tm.counters, TM_ORDERS, decided)
    return decided


def make_strategy(ctx) -> StrategyStage:
    """The strategy stage from ``[strategy]``, ``[indicators]`` and ``[bars]``, over the shared positions."""
    st = ctx.cfg.strategy
    return ctx.call(
        "strategy",
        make_strategy_stage,
        st.name,
        len(ctx.symbols),
        dict(st.params),
        mode=st.mode,
        tick_source=st.tick_source,
        indicators=dict(ctx.cfg.indicators),
        bars=dict(ctx.cfg.bars),
        index=st.index,
        position=ctx.views["pos"],
    )


STRATEGY = Stage(
    name="strategy",
    module=__name__,
    batch="strategy_batch",
    inputs=(Stream("states", BOOK_STATE),),
    outputs=(Stream("intents", ORDER),),
    build=make_strategy,
    hists=("service", "age:states"),
    config="strategy",
)
