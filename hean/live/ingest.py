"""A live feed in front of the engine: the client's events into the feed stage's ``live`` ring.

The client runs in a thread of the supervisor's process (:class:`LiveIngest`), so the feed lives and dies
with the supervisor: a run whose supervisor is gone has no market data either, and its workers leave on
their own (the supervisor's heartbeat). The thread is the ring's only producer; the feed stage
(:func:`hean.stages.feed._live_step`) its only consumer.

Timestamps: a received line keeps its wall-clock receive time in the capture (what ``hean replay`` reads);
the events pushed here carry it on CLOCK_MONOTONIC, the engine's clock, so every latency the stages record
counts from the socket read.

A full ring: the feed stage is behind. The thread waits for room up to ``full_wait_s``; then the rest of
that batch is dropped -- counted on the ring (``drops``) and in ``ring_full`` -- and the symbol is marked
stale and resynced (:meth:`hean.live.client.LiveClient.lose`), because a book that missed an event is
wrong. The OUT_OF_SYNC that says so goes in ahead of anything else as soon as there is room.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hean.live.client import LiveClient, LiveOptions
from hean.live.record import Recorder
from hean.live.venues import venue_spec
from hean.rings.ring import Ring
from hean.stages.feed import LIVE_COUNTERS
from hean.symbols import SymbolTable
from hean.telemetry.block import C_USER_BASE

__all__ = ["LiveIngest", "live_options"]


def live_options(cfg) -> LiveOptions:
    """The client's options from the configuration's ``[live]`` table."""
    lv = cfg.live
    return LiveOptions(lv.ws_url, lv.rest_url, lv.silence_s, lv.backoff_min_s, lv.backoff_max_s, lv.depth_limit,
                       lv.ping_s)  # fmt: skip


class LiveIngest:
    """The supervisor's live feed: a :class:`LiveClient` thread pushing into ``ring``, and (``[live] record``)
    a :class:`Recorder` of what it receives."""

    def __init__(self, cfg, symbols: SymbolTable, ring: Ring, counters: np.ndarray | None = None,
                 full_wait_s: float = 0.005) -> None:  # fmt: skip
        self.ring = ring
        self.counters = counters  # the feed stage's telemetry counters: the live words are this thread's
        self.full_wait_s = full_wait_s
        self.offset = time.time_ns() - time.monotonic_ns()  # wall - monotonic, for the engine's clock
        self.ring_full = 0
        self.events = 0
        self._seq = 0
        self._owed: dict[str, np.ndarray] = {}  # symbol -> its OUT_OF_SYNC a full ring could not take yet
        spec = venue_spec(cfg.live.venue)
        self.recorder = None
        rec = cfg.live.record
        self.client = LiveClient(spec, symbols, live_options(cfg), on_events=self._on_events,
                                 on_lines=self._record if rec else None)  # fmt: skip
        if rec:
            self.recorder = Recorder(Path(rec), spec.name, resnapshot=self.client.resnapshot)

    def start(self) -> None:
        self.client.start_thread()

    def stop(self) -> None:
        self.client.join()
        if self.recorder is not None:
            self.recorder.close()
        self.publish_counters()

    def _record(self, symbol: str, data: bytes) -> None:
        self.recorder.on_lines(symbol, data)

    def _on_events(self, symbol: str, ev: np.ndarray) -> None:
        if self._owed and not self._pay_owed():
            self._drop(symbol, ev)
            return
        ev["ts_origin"] -= self.offset
        ev["seq"] = np.arange(self._seq + 1, self._seq + len(ev) + 1)
        self._seq += len(ev)
        done = self.ring.push(ev)
        if done < len(ev):
            deadline = time.monotonic() + self.full_wait_s
            while done < len(ev) and time.monotonic() < deadline:
                done += self.ring.push(ev[done:])
        self.events += done
        if done < len(ev):
            self._drop(symbol, ev[done:])

    def _drop(self, symbol: str, ev: np.ndarray) -> None:
        """The ring has no room for ``ev``: count it, and resync the symbol (its book missed events)."""
        self.ring.count_drop(len(ev))
        self.ring_full += 1
        if symbol not in self._owed:
            marker = self.client.decoder.lose(symbol, time.time_ns())
            marker["ts_origin"] -= self.offset
            self._owed[symbol] = marker
            self.client.lose(symbol, "ring full", emit=False)
        elif self.client.decoder.synced(symbol):  # its resync went into the full ring too: resync again
            self.client.decoder.lose(symbol, 0)
            self.client.lose(symbol, "ring full", emit=False)

    def _pay_owed(self) -> bool:
        """Push the OUT_OF_SYNC markers still owed; True when none is left."""
        for symbol in list(self._owed):
            if self.ring.push(self._owed[symbol]) == 1:
                del self._owed[symbol]
            else:
                return False
        return True

    def stats(self) -> dict[str, int]:
        """Every live counter, by its telemetry name (``live_*``)."""
        c = self.client.snapshot_counters()
        values = {
            "live_frames": c["frames"],
            "live_connects": c["connects"],
            "live_disconnects": c["disconnects"],
            "live_silences": c["silences"],
            "live_gaps": c.get("decode_gaps", 0),
            "live_malformed": c.get("decode_malformed", 0),
            "live_exchange_errors": c["exchange_errors"],
            "live_rate_limited": c["rate_limited"],
            "live_snapshots": c["snapshots"],
            "live_resyncs": c["resyncs"],
            "live_ring_full": self.ring_full,
            "live_stale_symbols": c["stale_symbols"],
            "live_stale_windows": c["stale_windows"],
            "live_unrouted": c["unrouted"],
        }
        assert tuple(values) == LIVE_COUNTERS
        return values

    def publish_counters(self) -> None:
        """Copy the counters into the feed stage's telemetry block (``hean top``): called by the supervisor
        at each heartbeat; this thread's words only (one writer each), plain stores of aligned int64."""
        if self.counters is None:
            return
        base = C_USER_BASE + 3  # after the stage's own: messages, first_ns, last_ns
        for i, v in enumerate(self.stats().values()):
            self.counters[base + i] = v
