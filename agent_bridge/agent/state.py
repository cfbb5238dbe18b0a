"""The agent's durable state: a crash-safe TinyDB storage and `AgentState` over it.

`DurableJSONStorage` is a TinyDB storage whose every write is atomic and durable: the new
content goes to a temporary file in the same directory, is flushed and fsynced, renamed over
the old file with `os.replace`, and the directory is fsynced so the rename itself survives a
power cut. A reader therefore sees the old file or the new one, never a mix. Reads parse the
file only when it changed (keyed on mtime, size and inode); TinyDB rereads the whole database
on every operation, so this keeps reads cheap. A missing file is an empty database. A file that
cannot be parsed can only come from outside tampering (or a disk that lies about fsync), so it
raises `StateError` and is never silently replaced by an empty database: the agent would
otherwise forget which packages it installed.

`AgentState` keeps two tables in one such file: `installed` (one `InstalledRecord` per package
name) and `params` (key/value settings of the agent). Every write rewrites the file, which is
cheap at the sizes an agent holds (hundreds of packages; `recipes.md` §7).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, cast

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from wapt.fsutil import write_atomic

__all__ = [
    "INSTALL_STATUSES",
    "INTERRUPTED_SUFFIX",
    "MAX_INSTALL_OUTPUT",
    "AgentState",
    "DurableJSONStorage",
    "InstallStatus",
    "InstalledRecord",
    "StateError",
]

logger = logging.getLogger(__name__)

InstallStatus = Literal["OK", "ERROR", "RUNNING", "MISSING"]
INSTALL_STATUSES: Final[frozenset[str]] = frozenset({"OK", "ERROR", "RUNNING", "MISSING"})

#: `install_output` keeps at most this many characters: the end, where errors are.
MAX_INSTALL_OUTPUT: Final = 64 * 1024

#: What `AgentState.recover` appends to the output of an operation the agent died in.
INTERRUPTED_SUFFIX: Final = " — interrupted: the agent stopped during this operation"

_FILE_MODE: Final = 0o600
# Temporary files are named `.<name>.<pid>-<token>.<random>.tmp`. The token tells this process
# from an earlier one that had the same pid (containers reuse low pids across restarts).
_PROCESS_TOKEN: Final = secrets.token_hex(4)
_TMP_RE: Final = re.compile(r"(?P<pid>\d+)-(?P<token>[0-9a-f]+)\.[A-Za-z0-9_]+\.tmp")

JSONTables = dict[str, dict[str, Any]]


class StateError(Exception):
    """The agent's state cannot be read or written: corrupt file, I/O error, closed state."""


def _copy_json(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars), much faster than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


class DurableJSONStorage(Storage):
    """A TinyDB storage of one JSON file, written atomically and durably, mode 0600.

    `read` returns a fresh copy of the data each time (TinyDB mutates what it reads), parsing the
    file only when its (mtime, size, inode) changed. `write` goes through a temporary file in the
    same directory, fsync, `os.replace`, and an fsync of the directory; the parent directory is
    created (mode 0700) if missing. Temporary files left by a process that died mid-write are
    removed when the storage is opened; they never affect what is read.

    The instance is safe to share between threads; TinyDB itself is not, so callers serialize
    their TinyDB calls (as `AgentState` does).

    Raises `StateError` (from `read`) when the file is not valid UTF-8 JSON with an object of
    objects at the top (an empty file included: that is what a lost write looks like), and (from
    `write`) when the data is not JSON-encodable or the file cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: JSONTables | None = None
        self._remove_stale_temporaries()

    # --- reading ------------------------------------------------------------------------

    def read(self) -> JSONTables | None:
        """The whole database (a copy), or None when the file does not exist.

        Raises `StateError` when the file exists but is not a JSON object of objects.
        """
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise StateError(f"{self.path}: cannot read the state file: {e}") from e
            if self._cache is not None and self._cache_key == _stat_key(st):
                return cast(JSONTables, _copy_json(self._cache))
            try:
                with open(self.path, "rb") as f:
                    raw = f.read()
                    key = _stat_key(os.fstat(f.fileno()))
            except FileNotFoundError:
                return None
            except OSError as e:
                raise StateError(f"{self.path}: cannot read the state file: {e}") from e
            data = self._parse(raw)
            self._cache, self._cache_key = data, key
            return cast(JSONTables, _copy_json(data))

    def _parse(self, raw: bytes) -> JSONTables:
        if not raw.strip():
            raise StateError(
                f"{self.path}: the state file is empty (a write was lost or the file was "
                "truncated); refusing to start from an empty state"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise StateError(f"{self.path}: the state file is corrupt: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise StateError(f"{self.path}: the state file is corrupt: not an object of objects")
        return data

    # --- writing ------------------------------------------------------------------------

    def write(self, data: JSONTables) -> None:
        """Replace the file's content with `data`, atomically and durably.

        Raises `StateError` when `data` is not JSON-encodable or the file cannot be written;
        the file is then unchanged.
        """
        try:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise StateError(f"{self.path}: cannot encode the state: {e}") from e
        payload = text.encode("utf-8")
        with self._lock:
            try:
                key = self._write_bytes(payload)
            except OSError as e:
                raise StateError(f"{self.path}: cannot write the state file: {e}") from e
            self._cache, self._cache_key = cast(JSONTables, _copy_json(data)), key

    def _write_bytes(self, payload: bytes) -> tuple[int, int, int]:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        written = write_atomic(
            self.path,
            payload,
            mode=_FILE_MODE,
            temp_prefix=f".{self.path.name}.{os.getpid()}-{_PROCESS_TOKEN}.",
        )
        key = _stat_key(written)  # a rename keeps mtime, size and inode
        return key

    def _remove_stale_temporaries(self) -> None:
        """Remove temporary files of this path left by processes that died mid-write."""
        prefix = f".{self.path.name}."
        try:
            candidates = [p for p in self.path.parent.iterdir() if p.name.startswith(prefix)]
        except OSError:
            return
        for candidate in candidates:
            match = _TMP_RE.fullmatch(candidate.name[len(prefix) :])
            if match is None:
                continue
            pid, token = int(match["pid"]), match["token"]
            if pid == os.getpid() and token == _PROCESS_TOKEN:
                continue  # another instance of this process may be writing it right now
            if pid != os.getpid() and _pid_alive(pid):
                continue
            with contextlib.suppress(OSError):
                candidate.unlink()
                logger.info("removed %s, left by an interrupted write", candidate)

    def close(self) -> None:
        """Forget the cached data (nothing is held open)."""
        with self._lock:
            self._cache = self._cache_key = None


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# --- installed packages ---------------------------------------------------------------------


def _cap_output(text: str) -> str:
    if len(text) <= MAX_INSTALL_OUTPUT:
        return text
    marker = f"[… {len(text) - MAX_INSTALL_OUTPUT} earlier characters cut …]\n"
    return marker + text[-MAX_INSTALL_OUTPUT:]


@dataclass
class InstalledRecord:
    """What the agent knows of one installed (or failed, or in-progress) package.

    `install_status` is "OK", "ERROR", "RUNNING" (an operation is under way) or "MISSING".
    `install_par` is who asked for it: a username, or "" for the machine (host package,
    dependency, upgrade); WAPT's local database calls it `explicit_by`, available here as a
    read-only alias. `source` is the repository URL or the bundle path it came from.
    `install_output` is capped to its last `MAX_INSTALL_OUTPUT` characters.

    Raises `ValueError` (at construction) for an unknown `install_status` or an empty `package`.
    """

    package: str
    version: str = ""
    architecture: str = "all"
    maturity: str = ""
    locale: str = ""
    section: str = "base"
    install_status: InstallStatus = "OK"
    install_date: str = ""
    install_output: str = ""
    install_par: str = ""
    source: str = ""
    package_uuid: str = ""
    control: dict[str, Any] = field(default_factory=dict)
    persistent_dir: str | None = None
    last_audit_status: str | None = None
    last_audit_date: str | None = None

    def __post_init__(self) -> None:
        if not self.package:
            raise ValueError("an installed record needs a package name")
        if self.install_status not in INSTALL_STATUSES:
            raise ValueError(
                f"{self.package}: install_status {self.install_status!r} is not one of "
                f"{sorted(INSTALL_STATUSES)}"
            )
        self.install_output = _cap_output(self.install_output)

    @property
    def explicit_by(self) -> str:
        """WAPT's database name for `install_par` (who asked for the package)."""
        return self.install_par

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (a copy: changing it leaves the record alone)."""
        data = asdict(self)
        data["install_output"] = _cap_output(self.install_output)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstalledRecord:
        """The record a dict from `as_dict` describes. Unknown keys are ignored; WAPT's
        `explicit_by` is accepted for `install_par`.

        Raises `ValueError` when `package` is missing, a field has the wrong type, or the
        status is unknown.
        """
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if "install_par" not in values and "explicit_by" in data:
            values["install_par"] = data["explicit_by"]
        if not isinstance(values.get("package"), str):
            raise ValueError(f"installed record without a package name: {dict(data)!r:.200}")
        if not isinstance(values.get("control", {}), dict):
            raise ValueError(f"{values['package']}: control must be an object")
        for name, value in values.items():
            if name in _OPTIONAL_STR and value is None:
                continue
            if name != "control" and not isinstance(value, str):
                raise ValueError(f"{values['package']}: {name} must be a string, not {value!r}")
        values["control"] = _copy_json(values.get("control", {}))
        return cls(**values)


_OPTIONAL_STR: Final = frozenset({"persistent_dir", "last_audit_status", "last_audit_date"})


# --- the agent's state ----------------------------------------------------------------------


class AgentState:
    """The agent's installed packages and parameters, in one durable TinyDB file.

    Every method is thread-safe (one lock) and every change is on disk when it returns. The
    file and its directory are created on the first write.
    """

    def __init__(self, path: Path) -> None:
        """Open the state file at `path`. Raises `StateError` if it exists and is corrupt."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db: TinyDB | None = TinyDB(self.path, storage=DurableJSONStorage)
        self._db.storage.read()  # fail now, at start-up, rather than at the first request

    # --- plumbing -----------------------------------------------------------------------

    def _table(self, name: str) -> Table:
        if self._db is None:
            raise StateError(f"{self.path}: the agent state is closed")
        return self._db.table(name)

    def _records(self, docs: list[Any]) -> list[InstalledRecord]:
        try:
            return [InstalledRecord.from_dict(d) for d in docs]
        except (ValueError, TypeError) as e:
            raise StateError(f"{self.path}: bad installed record: {e}") from e

    # --- installed packages -------------------------------------------------------------

    def installed(self) -> list[InstalledRecord]:
        """Every installed record, sorted by package name. Raises `StateError`."""
        with self._lock:
            records = self._records(self._table("installed").all())
        return sorted(records, key=lambda r: r.package)

    def get_installed(self, name: str) -> InstalledRecord | None:
        """The record of package `name`, or None. Raises `StateError`."""
        with self._lock:
            docs = self._table("installed").search(Query().package == name)
            records = self._records(docs)
        return records[0] if records else None

    def put_installed(self, record: InstalledRecord) -> None:
        """Insert or replace the record of `record.package`. Raises `StateError`."""
        doc = record.as_dict()
        with self._lock:
            self._table("installed").upsert(doc, Query().package == record.package)

    def remove_installed(self, name: str) -> None:
        """Forget package `name` (nothing happens if it is unknown). Raises `StateError`."""
        with self._lock:
            self._table("installed").remove(Query().package == name)

    def recover(self) -> list[InstalledRecord]:
        """At start-up: mark every record left "RUNNING" by a dead agent as "ERROR".

        Their output gets `INTERRUPTED_SUFFIX` appended. All of them are written at once.
        Returns the updated records. Raises `StateError`.
        """
        with self._lock:
            table = self._table("installed")
            stuck = self._records(table.search(Query().install_status == "RUNNING"))
            for record in stuck:
                record.install_status = "ERROR"
                record.install_output = _cap_output(record.install_output + INTERRUPTED_SUFFIX)
            if stuck:
                table.update_multiple([(r.as_dict(), Query().package == r.package) for r in stuck])
        for record in stuck:
            logger.warning("%s: the agent stopped during an operation on it", record.package)
        return stuck

    # --- parameters ---------------------------------------------------------------------

    def get_param(self, key: str, default: Any = None) -> Any:
        """The value stored under `key`, or `default`. Raises `StateError`."""
        with self._lock:
            docs = self._table("params").search(Query().key == key)
        return _copy_json(docs[0]["value"]) if docs else default

    def set_param(self, key: str, value: Any) -> None:
        """Store a JSON value under `key`. Raises `StateError` (not JSON, or I/O)."""
        with self._lock:
            self._table("params").upsert({"key": key, "value": value}, Query().key == key)

    def close(self) -> None:
        """Close the state; later calls raise `StateError`. Closing twice is harmless."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> AgentState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
