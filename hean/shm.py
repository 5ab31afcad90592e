"""POSIX shared-memory segments under the ``hean`` prefix: the one place HEAN creates, maps and unlinks them.

Rings and telemetry blocks both live here. Why not ``multiprocessing.shared_memory``: its resource tracker
unlinks (or warns about) segments that *other* processes created, which breaks a multi-process engine;
``posix_ipc.SharedMemory`` plus ``mmap`` does exactly what is asked and nothing more.

Private memory a run mostly leaves alone comes from here too (:func:`lazy_zeros`): an anonymous mapping of
its own, not the heap.

Every segment is created with mode 0600 (owner only; never world-writable) and ``O_EXCL`` (a name in use is
an error, never silently shared). Names are ``hean`` + ``[A-Za-z0-9._-]``; they appear as
``/dev/shm/<name>``.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import posix_ipc

__all__ = [
    "PREFIX",
    "SHM_DIR",
    "Segment",
    "SegmentError",
    "create_segment",
    "attach_segment",
    "lazy_zeros",
    "list_segment_names",
    "unlink_segment",
    "validate_name",
]

PREFIX = "hean"
SHM_DIR = Path("/dev/shm")
MODE = 0o600
_NAME_RE = re.compile(r"^hean[A-Za-z0-9._-]{0,200}$")


class SegmentError(RuntimeError):
    """A shared-memory segment could not be created, found or mapped; the message names the segment."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid HEAN segment name, else raise :class:`SegmentError`."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SegmentError(f"bad segment name {name!r}: must start with {PREFIX!r} and use only [A-Za-z0-9._-]")
    return name


@dataclass
class Segment:
    """A mapped segment. ``buf`` is the mmap; :meth:`array` gives numpy views onto it."""

    name: str
    size: int
    buf: mmap.mmap
    owner: bool  # True when this process created it (and should normally unlink it)
    _closed: bool = field(default=False, repr=False)

    def array(self, dtype, count: int = -1, offset: int = 0) -> np.ndarray:
        """A numpy view of ``count`` items of ``dtype`` starting at byte ``offset`` (no copy)."""
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)

    def close(self) -> None:
        """Unmap. Views still referencing the map keep it alive until they are dropped."""
        if self._closed:
            return
        self._closed = True
        try:
            self.buf.close()
        except BufferError:
            # numpy views are still alive: the map is released when the last one is collected.
            pass

    def unlink(self) -> None:
        unlink_segment(self.name)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def create_segment(name: str, size: int) -> Segment:
    """Create a new zero-filled segment of ``size`` bytes, mode 0600; an existing name is an error."""
    validate_name(name)
    if size <= 0:
        raise SegmentError(f"segment {name!r}: size must be positive, got {size}")
    try:
        shm = posix_ipc.SharedMemory("/" + name, flags=posix_ipc.O_CREX, mode=MODE, size=size)
    except posix_ipc.ExistentialError as e:
        raise SegmentError(f"segment {name!r} already exists in {SHM_DIR} ({e})") from None
    try:
        os.fchmod(shm.fd, MODE)  # the umask can only remove bits; make the mode exact
        buf = mmap.mmap(shm.fd, size)
    except Exception:
        shm.close_fd()
        posix_ipc.unlink_shared_memory("/" + name)
        raise
    shm.close_fd()
    return Segment(name, size, buf, owner=True)


def attach_segment(name: str, readonly: bool = False) -> Segment:
    """Map an existing segment (read-only maps are for observers such as ``hean top``)."""
    validate_name(name)
    try:
        shm = posix_ipc.SharedMemory("/" + name, flags=0, read_only=readonly)
    except posix_ipc.ExistentialError:
        raise SegmentError(f"segment {name!r} not found in {SHM_DIR}") from None
    except posix_ipc.PermissionsError as e:
        raise SegmentError(f"segment {name!r}: permission denied ({e})") from None
    try:
        size = os.fstat(shm.fd).st_size
        if size == 0:
            raise SegmentError(f"segment {name!r} is empty (0 bytes): not a HEAN segment or not initialised")
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        buf = mmap.mmap(shm.fd, size, prot=prot)
    finally:
        shm.close_fd()
    return Segment(name, size, buf, owner=False)


def unlink_segment(name: str, missing_ok: bool = True) -> bool:
    """Remove the name from /dev/shm (mapped views stay valid). Returns True if it existed."""
    validate_name(name)
    try:
        posix_ipc.unlink_shared_memory("/" + name)
        return True
    except posix_ipc.ExistentialError:
        if missing_ok:
            return False
        raise SegmentError(f"segment {name!r} not found in {SHM_DIR}") from None


def list_segment_names(prefix: str = PREFIX) -> list[str]:
    """Names of the segments in /dev/shm that start with ``prefix``, sorted."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def lazy_zeros(shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """Zeros in a private anonymous mapping of their own, for big arrays a run touches a little of: latency
    histograms (~800 KiB a stage, none touched by an untimed backtest), a strategy's order and report logs
    (sized for a million rows each). Why not ``np.zeros``: it memsets memory reused from the heap (4.7 MB of
    histograms per in-process pipeline was ~0.2 ms of each backtest), and numpy asks for 2 MiB pages for
    arrays of 4 MiB and more (``MADV_HUGEPAGE``), so the first row written to a log had the kernel zero
    2 MiB (~0.2 ms per log and backtest). Here the kernel zeroes each 4 KiB page when it is first touched.
    Arrays under 64 KiB come from ``np.zeros`` (a mapping costs a system call)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    size = int(np.prod(shape)) * dtype.itemsize
    if size < (1 << 16):
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype).reshape(shape)
