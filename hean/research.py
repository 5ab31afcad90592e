"""``hean.backtest`` (:func:`backtest`): the research entry point -- a recording and strategies in; orders,
fills, positions and an equity curve out, in this process.

It runs the very pipeline ``hean replay`` runs -- the same stages, kernels and worker loop -- fused into one
in-process worker (:func:`hean.engine.build.build_local`) in lockstep, the deterministic mode in which every
placement gives the same orders and fills; so ``hean replay --lockstep`` and ``hean.backtest`` give identical
fills for the same inputs. No processes, no shared memory, no CPU pinning: it runs anywhere Python runs, in a
notebook or a sweep's worker.

What comes back (:class:`BacktestResult`): tables as numpy structured arrays (:class:`Table`, with
``.to_pandas()`` and ``.to_polars()``), prices in integer ticks with each symbol's tick size beside them,
quantities in lots, money in quote currency, times in ns since the epoch (the recording's exchange time):

* ``orders`` -- every order a strategy sent (NEW, CANCEL, REPLACE), with its final state;
* ``fills`` -- every fill (partial or full) of every strategy's orders;
* ``positions`` -- per strategy and symbol at the end: position, cash, fees, traded notional, PnL;
* ``equity`` -- each strategy's PnL over event time (sampled every ``equity_ms`` and at every fill);
* ``summary`` -- counts, per-strategy figures, the router's order and fill digests (equal to a ``hean replay``
  of the same inputs), and ``models``: the feed latency and each venue's latency, queue and fee models used;
* ``states`` -- each strategy's own per-symbol state at the end, in the dtype it declares.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BacktestResult", "Table", "backtest"]

# The loop runs until it has been idle LEAVE_IDLE passes in a row after the feed ended (or CHUNK passes: the
# deadline's check). Each call costs numba's check of the worker tuple's types (~40 us): a few calls, not one
# per 4k passes.
CHUNK = 1 << 20
LEAVE_IDLE = 64


class Table:
    """A result table: a numpy structured array (``.data``; indexing and ``len`` pass through to it)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        return f"Table({len(self.data)} rows: {', '.join(self.data.dtype.names or ())})"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.data.dtype.names or ())

    def to_pandas(self):
        """A pandas DataFrame (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Table.to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame({c: self.data[c] for c in self.columns})

    def to_polars(self):
        """A polars DataFrame (polars must be installed)."""
        try:
            import polars as pl
        except ImportError:
            raise ImportError("Table.to_polars needs polars: pip install polars") from None
        return pl.DataFrame({c: self.data[c] for c in self.columns})


@dataclass
class BacktestResult:
    """What :func:`backtest` returns (see the module docstring)."""

    orders: Table
    fills: Table
    positions: Table
    equity: Table
    summary: dict[str, Any]
    strategies: list[str] = field(default_factory=list)  # the strategies' paths, by id
    symbols: list[str] = field(default_factory=list)  # symbol names, by id
    states: list[np.ndarray] = field(default_factory=list)  # each strategy's final state records, by id

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"BacktestResult({len(self.orders)} orders, {len(self.fills)} fills, {len(self.strategies)} strategies, "
            f"PnL {s.get('pnl', 0.0):.2f}, {s.get('events', 0)} events)"
        )


ORDERS = np.dtype(
    [
        ("strategy", "<i8"),
        ("client_id", "<i8"),
        ("ts", "<i8"),  # event time the order was sent at (ns)
        ("symbol", "<i8"),
        ("action", "<i8"),  # NEW / CANCEL / REPLACE (hean.records.OrderAction)
        ("side", "<i8"),
        ("price", "<i8"),  # ticks (0: market)
        ("qty", "<i8"),  # lots
        ("order_type", "<i8"),
        ("tif", "<i8"),
        ("flags", "<i8"),
        ("state", "<i8"),  # the order's final state (hean.api: OPEN, FILLED, CANCELED, REJECTED, EXPIRED...)
        ("filled", "<i8"),  # lots
        ("reason", "<i8"),  # reject reason (hean.records.RejectReason), 0 otherwise
        ("tick_size", "<f8"),
    ]
)
FILLS = np.dtype(
    [
        ("strategy", "<i8"),
        ("client_id", "<i8"),
        ("order_id", "<i8"),  # the router's id
        ("ts", "<i8"),  # event time the strategy learned of the fill (ns)
        ("symbol", "<i8"),
        ("side", "<i8"),
        ("price", "<i8"),  # ticks
        ("qty", "<i8"),  # lots
        ("leaves", "<i8"),
        ("fee", "<f8"),  # quote currency (negative: rebate)
        ("liquidity", "<i8"),  # 1 maker, 2 taker
        ("venue", "<i8"),  # the venue's index in [[venues]]: where this part of the order filled
        ("tick_size", "<f8"),
        ("lot_size", "<f8"),
    ]
)
POSITIONS = np.dtype(
    [
        ("strategy", "<i8"),
        ("symbol", "<i8"),
        ("position", "<i8"),  # lots
        ("cash", "<f8"),  # quote currency paid and received for fills
        ("fees", "<f8"),
        ("notional", "<f8"),
        ("mark", "<f8"),  # the last sound mid, ticks (0: none)
        ("pnl", "<f8"),  # cash - fees + position at the mark
    ]
)
EQUITY = np.dtype(
    [("strategy", "<i8"), ("ts", "<i8"), ("pnl", "<f8"), ("fees", "<f8"), ("gross_lots", "<i8"), ("notional", "<f8")]
)


def backtest(
    recording: str | os.PathLike | Sequence[str | os.PathLike] | None,
    strategies: Sequence[str | dict] | str = "market_maker",
    *,
    params: dict[str, float] | None = None,
    config: str | os.PathLike | dict | None = None,
    format: str | Sequence[str] = "",
    max_rows: int = 1_000_000,
    equity_ms: int = 1000,
    max_seconds: float = 3600.0,
    debug: bool = False,
) -> BacktestResult:
    """Backtest ``strategies`` on ``recording`` (see the module docstring).

    ``strategies``: a path (``"file.py:NAME"``, ``"package.module:NAME"``, or a built-in's name), or a list of
    them or of ``[[strategies]]`` tables (``{"path": ..., "symbols": [...], "params": {...}}``); ``params``
    applies to a single strategy given by path. ``config``: a TOML file or a dict of dotted overrides
    (``{"risk.max_position": 5}``) for everything else (venue latency and fees, risk limits...). ``format``:
    the recording's format when its name does not tell (``hean convert --help``). ``max_rows``: rows each
    strategy's order, report and equity logs keep (a run that outgrows them says so in ``summary["lost_rows"]``).
    ``recording`` None runs the configuration's own feed instead (the synthetic one needs ``feed.max_messages``);
    a list of recordings (``format`` one for all or a list) is merged by the recorded receive time, a symbol
    in several of them chaining in time (:mod:`hean.engine.recordings`).
    ``debug``: strategies compiled with bounds checking; a callback that indexes out of bounds stops the
    backtest with a StrategyError naming its file and line.

    The first backtest of a pipeline on a cold numba cache compiles its stages in this process and in a
    helper process from the other end (:func:`hean.engine.warm.compile_in_process`); later ones load them.
    """
    from hean.engine.build import build_local, prepared_replay
    from hean.engine.config import load_config
    from hean.engine.loopgen import loop_module
    from hean.engine.warm import compile_in_process
    from hean.stages.registry import trading_pipeline

    entries = _entries(strategies, params)
    overrides: dict[str, Any] = {} if config is None or not isinstance(config, dict) else dict(config)
    if recording is not None:
        several = not isinstance(recording, str | os.PathLike)
        path = [str(r) for r in recording] if several else str(recording)
        fmt = format if isinstance(format, str) else list(format)
        overrides.update({"feed.source": "replay", "feed.path": path, "feed.format": fmt})
    overrides.setdefault("engine.latency_stats", False)  # no wall-clock latencies here: read no clock
    overrides.update(
        {
            "feed.pace": "fast",
            "engine.lockstep": True,
            "engine.duration_s": 0.0,
            "engine.record_rows": int(max_rows),
            "engine.equity_ms": int(equity_ms),
            "engine.debug": bool(debug),
            "strategies": entries,
        }
    )
    cfg = load_config(None if isinstance(config, dict) else config, overrides)
    if cfg.feed.source != "replay" and cfg.feed.max_messages <= 0:
        raise ValueError("backtest: without a recording, the feed needs an end: set feed.max_messages")
    t0 = time.perf_counter()
    with _RunFolder() as folder:
        events = None
        if cfg.feed.source == "replay":
            cfg, _report, events = prepared_replay(cfg, folder, in_process=True)
        pipeline = trading_pipeline(cfg)  # the L3 book and venue for an order-by-order recording
        W = build_local(cfg, pipeline=pipeline, replay=events)
        loop = loop_module(pipeline)
        compile_in_process(loop, W, cfg, pipeline)  # a cold start: a helper compiles half of the stages
        loops = _run_to_the_end(loop, W, max_seconds)
    wall = time.perf_counter() - t0
    _raise_faults(W, entries, debug)
    result = _result(cfg, W, entries, wall, loops)
    _give_back_logs(W, entries)
    return result


class _RunFolder(os.PathLike):
    """A backtest's temporary folder, made when a path in it is first asked for (``os.fspath``) and removed at
    the end. Why lazily: a single recording mapped from the conversion cache or a native file needs no folder
    in process, and making and removing one was ~0.5 ms of a ~30 ms backtest; a merge of several recordings
    writes its file there."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __fspath__(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hean-backtest-")
        return self._tmp.name

    def __enter__(self) -> _RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _raise_faults(W: Any, entries: list[dict], debug: bool) -> None:
    """A strategy whose callback raised (debug) fails the backtest, naming its line."""
    from hean.stages.strategy import S_FAULT, slots_of
    from hean.strategies.plugin import fault_error, load

    for j, e in enumerate(entries):
        sl = slots_of(W.st_strategy)[j]
        if sl.cfg[S_FAULT]:
            raise fault_error(load(e["path"], debug=debug), sl)


def _give_back_logs(W: Any, entries: list[dict]) -> None:
    """The strategies' recorder logs to the next backtest in this process (:func:`hean.stages.strategy.give_back_logs`):
    the result's tables are copies, and ``W`` ends here."""
    from hean.stages.strategy import give_back_logs, slots_of

    for sl in slots_of(W.st_strategy)[: len(entries)]:
        give_back_logs(sl)


def _entries(strategies: Sequence[str | dict] | str, params: dict | None) -> list[dict]:
    items = [strategies] if isinstance(strategies, str | dict) else list(strategies)
    if not items:
        raise ValueError("backtest: give at least one strategy")
    if params is not None and len(items) != 1:
        raise ValueError("backtest: params= is for a single strategy; give each its own {'params': ...}")
    out = []
    for item in items:
        e = {"path": item} if isinstance(item, str) else dict(item)
        if "path" not in e:
            raise ValueError(f"backtest: a strategy table needs a 'path': {item!r}")
        if params is not None:
            e["params"] = {**e.get("params", {}), **params}
        out.append(e)
    return out


def _run_to_the_end(loop: Any, W: Any, max_seconds: float) -> int:
    """Run the worker loop until the recording is published and the pipeline has drained.

    Drained: the loop left by itself (fewer than CHUNK passes) after LEAVE_IDLE idle passes in a row once
    the feed was done, with every ring empty. Why one idle stretch is enough: the whole pipeline runs in this
    thread and nothing outside it writes to it, so a record published in a pass (a report the venue owed, say)
    is taken by its consumer in that pass or the next -- a busy pass, which would have reset the count."""
    from hean.engine import control as C
    from hean.engine.pipeline import P_LEAVE_IDLE
    from hean.rings.layout import READ, WRITE

    W.params[P_LEAVE_IDLE] = LEAVE_IDLE
    deadline = time.monotonic() + max_seconds
    loops = 0
    while True:
        n = loop.run_loop(W, CHUNK)
        loops += n
        if n < CHUNK and W.ctl[C.FEED_DONE] and all(p.hdr[WRITE] == p.hdr[READ] for p in W.rings):
            return loops
        if time.monotonic() > deadline:
            raise TimeoutError(f"backtest: not done after {max_seconds} s (max_seconds=)")


def _result(cfg: Any, W: Any, entries: list[dict], wall: float, loops: int) -> BacktestResult:
    from hean import api as A
    from hean.result_rows import fill_rows, n_fills, order_rows
    from hean.stages import strategy as SS
    from hean.stages.book_l3 import book_errors
    from hean.telemetry.block import C_EVENTS_OUT, C_FILLS, C_ORDERS, C_USER_BASE

    S = W.st_strategy
    names = [s.name for s in cfg.symbols]
    tick = np.array([float(s.tick_size) for s in cfg.symbols])
    lot = np.array([float(s.lot_size) for s in cfg.symbols])
    from hean.strategies.plugin import declaration

    orders, fills, positions, equity, per, states = [], [], [], [], [], []
    lost = 0
    for j in range(len(entries)):
        sl = SS.slots_of(S)[j]
        n = sl.rec_n
        lost += int(n[SS.R_LOST])
        sent = sl.rec_orders[: n[SS.R_ORDERS]]
        reps = sl.rec_reports[: n[SS.R_REPORTS]]
        o = np.zeros(len(sent), ORDERS)
        order_rows(sent, tick, _final_states(sent["client_id"], reps), j, o)
        orders.append(o)
        t = np.zeros(n_fills(reps), FILLS)
        fill_rows(reps, tick, lot, j, t)
        fills.append(t)
        p = np.zeros(len(sl.symbols), POSITIONS)
        p["strategy"], p["symbol"], p["position"] = j, sl.symbols, sl.pos
        p["cash"], p["fees"], p["notional"] = sl.money[:, A.Y_CASH], sl.money[:, A.Y_FEES], sl.money[:, A.Y_NOTIONAL]
        sound = (sl.book["bid_px"] > 0) & (sl.book["ask_px"] > sl.book["bid_px"])
        p["mark"] = np.where(sound, sl.book["mid"], 0.0)
        p["pnl"] = p["cash"] - p["fees"] + p["position"] * p["mark"] * sl.value
        positions.append(p)
        e = sl.rec_equity[: n[SS.R_EQUITY]]
        q = np.zeros(len(e), EQUITY)
        q["strategy"] = j
        for c in ("ts", "pnl", "fees", "gross_lots", "notional"):
            q[c] = e[c]
        equity.append(q)
        states.append(sl.state.view(declaration(entries[j]["path"]).state_dtype).copy())
        per.append(
            {
                "path": entries[j]["path"],
                "orders": int(sl.cfg[SS.S_INTENTS]),
                "fills": int(sl.cfg[SS.S_FILLS]),
                "refused_actions": int(sl.meta[A.M_REFUSED]),
                "pnl": float(p["pnl"].sum()),
                "fees": float(p["fees"].sum()),
            }
        )
    from hean.engine.summary import models_used

    rc = W.tm_router.counters
    summary = {
        "events": int(W.tm_feed.counters[C_EVENTS_OUT]),
        "router_orders": int(rc[C_ORDERS]),
        "router_fills": int(rc[C_FILLS]),
        "order_digest": int(rc[C_USER_BASE]),
        "fill_digest": int(rc[C_USER_BASE + 1]),
        "pnl": float(sum(s["pnl"] for s in per)),
        "strategies": per,
        "lost_rows": lost,
        "book_errors": book_errors(W.st_book),  # an L3 book's rejected events by kind (hean.stages.book_l3)
        "wall_s": wall,
        "loops": loops,
        "models": models_used(cfg),
    }
    return BacktestResult(
        Table(_joined(orders)),
        Table(_joined(fills)),
        Table(_joined(positions)),
        Table(_joined(equity)),
        summary,
        [e["path"] for e in entries],
        names,
        states,
    )


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The strategies' tables as one (a single strategy's as it is: no copy)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _final_states(cids: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """(state, filled lots, reject reason) of each order by client id, from the reports it received
    (:func:`hean.result_rows.order_outcomes`, one compiled pass: a backtest's reports can number in the
    millions)."""
    from hean.result_rows import N_SCRATCH, order_outcomes

    out = np.zeros((len(cids), 3), np.int64)
    if len(cids):
        lo, hi = int(cids.min()), int(cids.max())
        if hi - lo < 4 * len(cids) + 1024:  # a short range (the engine's ids): a row per id in it, no sort
            ids, rows = np.zeros(0, np.int64), hi - lo + 1
        else:
            ids = np.unique(cids)
            rows = len(ids)
        order_outcomes(cids, ids, lo, reps, np.zeros((rows, N_SCRATCH), np.int64), out)
    return out
