"""Keys, certificates and the trust decision: who may sign packages, and whether we believe them.

This module owns everything WAPT calls its PKI (spec §2.3, §2.4):

- `Certificate`, an immutable view of an X.509 certificate with the few properties WAPT's rules
  use (fingerprint, key identifiers, CA and code-signing flags, validity dates), and
  `Certificate.verify` for RSA PKCS#1 v1.5 / SHA-256 signatures;
- `TrustStore`, the certificates an agent or an admin trusts, and `TrustStore.check_chain`, the
  trust decision for a signer chain taken from a package (`WAPT/certificate.crt`);
- `Signer`, the interface package signing needs, and `KeySigner`, its in-memory RSA implementation;
- reading and writing private keys and certificates, and issuing WAPT-profile certificates
  (`new_ca`, `new_signer`).

Verification does no I/O: `Certificate.verify` and `TrustStore.check_chain` work on objects
already loaded. Only the functions named `load_*`, `save_*` and `from_path`/`from_files` touch
files. Private keys and passphrases never appear in a message or a `repr`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wapt.errors import (
    CertificateExpiredError,
    CertificateFormatError,
    CertificateNotYetValidError,
    KeyFileError,
    SignatureError,
    TrustError,
    UntrustedCertificateError,
)
from wapt.fsutil import write_atomic

__all__ = [
    "MAX_CHAIN_DEPTH",
    "Certificate",
    "KeySigner",
    "Signer",
    "TrustStore",
    "fingerprint_of",
    "load_certificate_file",
    "load_certificates",
    "load_private_key",
    "new_ca",
    "new_signer",
    "save_certificate",
    "save_private_key",
]

MAX_CHAIN_DEPTH = 8
"""Longest trust path (leaf to anchor, both included), and longest chain accepted from a package."""

_MAX_PATHS = 4  # alternative paths kept per chain (renewed CA with the same key and name)
_MAX_SEARCH_STEPS = 64  # issuer candidates examined per chain, whatever the chain holds
_CACHE_SIZE = 4096  # distinct chains remembered per store
_CLOCK_SKEW = timedelta(minutes=10)  # new certificates start this much before `now`
_MIN_KEY_SIZE = 2048

# Certificate signatures made with these are forgeable: never accept them on a trust path.
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)
_ENCRYPTED_KEY_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def fingerprint_of(der: bytes) -> str:
    """Return the lowercase hex SHA-256 of `der`: WAPT's `signer_fingerprint` and `ssl/` names."""
    return hashlib.sha256(der).hexdigest()


def _short(fingerprint: str) -> str:
    return f"{fingerprint[:16]}…"


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _common_name(name: x509.Name) -> str:
    for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return ""


# --- certificates --------------------------------------------------------------------------


class Certificate:
    """An immutable X.509 certificate, with the properties WAPT's trust rules look at.

    Two certificates are equal when their DER encodings are (same `fingerprint`). Build one with
    `from_der`, `from_x509` or `load_certificates`; every extension is parsed up front, so a
    malformed certificate fails when it is loaded, never in the middle of a trust decision.
    """

    __slots__ = (
        "_authority_key_id",
        "_cn",
        "_der",
        "_fingerprint",
        "_is_ca",
        "_is_code_signing",
        "_issuer_cn",
        "_key_cert_sign",
        "_not_after",
        "_not_before",
        "_path_length",
        "_subject_key_id",
        "_x509",
    )

    _x509: x509.Certificate
    _der: bytes
    _fingerprint: str
    _cn: str
    _issuer_cn: str
    _subject_key_id: bytes | None
    _authority_key_id: bytes | None
    _is_ca: bool
    _path_length: int | None
    _key_cert_sign: bool | None
    _is_code_signing: bool
    _not_before: datetime
    _not_after: datetime

    def __init__(self, certificate: x509.Certificate, *, source: str = "certificate") -> None:
        """Wrap `certificate`; prefer `from_der` / `from_x509`.

        Raises:
            CertificateFormatError: an extension or a name of the certificate is malformed.
        """
        try:
            der = certificate.public_bytes(serialization.Encoding.DER)
            subject_key_id: bytes | None = None
            authority_key_id: bytes | None = None
            is_ca = False
            path_length: int | None = None
            key_cert_sign: bool | None = None
            is_code_signing = False
            for extension in certificate.extensions:
                value = extension.value
                if isinstance(value, x509.BasicConstraints):
                    is_ca = value.ca
                    path_length = value.path_length
                elif isinstance(value, x509.KeyUsage):
                    key_cert_sign = value.key_cert_sign
                elif isinstance(value, x509.ExtendedKeyUsage):
                    is_code_signing = ExtendedKeyUsageOID.CODE_SIGNING in value
                elif isinstance(value, x509.SubjectKeyIdentifier):
                    subject_key_id = value.digest
                elif isinstance(value, x509.AuthorityKeyIdentifier):
                    authority_key_id = value.key_identifier
            cn = _common_name(certificate.subject)
            issuer_cn = _common_name(certificate.issuer)
            not_before = certificate.not_valid_before_utc
            not_after = certificate.not_valid_after_utc
        except (ValueError, TypeError, x509.DuplicateExtension, x509.InvalidVersion) as e:
            raise CertificateFormatError(f"{source}: malformed certificate: {e}") from e
        setattr_ = object.__setattr__
        setattr_(self, "_x509", certificate)
        setattr_(self, "_der", der)
        setattr_(self, "_fingerprint", fingerprint_of(der))
        setattr_(self, "_cn", cn)
        setattr_(self, "_issuer_cn", issuer_cn)
        setattr_(self, "_subject_key_id", subject_key_id)
        setattr_(self, "_authority_key_id", authority_key_id)
        setattr_(self, "_is_ca", is_ca)
        setattr_(self, "_path_length", path_length)
        setattr_(self, "_key_cert_sign", key_cert_sign)
        setattr_(self, "_is_code_signing", is_code_signing)
        setattr_(self, "_not_before", not_before)
        setattr_(self, "_not_after", not_after)

    @classmethod
    def from_der(cls, der: bytes, *, source: str = "certificate") -> Certificate:
        """Parse one DER-encoded certificate.

        Raises:
            CertificateFormatError: `der` is not a certificate (the message names `source`).
        """
        try:
            certificate = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion) as e:
            raise CertificateFormatError(f"{source}: not a DER certificate: {e}") from e
        return cls(certificate, source=source)

    @classmethod
    def from_x509(cls, certificate: x509.Certificate) -> Certificate:
        """Wrap a `cryptography` certificate.

        Raises:
            CertificateFormatError: an extension or a name of the certificate is malformed.
        """
        return cls(certificate)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Certificate is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Certificate is immutable (cannot delete {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Certificate):
            return NotImplemented
        return self._der == other._der

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return f"<Certificate {self._cn!r} {_short(self._fingerprint)}>"

    @property
    def x509(self) -> x509.Certificate:
        """The wrapped `cryptography` certificate."""
        return self._x509

    @property
    def der(self) -> bytes:
        """The DER encoding."""
        return self._der

    @property
    def pem(self) -> bytes:
        """The PEM text, as bytes ending with a newline."""
        return self._x509.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the DER encoding."""
        return self._fingerprint

    @property
    def cn(self) -> str:
        """The subject commonName, or "" when there is none."""
        return self._cn

    @property
    def issuer_cn(self) -> str:
        """The issuer commonName, or "" when there is none."""
        return self._issuer_cn

    @property
    def subject_key_id(self) -> bytes | None:
        """The subjectKeyIdentifier, if the certificate has one."""
        return self._subject_key_id

    @property
    def authority_key_id(self) -> bytes | None:
        """The keyIdentifier of the authorityKeyIdentifier, if the certificate has one."""
        return self._authority_key_id

    @property
    def is_ca(self) -> bool:
        """True when basicConstraints says CA:TRUE."""
        return self._is_ca

    @property
    def path_length(self) -> int | None:
        """basicConstraints pathLenConstraint: how many intermediates may follow a CA."""
        return self._path_length

    @property
    def can_sign_certificates(self) -> bool:
        """True for a CA whose keyUsage, if present, allows keyCertSign.

        WAPT's leaves carry keyCertSign too, with CA:FALSE: basicConstraints decides first.
        """
        return self._is_ca and self._key_cert_sign is not False

    @property
    def is_code_signing(self) -> bool:
        """True when extendedKeyUsage holds codeSigning (1.3.6.1.5.5.7.3.3), spec §2.4."""
        return self._is_code_signing

    @property
    def not_before(self) -> datetime:
        """Start of validity, timezone-aware UTC."""
        return self._not_before

    @property
    def not_after(self) -> datetime:
        """End of validity (inclusive), timezone-aware UTC."""
        return self._not_after

    def verify(
        self,
        data: bytes,
        signature: bytes,
        *,
        what: str,
        error: type[SignatureError] = SignatureError,
    ) -> None:
        """Check that `signature` is this certificate's RSA PKCS#1 v1.5 / SHA-256 signature
        of `data`.

        `what` names the signed thing in the message (for instance the package file and member);
        `error` lets package code raise a precise subclass such as `ManifestSignatureError`.

        Raises:
            SignatureError: (or `error`) the signature does not verify, or the key is not RSA.
        """
        key = self._public_key_or_none()
        if not isinstance(key, rsa.RSAPublicKey):
            raise error(
                f"{what}: certificate {self._cn} ({_short(self._fingerprint)}) "
                "has no RSA key, WAPT signatures are RSA"
            )
        try:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise error(
                f"{what}: signature does not verify with certificate {self._cn} "
                f"({_short(self._fingerprint)})"
            ) from None

    def _public_key_or_none(self) -> CertificatePublicKeyTypes | None:
        try:
            return self._x509.public_key()
        except (ValueError, UnsupportedAlgorithm):
            return None  # a key this library cannot read signs nothing

    def issued(self, child: Certificate) -> bool:
        """Tell whether this certificate's key made `child`'s signature.

        Only the signature is checked (RSA PKCS#1 v1.5 or PSS, ECDSA, EdDSA, with the child's own
        hash algorithm); names, key identifiers and CA flags are the caller's business. Signatures
        made with MD5 or SHA-1 are refused: they can be forged. Never raises.
        """
        key = self._public_key_or_none()
        certificate = child._x509
        try:
            hash_algorithm = certificate.signature_hash_algorithm
            parameters = certificate.signature_algorithm_parameters
            if isinstance(hash_algorithm, _WEAK_HASHES):
                return False
            if isinstance(key, rsa.RSAPublicKey):
                if hash_algorithm is None or not isinstance(
                    parameters, padding.PKCS1v15 | padding.PSS
                ):
                    return False
                key.verify(
                    certificate.signature,
                    certificate.tbs_certificate_bytes,
                    parameters,
                    hash_algorithm,
                )
            elif isinstance(key, ec.EllipticCurvePublicKey):
                if not isinstance(parameters, ec.ECDSA):
                    return False
                key.verify(certificate.signature, certificate.tbs_certificate_bytes, parameters)
            elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                key.verify(certificate.signature, certificate.tbs_certificate_bytes)
            else:
                return False
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            return False
        return True


def load_certificates(pem: bytes, *, source: str) -> list[Certificate]:
    """Parse every PEM certificate in `pem`, in order. Text outside the PEM blocks is ignored.

    Raises:
        CertificateFormatError: no certificate at all, a truncated block, or a block that is not
            a certificate; the message names `source`.
    """
    begins = pem.count(_PEM_BEGIN)
    if begins == 0:
        raise CertificateFormatError(f"{source}: no PEM certificate found")
    blocks = _PEM_BLOCK.findall(pem)
    if len(blocks) != begins or any(block.count(_PEM_BEGIN) != 1 for block in blocks):
        raise CertificateFormatError(f"{source}: truncated PEM certificate block")
    certificates: list[Certificate] = []
    for number, block in enumerate(blocks, start=1):
        where = f"{source}: certificate #{number}"
        try:
            certificate = x509.load_pem_x509_certificate(block)
        except (ValueError, x509.InvalidVersion) as e:
            raise CertificateFormatError(f"{where}: not a valid certificate") from e
        certificates.append(Certificate(certificate, source=where))
    return certificates


def load_certificate_file(path: Path) -> list[Certificate]:
    """Read every PEM certificate of the file at `path`, in order.

    Raises:
        TrustError: the file cannot be read.
        CertificateFormatError: it holds no certificate, or garbage.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrustError(f"{path}: cannot read certificate file: {e.strerror or e}") from e
    return load_certificates(data, source=str(path))


def save_certificate(certs: Sequence[Certificate], path: Path, *, overwrite: bool = False) -> None:
    """Write `certs` as PEM to `path`, atomically (mode 0644).

    Raises:
        TrustError: `certs` is empty, `path` exists and `overwrite` is false, or the write fails.
    """
    if not certs:
        raise TrustError(f"{path}: no certificate to write")
    data = b"".join(cert.pem for cert in certs)
    _write_atomically(path, data, mode=0o644, overwrite=overwrite, error=TrustError)


# --- the trust store -----------------------------------------------------------------------


class _IssuerIndex:
    """Certificates looked up as possible issuers: by key identifier, then by subject name."""

    __slots__ = ("_by_key_id", "_by_subject")

    def __init__(self, certificates: Iterable[Certificate]) -> None:
        self._by_key_id: dict[bytes, list[Certificate]] = {}
        self._by_subject: dict[x509.Name, list[Certificate]] = {}
        for cert in certificates:
            if cert.subject_key_id is not None:
                self._by_key_id.setdefault(cert.subject_key_id, []).append(cert)
            self._by_subject.setdefault(cert.x509.subject, []).append(cert)

    def issuers_of(self, child: Certificate) -> list[Certificate]:
        """Candidates whose subjectKeyIdentifier is the child's authorityKeyIdentifier, or else
        whose subject is the child's issuer (spec §2.3). Their signatures are not checked here."""
        if child.authority_key_id is not None:
            by_key_id = self._by_key_id.get(child.authority_key_id)
            if by_key_id:
                return list(by_key_id)
        return list(self._by_subject.get(child.x509.issuer, ()))


class _PathSearch:
    """A depth-first search for trust paths from a leaf to a store certificate.

    Bounded three ways: a certificate never appears twice on a path (loops), a path holds at most
    `MAX_CHAIN_DEPTH` certificates, and at most `_MAX_SEARCH_STEPS` issuer candidates are examined,
    so a hostile `certificate.crt` cannot make the search explode.
    """

    def __init__(self, store: _IssuerIndex, chain: _IssuerIndex) -> None:
        self._store = store
        self._chain = chain
        self._steps = 0
        self._issued: dict[tuple[str, str], bool] = {}
        self.paths: list[tuple[Certificate, ...]] = []
        self.reasons: list[str] = []

    def _reason(self, text: str) -> None:
        if text not in self.reasons:
            self.reasons.append(text)

    def _signed(self, issuer: Certificate, child: Certificate) -> bool:
        key = (issuer.fingerprint, child.fingerprint)
        known = self._issued.get(key)
        if known is None:
            known = self._issued[key] = issuer.issued(child)
        return known

    def walk(self, path: list[Certificate]) -> None:
        node = path[-1]
        if len(path) >= MAX_CHAIN_DEPTH:
            self._reason(f"trust path would be longer than {MAX_CHAIN_DEPTH} certificates")
            return
        candidates = [(cert, True) for cert in self._store.issuers_of(node)]
        candidates += [(cert, False) for cert in self._chain.issuers_of(node)]
        if not candidates:
            self._reason(f'no issuer "{node.issuer_cn}" of "{node.cn}" in the trust store')
            return
        on_path = {cert.fingerprint for cert in path}
        for issuer, in_store in candidates:
            if len(self.paths) >= _MAX_PATHS:
                return
            if issuer.fingerprint == node.fingerprint:
                self._reason(f'"{node.cn}" is self-signed and not in the trust store')
                continue
            if issuer.fingerprint in on_path:
                self._reason(f'certificate loop at "{issuer.cn}"')
                continue
            if self._steps >= _MAX_SEARCH_STEPS:
                self._reason(f"gave up after examining {_MAX_SEARCH_STEPS} issuer candidates")
                return
            self._steps += 1
            if not issuer.can_sign_certificates:
                self._reason(f'"{issuer.cn}" is not a CA allowed to sign certificates')
                continue
            intermediates_below = len(path) - 1
            if issuer.path_length is not None and intermediates_below > issuer.path_length:
                self._reason(f'"{issuer.cn}" allows at most {issuer.path_length} intermediates')
                continue
            if not self._signed(issuer, node):
                self._reason(f'signature of "{node.cn}" does not verify with "{issuer.cn}"')
                continue
            if in_store:
                self.paths.append((*path, issuer))
            else:
                self.walk([*path, issuer])


def _validity_problem(path: Sequence[Certificate], at: datetime) -> TrustError | None:
    for cert in path:
        if at < cert.not_before:
            return CertificateNotYetValidError(
                f'certificate "{cert.cn}" ({_short(cert.fingerprint)}) is not valid before '
                f"{_utc_text(cert.not_before)} (checked at {_utc_text(at)})"
            )
        if at > cert.not_after:
            return CertificateExpiredError(
                f'certificate "{cert.cn}" ({_short(cert.fingerprint)}) expired on '
                f"{_utc_text(cert.not_after)} (checked at {_utc_text(at)})"
            )
    return None


def _chain_names(chain: Sequence[Certificate]) -> str:
    return ",".join(f'"{cert.cn}"' for cert in chain)


class TrustStore:
    """The certificates an agent or admin trusts: pinned leaves and CAs. Local configuration,
    never taken from a package.

    The store is immutable. `check_chain` remembers, per chain, the trust paths it found (or why
    there is none); validity dates are checked on every call, so the memory stays correct
    whatever `at` is. It is safe to share between threads.
    """

    def __init__(self, certificates: Iterable[Certificate]) -> None:
        unique: dict[str, Certificate] = {}
        for cert in certificates:
            unique.setdefault(cert.fingerprint, cert)
        self._by_fingerprint = unique
        self._certificates = tuple(unique.values())
        self._issuers = _IssuerIndex(self._certificates)
        self._paths: OrderedDict[tuple[str, ...], tuple[tuple[Certificate, ...], ...] | str] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: Path) -> TrustStore:
        """Load a PEM file, or every `*.crt` / `*.pem` file of a directory (not recursive).

        Each file may hold several certificates. Every file is read before failing, and the error
        names each bad file.

        Raises:
            TrustError: `path` does not exist, or a file or the directory cannot be read.
            CertificateFormatError: a file holds no certificate, or garbage.
        """
        if path.is_dir():
            try:
                files = sorted(
                    entry
                    for entry in path.iterdir()
                    if entry.suffix.lower() in (".crt", ".pem") and entry.is_file()
                )
            except OSError as e:
                raise TrustError(f"{path}: cannot list directory: {e.strerror or e}") from e
        elif path.is_file():
            files = [path]
        else:
            raise TrustError(f"{path}: no such certificate file or directory")
        certificates: list[Certificate] = []
        problems: list[TrustError] = []
        for file in files:
            try:
                certificates.extend(load_certificate_file(file))
            except TrustError as e:
                problems.append(e)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            joined = "; ".join(str(problem) for problem in problems)
            raise CertificateFormatError(f"{path}: {len(problems)} bad files: {joined}")
        return cls(certificates)

    @property
    def certificates(self) -> tuple[Certificate, ...]:
        """The trusted certificates, without duplicates, in the order given."""
        return self._certificates

    def __len__(self) -> int:
        return len(self._certificates)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Certificate):
            return item.fingerprint in self._by_fingerprint
        if isinstance(item, str):
            return self.find(item) is not None
        return False

    def __repr__(self) -> str:
        return f"<TrustStore of {len(self)} certificates>"

    def find(self, fingerprint: str) -> Certificate | None:
        """Return the trusted certificate with this SHA-256 fingerprint (hex, any case, colons
        allowed), or None."""
        return self._by_fingerprint.get(fingerprint.replace(":", "").lower())

    def check_chain(
        self, chain: Sequence[Certificate], *, at: datetime | None = None
    ) -> list[Certificate]:
        """Decide whether the signer `chain` (leaf first, as in `WAPT/certificate.crt`) is trusted.

        WAPT's `check_certificates_chain` (spec §2.3), stricter. The chain is trusted when:

        1. its leaf is pinned (its fingerprint is in the store); or
        2. walking up from the leaf, an issuer is found in the store (subjectKeyIdentifier equal
           to the authorityKeyIdentifier, or else subject equal to the issuer name); or
        3. intermediates missing from the store are taken from `chain` itself, matched the same
           way, until a store certificate is reached.

        Every issuer on the path, the store's included, must be a CA allowed to sign certificates
        (and respect its pathLenConstraint), and each signature must verify with its key.
        Certificate signatures made with MD5 or SHA-1 are refused. Every certificate on the path,
        the trust anchor included, must be within its validity dates at `at` (default: now).

        Returns the trust path, leaf first, anchor (a store certificate) last.

        Raises:
            UntrustedCertificateError: no path to the store; the message names the chain's CNs and
                why each way failed.
            CertificateExpiredError: a certificate on the path is past its notAfter.
            CertificateNotYetValidError: a certificate on the path is before its notBefore.
            ValueError: `at` is a naive datetime.
        """
        if at is None:
            at = datetime.now(UTC)
        elif at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("check_chain: `at` must be a timezone-aware datetime")
        key = tuple(cert.fingerprint for cert in chain)
        with self._lock:
            found = self._paths.get(key)
            if found is not None:
                self._paths.move_to_end(key)
        if found is None:
            found = self._search(chain)
            with self._lock:
                self._paths[key] = found
                if len(self._paths) > _CACHE_SIZE:
                    self._paths.popitem(last=False)
        if isinstance(found, str):
            raise UntrustedCertificateError(found)
        problems: list[TrustError] = []
        for path in found:  # never empty
            problem = _validity_problem(path, at)
            if problem is None:
                return list(path)
            problems.append(problem)
        raise problems[0]

    def _search(self, chain: Sequence[Certificate]) -> tuple[tuple[Certificate, ...], ...] | str:
        """Every trust path for `chain` (at most `_MAX_PATHS`), or the message saying why none."""
        if not chain:
            return "None of certificates () are trusted: the certificate chain is empty"
        untrusted = f"None of certificates ({_chain_names(chain)}) are trusted"
        if len(chain) > MAX_CHAIN_DEPTH:
            return (
                f"{untrusted}: a chain of {len(chain)} certificates "
                f"is longer than {MAX_CHAIN_DEPTH}"
            )
        leaf = chain[0]
        pinned = self._by_fingerprint.get(leaf.fingerprint)
        if pinned is not None:
            # The leaf is on every path; alone, it is the shortest one.
            return ((pinned,),)
        from_chain = _IssuerIndex(
            {cert.fingerprint: cert for cert in chain if cert not in self}.values()
        )
        search = _PathSearch(self._issuers, from_chain)
        search.walk([leaf])
        if search.paths:
            return tuple(search.paths)
        return f"{untrusted}: {'; '.join(search.reasons)}"


# --- signing -------------------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """What package signing needs: a leaf certificate, its chain, and a way to sign bytes.

    An implementation may keep its key in memory (`KeySigner`), on a token or behind a service.
    """

    @property
    def certificate(self) -> Certificate:
        """The signer's leaf certificate (names `signer` and `signer_fingerprint`)."""
        ...

    @property
    def chain(self) -> tuple[Certificate, ...]:
        """Leaf first: what goes into `WAPT/certificate.crt`."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Return the RSA PKCS#1 v1.5 / SHA-256 signature of `data`."""
        ...


def _same_public_key(private_key: rsa.RSAPrivateKey, cert: Certificate) -> bool:
    public_key = cert._public_key_or_none()
    return (
        isinstance(public_key, rsa.RSAPublicKey)
        and public_key.public_numbers() == private_key.public_key().public_numbers()
    )


class KeySigner:
    """A `Signer` backed by an RSA private key held in memory. Its `repr` never shows the key."""

    __slots__ = ("_chain", "_private_key")

    def __init__(self, private_key: rsa.RSAPrivateKey, chain: Sequence[Certificate]) -> None:
        """Pair `private_key` with `chain` (leaf first).

        Raises:
            TrustError: `chain` is empty, the key is not RSA, or it does not match `chain[0]`.
        """
        if not chain:
            raise TrustError("a signer needs at least its own certificate")
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise TrustError("a signer key must be an RSA private key")
        leaf = chain[0]
        if not _same_public_key(private_key, leaf):
            raise TrustError(
                f"the private key does not match certificate {leaf.cn} ({_short(leaf.fingerprint)})"
            )
        self._private_key = private_key
        self._chain = tuple(chain)

    @classmethod
    def from_files(cls, key_path: Path, cert_path: Path, passphrase: bytes | None) -> KeySigner:
        """Load a PEM private key and a PEM certificate file (leaf first, may hold the chain).

        Raises:
            KeyFileError: the key cannot be read (see `load_private_key`).
            CertificateFormatError: the certificate file holds no certificate, or garbage.
            TrustError: a file cannot be read, or the key does not match the first certificate.
        """
        private_key = load_private_key(key_path, passphrase)
        chain = load_certificate_file(cert_path)
        try:
            return cls(private_key, chain)
        except TrustError as e:
            raise TrustError(f"{key_path}, {cert_path}: {e}") from e

    @property
    def certificate(self) -> Certificate:
        """The leaf certificate."""
        return self._chain[0]

    @property
    def chain(self) -> tuple[Certificate, ...]:
        """Leaf first: what goes into `WAPT/certificate.crt`."""
        return self._chain

    def sign(self, data: bytes) -> bytes:
        """Return the RSA PKCS#1 v1.5 / SHA-256 signature of `data`."""
        return self._private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        leaf = self._chain[0]
        return f"<KeySigner {leaf.cn!r} {_short(leaf.fingerprint)}>"


# --- private key files ---------------------------------------------------------------------


def load_private_key(path: Path, passphrase: bytes | None) -> rsa.RSAPrivateKey:
    """Read an RSA private key from a PEM file: PKCS#8 or traditional (`BEGIN RSA PRIVATE KEY`),
    encrypted or not. A passphrase given for an unencrypted key is ignored.

    Raises:
        KeyFileError: the file cannot be read, the key is encrypted and `passphrase` is None, the
            passphrase is wrong, the file is not a PEM private key, or the key is not RSA. The
            message names the file, never the passphrase.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read private key: {e.strerror or e}") from e
    encrypted = any(marker in data for marker in _ENCRYPTED_KEY_MARKERS)
    if encrypted and passphrase is None:
        raise KeyFileError(f"{path}: the private key is encrypted and no passphrase was given")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path}: unsupported private key algorithm") from None
    except (ValueError, TypeError):
        # `from None`: the foreign error adds nothing a user needs, and stays clear of secrets.
        if encrypted:
            raise KeyFileError(f"{path}: wrong passphrase, or damaged private key") from None
        raise KeyFileError(f"{path}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise KeyFileError(f"{path}: not an RSA private key ({kind or 'other'} key)")
    return key


def save_private_key(
    key: rsa.RSAPrivateKey,
    path: Path,
    passphrase: bytes | None,
    *,
    unencrypted_ok: bool = False,
    overwrite: bool = False,
) -> None:
    """Write `key` as PKCS#8 PEM encrypted with `passphrase`, atomically, with mode 0600.

    Raises:
        KeyFileError: `passphrase` is None and `unencrypted_ok` is false, the passphrase is
            empty, `path` exists and `overwrite` is false, or the write fails.
    """
    encryption: serialization.KeySerializationEncryption
    if passphrase is None:
        if not unencrypted_ok:
            raise KeyFileError(
                f"{path}: refusing to write an unencrypted private key without unencrypted_ok=True"
            )
        encryption = serialization.NoEncryption()
    elif not passphrase:
        raise KeyFileError(f"{path}: the passphrase is empty")
    else:
        encryption = serialization.BestAvailableEncryption(passphrase)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_atomically(path, data, mode=0o600, overwrite=overwrite, error=KeyFileError)


def _write_atomically(
    path: Path, data: bytes, *, mode: int, overwrite: bool, error: type[TrustError]
) -> None:
    """`fsutil.write_atomic`, its failures reported as `error` naming the file."""
    try:
        write_atomic(path, data, mode=mode, overwrite=overwrite)
    except FileExistsError as e:
        raise error(f"{path}: already exists, refusing to overwrite it") from e
    except OSError as e:
        raise error(f"{path}: cannot write: {e.strerror or e}") from e


# --- issuing certificates ------------------------------------------------------------------


def _subject(common_name: str, organization: str, country: str) -> x509.Name:
    if not common_name:
        raise ValueError("a certificate needs a common name")
    if country and len(country) != 2:
        raise ValueError(f"country must be a two-letter code, not {country!r}")
    attributes = []
    if country:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _new_key(key_size: int) -> rsa.RSAPrivateKey:
    if key_size < _MIN_KEY_SIZE:
        raise ValueError(f"RSA keys must have at least {_MIN_KEY_SIZE} bits, not {key_size}")
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _start(now: datetime | None, days: int) -> datetime:
    if days < 1:
        raise ValueError(f"validity must be at least one day, not {days}")
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    return now.astimezone(UTC)


def new_ca(
    common_name: str,
    *,
    organization: str = "",
    country: str = "",
    days: int = 3650,
    key_size: int = 2048,
    now: datetime | None = None,
) -> tuple[rsa.RSAPrivateKey, Certificate]:
    """Make a new RSA key and a self-signed CA certificate in WAPT's profile (pki/README.txt).

    basicConstraints CA:TRUE (critical), keyUsage digitalSignature, keyCertSign, cRLSign
    (critical), subjectKeyIdentifier; subject C, O, CN (empty ones left out); random serial;
    SHA-256. Valid from ten minutes before `now` (default: the current time, clocks drift) to
    `now + days`.

    Raises:
        ValueError: empty common name, country not two letters, `days` < 1, `key_size` < 2048,
            or a naive `now`.
    """
    subject = _subject(common_name, organization, country)
    start = _start(now, days)
    key = _new_key(key_size)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return key, Certificate(builder.sign(key, hashes.SHA256()))


def new_signer(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: Certificate,
    common_name: str,
    *,
    code_signing: bool,
    organization: str = "",
    country: str = "",
    days: int = 1095,
    key_size: int = 2048,
    now: datetime | None = None,
) -> tuple[rsa.RSAPrivateKey, Certificate]:
    """Make a new RSA key and a leaf certificate issued by `ca_cert`, in WAPT's profile.

    basicConstraints CA:FALSE (critical), keyUsage digitalSignature and nonRepudiation
    (critical), subjectKeyIdentifier, authorityKeyIdentifier = the CA's; with `code_signing`,
    extendedKeyUsage codeSigning (critical): the "packager" who may sign packages with
    `setup.py`. Without it, no EKU: a "deployer" for control-only packages (spec §2.4).
    Valid from ten minutes before `now` to `now + days`, never beyond the CA's validity.

    Raises:
        TrustError: `ca_key` does not match `ca_cert`, `ca_cert` is not a CA allowed to sign
            certificates, or it is not valid at `now`.
        ValueError: as for `new_ca`.
    """
    subject = _subject(common_name, organization, country)
    start = _start(now, days)
    if not ca_cert.can_sign_certificates:
        raise TrustError(f"{ca_cert.cn} is not a CA allowed to sign certificates")
    if not _same_public_key(ca_key, ca_cert):
        raise TrustError(
            f"the CA private key does not match certificate {ca_cert.cn} "
            f"({_short(ca_cert.fingerprint)})"
        )
    problem = _validity_problem([ca_cert], start)
    if problem is not None:
        raise TrustError(f"cannot issue a certificate: {problem}")
    key = _new_key(key_size)
    public_key = key.public_key()
    if ca_cert.subject_key_id is not None:
        authority_key_id = x509.AuthorityKeyIdentifier(
            key_identifier=ca_cert.subject_key_id,
            authority_cert_issuer=None,
            authority_cert_serial_number=None,
        )
    else:
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.x509.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(start - _CLOCK_SKEW, ca_cert.not_before))
        .not_valid_after(min(start + timedelta(days=days), ca_cert.not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_id, critical=False)
    )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=True
        )
    return key, Certificate(builder.sign(ca_key, hashes.SHA256()))
