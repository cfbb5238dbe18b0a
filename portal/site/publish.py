"""Groups and assignments become signed group, selfservice and host packages.

WAPT's model: everything the admin decides travels as ordinary signed packages (wapt-format.md
§3.3), signed by the site's deployer key (no codeSigning: control-only packages, §2.4). For a
site whose `package_prefix` is `p`:

- `p-<group>` (section `group`, main repository): `depends` = the group's required packages and
  its selfservice package; `conflicts` = its uninstall packages; custom fields `at_shutdown:
  a,b` (installed by the shutdown run) and `deadlines: a=2026-12-01T18:00:00Z,b=…` (every
  assignment with a deadline; `comptoir shutdown` reads this exact name and format).
- `p-<group>-selfservice` (section `selfservice`, main repository): `WAPT/persistent/
  selfservice.json` = `{teacher group: [available packages]}` for the group's teacher groups.
- `<host>.wapt` (section `host`, `host_repository_dir`) for each host in a group or with
  assignments of its own: `depends` = its group packages and its own required packages;
  `conflicts` = its own uninstall packages, its groups' uninstall packages (the agent removes
  only what the host package's `conflicts` name, `agent_bridge.agent.host.compute_pending`),
  and the group and selfservice packages of groups it has left (so that it loses their
  self-service rights); `at_shutdown` and `deadlines` of its own assignments. A host that left
  every group keeps a host package, with nothing in `depends`: the agent must remove what was
  assigned, not forget it.

A package is rewritten only when its content changed, with a version one above the previous
one (agents only take a newer version); an unchanged one is left as it is. Older versions of
generated group and selfservice packages are removed once the new one is in place, then the
main `Packages` index is regenerated.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from portal.site.assignments import SELFSERVICE_SUFFIX, AssignmentStore
from portal.site.keys import KeySettings, SiteKeyError, load_signer
from portal.site.model import Assignment, MachineGroup, utc_text
from portal.site.storage import transaction
from wapt.archive import open_archive
from wapt.control import PackageEntry, format_control
from wapt.errors import WaptError
from wapt.fsutil import fsync_directory
from wapt.package import build_package, read_control_from
from wapt.repository import scan_repository
from wapt.trust import Signer
from wapt.version import version_key

__all__ = [
    "AT_SHUTDOWN_FIELD",
    "DEADLINES_FIELD",
    "PublishError",
    "PublishResult",
    "PublishSettings",
    "group_package_name",
    "publish",
    "selfservice_package_name",
]

AT_SHUTDOWN_FIELD: Final = "at_shutdown"
DEADLINES_FIELD: Final = "deadlines"
RULES_MEMBER: Final = "WAPT/persistent/selfservice.json"
#: the fields a publish decides; any difference with the file on disk means a new version
_COMPARED: Final = (
    "name",
    "description",
    "depends",
    "conflicts",
    AT_SHUTDOWN_FIELD,
    DEADLINES_FIELD,
)


class PublishError(Exception):
    """Publishing failed; the message names the package and the reason."""


class PublishSettings(KeySettings, Protocol):
    """The part of `SiteSettings` publishing needs."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def repository_dir(self) -> Path: ...

    @property
    def host_repository_dir(self) -> Path: ...

    @property
    def package_prefix(self) -> str: ...


@dataclass
class PublishResult:
    """What a publish wrote, left alone, and found contradictory."""

    #: file names written, in the main or host repository
    written: list[str] = field(default_factory=list)
    #: packages whose content had not changed
    unchanged: list[str] = field(default_factory=list)
    #: older generated files removed
    removed: list[str] = field(default_factory=list)
    #: contradictions the admin should resolve (e.g. required by one group, uninstalled by
    #: another); the packages are published all the same
    warnings: list[str] = field(default_factory=list)


def group_package_name(prefix: str, group: str) -> str:
    """`<prefix>-<group>`: the group package of a machine group."""
    return f"{prefix}-{group}"


def selfservice_package_name(prefix: str, group: str) -> str:
    """`<prefix>-<group>-selfservice`: the self-service rules of a machine group."""
    return f"{prefix}-{group}{SELFSERVICE_SUFFIX}"


def _joined(values: Iterable[str]) -> str:
    return ",".join(sorted(set(values)))


def _deadlines(assignments: Iterable[Assignment]) -> str:
    return ",".join(
        f"{a.package}={utc_text(a.deadline)}"
        for a in sorted(assignments, key=lambda a: a.package)
        if a.deadline is not None
    )


def _names(assignments: Iterable[Assignment], intent: str) -> list[str]:
    return [a.package for a in assignments if a.intent == intent]


@dataclass(frozen=True)
class _Wanted:
    """A package as this publish wants it: control fields and, for selfservice, the rules."""

    package: str
    section: str
    fields: dict[str, str]
    rules: dict[str, list[str]] | None = None


@dataclass(frozen=True)
class _Existing:
    path: Path
    entry: PackageEntry
    rules: dict[str, list[str]] | None


def _read_existing(path: Path) -> _Existing | None:
    """The control (and rules) of a package this site wrote before; None if unreadable."""
    try:
        with open_archive(path) as archive:
            entry = read_control_from(archive)
            rules = None
            info = archive.members.get(RULES_MEMBER)
            if info is not None:
                rules = json.loads(b"".join(archive.chunks(info)).decode("utf-8"))
    except (WaptError, OSError, ValueError):
        return None
    return _Existing(path, entry, rules)


def _version_number(version: str) -> int:
    head = version.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class _Publisher:
    def __init__(self, settings: PublishSettings, store: AssignmentStore, signer: Signer) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.prefix = settings.package_prefix
        self.result = PublishResult()

    def run(self) -> PublishResult:
        repo, hosts_dir = self.settings.repository_dir, self.settings.host_repository_dir
        repo.mkdir(parents=True, exist_ok=True)
        hosts_dir.mkdir(parents=True, exist_ok=True)
        groups = self.store.groups()
        assignments = self.store.assignments()
        by_group: dict[str, list[Assignment]] = {}
        by_host: dict[str, list[Assignment]] = {}
        for item in assignments:
            if item.group is not None:
                by_group.setdefault(item.group, []).append(item)
            else:
                by_host.setdefault(str(item.host), []).append(item)
        generated: set[str] = set()
        for group in groups:
            mine = by_group.get(group.name, [])
            self._publish_main(self._selfservice(group, mine))
            self._publish_main(self._group(group, mine))
            generated |= {
                group_package_name(self.prefix, group.name),
                selfservice_package_name(self.prefix, group.name),
            }
        generated |= self._generated_in_repository()
        members: dict[str, list[MachineGroup]] = {}
        for group in groups:
            for host in group.hosts:
                members.setdefault(host, []).append(group)
        known_hosts = set(members) | set(by_host) | self._hosts_with_packages()
        for host in sorted(known_hosts):
            wanted = self._host(
                host, members.get(host, []), by_host.get(host, []), by_group, generated
            )
            self._publish_host(wanted)
        try:
            scan_repository(repo)
        except WaptError as e:
            raise PublishError(f"{repo}: cannot regenerate the index: {e}") from e
        return self.result

    # --- what each package should say ---------------------------------------------------------

    def _selfservice(self, group: MachineGroup, mine: list[Assignment]) -> _Wanted:
        available = sorted(set(_names(mine, "available")))
        rules = {teacher: available for teacher in group.teacher_groups}
        name = selfservice_package_name(self.prefix, group.name)
        return _Wanted(
            name,
            "selfservice",
            {
                "name": f"{group.title} (self-service)",
                "description": f"Self-service rules of the machine group {group.name}",
                "depends": "",
                "conflicts": "",
                AT_SHUTDOWN_FIELD: "",
                DEADLINES_FIELD: "",
            },
            rules,
        )

    def _group(self, group: MachineGroup, mine: list[Assignment]) -> _Wanted:
        required = _names(mine, "required")
        depends = [*sorted(set(required)), selfservice_package_name(self.prefix, group.name)]
        return _Wanted(
            group_package_name(self.prefix, group.name),
            "group",
            {
                "name": group.title,
                "description": f"Machine group {group.name}",
                "depends": ",".join(depends),
                "conflicts": _joined(_names(mine, "uninstall")),
                AT_SHUTDOWN_FIELD: _joined(_names(mine, "at_shutdown")),
                DEADLINES_FIELD: _deadlines(mine),
            },
        )

    def _host(
        self,
        host: str,
        groups: list[MachineGroup],
        own: list[Assignment],
        by_group: dict[str, list[Assignment]],
        generated: set[str],
    ) -> _Wanted:
        group_packages = [group_package_name(self.prefix, g.name) for g in groups]
        required = set(_names(own, "required"))
        for group in groups:
            required |= set(_names(by_group.get(group.name, []), "required"))
        uninstall = set(_names(own, "uninstall"))
        for group in groups:
            uninstall |= set(_names(by_group.get(group.name, []), "uninstall"))
        contradictions = uninstall & required
        if contradictions:
            self.result.warnings.append(
                f"host {host}: {', '.join(sorted(contradictions))}: both required and to "
                "uninstall (through different assignments); its agent refuses the "
                "contradiction and installs nothing new until one of them is removed"
            )
        depends = [*group_packages, *sorted(set(_names(own, "required")))]
        # Group and selfservice packages it had and no longer has: removed, so that the
        # machine loses the group's self-service rights too.
        previous = _read_existing(self.settings.host_repository_dir / f"{host}.wapt")
        left: set[str] = set()
        if previous is not None:
            before = set(previous.entry.depends) | set(previous.entry.conflicts)
            for name in before & generated:
                left.add(name)
                if not name.endswith(SELFSERVICE_SUFFIX):
                    left.add(name + SELFSERVICE_SUFFIX)
        mine = set(group_packages) | {selfservice_package_name(self.prefix, g.name) for g in groups}
        conflicts = ((uninstall - required) | left) - mine
        return _Wanted(
            host,
            "host",
            {
                "name": "",
                "description": "",
                "depends": ",".join(depends),
                "conflicts": _joined(conflicts),
                AT_SHUTDOWN_FIELD: _joined(_names(own, "at_shutdown")),
                DEADLINES_FIELD: _deadlines(own),
            },
        )

    # --- what is on disk ------------------------------------------------------------------------

    def _generated_in_repository(self) -> set[str]:
        """Group and selfservice packages of this site in the repository (deleted groups too)."""
        found: set[str] = set()
        for path in self.settings.repository_dir.glob(f"{self.prefix}-*.wapt"):
            existing = _read_existing(path)
            if existing is not None and existing.entry.section in ("group", "selfservice"):
                found.add(existing.entry.package)
        return found

    def _hosts_with_packages(self) -> set[str]:
        return {p.stem for p in self.settings.host_repository_dir.glob("*.wapt")}

    def _existing_versions(self, package: str) -> list[_Existing]:
        found = []
        for path in self.settings.repository_dir.glob(f"{package}_*.wapt"):
            existing = _read_existing(path)
            if existing is not None and existing.entry.package == package:
                found.append(existing)
        found.sort(key=lambda e: version_key(e.entry.version))
        return found

    @staticmethod
    def _same(existing: _Existing, wanted: _Wanted) -> bool:
        entry = existing.entry
        if entry.section != wanted.section:
            return False
        for key in _COMPARED:
            have = entry.get(key)
            if key in ("depends", "conflicts"):
                have = ",".join(getattr(entry, key))
            if str(have or "") != wanted.fields[key]:
                return False
        return wanted.rules is None or existing.rules == wanted.rules

    # --- writing --------------------------------------------------------------------------------

    def _publish_main(self, wanted: _Wanted) -> None:
        versions = self._existing_versions(wanted.package)
        latest = versions[-1] if versions else None
        if latest is not None and self._same(latest, wanted):
            self.result.unchanged.append(wanted.package)
            return
        number = _version_number(latest.entry.version) + 1 if latest else 1
        made = self._build(wanted, number, self.settings.repository_dir, overwrite=False)
        self.result.written.append(made.name)
        for old in versions:
            old.path.unlink(missing_ok=True)
            self.result.removed.append(old.path.name)
        fsync_directory(self.settings.repository_dir)

    def _publish_host(self, wanted: _Wanted) -> None:
        previous = _read_existing(self.settings.host_repository_dir / f"{wanted.package}.wapt")
        if previous is not None and self._same(previous, wanted):
            self.result.unchanged.append(wanted.package)
            return
        number = _version_number(previous.entry.version) + 1 if previous else 1
        made = self._build(wanted, number, self.settings.host_repository_dir, overwrite=True)
        self.result.written.append(made.name)

    def _build(self, wanted: _Wanted, number: int, dest: Path, *, overwrite: bool) -> Path:
        entry = PackageEntry(
            {
                "package": wanted.package,
                "version": str(number),
                "architecture": "all",
                "section": wanted.section,
                "priority": "optional",
                "maintainer": f"{self.prefix} site server",
                **{k: v for k, v in wanted.fields.items() if v},
            }
        )
        with tempfile.TemporaryDirectory(prefix="comptoir-publish-") as tmp:
            source = Path(tmp)
            (source / "WAPT").mkdir()
            (source / "WAPT" / "control").write_text(format_control(entry), "utf-8")
            if wanted.rules is not None:
                rules = source / RULES_MEMBER
                rules.parent.mkdir(parents=True)
                rules.write_text(json.dumps(wanted.rules, ensure_ascii=False, indent=1), "utf-8")
            try:
                return build_package(source, self.signer, dest, overwrite=overwrite)
            except WaptError as e:
                raise PublishError(f"{wanted.package}: cannot build: {e}") from e


def publish(
    settings: PublishSettings,
    store: AssignmentStore,
    *,
    signer: Signer | None = None,
) -> PublishResult:
    """Write the site's group, selfservice and host packages from `store`; regenerate the
    index. One publish at a time (the `data_dir/publish` lock, across processes).

    `signer` defaults to the site's deployer key (`portal.site.keys`).

    Raises:
        PublishError: a key cannot be loaded, a package cannot be built, or the index cannot
            be written.
    """
    if signer is None:
        try:
            signer = load_signer(settings, "deployer")
        except SiteKeyError as e:
            raise PublishError(str(e)) from e
    with transaction(settings.data_dir / "publish"):
        return _Publisher(settings, store, signer).run()
