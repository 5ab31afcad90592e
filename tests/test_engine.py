"""The running engine, end to end on this machine's CPUs: runs, determinism across placements, dead
workers, signals, replay, and no segment left behind (the conftest fixture checks every test)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from conftest import data_file

from hean.engine.config import STAGES, PlacementSection, load_config
from hean.engine.placement import plan_placement
from hean.engine.summary import build_summary
from hean.engine.supervisor import Supervisor
from hean.records import EventKind, RejectReason
from hean.telemetry.block import C_USER_BASE

FUSED = [list(STAGES)]
SPLIT = [[s] for s in STAGES]
TWO = [["feed"], ["book", "strategy", "risk", "router", "venue"]]


def run(overrides: dict, cpus=None, progress=None):
    cfg = load_config(overrides=overrides)
    result = Supervisor(cfg, cpus=cpus, progress=progress).run()
    summary = build_summary(result, [s.name for s in cfg.symbols], {int(r): r.name for r in RejectReason})
    return result, summary


def digests(result) -> tuple[int, int]:
    c = result.telemetry["router"]["counters"]
    return int(c[C_USER_BASE]), int(c[C_USER_BASE + 1])


@pytest.mark.timeout(300)
def test_default_run_trades_and_measures():
    result, s = run({"engine.duration_s": 2.0})
    assert result.exit_code == 0, s["error"]
    assert s["reason"] == "duration"
    assert s["events"] > 10_000  # 100k msgs/s for 2 s, minus start-up
    assert s["orders"] > 0 and s["fills"] > 0
    t2t = s["tick_to_trade_ns"]
    assert t2t["count"] == s["orders"]
    assert 0 < t2t["p50"] <= t2t["max"]
    for stage in STAGES:
        assert s["stages"][stage]["events_in"] > 0 or stage == "feed", stage
    assert s["pnl"]["trading_state"] in ("ACTIVE", "REDUCING", "HALTED")
    # the default placement for this machine's CPUs (on two: everything fused on the second CPU)
    assert s["placement"]["workers"] == plan_placement(PlacementSection()).describe()["workers"]
    # the cold-start compile claims (hean.engine.warm) are removed with the run
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"hean-{result.run_id}-compile-*"))
    late = s["stages"]["feed"]["late_ns"]
    assert late["count"] == s["messages"] and 0 <= late["p50"] <= late["max"]
    assert all(st["preempted"] >= 0 for st in s["stages"].values())


@pytest.mark.timeout(300)
def test_supervisor_moves_off_the_workers_cpus_while_it_runs():
    """With a CPU no worker is pinned to, the supervisor runs there during the run (its wake-ups then never
    preempt a worker); with none free it stays where it was. Either way it gets its own mask back."""
    before = os.sched_getaffinity(0)
    seen = []
    result, s = run(
        {"engine.duration_s": 1.0, "placement.workers": FUSED},
        progress=lambda sup, t: seen.append(os.sched_getaffinity(0)),
    )
    assert result.exit_code == 0, s["error"]
    worker_cpu = s["placement"]["workers"][0]["cpu"]
    spare = before - {worker_cpu}
    assert seen and all(mask == (spare or before) for mask in seen)
    assert os.sched_getaffinity(0) == before


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [SPLIT, TWO], ids=["one-per-stage", "two-workers"])
def test_placements_are_deterministic_in_lockstep(workers):
    base = {
        "engine.lockstep": True,
        "engine.duration_s": 0.0,
        "feed.pace": "fast",
        "feed.max_messages": 4000,
        "feed.seed": 7,
    }
    fused, fs = run({**base, "placement.workers": FUSED})
    other, os_ = run({**base, "placement.workers": workers})
    assert fused.exit_code == 0 and other.exit_code == 0, (fs["error"], os_["error"])
    assert fs["reason"] == os_["reason"] == "feed-done"
    assert fs["events"] == os_["events"] > 4000
    assert fs["orders"] > 10 and fs["fills"] > 0
    assert (fs["orders"], fs["fills"], fs["rejects"]) == (os_["orders"], os_["fills"], os_["rejects"])
    assert digests(fused) == digests(other)
    assert fs["pnl"]["positions"] == os_["pnl"]["positions"]
    assert fs["pnl"]["realized"] == pytest.approx(os_["pnl"]["realized"], rel=0, abs=1e-9)


@pytest.fixture
def spawn(tmp_path):
    """Start ``hean ARGS --json OUT --quiet`` in a process; every one started is killed at teardown."""
    procs = []

    def start(args):
        out = tmp_path / f"summary{len(procs)}.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hean", *args, "--json", str(out), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc, out

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for_run(proc, timeout=120.0):
    from hean.telemetry.manifest import ManifestError, list_runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            runs = [r for r in list_runs() if r.alive and r.manifest.engine_pid == proc.pid]
        except ManifestError:
            runs = []
        if runs and all(w.pid for w in runs[0].manifest.workers):
            from hean.stages.feed import U_MESSAGES
            from hean.telemetry.block import attach_block, block_name

            seg = attach_block(block_name(runs[0].run_id, "feed"))
            sent = int(seg.block.counters[U_MESSAGES])
            seg.close()
            if sent > 100:
                return runs[0].manifest
        time.sleep(0.05)
    raise AssertionError("the run did not start")


def _hean(*args: str) -> subprocess.CompletedProcess:
    """One short ``hean`` command (stop, halt, ...) against a running engine."""
    return subprocess.run([sys.executable, "-m", "hean", *args], capture_output=True, text=True)


def _finish(proc, timeout=60.0):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return proc.returncode, out, err


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_of_a_worker_halts_and_names_the_stage(stage, spawn):
    proc, out = spawn(["run", "--duration", "60"])
    m = _wait_for_run(proc)
    # one process per stage on this machine's CPUs: kill the one running `stage`
    worker = next(w for w in m.workers if stage in w.stages)
    os.kill(worker.pid, signal.SIGKILL)
    code, stdout, stderr = _finish(proc)
    assert code == 3, stderr
    assert stage in stderr and "died" in stderr and "signal 9" in stderr, stderr
    summary = json.loads(out.read_text())
    assert summary["reason"] == "worker-died"


@pytest.mark.timeout(300)
def test_hean_stop_drains_and_exits_cleanly(spawn):
    proc, out = spawn(["run", "--duration", "0"])
    m = _wait_for_run(proc)
    stop = _hean("stop", m.run_id)
    assert stop.returncode == 0, stop.stderr
    code, stdout, stderr = _finish(proc)
    assert code == 0, stderr
    summary = json.loads(out.read_text())
    assert summary["reason"] == "signal SIGTERM"
    assert summary["events"] > 100


@pytest.mark.timeout(300)
def test_sigint_stops_like_hean_stop(spawn):
    proc, out = spawn(["run", "--duration", "0"])
    _wait_for_run(proc)
    proc.send_signal(signal.SIGINT)
    code, stdout, stderr = _finish(proc)
    assert code == 0, stderr
    assert json.loads(out.read_text())["reason"] == "signal SIGINT"


@pytest.mark.timeout(300)
def test_replay_of_the_binance_recording_to_the_end():
    path = data_file("binance-usdm-btcusdt-20240808.gz")
    from hean.feeds import load_events

    events, report = load_events(str(path), "binance-usdm")
    cfg_over = {
        "feed.source": "replay",
        "feed.path": str(path),
        "feed.format": "binance-usdm",
        "feed.pace": "fast",
        "engine.duration_s": 0.0,
        "strategy.params": {"quote_qty": 1},
    }
    result, s = run(cfg_over)
    assert result.exit_code == 0, s["error"]
    assert s["reason"] == "feed-done"
    assert s["events"] == len(events)
    # every event reaches the book and the venue but the bookTicker quotes the deterministic feed passed over
    # (a message of TICKER events only, which no stage acts on: hean.stages.feed._pass_over)
    tickers = int(np.count_nonzero(events["kind"] == EventKind.TICKER))
    assert len(events) - tickers <= s["stages"]["book"]["events_in"] < len(events)
    assert s["stages"]["venue"]["events_in"] >= s["stages"]["book"]["events_in"]  # (and CLOCK records)
    assert s["orders"] > 0
    # the rate counts the feed's own publishing time, first message to last, not the supervisor's next look
    from hean.stages.feed import U_FIRST_NS, U_LAST_NS

    c = result.telemetry["feed"]["counters"]
    first, last = int(c[U_FIRST_NS]), int(c[U_LAST_NS])
    assert last > first > 0 and result.feed_s == (last - first) / 1e9
    assert s["feed_s"] == round(result.feed_s, 3) and s["feed_s"] < result.elapsed_s


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[engine]\nring_capacity = 100\n", "engine.ring_capacity"),
        ("[risk]\nmax_positon = 5\n", "unknown key 'risk.max_positon'"),
        ("[risk]\nmax_position = -5\n", "max_position"),
        ("[strategy]\nname = 'nope'\n", "nope"),
        ("[placement]\ncpus = [0, 4096]\n", "placement.cpus"),
    ],
)
def test_bad_configuration_is_one_clear_message(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "hean", "run", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "configuration error" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
def test_hean_top_attached_to_a_real_run_sees_every_stage_and_exits_with_it(spawn):
    import io

    from rich.console import Console

    from hean.commands.views.top import render, run_top

    proc, out = spawn(["run", "--duration", "4", "--rate", "50000"])
    frames = []
    m = _wait_for_run(proc)
    console = Console(record=True, width=200, file=io.StringIO())
    rc = run_top(m.run_id, console=console, read_keys=False, duration=60, on_frame=frames.append)
    code, stdout, stderr = _finish(proc)
    assert rc == 0 and code == 0, stderr
    assert frames[-1].status  # it left because the engine stopped, not because of the 60 s limit
    live = [f for f in frames if not f.status and all(r.stats is not None for r in f.stages)]
    assert live, "no frame while the run was live"
    busy = live[len(live) // 2]
    rows = {r.info.name: r.stats for r in busy.stages}
    assert set(rows) == set(STAGES)
    assert rows["feed"].out_rate > 0
    for stage in ("book", "strategy", "risk", "router", "venue"):
        assert rows[stage].in_rate > 0, stage
    text = Console(record=True, width=200, file=io.StringIO())
    text.print(render(busy))
    screen = text.export_text()
    for stage in STAGES:
        assert stage in screen


@pytest.mark.timeout(300)
def test_hean_metrics_scraped_during_a_run_has_every_stage_and_its_counters_grow(spawn):
    pytest.importorskip("prometheus_client", reason="prometheus-client is in the test extra")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from hean.telemetry.metrics import EngineCollector

    proc, out = spawn(["run", "--duration", "5", "--rate", "50000"])
    m = _wait_for_run(proc)
    registry = CollectorRegistry(auto_describe=False)
    collector = EngineCollector()
    registry.register(collector)

    def scrape() -> dict:
        fams = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
        return {(f.name, s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "run"))): s.value
                for f in fams.values() for s in f.samples if s.labels.get("run") == m.run_id}  # fmt: skip

    first = scrape()
    time.sleep(1.0)
    second = scrape()
    collector.close()
    top = subprocess.run([sys.executable, "-m", "hean", "top", m.run_id, "--once", "--interval", "0.2", "--json", "-"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert top.returncode == 0, top.stderr + top.stdout
    frame = json.loads(top.stdout)  # --json -: the JSON alone on stdout (the same convention as every command)
    assert [r["info"]["name"] for r in frame["stages"]] == list(STAGES) and frame["manifest"]["run_id"] == m.run_id
    code, stdout, stderr = _finish(proc)
    assert code == 0, stderr
    for stage in STAGES:
        key = ("hean_stage_events_in", "hean_stage_events_in_total", (("stage", stage),))
        if stage != "feed":
            assert second[key] > first[key] > 0, stage
        assert ("hean_stage_heartbeat_age_seconds", "hean_stage_heartbeat_age_seconds", (("stage", stage),)) in second
        buckets = [k for k in second if k[1] == "hean_stage_latency_seconds_bucket" and ("stage", stage) in k[2]
                   and ("hist", "service") in k[2]]  # fmt: skip
        assert len(buckets) == 20, stage  # 19 bounds and +Inf
    out_feed = ("hean_stage_events_out", "hean_stage_events_out_total", (("stage", "feed"),))
    assert second[out_feed] > first[out_feed] > 0
    e2e = ("hean_stage_latency_seconds", "hean_stage_latency_seconds_count", (("hist", "e2e"), ("stage", "router")))
    assert second[e2e] > first[e2e] > 0, "tick-to-trade samples grow"
    inf = ("hean_stage_latency_seconds", "hean_stage_latency_seconds_bucket",
           (("hist", "e2e"), ("le", "+Inf"), ("stage", "router")))  # fmt: skip
    assert second[inf] == second[e2e]
    assert ("hean_risk_trading_state", "hean_risk_trading_state", (("state", "ACTIVE"),)) in second
    assert any(k[0] == "hean_ring_fill" for k in second)


@pytest.mark.timeout(300)
def test_start_up_tells_how_many_stages_are_ready():
    calls = []
    cfg = load_config(overrides={"engine.duration_s": 0.5})
    r = Supervisor(cfg, startup=lambda sup, done, total, elapsed: calls.append((done, total, elapsed))).run()
    assert r.exit_code == 0, r.error
    assert calls and calls[-1][:2] == (len(STAGES) + 1, len(STAGES) + 1), "the last call: every stage and the loop"
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and all(0 <= d <= t for d, t, _ in calls)


@pytest.mark.timeout(300)
def test_run_time_controls_are_applied_acknowledged_and_recorded(tmp_path, spawn):
    from hean.shm import attach_segment

    at = time.time() + 8
    reset = time.strftime("%H:%M:%S", time.gmtime(at))  # while the run goes on (due at once if start-up is slower)
    cfg = tmp_path / "controls.toml"
    cfg.write_text(f'[engine]\ndaily_reset_utc = "{reset}"\n')
    proc, out = spawn(["run", "--duration", "60", "--rate", "20000", "--config", str(cfg)])
    m = _wait_for_run(proc)
    seg = attach_segment(f"hean-{m.run_id}-rstate")
    try:
        rstate = seg.array(np.int64)

        def hean(*args):
            return subprocess.run([sys.executable, "-m", "hean", *args], capture_output=True, text=True, timeout=60)

        def state_of(sym, want, timeout=10.0):  # risk publishes the trading states at its heartbeat
            deadline = time.monotonic() + timeout
            while int(rstate[sym]) != want and time.monotonic() < deadline:
                time.sleep(0.05)
            return int(rstate[sym])

        r = hean("halt", m.run_id, "--symbol", "SYN-A")
        assert r.returncode == 0 and "halt symbol SYN-A" in r.stdout, r.stderr
        assert state_of(0, 2) == 2 and state_of(1, 0) == 0, "SYN-A HALTED, SYN-B still ACTIVE"
        r = hean("risk", "set", "max_position_units", "0.5", m.run_id, "--symbol", "SYN-B")
        assert r.returncode == 1 and "refused: max_position_units: 0.5 is not a whole number of lots of 1" in r.stderr
        r = hean("risk", "set", "rate_total", "5", m.run_id)
        assert r.returncode == 0 and "set rate_total of every symbol to 5" in r.stdout, r.stderr
        r = hean("resume", m.run_id, "--symbol", "SYN-A")
        assert r.returncode == 0 and state_of(0, 0) == 0, r.stderr
        time.sleep(max(0.0, at + 1.5 - time.time()))  # the supervisor looks every 0.25 s
        os.kill(proc.pid, signal.SIGINT)
        code, stdout, stderr = _finish(proc)
    finally:
        seg.close()
    assert code == 0, stderr
    s = json.loads(out.read_text())
    mine = [c["what"] for c in s["controls"] if c["by"] == "request"]
    assert mine == ["halt symbol SYN-A", "set rate_total of every symbol to 5", "resume symbol SYN-A"]
    assert [c["what"] for c in s["controls"] if c["by"] == "daily_reset_utc"] == [f"new trading day at {reset} UTC"]
    assert s["rejects"].get("RATE_TOTAL", 0) > 0, "the lowered rate limit took effect"


@pytest.mark.timeout(300)
def test_a_worker_that_stops_heart_beating_halts_the_run(tmp_path, spawn):
    cfg = tmp_path / "hb.toml"
    cfg.write_text("[engine]\nheartbeat_timeout_ms = 500\n")
    proc, out = spawn(["run", "--duration", "60", "--config", str(cfg)])
    stopped = None
    try:
        m = _wait_for_run(proc)
        stopped = next(w for w in m.workers if "risk" in w.stages).pid
        os.kill(stopped, signal.SIGSTOP)  # alive but silent, as a hung worker would be
        code, stdout, stderr = _finish(proc)
    finally:
        if stopped:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert code == 3, stderr
    assert "stopped heart-beating" in stderr and "risk" in stderr, stderr
    assert json.loads(out.read_text())["reason"] == "worker-died"


@pytest.mark.timeout(300)
def test_run_with_top_shows_the_live_view(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hean", "run", "--duration", "2", "--top"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr
    for stage in STAGES:
        assert stage in proc.stdout
    assert "tick-to-trade" in proc.stdout  # the summary follows the live view


@pytest.mark.timeout(300)
def test_hean_halt_is_the_kill_switch(spawn):
    proc, out = spawn(["run", "--duration", "0"])
    m = _wait_for_run(proc)
    halt = _hean("halt", m.run_id)
    assert halt.returncode == 0, halt.stderr
    time.sleep(1.0)
    _hean("stop", m.run_id).check_returncode()
    code, stdout, stderr = _finish(proc)
    assert code == 0, stderr
    s = json.loads(out.read_text())
    assert s["pnl"]["trading_state"] == "HALTED"
    assert s["pnl"]["open_orders"] == 0  # HALT cancelled every open order
    assert s["rejects"].get("STATE_HALTED", 0) > 0  # and the strategy's later intents were refused
    # the CANCEL_ALL a halt sends was caused by no market event: not a tick-to-trade sample (it was once
    # timed from 0, and the maximum became the machine's uptime)
    assert 0 < s["tick_to_trade_ns"]["max"] < 10**9


@pytest.mark.timeout(300)
def test_json_to_stdout_is_pure_json():
    """`hean run --json -` pipes into jq: the JSON alone on stdout, the text summary on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "hean", "run", "--duration", "0.5", "--json", "-", "--quiet"],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reason"] == "duration"
    assert "HEAN run" in done.stderr and "tick-to-trade" in done.stderr
