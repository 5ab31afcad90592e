"""Queue-position models of the simulated venue (``queue_model`` / ``queue_power`` in ``[venues.params]``):
hand-computed cases against the venue's kernels, bad values, and one backtest on the Binance recording.

Notation of the comments (hean/stages/venue.py's module docstring): a level of our resting order goes from
``prev`` to ``new`` lots; ``c = prev - new - traded`` lots were cancelled (``traded``: printed at the price
since the level was last set); ``F`` lots are ahead of the order, ``B = prev - traded - F`` behind it;
``p`` = the probability that a cancelled lot was behind; the order is credited ``c - B`` when ``p c >= B``,
else ``floor(c - p c)``, never more than ``F``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file
from test_venue import OUT, _ids, ev

from hean.engine.config import ConfigError, load_config
from hean.records import (
    ASK,
    BID,
    BUY,
    ORDER,
    SELL,
    EventKind,
    ExecType,
    OrderAction,
    OrderType,
    TimeInForce,
)
from hean.stages.venue import (
    L_QUEUE,
    O_AHEAD,
    Q_LOG,
    Q_POWER,
    Q_RISK_AVERSE,
    VF_QPOW,
    make_venue,
    venue_on_event,
    venue_on_order,
    venue_poll,
)


def reports(n):
    return [(ExecType(int(r["kind"])).name, int(r["price"]), int(r["qty"]), int(r["leaves_qty"]), int(r["cum_qty"]))
            for r in OUT[:n]]  # fmt: skip


def level(vn, side, px, qty, now=0, v=0, symbol=0):
    return reports(venue_on_event(vn, v, ev(EventKind.LEVEL_SET, side, px, qty, symbol), now, OUT, 0))


def trade(vn, aggressor, px, qty, now=0, v=0):
    return reports(venue_on_event(vn, v, ev(EventKind.TRADE, aggressor, px, qty), now, OUT, 0))


def order(side=BUY, qty=3, price=99, tif=TimeInForce.GTC, venue=0, symbol=0):
    o = np.zeros(1, ORDER)
    r = o[0]
    r["kind"], r["side"], r["qty"], r["price"], r["order_type"], r["tif"] = OrderAction.NEW, side, qty, price, \
        OrderType.LIMIT, tif  # fmt: skip
    r["venue"], r["symbol"], r["order_id"] = venue, symbol, next(_ids)
    return r


def send(vn, rec, now=0):
    return reports(venue_on_order(vn, rec, now, OUT, 0))


def ahead(vn, rec):
    return int(vn.o[int(rec["order_id"]) & (vn.o.shape[0] - 1), O_AHEAD])


def venue(model, n=None, **kw):
    if n is not None:
        kw["queue_power"] = n
    return make_venue(2, 2, queue_model=model, **kw)


def resting_bid(vn):
    """A buy of 3 lots resting at 99 behind the 10 visible lots."""
    level(vn, BID, 99, 10)
    rec = order()
    assert send(vn, rec) == [("ACK", 99, 0, 3, 0)] and ahead(vn, rec) == 10
    return rec


# (id, model, n, levels after joining, queue ahead expected, sell print at 99, its fills (kind, px, qty, leaves,
# cum)); each case: a buy of 3 resting at 99 behind 10 lots, then the bid levels at 99 in order
CASES = [
    # A: 4 lots join behind (10 -> 14: F = 10 stays), then 6 cancel (14 -> 8): c = 6, F = 10, B = 4
    ("a_risk_averse", "risk_averse", None, [14, 8], 10, 8, []),  # never credited: 10 ahead, 8 of them print
    # p = 4^2 / (4^2 + 10^2) = 16/116 = 0.1379; p c = 0.8276 < B; floor(6 - 0.8276) = floor(5.1724) = 5: 10 - 5
    ("a_power_2", "power", 2, [14, 8], 5, 8, [("FILL", 99, 3, 0, 3)]),
    # default n = 3: p = 64 / (64 + 1000) = 0.0602; p c = 0.3609; floor(5.6391) = 5
    ("a_power_default_3", "power", None, [14, 8], 5, 8, [("FILL", 99, 3, 0, 3)]),
    # p = (4 / 14)^2 = 16/196 = 0.0816; p c = 0.4898; floor(5.5102) = 5
    ("a_power2_2", "power2", 2, [14, 8], 5, 8, [("FILL", 99, 3, 0, 3)]),
    # p = 1 - (10 / 14)^2 = 96/196 = 0.4898; p c = 2.9388 < 4; floor(3.0612) = 3: 7 ahead, the print fills 1
    ("a_power3_2", "power3", 2, [14, 8], 7, 8, [("PARTIAL_FILL", 99, 1, 2, 1)]),
    # p = 1 - (10 / 14)^3 = 1744/2744 = 0.6356; p c = 3.8134 < 4; floor(2.1866) = 2: 8 ahead, 8 print: none
    ("a_power3_3", "power3", 3, [14, 8], 8, 8, []),
    # p = ln 5 / (ln 5 + ln 11) = 1.6094 / 4.0073 = 0.4016; p c = 2.4097; floor(3.5903) = 3
    ("a_log", "log", None, [14, 8], 7, 8, [("PARTIAL_FILL", 99, 1, 2, 1)]),
    # p = ln 5 / ln 15 = 1.6094 / 2.7081 = 0.5943; p c = 3.5659; floor(2.4341) = 2
    ("a_log2", "log2", None, [14, 8], 8, 8, []),
    # B: 2 join behind (10 -> 12), 9 cancel (12 -> 3): c = 9, F = 10, B = 2
    ("b_risk_averse", "risk_averse", None, [12, 3], 10, 4, []),
    # p = 4 / (4 + 100) = 0.0385; p c = 0.3462 < 2; floor(8.6538) = 8: 2 ahead, a print of 4 fills 2
    ("b_power_2", "power", 2, [12, 3], 2, 4, [("PARTIAL_FILL", 99, 2, 1, 2)]),
    # p = ln 3 / (ln 3 + ln 11) = 1.0986 / 3.4965 = 0.3142; p c = 2.8278 >= B = 2: the whole back went, and
    # the other 9 - 2 = 7 came from ahead: 3 ahead
    ("b_log_back_exhausted", "log", None, [12, 3], 3, 4, [("PARTIAL_FILL", 99, 1, 2, 1)]),
    # p = ln 3 / ln 13 = 1.0986 / 2.5649 = 0.4283; p c = 3.8549 >= 2: 9 - 2 = 7
    ("b_log2_back_exhausted", "log2", None, [12, 3], 3, 4, [("PARTIAL_FILL", 99, 1, 2, 1)]),
    # p = 1 - (10 / 12)^2 = 0.3056; p c = 2.75 >= 2: 7
    ("b_power3_back_exhausted", "power3", 2, [12, 3], 3, 4, [("PARTIAL_FILL", 99, 1, 2, 1)]),
    # C: the level empties (14 -> 0): c = 14, F = 10, B = 4; p = 16/116, p c = 1.9310 < 4;
    # floor(12.0690) = 12, but never more than F: 0 ahead
    ("c_power_level_gone", "power", 2, [14, 0], 0, 1, [("PARTIAL_FILL", 99, 1, 2, 1)]),
    ("c_risk_averse_level_gone", "risk_averse", None, [14, 0], 10, 1, []),
    # D: increases only add behind
    ("d_power_increases", "power", 2, [14, 20, 25], 10, 10, []),
    ("d_log_increases", "log", None, [11, 30], 10, 10, []),
]  # fmt: skip


@pytest.mark.parametrize("name,model,n,levels,want_ahead,print_qty,fills", CASES, ids=[c[0] for c in CASES])
def test_queue_model_on_a_level_decrease(name, model, n, levels, want_ahead, print_qty, fills):
    vn = venue(model, n, maker_fee=-0.0001)
    rec = resting_bid(vn)
    for q in levels:
        assert level(vn, BID, 99, q) == []
    assert ahead(vn, rec) == want_ahead
    assert trade(vn, SELL, 99, print_qty) == fills
    if fills:
        assert OUT[0]["liquidity"] == 1 and OUT[0]["fee"] < 0


# E: a print at the price before the level's update: the update's decrease includes the print, which already
# moved the order up; only the rest is a cancellation. (id, model, ahead after the print, after the update)
PRINT_THEN_UPDATE = [
    # 10 -> 14; a print of 3 (F = 10 - 3 = 7, traded = 3); 14 -> 8: c = 14 - 8 - 3 = 3, B = 14 - 3 - 7 = 4;
    # p = 16 / (16 + 49) = 0.2462; p c = 0.7385; floor(2.2615) = 2: 5 ahead. (Counting the print again,
    # c = 6 and B = 7, would credit 3.)
    ("power_2", "power", 2, 7, 5),
    ("risk_averse", "risk_averse", None, 7, 7),
]  # fmt: skip


@pytest.mark.parametrize(
    "name,model,n,after_print,after_update", PRINT_THEN_UPDATE, ids=[c[0] for c in PRINT_THEN_UPDATE]
)
def test_a_print_is_not_credited_again_as_a_cancellation(name, model, n, after_print, after_update):
    vn = venue(model, n)
    rec = resting_bid(vn)
    level(vn, BID, 99, 14)
    assert trade(vn, SELL, 99, 3) == [] and ahead(vn, rec) == after_print
    level(vn, BID, 99, 8)
    assert ahead(vn, rec) == after_update
    # a second update without prints in between: 8 -> 6, c = 2, F = 5, B = 3 (power n = 2):
    # p = 9 / (9 + 25) = 0.2647; p c = 0.5294; floor(1.4706) = 1: 4 ahead
    level(vn, BID, 99, 6)
    assert ahead(vn, rec) == (4 if model == "power" else 7)


def test_decrease_where_we_have_no_order_changes_nothing():
    """Another price, the other side at the same price, another symbol, another venue."""
    vn = venue("power", 2)
    level(vn, BID, 98, 10)
    rec = resting_bid(vn)
    level(vn, BID, 99, 14)
    for side, px, q, v, s in ((BID, 98, 10, 0, 0), (ASK, 99, 10, 0, 0), (BID, 99, 10, 1, 0), (BID, 99, 10, 0, 1)):
        level(vn, side, px, q, v=v, symbol=s)
        level(vn, side, px, 1, v=v, symbol=s)  # a decrease of 9 there
    assert ahead(vn, rec) == 10


def test_several_orders_at_one_price():
    vn = venue("power", 2)
    a = resting_bid(vn)  # 10 ahead
    level(vn, BID, 99, 14)
    b = order()
    send(vn, b)
    assert ahead(vn, b) == 14  # joins behind the 14 visible lots: nothing behind it
    level(vn, BID, 99, 8)  # c = 6
    # a: F = 10, B = 4: 5 credited (CASES a_power_2): 5 ahead
    # b: F = 14, B = 14 - 14 = 0: p = 0, every cancelled lot was ahead: 6 credited: 8 ahead
    assert (ahead(vn, a), ahead(vn, b)) == (5, 8)
    # a print of 9: a fills 9 - 5 = 4 -> 3 (all of it); b fills 9 - 8 = 1 of the 6 left
    assert trade(vn, SELL, 99, 9) == [("FILL", 99, 3, 0, 3), ("PARTIAL_FILL", 99, 1, 2, 1)]


def test_our_own_take_is_not_a_cancellation():
    """Our marketable sell takes 4 of the bid's 14 lots: the venue's copy is 10 until the feed sets the level
    again. The take is not a decrease credited to our resting bid there, and the feed's next quantity is
    compared with the venue's copy (10), so a real cancellation the take masks is not credited (careful)."""
    vn = venue("power", 2)
    rec = resting_bid(vn)
    level(vn, BID, 99, 14)
    take = order(side=SELL, qty=4, price=99, tif=TimeInForce.IOC)
    assert send(vn, take) == [("ACK", 99, 0, 4, 0), ("FILL", 99, 4, 0, 4)]
    assert ahead(vn, rec) == 10 and vn.tops.bid_qty[0, 0] == 10
    level(vn, BID, 99, 12)  # the feed: 14 -> 12 (2 cancelled), but 10 -> 12 for the venue: an increase
    assert ahead(vn, rec) == 10
    level(vn, BID, 99, 9)  # 12 -> 9: c = 3, F = 10, B = 2: p = 4/104 = 0.0385, p c = 0.1154, floor(2.8846) = 2
    assert ahead(vn, rec) == 8


def test_decrease_before_the_order_arrives_is_the_queue_it_joins():
    vn = venue("power", 2, entry_latency_ns=100)
    level(vn, BID, 99, 10)
    rec = order()
    assert send(vn, rec, now=0) == []  # in flight until 100
    level(vn, BID, 99, 4, now=50)  # nothing of ours rests there yet
    assert reports(venue_poll(vn, 100, OUT, 0)) == [("ACK", 99, 0, 3, 0)]
    assert ahead(vn, rec) == 4  # it joins behind the 4 lots left
    level(vn, BID, 99, 7, now=110)  # 3 behind
    level(vn, BID, 99, 5, now=120)  # c = 2, F = 4, B = 3: p = 9/25 = 0.36, p c = 0.72, floor(1.28) = 1
    assert ahead(vn, rec) == 3


def test_per_venue_models_and_defaults():
    vn = make_venue(1, 3, queue_model=np.array(["power", "risk_averse", "log"], dtype=object), queue_power=2)
    assert list(vn.lat[:, L_QUEUE]) == [Q_POWER, Q_RISK_AVERSE, Q_LOG] and list(vn.vf[:, VF_QPOW]) == [2.0] * 3
    vn = make_venue(1, 2)
    assert list(vn.lat[:, L_QUEUE]) == [Q_RISK_AVERSE] * 2 and list(vn.vf[:, VF_QPOW]) == [3.0] * 2


MODELS = "risk_averse | power | power2 | power3 | log | log2"
BAD_VALUES = [
    (dict(queue_model="powr"), f"queue_model must be one of {MODELS} per venue, got 'powr'"),
    (dict(queue_model=2), f"queue_model must be one of {MODELS} per venue, got 2"),
    (dict(queue_model=["power", "log", "log"]), "queue_model: one name or one per venue (2), got 3"),
    (dict(queue_power=0), "queue_power must be a number in (0, 100] per venue, got 0.0"),
    (dict(queue_power=-2.0), "queue_power must be a number in (0, 100] per venue, got -2.0"),
    (dict(queue_power=float("nan")), "queue_power must be a number in (0, 100] per venue, got nan"),
    (dict(queue_power=1e6), "queue_power must be a number in (0, 100] per venue, got 1000000.0"),
    (dict(queue_power=[2.0, float("inf")]), "queue_power must be a number in (0, 100] per venue, got inf"),
]  # fmt: skip


@pytest.mark.parametrize("kw,message", BAD_VALUES)
def test_make_venue_rejects_bad_queue_values(kw, message):
    with pytest.raises(ValueError) as e:
        make_venue(1, 2, **kw)
    assert str(e.value) == message


CONFIG_ERRORS = [
    ({"queue_model": "fifo"}, f"[venues]: queue_model must be one of {MODELS} per venue, got 'fifo'"),
    ({"queue_model": 1}, "key 'venues[0].params.queue_model': expected str, got int 1"),
    ({"queue_power": "x"}, "key 'venues[0].params.queue_power': expected float, got str 'x'"),
    ({"queue_power": -1}, "[venues]: queue_power must be a number in (0, 100] per venue, got -1.0"),
    ({"queue_power": float("inf")}, "key 'venues[0].params.queue_power': must be a finite number, got inf"),
]  # fmt: skip


@pytest.mark.parametrize("params,message", CONFIG_ERRORS)
def test_config_errors_name_the_key(params, message):
    from hean.engine.build import check_config

    with pytest.raises(ConfigError) as e:
        check_config(load_config(overrides={"venues": [{"name": "sim", "params": params}]}))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_reaches_each_venue():
    from hean.engine.build import build_stages
    from hean.engine.topology import private_views

    venues = [{"name": "sim", "params": {"queue_model": "power", "queue_power": 2}}, {"name": "b"},
              {"name": "c", "params": {"queue_model": "log"}}]  # fmt: skip
    cfg = load_config(overrides={"venues": venues})
    vn = build_stages(cfg, private_views(cfg))["venue"].venue
    assert list(vn.lat[:, L_QUEUE]) == [Q_POWER, Q_RISK_AVERSE, Q_LOG]
    assert list(vn.vf[:, VF_QPOW]) == [2.0, 3.0, 3.0]


def test_backtest_power_model_fills_more_than_risk_averse():
    """The market maker on the Binance USD-M recording: the same orders see cancellations ahead credited."""
    import hean

    def fills(model):
        config = {"venues": [{"name": "sim", "params": {"queue_model": model}}]}
        r = hean.backtest(data_file("binance-usdm-btcusdt-20240808.gz"), "market_maker", format="binance-usdm",
                          config=config)  # fmt: skip
        return len(r.fills)

    averse, power = fills("risk_averse"), fills("power")
    print(f"market_maker fills: risk_averse {averse}, power {power}")
    assert 0 < averse < power
