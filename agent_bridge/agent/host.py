"""The machine's identity and what its administrators assigned to it (wapt-format.md §3.3).

A machine is known by a UUID (created once and kept in the agent's state) or, if configured,
its FQDN. Its host package, `<uuid>.wapt` in the host repository, lists in `depends` what it must
have (packages and group packages) and in `conflicts` what it must not. A custom field,
`at_shutdown`, of the host package or of its group packages, lists packages that are installed
only by the shutdown run, and another, `deadlines` (``pkg=2026-12-01T18:00:00Z,pkg2=…``), by
when they must be installed at the latest. From that and the catalog, `compute_pending` tells,
like WAPT's `list_upgrade`, what is to install, upgrade, add as a dependency, or remove, and for
each shutdown item its deadline (the earliest one given) and its `impacted_process`.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_bridge.agent.config import AgentConfig
from agent_bridge.agent.state import AgentState
from wapt.control import PackageEntry
from wapt.errors import VersionError, WaptError
from wapt.package import verify_package
from wapt.repository import FetchResult, fetch
from wapt.resolve import HostProfile, best_candidate, resolve
from wapt.trust import TrustStore
from wapt.version import PackageRequest, version_key

AT_SHUTDOWN_FIELD = "at_shutdown"
DEADLINES_FIELD = "deadlines"
MAX_HOST_PACKAGE = 16 * 1024 * 1024


def host_identity(config: AgentConfig, state: AgentState) -> str:
    """This machine's package name: configured UUID, FQDN, or a UUID made once and kept."""
    if config.host_uuid:
        return config.host_uuid
    if config.use_fqdn_as_uuid:
        return socket.getfqdn().lower()
    known = state.get_param("host_uuid")
    if isinstance(known, str) and known:
        return known
    made = str(uuid.uuid4())
    state.set_param("host_uuid", made)
    return made


class HostPackageError(Exception):
    """The host package exists but cannot be used; the message says why."""


def fetch_host_package(
    config: AgentConfig, host_uuid: str, trust: TrustStore
) -> PackageEntry | None:
    """Download and verify this machine's host package; None when it has none.

    Raises:
        HostPackageError: it exists but does not verify, or the repository fails.
    """
    location = config.host_repository
    if not location:
        return None
    filename = f"{host_uuid}.wapt"
    target = config.cache_dir / "host" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if location.startswith(("http://", "https://")):
        try:
            answer: FetchResult = fetch(
                f"{location.rstrip('/')}/{filename}", max_size=MAX_HOST_PACKAGE
            )
        except WaptError as e:
            if "HTTP 404" in str(e):
                return None
            raise HostPackageError(f"host package {filename}: {e}") from e
        target.write_bytes(answer.body)
    else:
        source = Path(location) / filename
        if not source.is_file():
            return None
        target.write_bytes(source.read_bytes())
    try:
        verified = verify_package(target, trust)
    except WaptError as e:
        raise HostPackageError(f"host package {filename}: {e}") from e
    if verified.entry.package.lower() != host_uuid.lower():
        raise HostPackageError(
            f"host package {filename} names {verified.entry.package!r}, not this machine"
        )
    return verified.entry


def _requests(values: Iterable[str]) -> list[PackageRequest]:
    requests = []
    for text in values:
        try:
            requests.append(PackageRequest.parse(text))
        except VersionError:
            continue
    return requests


def _label(entry: PackageEntry) -> str:
    return f"{entry.package}(={entry.version})"


def parse_deadlines(text: str, *, source: str) -> tuple[dict[str, datetime], list[str]]:
    """Read a `deadlines` field, ``pkg=2026-12-01T18:00:00Z,pkg2=…``: {package: UTC time}.

    A time must carry its zone. Entries that cannot be read are left out and described in the
    returned problems (naming `source`), so one bad entry does not hide the others.
    """
    found: dict[str, datetime] = {}
    problems: list[str] = []
    for item in str(text or "").split(","):
        if not item.strip():
            continue
        name, sep, when = (part.strip() for part in item.partition("="))
        try:
            if not sep or not name:
                raise ValueError("expected package=time")
            moment = datetime.fromisoformat(when)
            if moment.tzinfo is None:
                raise ValueError("the time has no zone (write it in UTC, ending in Z)")
        except ValueError as e:
            problems.append(f"{source}: deadlines: {item.strip()!r}: {e}")
            continue
        moment = moment.astimezone(UTC)
        if name not in found or moment < found[name]:
            found[name] = moment
    return found, problems


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pending:
    """What the machine still has to do, as WAPT's `list_upgrade` says it."""

    install: list[str] = field(default_factory=list)
    upgrade: list[str] = field(default_factory=list)
    additional: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    at_shutdown: list[str] = field(default_factory=list)
    #: one per `at_shutdown` item: request, package, deadline (UTC text or None), processes
    shutdown_items: list[dict[str, Any]] = field(default_factory=list)
    #: `impacted_process` of every package an upgrade or the shutdown run would install
    impacted: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: requests to resolve at the next upgrade, shutdown ones included or not
    requests: list[str] = field(default_factory=list)
    shutdown_requests: list[str] = field(default_factory=list)

    def as_wapt(self) -> dict[str, list[str]]:
        return {
            "install": self.install,
            "upgrade": self.upgrade,
            "additional": self.additional,
            "remove": self.remove,
        }

    @property
    def upgrades(self) -> list[str]:
        return [*self.install, *self.upgrade, *self.additional]


def compute_pending(
    host_package: PackageEntry | None,
    catalog: list[PackageEntry],
    installed: Mapping[str, PackageEntry],
    profile: HostProfile,
) -> Pending:
    """What the host package asks for that is not done yet, and upgrades of installed packages."""
    pending = Pending()
    wanted = _requests(host_package.depends) if host_package is not None else []
    shutdown = _requests(
        str(host_package.get(AT_SHUTDOWN_FIELD)).split(",") if host_package is not None else []
    )
    for request in wanted:
        group = best_candidate(request, catalog, profile)
        if group is not None and group.section == "group":
            shutdown += _requests(str(group.get(AT_SHUTDOWN_FIELD)).split(","))
    deadlines: dict[str, datetime] = {}
    carriers = [host_package] if host_package is not None else []
    for request in wanted:
        group = best_candidate(request, catalog, profile)
        if group is not None and group.section == "group":
            carriers.append(group)
    for carrier in carriers:
        found, problems = parse_deadlines(
            str(carrier.get(DEADLINES_FIELD) or ""), source=carrier.package
        )
        pending.errors.extend(problems)
        for name, moment in found.items():
            if name not in deadlines or moment < deadlines[name]:
                deadlines[name] = moment  # the earliest deadline wins
    shutdown_names = {r.name for r in shutdown}
    wanted = [r for r in wanted if r.name not in shutdown_names]
    pending.requests = [str(r) for r in wanted]
    pending.shutdown_requests = [str(r) for r in shutdown]

    wanted_names = {r.name for r in wanted}
    try:
        plan = resolve(wanted, catalog, profile, installed=installed)
    except WaptError as e:
        pending.errors.append(str(e))
    else:
        for entry in plan.install:
            kind = "upgrade" if entry.package in installed else None
            if kind is None:
                kind = "install" if entry.package in wanted_names else "additional"
            getattr(pending, kind).append(_label(entry))
    for request in shutdown:
        current = installed.get(request.name)
        if current is None or not request.is_matched_by(current):
            candidate = best_candidate(request, catalog, profile)
            pending.at_shutdown.append(_label(candidate) if candidate else str(request))
            deadline = deadlines.get(request.name)
            pending.shutdown_items.append(
                {
                    "request": _label(candidate) if candidate else str(request),
                    "package": request.name,
                    "deadline": _utc_text(deadline) if deadline is not None else None,
                    "impacted_process": list(candidate.impacted_processes) if candidate else [],
                }
            )
            if candidate is not None and candidate.impacted_processes:
                pending.impacted[request.name] = list(candidate.impacted_processes)

    listed = {label.split("(")[0] for label in pending.upgrades}
    for name, current in sorted(installed.items()):
        if name in listed or current.section == "host":
            continue
        newest = best_candidate(PackageRequest(name, None, None), catalog, profile)
        if newest is not None and version_key(newest.version) > version_key(current.version):
            pending.upgrade.append(_label(newest))
    by_label = {_label(entry): entry for entry in catalog}
    for label in pending.upgrades:
        chosen = by_label.get(label)
        if chosen is not None and chosen.impacted_processes:
            pending.impacted[chosen.package] = list(chosen.impacted_processes)
    if host_package is not None:
        for request in _requests(host_package.conflicts):
            if request.name in installed and request.is_matched_by(installed[request.name]):
                pending.remove.append(request.name)
    return pending
