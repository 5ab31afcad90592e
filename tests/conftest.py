"""Shared test fixtures: where the recordings are, and a guard that no test leaks a /dev/shm segment."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("HEAN_DATA", ROOT.parent / "shared" / "data"))
SHM_DIR = Path("/dev/shm")
_names = itertools.count()


def data_file(name: str) -> Path:
    """Path of a shared recording; a clear failure (never a skip) when the data is not beside the repo."""
    path = DATA_DIR / name
    if not path.exists():
        pytest.fail(f"recording {path} not found: tests read ../shared/data (or set HEAN_DATA)")
    return path


def _hean_segments() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("hean")}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Every test must unlink what it created: fail the test that leaves a hean segment behind."""
    before = _hean_segments()
    yield
    leaked = _hean_segments() - before
    for name in leaked:
        (SHM_DIR / name).unlink(missing_ok=True)
    assert not leaked, f"test leaked /dev/shm segments: {sorted(leaked)}"


@pytest.fixture
def shm_name() -> str:
    """A fresh segment name under the hean prefix, unique to this test process."""
    return f"hean-test-{os.getpid()}-{next(_names)}"
