"""The strategy API (hean.api) from code outside the package: loading, callbacks, actions, reports, errors."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from hean import api as A
from hean.records import (
    A_CANCEL,
    A_NEW,
    A_REPLACE,
    BOOK_STATE,
    BUY,
    EXEC_REPORT,
    SELL,
    T_LIMIT,
    T_MARKET,
    X_ACK,
    X_CANCELED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    BookStateKind,
)
from hean.stages.strategy import StrategyDriver
from hean.strategies import plugin

QUOTE, TRADE = int(BookStateKind.QUOTE), int(BookStateKind.TRADE)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HEAN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hean-cache"))


# A user strategy exercising the API: every book state it sends two limits and a market order when asked,
# records every report, counts timer calls and trades.
PROBE = """
import numpy as np
from hean.api import (BUY, SELL, IOC, POST_ONLY, Strategy, callback, cancel, limit, market, now, pnl,
                      position, replace, trade, n_trades, order_state, X_FILL, X_PARTIAL, X_REJECTED)

STATE = [("books", "i8"), ("trades", "i8"), ("reports", "i8"), ("fills", "i8"), ("rejects", "i8"),
         ("last_reason", "i8"), ("timers", "i8"), ("last_timer", "i8"), ("last_trade_px", "i8"),
         ("last_cid", "i8"), ("mode", "i8"), ("pnl", "f8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    st.books += 1
    b = ctx.book[s]
    n = np.int64(ctx.params.burst)
    for k in range(n):
        st.last_cid = limit(ctx, s, BUY, b.bid_px - k, np.int64(ctx.params.qty), IOC if k % 2 else 1, POST_ONLY)
    if ctx.params.market == 1.0:
        market(ctx, s, SELL, 1)

@callback
def on_trade(ctx, s):
    st = ctx.state[s]
    st.trades += 1
    ts, px, qty, side = trade(ctx, s, 0)
    st.last_trade_px = px

@callback
def on_report(ctx, s, r):
    st = ctx.state[s]
    st.reports += 1
    if r.kind == X_FILL or r.kind == X_PARTIAL:
        st.fills += r.qty
    if r.kind == X_REJECTED:
        st.rejects += 1
        st.last_reason = r.reason
    st.pnl = pnl(ctx, s)

@callback
def on_timer(ctx, t):
    st = ctx.state[0]
    st.timers += 1
    st.last_timer = t

STRATEGY = Strategy(on_book=on_book, on_trade=on_trade, on_report=on_report, on_timer=on_timer, timer_ms=1000,
                    params={"burst": 2, "qty": 3, "market": 0}, state=STATE, mode="tick")
"""


def write(tmp_path: Path, text: str, name: str = "probe.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return f"{path}:STRATEGY"


def states(*rows) -> np.ndarray:
    """BOOK_STATE records from (symbol, kind, bid, ask, ts_ms[, trade_px])."""
    recs = np.zeros(len(rows), BOOK_STATE)
    for r, row in zip(recs, rows, strict=True):
        sym, kind, bid, ask, ts_ms = row[:5]
        r["symbol"], r["kind"], r["bid_px"], r["ask_px"] = sym, kind, bid, ask
        r["bid_qty"] = r["ask_qty"] = 5
        r["mid"] = (bid + ask) / 2
        r["ts_exch"], r["ts_origin"] = ts_ms * 1_000_000, 7 + ts_ms
        if len(row) > 5:
            r["last_trade_px"], r["last_trade_qty"] = row[5], 1
    return recs


def rep(kind, order, *, qty=0, price=None, leaves=0, fee=0.0, reason=0, router_id=None):
    r = np.zeros(1, EXEC_REPORT)
    r["kind"], r["symbol"], r["side"] = kind, order["symbol"], order["side"]
    r["order_id"] = 500 + int(order["client_id"]) if router_id is None else router_id
    r["client_id"], r["strategy"] = order["client_id"], order["strategy"]
    r["price"] = order["price"] if price is None else price
    r["qty"], r["leaves_qty"], r["fee"], r["reason"] = qty, leaves, fee, reason
    return r


def test_a_strategy_from_a_file_outside_the_package_sends_several_orders_per_callback(tmp_path):
    spec = write(tmp_path, PROBE)
    d = StrategyDriver([(spec, [0], {"burst": 2, "market": 1})], 1)
    out = d.states(states((0, QUOTE, 1000, 1002, 0)))
    assert [(int(o["kind"]), int(o["side"]), int(o["price"]), int(o["qty"]), int(o["order_type"])) for o in out] == [
        (A_NEW, BUY, 1000, 3, T_LIMIT),
        (A_NEW, BUY, 999, 3, T_LIMIT),
        (A_NEW, SELL, 0, 1, T_MARKET),
    ]
    assert_array_equal(out["tif"], [A.GTC, A.IOC, A.IOC])
    assert_array_equal(out["client_id"], [1, 2, 3])
    assert_array_equal(out["flags"], [A.POST_ONLY, A.POST_ONLY, 0])
    assert d.state()["books"][0] == 1
    loaded = plugin.load(spec)
    assert loaded.folder.parent == plugin.cache_root() / "strategies" and loaded.folder.name.startswith("probe_")


def test_a_strategy_from_an_importable_module(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "strat.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    d = StrategyDriver([("mypkg.strat:STRATEGY", [0], {"burst": 1})], 1)
    assert len(d.states(states((0, QUOTE, 1000, 1002, 0)))) == 1


def test_reports_update_the_order_position_and_cash_then_reach_on_report(tmp_path):
    d = StrategyDriver([(write(tmp_path, PROBE), [0], {"burst": 1, "qty": 4})], 1, value=np.array([0.5]))
    (o,) = d.states(states((0, QUOTE, 1000, 1002, 0)))
    orders = d.slot().orders
    row = orders[int(o["client_id"])]
    assert row[A.OF_STATE] == A.PENDING and row[A.OF_ID] == 0
    d.reports(rep(X_ACK, o))
    assert row[A.OF_STATE] == A.OPEN and row[A.OF_ID] == 501
    d.reports(rep(X_PARTIAL, o, qty=1, price=1000, leaves=3, fee=0.25))
    assert (row[A.OF_CUM], row[A.OF_LEAVES], row[A.OF_STATE]) == (1, 3, A.OPEN)
    d.reports(rep(X_FILL, o, qty=3, price=999, leaves=0))
    assert (row[A.OF_CUM], row[A.OF_LEAVES], row[A.OF_STATE]) == (4, 0, A.FILLED)
    sl = d.slot()
    assert sl.pos[0] == 4
    assert sl.money[0, A.Y_CASH] == -(1 * 1000 + 3 * 999) * 0.5 and sl.money[0, A.Y_FEES] == 0.25
    st = d.state()[0]
    assert (st["reports"], st["fills"]) == (3, 4)
    # PnL marked to the mid of the latest book (1001): cash + 4 lots * 1001 * 0.5 - fees
    assert st["pnl"] == pytest.approx(-(1000 + 2997) * 0.5 - 0.25 + 4 * 1001 * 0.5)


def test_a_reject_from_risk_ends_the_order_and_names_the_reason(tmp_path):
    d = StrategyDriver([(write(tmp_path, PROBE), [0], {"burst": 1})], 1)
    (o,) = d.states(states((0, QUOTE, 1000, 1002, 0)))
    d.reports(rep(X_REJECTED, o, reason=11, router_id=0))  # MAX_POSITION, from risk: no router id
    row = d.slot().orders[int(o["client_id"])]
    assert row[A.OF_STATE] == A.REJECTED and row[A.OF_LEAVES] == 0
    st = d.state()[0]
    assert (st["rejects"], st["last_reason"]) == (1, 11)


def test_a_report_of_an_unknown_order_is_counted_not_applied(tmp_path):
    from hean.stages import strategy as SS

    d = StrategyDriver([(write(tmp_path, PROBE), [0], {"burst": 1})], 1)
    (o,) = d.states(states((0, QUOTE, 1000, 1002, 0)))
    ghost = o.copy()
    ghost["client_id"] = 77
    d.reports(rep(X_FILL, ghost, qty=1))
    assert d.slot().cfg[SS.S_UNKNOWN] == 1 and d.slot().pos[0] == 0 and d.state()[0]["reports"] == 0


def test_the_timer_fires_on_event_time_at_most_once_per_record(tmp_path):
    d = StrategyDriver([(write(tmp_path, PROBE), [0], {"burst": 0})], 1)
    d.states(states(*[(0, QUOTE, 1000, 1002, t) for t in (0, 500, 999, 1000, 1500, 4200, 4300)]))
    st = d.state()[0]
    assert st["timers"] == 2, "at 1000 ms, then once at 4200 for the periods the gap skipped"
    assert st["last_timer"] == 2000 * 1_000_000


def test_trades_go_to_on_trade_with_the_trade_ring(tmp_path):
    d = StrategyDriver([(write(tmp_path, PROBE), [0], {"burst": 0})], 1)
    d.states(states((0, QUOTE, 1000, 1002, 0), (0, TRADE, 1000, 1002, 1, 1001), (0, TRADE, 1000, 1002, 2, 1002)))
    st = d.state()[0]
    assert (st["books"], st["trades"], st["last_trade_px"]) == (1, 2, 1002)
    sl = d.slot()
    assert sl.info[0, A.I_TRADES] == 2 and sl.trades[0, 1, A.T_PX] == 1002


def test_a_callback_may_take_at_most_max_actions_and_the_rest_is_counted(tmp_path):
    d = StrategyDriver([(write(tmp_path, PROBE), [0], {"burst": A.MAX_ACTIONS + 4})], 1)
    out = d.states(states((0, QUOTE, 1000, 1002, 0)))
    assert len(out) == A.MAX_ACTIONS and d.slot().meta[A.M_REFUSED] == 4


CANCELS = """
from hean.api import BUY, Strategy, callback, cancel, limit, replace, order_state
STATE = [("cid", "i8"), ("step", "i8"), ("ok_cancel", "i8"), ("ok_replace", "i8"), ("state_seen", "i8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    st.step += 1
    if st.step == 1:
        st.cid = limit(ctx, s, BUY, 990, 1)
        st.ok_replace = 1 if replace(ctx, st.cid, 991, 1) else 0   # not acknowledged: refused
    elif st.step == 2:
        st.ok_replace = 10 + (1 if replace(ctx, st.cid, 992, 2) else 0)
    elif st.step == 3:
        st.ok_cancel = 1 if cancel(ctx, st.cid) else 0
        st.ok_cancel += 10 if cancel(ctx, st.cid) else 0           # a second cancel: refused
        st.ok_cancel += 100 if cancel(ctx, 12345) else 0           # unknown: refused
    st.state_seen = order_state(ctx, st.cid)

STRATEGY = Strategy(on_book=on_book, state=STATE)
"""


def test_cancel_and_replace_follow_the_order_state(tmp_path):
    d = StrategyDriver([(write(tmp_path, CANCELS, "cancels.py"), [0], None)], 1)
    (new,) = d.states(states((0, QUOTE, 1000, 1002, 0)))
    assert d.state()[0]["ok_replace"] == 0
    d.reports(rep(X_ACK, new))
    (rpl,) = d.states(states((0, QUOTE, 1000, 1002, 1)))
    assert (int(rpl["kind"]), int(rpl["order_id"]), int(rpl["price"]), int(rpl["qty"])) == (A_REPLACE, 501, 992, 2)
    assert d.state()[0]["ok_replace"] == 11 and d.state()[0]["state_seen"] == A.REPLACE_PENDING
    (cxl,) = d.states(states((0, QUOTE, 1000, 1002, 2)))
    assert (int(cxl["kind"]), int(cxl["order_id"]), int(cxl["client_id"])) == (A_CANCEL, 501, 1)
    assert d.state()[0]["ok_cancel"] == 1 and d.state()[0]["state_seen"] == A.CANCEL_PENDING
    d.reports(rep(X_CANCELED, new))
    assert d.slot().orders[1, A.OF_STATE] == A.CANCELED


# ---------------------------------------------------------------------------------------------------------
# several strategies: every order and fill attributed to its strategy (table-driven)
# ---------------------------------------------------------------------------------------------------------
ONE_ORDER = """
import numpy as np
from hean.api import BUY, SELL, Strategy, callback, limit, position
STATE = [("sent", "i8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    if st.sent == 0:
        st.sent = 1
        limit(ctx, s, BUY if ctx.params.side > 0 else SELL, ctx.book[s].bid_px, np.int64(ctx.params.qty))

STRATEGY = Strategy(on_book=on_book, state=STATE, params={"side": 1, "qty": 1})
"""

# (strategy, its symbols, params): fills of every order it sends, as (symbol, side, qty)
ATTRIBUTION = [
    ("alpha", [0], {"side": 1, "qty": 2}),
    ("beta", [1], {"side": -1, "qty": 3}),
    ("gamma", [0, 1], {"side": 1, "qty": 5}),
]


def test_two_strategies_on_two_symbols_orders_and_fills_are_attributed(tmp_path):
    spec = write(tmp_path, ONE_ORDER, "one.py")
    d = StrategyDriver([(spec, syms, p) for _, syms, p in ATTRIBUTION], 2)
    out = d.states(states((0, QUOTE, 1000, 1002, 0), (1, QUOTE, 2000, 2004, 1)))
    got = sorted((int(o["strategy"]), int(o["symbol"]), int(o["side"]), int(o["qty"])) for o in out)
    want = sorted((j, sym, p["side"], p["qty"]) for j, (_, syms, p) in enumerate(ATTRIBUTION) for sym in syms)
    assert got == want
    assert len(set(zip(out["strategy"].tolist(), out["client_id"].tolist(), strict=True))) == len(out)
    d.reports(np.concatenate([rep(X_FILL, o, qty=int(o["qty"]), price=int(o["price"])) for o in out]))
    for j, (name, syms, p) in enumerate(ATTRIBUTION):
        sl = d.slot(j)
        assert sl.pos.tolist() == [p["side"] * p["qty"]] * len(syms), name
        assert sl.cfg[10] == len(syms) and sl.cfg[11] == len(syms), name  # intents and fills of its own


# ---------------------------------------------------------------------------------------------------------
# errors name the user's file
# ---------------------------------------------------------------------------------------------------------
BAD = [
    ("no colon", None, "expected 'file.py:NAME'"),
    ("missing.py:STRATEGY", None, "no such file"),
    (None, "x = 1\nraise RuntimeError('boom')\n", r"line 2: RuntimeError: boom"),
    (None, "from hean.api import Strategy\n", "has no hean.api.Strategy named 'STRATEGY'"),
    (None, "STRATEGY = 3\n", "has STRATEGY = int, not a"),
    (None, "from hean.api import Strategy\nSTRATEGY = Strategy()\n", "declares no callback"),
    (
        None,
        "from hean.api import Strategy\ndef on_book(ctx, s):\n    pass\nSTRATEGY = Strategy(on_book=on_book)\n",
        "is not compiled: decorate it with @hean.api.callback",
    ),
    (
        None,
        "from hean.api import Strategy, callback\n@callback\ndef on_book(ctx):\n    pass\n"
        "STRATEGY = Strategy(on_book=on_book)\n",
        r"on_book takes 1 arguments; the API calls it as on_book\(ctx, s\)",
    ),
    (
        None,
        "from hean.api import Strategy, callback\n@callback\ndef on_book(ctx, s):\n    pass\n"
        "STRATEGY = Strategy(on_book=on_book, params={'x': 'a'})\n",
        "parameter 'x' default must be a finite number",
    ),
    (
        None,
        "from hean.api import Strategy, callback\n@callback\ndef on_book(ctx, s):\n    pass\n"
        "STRATEGY = Strategy(on_book=on_book, state=[('big', 'f8', (1000,))])\n",
        "state is 8000 bytes per symbol; at most 4096",
    ),
    (
        None,
        "from hean.api import Strategy, callback\n@callback\ndef on_timer(ctx, t):\n    pass\n"
        "STRATEGY = Strategy(on_timer=on_timer)\n",
        "on_timer is given but timer_ms is 0",
    ),
    (
        None,
        "from hean.api import Strategy, callback\n@callback\ndef on_book(ctx, s):\n    pass\n"
        "STRATEGY = Strategy(on_book=on_book, depth=65)\n",
        r"depth must be an int in 0 \.\. 64 \(levels per side\), got 65",
    ),
]


@pytest.mark.parametrize(("spec", "text", "match"), BAD)
def test_a_broken_strategy_is_one_clear_message_at_load(tmp_path, spec, text, match):
    if text is not None:
        spec = write(tmp_path, text, "broken.py")
    elif spec.startswith("missing"):
        spec = f"{tmp_path}/{spec}"
    with pytest.raises(plugin.StrategyError, match=match):
        plugin.load(spec)


TYPING_ERRORS = [
    ("x = ctx.book[s].no_such_field", "no field 'no_such_field'"),
    ('limit(ctx, s, BUY, ctx.book[s].bid_px + "x", 1)', r"no implementation for add\(int64, Literal\[str\]\(x\)\)"),
]


@pytest.mark.parametrize(("code", "essential"), TYPING_ERRORS)
def test_a_typing_error_names_the_users_file_line_and_the_essential_line(tmp_path, code, essential):
    text = (
        "from hean.api import BUY, Strategy, callback, limit\n"
        "@callback\n"
        "def on_book(ctx, s):\n"
        f"    {code}\n"
        "STRATEGY = Strategy(on_book=on_book)\n"
    )
    spec = write(tmp_path, text, "typo.py")
    with pytest.raises(plugin.StrategyError) as e:
        plugin.load(spec)
    first, second = str(e.value).splitlines()
    assert first.endswith(f"{tmp_path / 'typo.py'}:4: {code}")
    assert re.search(essential, second), second


def test_editing_a_strategy_recompiles_only_it_in_its_own_cache_folder(tmp_path):
    """A new process after an edit runs the new code: the wrapper's folder is keyed by the source's hash."""
    spec = write(tmp_path, PROBE.replace('"burst": 2', '"burst": 1'))
    code = (
        "import sys, numpy as np\n"
        "from hean.stages.strategy import StrategyDriver\n"
        "from hean.records import BOOK_STATE\n"
        "r = np.zeros(1, BOOK_STATE); r['bid_px'] = 1000; r['ask_px'] = 1002\n"
        f"d = StrategyDriver([({spec!r}, [0], None)], 1)\n"
        "print(len(d.states(r)))\n"
    )
    env = {**__import__("os").environ}
    run1 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run1.returncode == 0, run1.stderr
    (tmp_path / "probe.py").write_text(PROBE.replace('"burst": 2', '"burst": 4'))
    run2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run2.returncode == 0, run2.stderr
    assert (run1.stdout.strip(), run2.stdout.strip()) == ("1", "4")
    folders = sorted(p.name for p in (plugin.cache_root() / "strategies").glob("probe_STRATEGY-*"))
    assert len(folders) >= 2


OUT_OF_BOUNDS = """
from hean.api import Strategy, callback
STATE = [("n", "i8")]

@callback
def on_book(ctx, s):
    ctx.state[s].n += 1
    if ctx.state[s].n == 2:
        ctx.state[s + 5].n = 1
STRATEGY = Strategy(on_book=on_book, state=STATE)
"""


def test_debug_stops_a_callback_indexing_out_of_bounds_and_names_its_line(tmp_path):
    spec = write(tmp_path, OUT_OF_BOUNDS, "oob.py")
    d = StrategyDriver([(spec, [0], None)], 1, debug=True)
    d.states(states((0, QUOTE, 1000, 1002, 0)))
    with pytest.raises(plugin.StrategyError) as e:
        d.states(states((0, QUOTE, 1000, 1002, 1), (0, QUOTE, 1000, 1002, 2)))
    msg = str(e.value)
    assert f"{tmp_path / 'oob.py'}:9: IndexError" in msg and "on_book raised" in msg, msg
    from hean.stages import strategy as SS

    assert d.slot().cfg[SS.S_FAULT] == SS.S_ON_BOOK
    assert d.state()[0]["n"] == 2, "the faulty call replayed in Python from the state it started from"


RISK_VIEW = """
from hean.api import HALTED, Strategy, callback, risk_position, risk_state
STATE = [("pos", "i8"), ("halted", "i8")]

@callback
def on_book(ctx, s):
    ctx.state[s].pos = risk_position(ctx, s)
    ctx.state[s].halted = 1 if risk_state(ctx, s) == HALTED else 0
STRATEGY = Strategy(on_book=on_book, state=STATE)
"""


def test_the_risk_view_gives_the_symbols_position_and_trading_state(tmp_path):
    pos, state = np.array([0, 7], np.int64), np.array([0, 2], np.int64)  # what risk publishes: symbol 1 HALTED
    d = StrategyDriver([(write(tmp_path, RISK_VIEW, "riskview.py"), [1, 0], None)], 2, risk_pos=pos, risk_state=state)
    d.states(states((1, QUOTE, 1000, 1002, 0), (0, QUOTE, 1000, 1002, 1)))
    assert d.state()[["pos", "halted"]].tolist() == [(7, 1), (0, 0)]  # its symbols in its own order: 1, 0


DEEP = """
from hean.api import Strategy, ask_level, bid_level, callback
STATE = [("bid", "i8"), ("ask", "i8"), ("width", "i8")]

@callback
def on_book(ctx, s):
    ctx.state[s].bid, _ = bid_level(ctx, s, 1)
    ctx.state[s].ask, _ = ask_level(ctx, s, 1)
    ctx.state[s].width = ctx.depth.shape[2]
STRATEGY = Strategy(on_book=on_book, state=STATE, depth=DEPTH)
"""

# (declared depth of each strategy, the entries' overrides (-1: none)) -> levels the book keeps for the run
DEPTHS = [
    ([0], [-1], 0),
    ([3], [-1], 3),
    ([3, 0], [-1, 7], 7),
    ([5], [0], 0),
    ([2, 4], [-1, -1], 4),
]


@pytest.mark.parametrize(("declared", "overrides", "kept"), DEPTHS)
def test_the_book_keeps_the_most_depth_any_strategy_reads(tmp_path, declared, overrides, kept):
    from hean.engine.config import load_config
    from hean.engine.topology import view_dims
    from hean.stages.strategy import strategy_depth

    entries = []
    for k, (d, o) in enumerate(zip(declared, overrides, strict=True)):
        spec = write(tmp_path, DEEP.replace("DEPTH", str(d)), f"deep{k}.py")
        entries.append({"path": spec, **({"depth": o} if o >= 0 else {})})
    cfg = load_config(None, {"strategies": entries})
    assert strategy_depth(cfg) == kept and view_dims(cfg).depth == kept


def test_without_a_book_upstream_depth_reads_empty(tmp_path):
    d = StrategyDriver([(write(tmp_path, DEEP.replace("DEPTH", "3"), "deep.py"), [0], None)], 1)
    d.states(states((0, QUOTE, 1000, 1002, 0)))
    assert d.state()[["bid", "ask", "width"]].tolist() == [(0, 0, 3)]


REPORT_OUT_OF_BOUNDS = """
from hean.api import BUY, Strategy, callback, limit
STATE = [("n", "i8")]

@callback
def on_book(ctx, s):
    limit(ctx, s, BUY, ctx.book[s].bid_px, 5)

@callback
def on_report(ctx, s, r):
    ctx.state[s + r.qty // 5].n = 1
STRATEGY = Strategy(on_book=on_book, on_report=on_report, state=STATE)
"""


def test_debug_replays_a_faulty_on_report_with_the_report_it_got(tmp_path):
    d = StrategyDriver([(write(tmp_path, REPORT_OUT_OF_BOUNDS, "roob.py"), [0], None)], 1, debug=True)
    (order,) = d.states(states((0, QUOTE, 1000, 1002, 0)))
    d.reports(rep(X_ACK, order))  # qty 0: in bounds
    with pytest.raises(plugin.StrategyError) as e:
        d.reports(rep(X_FILL, order, qty=5))  # only this report's qty indexes past the state
    assert f"{tmp_path / 'roob.py'}:11: IndexError" in str(e.value) and "on_report raised" in str(e.value)
