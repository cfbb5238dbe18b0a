"""Which packages go into a bundle: given files, or names resolved from a repository.

A repository is a directory or an HTTP(S) URL holding a WAPT `Packages` index. With a trust store
its entries are verified as an agent verifies them (`wapt.repository.read_index`); names given
with `--package` or `--group` are resolved with their dependencies (`wapt.resolve`), once per
host profile, so that a bundle for x64 and x86 machines carries what each needs.
"""

from __future__ import annotations

import io
import urllib.parse
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wapt.archive import check_member_name, open_archive
from wapt.control import PackageEntry, parse_records
from wapt.errors import (
    CertificateFormatError,
    ControlError,
    IndexFormatError,
    MissingDependencyError,
    RepositoryError,
    ResolveError,
    WaptError,
)
from wapt.package import CERTIFICATE, ICON, read_control_from
from wapt.repository import INDEX_NAME, RecordedFile, fetch, index_url, read_index, recorded_files
from wapt.resolve import HostProfile, resolve
from wapt.trust import Certificate, TrustStore, load_certificates
from wapt.version import PackageRequest

MAX_ICON = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SourcePackage:
    """One package to put in a bundle, and where its bytes come from."""

    #: the file name in the bundle (and in its `Packages` index)
    filename: str
    #: a local file, or an http(s) URL
    location: Path | str
    size: int
    #: the control entry, with its signature (repository attributes are set by the writer)
    entry: PackageEntry
    #: MD5 from the source index, if any (else computed while copying)
    md5: str | None = None
    certificates: tuple[Certificate, ...] = ()
    #: the icon: bytes already read, a local file, or a URL
    icon: bytes | Path | str | None = None
    #: what the local repository's last scan recorded of the file (its sha256, for the file
    #: with that size, mtime and inode only): lets the writer copy it without hashing it
    recorded: RecordedFile | None = None

    @property
    def is_remote(self) -> bool:
        return isinstance(self.location, str)


@dataclass
class Selection:
    """The packages chosen, and how the request was understood."""

    packages: list[SourcePackage] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)


def package_from_file(path: Path) -> SourcePackage:
    """Read a `.wapt` file's control, certificates and icon (no trust decision).

    Raises:
        WaptError: the file is not a readable package.
    """
    with open_archive(path) as archive:
        entry = read_control_from(archive)
        certificates: tuple[Certificate, ...] = ()
        if CERTIFICATE in archive.members:
            pem = archive.read(CERTIFICATE, archive.limits.max_metadata_size)
            certificates = tuple(load_certificates(pem, source=f"{path.name}:{CERTIFICATE}"))
        icon = None
        if ICON in archive.members and archive.members[ICON].file_size <= MAX_ICON:
            data = archive.read(ICON, MAX_ICON)
            icon = data if data.startswith(PNG_MAGIC) else None
    return SourcePackage(
        filename=path.name,
        location=path,
        size=path.stat().st_size,
        entry=entry,
        certificates=certificates,
        icon=icon,
    )


def packages_from_files(paths: Sequence[Path]) -> list[SourcePackage]:
    return [package_from_file(p) for p in paths]


def _read_index_bytes(repo: str) -> tuple[bytes, str]:
    if urllib.parse.urlsplit(repo).scheme in ("http", "https"):
        url = index_url(repo)
        return fetch(url).body, url
    path = Path(repo)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise RepositoryError(f"{path}: cannot read the index: {e.strerror or e}") from e


def _unverified_index(data: bytes, source: str) -> tuple[list[PackageEntry], list[Certificate]]:
    """Entries and certificates of an index without a trust decision (no `--trusted`)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            text = zf.read(INDEX_NAME).decode("utf-8")
            pems = [zf.read(n) for n in zf.namelist() if n.startswith("ssl/")]
    except (KeyError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise IndexFormatError(f"{source}: not a WAPT index: {e}") from e
    try:
        entries = parse_records(text, source=source)
    except ControlError as e:
        raise IndexFormatError(str(e)) from e
    certificates = []
    for pem in pems:
        try:
            certificates.extend(load_certificates(pem, source=source))
        except CertificateFormatError:
            continue
    return entries, certificates


def packages_from_repository(
    repo: str | Path,
    *,
    packages: Sequence[str] = (),
    groups: Sequence[str] = (),
    trust: TrustStore | None = None,
    profiles: Sequence[HostProfile] = (HostProfile(),),
) -> Selection:
    """Resolve `packages` and `groups` (names or requests such as `foo(>=2)`) with their
    dependencies against the repository `repo`, once per host profile.

    Raises:
        RepositoryError: the index cannot be read (FetchError for a URL).
        ResolveError: a request matches nothing for any profile; names the chain.
        BundleFilesystemError is not raised here; names are checked by the writer.
    """
    data, source = _read_index_bytes(str(repo))
    local = urllib.parse.urlsplit(str(repo)).scheme not in ("http", "https")
    recorded = recorded_files(data) if local else {}
    if trust is not None:
        index = read_index(data, trust, source=source)
        entries, certificates = index.entries, list(index.certificates.values())
        discarded = {d.entry.package: d.reason for d in index.discarded}
    else:
        entries, certificates = _unverified_index(data, source)
        discarded = {}
    requests = [*packages, *groups]
    if not requests:
        raise ResolveError("name at least one package or group to put in the bundle")
    by_filename: dict[str, PackageEntry] = {}
    for request in requests:
        found = False
        errors: list[WaptError] = []
        for profile in profiles:
            try:
                plan = resolve([request], entries, profile)
            except ResolveError as e:
                errors.append(e)
                continue
            found = True
            for entry in plan.install:
                by_filename[entry.filename] = entry
        if not found:
            name = PackageRequest.parse(request).name
            if name in discarded:
                raise MissingDependencyError(
                    f"{request}: its index entry does not verify: {discarded[name]}"
                )
            raise errors[0]
    for group in groups:
        name = PackageRequest.parse(group).name
        chosen = [e for e in by_filename.values() if e.package == name]
        if chosen and all(e.section != "group" for e in chosen):
            raise ResolveError(
                f"{group}: is a {chosen[0].section or 'base'} package, not a group; "
                "use --package for it"
            )
    result = Selection(requested=requests)
    for filename, entry in sorted(by_filename.items()):
        check_member_name(filename)
        if "/" in filename:
            raise IndexFormatError(f"{source}: filename {filename!r} is not a plain name")
        size = entry.size
        if not isinstance(size, int):
            raise IndexFormatError(f"{source}: {filename}: no size in the index")
        result.packages.append(
            SourcePackage(
                filename=filename,
                location=_join(repo, filename),
                size=size,
                entry=entry,
                md5=entry.md5sum.lower() or None,
                certificates=tuple(certificates),
                icon=_join(repo, f"icons/{entry.package_uuid}.png") if entry.package_uuid else None,
                recorded=recorded.get(filename),
            )
        )
    return result


def _join(repo: str | Path, name: str) -> Path | str:
    text = str(repo)
    if urllib.parse.urlsplit(text).scheme in ("http", "https"):
        base = text.rstrip("/")
        base = base.removesuffix("/" + INDEX_NAME)
        return f"{base}/{urllib.parse.quote(name)}"
    path = Path(repo)
    if path.is_file():
        path = path.parent
    return path.joinpath(*name.split("/"))
