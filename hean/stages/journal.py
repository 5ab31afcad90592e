"""The journal stage: every record that changes money or risk, appended to checksummed segment files.

Why a stage: the records it keeps already flow on the pipeline's edges -- orders risk passed, the reports the
router sent back, the intents risk rejected, the supervisor's controls -- so the journal takes them like any
consumer, from rings, and nothing upstream changes. What it samples comes from views the engine already
shares, not rings: the top of book (*marks*, from the book's :mod:`hean.stages.tops`) and each symbol's
trading state (a change is journaled: risk's ``rstate`` view), so neither the book nor risk publishes more. It is a
*background* stage (:attr:`hean.stages.declare.Stage.background`): it runs in a worker of its own, on the
CPUs kept for the OS, waiting by sleeping; its producers pay one ring publish per record.

What it writes and why that survives a crash (:mod:`hean.journal.format`): the step copies each record into a
memory-mapped segment file, checksum first and the entry's first word last (release order). A store into a
``MAP_SHARED`` mapping is in the kernel's page cache as soon as it is made: a kill -9 of any process, this
one included, loses nothing the step wrote, and a reader never sees half an entry. Records still in the
rings when a worker dies are shared memory too: the journal drains them (the supervisor waits for it).

Files are Python's business, not the loop's: the worker runs its loop in chunks and, between chunks, calls
the stage's service (:class:`JournalService`), which creates and maps the next segment when one is full and
closes the journal at the end. A full segment makes the step take nothing more -- back-pressure on its
rings, never a lost record -- until the service has mapped the next one (one chunk, ~10 ms at most).
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hean import records
from hean.atomics import load_relaxed, store_release
from hean.jit import kernel
from hean.journal import format as J
from hean.records import BookStateKind
from hean.rings.layout import MASK
from hean.rings.spsc import available
from hean.stages.declare import BuildContext, Stage, Stream
from hean.stages.ports import BATCH, release_to, service
from hean.stages.tops import VenueTops, tops_read
from hean.telemetry.block import C_EVENTS_IN, C_USER_BASE, tm_add

__all__ = ["JOURNAL", "JOURNAL_MARKET", "JournalService", "JournalState", "journal_state"]

# pos (int64) words
P_OFF = 0  # next entry's word in seg
P_LIVE = 1  # 1: seg is a mapped segment (0: the stand-in: take nothing)
P_FULL = 2  # 1: seg is full (END written): take nothing until the service maps the next one
P_MARK_NS = 3  # event time between two marks of one symbol (0: every book state)
P_LEN = 4

# user counters (the block's C_USER_BASE + i)
U_RECORDS, U_BYTES, U_FULL_WAITS = (C_USER_BASE + i for i in range(3))


class JournalState(NamedTuple):
    seg: np.ndarray  # int64 words of the mapped segment (a small stand-in until the service maps one)
    pos: np.ndarray  # int64[P_LEN]
    last_mark: np.ndarray  # int64[n_symbols]: event time of each symbol's last mark (0: none yet)
    tops: VenueTops  # the book's top of book per (venue, symbol): what a mark samples
    venue_of: np.ndarray  # int64[n_symbols]
    mark: np.ndarray  # BOOK_STATE[1]: the mark being written
    mark_words: np.ndarray  # int64 view of ``mark``
    rstate: np.ndarray  # int64[n_symbols]: the trading state risk applies to each symbol (its shared view)
    last_rstate: np.ndarray  # int64[n_symbols]: the state last journaled (-1: none yet)
    change: np.ndarray  # CONTROL[1]: the risk-state change being written
    change_words: np.ndarray  # int64 view of ``change``


def make_journal(ctx: BuildContext) -> JournalState:
    """The stand-in state every worker builds; the journal's own worker gets a segment from the service."""
    return journal_state(ctx.views["tops"], ctx.venue_of, ctx.views["rstate"], int(ctx.cfg.journal.marks_ms))


def journal_state(tops: VenueTops, venue_of: np.ndarray, rstate: np.ndarray, marks_ms: int) -> JournalState:
    """A journal's state over the views it samples (the book's tops, risk's trading states), before the
    service maps a segment (also for tests and the benchmark, which drive the step themselves)."""
    pos = np.zeros(P_LEN, np.int64)
    pos[P_MARK_NS] = marks_ms * 1_000_000
    n = max(1, len(venue_of))
    mark, change = np.zeros(1, records.BOOK_STATE), np.zeros(1, records.CONTROL)
    return JournalState(np.zeros(J.H_META, np.int64), pos, np.zeros(n, np.int64), tops,
                        np.asarray(venue_of, np.int64), mark, mark.view(np.int64), rstate,
                        np.full(n, -1, np.int64), change, change.view(np.int64))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------------------------------------
@kernel(forceinline=True, error_model="numpy")
def _append(S, kind, words, base, rw):
    """One entry: the record's ``rw`` words from ``words[base:]``, checksum, then word0 (release)."""
    seg = S.seg
    o = S.pos[P_OFF]
    for i in range(rw):
        seg[o + J.ENTRY_WORDS + i] = words[base + i]
    word0 = np.int64(J.ENTRY_WORDS + rw) | (np.int64(kind) << np.int64(32))
    seg[o + 1] = J.checksum(word0, seg, o + J.ENTRY_WORDS, rw)
    store_release(seg, o, word0)
    S.pos[P_OFF] = o + J.ENTRY_WORDS + rw


@kernel(forceinline=True, error_model="numpy")
def _fits(S, n, rw):
    """How many of ``n`` entries of ``rw`` words fit, keeping room for the END entry."""
    free = len(S.seg) - S.pos[P_OFF] - J.ENTRY_WORDS
    return max(0, min(n, free // (J.ENTRY_WORDS + rw)))


@kernel(forceinline=True, error_model="numpy")
def _seal(S, tm):
    """The segment is full: write END and stop taking until the service maps the next segment."""
    o = S.pos[P_OFF]
    word0 = np.int64(J.ENTRY_WORDS) | (np.int64(J.K_END) << np.int64(32))
    S.seg[o + 1] = J.checksum(word0, S.seg, o, 0)
    store_release(S.seg, o, word0)
    S.pos[P_OFF] = o + J.ENTRY_WORDS
    S.pos[P_FULL] = 1
    tm_add(tm.counters, U_FULL_WAITS, 1)


@kernel(forceinline=True, error_model="numpy")
def _copy(S, port, kind, tm):
    """Journal every record waiting in ``port`` (up to BATCH); returns how many it took."""
    start, n = available(port.hdr)
    if n == 0:
        return 0
    words = port.slots.view(np.int64)
    rw = port.slots.itemsize // 8
    n = _fits(S, min(n, BATCH), rw)
    if n == 0:
        _seal(S, tm)
        return 0
    mask = port.hdr[MASK]
    for j in range(n):
        _append(S, kind, words, ((start + j) & mask) * rw, rw)
    release_to(port, start + n)
    tm_add(tm.counters, U_RECORDS, n)
    tm_add(tm.counters, U_BYTES, n * 8 * (J.ENTRY_WORDS + rw))
    return n


@kernel(forceinline=True, error_model="numpy")
def _marks(S, tm):
    """Sample each symbol's top of book from the book's view (no ring: the book pays nothing for marks) and
    journal it when its event time moved on by ``P_MARK_NS`` since the symbol's last mark."""
    rw = len(S.mark_words)
    kept = 0
    for s in range(len(S.last_mark)):
        tries, bp, bq, ap, aq, ts = tops_read(S.tops, S.venue_of[s], s)
        last = S.last_mark[s]
        if tries < 0 or ts <= last or (last != 0 and ts - last < S.pos[P_MARK_NS]):
            continue
        if _fits(S, 1, rw) == 0:
            _seal(S, tm)
            break
        S.last_mark[s] = ts
        m = S.mark[0]
        m.symbol, m.ts_exch, m.kind = s, ts, BookStateKind.QUOTE
        m.bid_px, m.bid_qty, m.ask_px, m.ask_qty = bp, bq, ap, aq
        m.spread = ap - bp if bp > 0 and ap > 0 else 0
        m.mid = (bp + ap) / 2.0 if bp > 0 and ap > 0 else 0.0
        _append(S, J.K_MARK, S.mark_words, 0, rw)
        kept += 1
    tm_add(tm.counters, U_RECORDS, kept)
    tm_add(tm.counters, U_BYTES, kept * 8 * (J.ENTRY_WORDS + rw))
    return kept


@kernel(forceinline=True, error_model="numpy")
def _risk_states(S, tm, now):
    """Journal each symbol whose trading state (risk's shared view, refreshed at every heartbeat of risk's
    worker) differs from the last one journaled -- a trip, a halt, a resume -- and every symbol's state the
    first time it is seen."""
    rw = len(S.change_words)
    kept = 0
    for s in range(min(len(S.rstate), len(S.last_rstate))):
        st = load_relaxed(S.rstate, s)
        if st == S.last_rstate[s]:
            continue
        if _fits(S, 1, rw) == 0:
            _seal(S, tm)
            break
        c = S.change[0]
        c.symbol, c.kind, c.arg, c.issued_ns, c.ts_origin = s, st, S.last_rstate[s], now, now
        c.ts_exch = S.last_mark[s]
        S.last_rstate[s] = st
        _append(S, J.K_RISK, S.change_words, 0, rw)
        kept += 1
    tm_add(tm.counters, U_RECORDS, kept)
    return kept


@kernel(forceinline=True, error_model="numpy")
def _finish(S, tm, t0, took):
    if took:
        store_release(S.seg, J.H_END, S.pos[P_OFF])  # where a tail may start (informational)
        service(tm.hists, t0, took)
        tm_add(tm.counters, C_EVENTS_IN, took)


@kernel(forceinline=True, error_model="numpy")
def _order_flow(S, ins, tm, now):
    """Control first (a halt is journaled before the cancels it causes), then the order flow, then what the
    journal samples (marks, trading states)."""
    took = _copy(S, ins[0], J.K_CONTROL, tm)
    took += _copy(S, ins[1], J.K_ORDER, tm)
    took += _copy(S, ins[2], J.K_REJECT, tm)
    took += _copy(S, ins[3], J.K_REPORT, tm)
    took += _marks(S, tm)
    return took + _risk_states(S, tm, now)


@kernel(forceinline=True, error_model="numpy")
def journal_step(S, ins, outs, tm, now, flags):
    """The order flow and its samples (:func:`_order_flow`): nothing while no segment is mapped or it is full."""
    if S.pos[P_LIVE] == 0 or S.pos[P_FULL] != 0:
        return 0
    took = _order_flow(S, ins, tm, now)
    _finish(S, tm, now, took)
    return took


@kernel(forceinline=True, error_model="numpy")
def journal_market_step(S, ins, outs, tm, now, flags):
    """:func:`journal_step`, and every market event the venue sees."""
    if S.pos[P_LIVE] == 0 or S.pos[P_FULL] != 0:
        return 0
    took = _order_flow(S, ins, tm, now) + _copy(S, ins[4], J.K_MARKET, tm)
    _finish(S, tm, now, took)
    return took


# ---------------------------------------------------------------------------------------------------------
# the service: files, between loop chunks, in the journal's worker
# ---------------------------------------------------------------------------------------------------------
class JournalService:
    """Creates, maps, rotates and closes the segment files of one run's journal (see the module docstring)."""

    def __init__(self, cfg: Any, run_id: str) -> None:
        from hean.journal.meta import journal_meta

        self.folder = Path(cfg.journal.dir) / run_id
        self.seg_bytes = int(cfg.journal.segment_mb) << 20
        self.meta = J.encode_meta(journal_meta(cfg, run_id))
        self.index = -1
        self._mm: mmap.mmap | None = None
        self._path: Path | None = None
        self._done: list[tuple[mmap.mmap, Path | None, int]] = []  # closed segments, unmapped by close()
        self._spare: tuple[mmap.mmap, np.ndarray, Path] | None = None  # the next segment, made ready early
        self._making: threading.Thread | None = None  # the thread making it
        self._spare_error: BaseException | None = None

    def start(self, S: JournalState) -> JournalState:
        """Create the journal's folder and its first segment."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self._use(S, self._create(0))

    def serve(self, S: JournalState, final: bool = False) -> JournalState:
        """Between loop chunks: the next segment is made ready, in a thread, once the current one is three
        quarters full -- mapping and pre-faulting 64 MiB takes tens of ms, and the step must go on taking
        records meanwhile -- so a full segment is followed at once; at the end the journal is closed and an
        unused next segment removed."""
        if final:
            self._close(S, J.S_CLOSED)
            spare = self._take_spare(wait=True)
            if spare is not None:
                mm, path = spare[0], spare[2]
                del spare  # its array goes with it: the mapping may close
                try:
                    mm.close()
                except BufferError:
                    pass
                path.unlink(missing_ok=True)
            return S
        if S.pos[P_FULL]:
            self._close(S, J.S_FULL)
            spare = self._take_spare(wait=True)
            return self._use(S, spare if spare is not None else self._create(self.index + 1))
        if self._making is None and self._spare is None and S.pos[P_LIVE] and S.pos[P_OFF] * 4 > len(S.seg) * 3:
            self._making = threading.Thread(target=self._make_spare, args=(self.index + 1,), daemon=True)
            self._making.start()
        return S

    def _make_spare(self, index: int) -> None:
        try:
            self._spare = self._create(index)
        except BaseException as e:  # raised in the worker's own thread by _take_spare
            self._spare_error = e

    def _take_spare(self, wait: bool) -> tuple[mmap.mmap, np.ndarray, Path] | None:
        if self._making is not None and wait:
            self._making.join()
            self._making = None
        if self._spare_error is not None:
            e, self._spare_error = self._spare_error, None
            raise e
        spare, self._spare = self._spare, None
        return spare

    def _create(self, index: int) -> tuple[mmap.mmap, np.ndarray, Path]:
        """A new segment file of the configured size, mapped and pre-faulted (MAP_POPULATE: a first write
        to each page would otherwise fault, 4x the step's cost per record), its header written."""
        path = J.segment_path(self.folder, index)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, self.seg_bytes)
            mm = mmap.mmap(fd, self.seg_bytes, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        words = np.frombuffer(mm, np.int64)
        if J.header_words(self.meta) + 4 * J.ENTRY_WORDS + 64 > len(words):
            raise ValueError(f"journal.segment_mb = {self.seg_bytes >> 20}: too small for the header")
        J.init_segment(words, index, self.meta, time.time_ns())
        return mm, words, path

    def _use(self, S: JournalState, segment: tuple[mmap.mmap, np.ndarray, Path]) -> JournalState:
        """Make ``segment`` the one the step writes."""
        mm, words, path = segment
        self._mm, self._path = mm, path
        self.index = int(words[J.H_SEGMENT])
        pos = S.pos
        pos[P_OFF], pos[P_FULL], pos[P_LIVE] = words[J.H_HEADER_WORDS], 0, 1
        return S._replace(seg=words)

    def _close(self, S: JournalState, state: int) -> None:
        """Mark the segment: full (the journal continues in the next file) or closed (the run ended)."""
        if self._mm is None:
            return
        S.seg[J.H_END] = S.pos[P_OFF]
        S.seg[J.H_STATE] = state
        S.pos[P_LIVE] = 0
        self._mm.flush()
        self._done.append((self._mm, self._path, int(S.pos[P_OFF]) * 8))
        self._mm = None

    def close(self) -> None:
        """Unmap every segment and trim each to what was written -- once the loop's state no longer holds
        the mappings (a mapping still referenced stays at full size: sparse, and read the same)."""
        for mm, path, end in self._done:
            try:
                mm.close()
            except BufferError:
                continue
            os.truncate(path, end)
        self._done = []


_INPUTS = (
    Stream("control", records.CONTROL, external=True),
    Stream("orders", records.ORDER),
    Stream("rejects", records.EXEC_REPORT),
    Stream("reports", records.EXEC_REPORT),
)
_COMMON = dict(
    name="journal",
    module=__name__,
    outputs=(),
    build=make_journal,
    hists=("service",),
    user_counters=("records", "bytes", "full_waits"),
    config="journal",
    background=True,
    service="JournalService",
)
JOURNAL = Stage(step="journal_step", inputs=_INPUTS, **_COMMON)
JOURNAL_MARKET = Stage(step="journal_market_step", inputs=(*_INPUTS, Stream("market", records.MARKET_EVENT)), **_COMMON)
