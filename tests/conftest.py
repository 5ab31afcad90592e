"""Shared test fixtures: where the recordings are, a guard that no test leaks a /dev/shm segment, and the
background compile of what late tests need (``precompile.py``)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the recordings tests need are kept in the repo (tests/data/, sources and licences in its README.md);
# HEAN_DATA points the tests at another directory (unset or empty: tests/data)
DATA_DIR = Path(os.environ.get("HEAN_DATA") or ROOT / "tests" / "data")
SHM_DIR = Path("/dev/shm")
_names = itertools.count()
_precompile: dict = {}  # the background compile of the session (pytest_sessionstart): its process and folder


def data_file(name: str) -> Path:
    """Path of a recording in :data:`DATA_DIR`; a clear failure (never a skip) when it is missing."""
    path = DATA_DIR / name
    if not path.exists():
        pytest.fail(f"recording {path} not found: tests read tests/data/ (or the directory HEAN_DATA names)")
    return path


def _hean_segments() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("hean")}


def _in_use_by_others(names: set[str]) -> set[str]:
    """The segments among ``names`` that belong to another live process (not this test process): another run
    or another test session on the machine, none of this test's business. A run's segment counts as in use
    while any segment of that run is (a manifest, say, is written once and held by nobody)."""
    from hean.engine.runs import path_users, run_id_of

    me = os.getpid()
    busy = {Path(p).name for p, pids in path_users().items() if pids - {me}}
    busy_runs = {run_id_of(n) for n in busy} - {None}
    return {n for n in names if n in busy or run_id_of(n) in busy_runs}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Every test must unlink what it created: fail the test that leaves a hean segment behind (one that no
    other process uses), and remove it. Segments other live processes use are never touched."""
    before = _hean_segments()
    yield
    leaked = _hean_segments() - before
    if leaked:
        leaked -= _in_use_by_others(leaked)
    for name in leaked:
        (SHM_DIR / name).unlink(missing_ok=True)
    assert not leaked, f"test leaked /dev/shm segments: {sorted(leaked)}"


@pytest.fixture
def shm_name() -> str:
    """A fresh segment name under the hean prefix, unique to this test process."""
    return f"hean-test-{os.getpid()}-{next(_names)}"


def pytest_sessionstart(session) -> None:
    """Start compiling, in a process of its own, what only late tests need (``precompile.py``), unless
    HEAN_TEST_PRECOMPILE=0 or only a few tests were asked for (then each test compiles what it needs)."""
    if os.environ.get("HEAN_TEST_PRECOMPILE", "1") == "0":
        return
    folder = Path(tempfile.mkdtemp(prefix="hean-test-precompile-"))
    log = open(folder / "log", "wb")  # (written by the process until the session ends)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("precompile.py")), str(folder)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _precompile.update(proc=proc, folder=folder, log=log)


def pytest_collection_modifyitems(session, config, items) -> None:
    """The tests that wait for the background compile (``precompiled``) run last, in their own order.

    Why: alphabetically they come early (test_book_cli, test_faults, test_l3_engine), and one that reached its
    job before the background process had compiled it idled one CPU for as long (test_l3_engine's first test
    waited 48 s on a fresh clone). Run after everything else, they find their loops compiled while the other
    tests kept both CPUs busy."""
    if os.environ.get("HEAN_TEST_PRECOMPILE", "1") == "0":
        return
    waiting = [item for item in items if "precompiled" in getattr(item, "fixturenames", ())]
    if waiting:
        late = set(map(id, waiting))
        items[:] = [item for item in items if id(item) not in late] + waiting


def pytest_sessionfinish(session, exitstatus) -> None:
    """The background compile never outlives the session: killed by its pid, its folder removed."""
    proc = _precompile.get("proc")
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        _precompile["log"].close()
        shutil.rmtree(_precompile["folder"], ignore_errors=True)


@pytest.fixture(scope="session")
def precompiled():
    """``precompiled(job)``: wait until the background compile has finished ``job`` (a name of
    ``precompile.JOBS``), so the test loads it from numba's cache instead of compiling it a second time beside
    it. Returns at once when there is no background compile, when it died, or when the job failed (the test
    then compiles it itself and meets the real error)."""

    def wait(job: str, timeout_s: float = 900.0) -> None:
        proc, folder = _precompile.get("proc"), _precompile.get("folder")
        if proc is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if (folder / f"{job}.done").exists() or (folder / f"{job}.failed").exists():
                return
            time.sleep(0.1)

    return wait
