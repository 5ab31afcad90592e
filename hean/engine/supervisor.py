"""The supervisor: creates every segment of a run, starts the workers, watches them, stops and cleans up.

The supervisor is plain Python and never on the data path. Its jobs, in order:

1. plan the placement and claim the run id: its control block is created exclusively, so a second run of
   the same id is one clear error naming the live run, and the leftovers of a dead one are removed first
   (:mod:`hean.engine.runs`); then create the rings, the shared views (topology), one telemetry block per
   stage and the run manifest. A name is recorded once *this* process has created it: cleanup unlinks
   exactly what this run made, never another run's;
2. start one worker process per placement group and wait until each has compiled, warmed up and set READY
   (a worker that exits or misses ``ready_timeout_s`` fails the start with its stage named);
3. set START, then watch: every worker's pid and heartbeat, the duration, end of replay, SIGINT/SIGTERM
   (``hean stop``) and SIGUSR1/SIGUSR2 (``hean halt`` / ``hean resume``, the kill switch);
4. stop: STOP_FEED, wait for the rings to drain, STOP, join (kill after a grace period);
5. read the telemetry into a summary and unlink every segment -- also when anything above failed.

A worker that dies or stops heart-beating sets HALT at once (the router sends nothing more), the run ends
with a non-zero exit code and a message naming the stage. The other way round, the supervisor beats too
(``SUP_BEAT``): a worker whose supervisor is killed or stopped halts, drains and leaves by itself
(:mod:`hean.engine.worker`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import msgspec
import numpy as np

from hean.engine import control as C
from hean.engine import runs
from hean.engine.config import Config
from hean.engine.loopgen import edges, stage_hists
from hean.engine.placement import plan_placement
from hean.engine.topology import SHARED_VIEWS, RingSpec, ring_specs, view_dims, view_name
from hean.procs import process_state, start_ticks
from hean.rings import Ring, RingError, create
from hean.shm import SegmentError, create_segment, unlink_segment
from hean.stages.registry import refs
from hean.telemetry.block import C_USER_BASE, TelemetrySegment, block_name, create_block
from hean.telemetry.manifest import (
    Manifest,
    RingInfo,
    StageInfo,
    WorkerInfo,
    manifest_name,
    write_manifest,
)

__all__ = ["EngineError", "RunResult", "Supervisor", "new_run_id"]


class EngineError(RuntimeError):
    """The run could not start or ended on a failure; the message names the stage and the cause."""


@dataclass
class RunResult:
    run_id: str
    exit_code: int
    reason: str  # duration | feed-done | signal | worker-died | ...
    error: str = ""
    elapsed_s: float = 0.0
    startup_s: float = 0.0  # from run() to every worker ready (compile or cache load, warm-up)
    messages: int = 0  # feed messages published (a message = one exchange message: a group of events)
    symbols: list = field(default_factory=list)  # symbol names by id (a replay's come from the recording)
    feed_s: float = 0.0  # the feed's first to last message (the rate's denominator; Supervisor.publishing_s)
    telemetry: dict = field(default_factory=dict)  # stage -> snapshot arrays (copied before unlink)
    placement: dict = field(default_factory=dict)
    strategies: list = field(default_factory=list)  # the strategies' paths, by id (ORDER.strategy)
    controls: list = field(default_factory=list)  # every control applied: {"utc", "by", "what"} (hean halt, risk set)
    journal: str = ""  # the run's journal folder ("" without one)
    latency: object = None  # hean.telemetry.intervals.LatencyIntervals (Supervisor(intervals=FOLDER)), else None
    # each shared ring at the end: {"written", "read"} -- what was published, and what its consumer took
    rings: dict = field(default_factory=dict)
    live: dict = field(default_factory=dict)  # a live feed's counters, stale windows and last error (else empty)


def new_run_id() -> str:
    return time.strftime("%Y%m%d_%H%M%S") + f"_{os.getpid()}"


class _Sleeper:
    """Blocks the supervisor until a worker exits, a signal arrives, or a timeout -- instead of polling.

    Why: the supervisor shares the machine's CPUs with busy-spinning workers; every wake-up takes a CPU from
    one of them for tens of microseconds, and a message in flight then waits that long. Polling at 50 Hz
    preempted the default two-worker placement ~60 times a second, which set the tick-to-trade p99. Here the
    kernel wakes the supervisor: a worker's exit makes its pidfd readable (so a death still halts order
    flow at once) and a signal writes to the wake-up pipe (``signal.set_wakeup_fd``); otherwise it sleeps
    for :attr:`Supervisor.WATCH_S`. Without pidfds (Linux < 5.3) it falls back to ``POLL_S`` sleeps.
    """

    def __init__(self, pids: list[int], extra: tuple[int, ...] = ()) -> None:
        self.fds: list[int] = []
        self.extra = [fd for fd in extra if fd >= 0]  # eventfds a worker signals (not ours to close)
        self._old_wakeup = None
        try:
            self.fds = [os.pidfd_open(pid) for pid in pids]
        except (AttributeError, OSError):
            self.close()
            return
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)
        try:
            self._old_wakeup = signal.set_wakeup_fd(self._w)
        except ValueError:  # not the main thread: signals are not ours to watch
            self._old_wakeup = None
        self.fds.append(self._r)

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, or until a worker exits or a signal arrives."""
        if not self.fds:
            time.sleep(min(timeout, Supervisor.POLL_S))
            return
        ready, _, _ = select.select(self.fds + self.extra, [], [], max(0.0, timeout))
        if self.fds[-1] in ready:
            try:
                os.read(self.fds[-1], 512)  # the signal numbers; the handlers already recorded them
            except BlockingIOError:
                pass
        for fd in self.extra:
            if fd in ready:
                try:
                    os.eventfd_read(fd)  # the source is done (hean.engine.pipeline.source_done)
                except BlockingIOError:
                    pass

    def close(self) -> None:
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._old_wakeup = None
        if self.fds:
            os.close(self._w)
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class Supervisor:
    """One run of the engine. ``run()`` returns a :class:`RunResult`; segments are always unlinked."""

    POLL_S = 0.02  # start-up and drain polling, and the watch loop's fallback without pidfds
    WATCH_S = 0.25  # the watch loop's longest sleep: heartbeats, end of feed, `hean halt` are seen this fast
    INTERVAL_S = 1.0  # latency intervals (Supervisor(intervals=FOLDER)): one per second,
    FLUSH_S = 10.0  # appended to their logs every 10 s (memory stays flat however long the run)

    def __init__(
        self,
        cfg: Config,
        cpus: list[int] | None = None,
        progress=None,
        pipeline=None,
        startup=None,
        intervals: str | os.PathLike | None = None,
    ) -> None:
        from hean.stages.registry import pipeline_for

        self.pipeline = pipeline_for(cfg) if pipeline is None else tuple(pipeline)  # the stages, in order
        self._own_pipeline = pipeline is None  # chosen here: again once the recording is read (L3 or not)
        self.cfg = cfg
        self.run_id = cfg.engine.run_id or new_run_id()
        background = tuple(s.name for s in self.pipeline if s.background)
        self.placement = plan_placement(
            cfg.placement, cpus, tuple(s.name for s in self.pipeline), background=background
        )
        # the run's journal folder (hean.stages.journal), when the pipeline has the journal
        self.journal = os.path.join(cfg.journal.dir, self.run_id) if "journal" in background else ""
        self.progress = progress  # callable(supervisor, elapsed_s) for live output, or None
        # callable(supervisor, stages_ready, stages, elapsed_s) while the workers compile or load the stages
        self.startup = startup
        # with ``intervals`` (a folder): every histogram, once a second, as HdrHistogram interval logs written
        # there as the run goes (hean.telemetry.intervals; RunResult.latency)
        self._intervals = intervals
        self.latency = None  # hean.telemetry.intervals.LatencyIntervals, from START
        self._live = None  # hean.live.ingest.LiveIngest: a live feed's client (feed.source = "live")
        self.names: list[str] = []  # every segment this run created (unlinked at the end)
        self.rings: dict[str, Ring] = {}
        self.blocks: dict[str, TelemetrySegment] = {}
        self.procs: list[subprocess.Popen] = []
        self.helper: subprocess.Popen | None = None  # the cold-start compile helper (hean.engine.warm)
        self._claims_dir: str | None = None  # its and the workers' stage claims (hean.engine.warm)
        self.ctl: np.ndarray | None = None
        self._ctl_seg = None
        self._life: C.LifeLock | None = None
        self._stopped_since: dict[int, int] = {}  # worker pid -> when start-up first found it stopped
        self._signal: int | None = None
        self._control_seq = 0
        self._own_affinity: set[int] | None = None  # the supervisor's own mask while it is moved off workers
        self._notify = -1  # the eventfd the source's worker signals at the end of the feed

    # ---- segments ----------------------------------------------------------------------------------------
    def _claim_run(self) -> None:
        """Create the run's control block exclusively: the run id is this run's from now on.

        A taken id is an EngineError naming the live run and its processes (or the user owning it). An id left
        behind by a run whose processes are all gone is swept, said, and claimed.
        """
        rid = self.run_id
        self._sweep_dead_runs()
        for attempt in range(2):
            try:
                self._ctl_seg, self.ctl = C.create_control(rid, len(self.placement.workers))
            except SegmentError:
                res = runs.find_run_resources(rid)
                if res.live or res.foreign_uid is not None:
                    raise EngineError(
                        f"run id {rid!r} is taken by {res.describe()}; stop it (`hean stop {rid}`) or "
                        "choose another engine.run_id"
                    ) from None
                removed = runs.sweep(res)
                if attempt == 0:
                    print(f"hean: removed {len(removed)} leftover(s) of an earlier run {rid!r} whose processes "
                          "are all gone", file=sys.stderr)  # fmt: skip
                continue
            self.names.append(C.ctl_name(rid))
            self._life = C.LifeLock(self.ctl)  # the workers see this thread's death at once (control.py)
            self.ctl[C.SUP_PID] = os.getpid()
            self._beat()
            return
        raise EngineError(f"run id {rid!r}: its control block exists and could not be claimed")

    def _sweep_dead_runs(self) -> None:
        """Remove what earlier runs left when every one of their processes died at once (kill -9 of a whole
        run, a crash during start-up): each removal re-checks that no process owns it."""
        for res in runs.scan_runs():
            if res.live or res.foreign_uid is not None or res.run_id == self.run_id:
                continue
            removed = runs.sweep(res)
            if removed:
                print(f"hean: removed {len(removed)} leftover(s) of run {res.run_id!r}, whose processes are all "
                      "gone", file=sys.stderr)  # fmt: skip

    def _stage(self, name: str):
        return next(s for s in self.pipeline if s.name == name)

    def _beat(self) -> None:
        """The supervisor's heartbeat: workers that find it older than the timeout leave (see worker.py)."""
        if self.ctl is not None:
            self.ctl[C.SUP_BEAT] = time.monotonic_ns()

    def _create(self, name: str, make):
        """``make()`` creates segment ``name``; recorded for cleanup only once it exists (it is ours then)."""
        try:
            made = make()
        except (SegmentError, RingError) as e:
            raise EngineError(f"run {self.run_id!r}: {e}") from None
        self.names.append(name)
        return made

    def _create_segments(self) -> None:
        run_id, cfg = self.run_id, self.cfg
        self.ring_specs: list[RingSpec] = ring_specs(
            run_id, self.placement, cfg.engine.ring_capacity, edges(self.pipeline)
        )
        for spec in self.ring_specs:
            self.rings[spec.edge.key] = self._create(
                spec.name, lambda spec=spec: create(spec.name, spec.edge.dtype, spec.capacity)
            )
        n_sym = len(cfg.symbols)
        dims = view_dims(cfg)
        self._view_segs = []  # the topology's shared views: top of book, positions, depth
        for v in SHARED_VIEWS:
            name = view_name(run_id, v)
            self._view_segs.append(self._create(name, lambda name=name, v=v: create_segment(name, v.nbytes(dims))))
        for stage in (s.name for s in self.pipeline):
            self.blocks[stage] = self._create(
                block_name(run_id, stage),
                lambda stage=stage: create_block(
                    run_id,
                    stage,
                    stage_hists(self._stage(stage)),
                    user_counters=list(self._stage(stage).user_counters),
                    risk_symbols=n_sym if self._stage(stage).risk_region else 0,
                ),
            )

    def _manifest(self) -> Manifest:
        p = self.placement
        wname = {w.index: f"w{w.index}" for w in p.workers}
        return Manifest(
            run_id=self.run_id,
            engine_pid=os.getpid(),
            start_ns=time.monotonic_ns(),
            start_unix=time.time(),
            cpus=p.cpus_available,
            workers=[
                WorkerInfo(name=wname[w.index], cpu=-1 if w.cpu is None else w.cpu, wait=w.wait,
                           stages=list(w.stages), pid=self.procs[w.index].pid if self.procs else 0)
                for w in p.workers
            ],
            stages=[
                StageInfo(
                    name=s,
                    block=self.blocks[s].name,
                    worker=wname[p.owner[s]],
                    cpu=-1 if p.workers[p.owner[s]].cpu is None else p.workers[p.owner[s]].cpu,
                    inputs=[r.edge.key for r in self.ring_specs if r.edge.dst == s],
                    outputs=[r.edge.key for r in self.ring_specs if r.edge.src == s],
                )
                for s in (x.name for x in self.pipeline)
            ],
            rings=[
                RingInfo(name=r.edge.key, segment=r.name, producer=r.edge.src, consumer=r.edge.dst,
                         capacity=r.capacity)
                for r in self.ring_specs
            ],
            risk_block=next((self.blocks[s.name].name for s in self.pipeline if s.risk_region), None),
            journal=self.journal,
            symbols=[s.name for s in self.cfg.symbols],
            config=p.reason,
            requests=self._requests_dir or "",
        )  # fmt: skip

    def _cleanup(self) -> None:
        if self._life is not None:
            self._life.release()  # every worker is gone by now
        for ring in self.rings.values():
            ring.close()
        for block in self.blocks.values():
            block.close()
        if self._ctl_seg is not None:
            self.ctl = None
            self._ctl_seg.close()
        for seg in getattr(self, "_view_segs", ()):
            seg.close()
        for name in self.names:
            unlink_segment(name)
        if self._notify >= 0:
            os.close(self._notify)
            self._notify = -1

    # ---- workers -----------------------------------------------------------------------------------------
    def _worker_spec(self, w) -> dict:
        return {
            "run_id": self.run_id,
            "index": w.index,
            "stages": list(w.stages),
            "cpu": w.cpu,
            "wait": w.wait,
            # a background worker yields at once and sleeps soon: it must not take a CPU from the hot ones
            "spin_before_yield": 0 if w.background else self.placement.spin_before_yield,
            "spin_before_sleep": 4 if w.background else self.placement.spin_before_sleep,
            "sleep_ns": self.placement.sleep_ns,
            "owner": self.placement.owner,
            "rings": {r.edge.key: r.name for r in self.ring_specs},
            "pipeline": refs(self.pipeline),
            "config": msgspec.to_builtins(self.cfg),
            "supervisor_pid": os.getpid(),
            "supervisor_tid": self._life.tid if self._life is not None and self._life.held else 0,
        }

    def _spare_cpus(self) -> list[int]:
        """CPUs no worker is pinned to (none when a worker is unpinned: it may run anywhere)."""
        used = {w.cpu for w in self.placement.workers}
        return [] if None in used else sorted(set(self.placement.cpus_available) - used)

    def _start_workers(self) -> None:
        spare = self._spare_cpus()
        # the source's worker signals it when the feed is done: the watch loop wakes at once (no polling step)
        self._notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # where the processes compiling at once claim stages on a cold start (see hean.engine.warm)
        self._claims_dir = runs.run_temp_dir(self.run_id, "compile")
        self._spawned_ns = time.monotonic_ns()
        for w in self.placement.workers:
            spec = self._worker_spec(w)
            spec["compile_backwards"] = not spare and w.index % 2 == 1
            spec["compile_claims"] = self._claims_dir
            spec["notify_fd"] = self._notify
            proc = subprocess.Popen(
                [sys.executable, "-m", "hean.engine.worker"],
                env={**os.environ, "HEAN_WORKER_SPEC": json.dumps(spec)},
                start_new_session=False,
                pass_fds=(self._notify,),
            )
            self.procs.append(proc)
            # who the run's processes are (pid and start time), for the cleanup of a run that lost its
            # supervisor: a recycled pid is never mistaken for a worker
            self.ctl[C.worker_word(w.index, C.W_PID)] = proc.pid
            self.ctl[C.worker_word(w.index, C.W_START_TICKS)] = start_ticks(proc.pid)
            self.ctl[C.worker_word(w.index, C.W_BACKGROUND)] = int(w.background)
        if spare:
            # a compile helper on a spare CPU takes the stages from the other end; it only ever helps
            spec = {**self._worker_spec(self.placement.workers[0]), "cpu": spare[0], "notify_fd": -1}
            spec["compile_claims"] = self._claims_dir
            self.helper = subprocess.Popen(
                [sys.executable, "-m", "hean.engine.warm"],
                env={**os.environ, "HEAN_WORKER_SPEC": json.dumps(spec)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.ctl[C.HELPER_PID] = self.helper.pid
            self.ctl[C.HELPER_TICKS] = start_ticks(self.helper.pid)

    def _worker_desc(self, i: int) -> str:
        w = self.placement.workers[i]
        return f"worker {i} (stage{'s' if len(w.stages) > 1 else ''} {', '.join(w.stages)}; pid {self.procs[i].pid})"

    def _wait_ready(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.cfg.engine.ready_timeout_s
        told = self.startup is not None  # a live display says it instead
        while True:
            if self.startup is not None:
                self.startup(self, *self.compile_progress(), time.monotonic() - t0)
            if not told and time.monotonic() - t0 > 5.0:
                told = True
                print(
                    "hean: workers are compiling the numba stages (the first start takes about two minutes; "
                    "later starts load them from the cache)",
                    file=sys.stderr,
                )
            self._beat()
            ready = [self.ctl[C.worker_word(i, C.W_READY)] == 1 for i in range(len(self.procs))]
            if all(ready):
                if self.startup is not None:
                    total = self.compile_progress()[1]
                    self.startup(self, total, total, time.monotonic() - t0)
                return
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise EngineError(f"{self._worker_desc(i)} exited with code {proc.returncode} during start-up")
                silent = self._silent_at_start(i)
                if silent:
                    raise EngineError(f"{self._worker_desc(i)} stopped responding during start-up ({silent})")
            if self._signal is not None:
                raise EngineError(f"interrupted by signal {self._signal} during start-up")
            if time.monotonic() > deadline:
                late = [self._worker_desc(i) for i, r in enumerate(ready) if not r]
                raise EngineError(f"not ready after {self.cfg.engine.ready_timeout_s:.0f} s: {'; '.join(late)}")
            time.sleep(self.POLL_S)

    def compile_progress(self) -> tuple[int, int]:
        """``(done, total)``: the stages compiled (or loaded from the cache) so far, and the worker loop, of
        every stage the run compiles (the claims folder of hean.engine.warm)."""
        total = len(self.pipeline) + 1
        folder = self._claims_dir
        if not folder:
            return 0, total
        try:
            names = os.listdir(folder)
        except OSError:
            return 0, total
        stages = sum(1 for n in names if n.endswith(".done") and n[:-5].isdigit())
        loops = sum(1 for n in names if n.endswith(".done") and not n[:-5].isdigit())
        return min(total - 1, stages) + min(1, loops), total

    START_SILENCE_S = 30.0  # a starting worker may go this long without a heartbeat (imports, long compiles)

    def _silent_at_start(self, i: int) -> str:
        """Why worker ``i`` looks stopped or hung during start-up ("" when it does not).

        Its watchdog thread beats every 50 ms, but numba holds the GIL for long stretches of a cold compile, so
        silence alone counts only after START_SILENCE_S; a worker the kernel shows stopped (SIGSTOP) counts
        after the heartbeat timeout.
        """
        now = time.monotonic_ns()
        pid = self.procs[i].pid
        if process_state(pid) in ("T", "t"):
            since = self._stopped_since.setdefault(pid, now)
            if now - since > self.cfg.engine.heartbeat_timeout_ms * 1_000_000:
                return f"stopped (SIGSTOP) for {(now - since) / 1e6:.0f} ms"
        else:
            self._stopped_since.pop(pid, None)
        hb = int(self.ctl[C.worker_word(i, C.W_HEARTBEAT)]) or self._spawned_ns
        if now - hb > self.START_SILENCE_S * 1e9:
            return f"{(now - hb) / 1e9:.0f} s without a heartbeat"
        return ""

    def _dead_worker(self) -> str | None:
        """A message naming the first dead or silent worker, else None."""
        now = time.monotonic_ns()
        limit = self.cfg.engine.heartbeat_timeout_ms * 1_000_000
        for i, proc in enumerate(self.procs):
            code = proc.poll()
            exited = self.ctl[C.worker_word(i, C.W_EXIT)]
            err = C.ERROR_TEXT.get(int(self.ctl[C.worker_word(i, C.W_ERROR)]), "unknown")
            if exited == C.EXIT_ERROR:
                return f"{self._worker_desc(i)} stopped on an error: {err}"
            if code is not None and exited != C.EXIT_STOPPED:
                sig = f" (killed by signal {-code})" if code < 0 else ""
                return f"{self._worker_desc(i)} died with exit code {code}{sig}; cause: {err}"
            hb = int(self.ctl[C.worker_word(i, C.W_HEARTBEAT)])
            if code is None and hb and now - hb > limit:
                return f"{self._worker_desc(i)} stopped heart-beating ({(now - hb) / 1e6:.0f} ms silent)"
        return None

    def _stop_workers(self, grace_s: float) -> None:
        self.ctl[C.STOP] = 1
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def _stop_helper(self) -> None:
        if self.helper is not None:
            self.helper.kill()
            self.helper.wait(timeout=10)
            self.helper = None
        if self._claims_dir is not None:
            import shutil

            shutil.rmtree(self._claims_dir, ignore_errors=True)
            self._claims_dir = None

    def _kill_workers(self) -> None:
        self._stop_helper()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # ---- control -------------------------------------------------------------------------------------------
    def send_control(self, command: int, symbol: int = -1, side: int = 0, arg: int = 0) -> None:
        """Push a CONTROL record to the risk stage (the kill switch and friends)."""
        from hean import records

        rec = np.zeros(1, records.CONTROL)
        self._control_seq += 1
        rec["seq"] = self._control_seq
        rec["kind"] = command
        rec["symbol"] = symbol
        rec["side"] = side
        rec["arg"] = arg
        rec["issued_ns"] = time.monotonic_ns()
        rec["ts_origin"] = rec["issued_ns"]
        for spec in self.ring_specs:  # risk, and the journal when there is one
            if spec.edge.src == "supervisor" and spec.edge.stream == "control":
                self.rings[spec.edge.key].push(rec)

    def _on_signal(self, signum, frame) -> None:
        from hean.records import ControlCommand

        if signum == signal.SIGUSR1:
            self._pending_control.append(int(ControlCommand.HALT))
        elif signum == signal.SIGUSR2:
            self._pending_control.append(int(ControlCommand.RESUME))
        else:
            self._signal = signum

    def _drain(self, timeout_s: float) -> bool:
        """Wait until every ring is empty twice in a row with no new writes (the pipeline is idle)."""
        return self._until_empty(list(self.rings.values()), timeout_s, lambda: self._dead_worker() is None)

    def _until_empty(self, rings: list, timeout_s: float, ok) -> bool:
        """Until ``rings`` are empty twice in a row with no new writes; False on the timeout or once ``ok()``
        is false (a worker died)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            self._beat()
            if not ok():
                return False
            snap = tuple((r.stats()["write"], len(r)) for r in rings)
            if all(n == 0 for _, n in snap) and snap == last:
                return True
            last = snap
            time.sleep(self.POLL_S)
        return False

    def _drain_journal(self, timeout_s: float) -> bool:
        """After a worker died: let the journal take everything already in its rings -- shared memory outlives
        the process that wrote it -- before the run stops (the other rings are not drained: order flow is
        halted). True when its rings went empty and stayed so; False without a live journal."""
        if not self.journal:
            return False
        proc = self.procs[self.placement.owner["journal"]]
        mine = [self.rings[r.edge.key] for r in self.ring_specs if r.edge.dst == "journal"]
        return proc.poll() is None and self._until_empty(mine, timeout_s, lambda: proc.poll() is None)

    def _recover_journal(self) -> None:
        """The journal's worker is dead: append what it left in its rings (hean.journal.recover), so the
        journal still holds every record published to it. Said on stderr; a failure is said, not raised."""
        from hean.journal import format as J
        from hean.journal.recover import append_pending

        kinds = {"control": J.K_CONTROL, "orders": J.K_ORDER, "rejects": J.K_REJECT, "reports": J.K_REPORT,
                 "market": J.K_MARKET}  # fmt: skip
        pending = []
        for spec in self.ring_specs:
            if spec.edge.dst == "journal":
                ring = self.rings[spec.edge.key]
                st = ring.stats()
                seqs = np.arange(st["read"], st["write"]) & (ring.capacity - 1)
                pending.append((kinds[spec.edge.stream], ring.slots[seqs].copy()))
        try:
            n = append_pending(self.journal, pending)
        except (OSError, ValueError) as e:
            print(f"hean: the journal's worker died and its rings could not be appended to {self.journal}: {e}",
                  file=sys.stderr)  # fmt: skip
            return
        print(
            f"hean: the journal's worker died: {n} record(s) it had not taken appended to {self.journal}",
            file=sys.stderr,
        )

    # ---- the run -------------------------------------------------------------------------------------------
    def _prepare_replay(self) -> None:
        """Read the recording once, here: the feed worker then maps a native event file, and the run's symbol
        table is the recording's (prices in its ticks)."""
        f = self.cfg.feed
        if f.source != "replay":
            return
        from hean.engine.build import prepare_replay

        self._replay_dir = runs.run_temp_dir(self.run_id, "replay")
        try:
            self.cfg, report = prepare_replay(self.cfg, self._replay_dir)
        except (OSError, ValueError) as e:
            why = str(e)  # a FeedError names the file itself
            named = any(p in why for p in ([f.path] if isinstance(f.path, str) else f.path))
            raise EngineError(why if named else f"cannot replay {f.path}: {why}") from None
        print(f"hean: {report.summary()}", file=sys.stderr)
        if self._own_pipeline:  # an order-by-order recording runs the L3 book and venue (same stage names)
            from hean.stages.registry import pipeline_for

            self.pipeline = pipeline_for(self.cfg)

    def run(self) -> RunResult:
        from hean.engine.requests import next_day_start

        self._pending_control: list[int] = []
        self._replay_dir = None
        self._requests_dir = None
        self.controls: list[dict] = []
        reset = self.cfg.engine.daily_reset_utc
        self._next_day = next_day_start(time.time(), reset) if reset else None
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
        old = {s: signal.signal(s, self._on_signal) for s in handled}
        t_start = time.monotonic()
        from hean.stages.strategy import strategy_entries

        result = RunResult(
            self.run_id,
            0,
            "",
            placement=self.placement.describe(),
            journal=self.journal,
            symbols=[x.name for x in self.cfg.symbols],
            strategies=[e.path for e in strategy_entries(self.cfg)],
        )
        try:
            self._claim_run()
            self._prepare_replay()
            self._beat()
            result.symbols = [x.name for x in self.cfg.symbols]
            self._create_segments()
            self._requests_dir = runs.run_temp_dir(self.run_id, "requests")
            self._start_workers()
            self._create(manifest_name(self.run_id), lambda: write_manifest(self._manifest()))
            self._wait_ready()
            self._stop_helper()  # every worker has compiled: whatever the helper still does is moot
            self._keep_off_workers()
            result.startup_s = time.monotonic() - t_start
            t_start = time.monotonic()
            self.ctl[C.START] = 1
            self._start_live()
            if self._intervals:
                from hean.telemetry.intervals import LatencyIntervals

                self.latency = LatencyIntervals(start_unix=time.time())
                self._sampled = self._flushed = time.monotonic()
            result.reason = self._watch(t_start)
            result.live = self._stop_live()
            result.feed_s = time.monotonic() - t_start
            if result.reason == "live-feed-failed":
                result.exit_code, result.error = 3, self._failure
            if result.reason == "worker-died":
                result.exit_code, result.error = 3, self._failure
                if self._drain_journal(self.cfg.engine.drain_timeout_s):
                    self._stop_workers(grace_s=2.0)  # the live ones leave on STOP: the journal closes its file
                elif self.journal:
                    self._stop_workers(grace_s=2.0)  # nothing more arrives: what the journal left is final
                    self._recover_journal()
            else:
                self.ctl[C.STOP_FEED] = 1
                if not self._drain(self.cfg.engine.drain_timeout_s):
                    dead = self._dead_worker()
                    if dead:
                        self.ctl[C.HALT] = 1
                        result.exit_code, result.error, result.reason = 3, dead, "worker-died"
                        self._drain_journal(self.cfg.engine.drain_timeout_s)
                self._stop_workers(grace_s=5.0)
                dead = self._dead_worker()
                if dead and not result.error:
                    result.exit_code, result.error, result.reason = 3, dead, "worker-died"
            result.elapsed_s = time.monotonic() - t_start
            if self.latency is not None:
                self.latency.add(time.time(), self.latency_hists())  # the last, partial interval
                self.latency.flush(self._intervals)
            result.latency = self.latency
            result.messages = self.messages()
            result.feed_s = self.publishing_s(result.feed_s)
            result.telemetry = self.snapshot()
            result.rings = {k: {"written": st["write"], "read": st["read"]}
                            for k, st in ((k, r.stats()) for k, r in self.rings.items())}  # fmt: skip
        except EngineError as e:
            result.exit_code, result.error, result.reason = 2, str(e), "start-failed"
        finally:
            self._stop_live()
            if self.ctl is not None:
                self.ctl[C.HALT] = 1 if result.exit_code else self.ctl[C.HALT]
                self.ctl[C.STOP] = 1
            self._kill_workers()
            self._cleanup()
            import shutil

            for folder in (self._replay_dir, self._requests_dir):
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
            result.controls = list(self.controls)
            for s, h in old.items():
                signal.signal(s, h)
            if self._own_affinity is not None:
                os.sched_setaffinity(0, self._own_affinity)
        return result

    def _start_live(self) -> None:
        """A live feed: its client starts in a thread of this process once the workers run (so nothing it
        receives waits on a compile), pushing into the feed's ``live`` ring (hean.live.ingest)."""
        self._live = None
        if self.cfg.feed.source != "live":
            return
        from hean.engine.build import symbol_table
        from hean.live.ingest import LiveIngest

        feed = self.blocks.get("feed")
        self._live = LiveIngest(
            self.cfg, symbol_table(self.cfg), self.rings["live-feed"], feed.block.counters if feed else None
        )
        self._live.start()

    def _stop_live(self) -> dict:
        """Stop the live client (if any): its counters, stale windows and last error for the summary."""
        live, self._live = getattr(self, "_live", None), None
        if live is None:
            return {}
        live.stop()
        c = live.client
        return {
            "venue": c.spec.name,
            "counters": live.stats(),
            "stale_windows": [
                {"symbol": w.symbol, "reason": w.reason, "start_ns": w.start_ns, "end_ns": w.end_ns}
                for w in c.stale_windows
            ],
            "last_error": c.last_error,
            "malformed": list(c.decoder.reasons) if c.decoder else [],
            "recorded": [str(p) for p in live.recorder.paths()] if live.recorder else [],
        }

    def _keep_off_workers(self) -> None:
        """Move the supervisor onto the CPUs no worker is pinned to, if there are any, for the run.

        Done after the workers started (they inherit the mask at fork) and restored at the end; when every
        CPU has a worker, or a worker is unpinned, the supervisor stays where the scheduler puts it.
        """
        free = self._spare_cpus()
        if free:
            self._own_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(free))

    def _watch(self, t_start: float) -> str:
        sleeper = _Sleeper([p.pid for p in self.procs], (self._notify,))
        try:
            return self._watch_loop(t_start, sleeper)
        finally:
            sleeper.close()

    def _watch_loop(self, t_start: float, sleeper: _Sleeper) -> str:
        from hean.records import ControlCommand

        duration = self.cfg.engine.duration_s
        last_progress = 0.0
        while True:
            elapsed = time.monotonic() - t_start
            nap = self.WATCH_S
            if duration:
                nap = min(nap, duration - elapsed)
            if self.progress:
                nap = min(nap, last_progress + 0.25 - elapsed)
            sleeper.wait(nap)
            self._beat()
            if self._live is not None:
                self._live.publish_counters()
                if self._live.client.failed:  # no market data any more: trading stops with the run
                    self.ctl[C.HALT] = 1
                    self._failure = self._live.client.failed
                    return "live-feed-failed"
            dead = self._dead_worker()
            if dead:
                self.ctl[C.HALT] = 1  # at once: the router sends nothing more
                self._failure = dead
                return "worker-died"
            while self._pending_control:
                cmd = self._pending_control.pop(0)
                self.send_control(cmd)
                self._record("signal", f"{ControlCommand(cmd).name.lower()} every symbol")
            self._serve_requests()
            self._new_day_if_due(time.time())
            if self.latency is not None and time.monotonic() - self._sampled >= self.INTERVAL_S:
                self._sampled = time.monotonic()
                self.latency.add(time.time(), self.latency_hists())
                if self._sampled - self._flushed >= self.FLUSH_S:
                    self._flushed = self._sampled
                    self.latency.flush(self._intervals)
            if self._signal is not None:
                return f"signal {signal.Signals(self._signal).name}"
            if self.ctl[C.FEED_DONE]:
                return "feed-done"
            elapsed = time.monotonic() - t_start
            if duration and elapsed >= duration:
                return "duration"
            if self.progress and elapsed - last_progress >= 0.25:
                last_progress = elapsed
                self.progress(self, elapsed)

    # ---- operator requests and the trading day ------------------------------------------------------------
    def _record(self, by: str, what: str) -> None:
        """Log an applied control (the summary's ``controls``; stderr while the run goes on)."""
        utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.controls.append({"utc": utc, "by": by, "what": what})
        print(f"hean: {utc} {what} ({by})", file=sys.stderr)

    def _serve_requests(self) -> None:
        """Answer every request in the mailbox (hean.engine.requests): apply it, or say why not."""
        from hean.engine import requests as rq

        if not self._requests_dir:
            return
        for path, req in rq.pending(self._requests_dir):
            try:
                if req is None:
                    raise ValueError("not a JSON object")
                controls, what = rq.resolve(req, self.cfg.symbols)
            except ValueError as e:
                rq.answer(path, {"ok": False, "error": str(e)})
                continue
            for kind, sym, side, arg in controls:
                self.send_control(kind, sym, side, arg)
            self._record("request", what)
            rq.answer(path, {"ok": True, "applied": what, "utc": self.controls[-1]["utc"]})

    def _new_day_if_due(self, now_unix: float) -> None:
        """At ``engine.daily_reset_utc`` each day: the daily loss limit counts from the current equity."""
        from hean.records import ControlCommand

        if self._next_day is None or now_unix < self._next_day:
            return
        self.send_control(int(ControlCommand.NEW_DAY))
        self._record("daily_reset_utc", f"new trading day at {self.cfg.engine.daily_reset_utc} UTC")
        from hean.engine.requests import next_day_start

        self._next_day = next_day_start(now_unix, self.cfg.engine.daily_reset_utc)

    def publishing_s(self, watched_s: float) -> float:
        """The feed's publishing time: from its first message to its last, as the feed stamped them -- not the
        supervisor's view, which sees the end of a replay only at its next look (up to WATCH_S late, which made
        a short replay's rate several times too low). ``watched_s`` when the feed stamped fewer than two."""
        from hean.stages.feed import U_FIRST_NS, U_LAST_NS

        feed = self.blocks.get("feed")
        if feed is None:
            return watched_s
        c = feed.block.counters
        first, last = int(c[U_FIRST_NS]), int(c[U_LAST_NS])
        return (last - first) / 1e9 if last > first > 0 else watched_s

    def messages(self) -> int:
        """Messages the feed has published so far (its telemetry's ``messages`` counter)."""
        from hean.stages.feed import U_MESSAGES

        feed = self.blocks.get("feed")
        return int(feed.block.counters[U_MESSAGES]) if feed is not None else 0

    def latency_hists(self) -> dict:
        """Every stage's histogram rows as ``<stage>.<row>``, and the router's end-to-end one as
        ``tick_to_trade`` (live views into the blocks: LatencyIntervals copies them)."""
        out = {}
        for stage, b in self.blocks.items():
            for i, name in enumerate(b.hist_names):
                out[f"{stage}.{name}"] = b.block.hists[i]
                if stage == "router" and name == "e2e":
                    out["tick_to_trade"] = b.block.hists[i]
        return out

    def snapshot(self) -> dict:
        """Copies of every stage's counters, histograms and risk state (taken before unlinking)."""
        return {
            stage: {
                "counters": b.block.counters.copy(),
                "hists": {name: b.block.hists[i].copy() for i, name in enumerate(b.hist_names)},
                "risk": b.block.risk.copy(),
                # the stage's own counters by name (C_USER_BASE + i: hean.stages.declare.Stage.user_counters)
                "user": {n: int(b.block.counters[C_USER_BASE + i]) for i, n in enumerate(b.user_counters)},
            }
            for stage, b in self.blocks.items()
        }
