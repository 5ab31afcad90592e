"""Event-time causality in a replay, hand-computed: the venue applies a market event stamped after an order's
arrival only after that order, the strategy sees a message no earlier than its receive time, and a held-back
report reaches the strategy (and the order it causes reaches the venue) at its own time -- however the
feed's messages are batched.

The recording: a book 100 x 101 at t0; at t0 + 500 us the ask at 101 is pulled (the best ask becomes 102);
then a burst of far-away level changes from t0 + 1 ms, enough that a venue fed ahead of the strategy would
apply all of them before the first order. The taker below sends one BUY IOC limit 101 on the first book it
sees (and, with ``again``, a second one when that fills): it fills at 101 exactly when the order arrives
before the ask is pulled, and expires after.
"""

from __future__ import annotations

import numpy as np
import pytest

import hean
from hean.feeds.native import write_native
from hean.records import ASK, BID, F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable
from hean.telemetry.block import C_FILLS, C_ORDERS

T0 = 1_700_000_000_000_000_000
US = 1_000
PULLED = T0 + 500 * US  # the ask at 101 is pulled

TAKER = """
import numpy as np
from hean.api import BUY, IOC, X_FILL, Strategy, callback, limit

STATE = [("sent", "i8"), ("seen", "i8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    if st.sent == 0 and ctx.book[s].ask_px > 0:
        st.seen = ctx.book[s].ask_px
        st.sent = limit(ctx, s, BUY, np.int64(101), 1, IOC, 0)

@callback
def on_report(ctx, s, r):
    if r.kind == X_FILL and ctx.params.again != 0 and r.client_id == ctx.state[s].sent:
        limit(ctx, s, BUY, np.int64(101), 1, IOC, 0)

STRATEGY = Strategy(on_book=on_book, on_report=on_report, state=STATE, params={"again": 0})
"""


def _event(t, kind, side=0, price=0, qty=0, flags=0):
    e = np.zeros(1, MARKET_EVENT)[0]
    e["ts_origin"] = e["ts_exch"] = t
    e["kind"], e["side"], e["price"], e["qty"], e["flags"] = int(kind), side, price, qty, flags
    return e


def _recording() -> np.ndarray:
    snap = F_SNAPSHOT
    ev = [
        _event(T0, EventKind.CLEAR, flags=snap),
        _event(T0, EventKind.LEVEL_SET, BID, 100, 10, snap),
        _event(T0, EventKind.LEVEL_SET, ASK, 101, 10, snap | F_LAST_IN_GROUP),
        _event(PULLED, EventKind.LEVEL_SET, ASK, 101, 0),
        _event(PULLED, EventKind.LEVEL_SET, ASK, 102, 10, F_LAST_IN_GROUP),
    ]
    for k in range(200):  # far from the touch: the book's top does not change
        ev.append(_event(T0 + 1_000 * US + k * 10 * US, EventKind.LEVEL_SET, BID, 50, 1 + k, F_LAST_IN_GROUP))
    out = np.array(ev, MARKET_EVENT)
    out["seq"] = np.arange(1, len(out) + 1)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("causality")
    rec = folder / "pull.hev"
    write_native(rec, _recording(), SymbolTable([{"name": "X", "tick_size": "1", "lot_size": "1"}]))
    (folder / "taker.py").write_text(TAKER)
    return str(rec), f"{folder / 'taker.py'}:STRATEGY"


def _run(files, entry_us=0, report_us=0, feed_us=0, again=0, **params):
    rec, taker = files
    params = {"entry_latency_ns": entry_us * US, "report_latency_ns": report_us * US, **params}
    config = {"venues": [{"name": "sim", "params": params}], "feed.latency_ns": feed_us * US}
    return hean.backtest(rec, taker, params={"again": again}, config=config, format="native")


# (entry latency, feed latency) in us -> the first order's fate: the order is sent when the strategy receives
# the book (t0 + feed latency) and arrives entry latency later; the ask at 101 is gone from t0 + 500 us.
CASES = [
    (0, 0, "filled"),
    (200, 0, "filled"),
    (499, 0, "filled"),
    (500, 0, "filled"),  # arrives at the pull's own time: orders arrived by an event's time go first
    (501, 0, "expired"),
    (1_000, 0, "expired"),
    (0, 400, "filled"),
    (0, 600, "expired"),  # the venue pulled the ask before the strategy even received the book
    (300, 300, "expired"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("entry_us", "feed_us", "fate"), CASES)
def test_an_order_meets_the_book_as_of_its_arrival(files, entry_us, feed_us, fate):
    r = _run(files, entry_us=entry_us, feed_us=feed_us)
    fills = r.fills
    assert len(r.orders) == 1
    if fate == "filled":
        assert len(fills) == 1 and int(fills["price"][0]) == 101 and int(fills["qty"][0]) == 1
    else:
        assert len(fills) == 0
    assert r.states[0]["seen"][0] == 101  # the strategy saw the book before the pull either way


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("report_us", "entry_us", "second"), [(300, 50, "filled"), (300, 150, "expired")])
def test_a_held_back_report_reaches_the_strategy_at_its_release_time(files, report_us, entry_us, second):
    """The first order, sent at t0, arrives ``entry_us`` later and fills at 101; its report is released
    ``report_us`` after that, and the second order it causes arrives ``entry_us`` later again: before the
    pull at 500 us when 50 + 300 + 50 < 500, after it when 150 + 300 + 150 > 500. A venue woken only by
    market events would release the report at the pull and expire the second order in both cases."""
    r = _run(files, entry_us=entry_us, report_us=report_us, again=1)
    assert len(r.orders) == 2
    prices = [int(p) for p in r.fills["price"]]
    assert prices[0] == 101
    assert prices[1:] == ([101] if second == "filled" else [])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("entry_us", "fills"), [(200, 1), (1_000, 0)])
def test_an_unpaced_replay_keeps_the_order_before_the_burst_that_follows_it(files, entry_us, fills):
    """The engine's own replay, unpaced, without ``engine.lockstep``, in one worker: the feed could hand the
    venue the pull and the 200 messages after it in one burst before the order exists; the order still
    meets the book as of its arrival."""
    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor

    rec, taker = files
    cfg = load_config(
        overrides={
            "feed.source": "replay",
            "feed.path": rec,
            "feed.format": "native",
            "feed.pace": "fast",
            "engine.duration_s": 0.0,
            "strategy.name": taker,
            "venues": [{"name": "sim", "params": {"entry_latency_ns": entry_us * US}}],
            "placement.workers": [["feed", "book", "strategy", "risk", "router", "venue"]],
        }
    )
    assert not cfg.engine.lockstep
    result = Supervisor(cfg).run()
    assert result.exit_code == 0, result.error
    router = result.telemetry["router"]["counters"]
    assert (router[C_ORDERS], router[C_FILLS]) == (1, fills)


def _round_trips(folder, rows) -> str:
    """A recorded latency file: rows of (send time after t0, entry latency, response latency) in us."""
    path = folder / "round_trips.csv"
    lines = ["req_ts,exch_ts,resp_ts"]
    for sent, entry, response in rows:
        req = T0 + sent * US
        lines.append(f"{req},{req + entry * US},{req + (entry + response) * US}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# recorded round trips (send time after t0, entry, response; us) -> the first order's fate; it is sent at t0
RECORDED = [
    ([(-1_000, 300, 0), (1_000, 700, 0)], "filled"),  # interpolated: 300 + 400 / 2 = 500 us, the pull's time
    ([(-1_000, 300, 0), (1_000, 702, 0)], "expired"),  # 501 us
    ([(0, 499, 0)], "filled"),  # one round trip: its latency throughout
    ([(5_000, 200, 0), (6_000, 900, 0)], "filled"),  # before the first: the first's latency
    ([(-6_000, 100, 0), (-5_000, 800, 0)], "expired"),  # after the last: the last's latency
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("rows", "fate"), RECORDED)
def test_recorded_entry_latency_is_interpolated_at_the_send_time(files, tmp_path, rows, fate):
    r = _run(files, latency_file=_round_trips(tmp_path, rows))
    assert len(r.orders) == 1
    assert len(r.fills) == (1 if fate == "filled" else 0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("entry_us", "second"), [(50, "filled"), (150, "expired")])
def test_recorded_response_latency_holds_reports_back(files, tmp_path, entry_us, second):
    """As the held-back report test with the constant latencies replaced by recorded round trips of entry
    ``entry_us`` and response 300 us (the constant ``report_latency_ns`` given beside them is ignored)."""
    rows = [(-1_000_000, entry_us, 300), (1_000_000, entry_us, 300)]
    r = _run(files, report_us=5, again=1, latency_file=_round_trips(tmp_path, rows))
    assert [int(p) for p in r.fills["price"]] == ([101, 101] if second == "filled" else [101])


SECOND = """
import numpy as np
from hean.api import BUY, IOC, Strategy, callback, limit

STATE = [("books", "i8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    st.books += 1
    if st.books == 2:
        limit(ctx, s, BUY, np.int64(101), 1, IOC, 0)

STRATEGY = Strategy(on_book=on_book, state=STATE)
"""


@pytest.fixture(scope="module")
def ticker_files(tmp_path_factory):
    """The pull recording with the exchange's own top (a TICKER pair) at t0 + 400 us before a level change
    stamped t0 + 100 us: time runs back, so that change is received -- and the order it causes sent -- at
    400 us. No stage acts on the TICKER pair; a deterministic unpaced replay passes over it without a
    pipeline pass, and its time must reach the venue all the same."""
    folder = tmp_path_factory.mktemp("ticker")
    ev = list(_recording()[:3])
    ev += [
        _event(T0 + 400 * US, EventKind.TICKER, BID, 100, 10),
        _event(T0 + 400 * US, EventKind.TICKER, ASK, 101, 10, F_LAST_IN_GROUP),
        _event(T0 + 100 * US, EventKind.LEVEL_SET, BID, 50, 1, F_LAST_IN_GROUP),
    ]
    ev += list(_recording()[3:])
    out = np.array(ev, MARKET_EVENT)
    out["seq"] = np.arange(1, len(out) + 1)
    rec = folder / "ticker.hev"
    write_native(rec, out, SymbolTable([{"name": "X", "tick_size": "1", "lot_size": "1"}]))
    (folder / "second.py").write_text(SECOND)
    return str(rec), f"{folder / 'second.py'}:STRATEGY", len(out)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("entry_us", "fate"), [(100, "filled"), (101, "expired")])
def test_a_message_passed_over_still_moves_the_venues_clock(ticker_files, entry_us, fate):
    """The order on the second book is sent at 400 us (the TICKER pair's time, which the level change after
    it is clamped to), so it arrives at the pull with 100 us of entry latency and after it with 101; a venue
    clock that missed the passed-over pair would send it at 100 us and fill both."""
    rec, second, _ = ticker_files
    config = {"venues": [{"name": "sim", "params": {"entry_latency_ns": entry_us * US}}]}
    r = hean.backtest(rec, second, config=config, format="native")
    assert len(r.orders) == 1
    assert len(r.fills) == (1 if fate == "filled" else 0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("pace", "passed_over"), [({"feed.pace": "fast"}, 2), ({"feed.pace": "rate"}, 0)])
def test_an_unpaced_lockstep_replay_passes_over_what_no_stage_acts_on(ticker_files, pace, passed_over):
    """The TICKER pair is counted as published but reaches neither the book nor the venue when unpaced
    (paced, each message keeps its slot in time and goes through); the orders and fills are the same."""
    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor
    from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT

    rec, second, n = ticker_files
    cfg = load_config(
        overrides={
            "feed.source": "replay",
            "feed.path": rec,
            "feed.format": "native",
            "feed.rate": 1_000_000.0,
            **pace,
            "engine.lockstep": True,
            "engine.duration_s": 0.0,
            "strategy.name": second,
            "venues": [{"name": "sim", "params": {"entry_latency_ns": 101 * US}}],
            "placement.workers": [["feed", "book", "strategy", "risk", "router", "venue"]],
        }
    )
    result = Supervisor(cfg).run()
    assert result.exit_code == 0, result.error
    t = result.telemetry
    assert t["feed"]["counters"][C_EVENTS_OUT] == n
    assert t["book"]["counters"][C_EVENTS_IN] == n - passed_over
    assert (t["router"]["counters"][C_ORDERS], t["router"]["counters"][C_FILLS]) == (1, 0)
