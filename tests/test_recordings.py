"""Several recordings in one replay and exact instruments (hean/engine/recordings.py, hean/feeds/merge.py,
hean/feeds/instruments.py): the k-way merge's order by hand, symbols chained across files or refused when
they overlap, prices and quantities re-expressed exactly in configured or published units (or a clear
error), each symbol on its configured venue, guessed units named in the summary, and a recording split in
two files backtesting exactly as the whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_file

import hean
from hean.api import REJECTED
from hean.cli import main
from hean.engine.build import prepared_replay, value_per_tick_lot
from hean.engine.config import ConfigError, load_config
from hean.engine.summary import instruments_model
from hean.feeds import load_events
from hean.feeds.common import FeedError
from hean.feeds.instruments import InstrumentError, read_instruments
from hean.feeds.native import open_native, write_native
from hean.records import A_NEW, F_LAST_IN_GROUP, MARKET_EVENT, EventKind, RejectReason
from hean.symbols import SymbolTable

SYM = {"X": ("0.01", "0.001"), "Y": ("0.5", "1")}


def native(path, rows, names=("X",)):
    """A native file of LEVEL_SET events ``(symbol, ts_origin, price, qty, tag)`` (tag in ``order_id``)."""
    ev = np.zeros(len(rows), MARKET_EVENT)
    for i, (s, t, px, q, tag) in enumerate(rows):
        ev[i]["kind"], ev[i]["side"], ev[i]["flags"] = EventKind.LEVEL_SET, 1, F_LAST_IN_GROUP
        ev[i]["symbol"], ev[i]["ts_origin"], ev[i]["ts_exch"] = s, t, t
        ev[i]["price"], ev[i]["qty"], ev[i]["order_id"] = px, q, tag
    table = SymbolTable([{"name": n, "tick_size": SYM[n][0], "lot_size": SYM[n][1]} for n in names])
    write_native(path, ev, table)
    return str(path)


def prepare(tmp_path, paths, symbols=None, venues=None, **feed):
    over = {"feed.source": "replay", "feed.path": paths, "feed.format": "native"}
    over.update({f"feed.{k}": v for k, v in feed.items()})
    if symbols is not None:
        over["symbols"] = symbols
    if venues is not None:
        over["venues"] = [{"name": v} for v in venues]
    where = tmp_path / "run"
    where.mkdir(exist_ok=True)
    cfg, rec, events = prepared_replay(load_config(None, over), str(where))
    return cfg, rec, np.array(events)


def test_the_merge_orders_by_running_receive_time_ties_in_file_order(tmp_path):
    # a's third event is stamped 20 after 30: its key is the running maximum 30, so it stays behind its
    # file's 30 and, tied with b's 30, goes first (files' order)
    a = native(tmp_path / "a.hev", [(0, 10, 1, 1, 1), (0, 30, 1, 1, 2), (0, 20, 1, 1, 3), (0, 40, 1, 1, 4)])
    b = native(tmp_path / "b.hev", [(0, 15, 2, 1, 5), (0, 30, 2, 1, 6), (0, 35, 2, 1, 7)], names=("Y",))
    cfg, rec, ev = prepare(tmp_path, [a, b])
    assert rec.merged and [s["name"] for s in rec.symbols] == ["X", "Y"]
    assert ev["order_id"].tolist() == [1, 5, 2, 3, 6, 7, 4]
    assert ev["ts_origin"].tolist() == [10, 15, 30, 20, 30, 35, 40]
    assert ev["symbol"].tolist() == [0, 1, 0, 0, 1, 1, 0]  # b's symbol 0 is the run's 1
    assert cfg.feed.path == rec.path and open_native(cfg.feed.path)[1].names == ["X", "Y"]


def test_one_symbol_in_two_files_chains_in_time_and_overlapping_files_are_refused(tmp_path):
    day1 = native(tmp_path / "d1.hev", [(0, 1, 100, 1, 1), (0, 5, 101, 1, 2)])
    day2 = native(tmp_path / "d2.hev", [(0, 6, 102, 1, 3), (0, 9, 103, 1, 4)])
    _cfg, rec, ev = prepare(tmp_path, [day2, day1])  # in any order: by time
    assert [s["name"] for s in rec.symbols] == ["X"]
    assert ev["order_id"].tolist() == [1, 2, 3, 4] and ev["symbol"].tolist() == [0, 0, 0, 0]
    late = native(tmp_path / "d3.hev", [(0, 4, 102, 1, 3), (0, 9, 103, 1, 4)])
    with pytest.raises(
        FeedError, match=r"d3.hev: symbol X is also in .*d1.hev over the same time \(receive times 4 < 5\)"
    ):
        prepare(tmp_path, [day1, late])


@pytest.mark.parametrize(
    ("tick", "lot", "prices", "qtys"),
    [
        ("0.5", "0.01", [201, 202], [2, 3]),  # coarser: 100.50 -> 201 ticks of 0.5; 0.020 -> 2 lots of 0.01
        ("0.001", "0.0001", [100500, 101000], [200, 300]),  # finer: x10 each
        ("0.01", "0.001", [10050, 10100], [20, 30]),  # the same units: the file is mapped as it is
    ],
)
def test_configured_units_re_express_every_price_and_quantity_exactly(tmp_path, tick, lot, prices, qtys):
    a = native(tmp_path / "a.hev", [(0, 1, 10050, 20, 1), (0, 2, 10100, 30, 2)])
    entry = {"name": "X", "tick_size": tick, "lot_size": lot, "venue": "b"}
    cfg, rec, ev = prepare(tmp_path, a, symbols=[entry], venues=["a", "b"])
    assert ev["price"].tolist() == prices and ev["qty"].tolist() == qtys
    assert rec.merged == (tick != "0.01")
    sym = cfg.symbols[0]
    assert (sym.name, str(sym.tick_size), str(sym.lot_size), sym.venue) == ("X", tick, lot, "b")
    assert cfg.feed.guessed == [] and instruments_model(cfg).startswith("exact")


@pytest.mark.parametrize(
    ("tick", "lot", "message"),
    [
        ("0.5", "0.001", r"a.hev: event 2 \(X\): price 100.25 is not a whole number of the tick 0.5"),
        ("0.01", "0.01", r"a.hev: event 1 \(X\): quantity 0.025 is not a whole number of the lot 0.01"),
    ],
)
def test_a_value_the_configured_units_cannot_hold_is_an_error_naming_the_event(tmp_path, tick, lot, message):
    a = native(tmp_path / "a.hev", [(0, 1, 10050, 25 if lot == "0.01" else 20, 1), (0, 2, 10025, 30, 2)])
    with pytest.raises(FeedError, match=message):
        prepare(tmp_path, a, symbols=[{"name": "X", "tick_size": tick, "lot_size": lot}])
    assert not (tmp_path / "run" / "replay.hev").exists()  # nothing half-written is left


def test_symbols_without_an_entry_are_guessed_and_the_summary_names_them(tmp_path):
    a = native(tmp_path / "a.hev", [(0, 1, 10050, 20, 1)])
    b = native(tmp_path / "b.hev", [(0, 2, 7, 1, 2)], names=("Y",))
    entry = {"name": "Y", "tick_size": "0.5", "lot_size": "1", "venue": "b"}
    cfg, _rec, _ev = prepare(tmp_path, [a, b], symbols=[entry], venues=["a", "b"])
    assert [(s.name, s.venue) for s in cfg.symbols] == [("X", "a"), ("Y", "b")]  # no entry: the first venue
    assert cfg.feed.guessed == ["X"]
    assert instruments_model(cfg).startswith("guessed from the recording's finest decimals for X ")


def _exchange_info(path, tick="0.50", step="0.010", extra=None, min_qty=None):
    price = {"filterType": "PRICE_FILTER", "tickSize": tick, "minPrice": "0.1"}
    symbol = {
        "symbol": "X",
        "filters": [price, {"filterType": "LOT_SIZE", "stepSize": step, "minQty": min_qty or step}],
    }
    path.write_text(json.dumps({"timezone": "UTC", "symbols": [symbol, *(extra or [])]}))
    return str(path)


def test_an_instrument_file_gives_the_units_a_configured_entry_overrides(tmp_path):
    a = native(tmp_path / "a.hev", [(0, 1, 10050, 20, 1), (0, 2, 10100, 30, 2)])
    info = _exchange_info(tmp_path / "exchangeInfo.json")
    cfg, _rec, ev = prepare(tmp_path, a, instruments=info)
    assert (str(cfg.symbols[0].tick_size), str(cfg.symbols[0].lot_size)) == ("0.5", "0.01")
    assert ev["price"].tolist() == [201, 202] and ev["qty"].tolist() == [2, 3] and cfg.feed.guessed == []
    cfg, _rec, ev = prepare(
        tmp_path, a, instruments=info, symbols=[{"name": "X", "tick_size": "0.05", "lot_size": "0.01"}]
    )
    assert ev["price"].tolist() == [2010, 2020]


def test_instrument_files_of_each_exchange_are_read_and_bad_ones_named(tmp_path):
    bybit = tmp_path / "bybit.json"
    bybit.write_text(json.dumps({"retCode": 0, "result": {"category": "linear", "list": [
        {"symbol": "XRPUSDT", "priceFilter": {"tickSize": "0.0001"}, "lotSizeFilter": {"qtyStep": "1"}},
        {"symbol": "BTCUSDT", "priceFilter": {"tickSize": "0.10"}, "lotSizeFilter": {"basePrecision": "0.000001"}},
    ]}}))  # fmt: skip
    got = read_instruments(bybit)
    assert [(i.name, i.tick_size, i.lot_size) for i in got.values()] == [
        ("XRPUSDT", "0.0001", "1"),
        ("BTCUSDT", "0.1", "0.000001"),
    ]
    esm4 = read_instruments(data_file("databento-orderbooks-definition.dbn.zst"))["ESM4"]
    assert (esm4.tick_size, esm4.lot_size) == ("0.25", None)
    zero = _exchange_info(tmp_path / "zero.json", tick="0")
    cases = {
        "not json": (b"{", "not a JSON instrument file"),
        "other json": (b'{"a": 1}', "neither Binance exchangeInfo"),
        "no filter": (json.dumps({"symbols": [{"symbol": "X", "filters": []}]}).encode(), "symbol X: no PRICE_FILTER"),
        "zero tick": (open(zero, "rb").read(), "symbol X: tickSize '0' is not a positive decimal"),
    }
    for name, (text, message) in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_bytes(text)
        with pytest.raises(InstrumentError, match=message):
            read_instruments(p)
    with pytest.raises(InstrumentError, match="nope.json: no such instrument file"):
        read_instruments(tmp_path / "nope.json")


def test_a_missing_instrument_file_or_a_format_per_recording_mismatch_is_a_config_error(tmp_path):
    a = native(tmp_path / "a.hev", [(0, 1, 10050, 20, 1)])
    base = {"feed.source": "replay", "feed.path": [a, a], "feed.format": "native"}
    with pytest.raises(ConfigError, match="key 'feed.instruments': .*nope.json: no such file"):
        load_config(None, {**base, "feed.instruments": str(tmp_path / "nope.json")})
    with pytest.raises(ConfigError, match="key 'feed.format': 3 formats for 2 recordings"):
        load_config(None, {**base, "feed.format": ["native"] * 3})


def test_databento_definitions_make_the_es_tick_exact(tmp_path):
    mbo = str(data_file("databento-orderbooks-mbo-20240508.dbn.zst"))
    defs = str(data_file("databento-orderbooks-definition.dbn.zst"))
    raw, _report = load_events(mbo, "dbn")  # read alone: the tick is inferred from the prices (0.01)
    over = {"feed.source": "replay", "feed.path": mbo, "feed.format": "dbn"}
    (tmp_path / "a").mkdir()
    cfg, _rec, _ev = prepared_replay(load_config(None, over), str(tmp_path / "a"))
    assert cfg.feed.guessed == ["ESM4"] and str(cfg.symbols[0].tick_size) == "0.01"
    (tmp_path / "b").mkdir()
    cfg, _rec, ev = prepared_replay(load_config(None, {**over, "feed.instruments": defs}), str(tmp_path / "b"))
    assert cfg.feed.guessed == [] and str(cfg.symbols[0].tick_size) == "0.25"
    assert str(cfg.symbols[0].multiplier) == "50"  # ES: 50 USD per index point
    assert value_per_tick_lot(cfg).tolist() == [12.5]  # a tick of 0.25 on one contract
    priced = np.array(raw)["price"] != 0
    assert np.array_equal(np.array(ev)["price"][priced] * 25, np.array(raw)["price"][priced])


def split_recording(tmp_path) -> tuple[str, str]:
    """The Binance sample as two native files that chain in time (hean.bench.backtest.split_recording)."""
    from hean.bench.backtest import split_recording as split

    events, report = load_events(data_file("binance-usdm-btcusdt-20240808.gz"), "binance-usdm")
    a, b = split(np.asarray(events), report.symbols, tmp_path)
    return str(a), str(b)


@pytest.mark.timeout(600)
def test_a_recording_split_in_two_files_backtests_as_the_whole(tmp_path):
    a, b = split_recording(tmp_path)
    whole = hean.backtest(str(data_file("binance-usdm-btcusdt-20240808.gz")), "market_maker", format="binance-usdm")
    split = hean.backtest([b, a], "market_maker", format="native")
    assert len(whole.fills) > 0 and split.symbols == whole.symbols == ["BTCUSDT"]
    cols = ["client_id", "price", "qty", "side"]
    assert split.fills.data[cols].tolist() == whole.fills.data[cols].tolist()
    assert split.summary["models"]["instruments"] == whole.summary["models"]["instruments"]


@pytest.mark.timeout(300)
def test_hean_replay_takes_several_recordings_and_an_instrument_file(tmp_path):
    a, b = split_recording(tmp_path)
    info = tmp_path / "exchangeInfo.json"
    symbol = {"symbol": "BTCUSDT", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                                               {"filterType": "LOT_SIZE", "stepSize": "0.001"}]}  # fmt: skip
    info.write_text(json.dumps({"symbols": [symbol]}))
    out = tmp_path / "summary.json"
    args = ["replay", b, a, "--format", "native", "--instruments", str(info), "-q", "--lockstep", "--json", str(out)]
    assert main(args) == 0
    s = json.loads(out.read_text())
    assert s["reason"] == "feed-done" and s["orders"] > 0 and s["fills"] > 0
    assert s["models"]["instruments"].startswith("exact")
    assert main(["replay", a, b, "--format", "native", "--format", "native", "--format", "native"]) == 2


# On its ``at``-th book state, buys at market more than the best ask holds (plus ``extra`` lots): more than one
# venue's top of book when the instrument is listed on two.
SPLITTER = """
from hean.api import BUY, Strategy, callback, market

STATE = [("n", "i8"), ("cid", "i8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    st.n += 1
    b = ctx.book[s]
    if st.cid == 0 and st.n >= ctx.params.at and b.ask_qty > 0:
        st.cid = market(ctx, s, BUY, b.ask_qty + int(ctx.params.extra))

STRATEGY = Strategy(on_book=on_book, state=STATE, params={"at": 300.0, "extra": 1.0})
"""


@pytest.mark.timeout(600)
def test_one_instrument_on_two_venues_an_order_splits_and_fills_on_both(tmp_path):
    (tmp_path / "splitter.py").write_text(SPLITTER)
    rec = str(data_file("binance-usdm-btcusdt-20240808.gz"))
    config = {
        "feed.venues": ["cheap", "dear"],  # the same recording as two venues' listings of BTCUSDT
        "venues": [
            {"name": "cheap", "params": {"taker_fee": 0.0001}},
            {"name": "dear", "params": {"taker_fee": 0.0004}},
        ],
        "symbols": [{"name": "BTCUSDT", "tick_size": "0.10", "lot_size": "0.001", "venue": "cheap"}],
        "risk.max_order_qty": 0,
        "risk.max_notional": 0.0,
        "risk.max_position": 0,
    }
    # it buys on each symbol it reads: on the instrument, and on the listing (refused: orders name the instrument)
    strategy = {"path": f"{tmp_path / 'splitter.py'}:STRATEGY", "symbols": ["BTCUSDT", "BTCUSDT@dear"]}
    r = hean.backtest([rec, rec], [strategy], format="binance-usdm", config=config)
    assert r.symbols == ["BTCUSDT", "BTCUSDT@dear"]
    sent = r.orders.data[r.orders["action"] == A_NEW]
    assert sorted(sent["symbol"].tolist()) == [0, 1]
    refused = sent[sent["symbol"] == 1]
    assert (refused["state"][0], refused["reason"][0], refused["filled"][0]) == (REJECTED, RejectReason.BAD_SYMBOL, 0)
    new = sent[sent["symbol"] == 0]  # one parent order, on the instrument
    f = r.fills.data
    assert set(f["client_id"].tolist()) == {int(new["client_id"][0])}  # every fill is the parent's
    assert set(f["venue"].tolist()) == {0, 1}  # filled on both venues
    assert set(f["symbol"].tolist()) == {0}
    cheap, dear = f[f["venue"] == 0], f[f["venue"] == 1]
    assert cheap["qty"].sum() + dear["qty"].sum() == new["filled"][0] <= new["qty"][0]
    # the cheaper venue first (its whole top of book), the dearer one the rest; each charges its own taker
    # fee, in quote currency: price x qty x tick x lot x rate
    for part, rate in ((cheap, 0.0001), (dear, 0.0004)):
        assert part["fee"] == pytest.approx(part["price"] * 0.1 * part["qty"] * 0.001 * rate, rel=1e-12)
    assert cheap["qty"].sum() > dear["qty"].sum()


def test_listings_and_multipliers_are_checked_in_the_configuration():
    venues = [{"name": "a"}, {"name": "b"}]

    def symbols(*extra):
        return {"venues": venues, "symbols": [{"name": "X", "tick_size": "0.1", "lot_size": "1", "venue": "a"}, *extra]}

    def listing(**kw):
        return {"name": "X@b", "tick_size": "0.1", "lot_size": "1", "venue": "b", "instrument": "X", **kw}

    cfg = load_config(None, symbols(listing(multiplier="1")))
    assert [s.instrument for s in cfg.symbols] == ["", "X"]
    cases = [
        (listing(instrument="Z"), r"symbols\[1\].instrument': 'Z' is not another \[\[symbols\]\] entry"),
        (listing(venue="a"), "X@b and X are both on venue 'a'"),
        (listing(tick_size="0.5"), "X@b's tick_size 0.5 differs from X's 0.1"),
        (listing(multiplier="2"), "X@b's multiplier 2 differs from X's 1"),
        (
            {"name": "Y", "tick_size": "1", "lot_size": "1", "venue": "a", "multiplier": "0"},
            "symbols\\[1\\].multiplier",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(None, symbols(extra))
    with pytest.raises(ConfigError, match="key 'feed.venues': unknown venue 'c'"):
        load_config(None, {**symbols(), "feed.venues": ["c"]})
    es = symbols({"name": "ES", "tick_size": "0.25", "lot_size": "1", "venue": "b", "multiplier": "50"})
    assert value_per_tick_lot(load_config(None, es)).tolist() == [0.1, 12.5]


def test_the_minimum_quantity_comes_from_the_instrument_file_or_the_entry_into_risk_in_lots(tmp_path):
    from hean.engine.build import build_local

    a = native(tmp_path / "a.hev", [(0, 1, 10050, 20, 1), (0, 2, 10100, 30, 2)])
    info = _exchange_info(tmp_path / "exchangeInfo.json", min_qty="0.025")  # lot 0.01: 2.5 lots -> 3
    cfg, _rec, _ev = prepare(tmp_path, a, instruments=info)
    assert str(cfg.symbols[0].min_qty) == "0.025"
    assert build_local(cfg).st_risk.risk.min_qty.tolist() == [3]
    entry = {"name": "X", "tick_size": "0.01", "lot_size": "0.001", "min_qty": "0.002"}
    cfg, _rec, _ev = prepare(tmp_path, a, instruments=info, symbols=[entry])
    assert build_local(cfg).st_risk.risk.min_qty.tolist() == [2]
    cfg = load_config(None, {"symbols": [{**entry, "venue": "sim"}], "risk.min_qty": 7})
    assert build_local(cfg).st_risk.risk.min_qty.tolist() == [7]  # [risk] min_qty (lots) wins
