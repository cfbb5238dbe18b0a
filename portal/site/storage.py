"""TinyDB files for the site server's state, written atomically and durably.

Every database of the site server (`portal.site`) is a TinyDB file opened with `open_db`. Its
storage, `DurableJSONStorage`, keeps the parsed file in memory, and writes the whole of it with
`wapt.fsutil.write_atomic` (temporary file, fsync, rename, fsync of the directory): a crash or
a full disk leaves the previous file, never a part of one. Another process (the `comptoir`
command line, while the server runs) may write the same file: `transaction` takes an exclusive
lock (`<file>.lock`, flock) for a read-modify-write, and a reader reloads a file whose identity
(inode, size, mtime) changed.

Each write rewrites the file, so a file should stay small (TinyDB's cost, `recipes.md` §7):
stores that grow with the number of hosts split their records over several files.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from wapt.fsutil import write_atomic

try:  # POSIX; on Windows the site server is a single process and the thread lock suffices
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DurableJSONStorage", "StorageError", "open_db", "transaction"]


class StorageError(Exception):
    """A state file cannot be read or written; the message names the file and the reason."""


_Stamp = tuple[int, int, int]


def _stamp(info: os.stat_result) -> _Stamp:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class DurableJSONStorage(Storage):
    """A TinyDB storage: one JSON file, cached in memory, replaced atomically on each write."""

    def __init__(self, path: str | Path, *, mode: int = 0o600) -> None:
        self.path = Path(path)
        self.mode = mode
        self._data: dict[str, dict[str, Any]] | None = None
        self._stamp: _Stamp | None = None

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._data, self._stamp = None, None
            return None
        except OSError as e:
            raise StorageError(f"{self.path}: cannot read: {e.strerror or e}") from e
        if self._data is not None and self._stamp == _stamp(info):
            return self._data
        try:
            raw = self.path.read_bytes()
            info = self.path.stat()
        except OSError as e:
            raise StorageError(f"{self.path}: cannot read: {e.strerror or e}") from e
        if not raw.strip():
            self._data, self._stamp = None, _stamp(info)
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise StorageError(f"{self.path}: not a JSON state file: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise StorageError(f"{self.path}: not a TinyDB file (an object of tables expected)")
        self._data, self._stamp = data, _stamp(info)
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        try:
            encoded = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            written = write_atomic(self.path, encoded, mode=self.mode)
        except (OSError, TypeError) as e:
            # TinyDB changed the cached documents in place before calling us: forget them,
            # the next read takes the file as it is on disk.
            self._data, self._stamp = None, None
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise StorageError(f"{self.path}: cannot write: {reason}") from e
        self._data, self._stamp = data, _stamp(written)

    def close(self) -> None:
        self._data, self._stamp = None, None


class _SharedTable(Table):
    """A table that another process may have written since we last looked.

    TinyDB remembers the next document id and the results of queries; both go stale when
    another process replaces the file. Ids are recomputed from the data at each insert (the
    insert rewrites the file anyway), and query results are not cached.
    """

    def __init__(self, storage: Storage, name: str, cache_size: int = 0) -> None:
        super().__init__(storage, name, cache_size=0)

    def _get_next_id(self) -> int:
        self._next_id = None
        return int(super()._get_next_id())  # type: ignore[no-untyped-call]


class _SharedTinyDB(TinyDB):
    table_class = _SharedTable  # type: ignore[assignment]


def open_db(path: Path) -> TinyDB:
    """Open (or prepare to create) the TinyDB file at `path` with the durable storage.

    Read-modify-writes that another process may run at the same time go inside
    `transaction(path)`.
    """
    return _SharedTinyDB(path, storage=DurableJSONStorage)


_thread_locks: dict[Path, threading.RLock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.RLock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.RLock())


_held = threading.local()


@contextlib.contextmanager
def transaction(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the state file `path` (threads and processes) for a
    read-modify-write; reentrant within a thread."""
    path = path.absolute()
    held: dict[Path, int] = _held.__dict__.setdefault("depth", {})
    if held.get(path):
        held[path] += 1
        try:
            yield
        finally:
            held[path] -= 1
        return
    with _thread_lock(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            held[path] = 1
            yield
        finally:
            held.pop(path, None)
            os.close(fd)  # closing releases the flock
