"""USB bundles: the on-stick format, its signed TUF metadata, and its verification.

A bundle is a directory (usually a stick's root) that a WAPT agent, Comptoir's
`DirectorySource` and Comptoir's bundle source can all read::

    Packages                      WAPT index of the bundle's packages        (a target)
    <package>_<version>_….wapt    the packages                               (targets)
    icons/<package_uuid>.png      their icons                                (targets)
    comptoir-bundle/
        root.json, N.root.json    the current root and every root version, for the chain
        timestamp.json            the commit point: pins N.snapshot.json
        N.snapshot.json           pins M.targets.json (TUF consistent snapshots)
        M.targets.json            every file with its length, sha256 and custom fields, and
                                  the bundle's catalog details
        staging/<sha256>          the writer's staging area, content-addressed
    reports/                      reserved for the agents' reports (never served, not verified)

The metadata are TUF metadata made with python-tuf's Metadata API, with consistent snapshots:
snapshot and targets are written under versioned names and `timestamp.json` is replaced last,
atomically, so the stick holds one committed state at any moment. Bytes of a committed target are
at its path, or, while a writer finishes moving new files into place, at
`comptoir-bundle/staging/<sha256>`; both are checked against the same signed hash.

Verification is strict and complete, and does no network I/O: the root of trust is the one the
caller configured, never the stick's own; root rotations on the stick are followed only when each
is signed by the previous root; every problem found is collected and raised once as a
`BundleVerificationError`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

# python-tuf and securesystemslib re-export these names without `__all__`, which mypy's strict
# mode reports; the names are their documented public API.
from securesystemslib.signer import Key, Signer  # type: ignore[attr-defined]
from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import (  # type: ignore[attr-defined]
    SPECIFICATION_VERSION,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    T,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError, SerializationError
from tuf.api.serialization.json import JSONSerializer

from wapt.archive import check_member_name
from wapt.control import PackageEntry, format_records, parse_records
from wapt.errors import (
    BundleError,
    BundleExpiredError,
    BundleExtraFileError,
    BundleFileError,
    BundleKeyError,
    BundleMetadataError,
    BundleMissingFileError,
    BundleMixAndMatchError,
    BundlePackageError,
    BundleRollbackError,
    BundleSignatureError,
    BundleVerificationError,
    ControlError,
    UnsafePathError,
    WaptError,
)
from wapt.package import verify_package
from wapt.trust import Certificate, TrustStore

__all__ = [
    "INDEX",
    "METADATA_DIR",
    "STAGING_DIR",
    "BundleInfo",
    "BundleState",
    "SignedMetadata",
    "TargetInfo",
    "VerifiedBundle",
    "build_packages_index",
    "check_technician_pin",
    "hash_technician_pin",
    "new_root",
    "read_bundle",
    "sign_bundle_metadata",
    "sign_root",
    "verify_bundle",
]

FORMAT = 1
METADATA_DIR = "comptoir-bundle"
STAGING_DIR = "staging"
INDEX = "Packages"
ICONS_DIR = "icons"
REPORTS_DIR = "reports"
ROOT = "root.json"
TIMESTAMP = "timestamp.json"
ROLES = ("root", "targets", "snapshot", "timestamp")
#: signed field of targets.json holding the catalog details (`BundleInfo`)
BUNDLE_FIELD = "x-comptoir-bundle"
#: signed field of timestamp.json and N.snapshot.json naming the bundle they belong to
ID_FIELD = "x-comptoir-bundle-id"
#: caps on metadata sizes (python-tuf's client defaults, targets larger for big bundles)
MAX_SIZES = {"root": 512 * 1024, "timestamp": 16 * 1024, "snapshot": 2**21, "targets": 2**24}
MAX_ROOT_ROTATIONS = 256
CHUNK = 1024 * 1024
#: names that operating systems create at a volume's top level; never part of a bundle
IGNORED_TOP_LEVEL = frozenset(
    {
        "System Volume Information",
        "$RECYCLE.BIN",
        ".Trashes",
        ".fseventsd",
        ".Spotlight-V100",
        ".TemporaryItems",
        ".DS_Store",
    }
)
_VERSIONED = re.compile(r"^([1-9][0-9]{0,17})\.(root|snapshot|targets)\.json$")
_TEMPORARY = re.compile(r"^\..+\.tmp$")  # write_atomic's temporary files, left by a kill
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SERIALIZER = JSONSerializer(compact=False)


def _utc(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    return when.astimezone(UTC)


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


# --- what a bundle holds -------------------------------------------------------------------


@dataclass(frozen=True)
class TargetInfo:
    """One file of a bundle as its signed targets describe it."""

    path: str
    length: int
    sha256: str
    #: signed custom fields: `kind` ("package", "index", "icon"), `md5`, package fields
    custom: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.custom.get("kind", ""))

    @property
    def md5(self) -> str | None:
        value = self.custom.get("md5")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class BundleInfo:
    """The catalog details of a bundle, signed in its targets metadata."""

    bundle_id: str
    name: str
    created: str
    creator: str
    #: `package (=version)` for every package of the bundle
    packages: tuple[str, ...] = ()
    #: salted scrypt hash of the technician's PIN (`hash_technician_pin`), or None
    technician_pin: Mapping[str, Any] | None = None
    #: paths that left the bundle at this write (removed by the writer once it commits)
    retired: tuple[str, ...] = ()
    #: the site's published catalogs it carries: name, title, description, packages
    catalogs: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.bundle_id,
            "name": self.name,
            "created": self.created,
            "creator": self.creator,
            "packages": list(self.packages),
            "technician_pin": dict(self.technician_pin) if self.technician_pin else None,
            "retired": list(self.retired),
            "catalogs": [dict(c) for c in self.catalogs],
        }

    @classmethod
    def from_dict(cls, data: Any) -> BundleInfo:
        """Raises: BundleMetadataError: not the shape `to_dict` writes."""
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise TypeError(f"format {data.get('format') if isinstance(data, dict) else ''}")
            pin = data.get("technician_pin")
            return cls(
                bundle_id=_str(data["id"]),
                name=_str(data["name"]),
                created=_str(data["created"]),
                creator=_str(data["creator"]),
                packages=tuple(_str(p) for p in data["packages"]),
                technician_pin=dict(pin) if isinstance(pin, dict) else None,
                retired=tuple(_str(p) for p in data.get("retired", [])),
                catalogs=tuple(dict(c) for c in data.get("catalogs", []) if isinstance(c, dict)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleMetadataError(
                f"{BUNDLE_FIELD} in the targets metadata is not a Comptoir bundle description: {e}"
            ) from e


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


@dataclass
class BundleState:
    """The highest versions a machine has accepted: its rollback protection.

    The caller persists it (`to_json`, `from_json`) and passes it to every verification, then
    keeps `recording(verified)`. The root version is global (one root of trust per site); the
    other versions are kept per bundle id, since every bundle counts from 1.
    """

    root_version: int = 0
    bundles: dict[str, dict[str, int]] = field(default_factory=dict)

    def seen(self, bundle_id: str, role: str) -> int:
        return self.bundles.get(bundle_id, {}).get(role, 0)

    def recording(self, verified: VerifiedBundle) -> BundleState:
        """A new state that also remembers the versions of `verified`."""
        bundles = {k: dict(v) for k, v in self.bundles.items()}
        seen = bundles.setdefault(verified.info.bundle_id, {})
        for role, version in (
            ("timestamp", verified.timestamp_version),
            ("snapshot", verified.snapshot_version),
            ("targets", verified.targets_version),
        ):
            seen[role] = max(seen.get(role, 0), version)
        return BundleState(max(self.root_version, verified.root_version), bundles)

    def to_json(self) -> bytes:
        data = {"format": FORMAT, "root_version": self.root_version, "bundles": self.bundles}
        return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> BundleState:
        """Raises: BundleMetadataError: not a state `to_json` wrote."""
        try:
            raw = json.loads(data)
            bundles = {
                _str(k): {_str(r): int(n) for r, n in v.items()} for k, v in raw["bundles"].items()
            }
            return cls(int(raw["root_version"]), bundles)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BundleMetadataError(f"bundle state is unreadable: {e}") from e


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed verification, and what the verification established."""

    path: Path
    info: BundleInfo
    root_version: int
    timestamp_version: int
    snapshot_version: int
    targets_version: int
    #: the earliest expiry of timestamp, snapshot and targets
    expires: datetime
    targets: Mapping[str, TargetInfo]
    #: harmless findings: leftovers of an interrupted write, files not yet moved into place
    warnings: tuple[str, ...] = ()

    def locate(self, target: str) -> Path:
        """Where the bytes of `target` are: its staged copy while a write is being finished,
        else its own path. The caller still checks length and hash as it reads.

        Raises:
            KeyError: `target` is not a target of this bundle.
        """
        info = self.targets[target]
        staged = self.path / METADATA_DIR / STAGING_DIR / info.sha256
        if staged.is_file():
            return staged
        return self.path.joinpath(*PurePosixPath(target).parts)

    @property
    def packages(self) -> list[TargetInfo]:
        return [t for t in self.targets.values() if t.kind == "package"]


# --- technician PIN (issue 7) --------------------------------------------------------------

_PIN_N, _PIN_R, _PIN_P = 2**14, 8, 1


def hash_technician_pin(pin: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """A salted scrypt hash of `pin`, as kept in a bundle's signed details."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=_PIN_N, r=_PIN_R, p=_PIN_P)
    return {
        "algorithm": "scrypt",
        "n": _PIN_N,
        "r": _PIN_R,
        "p": _PIN_P,
        "salt": salt.hex(),
        "hash": digest.hex(),
    }


def check_technician_pin(pin: str, record: Mapping[str, Any]) -> bool:
    """Whether `pin` matches a record made by `hash_technician_pin`."""
    try:
        if record["algorithm"] != "scrypt":
            return False
        n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
        if n > 2**20 or r > 32 or p > 16:
            return False  # refuse parameters that would exhaust memory or time
        digest = hashlib.scrypt(
            pin.encode("utf-8"), salt=bytes.fromhex(record["salt"]), n=n, r=r, p=p
        )
        return hmac.compare_digest(digest.hex(), str(record["hash"]))
    except (KeyError, TypeError, ValueError):
        return False


# --- writing metadata (pure: bytes in, bytes out) -----------------------------------------


def new_root(keys: Mapping[str, Key], *, expires: datetime, version: int = 1) -> Metadata[Root]:
    """An unsigned root with one key per top-level role and consistent snapshots."""
    root = Root(version=version, expires=expires, consistent_snapshot=True)
    for role in ROLES:
        root.add_key(keys[role], role)
    return Metadata(root)


def sign_root(root: Metadata[Root], signers: Sequence[Signer]) -> bytes:
    """Sign `root` with every signer (old and new root keys for a rotation); its JSON bytes."""
    return _sign(root, signers)


def _sign(metadata: Metadata[Any], signers: Sequence[Signer]) -> bytes:
    try:
        for number, signer in enumerate(signers):
            metadata.sign(signer, append=number > 0)
        return metadata.to_bytes(_SERIALIZER)
    except (UnsignedMetadataError, SerializationError) as e:
        raise BundleKeyError(f"cannot sign {metadata.signed.type} metadata: {e}") from e


@dataclass(frozen=True)
class SignedMetadata:
    """The three files a write commits, and their versions (all three grow together)."""

    version: int
    targets: bytes
    snapshot: bytes
    timestamp: bytes

    @property
    def targets_name(self) -> str:
        return f"{self.version}.targets.json"

    @property
    def snapshot_name(self) -> str:
        return f"{self.version}.snapshot.json"


def sign_bundle_metadata(
    targets: Iterable[TargetInfo],
    info: BundleInfo,
    *,
    version: int,
    expires: datetime,
    signers: Mapping[str, Signer],
) -> SignedMetadata:
    """Targets, snapshot and timestamp metadata for a bundle, signed, at one `version`.

    Raises:
        BundleKeyError: a signer fails.
    """
    target_files = {
        t.path: TargetFile(
            t.length, {"sha256": t.sha256}, t.path, {"custom": dict(t.custom)} if t.custom else {}
        )
        for t in sorted(targets, key=lambda t: t.path)
    }
    targets_md = Metadata(
        Targets(
            version=version,
            spec_version=".".join(SPECIFICATION_VERSION),
            expires=expires,
            targets=target_files,
            unrecognized_fields={BUNDLE_FIELD: info.to_dict()},
        )
    )
    targets_bytes = _sign(targets_md, [signers["targets"]])
    snapshot_md = Metadata(
        Snapshot(
            version=version,
            expires=expires,
            meta={"targets.json": MetaFile.from_data(version, targets_bytes, ["sha256"])},
            unrecognized_fields={ID_FIELD: info.bundle_id},
        )
    )
    snapshot_bytes = _sign(snapshot_md, [signers["snapshot"]])
    timestamp_md = Metadata(
        Timestamp(
            version=version,
            expires=expires,
            snapshot_meta=MetaFile.from_data(version, snapshot_bytes, ["sha256"]),
            unrecognized_fields={ID_FIELD: info.bundle_id},
        )
    )
    timestamp_bytes = _sign(timestamp_md, [signers["timestamp"]])
    return SignedMetadata(version, targets_bytes, snapshot_bytes, timestamp_bytes)


_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def build_packages_index(
    entries: Iterable[PackageEntry], certificates: Iterable[Certificate]
) -> bytes:
    """A WAPT `Packages` zip for `entries` (each with `filename`, `size`, `md5sum`) and the
    signers' certificates under `ssl/`. The same input always gives the same bytes, so an
    unchanged bundle keeps an unchanged index."""
    unique = {c.fingerprint: c for c in certificates}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        ordered = sorted(entries, key=lambda e: e.filename)
        zf.writestr(zipfile.ZipInfo(INDEX, _ZIP_DATE), format_records(ordered))
        for fp in sorted(unique):
            zf.writestr(zipfile.ZipInfo(f"ssl/{fp}.crt", _ZIP_DATE), unique[fp].pem)
    return buffer.getvalue()


# --- reading and verifying -----------------------------------------------------------------


def verify_bundle(
    path: Path,
    trusted_root: bytes | Path,
    *,
    state: BundleState | None = None,
    now: datetime | None = None,
    trust: TrustStore | None = None,
    check_files: bool = True,
) -> VerifiedBundle:
    """Verify the bundle in directory `path` against the configured root of trust.

    Checks, collecting every problem: the root chain from `trusted_root` (each rotation signed
    by the previous root and by itself; the stick's `root.json` must be on that chain); the
    signatures, versions and expiry of timestamp, snapshot and targets at one fixed `now`
    (freeze); their versions against `state` (rollback); that timestamp pins the snapshot and
    the snapshot pins the targets, by version, length and sha256, with one bundle id
    (mix-and-match); every target's length and sha256 (with `check_files` false, only the
    `Packages` index and icons: package files are then checked as they are read); that the
    `Packages` index agrees with the targets; that no file outside the targets and the
    metadata is present; and, with `trust`, every package's WAPT signature.

    Raises:
        BundleVerificationError: with every problem found, each a precise `BundleError`.
        BundleMetadataError: `trusted_root` cannot be read or is not a self-signed root.
    """
    return _Verification(path, trusted_root, state, _utc(now), trust).run(
        check_expiry=True, files="all" if check_files else "small", extras=True
    )


def read_bundle(path: Path, trusted_root: bytes | Path) -> VerifiedBundle | None:
    """The committed metadata of the bundle in `path`, for a writer about to update it.

    Signatures and the pinning of metadata are checked; expiry, rollback and files are not (an
    expired bundle is re-signed by writing it again). None if `path` holds no committed bundle.

    Raises:
        BundleVerificationError: the metadata do not verify against `trusted_root`.
        BundleMetadataError: `trusted_root` is unusable.
    """
    if not (path / METADATA_DIR / TIMESTAMP).exists():
        return None
    return _Verification(path, trusted_root, None, _utc(None), None).run(
        check_expiry=False, files="none", extras=False
    )


def versioned_metadata_numbers(path: Path) -> list[int]:
    """Versions of every `N.*.json` in the bundle's metadata directory (even uncommitted)."""
    numbers = []
    try:
        for name in os.listdir(path / METADATA_DIR):
            match = _VERSIONED.match(name)
            if match:
                numbers.append(int(match.group(1)))
    except OSError:
        pass
    return numbers


def _parse(kind: type[T], role: str, data: bytes, where: str) -> Metadata[T] | BundleMetadataError:
    try:
        metadata: Metadata[Any] = Metadata.from_bytes(data)
    except DeserializationError as e:
        cause = e.__cause__ or e
        return BundleMetadataError(f"{where}: not valid TUF {role} metadata: {cause}")
    if not isinstance(metadata.signed, kind):
        return BundleMetadataError(
            f"{where}: holds {metadata.signed.type} metadata, not {role} metadata"
        )
    return metadata


@dataclass
class _Digest:
    target: TargetInfo
    location: Path | None = None
    problem: BundleError | None = None
    warning: str | None = None
    md5: str | None = None


class _Verification:
    """One verification of one bundle directory; collects problems, raises once."""

    def __init__(
        self,
        path: Path,
        trusted_root: bytes | Path,
        state: BundleState | None,
        now: datetime,
        trust: TrustStore | None,
    ) -> None:
        self.path = path
        self.meta_dir = path / METADATA_DIR
        self.state = state or BundleState()
        self.now = now
        self.trust = trust
        self.problems: list[BundleError] = []
        self.warnings: list[str] = []
        self.expired: list[tuple[str, datetime]] = []
        #: metadata files present but unusable (a problem is recorded for each)
        self.unreadable: set[str] = set()
        self.trusted = self._load_trusted_root(trusted_root)

    # -- helpers --

    def _rel(self, name: str) -> str:
        return f"{METADATA_DIR}/{name}"

    def _read(self, name: str, role: str) -> bytes | None:
        """A metadata file's bytes, or None: absent, or unusable (then in `unreadable`)."""
        data = self._read_capped(name, role)
        file = self.meta_dir / name
        if data is None and (file.is_symlink() or file.exists()):
            self.unreadable.add(name)
        return data

    def _read_capped(self, name: str, role: str) -> bytes | None:
        file = self.meta_dir / name
        cap = MAX_SIZES[role]
        try:
            st = file.lstat()
        except FileNotFoundError:
            return None
        except OSError as e:
            self.problems.append(BundleMetadataError(f"{self._rel(name)}: {e.strerror or e}"))
            return None
        if not stat.S_ISREG(st.st_mode):
            self.problems.append(BundleMetadataError(f"{self._rel(name)}: not a regular file"))
            return None
        if st.st_size > cap:
            self.problems.append(
                BundleMetadataError(f"{self._rel(name)}: {st.st_size} bytes, more than {cap}")
            )
            return None
        try:
            with open(file, "rb") as f:
                data = f.read(cap + 1)
        except OSError as e:
            self.problems.append(BundleMetadataError(f"{self._rel(name)}: {e.strerror or e}"))
            return None
        if len(data) > cap:
            self.problems.append(BundleMetadataError(f"{self._rel(name)}: more than {cap} bytes"))
            return None
        return data

    def _load_trusted_root(self, trusted_root: bytes | Path) -> Metadata[Root]:
        where = "the configured root of trust"
        if isinstance(trusted_root, Path):
            where = f"configured root of trust {trusted_root}"
            try:
                trusted_root = trusted_root.read_bytes()
            except OSError as e:
                raise BundleMetadataError(f"{where}: {e.strerror or e}") from e
        if len(trusted_root) > MAX_SIZES["root"]:
            raise BundleMetadataError(f"{where}: larger than {MAX_SIZES['root']} bytes")
        parsed = _parse(Root, "root", trusted_root, where)
        if isinstance(parsed, BundleMetadataError):
            raise parsed
        try:
            parsed.signed.verify_delegate("root", parsed.signed_bytes, parsed.signatures)
        except UnsignedMetadataError as e:
            raise BundleMetadataError(f"{where}: not signed by its own root keys: {e}") from e
        return parsed

    def _signed_by(self, root: Root, role: str, metadata: Metadata[Any], where: str) -> bool:
        try:
            root.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
        except UnsignedMetadataError:
            self.problems.append(
                BundleSignatureError(
                    f"{where}: not signed by the trusted {role} key(s) of root version "
                    f"{root.version}: this bundle was not made with this site's bundle keys, "
                    "or was altered; ask for a bundle signed by the site"
                )
            )
            return False
        return True

    def _check_version(self, bundle_id: str, role: str, version: int, where: str) -> None:
        seen = self.state.seen(bundle_id, role)
        if version < seen:
            self.problems.append(
                BundleRollbackError(
                    f"{where}: {role} version {version} is older than version {seen} already "
                    "seen on this machine: this stick holds an old copy of the bundle; ask for "
                    "the current one"
                )
            )

    def _note_expiry(self, role: str, signed: Signed) -> None:
        if signed.is_expired(self.now):
            self.expired.append((role, signed.expires))

    # -- the steps --

    def run(self, *, check_expiry: bool, files: str, extras: bool) -> VerifiedBundle:
        root = self._root_chain()
        if check_expiry and root.is_expired(self.now):
            self.problems.append(
                BundleExpiredError(
                    f"the bundle root of trust (version {root.version}) expired on "
                    f"{_day(root.expires)}: the site administrator must renew the bundle keys' "
                    "root and configure agents with it"
                )
            )
        if root.version < self.state.root_version:
            self.problems.append(
                BundleRollbackError(
                    f"root version {root.version} is older than version "
                    f"{self.state.root_version} already seen on this machine: this stick was "
                    "signed with keys the site has since replaced; ask for a fresh bundle"
                )
            )
        loaded = self._metadata(root)
        if check_expiry and self.expired:
            when = min(e for _, e in self.expired)
            roles = ", ".join(r for r, _ in self.expired)
            self.problems.append(
                BundleExpiredError(
                    f"bundle expired on {_day(when)} ({roles}): ask for a fresh bundle or "
                    f"re-sign this one with `comptoir bundle create --to {self.path} …`"
                )
            )
        if loaded is None:
            assert self.problems  # every path that loads nothing records why
            self._raise()
        assert loaded is not None
        timestamp, snapshot, targets, info = loaded
        target_infos = self._targets(targets)
        if files != "none":
            self._check_files(target_infos, small_only=files == "small")
        if extras:
            self._check_extras(target_infos, info)
        self._raise()
        return VerifiedBundle(
            path=self.path,
            info=info,
            root_version=root.version,
            timestamp_version=timestamp.version,
            snapshot_version=snapshot.version,
            targets_version=targets.version,
            expires=min(timestamp.expires, snapshot.expires, targets.expires),
            targets=target_infos,
            warnings=tuple(self.warnings),
        )

    def _raise(self) -> None:
        if self.problems:
            raise BundleVerificationError(f"bundle {self.path}", self.problems)

    def _root_chain(self) -> Root:
        """Follow `N.root.json` from the trusted root, each signed by the previous one."""
        current = self.trusted
        chain = {current.signed.version: current}
        for version in range(
            current.signed.version + 1, current.signed.version + 1 + MAX_ROOT_ROTATIONS
        ):
            name = f"{version}.root.json"
            data = self._read(name, "root")
            if data is None:
                break
            parsed = _parse(Root, "root", data, self._rel(name))
            if isinstance(parsed, BundleMetadataError):
                self.problems.append(parsed)
                break
            if parsed.signed.version != version:
                self.problems.append(
                    BundleMetadataError(
                        f"{self._rel(name)}: holds root version {parsed.signed.version}"
                    )
                )
                break
            try:
                current.signed.verify_delegate("root", parsed.signed_bytes, parsed.signatures)
                parsed.signed.verify_delegate("root", parsed.signed_bytes, parsed.signatures)
            except UnsignedMetadataError:
                self.problems.append(
                    BundleSignatureError(
                        f"{self._rel(name)}: root version {version} is not signed by both the "
                        f"keys of root version {version - 1} and its own: this stick's root of "
                        "trust is not chained from the one this machine trusts; refuse it and "
                        "tell the site administrator"
                    )
                )
                break
            current = parsed
            chain[version] = parsed
        self._check_stick_root(chain, current.signed.version)
        return current.signed

    def _check_stick_root(self, chain: Mapping[int, Metadata[Root]], last: int) -> None:
        data = self._read(ROOT, "root")
        if data is None:
            return
        parsed = _parse(Root, "root", data, self._rel(ROOT))
        if isinstance(parsed, BundleMetadataError):
            self.problems.append(parsed)
            return
        version = parsed.signed.version
        known = chain.get(version)
        if version > last:
            self.problems.append(
                BundleSignatureError(
                    f"{self._rel(ROOT)}: root version {version} cannot be chained from the "
                    f"trusted root (version {self.trusted.signed.version}, chained up to "
                    f"{last}): this stick's root of trust is not the one this machine trusts"
                )
            )
        elif known is not None and known.signed_bytes != parsed.signed_bytes:
            self.problems.append(
                BundleSignatureError(
                    f"{self._rel(ROOT)}: root version {version} differs from the trusted one: "
                    "this bundle was made with another site's bundle keys"
                )
            )

    def _metadata(self, root: Root) -> tuple[Timestamp, Snapshot, Targets, BundleInfo] | None:
        data = self._read(TIMESTAMP, "timestamp")
        if data is None:
            if TIMESTAMP not in self.unreadable:
                self.problems.append(
                    BundleMetadataError(
                        f"{self._rel(TIMESTAMP)} is missing: this is not a complete bundle (a "
                        "first write was interrupted?); write it again with "
                        "`comptoir bundle create`"
                    )
                )
            return None
        ts_md = _parse(Timestamp, "timestamp", data, self._rel(TIMESTAMP))
        if isinstance(ts_md, BundleMetadataError):
            self.problems.append(ts_md)
            return None
        timestamp = ts_md.signed
        self._signed_by(root, "timestamp", ts_md, self._rel(TIMESTAMP))
        bundle_id = timestamp.unrecognized_fields.get(ID_FIELD)
        if not isinstance(bundle_id, str) or not bundle_id:
            self.problems.append(
                BundleMetadataError(f"{self._rel(TIMESTAMP)}: no {ID_FIELD}: not a Comptoir bundle")
            )
            return None
        self._note_expiry("timestamp", timestamp)
        self._check_version(bundle_id, "timestamp", timestamp.version, self._rel(TIMESTAMP))

        snapshot_md = self._pinned(
            Snapshot, "snapshot", timestamp.snapshot_meta, TIMESTAMP, bundle_id, root
        )
        if snapshot_md is None:
            return None
        snapshot = snapshot_md.signed
        targets_meta = snapshot.meta.get("targets.json")
        if targets_meta is None:
            self.problems.append(
                BundleMetadataError(
                    f"{self._rel(f'{snapshot.version}.snapshot.json')}: pins no targets.json"
                )
            )
            return None
        targets_md = self._pinned(
            Targets,
            "targets",
            targets_meta,
            f"{snapshot.version}.snapshot.json",
            bundle_id,
            root,
        )
        if targets_md is None:
            return None
        targets = targets_md.signed
        try:
            info = BundleInfo.from_dict(targets.unrecognized_fields.get(BUNDLE_FIELD))
        except BundleMetadataError as e:
            self.problems.append(e)
            return None
        if info.bundle_id != bundle_id:
            self.problems.append(
                BundleMixAndMatchError(
                    f"{self._rel(f'{targets.version}.targets.json')}: belongs to bundle "
                    f"{info.bundle_id}, the timestamp to {bundle_id}: metadata from two "
                    "different bundles; write the bundle again with `comptoir bundle create`"
                )
            )
        return timestamp, snapshot, targets, info

    def _pinned(
        self,
        kind: type[T],
        role: str,
        meta: MetaFile,
        pinned_by: str,
        bundle_id: str,
        root: Root,
    ) -> Metadata[T] | None:
        """Load `N.<role>.json` as pinned by `meta` (from `pinned_by`) and check it."""
        name = f"{meta.version}.{role}.json"
        where = self._rel(name)
        rewrite = "write the bundle again with `comptoir bundle create`"
        advice = f"the metadata come from different writes; {rewrite}"
        data = self._read(name, role)
        if data is None:
            if name not in self.unreadable:
                self.problems.append(
                    BundleMixAndMatchError(
                        f"{self._rel(pinned_by)} pins {role} version {meta.version} but {where} "
                        f"is missing: {advice}"
                    )
                )
            return None
        if not meta.hashes or "sha256" not in meta.hashes or meta.length is None:
            self.problems.append(
                BundleMetadataError(
                    f"{self._rel(pinned_by)}: pins {role} without its length and sha256"
                )
            )
        else:
            try:
                meta.verify_length_and_hashes(data)
            except LengthOrHashMismatchError:
                self.problems.append(
                    BundleMixAndMatchError(
                        f"{where} is not the {role} metadata {self._rel(pinned_by)} pins "
                        f"(length or sha256 differ): {advice}"
                    )
                )
        parsed = _parse(kind, role, data, where)
        if isinstance(parsed, BundleMetadataError):
            self.problems.append(parsed)
            return None
        signed = parsed.signed
        self._signed_by(root, role, parsed, where)
        if signed.version != meta.version:
            self.problems.append(
                BundleMixAndMatchError(
                    f"{where}: holds {role} version {signed.version}, "
                    f"{self._rel(pinned_by)} pins version {meta.version}: {advice}"
                )
            )
        if kind is not Targets:
            other = signed.unrecognized_fields.get(ID_FIELD)
            if other != bundle_id:
                self.problems.append(
                    BundleMixAndMatchError(
                        f"{where}: belongs to bundle {other}, the timestamp to {bundle_id}: "
                        f"metadata from two different bundles; {rewrite}"
                    )
                )
        self._note_expiry(role, signed)
        self._check_version(bundle_id, role, signed.version, where)
        return parsed

    def _targets(self, targets: Targets) -> dict[str, TargetInfo]:
        result: dict[str, TargetInfo] = {}
        folded: dict[str, str] = {}
        for path, target in targets.targets.items():
            try:
                check_member_name(path)
            except UnsafePathError as e:
                self.problems.append(BundleMetadataError(f"targets: {e}"))
                continue
            if path.startswith(f"{METADATA_DIR}/") or path.split("/")[0] == REPORTS_DIR:
                self.problems.append(BundleMetadataError(f"targets: {path!r} is a reserved path"))
                continue
            key = path.casefold()
            if key in folded:
                self.problems.append(
                    BundleMetadataError(
                        f"targets: {path!r} and {folded[key]!r} clash once case is ignored"
                    )
                )
                continue
            folded[key] = path
            digest = (target.hashes or {}).get("sha256", "")
            if not _SHA256.match(digest):
                self.problems.append(BundleMetadataError(f"targets: {path}: no sha256"))
                continue
            custom = target.custom if isinstance(target.custom, dict) else {}
            result[path] = TargetInfo(path, target.length, digest, custom)
        return result

    def _check_files(self, targets: Mapping[str, TargetInfo], *, small_only: bool) -> None:
        # an agent loading a stick checks the small files now, packages as it copies them, and
        # never the kiosk's (it does not run them)
        chosen = [t for t in targets.values() if not small_only or t.kind in ("index", "icon")]
        workers = min(2, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            digests = list(pool.map(self._check_file, chosen))
        located: dict[str, _Digest] = {}
        for digest in digests:
            if digest.problem is not None:
                self.problems.append(digest.problem)
            if digest.warning is not None:
                self.warnings.append(digest.warning)
            if digest.location is not None:
                located[digest.target.path] = digest
        index = targets.get(INDEX)
        if index is None:
            self.problems.append(
                BundleMetadataError(f"targets: no {INDEX} index: not a Comptoir bundle")
            )
        elif INDEX in located:
            self._check_index(located[INDEX].location, targets, located)
        if self.trust is not None and not small_only:
            for target in targets.values():
                if target.kind == "package" and target.path in located:
                    self._check_package(target, located[target.path].location)

    def _check_file(self, target: TargetInfo) -> _Digest:
        result = _Digest(target)
        plain = self.path.joinpath(*PurePosixPath(target.path).parts)
        staged = self.meta_dir / STAGING_DIR / target.sha256
        want_md5 = target.kind == "package"
        problem: BundleError | None = None
        for location in (plain, staged):
            try:
                st = location.lstat()
            except FileNotFoundError:
                continue
            except OSError as e:
                problem = BundleFileError(f"{target.path}: {e.strerror or e}")
                continue
            if not stat.S_ISREG(st.st_mode):
                problem = BundleFileError(f"{target.path}: not a regular file (a link?)")
                continue
            if st.st_size != target.length:
                problem = BundleFileError(
                    f"{target.path}: {st.st_size} bytes instead of the {target.length} of the "
                    "signed targets: the file was altered or damaged; write the bundle again "
                    "with `comptoir bundle create`"
                )
                continue
            try:
                sha256, md5 = _digest(location, want_md5)
            except OSError as e:
                problem = BundleFileError(f"{target.path}: cannot read: {e.strerror or e}")
                continue
            if sha256 != target.sha256:
                problem = BundleFileError(
                    f"{target.path}: sha256 differs from the signed targets: the file was "
                    "altered or damaged; write the bundle again with `comptoir bundle create`"
                )
                continue
            if want_md5 and target.md5 is not None and md5 != target.md5:
                problem = BundlePackageError(
                    f"{target.path}: MD5 differs from the one the bundle lists for WAPT agents "
                    "(the source index was stale?); write the bundle again"
                )
                continue
            result.location, result.md5 = location, md5
            if location == staged:
                result.warning = (
                    f"{target.path}: not yet moved into place by the writer (interrupted?); "
                    "write the bundle again to finish"
                )
            return result
        result.problem = problem or BundleMissingFileError(
            f"{target.path}: listed in the signed targets but missing: the stick is incomplete; "
            "write the bundle again with `comptoir bundle create`"
        )
        return result

    def _check_index(
        self,
        location: Path | None,
        targets: Mapping[str, TargetInfo],
        located: Mapping[str, _Digest],
    ) -> None:
        assert location is not None
        try:
            with zipfile.ZipFile(location) as zf:
                text = zf.read(INDEX).decode("utf-8")
            records = parse_records(text, source=INDEX)
        except (OSError, KeyError, UnicodeDecodeError, zipfile.BadZipFile, ControlError) as e:
            self.problems.append(BundlePackageError(f"{INDEX}: unreadable WAPT index: {e}"))
            return
        listed: set[str] = set()
        for entry in records:
            name = entry.filename
            target = targets.get(name)
            if target is None or target.kind != "package":
                self.problems.append(
                    BundlePackageError(f"{INDEX}: lists {name!r}, which is not a bundle package")
                )
                continue
            listed.add(name)
            if entry.size != target.length:
                self.problems.append(
                    BundlePackageError(
                        f"{INDEX}: {name}: size {entry.size} differs from the signed "
                        f"{target.length}"
                    )
                )
            md5 = located[name].md5 if name in located else target.md5
            if md5 is not None and entry.md5sum.lower() != md5:
                self.problems.append(
                    BundlePackageError(f"{INDEX}: {name}: md5sum differs from the file's")
                )
        for target in targets.values():
            if target.kind == "package" and target.path not in listed:
                self.problems.append(
                    BundlePackageError(f"{INDEX}: does not list the package {target.path}")
                )

    def _check_package(self, target: TargetInfo, location: Path | None) -> None:
        assert location is not None
        try:
            verify_package(location, self.trust or TrustStore([]), at=self.now)
        except WaptError as e:
            self.problems.append(BundlePackageError(f"{target.path}: {e}"))

    def _check_extras(self, targets: Mapping[str, TargetInfo], info: BundleInfo) -> None:
        retired = set(info.retired)
        staged = 0
        for rel, is_link in _walk(self.path):
            parts = rel.split("/")
            top = parts[0]
            if top in IGNORED_TOP_LEVEL or top.startswith(".Trash-") or top == REPORTS_DIR:
                continue
            if top == METADATA_DIR:
                if len(parts) >= 2 and parts[1] == STAGING_DIR:
                    staged += 1
                    continue
                if len(parts) == 2 and not is_link:
                    name = parts[1]
                    if name in (ROOT, TIMESTAMP) or _VERSIONED.match(name):
                        continue
                    if _TEMPORARY.match(name):
                        self.warnings.append(
                            f"{rel}: temporary file of an interrupted write (harmless)"
                        )
                        continue
                self.problems.append(
                    BundleExtraFileError(
                        f"{rel}: not bundle metadata: remove it, or write the bundle again"
                    )
                )
                continue
            if rel in targets and not is_link:
                continue
            if rel in retired and not is_link:
                self.warnings.append(
                    f"{rel}: left the bundle at its last write but is still present "
                    "(interrupted?); write the bundle again to remove it"
                )
                continue
            self.problems.append(
                BundleExtraFileError(
                    f"{rel}: not part of the bundle (in none of its signed targets): remove it, "
                    "or write the bundle again with `comptoir bundle create`"
                )
            )
        if staged:
            self.warnings.append(
                f"{METADATA_DIR}/{STAGING_DIR}: {staged} file(s) of an unfinished write "
                "(harmless; the next write removes them)"
            )


def _walk(root: Path) -> Iterator[tuple[str, bool]]:
    """Every non-directory under `root` (links included, never followed), as POSIX paths."""
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            entries = list(os.scandir(root / prefix if prefix else root))
        except OSError:
            continue
        for entry in entries:
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)
            else:
                yield rel, entry.is_symlink()


def _digest(path: Path, want_md5: bool) -> tuple[str, str | None]:
    """sha256 (and md5) of a file, streaming in 1 MiB chunks (hashlib releases the GIL)."""
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            chunk = view[:n]
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest() if md5 is not None else None


def file_digest(path: Path, *, md5: bool = False) -> tuple[str, str | None]:
    """The sha256 hex digest of a file (and its md5 if asked), streaming."""
    return _digest(path, md5)


def target_path(bundle: Path, target: str) -> Path:
    """The plain location of `target` under `bundle`."""
    return bundle.joinpath(*PurePosixPath(target).parts)


def problems_of(error: BundleError) -> list[BundleError]:
    """The individual problems of an error: its list for a BundleVerificationError."""
    if isinstance(error, BundleVerificationError):
        return list(error.problems)
    return [error]
