"""Write a bundle onto a stick: only what changed, with a switch-over that a pulled stick survives.

One write goes through these steps; at every instant the stick holds either the previous complete
bundle or the new one:

1. Finish a previous write that committed but was cut before moving its files into place.
2. Check, before copying a byte: files on the destination that are not the bundle's, FAT/exFAT
   names and case clashes, FAT32's 4 GiB file limit, and free space.
3. Copy every new or changed file into `comptoir-bundle/staging/` under a temporary name,
   fsync it, and rename it to its sha256. A source whose sha256 is already known for that very
   file (the repository's scan record, or the hash cache: same size, mtime and inode) is copied
   by the kernel (`copy_file_range`, else `sendfile`, else read/write) without being hashed
   again; any other is hashed as it is written (each source is read once). Nothing outside the
   staging area changes, so the previous bundle still verifies.
4. Write `N.targets.json` and `N.snapshot.json` (new names), then replace `timestamp.json`
   atomically: the commit. Agents now see version N, whose files are at their place or,
   for a moment longer, in the staging area under their hash.
5. Move the staged files into place (the `Packages` index last, so a WAPT agent reading the
   plain layout never sees an index ahead of its files), remove the files that left the set
   (the signed targets list them as `retired`), old versioned metadata and the staging area.

Unchanged files are recognised without reading them: same name and length as the current
target and, for a local source, a sha256 remembered for that file's size, modification time,
change time and inode (the hash cache) or recorded by the repository's scan for its size,
modification time and inode; for an HTTP source, the MD5 of the source index. Why a recorded
sha256 may be trusted without re-reading the file: ADR 7, "Hashes known before the write".
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from usb_bundler.fs import check_file_sizes, check_free_space, check_names, is_fat32
from usb_bundler.keys import BundleKeys
from usb_bundler.select import MAX_ICON, PNG_MAGIC, SourcePackage, package_from_file
from wapt.archive import check_member_name
from wapt.bundle import (
    ICONS_DIR,
    IGNORED_TOP_LEVEL,
    INDEX,
    METADATA_DIR,
    REPORTS_DIR,
    STAGING_DIR,
    TIMESTAMP,
    BundleInfo,
    TargetInfo,
    VerifiedBundle,
    build_packages_index,
    file_digest,
    hash_technician_pin,
    read_bundle,
    sign_bundle_metadata,
    target_path,
    versioned_metadata_numbers,
)
from wapt.control import PackageEntry
from wapt.errors import (
    BundleError,
    BundleFilesystemError,
    BundleKeyError,
    BundleSignatureError,
    BundleSpaceError,
    BundleVerificationError,
    BundleWriteError,
    UnsafePathError,
    WaptError,
)
from wapt.fsutil import fsync_directory, write_atomic
from wapt.trust import Certificate

__all__ = [
    "KIOSK_DIR",
    "BundleFile",
    "ProgressMeter",
    "WriteProgress",
    "WriteResult",
    "create_or_update_bundle",
    "kiosk_files",
]

CHUNK = 4 * 1024 * 1024
#: bytes written before asking the kernel to start writing them back
WRITEBACK_WINDOW = 16 * 1024 * 1024
_FADVISE = hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_DONTNEED")


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2): flush one file system (the stick's) and wait for it; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function


_SYNCFS = _load_syncfs()
#: how staged files reach the medium before the commit: "fsync" (each file on a helper thread
#: while the next one is copied), "syncfs" (one flush of the destination's file system after the
#: last file; Linux only, elsewhere "fsync"), or "auto": syncfs when every file of the write is
#: a kernel copy (its hashes known beforehand), else fsync. `bench/bundle.py` measures them
#: (docs/benchmarks.md): hashing copies want the per-file fsync overlapped with the copy (0.78×
#: against 0.41× `cp` + `sync`); kernel copies leave the CPU idle and one syncfs wins (0.84×
#: against 0.63× plain `cp -r`). A stick is a file system of its own: syncfs waits for no one
#: else's data there.
SYNC_MODE = "auto"
DEFAULT_EXPIRES_DAYS = 90
COPY_THREADS = 2
#: where `--with-kiosk` puts the kiosk's files on the stick
KIOSK_DIR = "comptoir-kiosk"


@dataclass(frozen=True)
class WriteProgress:
    """Where a write stands: bytes read (hashed or copied) out of the total, rate, time left."""

    done: int
    total: int
    #: bytes per second since the start
    rate: float
    #: seconds left at that rate (None before any byte)
    eta: float | None
    current: str


@dataclass
class WriteResult:
    """What a write did."""

    path: Path
    version: int
    bundle_id: str
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: bytes written into the staging area (packages, icons, index)
    bytes_copied: int = 0
    #: bytes of sources read only to compare them with the stick
    bytes_hashed: int = 0
    warnings: list[str] = field(default_factory=list)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    return now.astimezone(UTC)


# --- the hash cache -------------------------------------------------------------------------

#: (size, mtime_ns, inode): the file a known sha256 is for; checked again on the open file
_FileStamp = tuple[int, int, int]


def _file_stamp(st: os.stat_result) -> _FileStamp:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class _HashCache:
    """sha256 (and md5) of local sources, keyed by path and (size, mtime, ctime, inode)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, object]] = {}
        self.changed = False
        if path is not None:
            try:
                data = json.loads(path.read_bytes())
                if isinstance(data, dict) and isinstance(data.get("files"), dict):
                    self.entries = data["files"]
            except (OSError, ValueError):
                pass
        self.lock = threading.Lock()

    @staticmethod
    def _stamp(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def lookup(self, source: Path) -> tuple[str, str | None, _FileStamp] | None:
        """The sha256 and md5 remembered for `source`, and the stamp of the file they are for."""
        try:
            st = source.stat()
            entry = self.entries.get(os.path.realpath(source))
        except OSError:
            return None
        if entry is None or entry.get("stamp") != self._stamp(st):
            return None
        sha, md5 = entry.get("sha256"), entry.get("md5")
        if not isinstance(sha, str):
            return None
        return sha, md5 if isinstance(md5, str) else None, _file_stamp(st)

    def store(self, source: Path, st: os.stat_result, sha: str, md5: str | None) -> None:
        with self.lock:
            key = os.path.realpath(source)
            old = self.entries.get(key, {})
            if md5 is None and old.get("sha256") == sha and isinstance(old.get("md5"), str):
                md5 = str(old["md5"])
            self.entries[key] = {"stamp": self._stamp(st), "sha256": sha, "md5": md5}
            self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        data = json.dumps({"version": 1, "files": self.entries}, sort_keys=True).encode()
        with contextlib.suppress(OSError):  # a cache: losing it costs a re-read, nothing else
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, data, mode=0o600)


# --- streaming copy -------------------------------------------------------------------------


class ProgressMeter:
    """Counts bytes done against a total and reports `WriteProgress` at most every 0.1 s."""

    def __init__(self, total: int, report: Callable[[WriteProgress], None] | None) -> None:
        self.total = total
        self.done = 0
        self.report = report
        self.start = time.perf_counter()
        self.lock = threading.Lock()
        self.last = 0.0

    def add(self, count: int, current: str, *, force: bool = False) -> None:
        if self.report is None:
            return
        with self.lock:
            self.done += count
            now = time.perf_counter()
            if not force and now - self.last < 0.1 and self.done < self.total:
                return
            self.last = now
            elapsed = max(now - self.start, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else None
            done, total = self.done, self.total
        self.report(WriteProgress(done, total, rate, eta, current))


def _open_source(location: Path | str) -> BinaryIO:
    if isinstance(location, str):
        try:
            return urllib.request.urlopen(location, timeout=60)  # type: ignore[no-any-return]  # noqa: S310 (http(s) only, from select)
        except OSError as e:
            raise BundleWriteError(f"{location}: {getattr(e, 'reason', e)}") from e
    try:
        return open(location, "rb", buffering=0)
    except OSError as e:
        raise BundleWriteError(f"{location}: cannot read: {e.strerror or e}") from e


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


#: errors after which the next, plainer way of copying is tried (the kernel or the file system
#: does not offer this one, or not between these two file systems)
_COPY_FALLBACK_ERRNOS = frozenset(
    {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}
)
#: the ways of copying without hashing, fastest first
COPY_METHODS = ("copy_file_range", "sendfile", "read")


def _copy_chunk(fd_in: int, fd_out: int, count: int, methods: list[str]) -> int:
    """Copy up to `count` bytes from `fd_in`'s position to `fd_out`'s; bytes copied (0 at end).

    Uses `methods[0]`: `copy_file_range` and `sendfile` keep the bytes in the kernel; when one
    is missing or refused (see `_COPY_FALLBACK_ERRNOS`) it is dropped from `methods` and the
    next is tried. `read` (read/write through user space) is the last resort.
    """
    while True:
        method = methods[0]
        try:
            if method == "copy_file_range":
                copy_file_range = getattr(os, "copy_file_range", None)
                if copy_file_range is None:
                    raise OSError(errno.ENOSYS, "copy_file_range is not available")
                return int(copy_file_range(fd_in, fd_out, count))
            if method == "sendfile":
                sendfile = getattr(os, "sendfile", None)
                if sendfile is None:
                    raise OSError(errno.ENOSYS, "sendfile is not available")
                return int(sendfile(fd_out, fd_in, None, count))
            data = os.read(fd_in, min(count, CHUNK))
            _write_chunk(fd_out, memoryview(data))
            return len(data)
        except OSError as e:
            if method != "read" and e.errno in _COPY_FALLBACK_ERRNOS:
                methods.pop(0)
                continue
            raise


def _start_writeback(fd: int, flushed: int, length: int) -> int:
    """Once a window of `fd` is written past `flushed`, ask the kernel to start writing it
    back now, so the fsync before the commit waits less; the new `flushed` offset."""
    if _FADVISE and length - flushed >= WRITEBACK_WINDOW:
        os.posix_fadvise(fd, flushed, length - flushed, os.POSIX_FADV_DONTNEED)
        return length
    return flushed


def _space_or_write_error(e: OSError, dest: Path, what: str) -> BundleError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason = "is full" if e.errno != errno.EFBIG else "refuses a file that large"
        return BundleSpaceError(
            f"{dest}: the destination {reason} while writing {what}: free some space or use a "
            "larger stick; the previous bundle on it is intact"
        )
    return BundleWriteError(f"{dest}: cannot write {what}: {e.strerror or e}")


# --- the writer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleFile:
    """A file of a bundle that is not a package (the kiosk's): its path in the bundle, where
    its bytes are, its size, and its `kind` in the signed targets."""

    filename: str
    location: Path
    size: int
    kind: str = "kiosk"
    md5: str | None = None
    is_remote: bool = False


def kiosk_files(directory: Path) -> list[BundleFile]:
    """Every file of a built kiosk folder, as bundle files under `comptoir-kiosk/`.

    A stick holds regular files only: a link to a regular file inside the folder (PyInstaller's
    Linux builds link `_internal/libQt6*.so.6` to the copies under `PyQt6/`) goes onto the
    stick as a copy of what it points to.

    Raises:
        BundleFilesystemError: `directory` is not a directory, is empty, or holds special
            files or links that lead out of it or to a directory.
    """
    if not directory.is_dir():
        raise BundleFilesystemError(f"{directory}: not a directory (a built kiosk folder)")
    top = directory.resolve()
    files, problems = [], []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(top) or not target.is_file() or path.is_dir():
                problems.append(rel)
                continue
            files.append(BundleFile(f"{KIOSK_DIR}/{rel}", target, target.stat().st_size))
        elif path.is_file():
            files.append(BundleFile(f"{KIOSK_DIR}/{rel}", path, path.stat().st_size))
        elif not path.is_dir():
            problems.append(rel)
    if problems:
        raise BundleFilesystemError(
            f"{directory}: special files, or links out of the folder, cannot go onto a stick: "
            + ", ".join(problems)
        )
    if not files:
        raise BundleFilesystemError(f"{directory}: empty; build the kiosk first")
    return files


@dataclass
class _Planned:
    source: SourcePackage | BundleFile
    sha256: str | None = None
    md5: str | None = None
    copy: bool = True
    #: the file `sha256` is known for without hashing (scan record or hash cache), if any
    known_for: _FileStamp | None = None


class _Writer:
    def __init__(
        self,
        dest: Path,
        packages: Sequence[SourcePackage | Path],
        keys: BundleKeys,
        *,
        name: str,
        creator: str,
        expires_days: int,
        technician_pin: str | None,
        catalogs: Sequence[Mapping[str, Any]],
        files: Sequence[BundleFile],
        progress: Callable[[WriteProgress], None] | None,
        fat32: bool | None,
        hash_cache: Path | None,
        now: datetime | None,
        checkpoint: Callable[[str], None] | None,
    ) -> None:
        if expires_days < 1:
            raise ValueError(f"expires_days must be at least 1, not {expires_days}")
        self.dest = dest
        self.meta_dir = dest / METADATA_DIR
        self.staging = self.meta_dir / STAGING_DIR
        self.packages = packages
        self.keys = keys
        self.name = name
        self.creator = creator
        self.expires_days = expires_days
        self.technician_pin = technician_pin
        self.catalogs = tuple(dict(c) for c in catalogs)
        self.files = list(files)
        self.report = progress
        self.fat32 = fat32
        self.cache = _HashCache(hash_cache)
        self.now = _utc(now)
        self.checkpoint = checkpoint or (lambda _label: None)
        self.damaged = False
        self.warnings: list[str] = []
        self.syncer = ThreadPoolExecutor(1, thread_name_prefix="bundle-fsync")
        self.syncs: list[Future[None]] = []
        #: "fsync" or "syncfs", chosen per write (`SYNC_MODE`, `_choose_sync_mode`)
        self.sync_mode = "fsync"

    # -- the current bundle --

    def _current(self) -> VerifiedBundle | None:
        if not (self.meta_dir / TIMESTAMP).exists():
            self.damaged = self.meta_dir.is_dir()
            return None
        try:
            return read_bundle(self.dest, self.keys.first_root)
        except BundleVerificationError as e:
            if e.has(BundleSignatureError):
                raise BundleKeyError(
                    f"{self.dest}: holds a bundle signed with other keys than those of "
                    f"{self.keys.directory}: use another stick or directory, or erase it first"
                ) from e
            self.damaged = True
            self.warnings.append(f"the bundle found was damaged and is written anew: {e}")
            return None

    def _bundle_shaped(self, rel: str) -> bool:
        parts = rel.split("/")
        return (
            (len(parts) == 1 and (rel == INDEX or rel.endswith(".wapt")))
            or (len(parts) == 2 and parts[0] == ICONS_DIR)
            or (len(parts) >= 2 and parts[0] == KIOSK_DIR)
        )

    def _existing_files(self) -> list[str]:
        found: list[str] = []
        stack = [""]
        while stack:
            prefix = stack.pop()
            with os.scandir(self.dest / prefix if prefix else self.dest) as it:
                for entry in it:
                    rel = f"{prefix}/{entry.name}" if prefix else entry.name
                    top = rel.split("/")[0]
                    if top in (METADATA_DIR, REPORTS_DIR) or top in IGNORED_TOP_LEVEL:
                        continue
                    if top.startswith(".Trash-"):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(rel)
                    else:
                        found.append(rel)
        return found

    def _check_foreign(self, current: VerifiedBundle | None) -> list[str]:
        """Files of the destination the writer may replace or remove; raise on any other."""
        ours, foreign = [], []
        known = set(current.targets) | set(current.info.retired) if current else set()
        for rel in self._existing_files():
            if rel in known or (self.damaged and self._bundle_shaped(rel)):
                ours.append(rel)
            else:
                foreign.append(rel)
        if foreign:
            shown = ", ".join(sorted(foreign)[:8]) + (" …" if len(foreign) > 8 else "")
            raise BundleFilesystemError(
                f"{self.dest}: holds {len(foreign)} file(s) that are not part of a bundle ("
                f"{shown}); agents would refuse the bundle: use an empty stick or directory, "
                "or remove them"
            )
        return ours

    # -- finishing a committed write --

    def _finish(self, targets: dict[str, TargetInfo], retired: Sequence[str]) -> list[str]:
        """Move staged files of the committed targets into place; remove retired files."""
        pending: dict[str, list[TargetInfo]] = {}
        for target in targets.values():
            if (self.staging / target.sha256).is_file():
                pending.setdefault(target.sha256, []).append(target)
        ordered = sorted(pending.items(), key=lambda kv: any(t.path == INDEX for t in kv[1]))
        directories: set[Path] = set()
        for sha, group in ordered:
            staged = self.staging / sha
            group.sort(key=lambda t: t.path == INDEX)
            for number, target in enumerate(group):
                plain = target_path(self.dest, target.path)
                plain.parent.mkdir(parents=True, exist_ok=True)
                if number < len(group) - 1:  # same bytes at several paths: copy all but the last
                    copy = self.staging / f".{uuid.uuid4().hex}.dup"
                    shutil.copyfile(staged, copy)
                    with open(copy, "rb+") as f:
                        os.fsync(f.fileno())
                    os.replace(copy, plain)
                else:
                    os.replace(staged, plain)
                directories.add(plain.parent)
                self.checkpoint(f"placed:{target.path}")
        for directory in directories:
            fsync_directory(directory)
        removed = []
        for rel in retired:
            if rel in targets:
                continue
            path = target_path(self.dest, rel)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                self.warnings.append(f"{rel}: cannot remove: {e.strerror or e}")
                continue
            removed.append(rel)
            self.checkpoint(f"removed:{rel}")
        if removed:
            fsync_directory(self.dest)
        return removed

    # -- planning --

    def _sources(self) -> list[SourcePackage]:
        sources = []
        for item in self.packages:
            if isinstance(item, Path):
                try:
                    sources.append(package_from_file(item))
                except (WaptError, OSError) as e:
                    raise BundleWriteError(f"{item}: not a readable package: {e}") from e
            else:
                sources.append(item)
        names: dict[str, SourcePackage] = {}
        for source in sources:
            try:
                check_member_name(source.filename)
            except UnsafePathError as e:
                raise BundleFilesystemError(f"{source.filename!r}: {e}") from e
            if "/" in source.filename or not source.filename.endswith(".wapt"):
                raise BundleFilesystemError(
                    f"{source.filename!r}: a bundle package is a plain `.wapt` file name"
                )
            if source.filename in names and names[source.filename] != source:
                raise BundleFilesystemError(f"{source.filename}: given twice")
            names[source.filename] = source
        return list(names.values())

    def _plain_ok(self, target: TargetInfo) -> bool:
        try:
            st = target_path(self.dest, target.path).lstat()
        except OSError:
            return (self.staging / target.sha256).is_file()
        return st.st_size == target.length

    def _hash_only(self, source: SourcePackage, progress: ProgressMeter) -> tuple[str, str | None]:
        assert isinstance(source.location, Path)
        sha = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        try:
            st = source.location.stat()
            with open(source.location, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    sha.update(view[:n])
                    progress.add(n, source.filename)
        except OSError as e:
            raise BundleWriteError(f"{source.location}: cannot read: {e.strerror or e}") from e
        digest = sha.hexdigest()
        self.cache.store(source.location, st, digest, None)
        return digest, None

    def _plan(
        self, sources: Sequence[SourcePackage | BundleFile], current: VerifiedBundle | None
    ) -> list[_Planned]:
        plans = []
        for source in sources:
            plan = _Planned(source, md5=source.md5)
            if isinstance(source.location, Path):
                known = self.cache.lookup(source.location)
                if known is not None:
                    plan.sha256, plan.known_for = known[0], known[2]
                    plan.md5 = plan.md5 or known[1]
                elif isinstance(source, SourcePackage) and source.recorded is not None:
                    # the repository's scan hashed this very file (same size, mtime, inode)
                    try:
                        st = source.location.stat()
                    except OSError:
                        st = None
                    if st is not None and source.recorded.matches(st):
                        plan.sha256, plan.known_for = source.recorded.sha256, _file_stamp(st)
            old = current.targets.get(source.filename) if current else None
            if old is not None and old.length == source.size and self._plain_ok(old):
                if source.is_remote:
                    if source.md5 is not None and old.md5 == source.md5:
                        plan.sha256, plan.copy = old.sha256, False
                elif plan.sha256 == old.sha256:
                    plan.copy = False
                if not plan.copy:
                    plan.md5 = plan.md5 or old.md5
            plans.append(plan)
        return plans

    def _compare_unknown(
        self, plans: list[_Planned], current: VerifiedBundle | None, result: WriteResult
    ) -> None:
        """Hash local sources that might be unchanged but that the cache does not know."""
        todo = [
            p
            for p in plans
            if p.copy
            and p.sha256 is None
            and not p.source.is_remote
            and current is not None
            and (old := current.targets.get(p.source.filename)) is not None
            and old.length == p.source.size
            and self._plain_ok(old)
        ]
        if not todo:
            return
        progress = ProgressMeter(sum(p.source.size for p in todo), self.report)
        with ThreadPoolExecutor(COPY_THREADS) as pool:
            digests = list(pool.map(lambda p: self._hash_only(p.source, progress), todo))
        for plan, (sha, _) in zip(todo, digests, strict=True):
            assert current is not None
            old = current.targets[plan.source.filename]
            plan.sha256 = sha
            result.bytes_hashed += plan.source.size
            if sha == old.sha256:
                plan.copy = False
                plan.md5 = plan.md5 or old.md5

    # -- copying --

    def _stage_stream(
        self,
        name: str,
        stream: BinaryIO,
        size: int | None,
        want_md5: bool,
        progress: ProgressMeter,
        mode: int = 0o644,
    ) -> tuple[str, str | None, int]:
        sha = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
        part = self.staging / f".{uuid.uuid4().hex}.part"
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        length = flushed = 0
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except OSError as e:
            raise _space_or_write_error(e, self.dest, name) from e
        try:
            try:
                while True:
                    try:
                        n = stream.readinto(buffer)  # type: ignore[attr-defined]
                    except OSError as e:
                        raise BundleWriteError(f"{name}: cannot read the source: {e}") from e
                    if not n:
                        break
                    chunk = view[:n]
                    sha.update(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    try:
                        _write_chunk(fd, chunk)
                    except OSError as e:
                        raise _space_or_write_error(e, self.dest, name) from e
                    length += n
                    progress.add(n, name)
                    flushed = _start_writeback(fd, flushed, length)
            finally:
                os.close(fd)
            if size is not None and length != size:
                raise BundleWriteError(
                    f"{name}: the source has {length} bytes, its index says {size}: it changed "
                    "while being copied, or the index is stale; rescan the repository"
                )
            digest = sha.hexdigest()
            os.replace(part, self.staging / digest)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        self._sync_later(self.staging / digest, name)
        return digest, md5.hexdigest() if md5 is not None else None, length

    def _stage_known(
        self,
        source: SourcePackage | BundleFile,
        location: Path,
        sha256: str,
        known_for: _FileStamp,
        progress: ProgressMeter,
    ) -> int | None:
        """Copy a source whose sha256 is already known, without hashing it; bytes copied.

        The bytes stay in the kernel (`_copy_chunk`). The open source must still be the file
        the hash is known for (size, mtime, inode), before and after the copy; otherwise None:
        the caller hashes it while copying instead. Staging, early writeback and the fsync on
        the syncer thread are those of `_stage_stream`.
        """
        name = source.filename
        try:
            fd_in = os.open(location, os.O_RDONLY)
        except OSError as e:
            raise BundleWriteError(f"{location}: cannot read: {e.strerror or e}") from e
        try:
            st = os.fstat(fd_in)
            if _file_stamp(st) != known_for:
                return None
            executable = isinstance(source, BundleFile) and st.st_mode & 0o111
            part = self.staging / f".{uuid.uuid4().hex}.part"
            try:
                fd = os.open(
                    part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755 if executable else 0o644
                )
            except OSError as e:
                raise _space_or_write_error(e, self.dest, name) from e
            try:
                length = flushed = 0
                methods = list(COPY_METHODS)
                try:
                    while length < source.size:
                        count = min(WRITEBACK_WINDOW, source.size - length)
                        try:
                            n = _copy_chunk(fd_in, fd, count, methods)
                        except OSError as e:
                            raise _space_or_write_error(e, self.dest, name) from e
                        if not n:
                            if methods[0] == "read":
                                break  # the end of the file, earlier than its index says
                            methods.pop(0)  # a kernel copy that copies nothing: go plainer
                            continue
                        length += n
                        progress.add(n, name)
                        flushed = _start_writeback(fd, flushed, length)
                finally:
                    os.close(fd)
                if length != source.size or _file_stamp(os.fstat(fd_in)) != known_for:
                    # changed since it was hashed, or while being copied: hash what is there
                    part.unlink()
                    progress.add(-length, name)
                    return None
                os.replace(part, self.staging / sha256)
            except BaseException:
                with contextlib.suppress(OSError):
                    part.unlink()
                raise
        finally:
            os.close(fd_in)
        self._sync_later(self.staging / sha256, name)
        return length

    def _sync_later(self, path: Path, name: str) -> None:
        """fsync `path` on the syncer thread, while the copiers go on with the next files."""

        def sync() -> None:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise _space_or_write_error(e, self.dest, name) from e

        if self.sync_mode == "syncfs":
            return  # `_wait_synced` flushes the whole file system once, after the last file
        self.syncs.append(self.syncer.submit(sync))

    def _choose_sync_mode(self, to_copy: Sequence[_Planned]) -> str:
        """ "syncfs" where it exists and `SYNC_MODE` asks for it (or, "auto", when every copy
        is a kernel copy of known hashes); else "fsync"."""
        if _SYNCFS is None or SYNC_MODE == "fsync":
            return "fsync"
        if SYNC_MODE == "syncfs":
            return "syncfs"
        known = all(p.sha256 is not None and p.md5 is not None for p in to_copy)
        return "syncfs" if known else "fsync"

    def _wait_synced(self) -> None:
        """Every staged file is on the medium: the commit may follow."""
        if self.sync_mode == "syncfs" and _SYNCFS is not None:
            # One flush for the whole write, like the `sync` a technician runs after `cp`: the
            # kernel writes every staged file back at its own pace meanwhile, and nothing waits
            # on one file at a time.
            fd = os.open(self.staging, os.O_RDONLY)
            try:
                if _SYNCFS(fd) != 0:
                    code = ctypes.get_errno()
                    error = OSError(code, os.strerror(code))
                    raise _space_or_write_error(error, self.dest, "the staged files")
            finally:
                os.close(fd)
            return
        try:
            for future in self.syncs:
                future.result()
        finally:
            self.syncs.clear()

    def _copy(self, plan: _Planned, progress: ProgressMeter) -> tuple[str, str | None, int]:
        source = plan.source
        if plan.sha256 is not None:
            staged = self.staging / plan.sha256
            if staged.is_file() and staged.stat().st_size == source.size:
                # left by an interrupted write: reuse it if it still hashes right
                sha, md5 = file_digest(staged, md5=plan.md5 is None)
                if sha == plan.sha256:
                    progress.add(source.size, source.filename)
                    return sha, plan.md5 or md5, 0
        needs_md5 = plan.md5 is None and isinstance(source, SourcePackage)
        if (
            plan.sha256 is not None
            and plan.known_for is not None
            and not needs_md5
            and isinstance(source.location, Path)
        ):
            length = self._stage_known(
                source, source.location, plan.sha256, plan.known_for, progress
            )
            if length is not None:
                self.checkpoint(f"staged:{source.filename}")
                return plan.sha256, plan.md5, length
        with _open_source(source.location) as stream:
            st = source.location.stat() if isinstance(source.location, Path) else None
            # the kiosk's executables stay executable (where the file system keeps modes)
            executable = isinstance(source, BundleFile) and st is not None and st.st_mode & 0o111
            sha, md5, length = self._stage_stream(
                source.filename,
                stream,
                source.size,
                plan.md5 is None and isinstance(source, SourcePackage),  # WAPT's index needs it
                progress,
                mode=0o755 if executable else 0o644,
            )
        if st is not None and isinstance(source.location, Path):
            self.cache.store(source.location, st, sha, md5)
        self.checkpoint(f"staged:{source.filename}")
        return sha, plan.md5 or md5, length

    def _stage_bytes(self, name: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        staged = self.staging / digest
        if staged.is_file() and staged.stat().st_size == len(data):
            return digest
        try:
            write_atomic(staged, data, temp_prefix=".")
        except OSError as e:
            raise _space_or_write_error(e, self.dest, name) from e
        self.checkpoint(f"staged:{name}")
        return digest

    # -- icons and index --

    def _icon_bytes(self, source: SourcePackage) -> bytes | None:
        icon = source.icon
        if icon is None or isinstance(icon, bytes):
            return icon
        try:
            if isinstance(icon, Path):
                if not icon.is_file() or icon.stat().st_size > MAX_ICON:
                    return None
                data = icon.read_bytes()
            else:
                with _open_source(icon) as stream:
                    data = stream.read(MAX_ICON + 1)
        except (OSError, BundleWriteError):
            return None
        return data if data.startswith(PNG_MAGIC) and len(data) <= MAX_ICON else None

    # -- the write --

    def run(self) -> WriteResult:
        try:
            return self._run()
        finally:
            self.syncer.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> WriteResult:
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _space_or_write_error(e, self.dest, METADATA_DIR) from e
        current = self._current()
        finished_removed: list[str] = []
        if current is not None:
            finished_removed = self._finish(dict(current.targets), current.info.retired)
        sources = self._sources()
        ours = self._check_foreign(current)

        icons: dict[str, tuple[SourcePackage, bytes]] = {}
        for source in sources:
            uuid_ = source.entry.package_uuid
            data = self._icon_bytes(source) if uuid_ else None
            if data is not None:
                try:
                    check_member_name(uuid_)
                except UnsafePathError:
                    continue
                icons[f"{ICONS_DIR}/{uuid_}.png"] = (source, data)
        names = [s.filename for s in sources]
        clash = set(names) & {f.filename for f in self.files}
        if clash or any(not f.filename.startswith(f"{KIOSK_DIR}/") for f in self.files):
            raise BundleFilesystemError(f"bundle files outside {KIOSK_DIR}/ or given twice")
        check_names([*names, *icons, INDEX, *(f.filename for f in self.files)])
        fat32 = is_fat32(self.dest) if self.fat32 is None else self.fat32
        check_file_sizes(
            [*((s.filename, s.size) for s in sources), *((f.filename, f.size) for f in self.files)],
            fat32=fat32,
        )

        plans = self._plan(sources, current)
        file_plans = self._plan(self.files, current)
        result = WriteResult(self.dest, 0, "", warnings=self.warnings)
        self._compare_unknown([*plans, *file_plans], current, result)
        to_copy = [p for p in [*plans, *file_plans] if p.copy]
        icon_bytes = sum(len(d) for _, d in icons.values())
        check_free_space(
            self.dest,
            sum(p.source.size for p in to_copy) + icon_bytes + 64 * 1024 * len(sources),
            files=len(to_copy) + len(icons) + 4 + len(self.files),
        )

        # copy what is new or changed into the staging area
        self.sync_mode = self._choose_sync_mode(to_copy)
        progress = ProgressMeter(sum(p.source.size for p in to_copy), self.report)
        if to_copy:
            with ThreadPoolExecutor(COPY_THREADS) as pool:
                futures = [pool.submit(self._copy, p, progress) for p in to_copy]
                try:
                    outcomes = [f.result() for f in futures]
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            for plan, (sha, md5, length) in zip(to_copy, outcomes, strict=True):
                plan.sha256, plan.md5 = sha, md5
                result.bytes_copied += length
                result.copied.append(plan.source.filename)
            progress.add(0, "", force=True)
        result.unchanged = sorted(p.source.filename for p in [*plans, *file_plans] if not p.copy)

        targets = self._targets(plans, icons, current, result)
        for plan in file_plans:
            assert plan.sha256 is not None and isinstance(plan.source, BundleFile)
            path, size = plan.source.filename, plan.source.size
            targets[path] = TargetInfo(path, size, plan.sha256, {"kind": plan.source.kind})
        version = 1 + max(
            [0, *versioned_metadata_numbers(self.dest)]
            + (
                [current.timestamp_version, current.snapshot_version, current.targets_version]
                if current
                else []
            )
        )
        retired = sorted((set(current.targets) if current else set(ours)) - set(targets))
        if self.damaged:
            retired = sorted(set(retired) | (set(ours) - set(targets)))
        info = self._info(plans, current, retired)
        signed = sign_bundle_metadata(
            targets.values(),
            info,
            version=version,
            expires=self.now + timedelta(days=self.expires_days),
            signers=self.keys.signers,
        )
        self._wait_synced()
        try:
            for number, data in sorted(self.keys.roots.items()):
                self._write_if_changed(self.meta_dir / f"{number}.root.json", data)
            self._write_if_changed(self.meta_dir / "root.json", self.keys.root)
            write_atomic(self.meta_dir / signed.targets_name, signed.targets)
            write_atomic(self.meta_dir / signed.snapshot_name, signed.snapshot)
            fsync_directory(self.staging)
            self.checkpoint("metadata")
            write_atomic(self.meta_dir / TIMESTAMP, signed.timestamp)  # the commit
        except OSError as e:
            raise _space_or_write_error(e, self.dest, "the metadata") from e
        self.checkpoint("committed")

        result.version, result.bundle_id = version, info.bundle_id
        try:
            result.removed = sorted(set(finished_removed) | set(self._finish(targets, retired)))
            self._clean(version)
        except OSError as e:
            self.warnings.append(
                f"committed version {version}, but finishing failed: {e.strerror or e}; write "
                "the bundle again to finish"
            )
        self.cache.save()
        self.checkpoint("done")
        return result

    def _write_if_changed(self, path: Path, data: bytes) -> None:
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        write_atomic(path, data)

    def _targets(
        self,
        plans: list[_Planned],
        icons: dict[str, tuple[SourcePackage, bytes]],
        current: VerifiedBundle | None,
        result: WriteResult,
    ) -> dict[str, TargetInfo]:
        targets: dict[str, TargetInfo] = {}
        entries: list[PackageEntry] = []
        certificates: dict[str, Certificate] = {}
        for plan in plans:
            source = plan.source
            assert isinstance(source, SourcePackage)
            entry = source.entry
            assert plan.sha256 is not None
            md5 = plan.md5
            if md5 is None:  # unchanged, from a source without MD5: the stick's copy has it
                _, md5 = file_digest(target_path(self.dest, source.filename), md5=True)
            assert md5 is not None
            targets[source.filename] = TargetInfo(
                source.filename,
                source.size,
                plan.sha256,
                {
                    "kind": "package",
                    "md5": md5,
                    "package": entry.package,
                    "version": entry.version,
                    "architecture": entry.architecture,
                    "maturity": entry.maturity,
                    "locale": str(entry.get("locale")),
                    "section": entry.section,
                    "package_uuid": entry.package_uuid,
                },
            )
            indexed = entry.copy()
            for attr in ("filename", "size", "md5sum", "repo_url", "localpath", "repo"):
                if attr in indexed:
                    del indexed[attr]
            indexed["filename"] = source.filename
            indexed["size"] = source.size
            indexed["md5sum"] = md5
            entries.append(indexed)
            for cert in source.certificates:
                certificates[cert.fingerprint] = cert
        for path, (source, data) in icons.items():
            sha = self._target_bytes(path, data, current, result)
            targets[path] = TargetInfo(
                path, len(data), sha, {"kind": "icon", "package_uuid": source.entry.package_uuid}
            )
        index = build_packages_index(entries, certificates.values())
        sha = self._target_bytes(INDEX, index, current, result)
        targets[INDEX] = TargetInfo(INDEX, len(index), sha, {"kind": "index"})
        return targets

    def _target_bytes(
        self, path: str, data: bytes, current: VerifiedBundle | None, result: WriteResult
    ) -> str:
        sha = hashlib.sha256(data).hexdigest()
        old = current.targets.get(path) if current else None
        if old is not None and old.sha256 == sha and self._plain_ok(old):
            return sha
        self._stage_bytes(path, data)
        result.bytes_copied += len(data)
        return sha

    def _info(
        self, plans: list[_Planned], current: VerifiedBundle | None, retired: list[str]
    ) -> BundleInfo:
        pin = (
            hash_technician_pin(self.technician_pin)
            if self.technician_pin
            else (current.info.technician_pin if current else None)
        )
        return BundleInfo(
            bundle_id=current.info.bundle_id if current else uuid.uuid4().hex,
            name=self.name or (current.info.name if current else "") or self.dest.name,
            created=self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            creator=self.creator,
            packages=tuple(
                sorted(
                    f"{p.source.entry.package}(={p.source.entry.version})"
                    for p in plans
                    if isinstance(p.source, SourcePackage)
                )
            ),
            technician_pin=pin,
            catalogs=self.catalogs,
            retired=tuple(retired),
        )

    def _clean(self, version: int) -> None:
        for name in os.listdir(self.meta_dir):
            parts = name.split(".")
            old_version = (
                len(parts) == 3
                and parts[0].isdigit()
                and parts[1] in ("snapshot", "targets")
                and int(parts[0]) != version
            )
            temporary = name.startswith(".") and name.endswith(".tmp")  # a killed write_atomic
            if old_version or temporary:
                (self.meta_dir / name).unlink(missing_ok=True)
                self.checkpoint(f"removed:{METADATA_DIR}/{name}")
        for leftover in os.listdir(self.staging):
            (self.staging / leftover).unlink(missing_ok=True)
        fsync_directory(self.meta_dir)


def _write_chunk(fd: int, chunk: memoryview) -> None:
    """One chunk to the destination (a seam for tests that simulate a full disk)."""
    _write_all(fd, chunk)


def create_or_update_bundle(
    dest: Path,
    packages: Sequence[SourcePackage | Path],
    keys: BundleKeys,
    *,
    name: str = "",
    creator: str = "",
    expires_days: int = DEFAULT_EXPIRES_DAYS,
    technician_pin: str | None = None,
    catalogs: Sequence[Mapping[str, Any]] = (),
    files: Sequence[BundleFile] = (),
    progress: Callable[[WriteProgress], None] | None = None,
    fat32: bool | None = None,
    hash_cache: Path | None = None,
    now: datetime | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> WriteResult:
    """Write the bundle of `packages` (files, or `SourcePackage`s resolved from a repository)
    into `dest`, or bring the bundle already there up to date, signed with `keys`.

    Only new or changed files are copied; files that left the set are removed once the new
    metadata is committed. `fat32` forces (or, False, disables) the FAT32 size check; None
    detects the file system. `hash_cache` remembers source hashes between runs. `catalogs`
    (name, title, description, packages) go into the signed details; `files` (`kiosk_files`)
    are written like packages, as signed targets of their own kind. `checkpoint` is
    called with a label after every step that changes the destination (for fault injection).

    Raises:
        BundleFilesystemError: foreign files in `dest`, forbidden or clashing names, a file too
            large for FAT32.
        BundleSpaceError: not enough free space (checked first), or the disk filled up.
        BundleKeyError: `dest` holds a bundle made with other keys, or signing fails.
        BundleWriteError: a source cannot be read, or a write fails.
    """
    return _Writer(
        dest,
        packages,
        keys,
        name=name,
        creator=creator,
        expires_days=expires_days,
        technician_pin=technician_pin,
        catalogs=catalogs,
        files=files,
        progress=progress,
        fat32=fat32,
        hash_cache=hash_cache,
        now=now,
        checkpoint=checkpoint,
    ).run()
