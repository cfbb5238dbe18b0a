"""Backups of a site server's state: signed tar archives, pushed to a directory or over HTTP.

`backup(site, signer)` snapshots every file under `data_dir` (the stores, the host shards, the
audit log, whatever the site modules keep there) into a tar archive, signs a statement of it
with the site's deployer key, and writes both to the target, a directory or an http(s) URL
(`PUT`)::

    <target>/backups/<site name>/<UTC time>.tar      the archive
    <target>/backups/<site name>/<UTC time>.tar.sig  the signed statement (JSON)
    <target>/backups/<site name>/latest              the archive's name, written last

`restore(target, site_name, data_dir, trusted)` fetches the latest, verifies the statement's
signature and chain against the trusted certificates and the archive against the statement,
then unpacks it (regular files and directories only, no path out of the archive) into a
directory beside `data_dir` that is renamed into place: a refused or broken archive leaves
nothing behind.

What is never archived (ADR 8): `private/` (the enrolment secret and other secrets), the
configured passphrase and enrolment secret files, any file that holds a private key (the keys
in `keys_dir` included: only certificates are kept), lock and temporary files, and the backup
target itself. After a restore the admin puts the site's keys back from their own safe place.

Consistency: a store keeps `<file>.lock` beside its files and takes it (`flock`) while it
writes (`portal.site.storage.transaction`, the audit log); the backup holds every such lock,
in name order, while it reads, so the archive is one moment of the whole state.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

import orjson

from portal.site.audit import AuditEvent, AuditLog
from portal.site.keys import SiteKeyError, load_signer
from portal.site.settings import SiteSettings
from wapt.errors import TrustError, WaptError
from wapt.fsutil import fsync_directory, write_atomic
from wapt.trust import KeySigner, Signer, TrustStore, load_certificates

try:  # POSIX; on Windows the site server is one process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT",
    "BackupError",
    "BackupResult",
    "BackupScheduler",
    "RestoreResult",
    "backup",
    "backup_files",
    "load_backup_signer",
    "restore",
]

log = logging.getLogger("comptoir.site.backup")

FORMAT: Final = "comptoir-site-backup/1"
ARCHIVE_NAME: Final = re.compile(r"^\d{8}T\d{6}-\d{6}Z\.tar$")
MAX_STATEMENT: Final = 1024 * 1024
#: files smaller than this are read whole and searched for a private key before archiving
KEY_SCAN_LIMIT: Final = 1024 * 1024
PRIVATE_KEY_MARK: Final = b"PRIVATE KEY-----"
CHUNK: Final = 1024 * 1024
Progress = Callable[[int, int], None]


class BackupError(Exception):
    """A backup cannot be made, fetched or trusted; the message names the file and why."""


@dataclass(frozen=True)
class BackupResult:
    """A backup made: where it went and what it holds."""

    archive: str
    location: str
    files: int
    size: int
    sha256: str
    #: paths under data_dir left out on purpose (secrets, keys), for the report
    left_out: tuple[str, ...]


@dataclass(frozen=True)
class RestoreResult:
    """A backup restored into `data_dir`."""

    archive: str
    data_dir: Path
    files: int
    created: str
    signer: str


# --- what goes in ----------------------------------------------------------------------------


def _left_out_paths(site: SiteSettings) -> list[Path]:
    paths = [site.private_dir, site.enrolment_secret_file]
    if site.key_passphrase_file is not None:
        paths.append(site.key_passphrase_file)
    if site.backup_target and not site.backup_target.startswith(("http://", "https://")):
        paths.append(Path(site.backup_target))
    return [path.absolute() for path in paths]


def backup_files(site: SiteSettings) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files a backup takes (archive name, path), sorted, and those it leaves out.

    Raises:
        BackupError: `data_dir` cannot be listed.
    """
    root = site.data_dir.absolute()
    excluded = _left_out_paths(site)
    taken: list[tuple[str, Path]] = []
    left_out: list[str] = []

    def error(e: OSError) -> None:
        raise BackupError(f"{e.filename}: cannot list: {e.strerror or e}")

    if not root.is_dir():
        raise BackupError(f"{root}: the site's data_dir does not exist")
    for directory, dirs, files in os.walk(root, onerror=error):
        here = Path(directory)
        for name in list(dirs):
            path = here / name
            if path in excluded or path.is_symlink():
                dirs.remove(name)
                left_out.append(path.relative_to(root).as_posix() + "/")
        dirs.sort()
        for name in sorted(files):
            path = here / name
            relative = path.relative_to(root).as_posix()
            if name.endswith((".lock", ".tmp")) or path.is_symlink() or not path.is_file():
                continue  # locks, half-written temporary files, links: never state
            if path in excluded or _holds_private_key(path):
                left_out.append(relative)
                continue
            taken.append((relative, path))
    return taken, left_out


def _holds_private_key(path: Path) -> bool:
    try:
        if path.stat().st_size > KEY_SCAN_LIMIT:
            return False
        return PRIVATE_KEY_MARK in path.read_bytes()
    except OSError as e:
        raise BackupError(f"{path}: cannot read: {e.strerror or e}") from e


@contextlib.contextmanager
def _all_store_locks(root: Path) -> Iterator[None]:
    """Hold every `*.lock` under `root` (flock, in name order) for a consistent snapshot."""
    with contextlib.ExitStack() as stack:
        if fcntl is not None:
            for lock in sorted(root.rglob("*.lock")):
                if lock.is_file() and not lock.is_symlink():
                    fd = os.open(lock, os.O_RDONLY)  # flock needs no write access
                    stack.callback(os.close, fd)
                    fcntl.flock(fd, fcntl.LOCK_EX)
        yield


def _write_archive(
    site: SiteSettings, stream: IO[bytes], progress: Progress | None
) -> tuple[int, list[str]]:
    """Write the tar of the state to `stream`; return the number of files and the left out."""
    with _all_store_locks(site.data_dir):
        files, left_out = backup_files(site)
        sizes = [path.stat().st_size for _, path in files]
        total, done = sum(sizes), 0
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for (name, path), size in zip(files, sizes, strict=True):
                with path.open("rb") as source:
                    data = source.read(size)  # as it was when the locks were taken
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(path.stat().st_mtime)
                info.mode = 0o600
                archive.addfile(info, _Reader(data))
                done += size
                if progress is not None:
                    progress(done, total)
    return len(files), left_out


class _Reader:
    """Bytes as the file object `tarfile.addfile` reads."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = bytes(self._data[self._at : end])
        self._at += len(chunk)
        return chunk


# --- the signed statement ------------------------------------------------------------------


def _canonical(statement: dict[str, Any]) -> bytes:
    return orjson.dumps(statement, option=orjson.OPT_SORT_KEYS)


def _sign_statement(statement: dict[str, Any], signer: Signer) -> bytes:
    body = dict(statement, certificates=[cert.pem.decode("ascii") for cert in signer.chain])
    signature = base64.b64encode(signer.sign(_canonical(body))).decode("ascii")
    return orjson.dumps(dict(body, signature=signature), option=orjson.OPT_INDENT_2)


def _verify_statement(
    data: bytes, trusted: TrustStore, *, where: str, site_name: str, archive: str
) -> tuple[dict[str, Any], str]:
    """The statement, if its signature verifies with a chain the store trusts; and the signer.

    Raises:
        BackupError: not a statement, unsigned, untrusted, tampered with, or not the one
            expected; every problem is named.
    """
    try:
        signed = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BackupError(f"{where}: not a backup signature file: {e}") from e
    if not isinstance(signed, dict) or signed.get("format") != FORMAT:
        raise BackupError(f"{where}: not a {FORMAT} signature file")
    signature_text = signed.pop("signature", None)
    pems = signed.get("certificates")
    if not isinstance(signature_text, str) or not signature_text:
        raise BackupError(f"{where}: the backup is not signed")
    if not isinstance(pems, list) or not pems or not all(isinstance(p, str) for p in pems):
        raise BackupError(f"{where}: no signer certificate")
    try:
        chain = [
            cert
            for pem in pems
            for cert in load_certificates(pem.encode("ascii"), source=f"{where}: certificates")
        ]
        trusted.check_chain(chain)
        signature = base64.b64decode(signature_text, validate=True)
        chain[0].verify(_canonical(signed), signature, what=where)
    except (WaptError, ValueError) as e:
        raise BackupError(f"{where}: refused: {e}") from e
    problems = []
    if signed.get("site") != site_name:
        problems.append(f"made for site {signed.get('site')!r}, not {site_name!r}")
    if signed.get("archive") != archive:
        problems.append(f"signs archive {signed.get('archive')!r}, not {archive!r}")
    if not isinstance(signed.get("size"), int) or not isinstance(signed.get("sha256"), str):
        problems.append("no size or sha256 for the archive")
    if problems:
        raise BackupError(f"{where}: " + "; ".join(problems))
    return signed, chain[0].cn


# --- targets -------------------------------------------------------------------------------


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _location(target: str, site_name: str) -> str:
    base = target.rstrip("/") if _is_url(target) else str(Path(target))
    return f"{base}/backups/{site_name}"


def _put(url: str, stream: IO[bytes], size: int, timeout: float) -> None:
    request = urllib.request.Request(  # noqa: S310 (http(s) only, checked by the caller)
        url,
        data=stream,
        method="PUT",
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as e:
        raise BackupError(f"{url}: the server refused the upload: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise BackupError(f"{url}: cannot upload: {getattr(e, 'reason', e)}") from e


def _get(url: str, sink: IO[bytes], limit: int, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (http(s))
            size = 0
            while chunk := answer.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BackupError(f"{url}: larger than {limit} bytes")
                sink.write(chunk)
            return size
    except urllib.error.HTTPError as e:
        raise BackupError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise BackupError(f"{url}: cannot download: {getattr(e, 'reason', e)}") from e


def _read_small(location: str, name: str, limit: int, timeout: float) -> bytes:
    if _is_url(location):
        with tempfile.SpooledTemporaryFile(max_size=limit + 1) as sink:
            _get(f"{location}/{name}", sink, limit, timeout)
            sink.seek(0)
            return sink.read()
    path = Path(location) / name
    try:
        with path.open("rb") as source:
            data = source.read(limit + 1)
    except OSError as e:
        raise BackupError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(data) > limit:
        raise BackupError(f"{path}: larger than {limit} bytes")
    return data


# --- backup --------------------------------------------------------------------------------


def load_backup_signer(site: SiteSettings) -> KeySigner:
    """The site's deployer key (`portal.site.keys`), which signs its backups.

    Raises:
        BackupError: a key file is missing or unreadable, the passphrase is wrong, or the key
            does not match its certificate.
    """
    try:
        return load_signer(site, "deployer")
    except SiteKeyError as e:
        raise BackupError(f"the site's deployer key: {e}") from e


def _archive_name(now: datetime) -> str:
    now = now.astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{now.microsecond:06d}Z.tar"


def backup(
    site: SiteSettings,
    signer: Signer,
    target: str | None = None,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> BackupResult:
    """Back up the site's state to `target` (default: `site.backup_target`).

    Raises:
        BackupError: no target, the state cannot be read, or the target cannot be written.
    """
    target = target or site.backup_target
    if not target:
        raise BackupError("no backup target: give one, or set site.backup_target")
    now = now or datetime.now(UTC)
    name = _archive_name(now)
    location = _location(target, site.name)
    staging = None if _is_url(target) else Path(location)
    if staging is not None:
        try:
            staging.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackupError(f"{staging}: cannot create: {e.strerror or e}") from e
    with tempfile.NamedTemporaryFile(
        dir=staging, prefix=".backup-", suffix=".tmp", delete=False
    ) as temporary:
        temporary_path = Path(temporary.name)
        try:
            files, left_out = _write_archive(site, temporary, progress)
            temporary.flush()
            os.fsync(temporary.fileno())
        except OSError as e:
            temporary_path.unlink(missing_ok=True)
            raise BackupError(f"{temporary_path}: cannot write the archive: {e}") from e
        except BaseException:
            temporary_path.unlink(missing_ok=True)
            raise
    try:
        digest = hashlib.sha256()
        with temporary_path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
        size = temporary_path.stat().st_size
        statement = {
            "format": FORMAT,
            "site": site.name,
            "archive": name,
            "created": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size": size,
            "sha256": digest.hexdigest(),
            "files": files,
        }
        signed = _sign_statement(statement, signer)
        if staging is not None:
            os.replace(temporary_path, staging / name)
            fsync_directory(staging)
            write_atomic(staging / f"{name}.sig", signed, mode=0o600)
            write_atomic(staging / "latest", name.encode() + b"\n", mode=0o600)
        else:
            with temporary_path.open("rb") as stream:
                _put(f"{location}/{name}", stream, size, timeout)
            with tempfile.SpooledTemporaryFile() as stream:
                stream.write(signed)
                stream.seek(0)
                _put(f"{location}/{name}.sig", stream, len(signed), timeout)
            with tempfile.SpooledTemporaryFile() as stream:
                stream.write(name.encode() + b"\n")
                stream.seek(0)
                _put(f"{location}/latest", stream, len(name) + 1, timeout)
    except OSError as e:
        raise BackupError(f"{location}: cannot write the backup: {e.strerror or e}") from e
    finally:
        temporary_path.unlink(missing_ok=True)
    log.info(
        "site %s backed up to %s/%s (%d files, %d bytes)", site.name, location, name, files, size
    )
    return BackupResult(name, location, files, size, digest.hexdigest(), tuple(left_out))


# --- restore -------------------------------------------------------------------------------


def _member_problems(archive: tarfile.TarFile, limit: int) -> list[str]:
    """Every reason not to unpack the archive: links, devices, paths out of it, sizes."""
    problems: list[str] = []
    seen: set[str] = set()
    total = 0
    for member in archive.getmembers():
        name = member.name
        parts = PurePosixPath(name).parts
        if not (member.isfile() or member.isdir()):
            problems.append(f"{name!r}: not a regular file or directory")
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or "\x00" in name
            or any(part in ("..", ".", "") for part in name.rstrip("/").split("/"))
            or not parts
        ):
            problems.append(f"{name!r}: a path out of the archive or not a plain relative path")
        elif name.rstrip("/") in seen:
            problems.append(f"{name!r}: twice in the archive")
        seen.add(name.rstrip("/"))
        total += max(member.size, 0)
    if total > limit:
        problems.append(f"the files add up to {total} bytes, more than the archive's {limit}")
    return problems


def _unpack(archive_path: Path, destination: Path, limit: int) -> int:
    try:
        with tarfile.open(archive_path, mode="r:") as archive:
            problems = _member_problems(archive, limit)
            if problems:
                raise BackupError(
                    f"{archive_path.name}: refused, {len(problems)} problem(s): "
                    + "; ".join(problems)
                )
            count = 0
            for member in archive.getmembers():
                target = destination.joinpath(*PurePosixPath(member.name).parts)
                if member.isdir():
                    target.mkdir(mode=0o700, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None  # a regular file
                with source, open(target, "xb") as sink:
                    os.fchmod(sink.fileno(), 0o600)
                    shutil.copyfileobj(source, sink, CHUNK)
                    sink.flush()
                    os.fsync(sink.fileno())
                os.utime(target, (member.mtime, member.mtime))
                count += 1
            return count
    except tarfile.TarError as e:
        raise BackupError(f"{archive_path.name}: not a readable tar archive: {e}") from e


def restore(
    target: str,
    site_name: str,
    data_dir: Path,
    trusted: TrustStore | Path,
    *,
    timeout: float = 60.0,
) -> RestoreResult:
    """Rebuild a site's `data_dir` from the latest backup of `site_name` at `target`.

    `data_dir` must not exist, or be an empty directory: a restore never mixes with a state.

    Raises:
        BackupError: no backup, a backup that is unsigned, signed by an untrusted key, tampered
            with or unsafe to unpack (nothing is written then), or `data_dir` is not empty.
    """
    data_dir = Path(data_dir).absolute()
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir}: exists and is not an empty directory; restore elsewhere")
    if isinstance(trusted, Path):
        try:
            trusted = TrustStore.from_path(trusted)
        except TrustError as e:
            raise BackupError(f"trusted certificates: {e}") from e
    location = _location(target, site_name)
    latest = _read_small(location, "latest", 4096, timeout).decode("utf-8", "replace").strip()
    if not ARCHIVE_NAME.match(latest):
        raise BackupError(f"{location}/latest: {latest[:80]!r} does not name a backup archive")
    where = f"{location}/{latest}.sig"
    statement_bytes = _read_small(location, f"{latest}.sig", MAX_STATEMENT, timeout)
    statement, signer = _verify_statement(
        statement_bytes, trusted, where=where, site_name=site_name, archive=latest
    )
    size: int = statement["size"]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restoring-", dir=data_dir.parent))
    try:
        archive_path = work / latest
        with archive_path.open("wb") as sink:
            if _is_url(location):
                _get(f"{location}/{latest}", sink, size, timeout)
            else:
                try:
                    with (Path(location) / latest).open("rb") as source:
                        shutil.copyfileobj(source, sink, CHUNK)
                except OSError as e:
                    raise BackupError(f"{location}/{latest}: cannot read: {e}") from e
        digest = hashlib.sha256()
        with archive_path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
        actual = archive_path.stat().st_size
        if actual != size or digest.hexdigest() != statement["sha256"]:
            raise BackupError(
                f"{location}/{latest}: refused, the archive does not match its signed "
                f"statement ({actual} bytes, sha256 {digest.hexdigest()[:16]}…; signed: "
                f"{size} bytes, sha256 {str(statement['sha256'])[:16]}…)"
            )
        unpacked = work / "state"
        unpacked.mkdir(mode=0o700)
        count = _unpack(archive_path, unpacked, size)
        fsync_directory(unpacked)
        if data_dir.exists():
            data_dir.rmdir()
        os.rename(unpacked, data_dir)
        fsync_directory(data_dir.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("site %s restored from %s/%s into %s", site_name, location, latest, data_dir)
    return RestoreResult(latest, data_dir, count, str(statement.get("created", "")), signer)


# --- the schedule --------------------------------------------------------------------------


class BackupScheduler:
    """Backs the site up every `backup_interval_hours` in a background thread.

    Does nothing without `backup_target`. The time of the last success is kept in
    `private/last_backup`, so a restarted server does not wait a whole interval again (a
    server that never backed up does it at once). Each run is audited (role ``system``).
    """

    def __init__(
        self,
        site: SiteSettings,
        *,
        audit_log: AuditLog,
        signer_loader: Callable[[SiteSettings], Signer] = load_backup_signer,
    ) -> None:
        self.site = site
        self.audit_log = audit_log
        self.signer_loader = signer_loader
        self.interval = timedelta(hours=site.backup_interval_hours)
        self.last_result: BackupResult | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state_file(self) -> Path:
        return self.site.private_dir / "last_backup"

    def last_success(self) -> datetime | None:
        """When the last backup succeeded, if one did."""
        try:
            text = self.state_file.read_text("utf-8").strip()
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (OSError, ValueError):
            return None

    def next_due(self) -> datetime:
        last = self.last_success()
        return datetime.now(UTC) if last is None else last + self.interval

    def run_once(self) -> BackupResult | None:
        """Back up now; audit the outcome. None (and `last_error`) when it failed."""
        when = datetime.now(UTC)
        try:
            result = backup(self.site, self.signer_loader(self.site), now=when)
        except BackupError as e:
            self.last_error = str(e)
            log.error("scheduled backup failed: %s", e)
            self._audit("failed", str(e)[:4000])
            return None
        self.last_result, self.last_error = result, None
        self.site.private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.state_file, when.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode(), mode=0o600)
        self._audit("ok", f"{result.location}/{result.archive}: {result.files} files")
        return result

    def _audit(self, outcome: str, details: str) -> None:
        with contextlib.suppress(Exception):  # an audit failure must not stop the schedule
            self.audit_log.record(
                AuditEvent(
                    when=datetime.now(UTC),
                    who="comptoir",
                    role="system",
                    action="site.backup",
                    target=self.site.name,
                    outcome="ok" if outcome == "ok" else "failed",
                    details=details,
                )
            )

    def start(self) -> None:
        """Start the thread (a daemon), if there is a target and it is not running."""
        if not self.site.backup_target or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="comptoir-backup", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = (self.next_due() - datetime.now(UTC)).total_seconds()
            if wait > 0 and self._stop.wait(min(wait, 3600.0)):
                return
            if wait <= 0 and self.run_once() is None:
                # failed: try again after a tenth of the interval (at least a minute)
                retry = max(60.0, self.interval.total_seconds() / 10)
                if self._stop.wait(min(retry, self.interval.total_seconds())):
                    return
