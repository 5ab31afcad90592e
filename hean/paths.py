"""Output files: checked before the work that produces them starts, written so a reader never sees half.

Why: a result written at the end of a long run must not be lost to a typo in its path, and a crash in the
middle of writing must not leave a truncated file that looks complete. So every output path is checked up
front (:func:`check_output_path`: not a directory, its folder exists and is writable) and every output is
written to a temporary file beside it and renamed over it (:func:`write_atomic`: ``rename`` is atomic
within a file system).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["OutputPathError", "check_output_path", "write_atomic"]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names the path and why."""


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there, else :class:`OutputPathError` saying why."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{what} {str(p)!r} is a directory; give a file name")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(f"{what} {str(p)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {str(p)!r}: folder {str(folder)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{what} {str(p)!r} exists and is not writable")
    return p


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
