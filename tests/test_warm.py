"""Cold-start compilation ahead of the worker loop (hean.engine.warm)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hean.engine import control as C
from hean.engine.build import build_local
from hean.engine.config import load_config
from hean.engine.loopgen import loop_module
from hean.engine.warm import precompile, stage_order
from hean.stages.book import book_batch
from hean.stages.feed import feed_step
from hean.stages.registry import PIPELINE
from hean.stages.risk import risk_step
from hean.stages.router import router_step
from hean.stages.strategy import strategy_step
from hean.stages.venue import venue_step

STEPS = (feed_step, book_batch, strategy_step, risk_step, router_step, venue_step)  # each stage's kernel
LOOP = loop_module(PIPELINE)
N = len(PIPELINE)
FEED, BOOK, STRATEGY, RISK, ROUTER, VENUE = range(N)


def test_stage_orders_cover_every_stage_once():
    assert stage_order(N, backwards=False) == [FEED, BOOK, STRATEGY, RISK, ROUTER, VENUE]
    assert stage_order(N, backwards=True) == stage_order(N, backwards=False)[::-1]


def test_precompile_compiles_what_run_loop_uses():
    """Compiling the stages ahead gives each step function exactly the signature the worker loop calls it
    with: the loop then adds no specialization of its own (nothing is compiled twice)."""
    W = build_local(load_config(overrides={"engine.duration_s": 1.0}))
    precompile(LOOP, W, [VENUE])
    assert len(venue_step.signatures) >= 1
    precompile(LOOP, W, stage_order(N, backwards=False))
    before = [len(f.signatures) for f in STEPS]
    assert all(n >= 1 for n in before)
    LOOP.run_loop(W, 3)
    assert [len(f.signatures) for f in STEPS] == before


def test_claims_share_the_stages_between_processes(tmp_path):
    """With a claims folder, a stage claimed by another live process is skipped (and waited for until it is
    done); a claim left by a dead process does not hold anyone up."""
    from hean.engine import warm

    W = build_local(load_config(overrides={"engine.duration_s": 1.0}))
    claims = str(tmp_path)
    # another live process (here: this test's parent) holds the venue and has finished it
    (tmp_path / f"{VENUE}.claim").write_text(str(os.getppid()))
    (tmp_path / f"{VENUE}.done").write_text("")
    # a dead process claimed the router and never finished it
    (tmp_path / f"{ROUTER}.claim").write_text(str(_dead_pid()))
    warm.precompile(LOOP, W, stage_order(N, backwards=False), claims, wait_s=30)
    for i in (FEED, BOOK, STRATEGY, RISK):
        assert (tmp_path / f"{i}.claim").read_text() == str(os.getpid())
        assert (tmp_path / f"{i}.done").exists()
    assert not (tmp_path / f"{ROUTER}.done").exists()  # not ours, and its owner is gone
    assert (tmp_path / f"{VENUE}.claim").read_text() == str(os.getppid())


@pytest.mark.timeout(300)
def test_the_loop_is_compiled_by_one_process_per_loop_type(tmp_path):
    """The first worker to claim the loop compiles it; another with the same loop type finds the claim done
    and loads the loop instead (six workers on two CPUs would otherwise compile it six times at once)."""
    from hean.engine import warm

    claims = str(tmp_path)
    first = build_local(load_config(overrides={"engine.duration_s": 1.0}))
    assert warm.compile_loop(LOOP, first) is True  # no claims folder: nothing to share
    assert warm.compile_loop(LOOP, first, claims) is True
    name = warm._loop_claim_name(first)
    assert (tmp_path / f"{name}.claim").read_text() == str(os.getpid())
    assert (tmp_path / f"{name}.done").exists()
    second = build_local(load_config(overrides={"engine.duration_s": 1.0, "feed.seed": 3}))
    assert warm._loop_claim_name(second) == name  # same types, other values
    assert warm.compile_loop(LOOP, second, claims) is False
    assert second.ctl[C.worker_word(0, C.W_LOOPS)] == 1  # and it ran its one warm-up pass


@pytest.mark.timeout(300)
def test_a_dead_loop_claimant_holds_nobody_up(tmp_path):
    from hean.engine import warm

    W = build_local(load_config(overrides={"engine.duration_s": 1.0}))
    name = warm._loop_claim_name(W)
    (tmp_path / f"{name}.claim").write_text(str(_dead_pid()))
    assert warm.compile_loop(LOOP, W, str(tmp_path), wait_s=600) is False  # returns (no 600 s wait): it compiled
    assert not (tmp_path / f"{name}.done").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.timeout(120)
def test_an_in_process_cold_start_shares_the_stages_with_a_helper_that_never_outlives_it(monkeypatch):
    """hean.backtest on a cold cache (warm.compile_in_process): a helper process takes stages from the back
    (it claims one) while this process compiles from the front; when this process is done the helper is
    killed by its pid and reaped, and the claims folder is gone -- whatever the helper was doing."""
    import types

    from hean.engine import warm

    cfg = load_config(overrides={"engine.duration_s": 1.0})
    W = build_local(cfg)
    seen = {}

    def front_to_back(loop, W_, order, claims):
        seen["claims"] = claims
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(n.endswith(".claim") for n in os.listdir(claims)):
            time.sleep(0.05)  # until the helper, started with the run's configuration, claims a stage
        seen["claimed"] = sorted(n for n in os.listdir(claims) if n.endswith(".claim"))
        with open(os.path.join(claims, seen["claimed"][0])) as f:
            seen["helper"] = int(f.read())
        return 0.0

    monkeypatch.setattr(warm, "precompile", front_to_back)
    monkeypatch.setattr(warm, "_loop_cached", lambda loop: False)
    cold = types.SimpleNamespace(run_loop=types.SimpleNamespace(overloads={}), PASSES=LOOP.PASSES)
    assert warm.compile_in_process(cold, W, cfg, PIPELINE) is True
    k = len(seen["claimed"])  # the helper starts from the back (and may have gone on meanwhile)
    assert 1 <= k and seen["claimed"] == [f"{i}.claim" for i in range(N - k, N)]
    assert not os.path.exists(f"/proc/{seen['helper']}")  # killed and reaped: not even a zombie
    assert not os.path.exists(seen["claims"])
    # compiled in this process already, or warm on disk: no helper
    assert warm.compile_in_process(types.SimpleNamespace(run_loop=types.SimpleNamespace(overloads={1: 1})), W, cfg,
                                   PIPELINE) is False  # fmt: skip
