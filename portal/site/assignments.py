"""Machine groups and assignments: what admins decide, kept in one small TinyDB file.

`AssignmentStore(data_dir)` keeps `data_dir/assignments.json` (tables `groups` and
`assignments`) with `portal.site.storage`: each change is a read-modify-write under the file's
exclusive lock, written atomically. The file grows with groups and assignments, not with hosts
(a group lists its hosts' UUIDs), so one file stays small.

Rules a change must follow (each refusal is an `AssignmentError` naming the value and why):
group names are unique; an assignment names a known group or a well-formed host, a well-formed
package, a known intent, and a deadline in the future if any. One package has one intent per
target: assigning it again replaces the earlier assignment (an admin changes "available" into
"required" by assigning it again). A host may be in several groups.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

from tinydb import Query

from portal.site.model import INTENTS, Assignment, Intent, MachineGroup, ModelError, utc_text
from portal.site.storage import open_db, transaction

__all__ = [
    "HOST_PATTERN",
    "PACKAGE_PATTERN",
    "AssignmentError",
    "AssignmentStore",
    "UnknownRecordError",
    "check_host",
    "check_package_name",
]

PACKAGE_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
"""Package names an assignment may carry: what WAPT names packages with, and nothing that
would break a control field list (`,`, `=`, parentheses, spaces)."""

HOST_PATTERN: Final = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,252}[a-z0-9])?$")
"""A host's identity: its UUID in lower case (or its FQDN, when agents are so configured)."""

STORE_FILE: Final = "assignments.json"
SELFSERVICE_SUFFIX: Final = "-selfservice"
"""`<prefix>-<group>-selfservice` is the self-service package of a group: no group may be
named so that its own package would take that name."""


class AssignmentError(ModelError):
    """A group or an assignment change is refused; the message names the value and why."""


class UnknownRecordError(AssignmentError):
    """The group or assignment named does not exist."""


def check_package_name(name: str) -> str:
    """`name` if it can be assigned (see `PACKAGE_PATTERN`).

    Raises:
        AssignmentError: it cannot.
    """
    if not PACKAGE_PATTERN.match(name):
        raise AssignmentError(
            f"package {name!r}: not a package name (letters, digits and . _ + ~ -, "
            "starting with a letter or digit, at most 128)"
        )
    return name


def check_host(host: str) -> str:
    """`host` lower-cased and stripped if it is a host identity (UUID or FQDN).

    Raises:
        AssignmentError: it is not.
    """
    value = host.strip().lower()
    if not HOST_PATTERN.match(value):
        raise AssignmentError(
            f"host {host!r}: not a host UUID (or FQDN): letters, digits, dots and dashes"
        )
    return value


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


class AssignmentStore:
    """Machine groups and assignments of one site (`data_dir/assignments.json`)."""

    def __init__(
        self, data_dir: Path, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.path = data_dir / STORE_FILE
        self._db = open_db(self.path)
        self._clock = clock

    # --- groups ----------------------------------------------------------------------------

    def groups(self) -> list[MachineGroup]:
        """Every machine group, by name."""
        docs = self._db.table("groups").all()
        return sorted((MachineGroup.from_json(dict(d)) for d in docs), key=lambda g: g.name)

    def group(self, name: str) -> MachineGroup:
        """The group `name`.

        Raises:
            UnknownRecordError: there is none.
        """
        doc = self._db.table("groups").get(Query().name == name)
        if doc is None:
            raise UnknownRecordError(f"group {name!r}: no such machine group")
        return MachineGroup.from_json(dict(cast(dict[str, Any], doc)))

    def groups_of(self, host: str) -> list[MachineGroup]:
        """The groups `host` is in."""
        return [g for g in self.groups() if host in g.hosts]

    def save_group(self, group: MachineGroup, *, create: bool) -> MachineGroup:
        """Create (`create`) or replace a group; hosts and teacher groups are normalised.

        Raises:
            AssignmentError: it exists (create) or does not (replace); a host or teacher group
                is malformed.
        """
        if group.name.endswith(SELFSERVICE_SUFFIX):
            raise AssignmentError(
                f"group name {group.name!r}: ends with {SELFSERVICE_SUFFIX!r}, which names the "
                "self-service packages of groups"
            )
        hosts = _unique(check_host(h) for h in group.hosts)
        teachers = _unique(t.strip() for t in group.teacher_groups)
        for teacher in teachers:
            if any(c in teacher for c in ',"\n') or len(teacher) > 256:
                raise AssignmentError(f"teacher group {teacher!r}: not a directory group name")
        clean = MachineGroup(group.name, group.title.strip(), hosts, teachers)
        with transaction(self.path):
            table = self._db.table("groups")
            exists = table.contains(Query().name == group.name)
            if create and exists:
                raise AssignmentError(f"group {group.name!r}: a group of that name exists")
            if not create and not exists:
                raise UnknownRecordError(f"group {group.name!r}: no such machine group")
            table.upsert(clean.to_json(), Query().name == group.name)
        return clean

    def delete_group(self, name: str) -> list[Assignment]:
        """Delete a group and its assignments; return the assignments removed.

        Raises:
            UnknownRecordError: there is no such group.
        """
        with transaction(self.path):
            if not self._db.table("groups").remove(Query().name == name):
                raise UnknownRecordError(f"group {name!r}: no such machine group")
            removed = self.assignments(group=name)
            self._db.table("assignments").remove(Query().group == name)
        return removed

    # --- assignments -----------------------------------------------------------------------

    def assignments(
        self,
        *,
        group: str | None = None,
        host: str | None = None,
        intent: Intent | None = None,
    ) -> list[Assignment]:
        """Assignments, filtered by group, host (its own, not its groups') and intent; sorted
        by target, package."""
        found = []
        for doc in self._db.table("assignments").all():
            item = Assignment.from_json(dict(doc))
            if group is not None and item.group != group:
                continue
            if host is not None and item.host != host:
                continue
            if intent is not None and item.intent != intent:
                continue
            found.append(item)
        return sorted(found, key=lambda a: (a.group is None, a.target, a.package))

    def assignment(self, assignment_id: str) -> Assignment:
        """The assignment with this id.

        Raises:
            UnknownRecordError: there is none.
        """
        doc = self._db.table("assignments").get(Query().id == assignment_id)
        if doc is None:
            raise UnknownRecordError(f"assignment {assignment_id!r}: no such assignment")
        return Assignment.from_json(dict(cast(dict[str, Any], doc)))

    def assign(
        self,
        package: str,
        intent: str,
        *,
        group: str | None = None,
        host: str | None = None,
        deadline: datetime | None = None,
        created_by: str = "",
    ) -> Assignment:
        """Give `package` to a group or a host with `intent`; replaces the same package's
        earlier assignment to that target.

        Raises:
            AssignmentError: unknown intent or group, malformed package or host, both or
                neither target, a deadline that is not in the future.
        """
        check_package_name(package)
        if intent not in INTENTS:
            raise AssignmentError(f"intent {intent!r}: unknown; use one of {', '.join(INTENTS)}")
        if (group is None) == (host is None):
            raise AssignmentError(f"package {package}: give a group or a host, not both")
        if host is not None:
            host = check_host(host)
            if intent == "available":
                raise AssignmentError(
                    f"package {package}: 'available' is for machine groups (it grants the "
                    "group's teachers self-service), not for one host"
                )
        now = self._clock()
        if deadline is not None:
            if deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
            if deadline <= now:
                raise AssignmentError(
                    f"deadline {utc_text(deadline)}: in the past (now {utc_text(now)})"
                )
        with transaction(self.path):
            if group is not None:
                self.group(group)
            item = Assignment(
                id=secrets.token_hex(8),
                package=package,
                intent=intent,
                group=group,
                host=host,
                deadline=deadline.replace(microsecond=0) if deadline else None,
                created_by=created_by,
                created_at=now.replace(microsecond=0),
            )
            query = Query()
            table = self._db.table("assignments")
            same_target = (query.group == group) if group is not None else (query.host == host)
            table.remove((query.package == package) & same_target)
            table.insert(item.to_json())
        return item

    def unassign(self, assignment_id: str) -> Assignment:
        """Remove an assignment; return it.

        Raises:
            UnknownRecordError: there is none with this id.
        """
        with transaction(self.path):
            item = self.assignment(assignment_id)
            self._db.table("assignments").remove(Query().id == assignment_id)
        return item

    def hosts(self) -> list[str]:
        """Every host that is in a group or has assignments of its own, sorted."""
        found = {h for g in self.groups() for h in g.hosts}
        found |= {a.host for a in self.assignments() if a.host is not None}
        return sorted(found)
