"""``hean rings``: listing, inspecting and cleaning rings, driven through ``hean.cli.main``."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest

import hean.rings.inspect as ring_inspect
import hean.shm
from hean.cli import main
from hean.records import MARKET_EVENT
from hean.rings import create
from hean.rings import layout as L
from hean.rings.spsc import header_store
from hean.shm import SHM_DIR, create_segment, unlink_segment


def _exit_now():
    os._exit(0)


def _dead_pid() -> int:
    p = mp.get_context("fork").Process(target=_exit_now)
    p.start()
    p.join(10)
    return p.pid


def test_no_segments_says_so(tmp_path, monkeypatch, capsys):
    import hean.engine.runs as runs  # imported here, not inside the patch: it would keep the patched folder

    monkeypatch.setattr(hean.shm, "SHM_DIR", tmp_path)
    monkeypatch.setattr(ring_inspect, "SHM_DIR", tmp_path)
    monkeypatch.setattr(runs, "SHM_DIR", tmp_path)
    monkeypatch.setattr(runs.tempfile, "gettempdir", lambda: str(tmp_path))  # no other run's temp folders
    assert main(["rings"]) == 0
    assert capsys.readouterr().out.strip() == f"no HEAN segments in {tmp_path}"
    assert main(["rings", "clean"]) == 0
    assert "nothing stale to remove" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_list_inspect_and_clean(shm_name, capsys):
    live, stale, other = shm_name + "-live", shm_name + "-stale", shm_name + "-other"
    rings = [create(live, MARKET_EVENT, 8), create(stale, MARKET_EVENT, 16)]
    create_segment(other, 128).close()
    try:
        rings[0].push(np.zeros(3, MARKET_EVENT))
        dead = _dead_pid()
        header_store(rings[1].hdr, L.PRODUCER_PID, dead)  # the only recorded owner, and dead
        capsys.readouterr()

        assert main(["rings"]) == 0
        out = capsys.readouterr().out
        lines = {x.split()[0].rstrip(":"): x for x in out.splitlines() if x.startswith(shm_name)}
        assert lines[live].split()[1:6] == ["8", "64B", "3", "37.5", "0"]
        assert lines[live].endswith("live") and lines[stale].endswith("STALE")
        assert f"{dead} (dead)" in lines[stale]
        assert lines[other].startswith(f"{other}: not a ring")

        assert main(["rings", "--json", "-"]) == 0
        data = json.loads(capsys.readouterr().out)
        by_name = {r["name"]: r for r in data["rings"]}
        assert by_name[live]["fill"] == 3 and by_name[live]["creator_pid"] == os.getpid()
        assert by_name[stale]["stale"] and not by_name[live]["stale"]
        assert other in data["unreadable"]

        assert main(["rings", "inspect", live]) == 0
        text = capsys.readouterr().out
        assert "capacity  8 slots of 64 bytes" in text and "-rw-------" in text
        assert "fill      3 (37.5%)" in text and "state     live" in text

        assert main(["rings", "inspect", shm_name + "-missing"]) == 1
        assert "not found" in capsys.readouterr().err

        assert main(["rings", "clean", "--dry-run", live, stale]) == 0
        assert f"would remove /dev/shm/{stale} (ring of no run: no recorded owner alive)" in capsys.readouterr().out
        assert (SHM_DIR / stale).exists()

        assert main(["rings", "clean", live, stale, other]) == 0
        assert capsys.readouterr().out.strip() == f"removed /dev/shm/{stale} (ring of no run: no recorded owner alive)"
        assert not (SHM_DIR / stale).exists()
        assert (SHM_DIR / live).exists() and (SHM_DIR / other).exists()
    finally:
        for r in rings:
            r.close()
        for name in (live, stale, other):
            unlink_segment(name)


def test_inspect_needs_a_name(capsys):
    assert main(["rings", "inspect"]) == 2
    assert "give at least one ring name" in capsys.readouterr().err
