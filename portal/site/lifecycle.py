"""Packages through their life on a site: new, development, qualification, production, retired.

The académie's workflow (seeds): a request is *new*; a package being made is in *development*;
a finished one is in *qualification*, tested on qualification machines; then it is in
*production*, on every machine it is assigned to. Here:

- new: a request (name, title, note), no file yet;
- development: the file as uploaded (verified), in `data_dir/lifecycle/development/`, served
  to no machine;
- qualification: re-signed by the site developer key, maturity PREPROD, in `repository_dir`:
  only qualification machines (which trust the developer CA) accept it;
- production: re-signed by the site production key, maturity PROD, in `repository_dir`: every
  machine it is assigned to takes it;
- retired: the file moved to `data_dir/lifecycle/archive/`, never deleted.

Only the site developer CA (trusted by qualification machines alone) vouches for PREPROD files,
and only the site CA for PROD files (`portal.site.keys`). The previous production release of a
package stays in the repository until the next one is promoted; it is then retired (archived,
never deleted). Every transition has a history entry (who, when, what), is refused with a
`TransitionError` naming why when it is not allowed, and regenerates the `Packages` index
(incrementally, `wapt.repository.scan_repository`).

Uploads are streamed to a temporary file, verified completely (`wapt.package.verify_package`
against `portal.site.keys.upload_trust`), and refused with every problem found; a refused file
is removed at once. The store is `data_dir/packages.json` (`portal.site.storage`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol, cast

from tinydb import Query

from portal.site.assignments import AssignmentError, check_package_name
from portal.site.keys import KeySettings, Role, SiteKeyError, load_signer, upload_trust
from portal.site.model import parse_time, utc_text
from portal.site.storage import open_db, transaction
from wapt.errors import VerificationError, WaptError
from wapt.fsutil import fsync_directory
from wapt.package import VerifiedPackage, resign_package, verify_package
from wapt.repository import scan_repository
from wapt.trust import Signer, TrustStore
from wapt.version import version_key

__all__ = [
    "GENERATED_SECTIONS",
    "STATES",
    "LifecycleError",
    "LifecycleSettings",
    "PackageLifecycle",
    "Release",
    "State",
    "TransitionError",
    "UploadRefusedError",
    "UploadTooLargeError",
]

State = Literal["new", "development", "qualification", "production", "retired"]
STATES: Final[tuple[State, ...]] = ("new", "development", "qualification", "production", "retired")

#: sections the site publishes itself from groups and assignments (`portal.site.publish`)
GENERATED_SECTIONS: Final = frozenset({"host", "group", "selfservice", "unit", "profile"})

DEFAULT_MAX_UPLOAD: Final = 2 * 1024**3
CHUNK: Final = 1024 * 1024
STORE_FILE: Final = "packages.json"

Progress = Callable[[int, int], None]


class LifecycleError(Exception):
    """A lifecycle operation failed; the message names the package and the reason."""


class UploadRefusedError(LifecycleError):
    """An uploaded file is not a package the site accepts; `problems` lists every reason."""

    def __init__(self, subject: str, problems: list[str]) -> None:
        self.subject = subject
        self.problems = problems
        super().__init__(f"{subject}: refused: {'; '.join(problems)}")


class UploadTooLargeError(UploadRefusedError):
    """The upload is larger than the configured limit."""


class TransitionError(LifecycleError):
    """A state change is not allowed; the message says why."""


class UnknownReleaseError(LifecycleError):
    """No package release has this id."""


class LifecycleSettings(KeySettings, Protocol):
    """The part of `SiteSettings` the lifecycle needs."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def repository_dir(self) -> Path: ...


@dataclass(frozen=True)
class HistoryEntry:
    """One step of a release's life."""

    when: datetime
    who: str
    action: str
    state: State
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "when": utc_text(self.when),
            "who": self.who,
            "action": self.action,
            "state": self.state,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HistoryEntry:
        return cls(
            when=parse_time(raw["when"]),
            who=raw["who"],
            action=raw["action"],
            state=raw["state"],
            note=raw.get("note", ""),
        )


@dataclass(frozen=True)
class Release:
    """One version of one package on the site, and where it is in its life."""

    id: str
    package: str
    state: State
    #: empty for a request (state new)
    version: str = ""
    architecture: str = ""
    locale: str = ""
    maturity: str = ""
    title: str = ""
    description: str = ""
    section: str = ""
    #: the current file's name ("" for a request); where it lies follows from the state
    filename: str = ""
    signer: str = ""
    signer_fingerprint: str = ""
    history: tuple[HistoryEntry, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes two releases the same package file apart from its maturity."""
        return (self.package, self.version, self.architecture, self.locale)

    @property
    def updated(self) -> datetime | None:
        return self.history[-1].when if self.history else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package": self.package,
            "state": self.state,
            "version": self.version,
            "architecture": self.architecture,
            "locale": self.locale,
            "maturity": self.maturity,
            "title": self.title,
            "description": self.description,
            "section": self.section,
            "filename": self.filename,
            "signer": self.signer,
            "signer_fingerprint": self.signer_fingerprint,
            "history": [h.to_json() for h in self.history],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Release:
        values = {k: raw.get(k, "") for k in cls.__dataclass_fields__ if k != "history"}
        return cls(
            **values,
            history=tuple(HistoryEntry.from_json(h) for h in raw.get("history", ())),
        )


class PackageLifecycle:
    """Uploads, states and transitions of the site's packages, and their files.

    `signers` gives the signer of a role (default: the site's keys, `portal.site.keys`);
    `clock` the current time (tests).
    """

    def __init__(
        self,
        settings: LifecycleSettings,
        *,
        signers: Callable[[Role], Signer] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.path = settings.data_dir / STORE_FILE
        self.development_dir = settings.data_dir / "lifecycle" / "development"
        self.archive_dir = settings.data_dir / "lifecycle" / "archive"
        self.repository_dir = settings.repository_dir
        self._db = open_db(self.path)
        self._signers = signers or (lambda role: load_signer(settings, role))
        self._clock = clock

    # --- reading ---------------------------------------------------------------------------

    def releases(
        self,
        *,
        state: str | None = None,
        maturity: str | None = None,
        text: str = "",
    ) -> list[Release]:
        """Releases filtered by state, maturity and a text found in the name, title or
        description (case ignored); by package, then newest version first."""
        words = text.casefold().split()
        found = []
        for doc in self._db.table("releases").all():
            item = Release.from_json(dict(doc))
            if state and item.state != state:
                continue
            if maturity is not None and maturity != "" and item.maturity != maturity:
                continue
            haystack = f"{item.package} {item.title} {item.description}".casefold()
            if any(word not in haystack for word in words):
                continue
            found.append(item)
        found.sort(key=lambda r: r.id)
        found.sort(key=lambda r: version_key(r.version) if r.version else version_key("0"))
        found.reverse()
        found.sort(key=lambda r: r.package)
        return found

    def release(self, release_id: str) -> Release:
        """The release with this id.

        Raises:
            UnknownReleaseError: there is none.
        """
        doc = self._db.table("releases").get(Query().id == release_id)
        if doc is None:
            raise UnknownReleaseError(f"package release {release_id!r}: no such release")
        return Release.from_json(dict(cast(dict[str, Any], doc)))

    def file_of(self, release: Release) -> Path | None:
        """Where the release's file lies now, or None for a request."""
        if not release.filename:
            return None
        where = {
            "development": self.development_dir,
            "qualification": self.repository_dir,
            "production": self.repository_dir,
            "retired": self.archive_dir,
        }[release.state]
        return where / release.filename

    def production(self, package: str) -> list[Release]:
        """The releases of `package` in production (usually one)."""
        return [r for r in self.releases(state="production") if r.package == package]

    # --- new requests ----------------------------------------------------------------------

    def request(self, package: str, *, title: str, who: str, note: str = "") -> Release:
        """Record a request for a new package (state new).

        Raises:
            LifecycleError: the name is malformed, or the package is already known and not
                retired.
        """
        try:
            check_package_name(package)
        except AssignmentError as e:
            raise LifecycleError(str(e)) from e
        with transaction(self.path):
            for other in self.releases():
                if other.package == package and other.state != "retired":
                    raise TransitionError(
                        f"{package}: already known ({other.state}"
                        f"{' ' + other.version if other.version else ''})"
                    )
            item = Release(
                id=secrets.token_hex(6),
                package=package,
                state="new",
                title=title.strip() or package,
                history=(HistoryEntry(self._now(), who, "request", "new", note.strip()),),
            )
            self._put(item)
        return item

    # --- upload ----------------------------------------------------------------------------

    def upload(
        self,
        stream: IO[bytes],
        *,
        who: str,
        name: str = "upload.wapt",
        max_size: int = DEFAULT_MAX_UPLOAD,
        progress: Progress | None = None,
        expected_size: int = 0,
    ) -> Release:
        """Receive a package: stream it to a temporary file, verify it completely, and keep it
        in development. A refused file is removed before this raises.

        Raises:
            UploadTooLargeError: more than `max_size` bytes.
            UploadRefusedError: it does not verify (every problem listed), it is a package the
                site makes itself (host, group, selfservice…), or the same version is already
                on the site.
            LifecycleError: the file cannot be written.
        """
        subject = Path(name).name or "upload.wapt"
        self.development_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=self.development_dir)
        tmp = Path(tmp_name)
        try:
            self._receive(stream, fd, subject, max_size, progress, expected_size)
            verified = self._verify_upload(tmp, subject)
            with transaction(self.path):
                item = self._accept(tmp, verified, subject, who)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return item

    def _receive(
        self,
        stream: IO[bytes],
        fd: int,
        subject: str,
        max_size: int,
        progress: Progress | None,
        expected: int,
    ) -> None:
        done = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    done += len(chunk)
                    if done > max_size:
                        raise UploadTooLargeError(
                            subject, [f"larger than the upload limit of {max_size} bytes"]
                        )
                    out.write(chunk)
                    if progress is not None:
                        progress(done, max(expected, done))
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:
            raise LifecycleError(f"{subject}: cannot store the upload: {e.strerror or e}") from e
        if done == 0:
            raise UploadRefusedError(subject, ["the file is empty"])

    def _verify_upload(self, path: Path, subject: str) -> VerifiedPackage:
        try:
            trust = upload_trust(self.settings)
        except SiteKeyError as e:
            raise LifecycleError(str(e)) from e
        try:
            return verify_package(path, trust)
        except VerificationError as e:
            raise UploadRefusedError(subject, [str(p) for p in e.problems]) from e
        except WaptError as e:
            raise UploadRefusedError(subject, [str(e)]) from e

    def _accept(self, tmp: Path, verified: VerifiedPackage, subject: str, who: str) -> Release:
        entry = verified.entry
        if entry.section in GENERATED_SECTIONS:
            raise UploadRefusedError(
                subject,
                [
                    f"a {entry.section} package: the site makes its own host, group and "
                    "selfservice packages from its groups and assignments"
                ],
            )
        filename = entry.package_filename()
        item = Release(
            id=secrets.token_hex(6),
            package=entry.package,
            state="development",
            version=entry.version,
            architecture=str(entry.architecture or ""),
            locale=",".join(entry.locales),
            maturity=str(entry.maturity or ""),
            title=str(entry.name or entry.package),
            description=str(entry.description or ""),
            section=str(entry.section or ""),
            filename=filename,
            signer=verified.signer.cn,
            signer_fingerprint=verified.signer.fingerprint,
        )
        history: list[HistoryEntry] = []
        for other in self.releases():
            if other.state == "retired":
                continue
            if other.state == "new" and other.package == item.package:
                history += other.history  # the request's story goes on with its package
                self._db.table("releases").remove(Query().id == other.id)
            elif other.key == item.key:
                raise UploadRefusedError(
                    subject,
                    [
                        f"{item.package} {item.version} is already on the site "
                        f"({other.state}): retire it first to replace it"
                    ],
                )
        target = self.development_dir / filename
        if target.exists():
            raise UploadRefusedError(subject, [f"{filename}: a file of that name is waiting"])
        os.replace(tmp, target)
        fsync_directory(self.development_dir)
        note = f"signed by {verified.signer.cn}, maturity {item.maturity or '(none)'}"
        history.append(HistoryEntry(self._now(), who, "upload", "development", note))
        item = replace(item, history=tuple(history))
        self._put(item)
        return item

    # --- transitions -----------------------------------------------------------------------

    def qualify(self, release_id: str, *, who: str, note: str = "") -> Release:
        """Development → qualification: re-signed PREPROD with the developer key, into the
        repository; the uploaded file goes to the archive.

        Raises:
            TransitionError: the release is not in development.
            LifecycleError: the file no longer verifies, or cannot be signed or moved.
        """
        with transaction(self.path):
            item = self._expect(release_id, "development", "qualify")
            source = self._existing_file(item)
            made = self._resign(item, source, "developer", "PREPROD")
            self._archive(source, item)
            item = self._moved(item, made, "qualification", who, "qualify", note)
            self._reindex()
        return item

    def promote(self, release_id: str, *, who: str, note: str = "") -> Release:
        """Qualification → production: re-signed PROD with the production key. The
        qualification file and the previous production release(s) of the package go to the
        archive (they were kept until now).

        Raises:
            TransitionError: the release is not in qualification, or a newer version of the
                package is in production.
            LifecycleError: the file no longer verifies, or cannot be signed or moved.
        """
        with transaction(self.path):
            item = self._expect(release_id, "qualification", "promote")
            previous = [
                r
                for r in self.production(item.package)
                if (r.architecture, r.locale) == (item.architecture, item.locale)
            ]
            for old in previous:
                if version_key(old.version) >= version_key(item.version):
                    raise TransitionError(
                        f"{item.package} {item.version}: version {old.version} is in production "
                        "already; retire it first to go back to an older one"
                    )
            source = self._existing_file(item)
            made = self._resign(item, source, "production", "PROD")
            self._archive(source, item)
            item = self._moved(item, made, "production", who, "promote", note)
            for old in previous:
                self._retire(old, who, f"replaced by {item.version}")
            self._reindex()
        return item

    def retire(self, release_id: str, *, who: str, note: str = "") -> Release:
        """Any state → retired: the file leaves the repository for the archive.

        Raises:
            TransitionError: the release is retired already.
            LifecycleError: the file cannot be moved.
        """
        with transaction(self.path):
            item = self.release(release_id)
            if item.state == "retired":
                raise TransitionError(f"{self._label(item)}: already retired")
            was_served = item.state in ("qualification", "production")
            item = self._retire(item, who, note)
            if was_served:
                self._reindex()
        return item

    # --- internals -------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)

    def _put(self, item: Release) -> None:
        self._db.table("releases").upsert(item.to_json(), Query().id == item.id)

    @staticmethod
    def _label(item: Release) -> str:
        return f"{item.package} {item.version}".strip()

    def _expect(self, release_id: str, state: State, action: str) -> Release:
        item = self.release(release_id)
        if item.state != state:
            needed = {
                "qualify": "only a package in development can go to qualification",
                "promote": "only a package in qualification can go to production",
            }[action]
            raise TransitionError(f"{self._label(item)}: {item.state}: {needed}")
        return item

    def _existing_file(self, item: Release) -> Path:
        path = self.file_of(item)
        if path is None or not path.is_file():
            raise LifecycleError(f"{self._label(item)}: its file {path} is missing")
        return path

    def _resign(self, item: Release, source: Path, role: Role, maturity: str) -> Path:
        try:
            signer = self._signers(role)
            trust: TrustStore = upload_trust(self.settings)
        except SiteKeyError as e:
            raise LifecycleError(f"{self._label(item)}: {e}") from e
        try:
            return resign_package(
                source, signer, self.repository_dir, trust, maturity=maturity, overwrite=False
            )
        except VerificationError as e:
            problems = "; ".join(str(p) for p in e.problems)
            raise LifecycleError(f"{self._label(item)}: no longer verifies: {problems}") from e
        except WaptError as e:
            raise LifecycleError(f"{self._label(item)}: cannot re-sign: {e}") from e

    def _moved(
        self, item: Release, made: Path, state: State, who: str, action: str, note: str
    ) -> Release:
        verified = verify_package(made, upload_trust(self.settings))
        step = HistoryEntry(
            self._now(),
            who,
            action,
            state,
            note or f"re-signed by {verified.signer.cn}, maturity {verified.entry.maturity}",
        )
        item = replace(
            item,
            state=state,
            filename=made.name,
            maturity=str(verified.entry.maturity),
            signer=verified.signer.cn,
            signer_fingerprint=verified.signer.fingerprint,
            history=(*item.history, step),
        )
        self._put(item)
        return item

    def _archive(self, source: Path, item: Release) -> str:
        """Move `source` into the archive under a name that never replaces another."""
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{item.id}-{item.state}-{source.name}"
        target = self.archive_dir / name
        if target.exists():
            raise LifecycleError(f"{target}: already in the archive")
        try:
            os.replace(source, target)
        except OSError as e:
            raise LifecycleError(f"{source}: cannot move it to the archive: {e}") from e
        fsync_directory(self.archive_dir)
        with contextlib.suppress(OSError):
            fsync_directory(source.parent)
        return name

    def _retire(self, item: Release, who: str, note: str) -> Release:
        filename = ""
        path = self.file_of(item)
        if path is not None:
            if not path.is_file():
                raise LifecycleError(f"{self._label(item)}: its file {path} is missing")
            filename = self._archive(path, item)
        step = HistoryEntry(self._now(), who, "retire", "retired", note)
        item = replace(item, state="retired", filename=filename, history=(*item.history, step))
        self._put(item)
        return item

    def _reindex(self) -> None:
        try:
            scan_repository(self.repository_dir)
        except WaptError as e:
            raise LifecycleError(f"{self.repository_dir}: cannot regenerate the index: {e}") from e
