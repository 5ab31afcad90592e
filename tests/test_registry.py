"""The pipeline's composition (hean.stages.declare, hean.stages.registry, hean.engine.loopgen): a declaration
or a pipeline that cannot work is one error naming the stage and what is wrong, before anything is built."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from toy_stage import TOY

from hean.engine.loopgen import edges, source
from hean.records import BOOK_STATE
from hean.stages.declare import Stage, Stream
from hean.stages.registry import PIPELINE, load, refs

FEED, BOOK, STRATEGY, RISK, ROUTER, VENUE = PIPELINE
STATES = Stream("states", BOOK_STATE)


def _toy(**changes) -> dict:
    fields = {f.name: getattr(TOY, f.name) for f in dataclasses.fields(TOY)}
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"step": "toy_batch"}, "exactly one of step and batch"),
        ({"batch": None}, "exactly one of step and batch"),
        ({"inputs": (STATES, Stream("intents", BOOK_STATE))}, "a batch stage takes one stream and publishes one"),
        ({"outputs": ()}, "a batch stage takes one stream and publishes one"),
        ({"hists": ("age:states", "service")}, "the first histogram row must be 'service'"),
        ({"batch": None, "step": "x", "inputs": (STATES, STATES)}, "an input stream twice"),
    ],
)
def test_a_declaration_that_cannot_work_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        Stage(**_toy(**changes))


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ((FEED, BOOK, TOY, TOY, STRATEGY, RISK, ROUTER, VENUE), "a stage name twice"),
        ((BOOK, STRATEGY, RISK, ROUTER, VENUE), "exactly one source"),
        (
            (FEED, TOY, BOOK, STRATEGY, RISK, ROUTER, VENUE),
            "stage 'toy' takes 'states', which no stage before it publishes",
        ),
        ((*PIPELINE, TOY), "stage 'toy' publishes 'states', which no stage takes"),
        ((FEED, BOOK, Stage(**_toy(name="Toy")), STRATEGY, RISK, ROUTER, VENUE), "lower-case letters"),
    ],
    ids=["twice", "no-source", "no-producer", "no-consumer", "bad-name"],
)
def test_a_pipeline_that_cannot_work_is_refused(pipeline, message):
    with pytest.raises(ValueError, match=message):
        edges(pipeline)


def test_the_registry_pipeline_joins_as_documented():
    joined = [(e.src, e.stream, e.dst) for e in edges(PIPELINE)]
    assert joined == [
        ("supervisor", "live", "feed"),  # external: a live feed's events (empty in the other feed modes)
        ("feed", "events", "book"),
        ("book", "states", "strategy"),
        ("router", "reports", "strategy"),  # feedback: its orders' reports ...
        ("risk", "rejects", "strategy"),  # ... and the intents risk refused
        ("book", "states", "risk"),
        ("strategy", "intents", "risk"),
        ("router", "reports", "risk"),  # feedback: from the stage after it
        ("supervisor", "control", "risk"),  # external
        ("risk", "orders", "router"),
        ("venue", "venue_reports", "router"),
        ("feed", "market", "venue"),
        ("router", "venue_orders", "venue"),
    ]


def test_workers_load_the_same_pipeline_by_reference():
    assert load(refs(PIPELINE)) == PIPELINE
    with pytest.raises(TypeError, match="is not a hean.stages.declare.Stage"):
        load(["hean.stages.registry:PIPELINE"])


def test_a_batch_stage_gets_the_one_generated_step_skeleton():
    text = source((FEED, BOOK, TOY, STRATEGY, RISK, ROUTER, VENUE))
    assert "def pass_toy(W, now, flags):" in text
    assert "taken(src, start, n, tm, t0, step_2(W.st_toy, src, dst, start, n, tm, t0))" in text
    assert "dst = (R.states_strategy, R.states_risk)" in text


def test_the_loop_file_is_rewritten_when_a_stage_module_changes(tmp_path, monkeypatch):
    """numba checks only a function's own file: the generated loop carries the stamps of the files it
    inlines, so an edit of a stage's module rewrites it (same name) and the loop recompiles."""
    import shutil
    import sys

    from hean.engine.loopgen import loop_module

    shutil.copy(Path(__file__).with_name("toy_stage.py"), tmp_path / "toy_copy.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_copy

    pipeline = (FEED, BOOK, toy_copy.TOY, STRATEGY, RISK, ROUTER, VENUE)
    first = loop_module(pipeline)
    path = Path(first.__file__)
    before = path.read_text()
    st = (tmp_path / "toy_copy.py").stat()
    os.utime(tmp_path / "toy_copy.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # an edit
    monkeypatch.delitem(sys.modules, first.__name__)
    second = loop_module(pipeline)
    assert second.__name__ == first.__name__  # the same pipeline: the same module
    after = path.read_text()
    assert after != before and after.splitlines()[1:] == before.splitlines()[1:]  # only the stamp line


def test_editing_a_shipped_strategy_does_not_touch_the_loop():
    """The shipped strategies are plug-ins the loop calls by address: their edits leave its stamp alone."""
    from hean.engine.loopgen import sources_stamp
    from hean.stages.registry import PIPELINE
    from hean.strategies import market_maker

    path = Path(market_maker.__file__)
    st = path.stat()
    before = sources_stamp(PIPELINE)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # an edit
        assert sources_stamp(PIPELINE) == before
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# recordings whose replays run each pipeline: the L2 one (Binance) and the L3 one (LOBSTER)
REPLAYS = [("binance-usdm-btcusdt-20240808.gz", "binance-usdm"), ("lobster-AAPL-2012-06-21-message-10.csv", "lobster")]


@pytest.mark.parametrize(("name", "fmt"), REPLAYS)
def test_a_stage_a_worker_does_not_run_has_the_real_ones_type(tmp_path, name, fmt):
    """One compiled loop serves every placement only when each stand-in (a stage this worker does not run)
    has the numba type of the real state: else each worker of a split run compiles a loop of its own."""
    import numba
    from conftest import data_file

    from hean.engine.build import build_stages, load_replay, prepared_replay, private_views
    from hean.engine.config import load_config
    from hean.stages.registry import trading_pipeline

    over = {"feed.source": "replay", "feed.path": str(data_file(name)), "feed.format": fmt}
    cfg, _report, events = prepared_replay(load_config(overrides=over), str(tmp_path))
    pipeline = trading_pipeline(cfg)
    names = {s.name for s in pipeline}
    real = build_stages(cfg, private_views(cfg), names, pipeline, load_replay(cfg, events))
    stand_ins = build_stages(cfg, private_views(cfg), set(), pipeline, None)
    for stage in names:
        assert numba.typeof(stand_ins[stage]) == numba.typeof(real[stage]), stage
