"""The engine's behaviour pinned: lockstep order and fill digests of the synthetic run and of the shared
Binance replay, identical in every placement and equal to the values recorded before the stages became units
(issue 13). A change to the pipeline's structure must not move them; a change of behaviour must say so here.

Regenerate with ``.venv/bin/python tools/digests.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from digests import BINANCE, SYNTHETIC, digests

PINNED = {
    "synthetic": (SYNTHETIC, 5420, 324, -2773435340788400276, 1695841538552271710),
    "binance": (BINANCE, 1037, 453, -8347726882974089726, 421013042568250987),
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
