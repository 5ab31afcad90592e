"""Find, describe and clean up rings in /dev/shm (``hean rings``): read-only, never disturbs a live ring.

A ring is *stale* when no process that recorded itself in its header is alive: the producer and consumer
pids (a role's pid is cleared when that process closes the ring cleanly), or, when neither role was ever
taken or both were given up, the creator's pid. Liveness uses psutil, so an exited-but-unreaped (zombie)
process counts as dead. Removing a stale ring only unlinks its name; processes still mapping it keep
their memory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass

from hean.rings.ring import RingError, attach, peer_alive
from hean.shm import SHM_DIR, SegmentError, list_segment_names, unlink_segment

__all__ = ["RingInfo", "format_info", "format_table", "ring_info", "remove_stale", "scan"]


@dataclass
class RingInfo:
    name: str
    capacity: int
    record_size: int
    dtype: str
    size_bytes: int
    mode: str
    write: int
    read: int
    fill: int
    high_water: int
    full: int
    drops: int
    producer_pid: int
    producer_alive: bool
    consumer_pid: int
    consumer_alive: bool
    creator_pid: int
    creator_alive: bool
    stale: bool

    def as_dict(self) -> dict:
        return asdict(self)


def is_stale(producer_pid: int, consumer_pid: int, creator_pid: int) -> bool:
    """No recorded owner alive (see the module docstring for who counts as an owner)."""
    owners = [p for p in (producer_pid, consumer_pid) if p > 0] or [p for p in (creator_pid,) if p > 0]
    return not any(peer_alive(p) for p in owners)


def ring_info(name: str) -> RingInfo:
    """Describe one ring (mapped read-only). Raises :class:`RingError` naming the segment if not a ring."""
    with attach(name, role=None) as ring:
        s = ring.stats()
        st = os.stat(SHM_DIR / name)
        alive = {k: peer_alive(s[k]) for k in ("producer_pid", "consumer_pid", "creator_pid")}
        return RingInfo(
            name=name,
            capacity=s["capacity"],
            record_size=s["record_size"],
            dtype=str(ring.dtype),
            size_bytes=st.st_size,
            mode=stat.filemode(st.st_mode),
            write=s["write"],
            read=s["read"],
            fill=s["fill"],
            high_water=s["high_water"],
            full=s["full"],
            drops=s["drops"],
            producer_pid=s["producer_pid"],
            producer_alive=alive["producer_pid"],
            consumer_pid=s["consumer_pid"],
            consumer_alive=alive["consumer_pid"],
            creator_pid=s["creator_pid"],
            creator_alive=alive["creator_pid"],
            stale=is_stale(s["producer_pid"], s["consumer_pid"], s["creator_pid"]),
        )


def scan() -> tuple[list[RingInfo], list[tuple[str, str]]]:
    """Every ``/dev/shm/hean*`` ring, and ``(name, reason)`` for hean segments that are not readable rings."""
    infos, others = [], []
    for name in list_segment_names():
        try:
            infos.append(ring_info(name))
        except (RingError, SegmentError, OSError) as e:
            others.append((name, str(e)))
    return infos, others


def remove_stale(infos: list[RingInfo], dry_run: bool = False) -> list[str]:
    """Unlink the rings in ``infos`` that are stale (re-checked just before unlinking); return their names."""
    removed = []
    for info in infos:
        if not info.stale:
            continue
        try:
            fresh = ring_info(info.name)
        except (RingError, SegmentError, OSError):
            continue  # gone or changed meanwhile
        if fresh.stale:
            if not dry_run:
                unlink_segment(info.name)
            removed.append(info.name)
    return removed


def _pid(pid: int, alive: bool) -> str:
    return "-" if pid <= 0 else f"{pid} ({'alive' if alive else 'dead'})"


def format_table(infos: list[RingInfo], others: list[tuple[str, str]]) -> str:
    if not infos and not others:
        return f"no HEAN segments in {SHM_DIR}"
    lines = []
    if infos:
        head = (
            "ring",
            "cap",
            "rec",
            "fill",
            "fill%",
            "high",
            "full",
            "drops",
            "producer",
            "consumer",
            "state",
        )
        rows = [head]
        for i in infos:
            rows.append(
                (
                    i.name,
                    str(i.capacity),
                    f"{i.record_size}B",
                    str(i.fill),
                    f"{100.0 * i.fill / i.capacity:.1f}",
                    str(i.high_water),
                    str(i.full),
                    str(i.drops),
                    _pid(i.producer_pid, i.producer_alive),
                    _pid(i.consumer_pid, i.consumer_alive),
                    "STALE" if i.stale else "live",
                )
            )
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        for r in rows:
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        n_stale = sum(i.stale for i in infos)
        if n_stale:
            lines.append(f"{n_stale} stale ring(s): remove with `hean rings clean`")
    else:
        lines.append(f"no HEAN rings in {SHM_DIR}")
    for name, why in others:
        lines.append(f"{name}: not a ring ({why})")
    return "\n".join(lines)


def format_info(i: RingInfo) -> str:
    rows = [
        ("ring", i.name),
        ("segment", f"{SHM_DIR / i.name}  {i.size_bytes} bytes  {i.mode}"),
        ("capacity", f"{i.capacity} slots of {i.record_size} bytes"),
        ("dtype", i.dtype),
        ("cursors", f"write {i.write}  read {i.read}"),
        ("fill", f"{i.fill} ({100.0 * i.fill / i.capacity:.1f}%), high-water {i.high_water}"),
        ("counters", f"full {i.full}  drops {i.drops}"),
        ("producer", _pid(i.producer_pid, i.producer_alive)),
        ("consumer", _pid(i.consumer_pid, i.consumer_alive)),
        ("creator", _pid(i.creator_pid, i.creator_alive)),
        ("state", "STALE (no recorded owner alive)" if i.stale else "live"),
    ]
    return "\n".join(f"{k:<9} {v}" for k, v in rows) + "\n"
