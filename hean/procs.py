"""Processes by pid: alive or not, and which process a pid names.

Why here, apart from the engine: rings, telemetry and the engine all decide whether a peer is still there,
and they must agree. A zombie (exited, not yet reaped) is dead; a process of another user is alive (``kill``
answers EPERM for it, which is not "no such process"). A pid alone can be handed out again once its process
is reaped, so where a process is to be killed or waited for, it is named by its pid *and* its start time
(:func:`start_ticks`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_alive", "process_state", "same_process", "start_ticks"]

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[bytes]:
    """``/proc/<pid>/stat`` from field 3 (the state) on; [] when the process is gone."""
    try:
        data = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return []
    return data[data.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie -- also when it belongs to another user."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    fields = _stat_fields(pid)
    return not fields or fields[0] != b"Z"


def start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); 0 when it is gone
    or a zombie. With the pid it names one process for good: a recycled pid has another start time."""
    fields = _stat_fields(pid) if pid > 0 else []
    return int(fields[19]) if len(fields) > 19 and fields[0] != b"Z" else 0


def same_process(pid: int, ticks: int) -> bool:
    """True while the process ``pid`` that started at ``ticks`` runs (not a zombie, not a recycled pid)."""
    return pid > 0 and ticks > 0 and start_ticks(pid) == ticks


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (R running, S sleeping, T stopped, Z zombie, ...); "" if gone."""
    fields = _stat_fields(pid) if pid > 0 else []
    return fields[0].decode() if fields else ""
