"""The site's keys: who signs what, where the files are, and what agents must trust.

A site server signs with three keys, each for one job (wapt-format.md §2.4, ADR 9):

- `production`: issued by the site CA, codeSigning; signs packages promoted to PROD; trusted
  by every machine.
- `developer`: issued by the developer CA, codeSigning; signs packages in qualification
  (PREPROD); trusted by qualification machines only.
- `deployer`: issued by the site CA, no codeSigning; signs group, host and selfservice
  packages; trusted by every machine.

The developer CA is a root of its own, not issued by the site CA: a production machine, which
trusts only the site CA, refuses whatever a developer key signs. The layout in `keys_dir`:

    site-ca.pem, site-ca.crt            the site CA (its key only issues certificates)
    developer-ca.pem, developer-ca.crt  the developer CA
    production.pem, production.crt      each signer: key, then its chain (leaf, CA)
    developer.pem, developer.crt
    deployer.pem, deployer.crt
    trusted/site-ca.crt                 what uploads must chain to (`trusted_certs`); an admin
    trusted/developer-ca.crt            may add the académie's CA here
    agents/production-machines.crt      the trust bundle for production machines: site CA
    agents/qualification-machines.crt   for qualification machines: site CA + developer CA

Every private key is PKCS#8, encrypted with the site passphrase (`key_passphrase_file`), mode
0600. Nothing here logs a key or a passphrase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from wapt.errors import KeyFileError, TrustError
from wapt.trust import (
    Certificate,
    KeySigner,
    TrustStore,
    load_certificate_file,
    load_private_key,
    new_ca,
    new_signer,
    save_certificate,
    save_private_key,
)

__all__ = [
    "ROLES",
    "KeySettings",
    "Role",
    "SiteKeyError",
    "SiteKeys",
    "init_site_keys",
    "load_signer",
    "read_passphrase",
    "upload_trust",
]

Role = Literal["production", "developer", "deployer"]
ROLES: Final[tuple[Role, ...]] = ("production", "developer", "deployer")

SITE_CA: Final = "site-ca"
DEVELOPER_CA: Final = "developer-ca"
TRUSTED_DIR: Final = "trusted"
AGENTS_DIR: Final = "agents"
PRODUCTION_BUNDLE: Final = "production-machines.crt"
QUALIFICATION_BUNDLE: Final = "qualification-machines.crt"

#: role -> (issuing CA stem, codeSigning, common name suffix)
_SIGNERS: Final[dict[Role, tuple[str, bool, str]]] = {
    "production": (SITE_CA, True, "production"),
    "developer": (DEVELOPER_CA, True, "developer"),
    "deployer": (SITE_CA, False, "deployer"),
}


class SiteKeyError(Exception):
    """The site's keys cannot be made or used; the message names the file and the reason."""


class KeySettings(Protocol):
    """The part of `SiteSettings` that the keys need."""

    @property
    def keys_dir(self) -> Path: ...

    @property
    def key_passphrase_file(self) -> Path | None: ...

    @property
    def trusted_certs(self) -> Path: ...


@dataclass(frozen=True)
class SiteKeys:
    """The key files of a site, and what `init_site_keys` made of them."""

    keys_dir: Path
    site_ca: Certificate
    developer_ca: Certificate
    #: role -> leaf certificate
    signers: dict[Role, Certificate]
    #: file names created by this call (empty when everything was already there)
    created: tuple[str, ...]

    @property
    def production_bundle(self) -> Path:
        """The certificates a production machine trusts (its agent's `trusted_certs`)."""
        return self.keys_dir / AGENTS_DIR / PRODUCTION_BUNDLE

    @property
    def qualification_bundle(self) -> Path:
        """The certificates a qualification machine trusts."""
        return self.keys_dir / AGENTS_DIR / QUALIFICATION_BUNDLE


def _key_pair(keys_dir: Path, stem: str) -> tuple[Path, Path]:
    return keys_dir / f"{stem}.pem", keys_dir / f"{stem}.crt"


def _existing(keys_dir: Path, stem: str) -> bool:
    """Whether the pair `stem` exists; a half pair is an error, never completed silently."""
    key, cert = _key_pair(keys_dir, stem)
    if key.exists() != cert.exists():
        present, missing = (key, cert) if key.exists() else (cert, key)
        raise SiteKeyError(
            f"{present} exists but {missing} does not: restore the missing file, or move "
            f"{present} away to make a new {stem} key"
        )
    return key.exists()


def _load_ca(keys_dir: Path, stem: str, passphrase: bytes) -> tuple[rsa.RSAPrivateKey, Certificate]:
    key_path, cert_path = _key_pair(keys_dir, stem)
    try:
        key = load_private_key(key_path, passphrase)
        cert = load_certificate_file(cert_path)[0]
    except TrustError as e:
        raise SiteKeyError(str(e)) from e
    try:
        KeySigner(key, [cert])  # the key must match its certificate, as a signer's does
    except TrustError as e:
        raise SiteKeyError(f"{key_path}, {cert_path}: {e}") from e
    return key, cert


def _save(
    keys_dir: Path, stem: str, key: rsa.RSAPrivateKey, chain: list[Certificate], passphrase: bytes
) -> None:
    key_path, cert_path = _key_pair(keys_dir, stem)
    try:
        save_private_key(key, key_path, passphrase)
        save_certificate(chain, cert_path)
    except TrustError as e:
        key_path.unlink(missing_ok=True)
        raise SiteKeyError(str(e)) from e


def _write_bundle(path: Path, certs: list[Certificate], created: list[str], root: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_certificate(certs, path)
    except TrustError as e:
        raise SiteKeyError(str(e)) from e
    created.append(path.relative_to(root).as_posix())


def init_site_keys(
    keys_dir: Path, passphrase: bytes, *, site_name: str = "site", organization: str = ""
) -> SiteKeys:
    """Make whatever is missing of the site's key layout in `keys_dir`; never overwrite.

    Existing keys are loaded with `passphrase` and reused (a signer missing from an older
    layout is issued by the existing CA); files already present are left as they are.

    Raises:
        SiteKeyError: the passphrase is empty or wrong, a key exists without its certificate
            (or the reverse), a file cannot be read or written.
    """
    if not passphrase:
        raise SiteKeyError("the site key passphrase is empty: keys are always encrypted")
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    created: list[str] = []
    cas: dict[str, tuple[rsa.RSAPrivateKey, Certificate]] = {}
    for stem, title in ((SITE_CA, "CA"), (DEVELOPER_CA, "developer CA")):
        if _existing(keys_dir, stem):
            cas[stem] = _load_ca(keys_dir, stem, passphrase)
            continue
        key, cert = new_ca(f"{site_name} {title}", organization=organization)
        _save(keys_dir, stem, key, [cert], passphrase)
        cas[stem] = (key, cert)
        created += [f"{stem}.pem", f"{stem}.crt"]
    signers: dict[Role, Certificate] = {}
    for role, (ca_stem, code_signing, suffix) in _SIGNERS.items():
        if _existing(keys_dir, role):
            signers[role] = load_signer_files(keys_dir, role, passphrase).certificate
            continue
        ca_key, ca_cert = cas[ca_stem]
        try:
            key, cert = new_signer(
                ca_key,
                ca_cert,
                f"{site_name} {suffix}",
                code_signing=code_signing,
                organization=organization,
            )
        except TrustError as e:
            raise SiteKeyError(f"{keys_dir / (ca_stem + '.crt')}: {e}") from e
        _save(keys_dir, role, key, [cert, ca_cert], passphrase)
        signers[role] = cert
        created += [f"{role}.pem", f"{role}.crt"]
    site_ca, developer_ca = cas[SITE_CA][1], cas[DEVELOPER_CA][1]
    for stem, cert in ((SITE_CA, site_ca), (DEVELOPER_CA, developer_ca)):
        _write_bundle(keys_dir / TRUSTED_DIR / f"{stem}.crt", [cert], created, keys_dir)
    agents = keys_dir / AGENTS_DIR
    _write_bundle(agents / PRODUCTION_BUNDLE, [site_ca], created, keys_dir)
    _write_bundle(agents / QUALIFICATION_BUNDLE, [site_ca, developer_ca], created, keys_dir)
    return SiteKeys(keys_dir, site_ca, developer_ca, signers, tuple(created))


def read_passphrase(settings: KeySettings) -> bytes:
    """The site key passphrase, from `key_passphrase_file` (its trailing line break dropped).

    Raises:
        SiteKeyError: no file is configured, it cannot be read, or it is empty.
    """
    path = settings.key_passphrase_file
    if path is None:
        raise SiteKeyError(
            "no key_passphrase_file in the [site] settings: the site keys cannot be unlocked"
        )
    try:
        passphrase = path.read_bytes().rstrip(b"\r\n")
    except OSError as e:
        raise SiteKeyError(f"{path}: cannot read the key passphrase: {e.strerror or e}") from e
    if not passphrase:
        raise SiteKeyError(f"{path}: the key passphrase file is empty")
    return passphrase


def load_signer_files(keys_dir: Path, role: Role, passphrase: bytes) -> KeySigner:
    """The signer of `role` from `keys_dir`, unlocked with `passphrase`.

    Raises:
        SiteKeyError: unknown role, a missing file, a wrong passphrase, a key that does not
            match its certificate.
    """
    if role not in _SIGNERS:
        raise SiteKeyError(f"unknown signing role {role!r}: use one of {', '.join(ROLES)}")
    key, cert = _key_pair(keys_dir, role)
    if not key.exists() or not cert.exists():
        raise SiteKeyError(
            f"{keys_dir}: no {role} key ({key.name}, {cert.name}): run `comptoir site init`"
        )
    try:
        return KeySigner.from_files(key, cert, passphrase)
    except (KeyFileError, TrustError) as e:
        raise SiteKeyError(str(e)) from e


def load_signer(settings: KeySettings, role: Role, *, passphrase: bytes | None = None) -> KeySigner:
    """The site's signer for `role` (production, developer or deployer).

    `passphrase` defaults to the one in `settings.key_passphrase_file`.

    Raises:
        SiteKeyError: as `read_passphrase` and `load_signer_files`.
    """
    secret = passphrase if passphrase is not None else read_passphrase(settings)
    return load_signer_files(settings.keys_dir, role, secret)


def upload_trust(settings: KeySettings) -> TrustStore:
    """What an uploaded package must chain to: `trusted_certs`, plus the site's own two CAs
    (a package the site signed itself must verify again when it is re-signed).

    Raises:
        SiteKeyError: a certificate file cannot be read, or there is no certificate at all.
    """
    certs: list[Certificate] = []
    try:
        if settings.trusted_certs.exists():
            certs += TrustStore.from_path(settings.trusted_certs).certificates
        for stem in (SITE_CA, DEVELOPER_CA):
            path = settings.keys_dir / f"{stem}.crt"
            if path.exists():
                certs += load_certificate_file(path)
    except TrustError as e:
        raise SiteKeyError(str(e)) from e
    if not certs:
        raise SiteKeyError(
            f"{settings.trusted_certs}: no trusted certificate: run `comptoir site init` or put "
            "the CA certificates uploads must chain to there"
        )
    return TrustStore(certs)
