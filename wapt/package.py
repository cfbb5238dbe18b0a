"""`.wapt` files: verify completely, extract, build, sign and re-sign (wapt-format.md §1.1, §2).

Verification reads the archive once, streaming: the member table is checked before any byte is
inflated (unsafe names, links, duplicates, encryption, bomb caps), then every member is hashed in
1 MiB chunks and compared with the signed manifest. Every problem found is collected and raised
once as a `VerificationError` whose `problems` are the precise errors of `wapt.errors`.

Nothing here extracts or runs anything; `extract_package` writes a verified package's files into
a directory through one safe-join function, re-checking each hash as it writes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from wapt.archive import (
    CHUNK,
    DEFAULT_LIMITS,
    ArchiveLimits,
    PackageArchive,
    ProblemReport,
    check_member_name,
    fold_name,
    open_archive,
    safe_join,
)
from wapt.control import (
    DEFAULT_SIGNED_ATTRIBUTES,
    LOCAL_ATTRIBUTES,
    REPO_ATTRIBUTES,
    PackageEntry,
    format_control,
    parse_control,
)
from wapt.errors import (
    BuildError,
    ControlSignatureError,
    ControlTooLargeError,
    ControlValueError,
    CorruptedFileError,
    ExtraFileError,
    LegacyPackageError,
    ManifestError,
    ManifestSignatureError,
    MissingFileError,
    MissingMemberError,
    NotCodeSigningError,
    PackageError,
    SignatureEncodingError,
    SignerMismatchError,
    UnsafePathError,
    WaptError,
    ZipBombError,
)
from wapt.trust import Certificate, Signer, TrustStore, load_certificates

_T = TypeVar("_T")
UNSIGNED_ATTRIBUTES = frozenset({"signature", *REPO_ATTRIBUTES, *LOCAL_ATTRIBUTES})


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveLimits",
    "VerifiedPackage",
    "build_package",
    "check_member_name",
    "extract_package",
    "read_control",
    "resign_package",
    "safe_join",
    "sign_control",
    "verify_package",
]

CONTROL = "WAPT/control"
CERTIFICATE = "WAPT/certificate.crt"
MANIFEST = "WAPT/manifest.sha256"
SIGNATURE = "WAPT/signature.sha256"
LEGACY_MANIFEST = "WAPT/manifest.sha1"
LEGACY_SIGNATURE = "WAPT/signature"
ICON = "WAPT/icon.png"
SETUP = "setup.py"
#: members a build never copies from a source directory: the signing writes them anew
SIGNING_MEMBERS = frozenset(
    {CONTROL, CERTIFICATE, MANIFEST, SIGNATURE, LEGACY_MANIFEST, LEGACY_SIGNATURE}
)
#: source files WAPT's `build_package` leaves out of a package
BUILD_EXCLUDED_NAMES = frozenset({".svn", ".git", ".gitignore", "setup.pyc", "__pycache__"})
BUILD_EXCLUDED_SUFFIXES = (".pyc", ".dbg")


@dataclass(frozen=True)
class VerifiedPackage:
    """A package that passed every check, with what the checks established."""

    path: Path
    entry: PackageEntry
    #: the signer chain as shipped in `WAPT/certificate.crt`, leaf first
    chain: tuple[Certificate, ...]
    #: the path from the leaf to the trust-store anchor that accepted it
    trust_path: tuple[Certificate, ...]
    #: member name -> sha256 hex, from the verified manifest
    manifest: dict[str, str]

    @property
    def signer(self) -> Certificate:
        return self.chain[0]


# --- manifest and signatures ---------------------------------------------------------------


def parse_manifest(data: bytes) -> dict[str, str]:
    """Parse `WAPT/manifest.sha256`: a JSON list of `[path, sha256 hex]` pairs.

    Raises:
        ManifestError: not JSON, not a list of pairs, an unsafe path, a bad hash, or a path
            listed twice.
    """
    try:
        pairs = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{MANIFEST}: not JSON: {e}") from e
    if not isinstance(pairs, list):
        raise ManifestError(f"{MANIFEST}: a JSON list of [path, sha256] pairs was expected")
    manifest: dict[str, str] = {}
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            raise ManifestError(f"{MANIFEST}: entry {pair!r} is not a [path, sha256] pair")
        path, digest = pair
        try:
            check_member_name(path)
        except UnsafePathError as e:
            raise ManifestError(f"{MANIFEST}: {e}") from e
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ManifestError(f"{MANIFEST}: entry {path!r}: {digest!r} is not a sha256 hex")
        if path in manifest:
            raise ManifestError(f"{MANIFEST}: {path!r} listed twice")
        manifest[path] = digest.lower()
    return manifest


def decode_signature(text: str | bytes, *, what: str) -> bytes:
    """Decode a base64 signature, MIME line breaks allowed; nothing else is.

    Raises:
        SignatureEncodingError: not base64, or empty.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        signature = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureEncodingError(f"{what}: not base64: {e}") from e
    if not signature:
        raise SignatureEncodingError(f"{what}: empty signature")
    return signature


def verify_control_signature(
    entry: PackageEntry,
    signer: Certificate,
    *,
    what: str,
    unsigned_allowed: frozenset[str] = frozenset({"signature"}),
) -> None:
    """Check the control signature of `entry` with `signer` (§2.1).

    Stricter than WAPT: every field present must be covered by `signed_attributes`, except
    those in `unsigned_allowed` (the index adds `filename`, `size` and `md5sum`).

    Raises:
        SignatureEncodingError: the `signature` field is not base64.
        ControlSignatureError: it does not verify, or a field is outside the signature.
    """
    signature = decode_signature(entry.signature, what=f"{what}: control signature")
    signer.verify(
        entry.signed_content(),
        signature,
        what=f"{what}: control signature",
        error=ControlSignatureError,
    )
    unsigned = set(entry.fields) - set(entry.signed_attributes) - unsigned_allowed
    if unsigned:
        raise ControlSignatureError(
            f"{what}: field(s) {', '.join(sorted(unsigned))} not covered by the signature"
        )


def check_signer_fields(entry: PackageEntry, signer: Certificate, *, what: str) -> None:
    """Stricter than WAPT: `signer_fingerprint` and `signer` must name the leaf certificate.

    Raises:
        SignerMismatchError: the control names another certificate.
    """
    if entry.signer_fingerprint.lower() != signer.fingerprint:
        raise SignerMismatchError(
            f"{what}: signer_fingerprint {entry.signer_fingerprint or '(empty)'!r} is not the "
            f"fingerprint of the signing certificate {signer.cn!r} ({signer.fingerprint})"
        )
    if entry.signer != signer.cn:
        raise SignerMismatchError(
            f"{what}: signer {entry.signer!r} is not the signing certificate's name {signer.cn!r}"
        )


def has_setup(names: Iterable[str]) -> bool:
    """Whether a root-level `setup.py` is among `names`, in any case (Windows imports it so)."""
    return any(fold_name(name) == SETUP for name in names)


# --- verification --------------------------------------------------------------------------


def verify_package(
    path: Path,
    trust: TrustStore,
    *,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    at: datetime | None = None,
) -> VerifiedPackage:
    """Verify a `.wapt` file completely; return what was established.

    Checks, collecting every problem: the member table (`wapt.archive`), the required `WAPT/`
    members, the control file syntax, the signer chain against `trust` (validity dates at `at`,
    default now), the manifest signature over its raw bytes, the control signature,
    `signer_fingerprint` and `signer`, codeSigning when `setup.py` is present, and every file's
    sha256 with no file missing or extra.

    Raises:
        VerificationError: with every problem found, each a precise `WaptError`.
        PackageError: the file cannot be read at all (I/O error).
    """
    with open_archive(path, limits) as archive:
        return _Verification(archive, trust, at).run()


class _Verification:
    """One verification of an open archive; collects problems, raises once."""

    def __init__(self, archive: PackageArchive, trust: TrustStore, at: datetime | None) -> None:
        self.archive = archive
        self.trust = trust
        self.at = at
        self.report = ProblemReport(archive.subject)
        self.raw: dict[str, bytes] = {}

    def attempt(self, check: Callable[[], _T]) -> _T | None:
        try:
            return check()
        except WaptError as e:
            self.report.add(e)
            return None

    def run(self) -> VerifiedPackage:
        archive, limits = self.archive, self.archive.limits
        members = archive.members
        if LEGACY_SIGNATURE in members and MANIFEST not in members:
            self.report.add(
                LegacyPackageError(
                    "signed with SHA-1 (WAPT before 1.5), which Comptoir does not verify: re-sign"
                )
            )
        for name, cap, too_large in (
            (CONTROL, limits.max_control_size, ControlTooLargeError),
            (CERTIFICATE, limits.max_metadata_size, ZipBombError),
            (MANIFEST, limits.max_metadata_size, ZipBombError),
            (SIGNATURE, limits.max_metadata_size, ZipBombError),
        ):
            if name not in members:
                self.report.add(MissingMemberError(f"{name} is missing"))
                continue
            data = self.attempt(lambda: archive.read(name, cap, too_large))  # noqa: B023
            if data is not None:
                self.raw[name] = data

        entry = chain = None
        if CONTROL in self.raw:
            entry = self.attempt(
                lambda: parse_control(
                    self.raw[CONTROL], source=CONTROL, max_bytes=limits.max_control_size
                )
            )
        if CERTIFICATE in self.raw:
            chain = self.attempt(
                lambda: tuple(load_certificates(self.raw[CERTIFICATE], source=CERTIFICATE))
            )
        trust_path = self._check_signer(entry, chain) if chain else None
        manifest = None
        if MANIFEST in self.raw:
            manifest = self.attempt(lambda: parse_manifest(self.raw[MANIFEST]))
        if manifest is not None:
            for problem in self._check_files(manifest):
                self.report.add(problem)
        self.report.raise_if_any()
        assert entry is not None and chain and trust_path is not None and manifest is not None
        return VerifiedPackage(archive.path, entry, chain, trust_path, manifest)

    def _check_signer(
        self, entry: PackageEntry | None, chain: tuple[Certificate, ...]
    ) -> tuple[Certificate, ...] | None:
        leaf = chain[0]
        trust_path = self.attempt(lambda: tuple(self.trust.check_chain(chain, at=self.at)))
        if SIGNATURE in self.raw and MANIFEST in self.raw:
            self.attempt(
                lambda: leaf.verify(
                    self.raw[MANIFEST],
                    decode_signature(self.raw[SIGNATURE], what=SIGNATURE),
                    what=SIGNATURE,
                    error=ManifestSignatureError,
                )
            )
        if entry is not None:
            self.attempt(lambda: verify_control_signature(entry, leaf, what=CONTROL))
            self.attempt(lambda: check_signer_fields(entry, leaf, what=CONTROL))
        if has_setup(self.archive.members) and not leaf.is_code_signing:
            self.report.add(
                NotCodeSigningError(
                    f"signer {leaf.cn!r} has no codeSigning extended key usage, "
                    f"required for a package with {SETUP}"
                )
            )
        return trust_path

    def _check_files(self, manifest: dict[str, str]) -> Iterator[WaptError]:
        """Hash every member against the manifest: no file corrupted, missing or extra."""
        for info in self.archive.directories:
            yield ExtraFileError(f"directory entry {info.filename!r} is not in the manifest")
        for name, info in self.archive.members.items():
            if name in (MANIFEST, SIGNATURE):
                continue
            expected = manifest.get(name)
            if expected is None:
                yield ExtraFileError(f"file {name}: not in the manifest")
                continue
            try:
                if name in self.raw:
                    actual = hashlib.sha256(self.raw[name]).hexdigest()
                else:
                    actual = self.archive.sha256(info)
            except WaptError as e:
                yield e
                continue
            if actual != expected:
                yield CorruptedFileError(f"file {name}: sha256 mismatch")
        for name in manifest:
            if name not in self.archive.members:
                yield MissingFileError(f"file {name}: listed in the manifest but absent")


# --- reading without trust (show) ----------------------------------------------------------


def read_control(path: Path, *, limits: ArchiveLimits = DEFAULT_LIMITS) -> PackageEntry:
    """Read a package's control data without verifying it (for display and indexing).

    Raises:
        VerificationError: the member table is unsafe or not a zip.
        MissingMemberError: there is no `WAPT/control`.
        ControlError: the control file cannot be parsed.
    """
    with open_archive(path, limits) as archive:
        return read_control_from(archive)


def read_control_from(archive: PackageArchive) -> PackageEntry:
    """The parsed `WAPT/control` of an open archive (not verified).

    Raises:
        MissingMemberError, ControlError: as `read_control`.
    """
    if CONTROL not in archive.members:
        raise MissingMemberError(f"{archive.subject}: {CONTROL} is missing")
    cap = archive.limits.max_control_size
    return parse_control(
        archive.read(CONTROL, cap, ControlTooLargeError),
        source=f"{archive.subject}:{CONTROL}",
        max_bytes=cap,
    )


# --- extraction ----------------------------------------------------------------------------


def extract_package(
    path: Path,
    dest: Path,
    trust: TrustStore,
    *,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    at: datetime | None = None,
) -> VerifiedPackage:
    """Verify `path`, then write its files under the empty or absent directory `dest`.

    The archive is verified first; files are then written through `safe_join` and each is
    hashed again as it is written, so a file swapped between the two passes is caught. On any
    error, `dest` is removed: nothing half-written stays.

    Raises:
        VerificationError: the package does not verify (nothing is written).
        PackageError: `dest` exists and is not empty, or a file changed during extraction.
    """
    if dest.exists() and any(dest.iterdir()):
        raise PackageError(f"{path.name}: destination {dest} is not empty")
    with open_archive(path, limits) as archive:
        verified = _Verification(archive, trust, at).run()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            for name, info in archive.members.items():
                target = safe_join(dest, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as out:
                    digest = archive.sha256(info, out)
                expected = verified.manifest.get(name)
                if expected is not None and digest != expected:
                    raise CorruptedFileError(f"{path.name}: file {name}: changed during extraction")
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return verified


# --- building and signing ------------------------------------------------------------------


def _now_local() -> str:
    # WAPT writes local time without a time zone, with microseconds (§1.3 signature_date).
    return datetime.now().isoformat(timespec="microseconds")


def sign_control(entry: PackageEntry, signer: Signer, *, signature_date: str | None = None) -> None:
    """Sign `entry` in place the way WAPT's `_sign_control` does (§2.1).

    Repository and local attributes are dropped first: they never belong in a package.

    A new random `package_uuid`, the default `signed_attributes`, `signer` (the certificate's
    CN), `signer_fingerprint`, `signature_date`, then `signature`. The control is then checked to
    survive a write and a re-read unchanged, WAPT's round-trip trap.

    Raises:
        ControlValueError: a value would not read back as signed.
    """
    leaf = signer.certificate
    for key in (*REPO_ATTRIBUTES, *LOCAL_ATTRIBUTES):
        if key in entry:
            del entry[key]
    entry["package_uuid"] = str(uuid.uuid4())
    entry["signer"] = leaf.cn
    entry["signer_fingerprint"] = leaf.fingerprint
    entry["signature_date"] = signature_date or _now_local()
    # Fields WAPT does not know are signed too: every field present is covered.
    extra = [
        key
        for key in entry
        if key not in DEFAULT_SIGNED_ATTRIBUTES and key not in UNSIGNED_ATTRIBUTES
    ]
    entry["signed_attributes"] = ",".join([*DEFAULT_SIGNED_ATTRIBUTES, *extra])
    if "signature" in entry:
        del entry["signature"]
    for attr in DEFAULT_SIGNED_ATTRIBUTES:
        if attr not in entry:
            entry[attr] = ""
    reread = parse_control(format_control(entry).encode("utf-8"), source="signed control")
    if reread.signed_content() != entry.signed_content():
        raise ControlValueError(
            f"package {entry.package}: a value does not survive writing and re-reading"
        )
    entry["signature"] = base64.b64encode(signer.sign(entry.signed_content())).decode("ascii")


def _source_files(source: Path) -> list[tuple[str, Path]]:
    """The files of a package source directory, as (member name, path), sorted."""
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in BUILD_EXCLUDED_NAMES)
        for d in dirnames:
            if (here / d).is_symlink():
                raise BuildError(f"{here / d}: symbolic links are not packaged")
        for name in sorted(filenames):
            if name in BUILD_EXCLUDED_NAMES or name.endswith(BUILD_EXCLUDED_SUFFIXES):
                continue
            file = here / name
            if file.is_symlink() or not file.is_file():
                raise BuildError(f"{file}: only regular files are packaged")
            member = file.relative_to(source).as_posix()
            if member in SIGNING_MEMBERS:
                continue
            try:
                check_member_name(member)
            except UnsafePathError as e:
                raise BuildError(f"{file}: {e}") from e
            files.append((member, file))
    return files


class _HashingWriter:
    """Write members into a zip while computing their sha256: each source byte read once."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.manifest: list[list[str]] = []

    def add_stream(self, member: str, source: _Readable, date_time: tuple[int, ...]) -> None:
        info = zipfile.ZipInfo(member, date_time=date_time[:6])  # type: ignore[arg-type]
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        digest = hashlib.sha256()
        with self.zf.open(info, "w", force_zip64=True) as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        self.manifest.append([member, digest.hexdigest()])

    def add_bytes(self, member: str, data: bytes, *, listed: bool = True) -> None:
        info = zipfile.ZipInfo(member, date_time=datetime.now().timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        self.zf.writestr(info, data)
        if listed:
            self.manifest.append([member, hashlib.sha256(data).hexdigest()])

    def sign(self, signer: Signer) -> None:
        manifest = json.dumps(self.manifest, separators=(",", ":")).encode("ascii")
        self.add_bytes(MANIFEST, manifest, listed=False)
        # MIME base64 with 76-column lines, as Python 2's .encode('base64') wrote it
        self.add_bytes(SIGNATURE, base64.encodebytes(signer.sign(manifest)), listed=False)


def _check_can_sign(signer: Signer, has_setup: bool, subject: str) -> None:
    if has_setup and not signer.certificate.is_code_signing:
        raise NotCodeSigningError(
            f"{subject}: certificate {signer.certificate.cn!r} has no codeSigning extended key "
            f"usage and cannot sign a package with {SETUP}"
        )


@contextlib.contextmanager
def _atomic_zip(dest: Path, *, overwrite: bool) -> Iterator[zipfile.ZipFile]:
    """A zip written to a temporary file beside `dest`, fsynced and renamed into place."""
    if dest.exists() and not overwrite:
        raise BuildError(f"{dest}: already exists")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as raw, zipfile.ZipFile(raw, "w") as zf:
            yield zf
            zf.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        if not overwrite and dest.exists():
            raise BuildError(f"{dest}: already exists")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def build_package(
    source: Path,
    signer: Signer,
    dest_dir: Path,
    *,
    overrides: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Build and sign a package from a source directory holding `WAPT/control`; return its path.

    Like WAPT's `build_package` + `sign_package`: payload files (build excludes left out, no
    directory entries), then `WAPT/control` signed with a new `package_uuid`,
    `WAPT/certificate.crt`, the manifest and its signature. The file gets WAPT's canonical
    name (§1.5) and is written atomically.

    Raises:
        BuildError: no control file, a symbolic link or unsafe name in the source, or the
            destination exists and `overwrite` is false.
        NotCodeSigningError: `setup.py` is present and the signer lacks codeSigning.
        ControlError: the control file is invalid or a value would not round-trip.
    """
    control_path = source / CONTROL
    if not control_path.is_file():
        raise BuildError(f"{source}: no {CONTROL}")
    entry = parse_control(control_path.read_bytes(), source=str(control_path))
    for key, value in (overrides or {}).items():
        entry[key] = value
    files = _source_files(source)
    _check_can_sign(signer, has_setup(m for m, _ in files), str(source))
    sign_control(entry, signer)
    dest = dest_dir / entry.package_filename()
    with _atomic_zip(dest, overwrite=overwrite) as zf:
        writer = _HashingWriter(zf)
        for member, file in files:
            mtime = datetime.fromtimestamp(max(file.stat().st_mtime, 315532800))
            with open(file, "rb") as f:
                writer.add_stream(member, f, mtime.timetuple())
        _write_signed_metadata(writer, entry, signer)
    return dest


def _write_signed_metadata(writer: _HashingWriter, entry: PackageEntry, signer: Signer) -> None:
    writer.add_bytes(CONTROL, format_control(entry).encode("utf-8"))
    writer.add_bytes(CERTIFICATE, b"\n".join(c.pem for c in signer.chain))
    writer.sign(signer)


def resign_package(
    path: Path,
    signer: Signer,
    dest_dir: Path,
    trust: TrustStore,
    *,
    maturity: str | None = None,
    overwrite: bool = False,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> Path:
    """Re-sign a verified package with another signer and, for a promotion, another maturity.

    The package is verified against `trust` first; its payload is copied member by member
    (each re-hashed as it is copied), its control re-signed with a new `package_uuid`, and the
    result named canonically in `dest_dir`.

    Raises:
        VerificationError: the source package does not verify.
        NotCodeSigningError: the package has `setup.py` and the new signer lacks codeSigning.
        BuildError: the destination exists and `overwrite` is false.
        CorruptedFileError: the source changed while it was copied.
    """
    verified = verify_package(path, trust, limits=limits)
    entry = verified.entry.copy()
    if maturity is not None:
        entry["maturity"] = maturity
    _check_can_sign(signer, has_setup(verified.manifest), path.name)
    sign_control(entry, signer)
    dest = dest_dir / entry.package_filename()
    if dest.resolve() == path.resolve() and not overwrite:
        raise BuildError(f"{dest}: re-signing would replace the source; pass overwrite")
    with open_archive(path, limits) as src, _atomic_zip(dest, overwrite=overwrite) as zf:
        writer = _HashingWriter(zf)
        for name, info in src.members.items():
            if name in SIGNING_MEMBERS:
                continue
            writer.add_stream(name, _ChunkReader(src.chunks(info)), info.date_time)
            if writer.manifest[-1][1] != verified.manifest.get(name):
                raise CorruptedFileError(f"{path.name}: file {name}: changed while re-signing")
        _write_signed_metadata(writer, entry, signer)
    return dest


class _ChunkReader:
    """A `read()` over an iterator of chunks, for `_HashingWriter.add_stream`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:
        return next(self._chunks, b"")
