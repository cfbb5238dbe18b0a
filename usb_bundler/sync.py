"""Site mirrors: keep a site repository in step with the académie repository (`comptoir repo sync`).

Only the packages the site needs are mirrored: package requests (names or `name(>=version)`,
packages or groups) resolved with their dependencies against the académie's verified index,
once per host profile (`usb_bundler.select.packages_from_repository`). Only changed bytes move:
a package already in the site repository with the index's size and MD5 is not downloaded again,
and a download cut off (network lost, process killed, time window closed) resumes where it
stopped with an HTTP `Range` request. A bandwidth cap (a token bucket) and time windows (nights,
weekends) keep the site's link usable during the day.

The switch-over is the bundle writer's: nothing the agents read changes until every new package
is downloaded and verified. Layout of the site repository::

    Packages, *.wapt, icons/      the plain WAPT repository that agents read
    .comptoir-sync/
        state.json                the files this mirror owns (only those are ever removed)
        partial/<file>.part       a download in progress (+ `.json`: what it must become)
        ready/<file>              downloaded and verified, waiting for the switch
        next/                     hard links of the next set, scanned into the next index
        lock                      one sync at a time

One sync: resolve the set; download each missing or changed package into `partial/`, checking
its length and MD5 against the verified index, then `verify_package` (signature and every file)
before it moves to `ready/`; once all verify, move them into place under their names (new names
are not in the current index yet; agents never see a half-written file), write the new
`Packages` index atomically (the switch: agents see the new set), and only then remove the
packages that left the set. Packages that the site publishes itself in the same directory (group,
selfservice packages) are kept and indexed: the mirror removes only files it downloaded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from usb_bundler.select import SourcePackage, packages_from_repository
from usb_bundler.writer import ProgressMeter, WriteProgress
from wapt.errors import WaptError
from wapt.fsutil import fsync_directory, write_atomic
from wapt.package import verify_package
from wapt.repository import INDEX_NAME, scan_repository
from wapt.resolve import HostProfile
from wapt.trust import TrustStore

__all__ = [
    "RateLimiter",
    "SyncError",
    "SyncResult",
    "SyncSchedule",
    "SyncVerificationError",
    "SyncWindowError",
    "TimeWindow",
    "parse_rate",
    "parse_schedule",
    "read_requests_file",
    "sync_repository",
]

SYNC_DIR = ".comptoir-sync"
STATE_FORMAT = 1
CHUNK = 256 * 1024
SPACE_MARGIN = 16 * 1024 * 1024
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    **{d: i for i, d in enumerate(DAYS)},
    **{d: i for i, d in enumerate(("lun", "mar", "mer", "jeu", "ven", "sam", "dim"))},
}
_WINDOW = re.compile(
    r"^(?:(?P<days>[a-z,\-]+)\s+)?(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})$"
)
_RATE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmg]?)(?:i?b)?(?:/s)?$")


class SyncError(WaptError):
    """A sync cannot start or finish; the message says what and what to do."""


class SyncWindowError(SyncError):
    """Outside the allowed time window (or it closed during the sync); run again later."""


class SyncVerificationError(SyncError):
    """Downloaded packages did not verify; nothing was switched. `problems` lists each one."""

    def __init__(self, message: str, problems: Sequence[WaptError]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{message}:\n{lines}")
        self.problems = list(problems)


# --- bandwidth cap ---------------------------------------------------------------------------


def parse_rate(text: str) -> int:
    """Bytes per second from `2M`, `500K`, `1.5MiB/s`, `800000` (K, M, G are powers of 1024).

    Raises:
        SyncError: not a positive rate.
    """
    match = _RATE.match(text.strip().lower())
    if match is None:
        raise SyncError(f"--max-rate {text!r}: not a rate; write e.g. 2M (bytes per second)")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match["unit"]]
    rate = int(float(match["number"]) * scale)
    if rate < 1024:
        raise SyncError(f"--max-rate {text!r}: at least 1K (1024 bytes per second)")
    return rate


class RateLimiter:
    """A token bucket: `take(n)` waits until `n` more bytes fit in `rate` bytes per second.

    The bucket holds at most a quarter of a second of bytes, so a burst after a pause stays
    small; one limiter is shared by every download of a sync.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        self.capacity = max(self.rate / 4, 4096.0)
        self.tokens = 0.0
        self.clock = clock
        self.sleep = sleep
        self.last = clock()
        self.lock = threading.Lock()

    @property
    def chunk(self) -> int:
        """The largest read that fits in the bucket."""
        return max(1024, min(CHUNK, int(self.capacity)))

    def take(self, count: int) -> None:
        with self.lock:
            while count > 0:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                piece = min(count, self.capacity)
                if self.tokens >= piece:
                    self.tokens -= piece
                    count -= int(piece)
                    continue
                self.sleep((piece - self.tokens) / self.rate)


# --- time windows ----------------------------------------------------------------------------


def _minutes(text: str, what: str) -> int:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise SyncError(f"{what}: {text!r} is not a time of day (00:00 to 24:00)")
    return value


def _days(text: str, what: str) -> frozenset[int]:
    days: set[int] = set()
    for part in (p.strip() for p in text.lower().split(",") if p.strip()):
        first, dash, last = part.partition("-")
        if first not in _DAY_ALIASES or (dash and last not in _DAY_ALIASES):
            raise SyncError(
                f"{what}: {part!r} is not a day; use {','.join(DAYS)} or ranges such as mon-fri"
            )
        a = _DAY_ALIASES[first]
        b = _DAY_ALIASES[last] if dash else a
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    if not days:
        raise SyncError(f"{what}: no day given")
    return frozenset(days)


@dataclass(frozen=True)
class TimeWindow:
    """From `start` to `end` (minutes after midnight, local time) on the days it starts on;
    an `end` at or before `start` runs past midnight into the next day."""

    start: int
    end: int
    days: frozenset[int] = frozenset(range(7))

    @property
    def length(self) -> timedelta:
        minutes = (self.end - self.start) % (24 * 60) or 24 * 60
        return timedelta(minutes=minutes)

    def opening(self, day: datetime) -> datetime:
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + timedelta(minutes=self.start)

    def __str__(self) -> str:
        def hhmm(value: int) -> str:
            return f"{value // 60:02d}:{value % 60:02d}"

        days = "" if len(self.days) == 7 else ",".join(DAYS[d] for d in sorted(self.days)) + " "
        return f"{days}{hhmm(self.start)}-{hhmm(self.end)}"


@dataclass(frozen=True)
class SyncSchedule:
    """When a sync may move bytes: inside any of `windows` (none: at any time)."""

    windows: tuple[TimeWindow, ...] = ()

    def is_open(self, now: datetime) -> bool:
        if not self.windows:
            return True
        for window in self.windows:
            for back in (0, 1):
                day = now - timedelta(days=back)
                start = window.opening(day)
                if day.weekday() in window.days and start <= now < start + window.length:
                    return True
        return False

    def next_opening(self, now: datetime) -> datetime:
        """The first moment after `now` at which a window opens."""
        candidates = []
        for window in self.windows:
            for ahead in range(8):
                day = now + timedelta(days=ahead)
                start = window.opening(day)
                if day.weekday() in window.days and start > now:
                    candidates.append(start)
                    break
        return min(candidates)

    def __str__(self) -> str:
        return " or ".join(str(w) for w in self.windows) or "at any time"


def parse_schedule(windows: Iterable[str] = (), days: str | None = None) -> SyncSchedule:
    """Windows such as `22:00-06:00` or `sat,sun 00:00-24:00`; `days` applies to the windows
    that name no days (with no window, `days` alone allows those whole days).

    Raises:
        SyncError: a window or a day that cannot be read.
    """
    default_days = _days(days, "--days") if days else frozenset(range(7))
    parsed = []
    for text in windows:
        match = _WINDOW.match(text.strip().lower())
        if match is None:
            raise SyncError(
                f"--window {text!r}: write HH:MM-HH:MM, optionally after days "
                "(e.g. 22:00-06:00 or 'sat,sun 00:00-24:00')"
            )
        start = _minutes(match["start"], f"--window {text!r}")
        end = _minutes(match["end"], f"--window {text!r}")
        if start == 24 * 60:
            raise SyncError(f"--window {text!r}: a window cannot start at 24:00")
        window_days = _days(match["days"], f"--window {text!r}") if match["days"] else default_days
        parsed.append(TimeWindow(start, end, window_days))
    if not parsed and days:
        parsed.append(TimeWindow(0, 24 * 60, default_days))
    return SyncSchedule(tuple(parsed))


# --- the sync --------------------------------------------------------------------------------


@dataclass
class SyncResult:
    """What a sync did."""

    path: Path
    packages: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: bytes received over the network in this run
    bytes_downloaded: int = 0
    #: bytes of cut downloads that were kept and not fetched again
    bytes_resumed: int = 0
    #: whether the index was rewritten
    switched: bool = False


class _WindowClosed(Exception):
    pass


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _now_local() -> datetime:
    return datetime.now().astimezone()


class _Sync:
    def __init__(
        self,
        upstream: str,
        dest: Path,
        trust: TrustStore,
        *,
        packages: Sequence[str],
        groups: Sequence[str],
        profiles: Sequence[HostProfile],
        max_rate: int | None,
        schedule: SyncSchedule,
        wait: bool,
        timeout: float,
        progress: Callable[[WriteProgress], None] | None,
        notice: Callable[[str], None] | None,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
    ) -> None:
        self.upstream = upstream
        self.dest = dest
        self.trust = trust
        self.packages = packages
        self.groups = groups
        self.profiles = profiles
        self.limiter = RateLimiter(max_rate, sleep=sleep) if max_rate else None
        self.schedule = schedule
        self.wait = wait
        self.timeout = timeout
        self.report = progress
        self.notice = notice or (lambda _message: None)
        self.clock = clock
        self.sleep = sleep
        self.work = dest / SYNC_DIR
        self.partial = self.work / "partial"
        self.ready = self.work / "ready"
        self.state_file = self.work / "state.json"

    # -- time windows --

    def _window_open(self) -> None:
        """Return once inside a window: wait for it (`wait`), or raise SyncWindowError."""
        now = self.clock()
        if self.schedule.is_open(now):
            return
        opens = self.schedule.next_opening(now)
        when = opens.strftime("%a %Y-%m-%d %H:%M")
        if not self.wait:
            raise SyncWindowError(
                f"outside the sync window ({self.schedule}): it opens on {when}; run the sync "
                "then, or give --wait to wait for it"
            )
        self.notice(f"outside the sync window ({self.schedule}): waiting until {when}")
        while not self.schedule.is_open(now := self.clock()):
            self.sleep(min(max((opens - now).total_seconds(), 1.0), 60.0))

    # -- state --

    def _read_state(self) -> tuple[dict[str, dict[str, Any]], bool]:
        """The files this mirror owns, and whether a switch was cut short (then redo it)."""
        try:
            raw = json.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return {}, False
        except (OSError, ValueError) as e:
            raise SyncError(
                f"{self.state_file}: unreadable ({e}); remove it: the next sync then re-checks "
                "every package (nothing the mirror owns is removed until it knows it again)"
            ) from e
        owned = raw.get("owned") if isinstance(raw, dict) else None
        if not isinstance(owned, dict) or raw.get("format") != STATE_FORMAT:
            raise SyncError(f"{self.state_file}: not a sync state file; remove it")
        files = {str(k): dict(v) for k, v in owned.items() if isinstance(v, dict)}
        return files, raw.get("pending") is True

    def _write_state(self, owned: dict[str, dict[str, Any]], *, pending: bool) -> None:
        state = {"format": STATE_FORMAT, "owned": owned, "pending": pending}
        data = json.dumps(state, indent=1, sort_keys=True)
        write_atomic(self.state_file, data.encode("utf-8"))

    def _matches(self, path: Path, source: SourcePackage, known: dict[str, Any] | None) -> bool:
        """Whether `path` holds `source`'s bytes: size, then MD5 (remembered by stamp)."""
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != source.size:
            return False
        if known is not None and known.get("stamp") == _stamp(st):
            return known.get("md5") == source.md5
        return _md5_of(path) == source.md5

    # -- downloading --

    def _download(self, source: SourcePackage, meter: ProgressMeter, result: SyncResult) -> Path:
        """Download `source` into `partial/`, resuming a cut download; check length and MD5.

        Raises:
            SyncError: the server fails or sends other bytes than the index describes.
            _WindowClosed: the time window closed; the partial file is kept.
        """
        assert isinstance(source.location, str)
        part = self.partial / f"{source.filename}.part"
        sidecar = self.partial / f"{source.filename}.part.json"
        expected = {"url": source.location, "size": source.size, "md5": source.md5}
        done = 0
        if part.exists():
            try:
                same = json.loads(sidecar.read_bytes()) == expected
            except (OSError, ValueError):
                same = False
            done = part.stat().st_size if same else 0
            if not same or done > source.size:
                part.unlink()
                done = 0
        if done == 0:
            write_atomic(sidecar, json.dumps(expected).encode("utf-8"))
        kept = done
        meter.add(done, source.filename)
        headers = {"Range": f"bytes={done}-"} if done else {}
        request = urllib.request.Request(source.location, headers=headers)  # noqa: S310
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as e:
            if e.code == 416 and done == source.size:
                return self._checked(part, source, sidecar)
            raise SyncError(f"{source.location}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise SyncError(f"{source.location}: {getattr(e, 'reason', e)}") from e
        with response:
            if done and response.status != 206:
                meter.add(-done, source.filename)
                done = kept = 0  # the server ignored the range: start again
            result.bytes_resumed += kept
            with open(part, "ab" if done else "wb") as out:
                self._receive(response, out, source, done, meter, result)
        return self._checked(part, source, sidecar)

    def _receive(
        self,
        response: IO[bytes],
        out: IO[bytes],
        source: SourcePackage,
        done: int,
        meter: ProgressMeter,
        result: SyncResult,
    ) -> None:
        chunk = self.limiter.chunk if self.limiter else CHUNK
        while True:
            if not self.schedule.is_open(self.clock()):
                out.flush()
                raise _WindowClosed
            if self.limiter is not None:
                self.limiter.take(chunk)
            try:
                data = response.read(chunk)
            except OSError as e:
                raise SyncError(f"{source.location}: cut after {done} bytes: {e}") from e
            if not data:
                return
            done += len(data)
            if done > source.size:
                raise SyncError(
                    f"{source.location}: larger than the {source.size} bytes of the index"
                )
            try:
                out.write(data)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise SyncError(
                        f"{self.dest}: the disk is full while downloading {source.filename}; "
                        "free some space and run the sync again (it resumes)"
                    ) from e
                raise
            result.bytes_downloaded += len(data)
            meter.add(len(data), source.filename)

    def _checked(self, part: Path, source: SourcePackage, sidecar: Path) -> Path:
        size = part.stat().st_size
        if size != source.size or _md5_of(part) != source.md5:
            part.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            what = f"{size} bytes instead of {source.size}" if size != source.size else "MD5"
            raise SyncError(
                f"{source.location}: the file differs from the académie's index ({what}); it "
                "was discarded: run the sync again (the index may have changed meanwhile)"
            )
        return part

    def _verify(self, part: Path, source: SourcePackage) -> WaptError | None:
        try:
            verify_package(part, self.trust)
        except WaptError as e:
            return SyncError(f"{source.filename}: refused, it does not verify: {e}")
        except OSError as e:
            return SyncError(f"{source.filename}: cannot read the download: {e}")
        return None

    # -- the switch --

    def _next_index(self, final: set[str]) -> tuple[bytes, list[Path]]:
        """Scan a view of the next set (hard links) into the next `Packages`; the new icons."""
        view = self.work / "next"
        shutil.rmtree(view, ignore_errors=True)
        view.mkdir(parents=True)
        for name in sorted(final):
            try:
                os.link(self.dest / name, view / name)
            except OSError:
                shutil.copy2(self.dest / name, view / name)  # no hard links here
        current = self.dest / INDEX_NAME
        if current.is_file():
            shutil.copy2(current, view / INDEX_NAME)  # its scan record: unchanged files not read
        scanned = scan_repository(view)
        for name, error in scanned.skipped:
            self.notice(f"warning: {name} left out of the index: {error}")
        icons = sorted((view / "icons").glob("*.png")) if (view / "icons").is_dir() else []
        return (view / INDEX_NAME).read_bytes(), icons

    def _site_files(self) -> set[str]:
        with os.scandir(self.dest) as it:
            return {e.name for e in it if e.name.endswith(".wapt") and e.is_file()}

    def run(self) -> SyncResult:
        try:
            self.work.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SyncError(f"{self.dest}: cannot create {SYNC_DIR}: {e.strerror or e}") from e
        with open(self.work / "lock", "a+b") as lock:
            try:
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # Windows: one sync at a time is the operator's job
                pass
            except OSError as e:
                raise SyncError(
                    f"{self.dest}: another sync of this repository is running; wait for it"
                ) from e
            return self._run()

    def _run(self) -> SyncResult:
        self._window_open()
        selection = packages_from_repository(
            self.upstream,
            packages=self.packages,
            groups=self.groups,
            trust=self.trust,
            profiles=self.profiles,
        )
        sources = selection.packages
        for source in sources:
            if source.md5 is None or not isinstance(source.location, str):
                raise SyncError(
                    f"{self.upstream}: {source.filename}: the académie repository must be an "
                    "http(s) URL whose index gives every package's MD5"
                )
        owned, pending = self._read_state()
        result = SyncResult(self.dest, packages=[s.filename for s in sources])
        self.partial.mkdir(parents=True, exist_ok=True)
        self.ready.mkdir(parents=True, exist_ok=True)

        todo: list[SourcePackage] = []
        for source in sources:
            if self._matches(self.dest / source.filename, source, owned.get(source.filename)):
                result.unchanged.append(source.filename)
            elif not self._matches(self.ready / source.filename, source, None):
                todo.append(source)
        left = sum(s.size for s in todo)
        free = shutil.disk_usage(self.dest).free
        if free < left + SPACE_MARGIN:
            raise SyncError(
                f"{self.dest}: {left / 1024**2:,.1f} MiB to download, only "
                f"{free / 1024**2:,.1f} MiB free; free some space"
            )

        meter = ProgressMeter(left, self.report)
        problems: list[WaptError] = []
        index = 0
        while index < len(todo):
            source = todo[index]
            try:
                part = self._download(source, meter, result)
            except _WindowClosed:
                if not self.wait:
                    raise SyncWindowError(
                        f"the sync window ({self.schedule}) closed during the download of "
                        f"{source.filename}; {index} of {len(todo)} package(s) downloaded, the "
                        "rest continues where it stopped at the next run"
                    ) from None
                self._window_open()
                continue  # resume the same file
            except SyncError as e:
                problems.append(e)
                index += 1
                continue
            problem = self._verify(part, source)
            if problem is not None:
                part.unlink(missing_ok=True)
                problems.append(problem)
            else:
                os.replace(part, self.ready / source.filename)
                (self.partial / f"{source.filename}.part.json").unlink(missing_ok=True)
                result.downloaded.append(source.filename)
            index += 1
        meter.add(0, "", force=True)
        if problems:
            raise SyncVerificationError(
                f"{self.dest}: {len(problems)} package(s) could not be mirrored; nothing was "
                "switched, the site repository is unchanged (verified downloads are kept for "
                "the next run)",
                problems,
            )
        wanted = set(result.packages)
        ready = sorted(p.name for p in self.ready.iterdir() if p.name in wanted)
        settled = not pending and (self.dest / INDEX_NAME).exists()
        if not ready and not (set(owned) - wanted) and settled:
            shutil.rmtree(self.work / "next", ignore_errors=True)
            return result
        self._switch(sources, owned, ready, result)
        return result

    def _switch(
        self,
        sources: list[SourcePackage],
        owned: dict[str, dict[str, Any]],
        ready: list[str],
        result: SyncResult,
    ) -> None:
        wanted = {s.filename: s for s in sources}
        retired = sorted(set(owned) - set(wanted))
        # record first what may be on disk, so a cut never leaves files the mirror forgets
        self._write_state({**owned, **{n: {"md5": s.md5} for n, s in wanted.items()}}, pending=True)
        for name in ready:
            with open(self.ready / name, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.ready / name, self.dest / name)
        fsync_directory(self.dest)
        final = (self._site_files() - set(retired)) | set(wanted)
        index, icons = self._next_index(final)
        if icons:
            (self.dest / "icons").mkdir(exist_ok=True)
            for icon in icons:
                write_atomic(self.dest / "icons" / icon.name, icon.read_bytes())
        write_atomic(self.dest / INDEX_NAME, index)  # the switch
        result.switched = True
        kept_uuids = {s.entry.package_uuid for s in sources}
        for name in retired:
            with contextlib.suppress(FileNotFoundError):
                (self.dest / name).unlink()
                result.removed.append(name)
            uuid = owned[name].get("uuid")
            if isinstance(uuid, str) and uuid and uuid not in kept_uuids and "/" not in uuid:
                (self.dest / "icons" / f"{uuid}.png").unlink(missing_ok=True)
        fsync_directory(self.dest)
        now_owned: dict[str, dict[str, Any]] = {}
        for name, source in wanted.items():
            st = (self.dest / name).stat()
            now_owned[name] = {
                "md5": source.md5,
                "stamp": _stamp(st),
                "uuid": source.entry.package_uuid,
            }
        self._write_state(now_owned, pending=False)
        shutil.rmtree(self.work / "next", ignore_errors=True)
        for leftover in self.ready.iterdir():  # ready files no longer wanted
            leftover.unlink(missing_ok=True)


def sync_repository(
    upstream: str,
    dest: Path,
    trust: TrustStore,
    *,
    packages: Sequence[str] = (),
    groups: Sequence[str] = (),
    profiles: Sequence[HostProfile] = (HostProfile(),),
    max_rate: int | None = None,
    schedule: SyncSchedule = SyncSchedule(),
    wait: bool = False,
    timeout: float = 60.0,
    progress: Callable[[WriteProgress], None] | None = None,
    notice: Callable[[str], None] | None = None,
    clock: Callable[[], datetime] = _now_local,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """Bring the site repository `dest` in step with the académie repository `upstream` (an
    http(s) URL) for `packages` and `groups` (requests, with dependencies, per host profile).

    `max_rate` caps the download in bytes per second; `schedule` limits when bytes move: outside
    it the sync waits (`wait`) or raises. `clock` gives the local time and `sleep` waits (both
    replaceable in tests). `notice` receives messages for the operator (waiting, warnings).

    Raises:
        SyncWindowError: outside the window, or it closed during the sync (without `wait`).
        SyncVerificationError: packages failed to download or verify; nothing was switched.
        SyncError: the state is unreadable, the disk is too small, or another sync runs.
        RepositoryError, ResolveError: the académie's index cannot be read, or a request
            matches nothing.
    """
    if not packages and not groups:
        raise SyncError("name at least one package or group to mirror")
    try:
        return _Sync(
            upstream,
            dest,
            trust,
            packages=packages,
            groups=groups,
            profiles=profiles,
            max_rate=max_rate,
            schedule=schedule,
            wait=wait,
            timeout=timeout,
            progress=progress,
            notice=notice,
            clock=clock,
            sleep=sleep,
        ).run()
    except OSError as e:
        raise SyncError(f"{dest}: {e.strerror or e}") from e


def read_requests_file(path: Path) -> tuple[list[str], list[str]]:
    """Package and group requests from a file: one per line, `group:NAME` for a group, `#`
    comments and blank lines ignored.

    Raises:
        SyncError: the file cannot be read.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SyncError(f"{path}: cannot read the requests file: {e}") from e
    packages, groups = [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("group:"):
            groups.append(line.removeprefix("group:").strip())
        else:
            packages.append(line.removeprefix("package:").strip())
    return packages, groups
