"""Shared test fixtures: where the recordings are, and a guard that no test leaks a /dev/shm segment."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the recordings tests need are kept in the repo (tests/data/, sources and licences in its README.md);
# HEAN_DATA points the tests at another directory (unset or empty: tests/data)
DATA_DIR = Path(os.environ.get("HEAN_DATA") or ROOT / "tests" / "data")
SHM_DIR = Path("/dev/shm")
_names = itertools.count()


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
