"""Cold-start compilation ahead of the worker loop (hean.engine.warm)."""

from __future__ import annotations

from hean.engine import pipeline as P
from hean.engine.build import build_local
from hean.engine.config import load_config
from hean.engine.warm import precompile, stage_order

STEPS = (P.feed_step, P.book_step, P.strategy_step, P.risk_step, P.router_step, P.venue_step)


def test_stage_orders_cover_every_stage_once():
    assert stage_order(backwards=False) == [P.FEED, P.BOOK, P.STRATEGY, P.RISK, P.ROUTER, P.VENUE]
    assert stage_order(backwards=True) == stage_order(backwards=False)[::-1]


def test_precompile_compiles_what_run_loop_uses():
    """Compiling the stages ahead gives each step function exactly the signature the worker loop calls it
    with: the loop then adds no specialization of its own (nothing is compiled twice)."""
    W = build_local(load_config(overrides={"engine.duration_s": 1.0}))
    precompile(W, [P.VENUE])
    assert len(P.venue_step.signatures) >= 1
    precompile(W, stage_order(backwards=False))
    before = [len(f.signatures) for f in STEPS]
    assert all(n >= 1 for n in before)
    P.run_loop(W, 3)
    assert [len(f.signatures) for f in STEPS] == before
