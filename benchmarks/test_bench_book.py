"""pytest-benchmark view of ``hean bench book`` (run: ``.venv/bin/pytest benchmarks/test_bench_book.py``).

The shared Binance USD-M recording after sync, replayed per diff message (apply its levels, read best
bid/ask), by HEAN's L2 book and by the peers that are installed: a plain Python dict book, hftbacktest's
market depths, NautilusTrader's OrderBook. Groups put them side by side; nothing asserts a timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hean.bench.book import (
    DEFAULT_FILE,
    LOT,
    TICK,
    _read_loop,
    _replay,
    _timed_groups,
    book_groups,
    dict_book_run,
    hftbacktest_run,
    nautilus_run,
)
from hean.feeds.binance import read_binance
from hean.stages.book import l2_set_level, make_l2_book
from hean.symbols import SymbolTable

TABLE = SymbolTable([{"name": "BTCUSDT", "tick_size": TICK, "lot_size": LOT}])


@pytest.fixture(scope="module")
def recording():
    if not Path(DEFAULT_FILE).exists():
        pytest.fail(f"{DEFAULT_FILE} not found")
    events, _ = read_binance(DEFAULT_FILE, TABLE)
    return events, *book_groups(events)


def test_hean_messages(benchmark, recording):
    _, ev, starts, ends = recording
    ns = np.empty(len(starts), np.int64)
    benchmark.group = "binance usdm: all diff messages, best bid/ask after each"
    benchmark(lambda: _timed_groups(make_l2_book(1), ev, starts, ends, ns))


def test_hean_replay_all_events(benchmark, recording):
    events = recording[0]
    benchmark.group = "binance usdm: all diff messages, best bid/ask after each"
    benchmark(lambda: _replay(make_l2_book(1), events))


def test_dict_book(benchmark, recording):
    _, ev, starts, ends = recording
    groups = [list(zip(ev["side"][a:b].tolist(), ev["price"][a:b].tolist(), ev["qty"][a:b].tolist(),
                       strict=True)) for a, b in zip(starts, ends, strict=True)]  # fmt: skip
    benchmark.group = "binance usdm: all diff messages, best bid/ask after each"
    benchmark.pedantic(dict_book_run, args=(groups,), rounds=3)


@pytest.mark.parametrize("kind", ["hashmap", "roivec"])
def test_hftbacktest(benchmark, recording, kind):
    pytest.importorskip("hftbacktest", reason="skipped: hftbacktest not installed (bench-peers extra)")
    _, ev, starts, ends = recording
    benchmark.group = "binance usdm: all diff messages, best bid/ask after each"
    benchmark.pedantic(hftbacktest_run, args=(ev, starts, ends, kind), rounds=3)


def test_nautilus(benchmark, recording):
    pytest.importorskip("nautilus_trader", reason="skipped: nautilus_trader not installed (bench-peers extra)")
    _, ev, starts, ends = recording
    benchmark.group = "binance usdm: all diff messages, best bid/ask after each"
    benchmark.pedantic(nautilus_run, args=(ev, starts, ends), rounds=3)


def test_best_bid_ask_reads(benchmark):
    book = make_l2_book(64, window=256, overflow=16)
    for s in range(64):
        l2_set_level(book, s, 0, 1000 + s, 5)
        l2_set_level(book, s, 1, 1001 + s, 7)
    benchmark.group = "best bid/ask: 1M reads over 64 symbols"
    benchmark(_read_loop, book, 1_000_000)


def test_json_conversion(benchmark):
    benchmark.group = "binance usdm JSON -> events (93,954 lines, gzip)"
    benchmark.pedantic(read_binance, args=(DEFAULT_FILE, TABLE), rounds=3)
