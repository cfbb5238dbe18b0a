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
    durable: bool = True,
) -> os.stat_result:
    """Write `data` to `path` atomically and durably; return the new file's `fstat`.

    With `overwrite` false the file is put in place with a hard link, which never replaces a
    file that appeared meanwhile (on file systems without hard links: check, then rename).
    With `durable` false there is no fsync: still atomic for readers, but a power cut may
    leave an empty file. Only for caches that write many files and then call
    `fsync_directory` once (the agent's icons: 5,000 fsyncs cost seconds).

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
            if durable:
                os.fsync(stream.fileno())
            written = os.fstat(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_without_clobbering(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    if durable:
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


class SecretFileError(Exception):
    """A secret key file cannot be used; the message names the file and what to do."""


def load_or_create_secret(path: Path, *, size: int = 32, what: str = "secret key") -> bytes:
    """The random key kept in `path`, made once with `size` random bytes, mode 0600.

    Creation never overwrites (a hard link): two processes starting together agree on one key.

    Raises:
        SecretFileError: the file cannot be read or made, is not a regular file, is shorter
            than `size`, or (on POSIX) is readable or writable by anyone but its owner.
    """
    import secrets
    import stat

    def read() -> bytes:
        try:
            with path.open("rb") as stream:
                info = os.fstat(stream.fileno())
                key = stream.read(4096)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise SecretFileError(f"{path}: cannot read the {what}: {e.strerror or e}") from e
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{path}: the {what} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise SecretFileError(
                f"{path}: the {what} is accessible to others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); anyone who reads it can forge what it "
                "signs: chmod 600"
            )
        if len(key) < size:
            raise SecretFileError(f"{path}: the {what} is {len(key)} bytes, {size} needed")
        return key

    try:
        return read()
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            write_atomic(path, secrets.token_bytes(size), mode=0o600, overwrite=False)
        return read()
    except FileNotFoundError as e:
        raise SecretFileError(f"{path}: the {what} vanished after it was made") from e
    except OSError as e:
        raise SecretFileError(f"{path}: cannot make the {what}: {e.strerror or e}") from e
