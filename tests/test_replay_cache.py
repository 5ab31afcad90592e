"""The conversion cache (``hean.feeds.cache``) and the conversion it saves (issue 20).

A replay's preparation (``hean.engine.build.prepare_replay``) converts a recording once and keeps the native
event file under ``<cache root>/native``: a second preparation of the same file parses nothing (the parser is
replaced by one that fails) and gives the same events; touching the file, changing its size or asking for
other reader options is a miss; a damaged entry is found, removed and made again, never used; two processes
converting the same file at once leave one valid entry; ``hean cache info|clear`` list and remove the
entries; the folder stays within its bound, least recently used out.

The conversion itself: the numba scanner gives what the msgspec path gives on mutated captures (both
engines, strict and lenient), a gzip capture parsed while it is decompressed (in small pieces here) gives
the plain file's events, and the gunzip with or without python-isal handles members, padding and damage as
:func:`gzip.decompress` does. Every recording here is a slice of the shared Binance capture (the REST
snapshot is its line 55), so the whole file runs in seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, data_file

from hean.cli import main
from hean.engine.build import prepare_replay
from hean.engine.config import load_config
from hean.feeds import binance as B
from hean.feeds import cache as K
from hean.feeds import load_events
from hean.feeds.common import FeedError, gunzip, gunzip_pieces
from hean.feeds.native import open_native

pytestmark = pytest.mark.timeout(120)
RECORDING = "binance-usdm-btcusdt-20240808.gz"
HOUR_AGO = time.time() - 3600


@pytest.fixture(scope="module")
def capture_lines() -> list[bytes]:
    return gzip.decompress(data_file(RECORDING).read_bytes()).split(b"\n")


def write_capture(path: Path, lines: list[bytes], age_s: float = 3600.0) -> Path:
    """A capture of ``lines``, last modified ``age_s`` seconds ago (a fresher file is converted, not kept)."""
    path.write_bytes(b"\n".join(lines) + b"\n")
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


@pytest.fixture
def rec(tmp_path, capture_lines) -> Path:
    return write_capture(tmp_path / "cap.txt", capture_lines[:600])


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HEAN_CACHE_DIR", str(root))
    monkeypatch.delenv(K.ENV_MAX_GB, raising=False)
    return root / "native"


class Parses:
    """Counts the Binance parser's calls; ``forbid()`` makes any further call fail the test."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        self.allowed = True
        real = B.read_binance

        def counted(*a, **kw):
            assert self.allowed, "the recording was parsed again"
            self.calls += 1
            return real(*a, **kw)

        monkeypatch.setattr(B, "read_binance", counted)

    def forbid(self) -> None:
        self.allowed = False


@pytest.fixture
def parses(monkeypatch) -> Parses:
    return Parses(monkeypatch)


def config(path: Path, **feed):
    over = {"feed.source": "replay", "feed.path": str(path), "feed.format": "binance-usdm"}
    over.update({f"feed.{k}": v for k, v in feed.items()})
    return load_config(None, over)


def prepared(path: Path, where: Path, **feed):
    """``prepare_replay`` into a new folder ``where``: (the feed's native file's events, the report)."""
    where.mkdir()
    cfg, report = prepare_replay(config(path, **feed), str(where))
    assert cfg.feed.format == "native"
    events, _ = open_native(cfg.feed.path)
    return np.array(events), report


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.hev")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------------------
# hits and misses
# ---------------------------------------------------------------------------------------------------------
def test_second_prepare_replay_parses_nothing_and_gives_the_same_events(rec, cache, parses, tmp_path):
    ref, ref_report = load_events(rec, "binance-usdm")
    first, r1 = prepared(rec, tmp_path / "run1")
    assert parses.calls == 2 and len(entries(cache)) == 1  # load_events above, then the conversion
    parses.forbid()
    second, r2 = prepared(rec, tmp_path / "run2")
    assert first.tobytes() == second.tobytes() == np.asarray(ref).tobytes()
    assert r2.summary() == r1.summary() == ref_report.summary() and r2.reports[0].symbols == ref_report.symbols
    assert os.path.samefile(tmp_path / "run2" / "replay.hev", entries(cache)[0]), "the run links the entry"


@pytest.mark.parametrize(
    "change, feed",
    [
        ("touch", {}),  # a new mtime
        ("grow", {}),  # a blank line more: same events, another size
        ("none", {"lenient": 0.5}),  # another lenient share
        ("none", {"lenient": True}),
        ("none", {"symbol": "BTCUSDT"}),  # another symbol option
    ],
)
def test_a_changed_file_or_other_options_miss(rec, cache, parses, tmp_path, change, feed):
    prepared(rec, tmp_path / "a")
    assert parses.calls == 1
    if change == "touch":
        os.utime(rec, (HOUR_AGO - 10, HOUR_AGO - 10))
    elif change == "grow":
        with open(rec, "ab") as f:
            f.write(b"\n")
        os.utime(rec, (HOUR_AGO, HOUR_AGO))
    events, _ = prepared(rec, tmp_path / "b", **feed)
    assert parses.calls == 2 and len(entries(cache)) == 2
    parses.forbid()  # and the changed one is kept in turn
    again, _ = prepared(rec, tmp_path / "c", **feed)
    assert again.tobytes() == events.tobytes()


def test_a_fresh_file_is_converted_but_not_kept(tmp_path, capture_lines, cache, parses):
    fresh = write_capture(tmp_path / "fresh.txt", capture_lines[:300], age_s=0)
    prepared(fresh, tmp_path / "a")
    assert entries(cache) == [] and (tmp_path / "a" / "replay.hev").is_file()
    prepared(fresh, tmp_path / "b")
    assert parses.calls == 2


def test_the_cache_can_be_turned_off_and_a_bad_bound_is_an_error(rec, cache, parses, tmp_path, monkeypatch):
    monkeypatch.setenv(K.ENV_MAX_GB, "0")
    prepared(rec, tmp_path / "a")
    assert not cache.exists() and (tmp_path / "a" / "replay.hev").is_file()
    monkeypatch.setenv(K.ENV_MAX_GB, "lots")
    with pytest.raises(ValueError, match=K.ENV_MAX_GB):
        prepared(rec, tmp_path / "b")


# ---------------------------------------------------------------------------------------------------------
# never trusted
# ---------------------------------------------------------------------------------------------------------
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-100])


def _flip_a_record(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[-64 * 7 + 20] ^= 0x04  # a bit of a record's timestamp: still a valid record, not the same one
    p.write_bytes(bytes(raw))


def _bad_record(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[-64 + 28] = 250  # the last record's kind byte
    p.write_bytes(bytes(raw))


def _garbage(p: Path) -> None:
    p.write_bytes(b"not a native file at all" * 10)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _someone_elses(p: Path, other: Path) -> None:
    p.write_bytes(other.read_bytes())  # a valid entry, made for another recording


@pytest.mark.parametrize("damage", [_truncate, _flip_a_record, _bad_record, _garbage, _empty, _someone_elses])
def test_a_damaged_entry_is_removed_and_made_again(rec, cache, parses, tmp_path, capture_lines, damage):
    good, _ = prepared(rec, tmp_path / "a")
    (entry,) = entries(cache)
    if damage is _someone_elses:
        other = write_capture(tmp_path / "other.txt", capture_lines[:400])
        K.cached_events(other, "binance-usdm")
        damage(entry, next(p for p in entries(cache) if p != entry))
    else:
        damage(entry)
    again, _ = prepared(rec, tmp_path / "b")
    assert again.tobytes() == good.tobytes()
    assert parses.calls == 2 + (damage is _someone_elses)  # converted again
    got = K.cached_events(rec, "binance-usdm")  # and what was made again is whole
    assert not got.converted and np.asarray(got.events).tobytes() == good.tobytes()


def test_an_entry_is_mapped_and_checked_once_per_process_until_it_changes(rec, cache, parses, tmp_path, monkeypatch):
    """A sweep replays one file many times: its entry is mapped and checksummed once, the same mapping
    served after; an entry changed since (another mtime) is checked again -- and a damaged one refused."""
    good, _ = prepared(rec, tmp_path / "a")  # converted and kept
    checks = []
    real = K.checksum
    monkeypatch.setattr(K, "checksum", lambda ev: checks.append(1) or real(ev))
    first = K.cached_events(rec, "binance-usdm")
    second = K.cached_events(rec, "binance-usdm")
    assert not first.converted and not second.converted and parses.calls == 1
    assert len(checks) == 1 and second.events is first.events
    (entry,) = entries(cache)
    before = entry.stat().st_mtime_ns
    _flip_a_record(entry)
    os.utime(entry, ns=(before + 10**9, before + 10**9))  # (a write's mtime, however coarse the clock)
    again = K.cached_events(rec, "binance-usdm")
    assert len(checks) >= 2 and again.converted and parses.calls == 2  # refused, converted again
    assert np.asarray(again.events).tobytes() == good.tobytes()


def test_a_repeat_in_a_process_reads_no_header_until_something_changes(rec, cache, parses, tmp_path, monkeypatch):
    """The process remembers its hits (``_hits``): the same recording again costs two stats -- no key digest,
    no header read -- and serves the same mapping; an entry or a recording changed since is looked up in full."""
    good, _ = prepared(rec, tmp_path / "a")
    reads = []
    real = K.read_entry_header
    monkeypatch.setattr(K, "read_entry_header", lambda p: reads.append(p) or real(p))
    first = K.cached_events(rec, "binance-usdm")  # (the conversion kept the entry: this is the first hit)
    (entry,) = entries(cache)
    assert reads == [entry]
    second = K.cached_events(rec, "binance-usdm")
    assert reads == [entry] and second.events is first.events and not second.converted
    assert second.report.summary() == first.report.summary() and second.report.reasons is not first.report.reasons
    t = entry.stat().st_mtime_ns + 10**9
    os.utime(entry, ns=(t, t))  # the entry changed (its mtime)
    third = K.cached_events(rec, "binance-usdm")
    assert reads == [entry, entry] and np.asarray(third.events).tobytes() == good.tobytes()
    K.cached_events(rec, "binance-usdm")
    assert len(reads) == 2, "remembered again"
    os.utime(rec, (HOUR_AGO - 10, HOUR_AGO - 10))  # the recording changed: another key, converted
    fourth = K.cached_events(rec, "binance-usdm")
    assert fourth.converted and parses.calls == 2
    entry.unlink()  # the first entry gone (evicted, cleared)
    os.utime(rec, (HOUR_AGO, HOUR_AGO))
    fifth = K.cached_events(rec, "binance-usdm")
    assert fifth.converted and parses.calls == 3


_WRITER = """
import os, sys, time
from pathlib import Path
from hean.feeds import cache as K
import hean.feeds.binance
gate = Path({gate!r})
store = K._store

def together(*a, **kw):  # both processes write their entry at the same moment
    (gate / f"ready-{{os.getpid()}}").touch()
    while len(list(gate.glob("ready-*"))) < 2:
        time.sleep(0.001)
    return store(*a, **kw)

K._store = together
got = K.cached_events({rec!r}, "binance-usdm")
print(got.converted, got.path)
"""


def test_two_processes_converting_at_once_leave_one_valid_entry(rec, cache, parses, tmp_path):
    ref = np.asarray(load_events(rec, "binance-usdm")[0]).tobytes()
    code = _WRITER.format(gate=str(tmp_path), rec=str(rec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=90)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [o[0] for o in outs] == ["True", "True"], "each converted and wrote its entry"
    (entry,) = entries(cache)
    assert sorted(os.listdir(cache)) == [entry.name], "no temp file left"
    parses.forbid()
    got = K.cached_events(rec, "binance-usdm")
    assert not got.converted and got.path == entry and np.asarray(got.events).tobytes() == ref


# ---------------------------------------------------------------------------------------------------------
# bounded; hean cache info / clear
# ---------------------------------------------------------------------------------------------------------
def test_the_least_recently_used_entries_go_first(tmp_path, capture_lines, parses):
    folder = tmp_path / "native"
    recs = [write_capture(tmp_path / f"r{i}.txt", capture_lines[: 300 + 100 * i]) for i in range(3)]
    sizes = []
    for i, r in enumerate(recs):
        got = K.cached_events(r, "binance-usdm", directory=folder if i < 2 else tmp_path / "sizes", limit=1 << 30)
        sizes.append(got.path.stat().st_size)
        os.utime(got.path, (HOUR_AGO + i, HOUR_AGO + i))
    K.cached_events(recs[0], "binance-usdm", directory=folder, limit=1 << 30)  # a hit: r0 is now the newest
    big = K.cached_events(recs[2], "binance-usdm", directory=folder, limit=sizes[0] + sizes[2] + 1000)
    kept = {p.name for p in entries(folder)}
    assert big.path.name in kept and len(kept) == 2
    assert not K.cached_events(recs[0], "binance-usdm", directory=folder, limit=1 << 30).converted
    assert K.cached_events(recs[1], "binance-usdm", directory=folder, limit=1 << 30).converted, "r1 was evicted"
    small = K.cached_events(recs[0], "binance-usdm", directory=tmp_path / "tiny", limit=10_000)
    assert small.path is None and entries(tmp_path / "tiny") == [], "larger than the bound: not kept"


def test_cache_info_lists_the_entry_and_clear_removes_it(rec, cache, tmp_path, capsys):
    prepared(rec, tmp_path / "a")
    (entry,) = entries(cache)
    (cache / "mine.txt").write_text("not HEAN's")
    assert main(["cache", "info", "--json", "-"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)["native"]  # stdout is the JSON alone
    assert doc["dir"] == str(cache) and doc["not_hean"] == ["mine.txt"]
    (row,) = doc["entries"]
    assert row["file"] == str(entry) and row["recording"] == os.path.realpath(rec)
    assert row["format"] == "binance-usdm" and row["recording_state"] == "unchanged" and row["events"] > 1000
    assert f"{os.path.realpath(rec)} (binance-usdm, unchanged)" in captured.err
    assert main(["cache", "clear", "--older-than", "1"]) == 0
    assert "kept 1 used within 1 days" in capsys.readouterr().out and entry.exists()
    assert main(["cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 converted recording" in out and "left alone (not HEAN's): mine.txt" in out
    assert [p.name for p in cache.iterdir()] == ["mine.txt"]


# ---------------------------------------------------------------------------------------------------------
# the conversion itself
# ---------------------------------------------------------------------------------------------------------
_NASTY = [b"-1", b"0", b"00", b"01", b"99999999999999999999", b"1e5", b"null", b'"', b"\\", b"[", b"]", b"{", b"}",
          b",", b"\x00", b"\xff", b" ", b"\t", b"\r", b'"e"', b'"s"', b'"b"', b'"data"', b"true", b"\\u0041", b"1.",
          b".5", b"-0", b'"E":1,', b'"pu":', b"9" * 19]  # fmt: skip


def _mutated(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(out))
        op = rng.choice(["nasty", "digit", "digit", "ws", "delete", "flip"])
        if op == "nasty":
            out[pos:pos] = rng.choice(_NASTY)
        elif op == "digit":  # the next digit changed: mostly still a valid capture
            j = next((k for k in range(pos, len(out)) if 48 <= out[k] <= 57), None)
            if j is not None:
                out[j] = rng.choice(b"0123456789.-")
        elif op == "ws":  # whitespace by a structural character
            j = next((k for k in range(pos, len(out)) if out[k] in b",:[]{}"), None)
            if j is not None:
                out[j:j] = rng.choice([b" ", b"\t", b"\r"])
        elif op == "delete":
            del out[pos : pos + rng.randint(1, 6)]
        else:
            out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def _read(path: Path, engine: str, lenient: bool):
    try:
        ev, r = B.read_binance(path, lenient=lenient, engine=engine)
        return ev.tobytes(), r.lines, r.messages, r.skipped, r.reasons, r.counters, r.symbols.to_json()
    except FeedError as e:
        return str(e)


def test_the_scanner_reads_mutated_captures_as_msgspec_does(tmp_path, capture_lines):
    """Whatever the numba scanner accepts, it reads exactly as the msgspec path does; the rest it leaves to
    msgspec, which names the line."""
    base = b"\n".join(capture_lines[:120]) + b"\n"
    rng = random.Random(20)
    p = tmp_path / "m.txt"
    fast_used = 0
    for _ in range(40):
        p.write_bytes(_mutated(rng, base))
        buf = np.frombuffer(p.read_bytes(), np.uint8)
        fast_used += B._fast_columns(buf, False, None) is not None
        for lenient in (False, True):
            assert _read(p, "auto", lenient) == _read(p, "msgspec", lenient)
    assert fast_used >= 10, "the mutations should leave some captures the scanner reads"


def test_a_gzip_capture_is_parsed_while_it_is_decompressed(tmp_path, capture_lines, monkeypatch):
    plain = write_capture(tmp_path / "c.txt", capture_lines[:3000])
    packed = tmp_path / "c.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    monkeypatch.setattr(B, "_PIECE", 4099)  # pieces that cut lines anywhere
    a, ra = B.read_binance(plain)
    b, rb = B.read_binance(packed)
    assert a.tobytes() == b.tobytes() and ra.summary().split(":", 1)[1] == rb.summary().split(":", 1)[1]
    packed.write_bytes(packed.read_bytes()[:-3000])  # truncated: one clean error
    with pytest.raises(FeedError, match="corrupt gzip"):
        B.read_binance(packed)


def _isal_or_skip():
    return pytest.importorskip("isal.isal_zlib")


@pytest.mark.parametrize("module", ["zlib", "isal"])
@pytest.mark.parametrize("piece", [0, 1000])
def test_gunzip_reads_members_and_padding_and_refuses_damage(tmp_path, module, piece):
    z = zlib if module == "zlib" else _isal_or_skip()
    one, two = os.urandom(5000) + b"x" * 20000, b"second member" * 100

    def run(raw: bytes) -> bytes:
        return b"".join(gunzip_pieces(tmp_path / "f.gz", raw, z, piece))

    for raw in (gzip.compress(one), gzip.compress(one) + gzip.compress(two), gzip.compress(one) + b"\0" * 9):
        assert run(raw) == gzip.decompress(raw) == gunzip(tmp_path / "f.gz", raw, z)
    good = gzip.compress(one)
    for bad in (good[:-5], good[: len(good) // 2], good + b"garbage", good[:10] + bytes([good[10] ^ 0xFF]) + good[11:]):
        with pytest.raises(FeedError, match=r"f\.gz: corrupt gzip"):
            run(bad)
