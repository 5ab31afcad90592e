"""A run's resources -- its segments in /dev/shm and its folders in the temp directory -- who uses them, and
removing what nobody uses any more.

Why this module: a run is live while any of its processes is, and only then. That is decided from the
processes themselves, never from a file that may be missing (a manifest written late, a control block
already unlinked): the owners of a run are the processes that hold one of its segments open or mapped for
writing, or a file in one of its temp folders (``/proc/<pid>/fd`` and ``/proc/<pid>/maps``).
Read-only maps and descriptors (``hean top``) are observers, not owners. Every process of a run maps the run's control
block for its whole life, and a segment is opened before it exists (``shm_open(O_CREAT)`` returns the
descriptor it is created with) and mapped before the descriptor is closed, so a segment is never without
its owner in between: reading a process's descriptors before its maps sees it either way.

Names: a run ``R`` owns ``/dev/shm/hean-R-<suffix>`` for the suffixes in :func:`run_suffixes` (control
block, manifest, positions, tops, telemetry blocks ``tm-<stage>``, rings named by edge) and
``<tmp>/hean-R-<what>-*`` folders (a replay's native copy, the cold-start compile claims). Run ids are
``[A-Za-z0-9_]`` (no dash), so the id is the text between the first two dashes.

Who removes what:

* the supervisor removes what it created, at the end of its run, whatever the ending;
* a worker that outlives its supervisor (``kill -9``) removes the run's leftovers once every other process
  of the run is gone (:func:`leave_orphaned_run`);
* a new run removes the leftovers of an earlier run with the same id once every owner is gone, and
  ``hean rings clean`` removes every run nobody owns (:func:`scan_runs`, :func:`sweep`).

Segments of another user are never removed (and cannot be: ``/dev/shm`` is sticky); they are reported.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hean.procs import process_alive, process_state, same_process
from hean.shm import SHM_DIR, list_segment_names, unlink_segment

__all__ = [
    "RunResources",
    "find_run_resources",
    "leave_orphaned_run",
    "path_users",
    "run_id_of",
    "run_suffixes",
    "run_temp_dir",
    "scan_runs",
    "sweep",
]

_SEGMENT_RE = re.compile(r"^hean-([A-Za-z0-9_]{1,48})-(.+)$")
_TEMP_RE = re.compile(r"^hean-([A-Za-z0-9_]{1,48})-(replay|compile|requests)-")
_PROC = Path("/proc")


def run_suffixes() -> set[str]:
    """The segment suffixes a run creates (``hean-<run>-<suffix>``); ``tm-*`` covers the telemetry blocks."""
    from hean.engine.topology import EDGES, SHARED_VIEWS

    return {"ctl", "manifest"} | {v.key for v in SHARED_VIEWS} | {e.key for e in EDGES}


def run_id_of(segment: str) -> str | None:
    """The run a segment belongs to, or None for a segment that is not a run's (a test or bench ring)."""
    m = _SEGMENT_RE.match(segment)
    if not m:
        return None
    suffix = m.group(2)
    if suffix.startswith("tm-") or suffix in run_suffixes():
        return m.group(1)
    # a ring of another pipeline's registry (a stage added by a user): a run's while its control block exists
    return m.group(1) if (SHM_DIR / f"hean-{m.group(1)}-ctl").exists() else None


def run_temp_dir(run_id: str, what: str) -> str:
    """A new private folder of the run in the temp directory (``hean-<run>-<what>-XXXX``), swept with it."""
    return tempfile.mkdtemp(prefix=f"hean-{run_id}-{what}-")


# ---------------------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------------------
def _writable_fd(base: Path, fd: str) -> bool:
    """Whether descriptor ``fd`` of the process was opened for writing (``/proc/<pid>/fdinfo``): Python's
    ``mmap`` keeps a duplicate of the descriptor it maps, so observers hold read-only ones."""
    with open(base / "fdinfo" / fd) as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    return False


def _owned_paths(pid: str, tmp: str) -> set[str]:
    """Paths under /dev/shm/hean* and <tmp>/hean-* that process ``pid`` holds open or maps, for writing.

    Descriptors are read before maps: a segment goes from "open" to "mapped" by mapping it before closing the
    descriptor, so a process in the middle is seen one way or the other.
    """
    shm = str(SHM_DIR) + "/hean"
    mine = tmp.rstrip("/") + "/hean-"
    found: set[str] = set()
    base = _PROC / pid
    try:
        for fd in os.listdir(base / "fd"):
            try:
                target = os.readlink(base / "fd" / fd)
                if target.startswith((shm, mine)) and _writable_fd(base, fd):
                    found.add(target)
            except OSError:
                continue
        with open(base / "maps", "rb") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6 or parts[1][1:2] != b"w":
                    continue  # read-only maps are observers (hean top), not owners
                path = parts[5].rstrip(b"\n").decode(errors="replace")
                if path.startswith((shm, mine)) and not path.endswith(" (deleted)"):
                    found.add(path)
    except OSError:
        pass  # gone meanwhile, or another user's (whose segments are reported as foreign anyway)
    return found


def path_users() -> dict[str, set[int]]:
    """Every HEAN segment or temp path in use -> the pids using it (see the module docstring)."""
    tmp = tempfile.gettempdir()
    users: dict[str, set[int]] = {}
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        for path in _owned_paths(entry, tmp):
            users.setdefault(path, set()).add(int(entry))
    return users


# ---------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------
@dataclass
class RunResources:
    """Everything of one run that exists now, and who is using it."""

    run_id: str
    segments: list[str] = field(default_factory=list)  # segment names in /dev/shm
    temp_dirs: list[str] = field(default_factory=list)  # paths
    owners: set[int] = field(default_factory=set)  # pids holding any of it
    foreign_uid: int | None = None  # set when a segment belongs to another user
    supervisor_pid: int = 0  # from the control block, when readable

    @property
    def live(self) -> bool:
        return bool(self.owners)

    def describe(self) -> str:
        """Why the run is live, stale or foreign, in words (for `hean rings clean` and start-up errors)."""
        if self.foreign_uid is not None:
            return f"a run of user {_user_name(self.foreign_uid)}"
        if self.owners:
            sup = f"supervisor pid {self.supervisor_pid}; " if self.supervisor_pid else ""
            return f"a live run ({sup}processes {', '.join(map(str, sorted(self.owners)))})"
        return "a stale run (no process of it is left)"


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _supervisor_pid(run_id: str) -> int:
    from hean.engine import control as C

    try:
        with open(SHM_DIR / C.ctl_name(run_id), "rb") as f:
            words = f.read(8 * (C.SUP_PID + 1))
        if len(words) == 8 * (C.SUP_PID + 1) and int.from_bytes(words[:8], "little") == C.CTL_MAGIC:
            return int.from_bytes(words[8 * C.SUP_PID :], "little", signed=True)
    except OSError:
        pass
    from hean.telemetry.manifest import ManifestError, read_manifest

    try:
        return read_manifest(run_id).engine_pid  # a run observed through its manifest only (tests, tools)
    except ManifestError:
        return 0


def scan_runs(ignore_pids: set[int] | frozenset[int] = frozenset()) -> list[RunResources]:
    """Every run with a segment in /dev/shm or a folder in the temp directory, sorted by run id.

    ``ignore_pids``: processes not to count as owners (a worker cleaning up after its own run).
    """
    runs: dict[str, RunResources] = {}
    uid = os.geteuid()
    for name in list_segment_names("hean-"):
        rid = run_id_of(name)
        if rid is None:
            continue
        res = runs.setdefault(rid, RunResources(rid))
        res.segments.append(name)
        try:
            st = os.stat(SHM_DIR / name)
        except OSError:
            continue
        if st.st_uid != uid:
            res.foreign_uid = st.st_uid
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        entries = []
    for entry in entries:
        m = _TEMP_RE.match(entry)
        path = os.path.join(tmp, entry)
        if m and os.path.isdir(path) and not os.path.islink(path):
            runs.setdefault(m.group(1), RunResources(m.group(1))).temp_dirs.append(path)
    if not runs:
        return []
    users = path_users()
    for res in runs.values():
        mine = [str(SHM_DIR / s) for s in res.segments]
        for path, pids in users.items():
            if path in mine or any(path.startswith(d + "/") for d in res.temp_dirs):
                res.owners |= pids - set(ignore_pids)
        res.supervisor_pid = _supervisor_pid(res.run_id)
    return [runs[k] for k in sorted(runs)]


def find_run_resources(run_id: str, ignore_pids: set[int] | frozenset[int] = frozenset()) -> RunResources:
    """The resources of ``run_id`` (empty when it has none)."""
    for res in scan_runs(ignore_pids):
        if res.run_id == run_id:
            return res
    return RunResources(run_id)


def sweep(res: RunResources, dry_run: bool = False, ignore_pids: set[int] | frozenset[int] = frozenset()) -> list[str]:
    """Remove every segment and temp folder of a run nobody owns; returns what was (or would be) removed.

    The owners are looked up again just before: a run that came alive meanwhile, or that belongs to another
    user, is left alone (an empty list).
    """
    fresh = find_run_resources(res.run_id, ignore_pids)
    if fresh.live or fresh.foreign_uid is not None:
        return []
    removed = [str(SHM_DIR / s) for s in fresh.segments] + fresh.temp_dirs
    if dry_run:
        return removed
    for name in fresh.segments:
        unlink_segment(name)
    for path in fresh.temp_dirs:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# ---------------------------------------------------------------------------------------------------------
# a worker without its supervisor
# ---------------------------------------------------------------------------------------------------------
def _supervisor_gone(pid: int, wait_s: float) -> bool:
    """True once the supervisor has exited; False when it is stopped (SIGSTOP: it cleans up itself when it
    continues) or still there after ``wait_s``. A killed supervisor is noticed (its life lock) while the
    kernel is still taking it down, which takes milliseconds: wait for that."""
    deadline = time.monotonic() + wait_s
    while process_alive(pid):
        if process_state(pid) in ("T", "t") or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def leave_orphaned_run(run_id: str, ctl, me: int, wait_s: float = 2.0) -> list[str]:
    """Called by a worker that lost its supervisor, after it left its loop: clean up the run if it is the one
    to do so. Returns what it removed.

    One worker cleans (an exclusive ``flock`` on the control block's file; the others return at once). It
    waits up to ``wait_s`` for every other process of the run -- the other workers and the compile helper,
    identified by pid and start time -- to leave, kills those still there (a worker that is stopped or hung
    cannot leave by itself), and then, if the supervisor is dead rather than only stopped, removes every
    segment and temp folder of the run. A stopped supervisor cleans up itself when it continues; if it never
    does, ``hean rings clean`` removes the run once it is gone.
    """
    from hean.engine import control as C

    try:
        fd = os.open(SHM_DIR / C.ctl_name(run_id), os.O_RDONLY)
    except OSError:
        return []  # already cleaned
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []  # another process of the run is cleaning
        others = [
            (int(ctl[C.worker_word(w, C.W_PID)]), int(ctl[C.worker_word(w, C.W_START_TICKS)]))
            for w in range(int(ctl[C.N_WORKERS]))
            if w != me
        ]
        others.append((int(ctl[C.HELPER_PID]), int(ctl[C.HELPER_TICKS])))
        deadline = time.monotonic() + wait_s
        while any(same_process(p, t) for p, t in others) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid, ticks in others:
            if same_process(pid, ticks):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not _supervisor_gone(int(ctl[C.SUP_PID]), wait_s):
            return []
        deadline = time.monotonic() + wait_s
        while any(same_process(p, t) for p, t in others) and time.monotonic() < deadline:
            time.sleep(0.01)  # the killed ones release their maps as they go
        return sweep(RunResources(run_id), ignore_pids={os.getpid()})
    finally:
        os.close(fd)


def clean_stale(only: set[str] | None = None, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Remove every run nobody owns, and every stale ring that belongs to no run; returns ``(removed, kept)``
    as lines for the operator: each removed path with why it could go, each run left alone with why.

    ``only``: run ids or segment names to consider (None: all). The decision is the owners', made again
    just before each removal (:func:`sweep`).
    """
    from hean.rings import inspect as ri

    verb = "would remove" if dry_run else "removed"
    removed: list[str] = []
    kept: list[str] = []
    for res in scan_runs():
        if only is not None and res.run_id not in only and not only & set(res.segments):
            continue
        if res.live or res.foreign_uid is not None:
            kept.append(f"kept run {res.run_id}: {res.describe()}")
            continue
        paths = sweep(res, dry_run=dry_run)
        removed += [f"{verb} {p} (run {res.run_id}: no process of it is left)" for p in paths]
    infos, _ = ri.scan()
    loose = [i for i in infos if run_id_of(i.name) is None and (only is None or i.name in only)]
    for name in ri.remove_stale(loose, dry_run=dry_run):
        removed.append(f"{verb} {SHM_DIR / name} (ring of no run: no recorded owner alive)")
    return removed, kept
