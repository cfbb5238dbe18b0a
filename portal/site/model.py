"""The site server's records: what admins decide, in plain frozen dataclasses.

Machine groups and assignments are what `portal.site.publish` turns into signed group, host and
selfservice packages (`wapt-format.md` §3.3); published catalogs are the read-only lists of
software shown per catalog (and the `--catalog` of USB bundles). The stores keep them as JSON
with `to_json`/`from_json`; nothing here touches a file or the web.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "INTENTS",
    "NAME_PATTERN",
    "Assignment",
    "Intent",
    "MachineGroup",
    "ModelError",
    "PublishedCatalog",
    "check_name",
    "parse_time",
    "utc_text",
]

Intent = Literal["available", "required", "at_shutdown", "uninstall"]
INTENTS: Final[tuple[Intent, ...]] = ("available", "required", "at_shutdown", "uninstall")
"""available: teachers of the group may self-install it (selfservice rules);
required: installed at the machine's next update (`depends`);
at_shutdown: installed by `comptoir shutdown` (the `at_shutdown` control field);
uninstall: removed (`conflicts`)."""

NAME_PATTERN: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
"""Names of groups and catalogs: they become parts of package names and of URLs."""


class ModelError(ValueError):
    """A record is not valid; the message names the field and the reason."""


def check_name(value: str, what: str) -> str:
    """`value` if it is a valid group or catalog name (lower case, digits, inner dashes)."""
    if not NAME_PATTERN.match(value):
        raise ModelError(
            f"{what} {value!r}: use 1 to 64 lower-case letters, digits and inner dashes"
        )
    return value


def utc_text(when: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second: how every time is stored and carried."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str = "time") -> datetime:
    """Parse an ISO 8601 time; a time without a zone is UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ModelError(f"{what} {text!r}: not an ISO 8601 time") from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class MachineGroup:
    """Machines that get the same software, e.g. "Lycée Chateaubriand — salle 101"."""

    name: str
    title: str
    #: host UUIDs (lower case) of the machines in the group
    hosts: tuple[str, ...] = ()
    #: directory groups of the teachers the machines serve (their self-service rules)
    teacher_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, "group name")
        if not self.title.strip():
            raise ModelError(f"group {self.name}: the title is empty")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "hosts": list(self.hosts),
            "teacher_groups": list(self.teacher_groups),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MachineGroup:
        return cls(
            name=raw["name"],
            title=raw["title"],
            hosts=tuple(raw.get("hosts", ())),
            teacher_groups=tuple(raw.get("teacher_groups", ())),
        )


@dataclass(frozen=True)
class Assignment:
    """One package given to a machine group or to one host, with an intent."""

    id: str
    package: str
    intent: Intent
    #: exactly one of `group` (a MachineGroup name) and `host` (a host UUID) is set
    group: str | None = None
    host: str | None = None
    #: at_shutdown: after it the user may no longer postpone; required: late after it
    deadline: datetime | None = None
    created_by: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __post_init__(self) -> None:
        if self.intent not in INTENTS:
            raise ModelError(f"assignment {self.id}: unknown intent {self.intent!r}")
        if (self.group is None) == (self.host is None):
            raise ModelError(f"assignment {self.id}: give a group or a host, not both")
        if not self.package.strip():
            raise ModelError(f"assignment {self.id}: no package")

    @property
    def target(self) -> str:
        return self.group if self.group is not None else str(self.host)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package": self.package,
            "intent": self.intent,
            "group": self.group,
            "host": self.host,
            "deadline": utc_text(self.deadline) if self.deadline else None,
            "created_by": self.created_by,
            "created_at": utc_text(self.created_at),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Assignment:
        return cls(
            id=raw["id"],
            package=raw["package"],
            intent=raw["intent"],
            group=raw.get("group"),
            host=raw.get("host"),
            deadline=parse_time(raw["deadline"], "deadline") if raw.get("deadline") else None,
            created_by=raw.get("created_by", ""),
            created_at=parse_time(raw["created_at"], "created_at"),
        )


@dataclass(frozen=True)
class PublishedCatalog:
    """A named list of software with its descriptions, shown read-only to everyone."""

    name: str
    title: str
    description: str = ""
    packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, "catalog name")
        if not self.title.strip():
            raise ModelError(f"catalog {self.name}: the title is empty")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "packages": list(self.packages),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PublishedCatalog:
        return cls(
            name=raw["name"],
            title=raw["title"],
            description=raw.get("description", ""),
            packages=tuple(raw.get("packages", ())),
        )
