"""Reading zip archives that may be hostile: member names, the member table, streamed inflation.

`PackageArchive` opens a zip and checks its whole member table before a single byte is
inflated: safe names, regular files only, no duplicates once case and Unicode are folded, no
encryption, known compression, no data before the first member and no overlapping members,
caps on member count, total size and ratio. It then inflates members itself, in bounded chunks,
and refuses any stream that inflates past its declared size or does not end where the table
says it ends, so a lying header cannot smuggle bytes or exhaust memory.
"""

from __future__ import annotations

import hashlib
import itertools
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from wapt.errors import (
    ArchiveError,
    CorruptedFileError,
    DuplicateMemberError,
    EncryptedMemberError,
    NotAZipError,
    PackageError,
    SymlinkMemberError,
    UnsafePathError,
    VerificationError,
    WaptError,
    ZipBombError,
)

CHUNK = 1024 * 1024
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_UNICODE_PATH_EXTRA = 0x7075
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that stop zip bombs and absurd archives before anything is inflated."""

    max_members: int = 10_000
    max_total_size: int = 16 * 1024**3
    #: inflated/compressed ratio allowed for a member once it inflates past `ratio_floor`
    max_ratio: int = 200
    ratio_floor: int = 1024 * 1024
    max_control_size: int = 1024 * 1024
    #: certificate, manifest and signature members
    max_metadata_size: int = 4 * 1024 * 1024
    max_name_length: int = 1024
    max_component_length: int = 255


DEFAULT_LIMITS = ArchiveLimits()


@dataclass
class ProblemReport:
    """Problems found so far; `raise_if_any` raises them all at once."""

    subject: str
    problems: list[WaptError] = field(default_factory=list)

    def add(self, error: WaptError) -> None:
        self.problems.append(error)

    def raise_if_any(self) -> None:
        if self.problems:
            raise VerificationError(self.subject, self.problems)


def check_member_name(name: str, *, limits: ArchiveLimits = DEFAULT_LIMITS) -> str:
    """Return `name` if it is a safe relative POSIX path inside an archive, else raise.

    Raises:
        UnsafePathError: empty, too long, NUL or control characters, backslashes, absolute,
            drive letters, `.`/`..` or empty components, `:` (alternate data streams), Windows
            reserved names, or components ending in a dot or a space.
    """

    def unsafe(reason: str) -> UnsafePathError:
        return UnsafePathError(f"member {name!r}: {reason}")

    if not name:
        raise unsafe("empty name")
    if len(name) > limits.max_name_length:
        raise unsafe(f"name longer than {limits.max_name_length} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise unsafe("control character in name")
    if "\\" in name:
        raise unsafe("backslash in name")
    if name.startswith("/"):
        raise unsafe("absolute path")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise unsafe("drive letter")
    for part in name.removesuffix("/").split("/"):
        if part in ("", ".", ".."):
            raise unsafe("empty, '.' or '..' path component")
        if len(part) > limits.max_component_length:
            raise unsafe(f"component longer than {limits.max_component_length} characters")
        if ":" in part:
            raise unsafe("':' in a component (drive letter or alternate data stream)")
        if part.split(".")[0].lower() in _WINDOWS_RESERVED:
            raise unsafe(f"Windows reserved name {part!r}")
        if part.endswith((" ", ".")):
            raise unsafe("component ends with a space or a dot")
    return name


def safe_join(root: Path, member: str) -> Path:
    """Join a checked member name under `root`: the one way archive paths reach the disk.

    Raises:
        UnsafePathError: the name is unsafe or resolves outside `root` (through a link).
    """
    check_member_name(member)
    target = root.joinpath(*PurePosixPath(member).parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"member {member!r}: resolves outside {root}")
    return target


def fold_name(name: str) -> str:
    """The key under which two names collide on case-insensitive, normalising file systems."""
    return unicodedata.normalize("NFC", name).casefold()


def _extra_fields(extra: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, offset)
        yield kind, extra[offset + 4 : offset + 4 + size]
        offset += 4 + size


def is_directory(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith("/")


@dataclass(frozen=True)
class _Span:
    """Where a member's header and data lie in the file."""

    header: int
    data: int
    end: int


class PackageArchive:
    """A zip whose member table passed every check; members are inflated on demand.

    Use `open_archive`. `members` holds the files by name, `directories` the directory
    entries (which Comptoir never writes and a verifier reports).
    """

    def __init__(self, path: Path, raw: BinaryIO, zf: zipfile.ZipFile, limits: ArchiveLimits):
        self.path = path
        self.subject = path.name
        self.limits = limits
        self._raw = raw
        self._zf = zf
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.directories: list[zipfile.ZipInfo] = []
        self._spans: dict[str, _Span] = {}

    # -- table checks ------------------------------------------------------------------------

    def _check(self) -> None:
        report = ProblemReport(self.subject)
        infos = self._zf.infolist()
        if len(infos) > self.limits.max_members:
            report.add(
                ZipBombError(
                    f"{len(infos)} members, more than the limit of {self.limits.max_members}"
                )
            )
            report.raise_if_any()
        folded: dict[str, str] = {}
        total = 0
        for info in infos:
            problem = self._check_member(info, folded)
            if problem is not None:
                report.add(problem)
                continue
            total += info.file_size
            if is_directory(info):
                self.directories.append(info)
            else:
                self.members[info.filename] = info
        if total > self.limits.max_total_size:
            report.add(
                ZipBombError(
                    f"inflates to {total} bytes, more than the limit of "
                    f"{self.limits.max_total_size}"
                )
            )
        report.raise_if_any()
        self._check_layout(infos, report)
        report.raise_if_any()

    def _check_member(self, info: zipfile.ZipInfo, folded: dict[str, str]) -> WaptError | None:
        name = info.filename
        if info.orig_filename != name:
            return UnsafePathError(f"member {info.orig_filename!r}: NUL byte in name")
        try:
            check_member_name(name, limits=self.limits)
        except UnsafePathError as e:
            return e
        for kind, data in _extra_fields(info.extra):
            if kind == _UNICODE_PATH_EXTRA and data[5:].decode("utf-8", "replace") != name:
                return UnsafePathError(
                    f"member {name!r}: a Unicode path extra field renames it to "
                    f"{data[5:].decode('utf-8', 'replace')!r}"
                )
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if info.create_system == 3 and file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind_name = "symbolic link" if file_type == stat.S_IFLNK else "special file"
            return SymlinkMemberError(f"member {name!r}: {kind_name}, not a regular file")
        if info.flag_bits & 0x1:
            return EncryptedMemberError(f"member {name!r}: encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            return ArchiveError(
                f"member {name!r}: compression method {info.compress_type} is not supported"
            )
        key = fold_name(name.removesuffix("/"))
        if key in folded:
            other = folded[key]
            how = "twice" if other == name else f"and as {other!r} (same name once folded)"
            return DuplicateMemberError(f"member {name!r}: present {how}")
        folded[key] = name
        if info.file_size > self.limits.ratio_floor:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > self.limits.max_ratio:
                return ZipBombError(
                    f"member {name!r}: inflates {ratio:.0f} times "
                    f"({info.compress_size} -> {info.file_size} bytes), "
                    f"more than the limit of {self.limits.max_ratio}"
                )
        return None

    def _check_layout(self, infos: list[zipfile.ZipInfo], report: ProblemReport) -> None:
        """Local headers must match the table, start at 0, and never overlap."""
        spans: list[tuple[_Span, str]] = []
        for info in infos:
            try:
                span = self._locate(info)
            except WaptError as e:
                report.add(e)
                continue
            spans.append((span, info.filename))
            self._spans[info.filename] = span
        spans.sort(key=lambda s: s[0].header)
        if spans and spans[0][0].header != 0:
            report.add(NotAZipError(f"{spans[0][0].header} bytes of data before the first member"))
        for (before, name), (after, other) in itertools.pairwise(spans):
            if after.header < before.end:
                report.add(ZipBombError(f"members {name!r} and {other!r} overlap"))
        if spans and spans[-1][0].end > self._zf.start_dir:
            report.add(ZipBombError(f"member {spans[-1][1]!r} overlaps the central directory"))

    def _locate(self, info: zipfile.ZipInfo) -> _Span:
        self._raw.seek(info.header_offset)
        header = self._raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or not header.startswith(_LOCAL_SIGNATURE):
            raise NotAZipError(f"member {info.filename!r}: no local header where the table says")
        fields = _LOCAL_HEADER.unpack(header)
        flags, name_length, extra_length = fields[2], fields[9], fields[10]
        raw_name = self._raw.read(name_length)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if name != info.orig_filename:
            raise NotAZipError(
                f"member {info.filename!r}: its local header names it {name!r} instead"
            )
        data = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        return _Span(info.header_offset, data, data + info.compress_size)

    # -- reading -----------------------------------------------------------------------------

    def chunks(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """Inflate a member in chunks of at most 1 MiB.

        Raises:
            ZipBombError: it inflates past its declared size.
            CorruptedFileError: damaged data, or a stream that ends early or late.
        """
        name = info.filename
        span = self._spans[name]
        self._raw.seek(span.data)
        remaining = info.compress_size
        produced = 0
        inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        try:
            while remaining:
                block = self._raw.read(min(CHUNK, remaining))
                if not block:
                    raise CorruptedFileError(f"file {name}: truncated")
                remaining -= len(block)
                while block:
                    if inflater is None:
                        out, block = block, b""
                    else:
                        out = inflater.decompress(block, CHUNK)
                        block = inflater.unconsumed_tail
                        if inflater.eof and (block or remaining or inflater.unused_data):
                            raise CorruptedFileError(f"file {name}: data after the end of stream")
                    produced += len(out)
                    if produced > info.file_size:
                        raise ZipBombError(
                            f"file {name}: inflates past its declared {info.file_size} bytes"
                        )
                    if out:
                        yield out
        except zlib.error as e:
            raise CorruptedFileError(f"file {name}: damaged data: {e}") from e
        if inflater is not None and not inflater.eof:
            raise CorruptedFileError(f"file {name}: compressed stream is incomplete")
        if produced != info.file_size:
            raise CorruptedFileError(
                f"file {name}: {produced} bytes instead of the declared {info.file_size}"
            )

    def read(self, name: str, cap: int, too_large: type[WaptError] = ZipBombError) -> bytes:
        """Read a small member whole, never more than `cap` bytes.

        Raises:
            KeyError: no such member.
            too_large: the member is larger than `cap`.
            CorruptedFileError, ZipBombError: as `chunks`.
        """
        info = self.members[name]
        if info.file_size > cap:
            raise too_large(f"{name}: {info.file_size} bytes, more than the limit of {cap}")
        return b"".join(self.chunks(info))

    def sha256(self, info: zipfile.ZipInfo, sink: IO[bytes] | None = None) -> str:
        """Inflate a member, copying it to `sink` if given; return its sha256 hex."""
        digest = hashlib.sha256()
        for chunk in self.chunks(info):
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
        return digest.hexdigest()


class open_archive:
    """`with open_archive(path) as archive:` — open and check a zip, or raise.

    Raises:
        VerificationError: not a zip, or the member table is unsafe; every problem listed.
        PackageError: the file cannot be read at all.
    """

    def __init__(self, path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
        self.path = path
        self.limits = limits
        self._raw: BinaryIO | None = None
        self._zf: zipfile.ZipFile | None = None

    def __enter__(self) -> PackageArchive:
        try:
            self._raw = open(self.path, "rb")
        except OSError as e:
            raise PackageError(f"{self.path.name}: cannot read: {e.strerror or e}") from e
        try:
            self._zf = zipfile.ZipFile(self._raw)
            archive = PackageArchive(self.path, self._raw, self._zf, self.limits)
            archive._check()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as e:
            self.__exit__()
            problem = NotAZipError(f"not a readable zip archive: {e}")
            raise VerificationError(self.path.name, [problem]) from e
        except BaseException:
            self.__exit__()
            raise
        return archive

    def __exit__(self, *exc: object) -> None:
        if self._zf is not None:
            self._zf.close()
        if self._raw is not None:
            self._raw.close()
