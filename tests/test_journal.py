"""The journal: its stage over private rings (driven from Python, as its worker drives it), its files, the
reader's verdicts on torn and damaged files, and the tables exported from it.

The engine runs of the journal (a kill -9 of the router's worker, a replay's outputs) are in
tests/test_outputs.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hean import records as R
from hean.engine.build import _dummy_tm
from hean.engine.config import ConfigError, load_config
from hean.journal import format as J
from hean.journal.export import decimal_strings, journal_tables, write_tables
from hean.journal.reader import follow, read_journal
from hean.rings.layout import MASK, WRITE
from hean.stages import journal as SJ
from hean.stages.ports import private_port
from hean.stages.tops import make_venue_tops, tops_set

KINDS = ("controls", "orders", "rejects", "reports")  # the stage's inputs, in order
DTYPES = (R.CONTROL, R.ORDER, R.EXEC_REPORT, R.EXEC_REPORT)
CAP = 1024


class Rig:
    """The journal stage over private rings in this process: push records, step, serve -- what the journal's
    worker does with shared rings (hean.engine.worker._Served)."""

    def __init__(
        self, tmp: Path, segment_mb: int = 4, marks_ms: int = 0, n_symbols: int = 2, run_id: str = "r1",
        market: bool = False,
    ):  # fmt: skip
        symbols = "".join(
            f'[[symbols]]\nname = "S{i}"\ntick_size = "0.5"\nlot_size = "0.1"\n' for i in range(n_symbols)
        )
        cfg_file = tmp / "j.toml"
        cfg_file.write_text(symbols)
        self.cfg = load_config(
            str(cfg_file),
            {"journal.dir": str(tmp / "j"), "journal.segment_mb": segment_mb, "journal.marks_ms": marks_ms},
        )
        self.folder = tmp / "j" / run_id
        self.svc = SJ.JournalService(self.cfg, run_id)
        act = np.zeros(1, np.int64)
        self.market = market  # the JOURNAL_MARKET stage: a fifth input, every market event
        self.ports = tuple(private_port(dt, CAP, act) for dt in DTYPES + ((R.MARKET_EVENT,) if market else ()))
        self.tm = _dummy_tm(SJ.JOURNAL, n_symbols)
        self.tops = make_venue_tops(1, n_symbols)  # the book's view of the top of book, which marks sample
        self.rstate = np.zeros(n_symbols, np.int64)  # risk's trading state per symbol (ACTIVE)
        state = SJ.journal_state(self.tops, np.zeros(n_symbols, np.int64), self.rstate, marks_ms)
        self.S = self.svc.start(state)
        self.drain()  # the journal's first look: each symbol's trading state (two risk records, first)

    def top(self, symbol: int, bid: int, ask: int, ts: int) -> None:
        """The book's latest top of book of ``symbol`` (as the book stage writes it: qty 1 and 2 lots)."""
        tops_set(self.tops, 0, symbol, bid, 1, ask, 2, ts)

    def push(self, kind: str, recs: np.ndarray) -> None:
        """Publish ``recs`` into the input ring of ``kind`` (as its producer stage would)."""
        port = self.ports[4 if kind == "market" else KINDS.index(kind)]
        for rec in recs:
            seq = int(port.hdr[WRITE])
            port.slots[seq & port.hdr[MASK]] = rec
            port.hdr[WRITE] = seq + 1

    def step(self) -> int:
        step = SJ.journal_market_step if self.market else SJ.journal_step
        return step(self.S, self.ports, (), self.tm, 0, 0)

    def drain(self) -> int:
        """Step (and serve, as the worker does between chunks) until every input ring is empty."""
        total = 0
        for _ in range(10_000):
            n = self.step()
            total += n
            self.serve()
            if n == 0 and not self.S.pos[SJ.P_FULL] and self.pending() == 0:
                return total
        raise AssertionError("the journal stage stopped taking records")

    def pending(self) -> int:
        from hean.rings.layout import READ

        return sum(int(p.hdr[WRITE] - p.hdr[READ]) for p in self.ports)

    def serve(self, final: bool = False) -> None:
        self.S = self.svc.serve(self.S, final)

    def close(self) -> None:
        self.serve(final=True)
        self.S = None
        import gc

        gc.collect()
        self.svc.close()


def _records(dtype: np.dtype, n: int, seed: int, symbols: int = 2) -> np.ndarray:
    """``n`` records of ``dtype`` with every word filled (so a misplaced word would show)."""
    rng = np.random.default_rng(seed)
    recs = np.zeros(n, dtype)
    recs.view(np.uint8)[:] = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    recs["seq"] = np.arange(1, n + 1)
    recs["symbol"] = np.arange(n) % symbols
    recs["ts_exch"] = 1_700_000_000_000_000_000 + np.arange(n) * 1_000_000
    return recs


@pytest.fixture
def rig(tmp_path):
    made: list[Rig] = []

    def make(**kw) -> Rig:
        made.append(Rig(tmp_path, **kw))
        return made[-1]

    yield make
    for r in made:
        if r.S is not None:
            r.close()


def test_every_record_reads_back_exactly_in_order_by_kind(rig):
    r = rig(marks_ms=0)
    pushed = {k: _records(dt, 300, seed=i) for i, (k, dt) in enumerate(zip(KINDS, DTYPES, strict=True))}
    for k, recs in pushed.items():
        r.push(k, recs)
    assert r.drain() == 4 * 300
    r.close()
    j = read_journal(r.folder)
    assert j.warnings == [] and j.closed and j.segments == 1
    for k, recs in pushed.items():
        assert j[k].dtype == recs.dtype
        assert j[k].tobytes() == recs.tobytes(), k
    assert len(j["marks"]) == 0  # the book never wrote a top of book
    assert j["risk"][["symbol", "kind", "arg"]].tolist() == [(0, 0, -1), (1, 0, -1)]  # ACTIVE from the start
    assert j.meta["run_id"] == "r1" and [s["tick_size"] for s in j.meta["symbols"]] == ["0.5", "0.5"]
    assert os.path.getsize(r.folder / "journal-000000.hj") < 4 << 20  # a closed segment is trimmed


@pytest.mark.parametrize(
    "marks_ms, times_ms, expected",
    [
        (0, [0, 1, 2, 2, 3], [0, 1, 2, 3]),  # every new top of book (not the same one twice)
        (100, [0, 50, 99, 100, 150, 200, 450], [0, 100, 200, 450]),  # one per 100 ms after the last kept
        (1000, [0, 999, 1000, 1001, 2500], [0, 1000, 2500]),
    ],
)
def test_marks_sample_the_top_of_book_once_per_symbol_per_interval(rig, marks_ms, times_ms, expected):
    r = rig(marks_ms=marks_ms)
    base = 1_700_000_000_000_000_000
    for i, t in enumerate(times_ms):  # the two symbols move together: their marks are kept independently
        for s in (0, 1):
            r.top(s, 100 + i, 110 + i, base + t * 1_000_000)
        r.drain()
    r.close()
    marks = read_journal(r.folder)["marks"]
    for s in (0, 1):
        m = marks[marks["symbol"] == s]
        assert ((m["ts_exch"] - base) // 1_000_000).tolist() == expected
        i = [times_ms.index(t) for t in expected]  # each mark is the top of book of its time
        assert m["bid_px"].tolist() == [100 + k for k in i] and m["ask_px"].tolist() == [110 + k for k in i]
        assert m["bid_qty"].tolist() == [1] * len(i) and m["mid"].tolist() == [105.0 + k for k in i]


def test_trading_state_changes_are_journaled_as_risk_records(rig):
    r = rig(n_symbols=2)
    r.drain()  # both ACTIVE, seen first
    r.top(1, 100, 101, 1_700_000_000_000_000_000)
    r.drain()
    r.rstate[1] = 2  # risk halted symbol 1 (a trip or `hean halt --symbol`)
    r.drain()
    r.drain()  # nothing new: not journaled twice
    r.rstate[1] = 0  # resumed
    r.rstate[0] = 1  # symbol 0 reducing
    r.drain()
    r.close()
    risk = read_journal(r.folder)["risk"]
    assert risk[["symbol", "kind", "arg"]].tolist() == [(0, 0, -1), (1, 0, -1), (1, 2, 0), (0, 1, 0), (1, 0, 2)]
    assert risk["ts_exch"][2] == 1_700_000_000_000_000_000  # the event time of the symbol's last mark


def test_with_journal_market_every_market_event_is_journaled_too(rig):
    r = rig(market=True)
    events = _records(R.MARKET_EVENT, 500, seed=11)
    orders = _records(R.ORDER, 20, seed=12)
    r.push("market", events)
    r.push("orders", orders)
    r.drain()
    r.close()
    j = read_journal(r.folder)
    assert j["market"].tobytes() == events.tobytes() and j["orders"].tobytes() == orders.tobytes()


def test_a_full_segment_holds_records_back_until_the_next_one_and_loses_nothing(rig):
    r = rig(segment_mb=1)
    reports = _records(R.EXEC_REPORT, 20_000, seed=7)
    waits = 0
    for i in range(0, len(reports), CAP):
        r.push("reports", reports[i : i + CAP])
        while r.pending():
            if r.step() == 0 and r.S.pos[SJ.P_FULL]:
                waits += 1
                assert r.pending() > 0  # back-pressure: what did not fit is still in the ring
                # the next segment was begun before it was needed (at three quarters: whether its thread has
                # finished by now is the scheduler's business, and serve() waits for it)
                assert r.svc._making is not None or r.svc._spare is not None
            r.serve()  # between chunks, as the worker does: the next segment is mapped
    r.close()
    assert not (r.folder / f"journal-{waits + 1:06d}.hj").exists()  # a next segment made ready is removed
    j = read_journal(r.folder)
    assert j.warnings == [] and j.closed
    assert j.segments == waits + 1 >= 3
    assert j["reports"].tobytes() == reports.tobytes()
    states = [J.SegmentHeader.read(p, np.fromfile(p, np.int64)).state for p in sorted(r.folder.glob("*.hj"))]
    assert states == [J.S_FULL] * waits + [J.S_CLOSED]


def _last_entry(path: Path) -> tuple[int, int]:
    """(byte offset, byte size) of the last entry of a closed segment."""
    words = np.fromfile(path, np.int64)
    o, last = J.SegmentHeader.read(path, words).header_words, None
    while o < len(words) and words[o] != 0:
        last, o = o, o + int(words[o] & 0xFFFFFFFF)
    return last * 8, int(words[last] & 0xFFFFFFFF) * 8


def _truncate_mid_entry(path: Path) -> None:
    off, size = _last_entry(path)
    os.truncate(path, off + size // 2)


def _flip_payload_byte(path: Path) -> None:
    off, size = _last_entry(path)
    data = bytearray(path.read_bytes())
    data[off + size - 3] ^= 0x40
    path.write_bytes(bytes(data))


def _bad_size(path: Path) -> None:
    off, _ = _last_entry(path)
    data = bytearray(path.read_bytes())
    data[off : off + 4] = (10**6).to_bytes(4, "little")  # an entry running past the end of the file
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate_mid_entry, _flip_payload_byte, _bad_size])
def test_a_torn_last_record_reads_back_to_the_one_before_with_a_warning(rig, damage):
    r = rig()
    orders = _records(R.ORDER, 50, seed=3)
    r.push("orders", orders)
    r.drain()
    r.close()
    damage(r.folder / "journal-000000.hj")
    j = read_journal(r.folder)
    assert j["orders"].tobytes() == orders[:-1].tobytes()
    assert len(j.warnings) == 1 and "torn entry" in j.warnings[0] and "journal-000000.hj" in j.warnings[0]


def test_damage_in_the_middle_stops_the_reading_there_and_says_where(rig):
    r = rig()
    orders = _records(R.ORDER, 100, seed=4)
    r.push("orders", orders)
    r.drain()
    r.close()
    path = r.folder / "journal-000000.hj"
    words = np.fromfile(path, np.int64)
    o, seen = J.SegmentHeader.read(path, words).header_words, 0
    while seen < 11:  # to the 11th order's entry (the two risk records come first)
        seen += int(words[o] >> 32) == J.K_ORDER
        o += int(words[o] & 0xFFFFFFFF) if seen < 11 else 0
    off = o * 8
    data = bytearray(path.read_bytes())
    data[off + 40] ^= 1  # a payload byte of the 11th order
    path.write_bytes(bytes(data))
    j = read_journal(r.folder)
    assert j["orders"].tobytes() == orders[:10].tobytes()
    assert f"byte {off}" in j.warnings[0]


def test_a_journal_cut_by_a_crash_reads_everything_written_and_says_it_was_not_closed(rig):
    r = rig()
    reports = _records(R.EXEC_REPORT, 40, seed=5)
    r.push("reports", reports)
    r.drain()  # no close: the process died here
    j = read_journal(r.folder)
    assert j["reports"].tobytes() == reports.tobytes()
    assert not j.closed and "not closed" in j.warnings[0]


def _not_a_journal(folder: Path) -> str:
    (folder / "journal-000000.hj").write_bytes(b"x" * 4096)
    return "not a HEAN journal segment"


def _other_version(folder: Path) -> str:
    p = folder / "journal-000000.hj"
    words = np.fromfile(p, np.int64)
    words[J.H_VERSION] = 99
    words.tofile(p)
    return "format version 99"


def _missing_segment(folder: Path) -> str:
    (folder / "journal-000001.hj").unlink()
    return "segment 2 where segment 1 was expected"


@pytest.mark.parametrize("spoil", [_not_a_journal, _other_version, _missing_segment])
def test_a_bad_journal_is_an_error_naming_the_file(rig, spoil):
    r = rig(segment_mb=1)
    while r.svc.index < 2:  # three segments written (1 MiB holds ~7,000 reports)
        r.push("reports", _records(R.EXEC_REPORT, 1000, seed=6))
        r.drain()
    r.close()
    want = spoil(r.folder)
    with pytest.raises(J.JournalError, match=want):
        read_journal(r.folder)


def test_no_journal_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(J.JournalError, match="no such journal folder"):
        read_journal(tmp_path / "nope")
    with pytest.raises(J.JournalError, match="no journal segments"):
        read_journal(tmp_path)


def test_follow_reads_records_as_they_are_written_and_ends_at_the_close(rig):
    r = rig()
    it = follow(r.folder, poll_s=0.001)
    assert [next(it)[0] for _ in range(2)] == ["risk", "risk"]  # each symbol's trading state, first seen
    first = _records(R.ORDER, 5, seed=8)
    r.push("orders", first)
    r.drain()
    got = [next(it) for _ in range(5)]
    assert [k for k, _ in got] == ["orders"] * 5
    assert np.array([rec for _, rec in got]).tobytes() == first.tobytes()
    later = _records(R.EXEC_REPORT, 3, seed=9)
    r.push("reports", later)
    r.drain()
    r.close()
    rest = list(it)  # ends: the journal is closed
    assert [k for k, _ in rest] == ["reports"] * 3


@pytest.mark.parametrize(
    "units, step, expected",
    [
        ([618004, -3, 0], "0.1", ["61800.4", "-0.3", "0.0"]),
        ([1, 25, 1000], "0.001", ["0.001", "0.025", "1.000"]),
        ([7, -2], "1", ["7", "-2"]),
        ([2, 3], "25", ["50", "75"]),
        ([123456789], "0.00000001", ["1.23456789"]),
        ([3], "0.5", ["1.5"]),
    ],
)
def test_prices_and_quantities_go_out_as_exact_decimals(units, step, expected):
    assert decimal_strings(np.array(units, np.int64), step).tolist() == expected


def _order(cid: int, side: int, px: int, qty: int, ts: int) -> np.ndarray:
    o = np.zeros(1, R.ORDER)
    o["kind"], o["client_id"], o["side"], o["price"], o["qty"], o["ts_exch"] = R.OrderAction.NEW, cid, side, px, qty, ts
    return o


def _report(cid: int, oid: int, kind: int, side: int, px: int, qty: int, ts: int, fee: float = 0.0) -> np.ndarray:
    x = np.zeros(1, R.EXEC_REPORT)
    x["kind"], x["client_id"], x["order_id"], x["side"], x["price"], x["qty"] = kind, cid, oid, side, px, qty
    x["ts_venue"], x["fee"], x["liquidity"] = ts, fee, 1
    return x


def test_the_tables_of_a_journal_by_hand(rig, tmp_path):
    """Tick 0.5, lot 0.1 (value 0.05 per tick-lot): buy 2 lots at 200 ticks (100.0), sell 1 at 220 (110.0),
    a cancelled order, a rejected intent; marks at mid 208 ticks (104.0)."""
    r = rig(marks_ms=0, n_symbols=1)
    T = 1_700_000_000_000_000_000
    r.push(
        "orders",
        np.concatenate(
            [_order(1, R.BUY, 200, 2, T), _order(2, R.SELL, 220, 1, T + 1), _order(3, R.BUY, 190, 1, T + 2)]
        ),
    )
    rej = _report(4, 0, R.ExecType.REJECTED, R.BUY, 0, 5, T + 3)
    rej["reason"], rej["ts_exch"] = R.RejectReason.MAX_POSITION, T + 3
    r.push("rejects", rej)
    fills = [
        _report(1, 11, R.ExecType.FILL, R.BUY, 200, 2, T + 10, fee=0.01),
        _report(2, 12, R.ExecType.FILL, R.SELL, 220, 1, T + 20, fee=0.02),
    ]
    r.push(
        "reports",
        np.concatenate(
            [
                _report(3, 13, R.ExecType.ACK, R.BUY, 190, 0, T + 5),
                *fills,
                _report(3, 13, R.ExecType.CANCELED, R.BUY, 190, 0, T + 30),
            ]
        ),
    )
    r.drain()
    r.top(0, 206, 210, T + 15)  # the book's top of book at two times: marks at mid 208 ticks
    r.drain()
    r.top(0, 207, 209, T + 40)
    r.drain()
    r.close()
    t = journal_tables(read_journal(r.folder))
    o = t["orders"]
    assert o["state"].tolist() == ["filled", "filled", "canceled", "rejected"]
    assert o["reason"].tolist() == ["", "", "", "max_position"]
    assert o["price"].tolist() == ["100.0", "110.0", "95.0", "0.0"] and o["qty"].tolist() == [
        "0.2",
        "0.1",
        "0.1",
        "0.5",
    ]
    assert o["order_id"].tolist() == [11, 12, 13, 0]
    f = t["fills"]
    assert f["price"].tolist() == ["100.0", "110.0"] and f["side"].tolist() == ["buy", "sell"]
    assert f["ts"].tolist() == [T + 10, T + 20] and f["liquidity"].tolist() == ["maker", "maker"]
    # cash: -2*200*0.05 + 1*220*0.05 = -9.0; fees 0.03; position 1 lot at the last mid 208 ticks: 10.4
    p = t["positions"]
    assert p["position"].tolist() == ["0.1"] and p["position_lots"].tolist() == [1]
    assert p["cash"][0] == pytest.approx(-9.0) and p["fees"][0] == pytest.approx(0.03)
    assert p["mark"][0] == pytest.approx(104.0) and p["pnl"][0] == pytest.approx(-9.0 - 0.03 + 10.4)
    e = t["equity"]  # after the first fill: fill, mark (mid 208), fill, mark (mid 208)
    assert e["ts"].tolist() == [T + 10, T + 15, T + 20, T + 40]
    assert e["position_lots"].tolist() == [2, 2, 1, 1]
    assert e["pnl"].tolist() == pytest.approx([-20.01, -20.01 + 20.8, -9.03 + 10.4, -9.03 + 10.4])
    m = t["marks"]
    assert m["bid"].tolist() == ["103.0", "103.5"] and m["ask_ticks"].tolist() == [210, 209]
    for fmt in ("parquet", "csv"):
        files = write_tables(t, tmp_path / fmt, fmt)
        assert sorted(p.name for p in files) == sorted(f"{n}.{fmt}" for n in t)
    import pyarrow.parquet as pq

    back = pq.read_table(tmp_path / "parquet" / "fills.parquet")
    assert back.column("price").to_pylist() == ["100.0", "110.0"]
    assert str(back.schema.field("ts").type) == "timestamp[ns, tz=UTC]"
    assert (tmp_path / "csv" / "fills.csv").read_text().splitlines()[1].startswith("2023-11-14T22:13:20.000000010Z,")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("journal.segment_mb", 0, "journal.segment_mb"),
        ("journal.marks_ms", -1, "journal.marks_ms"),
    ],
)
def test_bad_journal_settings_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {key: value})


@pytest.mark.parametrize("torn", [False, True])
def test_a_dead_writers_rings_are_appended_once_each(rig, torn):
    """What the journal's worker left in its rings is appended by the supervisor (hean.journal.recover):
    records of a batch it wrote but never released are in both places and are not written twice; an entry it
    died writing (its first word never stored) is written whole."""
    from hean.journal.recover import append_pending

    r = rig()
    reports = _records(R.EXEC_REPORT, 12, seed=13)
    r.push("reports", reports[:8])
    r.drain()  # the journal wrote 8 and died (no close); reports 5..7 were of a batch it had not released
    path = r.folder / "journal-000000.hj"
    if torn:  # it died writing the 8th: its payload is there, its first word is not
        words = np.memmap(path, np.int64, mode="r+")
        o = J.SegmentHeader.read(path, np.asarray(words)).header_words
        last = None
        while words[o] != 0:
            last, o = o, o + int(words[o] & 0xFFFFFFFF)
        words[last] = 0
        words.flush()
        del words
    n = append_pending(r.folder, [(J.K_REPORT, reports[5:]), (J.K_ORDER, np.zeros(0, R.ORDER))])
    assert n == (5 if torn else 4)  # 7..11 (the 8th again, when torn) -- never 5 and 6 twice
    j = read_journal(r.folder)
    assert j["reports"].tobytes() == reports.tobytes()
    assert j.closed and j.warnings == []


def test_without_pyarrow_the_tables_are_csv_and_it_is_said_once(rig, tmp_path, monkeypatch, capsys):
    from hean import outputs
    from hean.journal import export

    r = rig()
    r.push("orders", _records(R.ORDER, 3, seed=14))
    r.drain()
    r.close()
    monkeypatch.setattr(export, "parquet_available", lambda: False)
    files = outputs._tables(r.folder, tmp_path / "out")
    assert sorted(f.name for f in files) == sorted(f"{t}.csv" for t in export.TABLES)
    err = capsys.readouterr().err
    assert err.count("pyarrow is not installed") == 1 and "hean[parquet]" in err
    with pytest.raises(ValueError, match=r"hean\[parquet\]"):
        export.write_tables({}, tmp_path / "x", "parquet")
