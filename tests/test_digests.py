"""The engine's behaviour pinned: lockstep order and fill digests of the synthetic run and of the shared
Binance replay, identical in every placement. A change to the pipeline's structure must not move them; a
change of behaviour must say so here. Last change: the market maker became a plug-in of hean.api (issue 14):
it sees its own fills and quotes both sides in one callback, so it sends and fills more (Binance: 1037 orders
and 453 fills before, 3227 and 1986 now).

Regenerate with ``.venv/bin/python tools/digests.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from digests import BINANCE, SYNTHETIC, digests

PINNED = {
    "synthetic": (SYNTHETIC, 5555, 340, 7236645266736900941, -3110773119608840971),
    "binance": (BINANCE, 3227, 1986, 753282770730297080, 3851376269842621147),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("placement", ["fused", "two", "split"])
@pytest.mark.parametrize("feed", list(PINNED))
def test_lockstep_digests_are_pinned_in_every_placement(feed, placement):
    cfg, orders, fills, order_digest, fill_digest = PINNED[feed]
    assert digests(cfg, placement) == {
        "orders": orders,
        "fills": fills,
        "order_digest": order_digest,
        "fill_digest": fill_digest,
    }
