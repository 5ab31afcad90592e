"""Output files: checked before the work that produces them starts, written so a reader never sees half.

Why: a result written at the end of a long run must not be lost to a typo in its path, and a crash in the
middle of writing must not leave a truncated file that looks complete. So every output path is checked up
front (:func:`output_problem`: not a directory, its folder exists, a file can really be created there --
tried, because permission bits say nothing for root or for read-only mounts) and every output is written to
a temporary file beside it and renamed over it (:func:`write_atomically`: ``rename`` is atomic within a
file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutputPathError", "check_output_path", "output_problem", "write_atomically"]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names the path and why."""


def output_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot take an output file (checked before any work), or None. The check creates and
    removes a file beside it: the only test that holds for every file system and for root."""
    p = Path(path)
    if p.is_dir():
        return "is a directory"
    if not p.parent.is_dir():
        return f"folder {p.parent} does not exist"
    if p.exists() and not p.is_file():
        return "exists and is not a regular file"
    probe = p.with_name(f".{p.name}.{os.getpid()}.probe")
    try:
        probe.open("xb").close()
        probe.unlink()
    except OSError as e:
        return f"cannot write there: {e.strerror or e}"
    return None


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as a Path if an output file can be written there, else :class:`OutputPathError` saying why."""
    problem = output_problem(path)
    if problem:
        raise OutputPathError(f"{what} {os.fspath(path)}: {problem}")
    return Path(path)


def write_atomically(path: str | os.PathLike, write: Callable) -> None:
    """Call ``write(file)`` on a temp file beside ``path`` (text mode), then rename it over ``path``: a reader
    never sees a partial file, and a failure leaves the old one (or none)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            write(f)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
