"""Telemetry blocks (create/attach, numba writers, another process writing), interval views, risk state,
and the run manifest."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time

import pytest
from numba import njit

from hean.atomics import now_ns
from hean.shm import create_segment, unlink_segment
from hean.telemetry import block as tb
from hean.telemetry.block import (
    C_BUSY_LOOPS,
    C_BUSY_NS,
    C_CPU,
    C_EVENTS_IN,
    C_EVENTS_OUT,
    C_HEARTBEAT_NS,
    C_IDLE_LOOPS,
    C_MAX_LOOP_NS,
    C_PID,
    C_REJECT_BASE,
    C_REJECTS,
    C_STATE,
    C_USER_BASE,
    ST_RUNNING,
    ST_STOPPED,
    TS_HALTED,
    BlockError,
    attach_block,
    block_name,
    create_block,
    risk_set_position,
    risk_set_state,
    risk_set_totals,
    tm_add,
    tm_busy,
    tm_idle,
    tm_reject,
    tm_start,
    tm_stop,
)
from hean.telemetry.histogram import H_TOTAL, hist_record, hist_value_at_percentile
from hean.telemetry.manifest import (
    Manifest,
    ManifestError,
    RingInfo,
    StageInfo,
    WorkerInfo,
    find_run,
    list_runs,
    manifest_name,
    read_manifest,
    remove_manifest,
    write_manifest,
)
from hean.telemetry.reader import interval, risk_state, snapshot, stage_stats

_ids = itertools.count()


@pytest.fixture
def run_id() -> str:
    return f"t{os.getpid()}_{next(_ids)}"


@njit(cache=True, nogil=True)
def _fake_stage(tm, n, service_row, queue_row):
    """A stage loop in miniature: n busy iterations, 3 idle ones, one reject."""
    tm_start(tm.counters, 1)
    for i in range(n):
        t0 = now_ns()
        tm_add(tm.counters, C_EVENTS_IN, 1)
        hist_record(tm.hists[queue_row], 1000 + i)
        tm_add(tm.counters, C_EVENTS_OUT, 2)
        hist_record(tm.hists[service_row], 100 + i % 50)
        tm_busy(tm.counters, t0, t0 + 100 + i % 50)
    for _ in range(3):
        tm_idle(tm.counters)
    tm_reject(tm.counters, 4)
    tm_reject(tm.counters, 99)  # out of range: counted in the last reason slot
    tm_stop(tm.counters, now_ns())


def test_block_create_write_attach_read(run_id):
    seg = create_block(run_id, "book", ["service", "queue.md"], user_counters=["levels"])
    try:
        assert seg.name == f"hean-{run_id}-tm-book"
        assert oct(os.stat(f"/dev/shm/{seg.name}").st_mode & 0o777) == "0o600"
        _fake_stage(seg.block, 1000, seg.hist_row("service"), seg.hist_row("queue.md"))
        tm_add(seg.block.counters, seg.user_counter("levels"), 7)
        obs = attach_block(seg.name)  # read-only
        try:
            assert (obs.run_id, obs.stage, obs.hist_names) == (run_id, "book", ["service", "queue.md"])
            assert obs.user_counters == ["levels"]
            c = obs.block.counters
            assert c[C_EVENTS_IN] == 1000 and c[C_EVENTS_OUT] == 2000
            assert c[C_BUSY_LOOPS] == 1000 and c[C_IDLE_LOOPS] == 3
            assert c[C_BUSY_NS] == sum(100 + i % 50 for i in range(1000)) and c[C_MAX_LOOP_NS] == 149
            assert c[C_PID] == os.getpid() and c[C_CPU] == 1 and c[C_STATE] == ST_STOPPED
            assert c[C_REJECTS] == 2 and c[C_REJECT_BASE + 4] == 1 and c[C_REJECT_BASE + 31] == 1
            assert c[C_USER_BASE] == 7
            assert obs.block.hists[obs.hist_row("queue.md"), H_TOTAL] == 1000
            assert hist_value_at_percentile(obs.block.hists[obs.hist_row("service")], 100.0) == 149
            with pytest.raises(ValueError):
                obs.block.counters[0] = 1  # the observer's map is read-only
            with pytest.raises(BlockError, match="no histogram 'e2e'"):
                obs.hist_row("e2e")
        finally:
            obs.close()
    finally:
        seg.close()
        seg.unlink()


def test_block_written_by_another_process_is_seen_live(run_id):
    seg = create_block(run_id, "feed", ["service"])
    code = textwrap.dedent(f"""
        from hean.telemetry.block import attach_block, tm_add, tm_start, C_EVENTS_OUT
        s = attach_block({seg.name!r}, readonly=False)
        tm_start(s.block.counters, -1)
        tm_add(s.block.counters, C_EVENTS_OUT, 12345)
        print(s.block.counters[C_EVENTS_OUT])
    """)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        child_pid_seen = int(seg.block.counters[C_PID])
        assert seg.block.counters[C_EVENTS_OUT] == 12345 and child_pid_seen not in (0, os.getpid())
        assert seg.block.counters[C_STATE] == ST_RUNNING and seg.block.counters[C_HEARTBEAT_NS] > 0
    finally:
        seg.close()
        seg.unlink()


def test_interval_view_and_stage_stats(run_id):
    seg = create_block(run_id, "risk", ["service", "e2e"])
    try:
        c, h = seg.block.counters, seg.block.hists
        tm_start(c, 0)
        for v in range(1, 201):
            hist_record(h[0], v * 10)
        tm_add(c, C_EVENTS_IN, 200)
        s0 = snapshot(seg, t_ns=1_000_000_000)
        for v in range(1, 101):
            hist_record(h[0], 5000 + v)
        tm_add(c, C_EVENTS_IN, 100)
        tm_add(c, C_EVENTS_OUT, 50)
        tm_busy(c, 0, 250_000_000)
        s1 = snapshot(seg, t_ns=1_500_000_000)
        iv = interval(s0, s1)
        assert iv.t_ns == 500_000_000
        assert iv.counters[C_EVENTS_IN] == 100 and iv.counters[C_PID] == os.getpid()  # gauge copied
        assert iv.hists[0, H_TOTAL] == 100 and iv.hists[1, H_TOTAL] == 0
        st = stage_stats(seg, iv, s1)
        assert st.in_rate == pytest.approx(200.0) and st.out_rate == pytest.approx(100.0)
        assert st.useful_pct == pytest.approx(50.0)
        assert st.events_in == 300 and st.pid == os.getpid()
        ivs, tot = st.interval_hists["service"], st.total_hists["service"]
        assert ivs.count == 100 and list(ivs.percentiles) == [50.0, 90.0, 99.0]  # no p99.9 at 100 samples
        assert ivs.percentiles[50.0] == hist_value_at_percentile(iv.hists[0], 50.0)
        assert 5000 < ivs.percentiles[50.0] < 5101 and ivs.max_ns == 5100
        assert tot.count == 300 and tot.max_ns == 5100
        assert st.interval_hists["e2e"].count == 0 and st.interval_hists["e2e"].percentiles == {}
    finally:
        seg.close()
        seg.unlink()


@njit(cache=True, nogil=True)
def _write_risk(risk):
    risk_set_state(risk, TS_HALTED, 3, 17, 123)
    risk_set_totals(risk, 12.5, -3.25, 0.75)
    risk_set_position(risk, 1, -40, 10050.5, 2.0, -1.5)
    risk_set_position(risk, 9, 1, 1.0, 1.0, 1.0)  # no such symbol: ignored


def test_risk_state_round_trip(run_id):
    seg = create_block(run_id, "risk", ["service"], risk_symbols=2)
    try:
        _write_risk(seg.block.risk)
        obs = attach_block(seg.name)
        try:
            rs = risk_state(obs.block.risk, ["BTCUSDT", "ETHUSDT"])
        finally:
            obs.close()
        assert rs.trading_state == "HALTED" and rs.open_orders == 3 and rs.rejects == 17
        assert (rs.realized_pnl, rs.unrealized_pnl, rs.fees, rs.updated_ns) == (12.5, -3.25, 0.75, 123)
        assert rs.positions == [
            {"symbol": "ETHUSDT", "position": -40, "avg_price": 10050.5, "realized": 2.0, "unrealized": -1.5}
        ]
    finally:
        seg.close()
        seg.unlink()
    none = create_block(run_id, "book", ["service"])
    try:
        assert none.block.risk.shape == (0,) and risk_state(none.block.risk) is None
    finally:
        none.close()
        none.unlink()


@pytest.mark.parametrize(
    ("run", "stage", "match"),
    [("a-b", "book", "bad run id"), ("r1", "bo ok", "bad stage name"), ("", "x", "bad run id")],
)
def test_bad_names_are_rejected(run, stage, match):
    with pytest.raises(BlockError, match=match):
        block_name(run, stage)


def test_bad_blocks_are_rejected(run_id, shm_name):
    with pytest.raises(BlockError, match="unique"):
        create_block(run_id, "x", ["a", "a"])
    with pytest.raises(BlockError, match="not found"):
        attach_block(block_name(run_id, "nope"))
    seg = create_segment(shm_name, 8192)
    try:
        with pytest.raises(BlockError, match="bad magic"):
            attach_block(shm_name)
    finally:
        seg.close()
        unlink_segment(shm_name)
    ok = create_block(run_id, "dup", ["s"])
    try:
        with pytest.raises(Exception, match="already exists"):
            create_block(run_id, "dup", ["s"])
    finally:
        ok.close()
        ok.unlink()


def _manifest(run_id: str, pid: int) -> Manifest:
    return Manifest(
        run_id=run_id,
        engine_pid=pid,
        start_ns=time.monotonic_ns(),
        start_unix=1.7e9,
        cpus=[0, 1],
        workers=[WorkerInfo(name="w0", cpu=0, wait="spin", stages=["feed", "book"])],
        stages=[StageInfo(name="feed", block=block_name(run_id, "feed"), worker="w0", cpu=0, outputs=["md"])],
        rings=[RingInfo(name="md", segment=f"hean-{run_id}-ring-md", producer="feed", consumer="book")],
        risk_block=block_name(run_id, "risk"),
        symbols=["BTCUSDT"],
    )


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    return p.pid


def test_manifest_round_trip_and_find_run(run_id):
    m = _manifest(run_id, os.getpid())
    name = write_manifest(m)
    try:
        assert name == manifest_name(run_id) == f"hean-{run_id}-manifest"
        assert read_manifest(run_id) == m
        assert find_run(run_id) == m
        mine = [r for r in list_runs() if r.run_id == run_id]
        assert len(mine) == 1 and mine[0].alive and mine[0].manifest == m
        with pytest.raises(Exception, match="already exists"):
            write_manifest(m)
    finally:
        assert remove_manifest(run_id)
    with pytest.raises(ManifestError, match="no run"):
        read_manifest(run_id)


def test_find_run_messages(run_id):
    others_alive = [r for r in list_runs() if r.alive]
    stale_id, a_id, b_id = run_id + "s", run_id + "a", run_id + "b"
    write_manifest(_manifest(stale_id, _dead_pid()))
    try:
        with pytest.raises(ManifestError, match="not running"):
            find_run(stale_id)
        stale = [r for r in list_runs() if r.run_id == stale_id]
        assert len(stale) == 1 and not stale[0].alive
        if not others_alive:  # the machine may have a real engine running: then skip only these two checks
            with pytest.raises(ManifestError, match=f"no HEAN engine is running.*{stale_id}"):
                find_run()
            write_manifest(_manifest(a_id, os.getpid()))
            assert find_run().run_id == a_id
        else:
            write_manifest(_manifest(a_id, os.getpid()))
        write_manifest(_manifest(b_id, os.getpid()))
        with pytest.raises(ManifestError, match="engines are running"):
            find_run()
    finally:
        for rid in (stale_id, a_id, b_id):
            remove_manifest(rid)


def test_tm_block_module_documents_every_counter():
    doc = tb.__doc__
    for name in ("C_EVENTS_IN", "C_RING_FULL", "C_SEQ_GAPS", "C_BUSY_NS", "C_HEARTBEAT_NS", "R_TRADING_STATE"):
        assert name in doc, name
    assert set(tb.COUNTER_NAMES.values()) == set(range(19))
