"""Repositories and their `Packages` index: scan a directory into one, load and verify one (§3).

The index is a zip holding the `Packages` text (every package's control block plus `filename`,
`size` and `md5sum`), `ssl/<sha256>.crt` for every certificate of the signers' chains, and a
`comptoir/scan.json` member that remembers each file's size, modification time and inode, so
that a rescan reads only new or changed files, and its sha256 (computed in the same pass as the
MD5), so that the bundle writer can copy the file without hashing it again (`RecordedFile`).
WAPT agents read only `Packages` and `ssl/`.

Loading checks each entry on its own, as WAPT's agent does: the signer certificate is found by
`signer_fingerprint` among the index's `ssl/` certificates, its chain must reach the local trust
store, and the control signature must verify. Entries that fail are kept aside with the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from wapt.archive import DEFAULT_LIMITS, ArchiveLimits, check_member_name, open_archive
from wapt.control import PackageEntry, format_records, parse_records
from wapt.errors import (
    CertificateFormatError,
    ControlError,
    FetchError,
    IndexFormatError,
    RepositoryError,
    UnsafePathError,
    UntrustedCertificateError,
    VerificationError,
    WaptError,
)
from wapt.fsutil import write_atomic
from wapt.package import (
    CERTIFICATE,
    ICON,
    UNSIGNED_ATTRIBUTES,
    read_control_from,
    verify_control_signature,
)
from wapt.trust import Certificate, TrustStore, load_certificates

INDEX_NAME = "Packages"
SCAN_MEMBER = "comptoir/scan.json"
ICONS_DIR = "icons"
MAX_INDEX_SIZE = 256 * 1024 * 1024
MAX_ICON_SIZE = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- writing ------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """What a scan did: the index entries and which files it had to read."""

    index: Path
    entries: list[PackageEntry]
    read: list[str] = field(default_factory=list)
    reused: int = 0
    removed: list[str] = field(default_factory=list)
    #: files left out of the index, with the reason
    skipped: list[tuple[str, WaptError]] = field(default_factory=list)
    written: bool = False


#: (size, mtime_ns, inode): a file is the one scanned only if all three are unchanged
_Stamp = tuple[int, int, int | None]


@dataclass
class _Scanned:
    entry: PackageEntry
    chain: list[Certificate]
    stamp: _Stamp
    sha256: str | None = None


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class RecordedFile:
    """What the last scan recorded of one package file: its stamp and its sha256.

    The sha256 is as trustworthy as the index's MD5 (same pass, same unsigned record): a reader
    may rely on it only for the very file that was read, which `matches` checks.
    """

    size: int
    mtime_ns: int
    ino: int
    sha256: str

    def matches(self, st: os.stat_result) -> bool:
        """Whether `st` is the stat of the file this record describes (size, mtime, inode)."""
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)


def recorded_files(index_data: bytes) -> dict[str, RecordedFile]:
    """The scan record of a `Packages` zip held in memory, by file name.

    Only complete entries are returned; an index without a record (written by WAPT, or by an
    older scan) gives an empty mapping: the record only ever saves work, it is never required.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(index_data)) as zf:
            state = json.loads(zf.read(SCAN_MEMBER))
        files = state["files"]
        if not isinstance(files, dict):
            return {}
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return {}
    recorded = {}
    for name, info in files.items():
        if not isinstance(info, dict):
            continue
        size, mtime, ino, sha = (info.get(k) for k in ("size", "mtime_ns", "ino", "sha256"))
        if (
            all(isinstance(v, int) and not isinstance(v, bool) for v in (size, mtime, ino))
            and isinstance(sha, str)
            and len(sha) == 64
            and all(c in "0123456789abcdef" for c in sha)
        ):
            assert isinstance(size, int) and isinstance(mtime, int) and isinstance(ino, int)
            recorded[str(name)] = RecordedFile(size, mtime, ino, sha)
    return recorded


def _read_package_for_index(
    path: Path, limits: ArchiveLimits, chains: dict[bytes, list[Certificate]]
) -> tuple[PackageEntry, list[Certificate], bytes | None, str, str]:
    """Read one package's control, chain and icon (no trust decision), its md5 and sha256
    (one read of the file for both)."""
    digest = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            sha.update(chunk)
    with open_archive(path, limits) as archive:
        entry = read_control_from(archive)
        chain: list[Certificate] = []
        if CERTIFICATE in archive.members:
            pem = archive.read(CERTIFICATE, limits.max_metadata_size)
            # Packages of a repository share a few signers: parse each chain once per scan.
            if pem not in chains:
                chains[pem] = load_certificates(pem, source=f"{path.name}:{CERTIFICATE}")
            chain = chains[pem]
        icon = None
        if ICON in archive.members and archive.members[ICON].file_size <= MAX_ICON_SIZE:
            data = archive.read(ICON, MAX_ICON_SIZE)
            icon = data if data.startswith(PNG_MAGIC) else None
    return entry, chain, icon, digest.hexdigest(), sha.hexdigest()


def _load_previous(index: Path) -> tuple[dict[str, _Scanned], dict[str, bytes]] | None:
    """The previous scan's entries by filename, or None if there is no usable index."""
    try:
        with zipfile.ZipFile(index) as zf:
            state = json.loads(zf.read(SCAN_MEMBER))
            records = parse_records(zf.read(INDEX_NAME).decode("utf-8"), source=str(index))
            certs = {
                n[4:-4]: zf.read(n)
                for n in zf.namelist()
                if n.startswith("ssl/") and n.endswith(".crt")
            }
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, ControlError):
        return None
    by_fp: dict[str, Certificate] = {}
    for fp, pem in certs.items():
        try:
            by_fp[fp] = load_certificates(pem, source=f"ssl/{fp}.crt")[0]
        except CertificateFormatError:
            return None
    previous: dict[str, _Scanned] = {}
    files = state.get("files", {})
    for entry in records:
        info = files.get(entry.filename)
        if info is None:
            continue
        try:
            chain = [by_fp[fp] for fp in info["chain"]]
        except KeyError:
            continue
        sha = info.get("sha256")
        previous[entry.filename] = _Scanned(
            entry,
            chain,
            (info["size"], info["mtime_ns"], info.get("ino")),
            sha if isinstance(sha, str) else None,
        )
    return previous, certs


def scan_repository(
    repo_dir: Path,
    *,
    include_host_packages: bool = False,
    force: bool = False,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Write `repo_dir/Packages` for the `.wapt` files in `repo_dir`, reading only what changed.

    A file whose size, modification time and inode match the previous scan is not opened again
    (unless the previous scan, from an older version, did not record its sha256); when nothing
    changed the index is not rewritten at all. Each file read is hashed once, MD5 for the index
    and sha256 for the scan record. Icons are copied to
    `icons/<package_uuid>.png`. Unreadable packages are left out and listed in `skipped`.
    Signatures are not checked here: agents check every entry (`load_index`). `progress`, if
    given, is called with (files done, files to read) as new or changed files are read.

    Raises:
        RepositoryError: `repo_dir` is not a directory, or the index cannot be written.
    """
    if not repo_dir.is_dir():
        raise RepositoryError(f"{repo_dir}: not a directory")
    index = repo_dir / INDEX_NAME
    files: dict[str, _Stamp] = {}
    with os.scandir(repo_dir) as it:
        for de in it:
            if de.name.endswith(".wapt") and de.is_file(follow_symlinks=False):
                files[de.name] = _stamp(de.stat(follow_symlinks=False))

    loaded = None if force else _load_previous(index)
    previous, _ = loaded if loaded is not None else ({}, {})
    result = ScanResult(index=index, entries=[])
    if loaded is not None and not force:
        state_files = {name: s.stamp for name, s in previous.items() if s.sha256}
        if state_files == files or _only_skipped_differ(index, files, state_files):
            result.entries = [previous[n].entry for n in sorted(previous)]
            result.reused = len(previous)
            return result

    scanned: dict[str, _Scanned] = {}
    to_read = []
    for name in sorted(files):
        old = previous.get(name)
        if old is not None and old.stamp == files[name] and old.sha256:
            scanned[name] = old
            result.reused += 1
        else:
            to_read.append(name)
    chains: dict[bytes, list[Certificate]] = {}
    for done, name in enumerate(to_read):
        if progress is not None:
            progress(done, len(to_read))
        path = repo_dir / name
        try:
            entry, chain, icon, md5, sha = _read_package_for_index(path, limits, chains)
        except (WaptError, OSError) as e:
            error = e if isinstance(e, WaptError) else RepositoryError(f"{name}: {e}")
            result.skipped.append((name, error))
            continue
        result.read.append(name)
        if entry.section == "host" and not include_host_packages:
            continue
        entry = _with_repo_attributes(entry, name, files[name][0], md5)
        scanned[name] = _Scanned(entry, chain, files[name], sha)
        if icon is not None and entry.package_uuid:
            _write_icon(repo_dir, entry.package_uuid, icon)
    if progress is not None:
        progress(len(to_read), len(to_read))
    result.removed = sorted(set(previous) - set(files))
    result.entries = [scanned[n].entry for n in sorted(scanned)]
    _write_index(index, scanned, skipped={n: files[n] for n, _ in result.skipped})
    result.written = True
    return result


def _only_skipped_differ(index: Path, files: dict[str, _Stamp], indexed: dict[str, _Stamp]) -> bool:
    """True when the only files missing from the index are ones the last scan skipped as is."""
    try:
        with zipfile.ZipFile(index) as zf:
            skipped = {
                k: tuple(v) for k, v in json.loads(zf.read(SCAN_MEMBER)).get("skipped", {}).items()
            }
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return {**indexed, **skipped} == files


def _with_repo_attributes(entry: PackageEntry, filename: str, size: int, md5: str) -> PackageEntry:
    entry = entry.copy()
    for attr in ("filename", "size", "md5sum"):
        if attr in entry:
            del entry[attr]
    entry["filename"] = filename
    entry["size"] = size
    entry["md5sum"] = md5
    return entry


def _write_icon(repo_dir: Path, package_uuid: str, data: bytes) -> None:
    try:
        check_member_name(package_uuid)
    except UnsafePathError:
        return
    icons = repo_dir / ICONS_DIR
    icons.mkdir(exist_ok=True)
    write_atomic(icons / f"{package_uuid}.png", data)


def _write_index(index: Path, scanned: dict[str, _Scanned], *, skipped: dict[str, _Stamp]) -> None:
    certs: dict[str, Certificate] = {}
    state: dict[str, dict[str, object]] = {}
    for name, item in scanned.items():
        for cert in item.chain:
            certs.setdefault(cert.fingerprint, cert)
        state[name] = {
            "size": item.stamp[0],
            "mtime_ns": item.stamp[1],
            "ino": item.stamp[2],
            "sha256": item.sha256,
            "chain": [c.fingerprint for c in item.chain],
        }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(INDEX_NAME, format_records(s.entry for s in scanned.values()))
        for fp in sorted(certs):
            zf.writestr(f"ssl/{fp}.crt", certs[fp].pem)
        scan = {"version": 1, "files": state, "skipped": {k: list(v) for k, v in skipped.items()}}
        zf.writestr(SCAN_MEMBER, json.dumps(scan, separators=(",", ":"), sort_keys=True))
    try:
        write_atomic(index, buffer.getvalue())
    except OSError as e:
        raise RepositoryError(f"{index}: cannot write the index: {e}") from e


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discarded:
    """An index entry that did not verify, with the reason."""

    entry: PackageEntry
    reason: WaptError


@dataclass
class Index:
    """A verified `Packages` index: accepted entries and discarded ones with reasons."""

    source: str
    entries: list[PackageEntry]
    discarded: list[Discarded]
    certificates: dict[str, Certificate]
    last_modified: str | None = None
    etag: str | None = None

    def by_name(self, name: str) -> list[PackageEntry]:
        return [e for e in self.entries if e.package == name]


def read_index(
    data: bytes,
    trust: TrustStore,
    *,
    source: str,
    at: datetime | None = None,
) -> Index:
    """Parse and verify a `Packages` zip held in memory; no I/O.

    Raises:
        IndexFormatError: not a zip, no `Packages` member, too large, or unparsable records.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise IndexFormatError(f"{source}: not a zip archive: {e}") from e
    with zf:
        try:
            info = zf.getinfo(INDEX_NAME)
        except KeyError as e:
            raise IndexFormatError(f"{source}: no {INDEX_NAME} member") from e
        if info.file_size > MAX_INDEX_SIZE:
            raise IndexFormatError(f"{source}: {INDEX_NAME} is larger than {MAX_INDEX_SIZE}")
        try:
            text = zf.read(info).decode("utf-8")
        except UnicodeDecodeError as e:
            raise IndexFormatError(f"{source}: {INDEX_NAME} is not UTF-8: {e}") from e
        certificates: dict[str, Certificate] = {}
        for name in zf.namelist():
            if name.startswith("ssl/") and (name.endswith(".crt") or name.endswith(".pem")):
                try:
                    for cert in load_certificates(zf.read(name), source=f"{source}:{name}"):
                        certificates[cert.fingerprint] = cert
                except CertificateFormatError:
                    continue  # entries signed by it are discarded with a clear reason below
    try:
        records = parse_records(text, source=f"{source}:{INDEX_NAME}")
    except ControlError as e:
        raise IndexFormatError(str(e)) from e

    chains = _ChainFinder(certificates, trust, at)
    accepted: list[PackageEntry] = []
    discarded: list[Discarded] = []
    for entry in records:
        what = f"{source}: {entry.filename or entry.package}"
        try:
            _check_index_entry(entry, what)
            leaf = chains.signer(entry.signer_fingerprint, what)
            verify_control_signature(entry, leaf, what=what, unsigned_allowed=UNSIGNED_ATTRIBUTES)
        except WaptError as e:
            discarded.append(Discarded(entry, e))
            continue
        accepted.append(entry)
    return Index(source, accepted, discarded, certificates)


def _check_index_entry(entry: PackageEntry, what: str) -> None:
    filename = entry.filename
    if not filename or "/" in filename:
        raise UnsafePathError(f"{what}: filename {filename!r} is not a plain file name")
    check_member_name(filename)
    if not isinstance(entry.get("size"), int):
        raise IndexFormatError(f"{what}: size {entry.get('size')!r} is not a number")


class _ChainFinder:
    """Builds and trusts each signer's chain once, from the index's `ssl/` certificates."""

    def __init__(
        self, certificates: dict[str, Certificate], trust: TrustStore, at: datetime | None
    ) -> None:
        self.certificates = certificates
        self.by_ski = {c.subject_key_id: c for c in certificates.values() if c.subject_key_id}
        self.trust = trust
        self.at = at
        self.decided: dict[str, Certificate | WaptError] = {}

    def signer(self, fingerprint: str, what: str) -> Certificate:
        decision = self.decided.get(fingerprint)
        if decision is None:
            decision = self._decide(fingerprint)
            self.decided[fingerprint] = decision
        if isinstance(decision, WaptError):
            raise type(decision)(f"{what}: {decision}")
        return decision

    def _decide(self, fingerprint: str) -> Certificate | WaptError:
        leaf = self.certificates.get(fingerprint.lower()) if fingerprint else None
        if leaf is None:
            leaf = self.trust.find(fingerprint.lower()) if fingerprint else None
        if leaf is None:
            return UntrustedCertificateError(
                f"signer certificate {fingerprint or '(none)'} is not in the index"
            )
        chain = [leaf]
        seen = {leaf.fingerprint}
        current = leaf
        while current.authority_key_id and len(chain) < 8:
            issuer = self.by_ski.get(current.authority_key_id)
            if issuer is None or issuer.fingerprint in seen:
                break
            chain.append(issuer)
            seen.add(issuer.fingerprint)
            current = issuer
        try:
            self.trust.check_chain(chain, at=self.at)
        except WaptError as e:
            return e
        return leaf


def _is_url(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in ("http", "https")


def index_url(location: str) -> str:
    """The URL of the `Packages` file of a repository URL (which may already name it)."""
    base = location.rstrip("/")
    return base if base.endswith("/" + INDEX_NAME) else f"{base}/{INDEX_NAME}"


@dataclass(frozen=True)
class FetchResult:
    """An HTTP answer: `status` 200, or 304 when a conditional request found no change."""

    status: int
    body: bytes
    headers: dict[str, str]


def fetch(
    url: str,
    *,
    timeout: float = 30.0,
    max_size: int = MAX_INDEX_SIZE,
    headers: dict[str, str] | None = None,
    ca_file: Path | None = None,
) -> FetchResult:
    """GET `url` over HTTP(S). A 304 answer to a conditional request is returned as such.

    Raises:
        FetchError: connection failure, time-out, an error status, or a body over `max_size`.
    """
    if not _is_url(url):
        raise FetchError(f"{url}: only http and https repositories are supported")
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http(s) only)
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            body = response.read(max_size + 1)
            status = response.status
            response_headers = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as e:
        if e.code == 304:
            return FetchResult(304, b"", {k.lower(): v for k, v in e.headers.items()})
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"{url}: {reason}") from e
    if len(body) > max_size:
        raise FetchError(f"{url}: larger than {max_size} bytes")
    return FetchResult(status, body, response_headers)


def load_index(
    location: str | Path,
    trust: TrustStore,
    *,
    timeout: float = 30.0,
    at: datetime | None = None,
) -> Index:
    """Load and verify the index of a repository: a directory, a `Packages` file or a URL.

    Raises:
        FetchError: the URL cannot be fetched.
        RepositoryError: the directory or file cannot be read.
        IndexFormatError: the index is malformed.
    """
    text = str(location)
    if _is_url(text):
        url = index_url(text)
        answer = fetch(url, timeout=timeout)
        index = read_index(answer.body, trust, source=url, at=at)
        index.last_modified = answer.headers.get("last-modified")
        index.etag = answer.headers.get("etag")
        return index
    path = Path(location)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RepositoryError(f"{path}: cannot read the index: {e.strerror or e}") from e
    return read_index(data, trust, source=str(path), at=at)


def iter_problems(error: WaptError) -> Iterator[WaptError]:
    """The individual problems of an error: its list for a VerificationError, else itself."""
    if isinstance(error, VerificationError):
        yield from error.problems
    else:
        yield error


def entries_by_name(entries: Iterable[PackageEntry]) -> dict[str, list[PackageEntry]]:
    """Group entries by package name."""
    grouped: dict[str, list[PackageEntry]] = {}
    for entry in entries:
        grouped.setdefault(entry.package, []).append(entry)
    return grouped
