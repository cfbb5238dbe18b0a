"""Bundle signing keys: one key per TUF role (root, targets, snapshot, timestamp) for a site.

A keys directory holds `root.key`, `targets.key`, `snapshot.key` and `timestamp.key`
(PKCS#8 PEM, encrypted with the passphrase, mode 0600), `root.json` (the current root: the file
agents are configured with) and `N.root.json` for every root version, which writers copy onto
sticks so that agents configured with an older root can follow a rotation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# securesystemslib and python-tuf re-export these without `__all__` (mypy's strict mode).
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]
from tuf.api.serialization import DeserializationError

from wapt.bundle import ROLES, new_root, sign_root
from wapt.errors import BundleKeyError
from wapt.fsutil import write_atomic

ALGORITHMS = ("ed25519", "rsa")
ROOT_DAYS = 3650


def _key_file(directory: Path, role: str) -> Path:
    return directory / f"{role}.key"


def _generate(algorithm: str) -> PrivateKeyTypes:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise BundleKeyError(f"unknown key algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")


def _save_key(key: PrivateKeyTypes, path: Path, passphrase: bytes, *, overwrite: bool) -> None:
    if not passphrase:
        raise BundleKeyError(f"{path}: a passphrase is required to encrypt bundle keys")
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    try:
        write_atomic(path, data, mode=0o600, overwrite=overwrite)
    except FileExistsError as e:
        raise BundleKeyError(f"{path}: already exists, refusing to overwrite it") from e
    except OSError as e:
        raise BundleKeyError(f"{path}: cannot write: {e.strerror or e}") from e


def _load_key(path: Path, passphrase: bytes | None) -> PrivateKeyTypes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleKeyError(f"{path}: cannot read the key: {e.strerror or e}") from e
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise BundleKeyError(f"{path}: the key is encrypted and no passphrase was given") from None
    except ValueError:
        raise BundleKeyError(f"{path}: wrong passphrase, or not a PEM private key") from None


@dataclass(frozen=True)
class BundleKeys:
    """A site's bundle keys, unlocked: a signer per role and every root version."""

    directory: Path
    signers: Mapping[str, Signer]
    #: root version -> the signed root.json bytes of that version
    roots: Mapping[int, bytes]

    @property
    def root_version(self) -> int:
        return max(self.roots)

    @property
    def root(self) -> bytes:
        """The current root: what agents are configured with."""
        return self.roots[self.root_version]

    @property
    def first_root(self) -> bytes:
        return self.roots[min(self.roots)]


def _write_root(directory: Path, version: int, data: bytes) -> None:
    try:
        write_atomic(directory / f"{version}.root.json", data)
        write_atomic(directory / "root.json", data)
    except OSError as e:
        raise BundleKeyError(f"{directory}: cannot write root metadata: {e.strerror or e}") from e


def new_bundle_keys(
    directory: Path,
    passphrase: bytes,
    *,
    algorithm: str = "ed25519",
    root_days: int = ROOT_DAYS,
    now: datetime | None = None,
) -> BundleKeys:
    """Make a site's bundle keys in `directory` (created if needed) and its first root.

    Raises:
        BundleKeyError: unknown algorithm, empty passphrase, keys already there, or a write
            fails.
    """
    if not passphrase:
        raise BundleKeyError("a passphrase is required to encrypt bundle keys")
    directory.mkdir(parents=True, exist_ok=True)
    existing = [r for r in ROLES if _key_file(directory, r).exists()]
    if existing or (directory / "root.json").exists():
        raise BundleKeyError(f"{directory}: already holds bundle keys; refusing to replace them")
    keys = {role: _generate(algorithm) for role in ROLES}
    signers = {role: CryptoSigner(key) for role, key in keys.items()}
    start = now or datetime.now(UTC)
    root = new_root(
        {role: s.public_key for role, s in signers.items()},
        expires=start + timedelta(days=root_days),
    )
    data = sign_root(root, [signers["root"]])
    for role, key in keys.items():
        _save_key(key, _key_file(directory, role), passphrase, overwrite=False)
    _write_root(directory, 1, data)
    return BundleKeys(directory, signers, {1: data})


def _read_roots(directory: Path) -> dict[int, bytes]:
    roots: dict[int, bytes] = {}
    for path in directory.glob("*.root.json"):
        number = path.name.split(".", 1)[0]
        if number.isdigit():
            roots[int(number)] = path.read_bytes()
    if not roots:
        raise BundleKeyError(f"{directory}: no N.root.json: not a bundle keys directory")
    return roots


def _role_key(root: Root, role: str) -> Key:
    keyids = root.roles[role].keyids
    if len(keyids) != 1:
        raise BundleKeyError(f"root lists {len(keyids)} {role} keys; Comptoir uses one per role")
    return root.keys[keyids[0]]


def load_bundle_keys(directory: Path, passphrase: bytes | None) -> BundleKeys:
    """Unlock a keys directory made by `new_bundle_keys`.

    Raises:
        BundleKeyError: missing files, wrong passphrase, or a key that is not the one the
            current root lists for its role.
    """
    try:
        roots = _read_roots(directory)
    except OSError as e:
        raise BundleKeyError(f"{directory}: {e.strerror or e}") from e
    try:
        root: Root = Metadata[Root].from_bytes(roots[max(roots)]).signed
    except DeserializationError as e:
        raise BundleKeyError(f"{directory}/{max(roots)}.root.json: unreadable: {e}") from e
    signers: dict[str, Signer] = {}
    for role in ROLES:
        path = _key_file(directory, role)
        private = _load_key(path, passphrase)
        public = _role_key(root, role)
        mine = SSlibKey.from_crypto(private.public_key())
        if not isinstance(public, SSlibKey) or mine.keyval != public.keyval:
            raise BundleKeyError(
                f"{path}: not the {role} key of root version {root.version}: the keys directory "
                "is inconsistent"
            )
        signers[role] = CryptoSigner(private, public)
    return BundleKeys(directory, signers, roots)


def rotate_bundle_keys(
    keys: BundleKeys,
    passphrase: bytes,
    roles: Iterable[str] = (),
    *,
    algorithm: str = "ed25519",
    root_days: int = ROOT_DAYS,
    now: datetime | None = None,
) -> BundleKeys:
    """Issue root version N+1 with new keys for `roles` (none: only a new expiry), signed by the
    old and the new root keys so that agents configured with version N follow it.

    Raises:
        BundleKeyError: an unknown role, or a write fails.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise BundleKeyError(f"unknown role(s) {', '.join(sorted(unknown))}")
    current: Root = Metadata[Root].from_bytes(keys.root).signed
    new_keys = {role: _generate(algorithm) for role in roles}
    signers = dict(keys.signers)
    for role, key in new_keys.items():
        signers[role] = CryptoSigner(key)
    start = now or datetime.now(UTC)
    root = new_root(
        {role: s.public_key for role, s in signers.items()},
        expires=start + timedelta(days=root_days),
        version=current.version + 1,
    )
    sign_with = [keys.signers["root"]]
    if "root" in new_keys:
        sign_with.append(signers["root"])
    data = sign_root(root, sign_with)
    for role, key in new_keys.items():
        _save_key(key, _key_file(keys.directory, role), passphrase, overwrite=True)
    _write_root(keys.directory, root.signed.version, data)
    return BundleKeys(keys.directory, signers, {**keys.roots, root.signed.version: data})
