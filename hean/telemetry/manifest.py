"""The run manifest: how an observer (``hean top``) finds a running engine and everything it published.

The engine writes one manifest per run, in a shared-memory segment named ``hean-<run_id>-manifest``
(:func:`manifest_name`), when every stage's telemetry block and every ring exists, and unlinks it at
shutdown (:func:`remove_manifest`). The segment holds an int64 byte length followed by a msgspec-JSON
document (:class:`Manifest`). A run is *running* while its engine pid is alive; a manifest whose engine is
dead is *stale* (a crashed run) and is reported as such, never attached to as if live.

Engine side::

    m = Manifest(run_id=rid, engine_pid=os.getpid(), start_ns=now, start_unix=time.time(),
                 clock_source="CLOCK_MONOTONIC", cpus=[0, 1],
                 workers=[WorkerInfo(name="w0", cpu=0, wait="spin", stages=["feed", "book"])],
                 stages=[StageInfo(name="feed", block=block_name(rid, "feed"), worker="w0", cpu=0,
                                   outputs=["md"])],
                 rings=[RingInfo(name="md", segment="hean-<rid>-ring-md", producer="feed", consumer="book")],
                 risk_block=block_name(rid, "risk"))
    write_manifest(m)         # ... run ...      remove_manifest(rid)

Observer side: :func:`find_run` (the only running one, or the given id) / :func:`list_runs`.
"""

from __future__ import annotations

import re

import msgspec
import numpy as np

from hean.procs import process_alive as pid_alive
from hean.shm import SegmentError, attach_segment, create_segment, list_segment_names, unlink_segment
from hean.telemetry.block import BlockError, validate_id

__all__ = [
    "MANIFEST_VERSION",
    "BadRunId",
    "Manifest",
    "ManifestError",
    "RingInfo",
    "RunStatus",
    "StageInfo",
    "WorkerInfo",
    "find_run",
    "list_runs",
    "manifest_name",
    "read_manifest",
    "remove_manifest",
    "write_manifest",
]

MANIFEST_VERSION = 1
_NAME_RE = re.compile(r"^hean-([A-Za-z0-9_]{1,48})-manifest$")


class ManifestError(RuntimeError):
    """No such run, several runs, or an unreadable manifest; the message says which and what to do."""


class BadRunId(ManifestError):
    """A run id that cannot name a run (a usage error: exit code 2)."""


class StageInfo(msgspec.Struct, kw_only=True):
    name: str
    block: str  # telemetry block segment name (hean.telemetry.block.block_name)
    worker: str = ""  # worker process running the stage
    cpu: int = -1  # CPU the worker is pinned to, -1 = not pinned
    inputs: list[str] = []  # logical ring names this stage consumes
    outputs: list[str] = []  # logical ring names this stage produces


class RingInfo(msgspec.Struct, kw_only=True):
    name: str  # logical name, e.g. "md"
    segment: str  # shared-memory segment name of the ring
    producer: str = ""  # stage name
    consumer: str = ""  # stage name
    capacity: int = 0


class WorkerInfo(msgspec.Struct, kw_only=True):
    name: str
    cpu: int = -1
    wait: str = ""  # wait strategy: spin / spin-yield / spin-sleep
    stages: list[str] = []
    pid: int = 0


class Manifest(msgspec.Struct, kw_only=True):
    run_id: str
    engine_pid: int
    start_ns: int  # CLOCK_MONOTONIC ns at start (compare with the stages' heartbeats)
    start_unix: float  # wall-clock seconds at start (for display)
    clock_source: str = "CLOCK_MONOTONIC"
    cpus: list[int] = []
    workers: list[WorkerInfo] = []
    stages: list[StageInfo] = []
    rings: list[RingInfo] = []
    risk_block: str | None = None  # telemetry block holding the risk state, if any
    symbols: list[str] = []  # symbol names by id (rows of the risk state)
    reject_reasons: list[str] = []  # reject reason names by code
    config: str = ""  # the config file or a short description of the run
    requests: str = ""  # the supervisor's mailbox folder for operator requests (hean.engine.requests)
    journal: str = ""  # the run's journal folder (hean.journal; "" without one)
    version: int = MANIFEST_VERSION


class RunStatus(msgspec.Struct):
    run_id: str
    manifest: Manifest | None
    alive: bool
    error: str = ""  # why the manifest could not be read


def manifest_name(run_id: str) -> str:
    """``hean-<run_id>-manifest``."""
    return f"hean-{validate_id(run_id, 'run id')}-manifest"


def write_manifest(manifest: Manifest) -> str:
    """Create the run's manifest segment (an existing one is an error); returns its name."""
    name = manifest_name(manifest.run_id)
    data = msgspec.json.encode(manifest)
    seg = create_segment(name, 8 + len(data))
    try:
        seg.buf[8 : 8 + len(data)] = data
        seg.array(np.int64, 1, 0)[0] = len(data)  # last: a zero length means "being written"
    except Exception:
        seg.close()
        unlink_segment(name)
        raise
    seg.close()
    return name


def read_manifest(run_id: str) -> Manifest:
    """The manifest of ``run_id``; ManifestError when it does not exist or cannot be decoded."""
    name = manifest_name(run_id)
    try:
        seg = attach_segment(name, readonly=True)
    except SegmentError:
        raise ManifestError(f"no run {run_id!r}: manifest segment {name!r} not found") from None
    try:
        n = int(seg.array(np.int64, 1, 0)[0])
        if not 0 < n <= seg.size - 8:
            raise ManifestError(f"manifest {name!r} is empty or being written (length {n})")
        data = bytes(seg.buf[8 : 8 + n])
    finally:
        seg.close()
    try:
        m = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as e:
        raise ManifestError(f"manifest {name!r} is not a valid HEAN manifest: {e}") from None
    if m.version != MANIFEST_VERSION:
        raise ManifestError(f"manifest {name!r} has version {m.version}, expected {MANIFEST_VERSION}")
    return m


def remove_manifest(run_id: str) -> bool:
    """Unlink the run's manifest (True when it existed)."""
    return unlink_segment(manifest_name(run_id))


def list_runs() -> list[RunStatus]:
    """Every run with a manifest in /dev/shm, alive or stale, sorted by run id."""
    out = []
    for seg in list_segment_names("hean-"):
        match = _NAME_RE.match(seg)
        if not match:
            continue
        run_id = match.group(1)
        try:
            m = read_manifest(run_id)
        except ManifestError as e:
            out.append(RunStatus(run_id, None, False, str(e)))
            continue
        out.append(RunStatus(run_id, m, bool(pid_alive(m.engine_pid))))
    return out


def find_run(run_id: str | None = None) -> Manifest:
    """The manifest of a *running* engine: ``run_id``'s, or the only running one when ``run_id`` is None.

    Raises ManifestError with an operator-facing message when there is none, several, or the run is stale.
    """
    if run_id is not None:
        try:
            validate_id(run_id, "run id")
        except BlockError as e:
            raise BadRunId(str(e)) from None
        m = read_manifest(run_id)
        if not pid_alive(m.engine_pid):
            raise ManifestError(
                f"run {run_id!r} is not running (engine pid {m.engine_pid} is gone); its segments are stale"
            )
        return m
    runs = list_runs()
    alive = [r for r in runs if r.alive]
    if not alive:
        stale = [r.run_id for r in runs]
        hint = f" (stale manifests: {', '.join(stale)})" if stale else ""
        raise ManifestError(f"no HEAN engine is running{hint}; start one with `hean run`")
    if len(alive) > 1:
        ids = ", ".join(r.run_id for r in alive)
        raise ManifestError(f"{len(alive)} engines are running ({ids}); name one: `hean top RUN_ID`")
    return alive[0].manifest
