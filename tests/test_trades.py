"""Trade statistics (hean.stages.trades): the rolling VWAP's ring against a plain list, through wraps,
evictions by age and a full ring."""

from __future__ import annotations

import numpy as np
import pytest

from hean.stages.trades import C_COUNT, C_SEEN, C_TRUNCATED, make_trade_stats, trade_on, trade_vwap


def reference(prints, window, capacity):
    """(vwap after each print, truncations): a list of (ts, px, qty), the oldest evicted first."""
    kept, out, truncated = [], [], 0
    for ts, px, qty in prints:
        kept = [p for p in kept if p[0] >= ts - window]
        if len(kept) == capacity:
            kept.pop(0)
            truncated += 1
        kept.append((ts, px, qty))
        q = sum(p[2] for p in kept)
        out.append(sum(p[1] * p[2] for p in kept) / q if q else 0.0)
    return out, truncated


@pytest.mark.parametrize(
    ("capacity", "window", "gap"),
    [
        (1, 10, 3),  # every print evicts the last one
        (3, 10, 1),  # the ring fills before anything ages out: truncations
        (3, 10, 4),  # ages out as fast as it fills: the ring wraps without truncating
        (5, 7, 3),  # a capacity that is not a power of two, mixed
        (4, 1_000, 1),  # nothing ages out: truncations only
    ],
)
def test_vwap_equals_the_list_of_prints_in_the_window(capacity, window, gap):
    rng = np.random.default_rng(capacity * 1000 + window)
    ts = np.cumsum(rng.integers(0, 2 * gap + 1, 60))  # equal stamps too
    prints = [(int(t), int(rng.integers(90, 110)), int(rng.integers(1, 5))) for t in ts]
    want, truncated = reference(prints, window, capacity)
    st = make_trade_stats(2, window_ns=window, capacity=capacity)
    for k, (t, px, qty) in enumerate(prints):
        trade_on(st, 1, t, px, qty, 1)
        assert trade_vwap(st, 1, t) == pytest.approx(want[k]), k
    assert st.counts[1, C_TRUNCATED] == truncated and st.counts[1, C_SEEN] == len(prints)
    assert st.counts[0].tolist() == [0, 0, 0, 0]  # the other symbol untouched
    later = prints[-1][0] + window + 1  # everything aged out by then
    assert trade_vwap(st, 1, later) == 0.0 and st.counts[1, C_COUNT] == 0
