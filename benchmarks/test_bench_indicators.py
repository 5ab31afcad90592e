"""pytest-benchmark view of ``hean bench indicators``: batch HEAN vs TA-Lib's C, streaming update, stage.

Run: ``.venv/bin/pytest benchmarks/test_bench_indicators.py --benchmark-group-by=param:n`` (benchmarks/ is
not collected by the test suite). The groups put HEAN and TA-Lib side by side on the same arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from hean import indicators as hi
from hean.bench.indicators import _stream_loop, stage_ns, trade_records, walk
from hean.indicators.streaming import make_indicator_set
from hean.stages.strategy import StrategyDriver

talib = pytest.importorskip("talib", reason="TA-Lib (the [bench] extra) is the peer")

SIZES = [1_000, 1_000_000]
FUNCS = {
    "rsi": (hi.rsi, talib.RSI),
    "macd": (hi.macd, talib.MACD),
    "bbands": (hi.bbands, talib.BBANDS),
}


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["hean", "talib"])
@pytest.mark.parametrize("indicator", sorted(FUNCS))
def test_batch(benchmark, indicator, impl, n):
    x = walk(n)
    fn = FUNCS[indicator][0 if impl == "hean" else 1]
    benchmark.group = f"{indicator} n={n}"
    out = benchmark(fn, x)
    first = out[0] if isinstance(out, tuple) else out
    assert first.shape == (n,)


@pytest.mark.parametrize("n_symbols", [1, 8])
def test_streaming_update(benchmark, n_symbols):
    """One pass of 100k full-set updates; ns per update = mean / 100k."""
    price = walk(100_000)
    volume = np.ones_like(price)
    st = make_indicator_set(n_symbols)
    _stream_loop(st, price[:100], volume[:100], n_symbols, 1)
    benchmark.group = "streaming 100k updates"
    accepted = benchmark(_stream_loop, st, price, volume, n_symbols, 1)
    assert accepted == len(price)


@pytest.mark.parametrize("strategy", ["rsi_macd", "market_maker"])
def test_strategy_stage(benchmark, strategy):
    """100k TRADE book states through the strategy stage (the shipped strategy as a plug-in) in tick mode."""
    recs = trade_records(100_000)
    stage_ns(strategy, 1_000)  # compile or load the cache

    def run():
        d = StrategyDriver([(strategy, [0], None)], 1, mode="tick", capacity=1 << 20)
        d.states(recs)
        return int(d.slot().cfg[0])

    benchmark.group = "strategy stage 100k events"
    assert benchmark(run) > 0
