"""Faults: any HEAN process may die or stop at any moment, and the fault stays where it happened.

What a user relies on, each shown on real runs of the engine:

* a worker never outlives its supervisor: kill -9 or SIGSTOP of the supervisor and the workers halt their
  routers, drain and leave, and the last one out removes the run's segments and temp folders;
* no order leaves a router after it learnt of a halt (the router's ``last_order_ns`` < ``halted_ns``);
* a run id in use is refused with one message naming the live run, and the live run keeps running and
  stays reachable; a dead run's leftovers under the same id are swept; another user's are never touched;
* ``hean rings clean`` removes every segment and temp folder of a dead run and nothing of a live one.

The stress test injects kill -9 and SIGSTOP into every process kind (supervisor, each worker, the compile
helper) at random moments of start-up, run and drain. ``python tests/test_faults.py --iterations N`` runs it
at length and prints the table README's reliability section shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from hean.engine import control as C
from hean.engine.runs import clean_stale, scan_runs
from hean.procs import same_process, start_ticks
from hean.shm import SHM_DIR, SegmentError, attach_segment, create_segment, unlink_segment
from hean.telemetry.block import C_USER_BASE, BlockError, attach_block, block_name

ROUTER_LAST_ORDER = C_USER_BASE + 2  # hean.engine.build.STAGE_USER_COUNTERS["router"]
ROUTER_HALTED = C_USER_BASE + 3
HEARTBEAT_MS = 500  # the runs' heartbeat timeout (both ways): faults are noticed this fast
PLACEMENTS = {
    "fused": "",  # on two CPUs: the whole pipeline in one worker, and a compile helper on the spare CPU
    "two-workers": '[placement]\nworkers = [["feed"], ["book", "strategy", "risk", "router", "venue"]]\n',
}
_ids = iter(range(10**9))


def _run_id(tag: str) -> str:
    return f"f{os.getpid()}_{tag}_{next(_ids)}"


def _leftovers(run_id: str) -> list[str]:
    """Every segment and temp folder of ``run_id`` that still exists."""
    segs = [str(SHM_DIR / n) for n in os.listdir(SHM_DIR) if n.startswith(f"hean-{run_id}-")]
    tmp = tempfile.gettempdir()
    return segs + [os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith(f"hean-{run_id}-")]


class Engine:
    """``hean run`` (or ``hean replay``) in a child process, observed through its control block read-only."""

    def __init__(
        self, tmp: Path, run_id: str, duration: float = 30.0, placement: str = "fused", args=(), extra: str = ""
    ):
        self.run_id = run_id
        self.cfg = tmp / f"{run_id}.toml"
        self.cfg.write_text(
            f'[engine]\nrun_id = "{run_id}"\nduration_s = {duration}\nheartbeat_timeout_ms = {HEARTBEAT_MS}\n'
            f"drain_timeout_s = 2.0\n{PLACEMENTS[placement]}{extra}"
        )
        cmd = list(args) or ["run"]
        self.out = open(tmp / f"{run_id}.out", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hean", *cmd, "--config", str(self.cfg), "--quiet"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.ticks = start_ticks(self.proc.pid)
        self._ctl_seg = None
        self.ctl = None
        self.router = None

    # ---- observing -----------------------------------------------------------------------------------------
    def attach(self, timeout: float = 120.0) -> np.ndarray | None:
        """The control block (read-only), once it exists; None if the run ended first."""
        deadline = time.monotonic() + timeout
        while self.ctl is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self._ctl_seg = attach_segment(C.ctl_name(self.run_id), readonly=True)
                ctl = self._ctl_seg.array(np.int64)
                self.ctl = ctl if ctl[C.MAGIC] == C.CTL_MAGIC else None
            except SegmentError:
                time.sleep(0.002)
        return self.ctl

    def attach_router(self) -> None:
        """The router's telemetry block, read-only, kept mapped: it is read after the run removed it."""
        if self.router is None:
            try:
                self.router = attach_block(block_name(self.run_id, "router"), readonly=True)
            except BlockError:
                pass

    def wait_for(self, word: int, timeout: float = 120.0) -> bool:
        """Until control word ``word`` is set (the router block is attached as soon as it can be)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ctl is not None and self.ctl[C.START]:
                self.attach_router()
            if self.ctl is not None and self.ctl[word]:
                return True
            time.sleep(0.0002)
        return False

    def processes(self) -> dict[str, tuple[int, int]]:
        """name -> (pid, start ticks) of every process of the run known so far."""
        found = {"supervisor": (self.proc.pid, self.ticks)}
        if self.ctl is not None:
            for w in range(int(self.ctl[C.N_WORKERS])):
                pid, ticks = int(self.ctl[C.worker_word(w, C.W_PID)]), int(self.ctl[C.worker_word(w, C.W_START_TICKS)])
                if pid:
                    found[f"worker{w}"] = (pid, ticks)
            if self.ctl[C.HELPER_PID]:
                found["helper"] = (int(self.ctl[C.HELPER_PID]), int(self.ctl[C.HELPER_TICKS]))
        return found

    def phase(self) -> str:
        if self.ctl is None or not self.ctl[C.START]:
            return "start-up"
        return "drain" if self.ctl[C.STOP_FEED] else "run"

    def router_times(self) -> tuple[int, int]:
        """(last order out, first saw HALT) of the router, CLOCK_MONOTONIC ns (0: never)."""
        if self.router is None:
            return 0, 0
        c = self.router.block.counters
        return int(c[ROUTER_LAST_ORDER]), int(c[ROUTER_HALTED])

    def orphaned_ns(self) -> int:
        """The earliest time any worker noticed its supervisor gone (0: none did)."""
        if self.ctl is None:
            return 0
        t = [int(self.ctl[C.worker_word(w, C.W_ORPHANED_NS)]) for w in range(int(self.ctl[C.N_WORKERS]))]
        return min([x for x in t if x] or [0])

    def output(self) -> str:
        self.out.flush()
        self.out.seek(0)
        return self.out.read()

    # ---- ending ----------------------------------------------------------------------------------------------
    def wait_gone(self, procs: dict[str, tuple[int, int]], timeout: float) -> list[str]:
        """Wait until every process in ``procs`` has exited; returns those still there (orphans)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [n for n, (p, t) in procs.items() if same_process(p, t)]
            if not left:
                return []
            time.sleep(0.01)
        return [n for n, (p, t) in procs.items() if same_process(p, t)]

    def close(self) -> None:
        """Kill whatever of the run is left, by pid and start time; remove what it left; unmap."""
        for pid, ticks in self.processes().values():
            if same_process(pid, ticks):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.wait_gone(self.processes(), 10.0)
        for seg in (self.router, self._ctl_seg):
            if seg is not None:
                seg.close()
        self.ctl = None
        for path in _leftovers(self.run_id):
            if path.startswith(str(SHM_DIR)):
                unlink_segment(Path(path).name)
            else:
                shutil.rmtree(path, ignore_errors=True)
        self.out.close()


@pytest.fixture
def engines(tmp_path, precompiled):
    """Start engines; every process of each is killed and every leftover removed at teardown."""
    started: list[Engine] = []

    def start(*args, **kwargs) -> Engine:
        if "[journal]" in kwargs.get("extra", ""):
            precompiled("loop-journal")  # from the session's background compile (conftest), not beside it
        e = Engine(tmp_path, *args, **kwargs)
        started.append(e)
        return e

    yield start
    for e in started:
        e.close()


# ---------------------------------------------------------------------------------------------------------
# the supervisor dies or stops
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_kill_9_of_the_supervisor_halts_drains_and_removes_the_run(engines, placement):
    e = engines(_run_id("sup9"), placement=placement)
    assert e.attach() is not None and e.wait_for(C.START), e.output()
    time.sleep(0.3)  # trading
    procs = e.processes()
    t_kill = time.monotonic_ns()
    os.kill(e.proc.pid, signal.SIGKILL)
    e.proc.wait(timeout=10)
    assert e.wait_gone(procs, 10.0) == []  # no orphan: every worker left by itself
    noticed = e.orphaned_ns()
    last_order, halted = e.router_times()
    times = f"kill {t_kill}, noticed {noticed}, halted {halted}, last order {last_order}\n{e.output()}"
    assert noticed > t_kill and halted >= noticed, times
    assert 0 < last_order < halted, times  # nothing left the router once it knew
    assert halted - t_kill < 2 * HEARTBEAT_MS * 1_000_000  # noticed in bounded time (in practice < 1 ms)
    assert "supervisor pid" in e.output() and "order flow halted, leaving" in e.output()
    assert _leftovers(e.run_id) == []  # the last worker out removed every segment and temp folder


# ---------------------------------------------------------------------------------------------------------
# the journal keeps what reached its rings, whoever dies
# ---------------------------------------------------------------------------------------------------------
# the router in a worker of its own (not the feed's), and the journal (a third process)
JOURNALED = (
    '[placement]\nworkers = [["feed", "book", "strategy"], ["risk", "router", "venue"]]\n[journal]\ndir = "{}"\n'
)


def _journal(folder: Path, run_id: str, reports: int = 0, timeout: float = 120.0):
    """The run's journal read back, once it holds at least ``reports`` reports (None if it never does)."""
    from hean.journal.format import JournalError
    from hean.journal.reader import read_journal

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            j = read_journal(folder / run_id)
            if len(j["reports"]) >= reports:
                return j
        except JournalError:
            pass
        time.sleep(0.05)
    return None


@pytest.mark.timeout(300)
def test_kill_9_of_the_routers_worker_leaves_every_report_of_its_rings_in_the_journal(engines, tmp_path):
    """Every report the router published before it died is in the journal: the rings are shared memory, the
    journal drains them, and the supervisor waits for that before it stops the run."""
    run_id = _run_id("jr9")
    summary = tmp_path / "summary.json"
    e = engines(run_id, duration=60, extra=JOURNALED.format(tmp_path / "j"),
                args=["run", "--json", str(summary)])  # fmt: skip
    assert e.attach() is not None and e.wait_for(C.START), e.output()
    assert _journal(tmp_path / "j", run_id, reports=200) is not None, e.output()  # trading, journaled
    from hean.telemetry.manifest import read_manifest

    router = next(w for w in read_manifest(run_id).workers if "router" in w.stages)
    os.kill(router.pid, signal.SIGKILL)
    assert e.proc.wait(timeout=60) == 3, e.output()  # a worker died: the run ends, exit code 3
    rings = json.loads(summary.read_text())["rings"]
    j = _journal(tmp_path / "j", run_id, timeout=5)
    assert j.closed and j.warnings == [], j.warnings
    # the router publishes a report to the journal first, then to risk (its own worker) and the strategy
    assert len(j["reports"]) == rings["reports-journal"]["written"] == rings["reports-journal"]["read"]
    assert len(j["reports"]) >= rings["reports-strategy"]["written"] > 200
    assert len(j["orders"]) == rings["orders-journal"]["written"] > 0
    assert np.all(np.diff(j["reports"]["seq"]) > 0)  # in the order published, none twice


@pytest.mark.timeout(300)
def test_kill_9_of_the_journals_own_worker_loses_nothing_published_to_it(engines, tmp_path):
    """The run halts (a worker died); once the others stopped, the supervisor appends what the dead journal
    left in its rings: every order and report published to it is in it, none twice."""
    run_id = _run_id("jj9")
    summary = tmp_path / "summary.json"
    e = engines(run_id, duration=60, extra=JOURNALED.format(tmp_path / "j"),
                args=["run", "--json", str(summary)])  # fmt: skip
    assert e.attach() is not None and e.wait_for(C.START), e.output()
    assert _journal(tmp_path / "j", run_id, reports=200) is not None, e.output()
    from hean.telemetry.manifest import read_manifest

    journal = next(w for w in read_manifest(run_id).workers if "journal" in w.stages)
    os.kill(journal.pid, signal.SIGKILL)
    assert e.proc.wait(timeout=60) == 3, e.output()
    assert "record(s) it had not taken appended" in e.output(), e.output()
    rings = json.loads(summary.read_text())["rings"]
    j = _journal(tmp_path / "j", run_id, timeout=5)
    assert j.closed and j.warnings == [], j.warnings
    assert len(j["reports"]) == rings["reports-journal"]["written"] > 200
    assert len(j["orders"]) == rings["orders-journal"]["written"]
    assert np.all(np.diff(j["reports"]["seq"]) > 0) and np.all(np.diff(j["orders"]["seq"]) > 0)


@pytest.mark.timeout(300)
def test_kill_9_of_the_supervisor_leaves_a_closed_journal_with_every_fill_the_router_saw(engines, tmp_path):
    """Orphaned, the workers halt and drain; the journal takes what they publish until they are gone, then
    closes: every fill report the router forwarded is in it."""
    run_id = _run_id("js9")
    e = engines(run_id, duration=60, extra=JOURNALED.format(tmp_path / "j"))
    assert e.attach() is not None and e.wait_for(C.START), e.output()
    assert _journal(tmp_path / "j", run_id, reports=200) is not None, e.output()
    procs = e.processes()
    os.kill(e.proc.pid, signal.SIGKILL)
    e.proc.wait(timeout=10)
    assert e.wait_gone(procs, 15.0) == [], e.output()
    from hean.records import ExecType
    from hean.telemetry.block import C_FILLS

    j = _journal(tmp_path / "j", run_id, timeout=5)
    assert j.closed and j.warnings == [], j.warnings
    fills = np.isin(j["reports"]["kind"], (ExecType.FILL, ExecType.PARTIAL_FILL)).sum()
    assert fills == int(e.router.block.counters[C_FILLS]) > 0, e.output()
    assert _leftovers(e.run_id) == []


def _loop_without(sup_pid: int, tid: int, lock_word: int, beat_age_ns: int):
    """Run the worker loop in this process (the whole pipeline, nothing to trade) with the supervisor checks
    set up as given; returns (loops run, HALT, this worker's error, ORPHANED_NS)."""
    from hean.engine import pipeline as P
    from hean.engine.build import build_local
    from hean.engine.config import load_config

    W = build_local(load_config(overrides={"engine.duration_s": 1.0}))
    W.params[P.P_SUPERVISOR] = sup_pid
    W.params[P.P_SUP_TID] = tid
    W.params[P.P_SUP_TIMEOUT_NS] = 10**9
    W.ctl[C.LIFE_LOCK] = lock_word
    W.ctl[C.SUP_BEAT] = time.monotonic_ns() - beat_age_ns
    from hean.engine.loopgen import loop_module
    from hean.stages.registry import PIPELINE

    loops = loop_module(PIPELINE).run_loop(W, 5000)
    return (
        loops,
        int(W.ctl[C.HALT]),
        int(W.ctl[C.worker_word(0, C.W_ERROR)]),
        int(W.ctl[C.worker_word(0, C.W_ORPHANED_NS)]),
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("case", "sup", "tid", "lock", "beat_age", "lost"),
    [
        ("alive, life lock held", "parent", 4242, 4242, 0, False),
        ("alive, no life lock", "parent", 0, 0, 0, False),
        ("life lock: owner died", "parent", 4242, 0x40000000, 0, True),  # the kernel's FUTEX_OWNER_DIED
        ("no life lock, another parent", "other", 0, 0, 0, True),  # the parent pid changed: reparented
        ("heartbeat 2 s old (stopped)", "parent", 4242, 4242, 2 * 10**9, True),
    ],
)
def test_the_loop_leaves_without_its_supervisor(case, sup, tid, lock, beat_age, lost):
    """The checks at every heartbeat of the worker loop (pipeline.supervisor_lost), each path on its own:
    a lost supervisor means HALT for every router, the error word says why, and the loop leaves early."""
    pid = os.getppid() if sup == "parent" else os.getppid() + 1
    loops, halt, err, orphaned = _loop_without(pid, tid, lock, beat_age)
    if lost:
        assert (halt, err) == (1, C.ERR_SUPERVISOR_LOST) and orphaned > 0 and loops < 5000, case
    else:
        assert (loops, halt, err, orphaned) == (5000, 0, 0, 0), case


@pytest.mark.timeout(180)
def test_kill_9_of_a_replays_supervisor_removes_its_native_copy(engines):
    from conftest import data_file

    rec = str(data_file("binance-usdm-btcusdt-20240808.gz"))
    e = engines(_run_id("rep9"), args=["replay", rec, "--format", "binance-usdm", "--rate", "2000"])
    assert e.attach() is not None and e.wait_for(C.START), e.output()
    copies = [p for p in _leftovers(e.run_id) if "-replay-" in p]
    assert len(copies) == 1 and os.listdir(copies[0]) == ["replay.hev"]
    procs = e.processes()
    os.kill(e.proc.pid, signal.SIGKILL)
    e.proc.wait(timeout=10)
    assert e.wait_gone(procs, 10.0) == []
    assert _leftovers(e.run_id) == []


@pytest.mark.timeout(180)
def test_sigstop_of_the_supervisor_stops_trading_and_the_run_ends_when_it_continues(engines):
    e = engines(_run_id("supstop"), placement="two-workers")
    assert e.attach() is not None and e.wait_for(C.START), e.output()
    workers = {k: v for k, v in e.processes().items() if k.startswith("worker")}
    os.kill(e.proc.pid, signal.SIGSTOP)
    t_stop = time.monotonic_ns()
    try:
        assert e.wait_gone(workers, 10.0) == []  # a stopped supervisor is no supervisor: they leave
        last_order, halted = e.router_times()
        assert 0 < last_order < halted and halted - t_stop < 3 * HEARTBEAT_MS * 1_000_000
        assert _leftovers(e.run_id)  # the supervisor is alive: its resources are its to remove
    finally:
        os.kill(e.proc.pid, signal.SIGCONT)
    assert e.proc.wait(timeout=30) == 3
    out = e.output()
    assert "the supervisor died or stopped responding" in out
    assert _leftovers(e.run_id) == []


# ---------------------------------------------------------------------------------------------------------
# run ids
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_a_taken_run_id_is_refused_and_the_live_run_keeps_running(engines, tmp_path):
    first = engines(_run_id("taken"))
    assert first.attach() is not None and first.wait_for(C.START), first.output()
    before = sorted(os.listdir(SHM_DIR))
    second = engines(first.run_id, args=["run"])
    assert second.proc.wait(timeout=60) == 2
    out = second.output().strip().splitlines()
    assert len(out) == 1, out  # one line, no traceback
    assert out[0].startswith(f"hean: run id {first.run_id!r} is taken by a live run (supervisor pid {first.proc.pid};")
    assert out[0].endswith(f"stop it (`hean stop {first.run_id}`) or choose another engine.run_id")
    assert sorted(os.listdir(SHM_DIR)) == before  # nothing of the first run was touched
    assert first.proc.poll() is None
    stop = subprocess.run([sys.executable, "-m", "hean", "stop", first.run_id], capture_output=True, timeout=60)
    assert stop.returncode == 0, stop.stderr  # and it is still reachable
    assert first.proc.wait(timeout=60) == 0
    assert _leftovers(first.run_id) == []


@pytest.mark.timeout(180)
def test_a_dead_runs_leftovers_under_the_same_id_are_swept_at_start(engines):
    from dead_run import leave_dead_run

    rid = _run_id("reuse")
    names, folder = leave_dead_run(rid)
    assert all((SHM_DIR / n).exists() for n in names) and os.path.isdir(folder)
    e = engines(rid, duration=0.5)
    assert e.proc.wait(timeout=120) == 0, e.output()
    assert f"removed {len(names) + 1} leftover(s) of an earlier run {rid!r}" in e.output()
    assert _leftovers(rid) == []


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a segment owned by another user")
def test_another_users_segment_under_the_run_id_is_never_touched(engines):
    rid = _run_id("foreign")
    seg = create_segment(C.ctl_name(rid), 4096)
    os.chown(SHM_DIR / seg.name, 65534, 65534)  # nobody's now
    try:
        e = engines(rid, duration=0.5)
        assert e.proc.wait(timeout=60) == 2
        assert f"run id {rid!r} is taken by a run of user" in e.output() and "(uid 65534)" in e.output()
        assert (SHM_DIR / seg.name).exists()
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make segments owned by another user")
def test_a_run_of_another_user_is_never_called_stale_nor_removed(capsys):
    """Another user's run -- whose processes this user can neither signal nor inspect -- is that user's run:
    never "stale", never removed (its segments are mode 0600 in a sticky /dev/shm anyway)."""
    from hean.cli import main

    rid = _run_id("other")
    segs = [create_segment(f"hean-{rid}-{s}", 4096) for s in ("ctl", "pos", "tm-feed")]
    try:
        for seg in segs:
            os.chown(SHM_DIR / seg.name, 65534, 65534)
            seg.close()  # nothing of ours holds it: as another user's run looks from here
        assert main(["top", "--list"]) == 0
        assert f"{rid}  a run of user nobody (uid 65534)" in capsys.readouterr().out
        assert main(["rings", "clean"]) == 0
        assert f"kept run {rid}: a run of user nobody (uid 65534)" in capsys.readouterr().out
        assert all((SHM_DIR / seg.name).exists() for seg in segs)
    finally:
        for seg in segs:
            seg.unlink()


def test_a_process_of_another_user_is_alive(monkeypatch):
    """kill(pid, 0) answers EPERM for another user's process: it exists (once, HEAN called its run stale)."""
    from hean import procs

    def eperm(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(procs.os, "kill", eperm)
    assert procs.process_alive(1)
    assert not procs.process_alive(0)


# ---------------------------------------------------------------------------------------------------------
# cleaning up after a crash
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_rings_clean_removes_a_crashed_run_entirely_and_nothing_of_a_live_one(engines):
    live = engines(_run_id("live"))
    crashed = engines(_run_id("crash"), placement="two-workers")
    for e in (live, crashed):
        assert e.attach() is not None and e.wait_for(C.START), e.output()
    procs = crashed.processes()
    for pid, _ in procs.values():  # everything at once: nobody is left to clean up
        os.kill(pid, signal.SIGKILL)
    assert crashed.wait_gone(procs, 10.0) == []
    left = _leftovers(crashed.run_id)
    live_has = sorted(_leftovers(live.run_id))
    assert len(left) >= 12  # control, manifest, positions, tops, 6 telemetry blocks, rings, compile folder
    cli = [sys.executable, "-m", "hean", "rings", "clean"]
    dry = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for path in left:
        assert f"would remove {path} (run {crashed.run_id}: no process of it is left)" in dry.stdout, path
    assert f"kept run {live.run_id}: a live run (supervisor pid {live.proc.pid}" in dry.stdout
    assert _leftovers(crashed.run_id) == left
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and _leftovers(crashed.run_id) == []
    assert live.proc.poll() is None and sorted(_leftovers(live.run_id)) == live_has


# ---------------------------------------------------------------------------------------------------------
# the stress test
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Injection:
    """One fault and what came of it."""

    signal: str  # kill | stop
    target: str  # supervisor | worker | helper
    phase: str  # start-up | run | drain (as seen in the control block when it was sent)
    placement: str
    exit_code: int | None = None
    orphans: list[str] = field(default_factory=list)
    swept_by_clean: int = 0  # leftovers only `rings clean` removed (a supervisor killed before workers ran)
    left_after_clean: list[str] = field(default_factory=list)
    orders_after_halt: int = 0
    death_to_last_order_ns: int | None = None
    death_to_halt_ns: int | None = None


# the supervisor's exit codes that are right for each fault (None: it was killed)
EXPECTED_EXIT = {
    ("kill", "worker"): {2, 3},  # start-up failed (2) or a worker died (3); in drain also 0 (it had exited)
    ("stop", "worker"): {2, 3},
    ("stop", "supervisor"): {2, 3},  # its workers left while it was stopped
    ("kill", "helper"): {0},  # the helper only ever helps
    ("stop", "helper"): {0},
}


def inject(tmp: Path, rng: random.Random, sig: str, target: str, phase: str, placement: str) -> Injection:
    e = Engine(tmp, _run_id("stress"), duration=1.0, placement=placement)
    inj = Injection(sig, target, phase, placement)
    try:
        e.attach()
        if target == "helper":
            e.wait_for(C.HELPER_PID)
            time.sleep(rng.uniform(0.0, 0.2))
        elif phase == "start-up":
            time.sleep(rng.uniform(0.0, 0.8))
        elif phase == "run":
            e.wait_for(C.START)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            e.wait_for(C.STOP_FEED)
        procs = e.processes()
        names = [n for n in procs if n.startswith(target)]
        victim = rng.choice(names) if names else "supervisor"  # (no worker started yet: its supervisor)
        inj.target = victim.rstrip("0123456789")
        inj.phase = e.phase()
        pid, ticks = procs[victim]
        t0 = time.monotonic_ns()
        if same_process(pid, ticks):
            os.kill(pid, signal.SIGKILL if sig == "kill" else signal.SIGSTOP)
        if sig == "stop":
            time.sleep(3 * HEARTBEAT_MS / 1000)  # long enough for the others to notice
            if same_process(pid, ticks):
                os.kill(pid, signal.SIGCONT)
        try:
            inj.exit_code = e.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            inj.exit_code = None
        if victim == "supervisor" and sig == "kill":
            inj.exit_code = None
        inj.orphans = e.wait_gone(e.processes(), 10.0)
        last_order, halted = e.router_times()
        if halted and last_order > halted:
            inj.orders_after_halt = 1
        if victim == "supervisor" and sig == "kill" and halted:
            inj.death_to_last_order_ns = max(0, last_order - t0)
            inj.death_to_halt_ns = halted - t0
        left = _leftovers(e.run_id)
        if left:
            inj.swept_by_clean = len(left)
            clean_stale({e.run_id})
            inj.left_after_clean = _leftovers(e.run_id)
        return inj
    finally:
        e.close()


def check(inj: Injection, output: str = "") -> None:
    """What every fault must leave behind: no process, nothing `rings clean` cannot remove, no late order."""
    assert inj.orphans == [], inj
    assert inj.left_after_clean == [], inj
    assert inj.orders_after_halt == 0, inj
    if inj.exit_code is not None:
        allowed = EXPECTED_EXIT.get((inj.signal, inj.target), {0, 2, 3}) | ({0} if inj.phase == "drain" else set())
        assert inj.exit_code in allowed, (inj, output)
    if inj.target == "supervisor" and inj.signal == "kill" and inj.phase != "start-up":
        assert inj.swept_by_clean == 0, inj  # its workers removed the run: nothing was left for `rings clean`


def stress(tmp: Path, iterations: int, seed: int) -> list[Injection]:
    rng = random.Random(seed)
    kinds = [
        (sig, target, phase)
        for sig in ("kill", "stop")
        for target in ("supervisor", "worker", "helper")
        for phase in ("start-up", "run", "drain")
        if target != "helper" or phase == "start-up"  # the helper lives only until every worker is ready
    ]
    done = []
    for i in range(iterations):
        sig, target, phase = kinds[i % len(kinds)]
        placement = "fused" if target == "helper" else rng.choice(list(PLACEMENTS))
        done.append(inject(tmp, rng, sig, target, phase, placement))
    return done


@pytest.mark.timeout(600)
def test_stress_kill_and_stop_every_process_kind_at_random_moments(tmp_path):
    iterations = int(os.environ.get("HEAN_FAULT_ITERATIONS", "14"))
    for inj in stress(tmp_path, iterations, seed=int(os.environ.get("HEAN_FAULT_SEED", "12"))):
        check(inj)
    assert not [r for r in scan_runs() if r.run_id.startswith(f"f{os.getpid()}_stress") and r.segments]


def _table(results: list[Injection]) -> str:
    by_kind = Counter((r.signal, r.target, r.phase) for r in results)
    lines = ["| fault | target | phase | injected | orphans | leftovers (after `rings clean`) | orders after halt |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (sig, target, phase), n in sorted(by_kind.items()):
        rs = [r for r in results if (r.signal, r.target, r.phase) == (sig, target, phase)]
        lines.append(
            f"| {'kill -9' if sig == 'kill' else 'SIGSTOP'} | {target} | {phase} | {n} | "
            f"{sum(len(r.orphans) for r in rs)} | {sum(len(r.left_after_clean) for r in rs)} | "
            f"{sum(r.orders_after_halt for r in rs)} |"
        )
    lat = sorted(r.death_to_last_order_ns for r in results if r.death_to_last_order_ns is not None)
    halt = sorted(r.death_to_halt_ns for r in results if r.death_to_halt_ns is not None)
    if lat:
        lines.append("")
        lines.append(
            f"supervisor kill -9 -> worker's last order: p50 {np.percentile(lat, 50) / 1e3:.1f} us, max "
            f"{max(lat) / 1e3:.1f} us; -> router halted: p50 {np.percentile(halt, 50) / 1e3:.1f} us, max "
            f"{max(halt) / 1e3:.1f} us (over {len(lat)} runs)"
        )
    swept = sum(1 for r in results if r.swept_by_clean)
    lines.append(f"runs whose leftovers only `rings clean` removed: {swept} of {len(results)}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--seed", type=int, default=12)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        res = stress(Path(d), a.iterations, a.seed)
        failures = []
        for r in res:
            try:
                check(r)
            except AssertionError as err:
                failures.append(str(err))
        print(_table(res))
        print(f"\n{len(res)} injections in {time.monotonic() - t0:.0f} s; {len(failures)} failed checks")
        for f in failures:
            print("FAILED:", f)
