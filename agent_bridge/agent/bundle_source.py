"""USB bundles as a package source: verified against the agent's own bundle root, then served.

`BundleSource` implements the `Source` protocol of `agent_bridge.agent.sources` over a bundle
directory (a stick). Loading its index verifies the bundle with `wapt.bundle.verify_bundle`
against the root of trust the agent is configured with (never the stick's own), refuses
rollback (versions lower than already seen, remembered in a small JSON state file), freeze
(expired metadata), mix-and-match and files outside the signed targets, and then reads the
bundle's `Packages` index against the agent's trust store like any other source. Package files
are checked as they are copied into the cache: length and sha256 from the signed targets, and
the MD5 of the index. Nothing needs the network.

`find_bundles` lists the sticks that hold a bundle: under /media and /run/media on Linux, on
every drive letter on Windows, plus any paths given. `DetectedBundles` is the source of every
stick found there (`[usb] detect = true`): each is verified as a `BundleSource` with the bundle
root of the agent's configuration, its packages are offered while it is inserted, and no longer
once it is pulled out; `StickWatcher` notices both and asks the agent to refresh its catalog.
"""

from __future__ import annotations

import hashlib
import os
import string
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from agent_bridge.agent.config import MOUNT_PATTERNS, UsbConfig
from agent_bridge.agent.sources import Progress, SourceError, SourceIndex
from wapt.bundle import (
    ICONS_DIR,
    INDEX,
    METADATA_DIR,
    BundleState,
    TargetInfo,
    VerifiedBundle,
    verify_bundle,
)
from wapt.control import PackageEntry
from wapt.errors import BundleError, BundleVerificationError, WaptError
from wapt.fsutil import write_atomic
from wapt.repository import Discarded, Index, read_index
from wapt.trust import Certificate, TrustStore

CHUNK = 1024 * 1024
MAX_ICON = 1024 * 1024
MAX_SIZE_INDEX = 256 * 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_state_lock = threading.Lock()


def find_bundles(
    extra_paths: Iterable[Path] = (),
    *,
    patterns: Sequence[str] = MOUNT_PATTERNS,
    drive_letters: bool | None = None,
) -> list[Path]:
    """Directories holding a bundle (`comptoir-bundle/root.json`): `extra_paths`, mounted
    removable media matching `patterns`, and drive letters on Windows (`drive_letters` None:
    only on Windows)."""
    candidates: list[Path] = list(extra_paths)
    for pattern in patterns:
        base = Path(pattern.split("*", 1)[0])
        rest = pattern[len(str(base)) :].lstrip("/")
        try:
            candidates.extend(sorted(base.glob(rest)))
        except OSError:
            continue
    if drive_letters if drive_letters is not None else os.name == "nt":
        candidates.extend(Path(f"{letter}:\\") for letter in string.ascii_uppercase)
    found: list[Path] = []
    for candidate in candidates:
        try:
            if (candidate / METADATA_DIR / "root.json").is_file() and candidate not in found:
                found.append(candidate)
        except OSError:  # a drive letter with no medium, a mount point we may not read
            continue
    return found


def _problems(error: BundleError) -> str:
    if isinstance(error, BundleVerificationError):
        return "; ".join(str(p) for p in error.problems)
    return str(error)


class BundleSource:
    """A USB bundle directory, verified against `bundle_root` (the agent's configured root)."""

    def __init__(
        self,
        name: str,
        path: Path,
        bundle_root: Path,
        cache_dir: Path,
        state_file: Path,
        *,
        maturities: tuple[str, ...] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.location = str(path)
        self.maturities = maturities
        self.bundle_root = bundle_root
        self.cache_dir = cache_dir
        self.state_file = state_file
        self.verified: VerifiedBundle | None = None

    # -- rollback state --

    def _read_state(self) -> BundleState:
        try:
            data = self.state_file.read_bytes()
        except FileNotFoundError:
            return BundleState()
        except OSError as e:
            raise SourceError(f"{self.name}: bundle state {self.state_file}: {e}") from e
        try:
            return BundleState.from_json(data)
        except BundleError as e:
            # Refuse rather than forget what was seen: forgetting would allow a rollback.
            raise SourceError(
                f"{self.name}: {self.state_file}: {e}; an administrator must repair or remove it"
            ) from e

    def _record(self, verified: VerifiedBundle) -> None:
        with _state_lock:
            state = self._read_state().recording(verified)
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_file, state.to_json())

    # -- the Source protocol --

    def load_index(self, trust: TrustStore, *, at: datetime | None = None) -> SourceIndex:
        """Verify the bundle and return its verified `Packages` index.

        Raises:
            SourceError: the bundle is absent or refused; the message lists every problem and
                says what to do.
        """
        if not (self.path / METADATA_DIR).is_dir():
            raise SourceError(f"{self.name}: no bundle at {self.path} (stick not inserted?)")
        try:
            verified = verify_bundle(
                self.path, self.bundle_root, state=self._read_state(), now=at, check_files=False
            )
        except BundleError as e:
            raise SourceError(f"{self.name}: USB bundle {self.path} refused: {_problems(e)}") from e
        index_target = verified.targets[INDEX]
        data = self._read_target(verified, index_target, MAX_SIZE_INDEX)
        try:
            index = read_index(data, trust, source=str(self.path / INDEX), at=at)
        except WaptError as e:
            raise SourceError(f"{self.name}: {e}") from e
        self.verified = verified
        try:
            self._record(verified)
        except OSError as e:
            raise SourceError(f"{self.name}: cannot record the bundle version: {e}") from e
        warning = "; ".join(verified.warnings) or None
        return SourceIndex(index, warning=warning)

    def cached_index(self, trust: TrustStore) -> SourceIndex | None:
        """A stick is local: its index if it is inserted and verifies, else None."""
        try:
            return self.load_index(trust)
        except SourceError:
            return None

    def _read_target(self, verified: VerifiedBundle, target: TargetInfo, cap: int) -> bytes:
        if target.length > cap:
            raise SourceError(f"{self.name}: {target.path}: {target.length} bytes, over {cap}")
        try:
            data = verified.locate(target.path).read_bytes()
        except OSError as e:
            raise SourceError(f"{self.name}: {target.path}: {e.strerror or e}") from e
        if len(data) != target.length or hashlib.sha256(data).hexdigest() != target.sha256:
            raise SourceError(
                f"{self.name}: {target.path} changed since the bundle was verified; reinsert "
                "the stick and try again"
            )
        return data

    def _target_for(self, entry: PackageEntry) -> tuple[VerifiedBundle, TargetInfo]:
        verified = self.verified
        if verified is None:
            raise SourceError(f"{self.name}: the bundle's index was not loaded yet")
        target = verified.targets.get(entry.filename)
        if target is None or target.kind != "package":
            raise SourceError(
                f"{self.name}: {entry.filename} is not in the bundle's signed targets"
            )
        if entry.size != target.length or (
            target.md5 is not None and entry.md5sum.lower() != target.md5
        ):
            raise SourceError(
                f"{self.name}: {entry.filename}: the index and the signed targets disagree"
            )
        return verified, target

    def fetch(self, entry: PackageEntry, progress: Progress | None = None) -> Path:
        """Copy `entry`'s file into the cache, checking length, sha256 and MD5 as it copies.

        Raises:
            SourceError: the file is not a target of the verified bundle, is missing, or does
                not match.
        """
        verified, target = self._target_for(entry)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dest = self.cache_dir / entry.filename
        if _matches(dest, target):
            if progress:
                progress(target.length, target.length)
            return dest
        source = verified.locate(target.path)
        part = dest.with_name(dest.name + ".part")
        sha = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        done = 0
        try:
            with open(source, "rb") as src, open(part, "wb") as out:
                while chunk := src.read(CHUNK):
                    done += len(chunk)
                    if done > target.length:
                        break
                    sha.update(chunk)
                    md5.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(done, target.length)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise SourceError(f"{self.name}: {source}: {e.strerror or e}") from e
        if (
            done != target.length
            or sha.hexdigest() != target.sha256
            or (entry.md5sum and md5.hexdigest() != entry.md5sum.lower())
        ):
            part.unlink(missing_ok=True)
            raise SourceError(
                f"{self.name}: {target.path} on the stick does not match the signed bundle "
                "(damaged or altered): verify the stick with `comptoir bundle verify` and "
                "write it again"
            )
        part.replace(dest)
        return dest

    def fetch_icon(self, package_uuid: str) -> bytes | None:
        """The bundle's signed icon for `package_uuid`, or None."""
        verified = self.verified
        if verified is None or not package_uuid or any(c in package_uuid for c in "/\\:"):
            return None
        target = verified.targets.get(f"{ICONS_DIR}/{package_uuid}.png")
        if target is None:
            return None
        try:
            data = self._read_target(verified, target, MAX_ICON)
        except SourceError:
            return None
        return data if data.startswith(PNG_MAGIC) else None


def _matches(path: Path, target: TargetInfo) -> bool:
    try:
        if path.stat().st_size != target.length:
            return False
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
    except OSError:
        return False
    return sha.hexdigest() == target.sha256


class DetectedBundles:
    """The bundles on the sticks inserted now, found under the configured mount roots.

    Each stick is a `BundleSource` verified with the agent's configured bundle root. Loading
    the index looks for sticks again: a stick pulled out is no longer offered, a new one is.
    A refused stick is reported (the message says what to do) and the others are still offered.
    """

    def __init__(self, usb: UsbConfig, cache_dir: Path, state_file: Path) -> None:
        assert usb.bundle_root is not None
        self.name = "usb"
        self.location = "usb:" + ",".join(usb.roots)
        self.maturities: tuple[str, ...] | None = None
        self.usb = usb
        self.cache_dir = cache_dir
        self.state_file = state_file
        self._lock = threading.Lock()
        #: the sticks that verified at the last load, by directory
        self._inserted: dict[Path, BundleSource] = {}
        self._by_filename: dict[str, BundleSource] = {}

    def find(self) -> list[Path]:
        """Directories under the configured roots that hold a bundle now."""
        return find_bundles(patterns=self.usb.roots, drive_letters=self.usb.drive_letters)

    def fingerprint(self) -> tuple[tuple[str, int], ...]:
        """What changes when a stick is inserted, pulled out or rewritten (cheap: no reads)."""
        marks = []
        for path in self.find():
            try:
                mark = (path / METADATA_DIR / "timestamp.json").stat().st_mtime_ns
            except OSError:
                mark = 0
            marks.append((str(path), mark))
        return tuple(marks)

    def inserted(self) -> list[Path]:
        """The sticks whose bundle verified at the last load and that are still there."""
        with self._lock:
            return [p for p in self._inserted if (p / METADATA_DIR).is_dir()]

    def load_index(self, trust: TrustStore, *, at: datetime | None = None) -> SourceIndex:
        """Every inserted stick's verified index, merged (the first stick wins a file name).

        Raises:
            SourceError: sticks were found and every one was refused; lists each reason.
        """
        entries: list[PackageEntry] = []
        discarded: list[Discarded] = []
        certificates: dict[str, Certificate] = {}
        refused: list[str] = []
        warnings: list[str] = []
        inserted: dict[Path, BundleSource] = {}
        by_filename: dict[str, BundleSource] = {}
        with self._lock:
            known = dict(self._inserted)
        for path in self.find():
            source = known.get(path) or BundleSource(
                f"USB stick {path}",
                path,
                self.usb.bundle_root or Path(),
                self.cache_dir,
                self.state_file,
            )
            try:
                loaded = source.load_index(trust, at=at)
            except SourceError as e:
                refused.append(str(e))
                continue
            inserted[path] = source
            if loaded.warning:
                warnings.append(f"{source.name}: {loaded.warning}")
            certificates.update(loaded.index.certificates)
            discarded.extend(loaded.index.discarded)
            for entry in loaded.index.entries:
                if entry.filename not in by_filename:
                    by_filename[entry.filename] = source
                    entries.append(entry)
        with self._lock:
            self._inserted, self._by_filename = inserted, by_filename
        if refused and not inserted:
            raise SourceError("; ".join(refused))
        index = Index(self.location, entries, discarded, certificates)
        return SourceIndex(index, warning="; ".join(refused + warnings) or None)

    def cached_index(self, trust: TrustStore) -> SourceIndex | None:
        """Sticks are local: what is inserted now (None if every stick found is refused)."""
        try:
            return self.load_index(trust)
        except SourceError:
            return None

    def fetch(self, entry: PackageEntry, progress: Progress | None = None) -> Path:
        """Copy `entry`'s file from the stick that offered it (see `BundleSource.fetch`).

        Raises:
            SourceError: that stick was pulled out, or its file does not match.
        """
        with self._lock:
            source = self._by_filename.get(entry.filename)
        if source is None or not (source.path / METADATA_DIR).is_dir():
            raise SourceError(
                f"{entry.filename}: the USB stick that offered it was pulled out; insert it "
                "again and retry"
            )
        return source.fetch(entry, progress)

    def fetch_icon(self, package_uuid: str) -> bytes | None:
        with self._lock:
            sources = list(self._inserted.values())
        for source in sources:
            icon = source.fetch_icon(package_uuid)
            if icon is not None:
                return icon
        return None


class StickWatcher:
    """Calls `on_change` when the sticks holding a bundle change (inserted, pulled out,
    rewritten), looking every `period` seconds on a daemon thread."""

    def __init__(
        self, source: DetectedBundles, on_change: Callable[[], object], period: float
    ) -> None:
        self.source = source
        self.on_change = on_change
        self.period = period
        self._stop = threading.Event()
        self._last = source.fingerprint()
        self._thread = threading.Thread(target=self._run, name="usb-sticks", daemon=True)

    def start(self) -> StickWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.period + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                now = self.source.fingerprint()
            except OSError:  # a mount point that went away mid-look: look again next time
                continue
            if now != self._last:
                self._last = now
                self.on_change()


def watch_sticks(sources: Iterable[object], on_change: Callable[[], object]) -> StickWatcher | None:
    """Start a `StickWatcher` if one of `sources` detects sticks; None otherwise."""
    for source in sources:
        if isinstance(source, DetectedBundles):
            return StickWatcher(source, on_change, source.usb.poll_seconds).start()
    return None


__all__ = ["BundleSource", "DetectedBundles", "StickWatcher", "find_bundles", "watch_sticks"]
