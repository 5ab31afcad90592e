"""``hean bench backtest``'s harness: every system in a process of its own, none left behind, a dead one
reported instead of waited for. (The figures themselves are a benchmark's, not a test's.)"""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest
from conftest import data_file

from hean.bench import backtest as bb
from hean.feeds.cache import cached_events
from hean.feeds.native import write_native
from hean.records import F_LAST_IN_GROUP

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def short_recording(tmp_path_factory):
    """The first ~20,000 events of the Binance sample (whole messages) as a native file."""
    got = cached_events(data_file("binance-usdm-btcusdt-20240808.gz"), "binance-usdm")
    ev = np.asarray(got.events)
    ends = np.flatnonzero((ev["flags"] & F_LAST_IN_GROUP) != 0)
    cut = int(ends[ends >= 20_000][0]) + 1
    path = tmp_path_factory.mktemp("bench") / "short.hev"
    write_native(path, ev[:cut], got.report.symbols)
    return path


def test_each_system_runs_in_a_process_of_its_own_and_none_is_left(short_recording):
    before = {p.pid for p in multiprocessing.active_children()}
    r = bb.measure(short_recording, "native", 2, [], 1_000_000)
    hean, merged = r["systems"]
    assert (hean["system"], merged["system"]) == ("HEAN", "HEAN merged")
    assert hean["orders"] > 0 and hean["same_every_round"] and merged["same_every_round"]
    # the two files merged by receive time trade exactly as the one file
    assert {k: merged[k] for k in ("orders", "new", "replace", "cancel", "fills")} == {
        k: hean[k] for k in ("orders", "new", "replace", "cancel", "fills")
    }
    assert len(hean["wall_s"]) == 2 and all(w >= lp > 0 for w, lp in zip(hean["wall_s"], hean["loop_s"], strict=True))
    assert {p.pid for p in multiprocessing.active_children()} == before


def test_an_unknown_peer_is_refused_before_any_process_starts(short_recording):
    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(ValueError, match="unknown peers zipline"):
        bb.measure(short_recording, "native", 1, ["zipline"], 1_000_000)
    assert {p.pid for p in multiprocessing.active_children()} == before


def test_a_system_whose_process_dies_is_reported_not_waited_for(short_recording):
    sp = bb._SystemProcess(multiprocessing.get_context("spawn"), "HEAN", short_recording, "native", 1_000_000, [])
    try:
        status, got = sp.answer()
        assert status == "ready" and got["runs"] == ["HEAN", "HEAN merged"]
        os.kill(sp.proc.pid, signal.SIGKILL)
        sp.proc.join(timeout=30)
        status, got = sp.run("HEAN")
        assert (status, got) == ("failed", "its process died (exit code -9)")
    finally:
        sp.close()
    assert not sp.proc.is_alive()
