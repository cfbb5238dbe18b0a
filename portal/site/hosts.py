"""The site's hosts: their pinned keys, their last reported state, rollouts; sharded on disk.

`HostStore(data_dir)` keeps one record per host in `data_dir/hosts/shard-NN.json`, 64 TinyDB
files (`portal.site.storage`) chosen by a hash of the host UUID: a report rewrites one file of
about 80 hosts, not one of 5,000 (TinyDB rewrites a whole file on each write, ADR 8). The logs
of a host's failures, which can weigh 64 KiB each, are kept apart in `hosts/failed/<uuid>.json`
so that one host's failures never slow its neighbours' reports.

The lists and counts the admin pages show come from an in-memory index (`HostSummary` per
host), rebuilt per shard when that file changed on disk (another process, `comptoir bundle
collect`, may write it while the server runs).

Trust: a host registers once with its Ed25519 public key and the site's enrolment proof
(`agent_bridge.reports`); the key is pinned. A report is taken only if it verifies with the
pinned key of the host it names, that host is the one in the URL, and its `seq` is above the
last one taken (a replay is refused). A known host asking to register another key is refused
(`key-conflict`) until an admin resets its key (`reset_key`, audited by the caller). Every
refusal is a `HostRefused` with a stable `reason`, an HTTP `status` and a message.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, cast

import orjson
from tinydb import Query, TinyDB

from agent_bridge.reports import (
    MAX_REPORT_BYTES,
    FailedPackage,
    HostReport,
    InstalledPackage,
    PendingWork,
    ReportError,
    ReportEvent,
    ReportSignatureError,
    ReportTooLargeError,
    check_host_uuid,
    key_fingerprint,
    read_public_key,
    read_signed_report,
)
from portal.site.assignments import AssignmentStore, UnknownRecordError
from portal.site.audit import AuditEvent, AuditLog, Outcome
from portal.site.model import ModelError, parse_time, utc_text
from portal.site.settings import SiteSettings
from portal.site.storage import StorageError, open_db, transaction
from wapt.bundle import REPORTS_DIR
from wapt.fsutil import write_atomic

__all__ = [
    "COLLECT_OUTCOMES",
    "HISTORY_KEPT",
    "HOST_STATUSES",
    "SHARDS",
    "Collected",
    "CollectedFile",
    "HostRecord",
    "HostRefused",
    "HostStore",
    "HostStoreError",
    "HostSummary",
    "Ingested",
    "Rollout",
    "RolloutLine",
    "Targets",
    "collect_reports",
    "host_audit_events",
    "make_host_store",
]

SHARDS: Final = 64
HISTORY_KEPT: Final = 30
"""Reports whose summary a host's record keeps (its page shows them)."""
EVENT_IDS_KEPT: Final = 2000
"""Event ids a host's record remembers per epoch, so an event that comes twice is audited once."""
EPOCHS_KEPT: Final = 4
"""Task histories (agent epochs) whose event ids a host's record remembers, newest last."""
HOST_STATUSES: Final = ("ok", "pending", "failed", "unknown", "stale")
"""ok, pending (work to do), failed (a failure), unknown (never reported); `stale` is a
filter: not seen for `stale_days`."""
_TABLE: Final = "hosts"
_FORMAT: Final = 1

Source = Literal["network", "usb"]
Status = Literal["ok", "pending", "failed", "unknown"]


class HostStoreError(Exception):
    """The host store cannot do what was asked; the message names the host and why."""


class HostRefused(HostStoreError):
    """A registration or a report refused: `reason` is stable (the API answers it), `status`
    the HTTP status to answer with, `last_seq` the last report taken (for `replay`)."""

    def __init__(
        self, reason: str, status: int, message: str, *, last_seq: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.last_seq = last_seq


Targets = Callable[[], Mapping[str, Collection[str]]]
"""Every assigned package -> the hosts assigned to have it (required or at shutdown)."""


@dataclass(frozen=True)
class HostSummary:
    """What the host list and the rollouts need of one host (the in-memory index)."""

    uuid: str
    name: str
    last_seen: datetime | None
    status: Status
    installed: dict[str, tuple[str, str]]  # package -> (version, agent status)
    pending: frozenset[str]
    failed: frozenset[str]
    counts: tuple[int, int, int]  # installed, pending, failed
    search_text: str

    def stale(self, since: datetime) -> bool:
        return self.last_seen is None or self.last_seen < since


@dataclass(frozen=True)
class HistoryEntry:
    """One report taken: when, how it came, and what it said in numbers."""

    seq: int
    created: str
    received: str
    source: str
    installed: int
    pending: int
    failed: int
    events: int


@dataclass(frozen=True)
class HostRecord:
    """Everything the site knows of one host (the host's page)."""

    uuid: str
    name: str
    public_key: str | None
    registered_at: str
    registered_source: str
    last_seen: str | None
    last_seq: int
    last_source: str | None
    report_created: str | None
    os: str
    agent_version: str
    installed: tuple[InstalledPackage, ...]
    pending: PendingWork
    failed: tuple[FailedPackage, ...]  # logs not loaded: see `HostStore.failure_logs`
    history: tuple[HistoryEntry, ...]
    key_reset: dict[str, str] | None = None

    @property
    def fingerprint(self) -> str | None:
        return key_fingerprint(self.public_key) if self.public_key else None

    @property
    def status(self) -> Status:
        return _status(self.last_seen, bool(self.failed), bool(self.pending))


@dataclass(frozen=True)
class Ingested:
    """A report taken: whose, which, its new events (not seen before), and if the host was
    registered by this very report (trust on first use, USB only)."""

    host_uuid: str
    seq: int
    events: tuple[ReportEvent, ...]
    registered: bool = False
    report: HostReport | None = None


@dataclass(frozen=True)
class RolloutLine:
    """One host in a rollout: its state for the package, and the version it has or wants."""

    uuid: str
    name: str
    state: Literal["installed", "pending", "failed", "missing"]
    version: str = ""


@dataclass(frozen=True)
class Rollout:
    """Where one package stands: on how many of the hosts concerned it is installed.

    `lines` lists the hosts (by name) for one package's page; the rollout index leaves it empty
    and reads the counts only.
    """

    package: str
    targeted: int  # hosts assigned to have it
    counts: Mapping[str, int] = field(default_factory=dict)  # state -> hosts
    lines: tuple[RolloutLine, ...] = ()

    def of(self, state: str) -> list[RolloutLine]:
        return [line for line in self.lines if line.state == state]

    @property
    def total(self) -> int:
        """Hosts concerned: assigned, or reporting the package in any state."""
        return sum(self.counts.values())

    @property
    def installed(self) -> int:
        return self.counts.get("installed", 0)

    @property
    def pending(self) -> int:
        return self.counts.get("pending", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def missing(self) -> int:
        return self.counts.get("missing", 0)


def _status(last_seen: str | None, failed: bool, pending: bool) -> Status:
    if last_seen is None:
        return "unknown"
    if failed:
        return "failed"
    return "pending" if pending else "ok"


def _now() -> datetime:
    return datetime.now(UTC)


def _pending_names(pending: PendingWork) -> frozenset[str]:
    """Package names of pending work (`name(=1.0-1)` gives `name`)."""
    labels = (*pending.install, *pending.upgrade, *pending.remove, *pending.at_shutdown)
    return frozenset(label.split("(", 1)[0].strip() for label in labels)


class HostStore:
    """The hosts of one site (see the module's docstring). Thread and process safe."""

    def __init__(
        self,
        data_dir: Path,
        *,
        targets: Targets | None = None,
        group_hosts: Callable[[str], Collection[str]] | None = None,
        clock: Callable[[], datetime] = _now,
        recheck_seconds: float = 1.0,
    ) -> None:
        """`targets` gives the hosts assigned a package and `group_hosts` a machine group's
        hosts (from `portal.site.assignments`); without them, rollouts count the hosts that
        report the package and the group filter matches nothing. Changes made by this store
        show at once; those of another process (`comptoir bundle collect`) once the files are
        checked again, at most every `recheck_seconds`."""
        self.directory = Path(data_dir) / "hosts"
        self.failed_dir = self.directory / "failed"
        self._targets = targets
        self._group_hosts = group_hosts
        self._clock = clock
        self._dbs = [open_db(self._shard_path(i)) for i in range(SHARDS)]
        self._index: list[dict[str, HostSummary]] = [{} for _ in range(SHARDS)]
        self._stamps: list[tuple[int, int, int] | None] = [None] * SHARDS
        self._index_lock = threading.Lock()
        self._generation = 0
        self._sorted: tuple[int, list[HostSummary]] | None = None
        # package -> host -> its line; per package, hosts per state; host -> its packages
        self._lines: dict[str, dict[str, RolloutLine]] = {}
        self._package_counts: dict[str, Counter[str]] = {}
        self._host_packages: dict[str, set[str]] = {}
        self._counts: tuple[Any, dict[str, int]] | None = None
        self._recheck_seconds = recheck_seconds
        self._checked = -math.inf
        self._check_format()

    # --- files ------------------------------------------------------------------------------

    def _shard_path(self, number: int) -> Path:
        return self.directory / f"shard-{number:02d}.json"

    @staticmethod
    def shard_of(uuid: str) -> int:
        return int.from_bytes(hashlib.sha256(uuid.encode()).digest()[:4], "big") % SHARDS

    def _check_format(self) -> None:
        meta = self.directory / "format.json"
        expected = {"format": _FORMAT, "shards": SHARDS}
        try:
            found = orjson.loads(meta.read_bytes())
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(meta, orjson.dumps(expected), mode=0o600, overwrite=False)
            return
        except (OSError, orjson.JSONDecodeError) as e:
            raise HostStoreError(f"{meta}: cannot read the host store's format: {e}") from e
        if found != expected:
            raise HostStoreError(
                f"{meta}: the host store was made as {found!r}; this version reads {expected!r}"
            )

    def _table(self, number: int) -> Any:
        db: TinyDB = self._dbs[number]
        return db.table(_TABLE)

    def _doc(self, uuid: str) -> dict[str, Any] | None:
        doc = self._table(self.shard_of(uuid)).get(Query().uuid == uuid)
        return dict(cast(dict[str, Any], doc)) if doc is not None else None

    def _put(self, number: int, doc: dict[str, Any], *, new: bool) -> None:
        table = self._table(number)
        try:
            if new:
                table.insert(doc)
            else:
                table.update(doc, Query().uuid == doc["uuid"])
        except StorageError as e:
            raise HostStoreError(f"host {doc['uuid']}: cannot save: {e}") from e
        self._index_put(number, doc)

    # --- registration ---------------------------------------------------------------------

    def register(
        self, uuid: str, public_key: str, name: str, source: Source = "network"
    ) -> Literal["new", "known", "re-pinned"]:
        """Pin `public_key` for host `uuid` (a new host, or one whose key an admin reset).

        Registering again with the same key only updates the name ("known").

        Raises:
            HostRefused: `key-conflict` (409) when the host has another pinned key;
                `malformed` (400) for a bad UUID or key.
        """
        try:
            uuid = check_host_uuid(uuid)
            read_public_key(public_key)
        except ReportError as e:
            raise HostRefused("malformed", 400, str(e)) from e
        number = self.shard_of(uuid)
        now = utc_text(self._clock())
        with transaction(self._shard_path(number)):
            doc = self._doc(uuid)
            if doc is None:
                self._put(number, _new_doc(uuid, public_key, name, source, now), new=True)
                return "new"
            pinned = doc.get("public_key")
            if pinned == public_key:
                if name and name != doc.get("name"):
                    doc["name"] = name[:256]
                    self._put(number, doc, new=False)
                return "known"
            if pinned:
                raise HostRefused(
                    "key-conflict",
                    409,
                    f"host {uuid} is registered with another key ({key_fingerprint(pinned)}); "
                    "an administrator must reset its key first",
                )
            doc.update(
                public_key=public_key,
                registered_at=now,
                registered_source=source,
                name=name[:256] or doc.get("name", ""),
            )
            self._put(number, doc, new=False)
            return "re-pinned"

    def reset_key(self, uuid: str) -> HostRecord:
        """Forget host `uuid`'s pinned key: its next registration pins a new one. The host's
        state stays; its reports are refused (`unknown-host`) until it registers again.

        Raises:
            HostStoreError: no such host.
        """
        number = self.shard_of(uuid)
        with transaction(self._shard_path(number)):
            doc = self._doc(uuid)
            if doc is None:
                raise HostStoreError(f"host {uuid!r}: no such host")
            doc["key_reset"] = {
                "at": utc_text(self._clock()),
                "fingerprint": key_fingerprint(doc["public_key"]) if doc["public_key"] else "",
            }
            doc["public_key"] = None
            self._put(number, doc, new=False)
        return _record(doc)

    # --- reports --------------------------------------------------------------------------

    def ingest(
        self,
        data: bytes,
        *,
        source: Source = "network",
        host_uuid: str | None = None,
        trust_on_first_use: bool = False,
    ) -> Ingested:
        """Verify a signed report and take it as its host's new state.

        `host_uuid` is the host the request is for (the URL): the report must be that host's.
        With `trust_on_first_use` (reports a technician carried on a stick), a host the site
        does not know, or whose key an admin reset, is registered with the key its report was
        signed with (`Ingested.registered`). Returns the report's events not seen before (the
        caller audits them).

        Raises:
            HostRefused: `too-large` (413), `malformed` (400), `wrong-host` (403),
                `unknown-host` (404), `bad-signature` (403), `replay` (409, with `last_seq`).
        """
        try:
            signed = read_signed_report(data)
        except ReportTooLargeError as e:
            raise HostRefused("too-large", 413, str(e)) from e
        except ReportError as e:
            raise HostRefused("malformed", 400, str(e)) from e
        uuid = signed.host_uuid
        if host_uuid is not None and host_uuid.lower() != uuid:
            raise HostRefused(
                "wrong-host", 403, f"a report of host {uuid} sent as host {host_uuid[:128]!r}"
            )
        number = self.shard_of(uuid)
        with transaction(self._shard_path(number)):
            doc = self._doc(uuid)
            pinned = doc.get("public_key") if doc is not None else None
            if pinned is None and not (trust_on_first_use and signed.public_key):
                raise HostRefused(
                    "unknown-host",
                    404,
                    f"host {uuid} is not registered"
                    + (" (its key was reset: it must register again)" if doc else ""),
                )
            key = pinned or cast(str, signed.public_key)
            try:
                report = signed.verify(key)
            except ReportSignatureError as e:
                raise HostRefused("bad-signature", 403, str(e)) from e
            except ReportError as e:
                raise HostRefused("malformed", 400, str(e)) from e
            now = utc_text(self._clock())
            new = doc is None
            if doc is None:
                doc = _new_doc(uuid, key, report.computer_name, source, now)
            elif pinned is None:
                doc.update(public_key=key, registered_at=now, registered_source=source)
            last_seq = int(doc.get("last_seq", 0))
            if report.seq <= last_seq:
                raise HostRefused(
                    "replay",
                    409,
                    f"report #{report.seq} of host {uuid}: the site already has report "
                    f"#{last_seq} (a replay, or an older report)",
                    last_seq=last_seq,
                )
            seen = set(_seen_event_ids(doc, report.epoch))
            events = tuple(e for e in report.events if e.id not in seen)
            self._write_failures(uuid, report.failed)
            _apply(doc, report, source, now, events)
            self._put(number, doc, new=new)
        return Ingested(uuid, report.seq, events, registered=pinned is None, report=report)

    def _write_failures(self, uuid: str, failed: tuple[FailedPackage, ...]) -> None:
        path = self.failed_dir / f"{uuid}.json"
        try:
            if failed:
                self.failed_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_atomic(path, orjson.dumps([f.to_json() for f in failed]), mode=0o600)
            else:
                path.unlink(missing_ok=True)
        except OSError as e:
            raise HostStoreError(f"host {uuid}: cannot save its failure logs: {e}") from e

    def failure_logs(self, uuid: str) -> list[FailedPackage]:
        """The failures of host `uuid`'s last report, with their logs (untrusted text)."""
        try:
            check_host_uuid(uuid)
            raw = orjson.loads((self.failed_dir / f"{uuid}.json").read_bytes())
            return [FailedPackage.from_json(item, "failed") for item in raw]
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError, ReportError, TypeError) as e:
            raise HostStoreError(f"host {uuid}: cannot read its failure logs: {e}") from e

    # --- reading --------------------------------------------------------------------------

    def get(self, uuid: str) -> HostRecord | None:
        """Host `uuid`'s record, or None."""
        try:
            uuid = check_host_uuid(uuid.lower())
        except ReportError:
            return None
        with transaction(self._shard_path(self.shard_of(uuid))):
            doc = self._doc(uuid)
        return _record(doc) if doc is not None else None

    def summaries(self) -> list[HostSummary]:
        """Every host's summary, by name then UUID (from the index, refreshed if a file
        changed)."""
        with self._index_lock:
            if time.monotonic() - self._checked >= self._recheck_seconds:
                self._refresh_locked()
                self._checked = time.monotonic()
            if self._sorted is None or self._sorted[0] != self._generation:
                hosts = [h for shard in self._index for h in shard.values()]
                hosts.sort(key=lambda h: (h.name.lower(), h.uuid))
                self._sorted = (self._generation, hosts)
            return self._sorted[1]

    def __len__(self) -> int:
        return len(self.summaries())

    def list(
        self,
        *,
        search: str = "",
        status: str | None = None,
        group: str | None = None,
        page: int = 1,
        per_page: int = 50,
        stale_days: int = 7,
    ) -> tuple[list[HostSummary], int]:
        """One page of hosts matching the filters, and how many match in all.

        `search`: words that must all be in the name or UUID; `status`: one of
        `HOST_STATUSES` (`stale`: not seen for `stale_days` days); `group`: a machine group.

        Raises:
            HostStoreError: an unknown status.
        """
        if status and status not in HOST_STATUSES:
            raise HostStoreError(f"status {status!r}: use one of {', '.join(HOST_STATUSES)}")
        hosts: Iterable[HostSummary] = self.summaries()
        words = search.lower().split()
        for word in words:  # one plain comprehension per word: 5,000 hosts in under 1 ms
            hosts = [h for h in hosts if word in h.search_text]
        if status == "stale":
            since = self._clock() - timedelta(days=stale_days)
            hosts = [h for h in hosts if h.stale(since)]
        elif status:
            hosts = [h for h in hosts if h.status == status]
        if group:
            members = set(self._group_hosts(group)) if self._group_hosts else set()
            hosts = [h for h in hosts if h.uuid in members]
        matching = list(hosts)
        page = max(1, page)
        per_page = max(1, per_page)
        return matching[(page - 1) * per_page : page * per_page], len(matching)

    def counts(self, stale_days: int = 7) -> dict[str, int]:
        """How many hosts in each status, `stale` included, and `all`."""
        hosts = self.summaries()
        now = self._clock()
        key = (self._generation, stale_days, now.replace(second=0, microsecond=0))
        cached = self._counts
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        since = now - timedelta(days=stale_days)
        result = dict.fromkeys(HOST_STATUSES, 0)
        for host in hosts:
            result[host.status] += 1
            if host.stale(since):
                result["stale"] += 1
        result["all"] = len(hosts)
        self._counts = (key, result)
        return dict(result)

    def rollout(self, package: str) -> Rollout:
        """Where `package` stands on the hosts assigned to have it and on those reporting it,
        host by host (sorted by name).

        A host is `installed` (status OK), `failed` (a failure of the package, or installed in
        error), `pending` (still to do), or `missing` (assigned, no sign of it yet).
        """
        targets = self._targets() if self._targets else {}
        hosts = {h.uuid: h for h in self.summaries()}
        with self._index_lock:
            lines = list(self._lines.get(package, {}).values())
        targeted = set(targets.get(package, ()))
        missing = targeted - {line.uuid for line in lines}
        lines += [RolloutLine(u, hosts[u].name if u in hosts else "", "missing") for u in missing]
        lines.sort(key=lambda line: (line.name.lower(), line.uuid))
        counts: Counter[str] = Counter(line.state for line in lines)
        return Rollout(package, len(targeted), dict(counts), tuple(lines))

    def rollouts(self) -> builtins.list[Rollout]:
        """Every package assigned or reported by some host, by name, with its counts (no
        lines): the rollout index. Kept up to date as reports come, not recomputed."""
        targets = self._targets() if self._targets else {}
        self.summaries()  # the index is fresh
        result = []
        with self._index_lock:
            for package in sorted(set(self._lines) | set(targets)):
                lines = self._lines.get(package, {})
                counts = dict(self._package_counts.get(package, {}))
                targeted = set(targets.get(package, ()))
                missing = sum(1 for uuid in targeted if uuid not in lines)
                if missing:
                    counts["missing"] = missing
                result.append(Rollout(package, len(targeted), counts))
        return result

    # --- the index ------------------------------------------------------------------------

    def _refresh_locked(self) -> None:
        for number in range(SHARDS):
            path = self._shard_path(number)
            try:
                info = path.stat()
            except FileNotFoundError:
                stamp = None
            else:
                stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            if stamp == self._stamps[number]:
                continue
            with transaction(path):
                docs = [dict(d) for d in self._table(number).all()]
                self._stamps[number] = _file_stamp(path)
            fresh = {d["uuid"]: _summary(d) for d in docs}
            for uuid in set(self._index[number]) - set(fresh):
                self._set_lines(uuid, None)
            for summary in fresh.values():
                self._set_lines(summary.uuid, summary)
            self._index[number] = fresh
            self._generation += 1

    def _index_put(self, number: int, doc: dict[str, Any]) -> None:
        summary = _summary(doc)
        with self._index_lock:
            self._index[number][doc["uuid"]] = summary
            self._set_lines(summary.uuid, summary)
            self._stamps[number] = _file_stamp(self._shard_path(number))
            self._generation += 1

    def _set_lines(self, uuid: str, host: HostSummary | None) -> None:
        """Replace host `uuid`'s rollout lines (and the per-package counts) by `host`'s."""
        for package in self._host_packages.pop(uuid, ()):
            old = self._lines[package].pop(uuid)
            self._package_counts[package][old.state] -= 1
            if not self._lines[package]:
                del self._lines[package], self._package_counts[package]
        if host is None:
            return
        packages = {*host.installed, *host.pending, *host.failed}
        for package in packages:
            line = _rollout_line(host, package)
            if line is None:
                continue
            self._lines.setdefault(package, {})[uuid] = line
            self._package_counts.setdefault(package, Counter())[line.state] += 1
        self._host_packages[uuid] = packages


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _new_doc(uuid: str, public_key: str, name: str, source: str, now: str) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": name[:256],
        "public_key": public_key,
        "registered_at": now,
        "registered_source": source,
        "last_seen": None,
        "last_seq": 0,
        "last_source": None,
        "report_created": None,
        "os": "",
        "agent_version": "",
        "installed": [],
        "pending": PendingWork().to_json(),
        "failed": [],
        "history": [],
        "event_epochs": {},
    }


def _apply(
    doc: dict[str, Any],
    report: HostReport,
    source: str,
    received: str,
    events: tuple[ReportEvent, ...],
) -> None:
    """Make `doc` say what `report` says (compactly: lists, not objects, per package)."""
    pending = report.pending
    doc.update(
        name=report.computer_name[:256] or doc.get("name", ""),
        last_seen=received,
        last_seq=report.seq,
        last_source=source,
        report_created=report.created,
        os=report.os,
        agent_version=report.agent_version,
        installed=[
            [p.package, p.version, p.maturity, p.install_date, p.status] for p in report.installed
        ],
        pending=pending.to_json(),
        failed=[[f.package, f.version, f.when] for f in report.failed],
    )
    entry = {
        "seq": report.seq,
        "created": report.created,
        "received": received,
        "source": source,
        "installed": len(report.installed),
        "pending": sum(len(v) for v in pending.to_json().values()),
        "failed": len(report.failed),
        "events": len(events),
    }
    doc["history"] = [entry, *doc.get("history", [])][:HISTORY_KEPT]
    _remember_events(doc, report.epoch, [e.id for e in events])


def _seen_event_ids(doc: dict[str, Any], epoch: str) -> list[int]:
    """The ids of the events of task history `epoch` the site already has for this host.

    Records written before epochs kept one list, `event_ids`: the ids of agents without one.
    """
    epochs: dict[str, list[int]] = doc.get("event_epochs") or {"": doc.get("event_ids", [])}
    return epochs.get(epoch, [])


def _remember_events(doc: dict[str, Any], epoch: str, ids: list[int]) -> None:
    """Add `ids` to what the site has of `epoch`, which becomes the newest epoch kept.

    Task ids are unique within an epoch only: an agent whose task file was lost starts again
    at 1 in a new epoch, and those events are new. A few older epochs are kept so that a
    stick's old report (from before the loss) is still recognised.
    """
    epochs: dict[str, list[int]] = doc.pop("event_epochs", None) or {"": doc.get("event_ids", [])}
    doc.pop("event_ids", None)
    kept = [*epochs.pop(epoch, []), *ids][-EVENT_IDS_KEPT:]
    epochs = {k: v for k, v in epochs.items() if v}
    epochs[epoch] = kept
    doc["event_epochs"] = dict(list(epochs.items())[-EPOCHS_KEPT:])


def _summary(doc: dict[str, Any]) -> HostSummary:
    pending = PendingWork(**{k: tuple(v) for k, v in doc["pending"].items()})
    failed = frozenset(f[0] for f in doc["failed"])
    installed = {p[0]: (p[1], p[4]) for p in doc["installed"]}
    pending_names = _pending_names(pending)
    last_seen = doc.get("last_seen")
    return HostSummary(
        uuid=doc["uuid"],
        name=doc.get("name", ""),
        last_seen=parse_time(last_seen) if last_seen else None,
        status=_status(last_seen, bool(failed), bool(pending)),
        installed=installed,
        pending=pending_names,
        failed=failed,
        counts=(len(installed), sum(len(v) for v in doc["pending"].values()), len(failed)),
        search_text=f"{doc['uuid']} {doc.get('name', '')}".lower(),
    )


def _record(doc: dict[str, Any]) -> HostRecord:
    return HostRecord(
        uuid=doc["uuid"],
        name=doc.get("name", ""),
        public_key=doc.get("public_key"),
        registered_at=doc.get("registered_at", ""),
        registered_source=doc.get("registered_source", ""),
        last_seen=doc.get("last_seen"),
        last_seq=int(doc.get("last_seq", 0)),
        last_source=doc.get("last_source"),
        report_created=doc.get("report_created"),
        os=doc.get("os", ""),
        agent_version=doc.get("agent_version", ""),
        installed=tuple(InstalledPackage(*p) for p in doc["installed"]),
        pending=PendingWork(**{k: tuple(v) for k, v in doc["pending"].items()}),
        failed=tuple(FailedPackage(*f) for f in doc["failed"]),
        history=tuple(HistoryEntry(**h) for h in doc.get("history", [])),
        key_reset=doc.get("key_reset"),
    )


def _rollout_line(host: HostSummary, package: str) -> RolloutLine | None:
    installed = host.installed.get(package)
    if package in host.failed or (installed is not None and installed[1] == "ERROR"):
        return RolloutLine(host.uuid, host.name, "failed", installed[0] if installed else "")
    if package in host.pending:
        return RolloutLine(host.uuid, host.name, "pending", installed[0] if installed else "")
    if installed is not None:
        return RolloutLine(host.uuid, host.name, "installed", installed[0])
    return None


# --- wiring, audit, and reports carried on sticks -----------------------------------------------

#: intents that make a rollout count a host as "should have it"
TARGET_INTENTS: Final = ("required", "at_shutdown")
_EVENT_OUTCOMES: Final[dict[str, Outcome]] = {
    "done": "ok",
    "error": "failed",
    "cancelled": "failed",
}


def make_host_store(site: SiteSettings) -> HostStore:
    """The site's host store, with rollout targets and machine groups from its assignments."""
    assignments = AssignmentStore(site.data_dir)

    def targets() -> Mapping[str, Collection[str]]:
        groups = {g.name: g.hosts for g in assignments.groups()}
        found: dict[str, set[str]] = {}
        for item in assignments.assignments():
            if item.intent not in TARGET_INTENTS:
                continue
            hosts = (item.host,) if item.host is not None else groups.get(str(item.group), ())
            found.setdefault(item.package, set()).update(hosts)
        return found

    def group_hosts(name: str) -> Collection[str]:
        try:
            return assignments.group(name).hosts
        except UnknownRecordError:
            return ()

    return HostStore(site.data_dir, targets=targets, group_hosts=group_hosts)


def host_audit_events(
    host_uuid: str, events: Iterable[ReportEvent], *, source: str
) -> builtins.list[AuditEvent]:
    """The audit events of what a host reports that people did (teachers, the shutdown run)."""
    records = []
    for event in events:
        try:
            when = parse_time(event.when)
        except ModelError:
            when = datetime.now(UTC)
        records.append(
            AuditEvent.clipped(
                when=when,
                who=event.user or "?",
                role="system" if event.action == "shutdown" else "teacher",
                action=f"host.{event.action}",
                target=event.package,
                where=host_uuid,
                outcome=_EVENT_OUTCOMES.get(event.outcome, "failed"),
                details=f"task {event.id}, {event.outcome}, reported by {source}",
            )
        )
    return records


COLLECT_OUTCOMES: Final = ("taken", "registered", "stale", "refused")
"""taken; registered (an unknown host, trusted on first use); stale (the site has a newer
report of the host); refused (the file is bad: malformed, forged, another host's)."""


@dataclass(frozen=True)
class CollectedFile:
    """What became of one report file of a stick."""

    name: str
    outcome: Literal["taken", "registered", "stale", "refused"]
    host_uuid: str = ""
    seq: int = 0
    message: str = ""


@dataclass(frozen=True)
class Collected:
    """What `collect_reports` did, file by file."""

    files: tuple[CollectedFile, ...]

    def count(self, outcome: str) -> int:
        return sum(1 for f in self.files if f.outcome == outcome)

    @property
    def registered(self) -> builtins.list[CollectedFile]:
        return [f for f in self.files if f.outcome == "registered"]


def collect_reports(
    store: HostStore,
    directory: Path,
    *,
    audit_log: AuditLog,
    who: str,
    progress: Callable[[int, int], None] | None = None,
) -> Collected:
    """Import the signed reports a stick brought back (`<directory>/reports/*.json`).

    Each file is verified on its own and never stops the others: a known host's report must
    verify with its pinned key; an unknown host is registered with the key its report was
    signed with (trust on first use: the technician carried it). A file must be named after
    the host it reports on, be a regular file and stay under the size cap. Every file is
    audited (role technician, `who`), and the teachers' actions the reports carry too.

    Raises:
        HostStoreError: there is no `reports/` directory in `directory`.
        AuditError: the audit log cannot be written.
    """
    reports = directory / REPORTS_DIR
    if not reports.is_dir():
        raise HostStoreError(f"{directory}: no {REPORTS_DIR}/ directory: not a bundle with reports")
    paths = sorted(p for p in reports.iterdir() if p.name.endswith(".json"))
    results = []
    for done, path in enumerate(paths, start=1):
        result, events = _collect_one(store, path)
        results.append(result)
        audit_log.record_many(
            [
                AuditEvent.clipped(
                    when=datetime.now(UTC),
                    who=who,
                    role="technician",
                    action="bundle.collect",
                    target=result.host_uuid or path.name,
                    where=str(path),
                    outcome="refused" if result.outcome == "refused" else "ok",
                    details=f"{result.outcome}: {result.message}",
                ),
                *host_audit_events(result.host_uuid, events, source="usb"),
            ]
        )
        if progress is not None:
            progress(done, len(paths))
    return Collected(tuple(results))


def _collect_one(store: HostStore, path: Path) -> tuple[CollectedFile, tuple[ReportEvent, ...]]:
    name = path.name
    try:
        if path.is_symlink() or not path.is_file():
            raise HostRefused("malformed", 400, "not a regular file")
        with path.open("rb") as stream:
            data = stream.read(MAX_REPORT_BYTES + 1)
        taken = store.ingest(
            data, source="usb", host_uuid=name[: -len(".json")], trust_on_first_use=True
        )
    except HostRefused as e:
        if e.reason == "replay":
            return CollectedFile(name, "stale", name[: -len(".json")], 0, str(e)), ()
        return CollectedFile(name, "refused", "", 0, f"{e.reason}: {e}"), ()
    except OSError as e:
        return CollectedFile(name, "refused", "", 0, f"cannot read: {e.strerror or e}"), ()
    outcome: Literal["taken", "registered"] = "registered" if taken.registered else "taken"
    message = f"report #{taken.seq}, {len(taken.events)} new event(s)"
    return CollectedFile(name, outcome, taken.host_uuid, taken.seq, message), taken.events
