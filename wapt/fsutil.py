"""Durable file writes: a temporary file in the same directory, fsync, rename, fsync the directory.

A reader (or a machine that loses power) sees either the old file or the new one, never a
part of it. This is the one implementation every part of Comptoir uses.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable. Windows cannot open a directory: nothing to do."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (FAT on a stick) cannot; the rename is as durable as it gets
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    overwrite: bool = True,
    temp_prefix: str | None = None,
) -> os.stat_result:
    """Write `data` to `path` atomically and durably; return the new file's `fstat`.

    With `overwrite` false the file is put in place with a hard link, which never replaces a
    file that appeared meanwhile (on file systems without hard links: check, then rename).

    Raises:
        FileExistsError: `overwrite` is false and `path` exists.
        OSError: the directory is not writable, the disk is full, ….
    """
    if not overwrite and path.exists():
        raise FileExistsError(str(path))
    fd, temporary_name = tempfile.mkstemp(
        prefix=temp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            if hasattr(os, "fchmod"):
                os.fchmod(stream.fileno(), mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
            written = os.fstat(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_without_clobbering(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    fsync_directory(path.parent)
    return written


def _link_without_clobbering(source: Path, target: Path) -> None:
    try:
        target.hardlink_to(source)
    except FileExistsError:
        raise
    except OSError:
        if target.exists():
            raise FileExistsError(str(target)) from None
        source.replace(target)
