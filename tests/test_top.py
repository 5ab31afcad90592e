"""``hean top``: rendering from a fabricated telemetry segment + manifest, the live loop's exits, and a
view of a short run in another process (a stand-in engine writing telemetry) that ends by itself."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from rich.console import Console

from hean.atomics import now_ns
from hean.commands.views.top import pcts, render, run_top
from hean.commands.views.units import fmt_rate
from hean.records import BOOK_STATE, MARKET_EVENT
from hean.rings import create as create_ring
from hean.shm import unlink_segment
from hean.telemetry.block import (
    C_DROPS,
    C_EVENTS_IN,
    C_EVENTS_OUT,
    TS_ACTIVE,
    block_name,
    create_block,
    risk_set_position,
    risk_set_state,
    risk_set_totals,
    tm_add,
    tm_busy,
    tm_reject,
    tm_start,
)
from hean.telemetry.histogram import hist_record
from hean.telemetry.manifest import (
    Manifest,
    RingInfo,
    StageInfo,
    WorkerInfo,
    manifest_name,
    read_manifest,
    remove_manifest,
    write_manifest,
)
from hean.telemetry.top import TopSource

_ids = itertools.count()
STAGES = {  # stage -> histograms
    "feed": ["service"],
    "book": ["service", "queue.md"],
    "risk": ["service", "age.bs"],  # the engine's convention: age = now - ts_origin at take
    "router": ["service", "queue.orders", "e2e"],
}


@njit(cache=True, nogil=True)
def _work(tm, n, base, e2e_row):
    """n events through one stage: counters, service 'base + i' ns, queue 2*base, e2e 10*base."""
    t = now_ns()
    for i in range(n):
        tm_add(tm.counters, C_EVENTS_IN, 1)
        tm_add(tm.counters, C_EVENTS_OUT, 1)
        hist_record(tm.hists[0], base + i % 100)
        if tm.hists.shape[0] > 1:
            hist_record(tm.hists[1], 2 * base)
        if e2e_row >= 0:
            hist_record(tm.hists[e2e_row], 10 * base + i % 1000)
        tm_busy(tm.counters, t, t + base)


@njit(cache=True, nogil=True)
def _risk(tm):
    risk_set_state(tm.risk, TS_ACTIVE, 2, 3, now_ns())
    risk_set_totals(tm.risk, 125.5, -10.25, 1.5)
    risk_set_position(tm.risk, 0, 3, 65000.0, 100.0, -10.25)
    tm_reject(tm.counters, 1)
    tm_reject(tm.counters, 1)
    tm_reject(tm.counters, 2)


class Fabricated:
    """A fake run in this process: blocks, one real ring, a manifest whose engine pid is ``pid``."""

    def __init__(self, pid: int | None = None):
        self.run_id = f"top{os.getpid()}_{next(_ids)}"
        self.blocks = {}
        self.ring = None
        self.ring2 = None
        self.pid = pid or os.getpid()

    def __enter__(self):
        rid = self.run_id
        try:
            for i, (stage, hists) in enumerate(STAGES.items()):
                seg = create_block(rid, stage, hists, risk_symbols=2 if stage == "risk" else 0)
                self.blocks[stage] = seg
                tm_start(seg.block.counters, i % 2)
            self.ring = create_ring(f"hean-{rid}-ring-md", MARKET_EVENT, 64, role="producer")
            self.ring.push(np.zeros(10, MARKET_EVENT))
            self.ring2 = create_ring(f"hean-{rid}-ring-bs", BOOK_STATE, 32)
            write_manifest(
                Manifest(
                    run_id=rid, engine_pid=self.pid, start_ns=time.monotonic_ns() - 65 * 10**9,
                    start_unix=time.time(), cpus=[0, 1],
                    workers=[WorkerInfo(name="w0", cpu=0, wait="spin", stages=["feed", "book"]),
                             WorkerInfo(name="w1", cpu=1, wait="spin", stages=["risk", "router"])],
                    stages=[StageInfo(name=s, block=block_name(rid, s)) for s in STAGES]
                    + [StageInfo(name="venue", block=block_name(rid, "venue"))],  # never created
                    rings=[RingInfo(name="md", segment=self.ring.name, producer="feed", consumer="book"),
                           RingInfo(name="bs", segment=self.ring2.name, producer="book", consumer="risk"),
                           RingInfo(name="orders", segment=f"hean-{rid}-ring-orders", producer="risk",
                                    consumer="router")],
                    risk_block=block_name(rid, "risk"), symbols=["BTCUSDT", "ETHUSDT"],
                    reject_reasons=["none", "max_position", "max_notional"],
                )
            )  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        return self

    def work(self, n: int) -> None:
        for stage, seg in self.blocks.items():
            e2e = seg.hist_names.index("e2e") if "e2e" in seg.hist_names else -1
            _work(seg.block, n, {"feed": 200, "book": 300, "risk": 400, "router": 500}[stage], e2e)

    def __exit__(self, *exc):
        remove_manifest(self.run_id)
        for seg in self.blocks.values():
            seg.close()
            seg.unlink()
        for ring in (self.ring, self.ring2):
            if ring is not None:
                ring.close()
                unlink_segment(ring.name)


def _text(renderable, width: int = 260) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_render_from_fabricated_segments_shows_every_row():
    with Fabricated() as fab:
        fab.work(5_000)
        _risk(fab.blocks["risk"].block)
        tm_add(fab.blocks["book"].block.counters, C_DROPS, 4)
        source = TopSource(read_manifest(fab.run_id))
        try:
            source.sample()
            fab.work(50)  # 50 samples in the interval: p50 supported, p99 and p99.9 hidden
            frame = source.sample()
        finally:
            source.close()
        text = _text(render(frame))
    lines = text.splitlines()
    assert f"run {fab.run_id}" in lines[0] and f"engine pid {os.getpid()}" in lines[0]
    assert "uptime 00:01:0" in lines[0] and "clock CLOCK_MONOTONIC" in lines[0] and "CPUs 0,1" in lines[0]
    assert "w0@cpu0[feed,book] spin" in text and "w1@cpu1[risk,router] spin" in text
    cells = [(line.strip("│ ").split() or [""])[0] for line in lines]
    rows = {c: line for c, line in zip(cells, lines, strict=True) if c in (*STAGES, "venue")}
    assert set(rows) == {*STAGES, "venue"}
    by_stage = {r.info.name: r for r in frame.stages}
    for stage in STAGES:
        s = by_stage[stage].stats
        assert s.events_in == 5_050 and s.in_rate > 0 and s.out_rate > 0
        assert s.interval_hists["service"].count == 50
        assert list(s.interval_hists["service"].percentiles) == [50.0, 90.0]
        assert fmt_rate(s.in_rate) in rows[stage] and " run " in rows[stage]
        assert pcts(s.interval_hists["service"]) in rows[stage]  # p50 / - / - / max
        assert pcts(s.interval_hists["service"]).split(" / ")[1:3] == ["-", "-"]
        assert str(os.getpid()) in rows[stage]
    assert pcts(by_stage["feed"].stats.total_hists["service"]).count("-") == 0  # 5,050 samples: p99.9 shown
    assert "no telemetry block yet" in rows["venue"]
    assert by_stage["book"].stats.drops == 4
    # rings: the real one with its fill, the missing one with a reason
    ring_lines = [line for line in lines if any(r in line for r in ("feed -> book", "book -> risk", "risk -> r"))]
    assert "10/64" in ring_lines[0] and "█" in ring_lines[0] and "queue" in ring_lines[0]
    assert "0/32" in ring_lines[1] and "age" in ring_lines[1]  # the consumer keeps age.bs, not queue.bs
    assert "missing (no segment)" in ring_lines[2]
    md = frame.rings[0]
    assert (md.fill, md.capacity, md.high_water >= 0) == (10, 64, True) and md.queue.count == 50
    # end to end, from the router's e2e histogram
    e2e = next(line for line in lines if "tick-to-trade (router)" in line)
    assert "50" in e2e and frame.e2e_interval.count == 50 and frame.e2e_total.count == 5_050
    # risk
    assert "trading ACTIVE" in text and "open orders 2" in text and "rejects 3" in text
    assert "realized 125.50" in text and "unrealized -10.25" in text
    assert "rejects by reason: max_position 2, max_notional 1" in text
    assert "BTCUSDT: position 3 lots @ 65,000.00" in text and "ETHUSDT" not in text


def test_render_hides_unsupported_percentiles_and_draws_a_sparkline():
    with Fabricated() as fab:
        source = TopSource(read_manifest(fab.run_id))
        try:
            source.sample()
            frames = []
            for n in (200, 400, 800):
                fab.work(n)
                frames.append(source.sample())
        finally:
            source.close()
    f = frames[-1]
    assert len(f.e2e_p99_history) == 3
    text = _text(render(f))
    e2e = next(line for line in text.splitlines() if "tick-to-trade (router)" in line)
    assert any(ch in e2e for ch in "▁▂▃▄▅▆▇█")
    svc = next(r for r in f.stages if r.info.name == "feed").stats.interval_hists["service"]
    assert svc.count == 800 and 99.0 in svc.percentiles and 99.9 not in svc.percentiles


def _run_top_in_thread(run_id, **kw):
    out = io.StringIO()
    console = Console(file=out, width=240, color_system=None)
    frames, result = [], {}

    def go():
        result["rc"] = run_top(run_id, console=console, on_frame=frames.append, read_keys=False, **kw)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, out, frames, result


def test_run_top_stops_after_duration_and_at_most_4_hz():
    with Fabricated() as fab:
        fab.work(100)
        t0 = time.monotonic()
        th, out, frames, result = _run_top_in_thread(fab.run_id, duration=1.0, refresh_hz=50)
        th.join(timeout=30)
        elapsed = time.monotonic() - t0
    assert not th.is_alive() and result["rc"] == 0
    assert 2 <= len(frames) <= 4 * elapsed + 2  # refresh capped at 4 Hz even when 50 is asked
    assert "feed" in out.getvalue() and "tick-to-trade" in out.getvalue()


@pytest.mark.parametrize("how", ["engine exits", "manifest removed"])
def test_run_top_exits_when_the_engine_stops(how):
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Fabricated(pid=engine.pid) as fab:
            th, out, frames, result = _run_top_in_thread(fab.run_id, duration=30)
            deadline = time.monotonic() + 20
            while not frames and time.monotonic() < deadline:
                time.sleep(0.05)
            assert frames, "run_top produced no frame"
            if how == "engine exits":
                engine.kill()
                engine.wait(timeout=10)
            else:
                remove_manifest(fab.run_id)
            th.join(timeout=20)
            assert not th.is_alive(), "run_top did not notice the engine stopped"
    finally:
        engine.kill()
        engine.wait(timeout=10)
    assert result["rc"] == 0
    reason = f"engine pid {engine.pid} exited" if how == "engine exits" else "manifest removed"
    assert f"\nhean top: run {fab.run_id} ended ({reason})" in out.getvalue()
    assert frames[-1].status.startswith(f"run {fab.run_id} ended")


def test_run_top_without_a_run_says_so_on_stderr(capsys):
    out = io.StringIO()
    rc = run_top("nosuchrun123", console=Console(file=out, width=200), read_keys=False)
    assert rc == 1 and "no run 'nosuchrun123'" in capsys.readouterr().err and out.getvalue() == ""


ENGINE = str(Path(__file__).with_name("fake_engine.py"))


def test_top_attached_to_a_short_run_in_another_process():
    run_id = f"toprun{os.getpid()}"
    engine = subprocess.Popen([sys.executable, ENGINE, run_id, "2.5"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(f"/dev/shm/{manifest_name(run_id)}"):
            assert engine.poll() is None, f"engine died: {engine.stderr.read()}"
            assert time.monotonic() < deadline, "engine did not publish its manifest"
            time.sleep(0.02)
        th, out, frames, result = _run_top_in_thread(run_id, duration=30)
        th.join(timeout=40)
        assert not th.is_alive(), "hean top did not exit when the run ended"
        assert engine.wait(timeout=30) == 0, engine.stderr.read()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(timeout=10)
        remove_manifest(run_id)
        for stage in ("feed", "router"):
            unlink_segment(block_name(run_id, stage))
    assert result["rc"] == 0 and f"run {run_id} ended" in out.getvalue()
    live = [f for f in frames if all(r.stats is not None for r in f.stages)]
    seen = [(f.status, [(r.info.name, r.error) for r in f.stages]) for f in frames]
    assert live, f"no frame saw both stages: {seen}"
    busy = [f for f in live if all(r.stats.out_rate > 0 for r in f.stages)]
    assert busy, "no frame showed every stage with a non-zero rate"
    assert busy[0].e2e_stage == "router" and busy[0].e2e_total.count > 0
    assert {r.info.name for r in busy[0].stages} == {"feed", "router"}


def test_cli_top_once_and_list(capsys):
    from hean.cli import main

    with Fabricated() as fab:
        fab.work(100)
        assert main(["top", fab.run_id, "--once", "--interval", "0.05"]) == 0
        out = capsys.readouterr().out
        # an 80-column console gets the narrow layout: every stage still has its own unbroken row
        assert f"run {fab.run_id}" in out and "e2e (router)" in out
        for stage in STAGES:
            assert f"│ {stage} " in out, stage
        assert main(["top", "--list"]) == 0
        me = os.getpid()
        assert f"{fab.run_id}  a live run (supervisor pid {me}; processes {me})" in capsys.readouterr().out
    assert main(["top", fab.run_id, "--once"]) == 1
    assert f"no run '{fab.run_id}'" in capsys.readouterr().err  # errors to stderr


@pytest.mark.parametrize(("width", "wide_only", "narrow_only"), [
    (80, [], ["e2e (router)"]),
    (130, ["cpu pin/last", "tick-to-trade (router)"], []),
    (200, ["since start", "ctxsw/s", "cpu pin/last"], []),
])  # fmt: skip
def test_layout_adapts_to_the_console_width(width, wide_only, narrow_only):
    with Fabricated() as fab:
        fab.work(300)
        source = TopSource(read_manifest(fab.run_id))
        try:
            frame = source.sample()
        finally:
            source.close()
    text = _text(render(frame), width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    for s in wide_only + narrow_only:
        assert s in text, s
    for stage in (*STAGES, "md", "bs", "orders"):
        assert f"│ {stage} " in text, stage
    if width < 185:
        assert "since start" not in text and "ctxsw/s" not in text


def test_cli_top_clean_removes_only_stale_runs(capsys):
    """A run is stale when none of its processes is left (not when its manifest says a dead pid): --list says
    which, and --clean removes the stale one's every segment and temp folder, and nothing of the live one."""
    from dead_run import leave_dead_run

    from hean.cli import main

    with Fabricated() as live:
        stale_id = live.run_id + "_dead"
        names, folder = leave_dead_run(stale_id)
        try:
            assert main(["top", "--list"]) == 0
            listed = capsys.readouterr().out
            assert f"{stale_id}  a stale run (no process of it is left)" in listed
            assert f"{live.run_id}  a live run (supervisor pid {os.getpid()}; processes {os.getpid()})" in listed
            assert main(["top", live.run_id, "--clean"]) == 0
            out = capsys.readouterr().out
            assert f"kept run {live.run_id}: a live run" in out and "nothing stale to remove" in out
            assert main(["top", stale_id, "--clean"]) == 0
            out = capsys.readouterr().out
            for name in names:
                assert f"removed /dev/shm/{name} (run {stale_id}: no process of it is left)" in out, name
            assert f"removed {folder} " in out
            assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"hean-{stale_id}-")]
            assert not os.path.exists(folder)
            assert os.path.exists(f"/dev/shm/{manifest_name(live.run_id)}")
        finally:
            for name in names:
                unlink_segment(name)
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def test_a_live_feed_shows_its_counters_and_stale_symbols():
    """The feed's live_* words (the supervisor copies the live client's counters there): a `live feed` panel,
    with the stale symbols in it; a feed without them (or with none set) shows none."""
    from hean.stages.feed import FEED, LIVE_COUNTERS

    rid = f"top{os.getpid()}_{next(_ids)}"
    seg = create_block(rid, "feed", ["service"], user_counters=list(FEED.user_counters))
    try:
        write_manifest(
            Manifest(run_id=rid, engine_pid=os.getpid(), start_ns=time.monotonic_ns(), start_unix=time.time(),
                     cpus=[0], workers=[WorkerInfo(name="w0", cpu=0, wait="spin", stages=["feed"])],
                     stages=[StageInfo(name="feed", block=block_name(rid, "feed"))], rings=[], risk_block=None,
                     symbols=["BTCUSDT"])
        )  # fmt: skip
        source = TopSource(read_manifest(rid))
        try:
            assert source.sample().live == {}  # nothing connected yet: no panel
            values = dict.fromkeys(LIVE_COUNTERS, 0)
            values |= {"live_frames": 12_345, "live_connects": 2, "live_disconnects": 1, "live_gaps": 3}
            values["live_stale_symbols"] = 1
            for name, v in values.items():
                seg.block.counters[seg.user_counter(name)] = v
            frame = source.sample()
        finally:
            source.close()
        text = _text(render(frame))
    finally:
        remove_manifest(rid)
        seg.close()
        seg.unlink()
    assert frame.live["frames"] == 12_345 and frame.live["stale_symbols"] == 1
    assert "live feed" in text and "frames 12,345" in text and "stale symbols 1" in text
    assert "disconnects 1" in text and "gaps 3" in text
