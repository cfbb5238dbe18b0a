"""The one exception hierarchy of the package core: every error `wapt` raises is a `WaptError`.

Messages state the value and the reason, prefixed with what they concern, for example
``"acme-app_3.0.1-1_PROD.wapt: file setup.py: sha256 mismatch"``. Foreign errors (zipfile,
cryptography, OS) are wrapped at the boundary with ``raise ... from e``.

Verification collects every problem it finds and raises once: `VerificationError` carries the
list, each problem itself an instance of the precise class below, so a caller (or a test) can ask
which kinds of problem a package has.
"""

from __future__ import annotations

from collections.abc import Iterable


class WaptError(Exception):
    """Root of every error raised by the package core."""


# --- control files -------------------------------------------------------------------------


class ControlError(WaptError):
    """A control file (or a `Packages` record) cannot be read or written."""


class ControlEncodingError(ControlError):
    """Not UTF-8, starts with a byte-order mark, or uses CR line endings."""


class ControlSyntaxError(ControlError):
    """A line is neither `key: value` nor a continuation, a key is empty or repeated."""


class ControlTooLargeError(ControlError):
    """The control file is larger than the configured cap."""


class ControlValueError(ControlError):
    """A value cannot be written so that it reads back unchanged (blank line, bad key)."""


# --- versions ------------------------------------------------------------------------------


class VersionError(WaptError):
    """A version or a package request cannot be parsed or compared."""


# --- keys, certificates, trust -------------------------------------------------------------


class TrustError(WaptError):
    """A key, certificate or trust decision failed."""


class KeyFileError(TrustError):
    """A private key cannot be read: bad format, missing or wrong passphrase."""


class CertificateFormatError(TrustError):
    """A certificate file holds no certificate, or garbage."""


class UntrustedCertificateError(TrustError):
    """No certificate of the chain is pinned in, or issued by, the trust store."""


class CertificateExpiredError(TrustError):
    """A certificate on the trust path is past its `notAfter`."""


class CertificateNotYetValidError(TrustError):
    """A certificate on the trust path is before its `notBefore`."""


class NotCodeSigningError(TrustError):
    """The signer lacks Extended Key Usage codeSigning but the package has `setup.py`."""


# --- packages ------------------------------------------------------------------------------


class PackageError(WaptError):
    """A `.wapt` file cannot be read, built, signed or verified."""


class ArchiveError(PackageError):
    """The zip itself is unusable or unsafe; nothing of it is trusted or extracted."""


class NotAZipError(ArchiveError):
    """The file is not a readable zip archive."""


class UnsafePathError(ArchiveError):
    """A member name escapes the destination: `..`, absolute, drive letter or backslash."""


class SymlinkMemberError(ArchiveError):
    """A member is a symbolic link (or another non-regular file)."""


class DuplicateMemberError(ArchiveError):
    """Two members have the same name (exactly, or once normalised)."""


class ZipBombError(ArchiveError):
    """Too many members, too large once inflated, or a suspicious compression ratio."""


class EncryptedMemberError(ArchiveError):
    """A member is encrypted: packages are never encrypted."""


class MissingMemberError(PackageError):
    """A required `WAPT/` member is absent (control, certificate, manifest, signature)."""


class SignatureError(PackageError):
    """A signature is unreadable or does not verify."""


class SignatureEncodingError(SignatureError):
    """A signature is not valid base64."""


class ManifestSignatureError(SignatureError):
    """`WAPT/signature.sha256` does not verify over `WAPT/manifest.sha256`."""


class ControlSignatureError(SignatureError):
    """The control signature does not verify over the signed attributes."""


class SignerMismatchError(SignatureError):
    """`signer_fingerprint` (or `signer`) in the control does not name the certificate."""


class ManifestError(PackageError):
    """`WAPT/manifest.sha256` is not a JSON list of `[path, sha256]` pairs."""


class CorruptedFileError(PackageError):
    """A file's sha256 differs from the manifest."""


class MissingFileError(PackageError):
    """A file listed in the manifest is absent from the archive."""


class ExtraFileError(PackageError):
    """A file is in the archive but not in the manifest."""


class LegacyPackageError(PackageError):
    """Signed in a form Comptoir does not verify (SHA-1 manifest, pre-1.8 JSON): re-sign it."""


class BuildError(PackageError):
    """A package cannot be built or signed from the given source."""


class VerificationError(PackageError):
    """Verification found one or more problems; `problems` lists each as its own error."""

    def __init__(self, subject: str, problems: Iterable[WaptError]) -> None:
        self.subject = subject
        self.problems: list[WaptError] = list(problems)
        lines = "; ".join(str(p) for p in self.problems)
        super().__init__(f"{subject}: {len(self.problems)} problem(s): {lines}")

    def has(self, kind: type[WaptError]) -> bool:
        """Tell whether one of the problems is of the given kind."""
        return any(isinstance(p, kind) for p in self.problems)


# --- repositories, indexes -----------------------------------------------------------------


class RepositoryError(WaptError):
    """A repository or its `Packages` index cannot be read or written."""


class IndexFormatError(RepositoryError):
    """The `Packages` file is not a zip holding a `Packages` member, or a record is malformed."""


class FetchError(RepositoryError):
    """An HTTP(S) repository did not answer, or answered with an error status."""


# --- resolution ----------------------------------------------------------------------------


class ResolveError(WaptError):
    """No install set satisfies the request."""


class MissingDependencyError(ResolveError):
    """A request or dependency matches no available package; the message names the chain."""


class DependencyCycleError(ResolveError):
    """Dependencies form a cycle; the message names it."""


class ConflictError(ResolveError):
    """Two packages of the install set conflict with each other."""


# --- USB bundles ---------------------------------------------------------------------------


class BundleError(WaptError):
    """A USB bundle cannot be written, read or trusted."""


class BundleVerificationError(BundleError):
    """Verifying a bundle found one or more problems; `problems` lists each as its own error."""

    def __init__(self, subject: str, problems: Iterable[BundleError]) -> None:
        self.subject = subject
        self.problems: list[BundleError] = list(problems)
        lines = "; ".join(str(p) for p in self.problems)
        super().__init__(f"{subject}: {len(self.problems)} problem(s): {lines}")

    def has(self, kind: type[WaptError]) -> bool:
        """Tell whether one of the problems is of the given kind."""
        return any(isinstance(p, kind) for p in self.problems)


class BundleMetadataError(BundleError):
    """A metadata file is missing, too large, not JSON, or not the TUF role it should be."""


class BundleSignatureError(BundleError):
    """Metadata is not signed by a threshold of the trusted keys, or its root is not chained
    from the configured root of trust."""


class BundleExpiredError(BundleError):
    """Metadata is past its `expires` date (freeze attack, or simply an old stick)."""


class BundleRollbackError(BundleError):
    """A metadata version is lower than one this machine has already seen."""


class BundleMixAndMatchError(BundleError):
    """Metadata files do not pin each other: they come from different writes or bundles."""


class BundleFileError(BundleError):
    """A file listed in the targets has the wrong length or hash."""


class BundleMissingFileError(BundleFileError):
    """A file listed in the targets is absent."""


class BundleExtraFileError(BundleError):
    """A file is in the bundle directory but in none of its signed targets."""


class BundlePackageError(BundleError):
    """A package of the bundle fails WAPT verification, or disagrees with the `Packages` index."""


class BundleKeyError(BundleError):
    """Bundle signing keys cannot be made, read or used."""


class BundleSpaceError(BundleError):
    """The destination has not enough free space, or filled up while writing."""


class BundleFilesystemError(BundleError):
    """The destination's file system cannot hold the bundle: a file too large for FAT32, a
    forbidden name, names that clash once case is ignored, or files that are not the bundle's."""


class BundleWriteError(BundleError):
    """Writing the bundle failed (I/O error, unreadable source)."""
