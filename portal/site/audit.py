"""The site's audit log: who did what, when, from where, with what outcome; append-only.

Every admin action, every refusal on an admin URL, and the teachers' actions that hosts report
are one `AuditEvent`. `AuditLog(directory)` keeps them as JSON lines, one file per UTC day
(`YYYY-MM-DD.jsonl`), because the log only grows (millions of lines over years) and TinyDB
rewrites its whole file on each write (ADR 8):

- an append is one `write` on a file opened with `O_APPEND` and one `fsync`, under the
  log's exclusive lock (`portal.site.storage.transaction`, `audit.lock`): the cost does not
  grow with the log;
- a crash can leave a torn last line: readers skip a line that does not parse, and the next
  append starts on a new line, so a torn line never swallows a good one;
- a search reads only the days of its date range, newest first, and keeps only the page it
  returns; `export_csv` streams every match.

Filters: `text` (case-insensitive, in who, action, target, where and details), `who` (exact,
case-insensitive), `action` (exact, or a prefix up to a dot: ``admin`` matches
``admin.login``), `role`, `outcome`, `since <= when < until`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import orjson

from portal.site.model import ModelError, parse_time, utc_text
from portal.site.storage import transaction
from wapt.fsutil import fsync_directory

__all__ = [
    "CSV_COLUMNS",
    "OUTCOMES",
    "ROLES",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "Outcome",
    "Role",
    "clip",
    "csv_cell",
]

log = logging.getLogger("comptoir.site.audit")

Role = Literal["admin", "teacher", "host", "technician", "system"]
Outcome = Literal["ok", "refused", "failed"]
ROLES: Final[tuple[Role, ...]] = ("admin", "teacher", "host", "technician", "system")
OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "refused", "failed")

ACTION_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
#: field -> most characters kept (host reports are untrusted: an event stays small)
LIMITS: Final = {"who": 256, "target": 1024, "where": 256, "details": 4096}
CSV_COLUMNS: Final = ("when", "who", "role", "action", "target", "where", "outcome", "details")
_DAY_FILE: Final = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")


def clip(value: str, field: str) -> str:
    """`value` shortened to what the log keeps for `field` (`LIMITS`), marked with an ellipsis."""
    limit = LIMITS[field]
    return value if len(value) <= limit else value[: limit - 1] + "…"


class AuditError(ModelError):
    """An audit event is not valid, or the log cannot be written; the message says why."""


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened: `who` (`role`) did `action` on `target` from `where`."""

    when: datetime
    who: str
    role: Role
    action: str
    target: str = ""
    #: a remote address for web requests, a host UUID for what hosts report
    where: str = ""
    outcome: Outcome = "ok"
    details: str = ""

    def __post_init__(self) -> None:
        if self.when.tzinfo is None or self.when.utcoffset() is None:
            raise AuditError(f"audit event {self.action!r}: the time has no time zone")
        if self.role not in ROLES:
            raise AuditError(f"audit event {self.action!r}: unknown role {self.role!r}")
        if self.outcome not in OUTCOMES:
            raise AuditError(f"audit event {self.action!r}: unknown outcome {self.outcome!r}")
        if not isinstance(self.action, str) or not ACTION_PATTERN.match(self.action):
            raise AuditError(
                f"audit event action {self.action!r}: lower-case letters, digits, '.', '_' "
                "and '-', at most 64"
            )
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                raise AuditError(f"audit event {self.action}: {name} is not text: {value!r}")
            if len(value) > limit:
                raise AuditError(
                    f"audit event {self.action}: {name} is {len(value)} characters, at most {limit}"
                )

    @classmethod
    def clipped(
        cls,
        when: datetime,
        who: str,
        role: Role,
        action: str,
        target: str = "",
        where: str = "",
        outcome: Outcome = "ok",
        details: str = "",
    ) -> AuditEvent:
        """An event of text that may be too long (untrusted, or a user's): each field is
        shortened to its limit instead of refused."""
        return cls(
            when=when,
            who=clip(who, "who"),
            role=role,
            action=action,
            target=clip(target, "target"),
            where=clip(where, "where"),
            outcome=outcome,
            details=clip(details, "details"),
        )

    def to_json(self) -> dict[str, str]:
        return {
            "when": utc_text(self.when),
            "who": self.who,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "where": self.where,
            "outcome": self.outcome,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, raw: Any) -> AuditEvent:
        """Raises `AuditError` (or `ModelError` for the time) for anything but an event."""
        if not isinstance(raw, dict):
            raise AuditError(f"not an audit event: {raw!r:.80}")
        try:
            return cls(
                when=parse_time(raw["when"], "when"),
                who=raw["who"],
                role=raw["role"],
                action=raw["action"],
                target=raw.get("target", ""),
                where=raw.get("where", ""),
                outcome=raw.get("outcome", "ok"),
                details=raw.get("details", ""),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise AuditError(f"not an audit event: {raw!r:.80}") from e

    def row(self) -> list[str]:
        """The CSV row (`CSV_COLUMNS`), every cell made safe for spreadsheets."""
        return [csv_cell(value) for value in self.to_json().values()]


def csv_cell(value: str) -> str:
    """`value`, prefixed with ``'`` if a spreadsheet would take it for a formula.

    Cells starting with ``= + - @`` (or a tab or carriage return, which some spreadsheets
    skip before looking) are formulas to Excel and LibreOffice: "CSV injection".
    """
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@dataclass(frozen=True)
class _Filters:
    text: str | None = None
    who: str | None = None
    action: str | None = None
    role: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise AuditError(f"audit search: {name} has no time zone")

    @property
    def first_day(self) -> date | None:
        return self.since.astimezone(UTC).date() if self.since else None

    @property
    def last_day(self) -> date | None:
        return self.until.astimezone(UTC).date() if self.until else None

    def quick_reject(self, line: bytes) -> bool:
        """True if the raw line cannot match (a cheap test before parsing it)."""
        text = self.text or ""
        # JSON keeps printable ASCII text as it is, but for quotes and backslashes
        plain = text.isascii() and text.isprintable()
        if (
            text
            and plain
            and '"' not in text
            and "\\" not in text
            and text.lower().encode() not in line.lower()
        ):
            return True
        for name in ("role", "outcome"):
            value = getattr(self, name)
            if value is not None and f'"{name}":"{value}"'.encode() not in line:
                return True
        return False

    def matches(self, event: AuditEvent) -> bool:
        if self.since is not None and event.when < self.since:
            return False
        if self.until is not None and event.when >= self.until:
            return False
        if self.role is not None and event.role != self.role:
            return False
        if self.outcome is not None and event.outcome != self.outcome:
            return False
        if self.who is not None and event.who.casefold() != self.who.casefold():
            return False
        if self.action is not None and not (
            event.action == self.action or event.action.startswith(self.action.rstrip(".") + ".")
        ):
            return False
        if self.text:
            needle = self.text.casefold()
            haystack = (event.who, event.action, event.target, event.where, event.details)
            if not any(needle in value.casefold() for value in haystack):
                return False
        return True


class AuditLog:
    """The audit log kept in `directory` (created on the first event). Thread and process safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.directory)!r})"

    def record(self, event: AuditEvent) -> None:
        """Append `event`, durably (it is on disk when this returns).

        Raises:
            AuditError: the log cannot be written (the message names the file and why).
        """
        self.record_many([event])

    def record_many(self, events: Iterable[AuditEvent]) -> None:
        """Append `events` (one write and one fsync per day file), durably.

        Raises:
            AuditError: an item is not an `AuditEvent`, or the log cannot be written.
        """
        by_day: dict[str, list[bytes]] = {}
        for event in events:
            if not isinstance(event, AuditEvent):
                raise AuditError(f"not an audit event: {event!r:.80}")
            day = event.when.astimezone(UTC).date().isoformat()
            by_day.setdefault(day, []).append(orjson.dumps(event.to_json()) + b"\n")
        if not by_day:
            return
        try:
            with transaction(self.directory / "audit"):  # audit.lock: threads and processes
                for day, lines in sorted(by_day.items()):
                    self._append(self.directory / f"{day}.jsonl", b"".join(lines))
        except OSError as e:
            raise AuditError(f"{self.directory}: cannot lock the audit log: {e}") from e

    def _append(self, path: Path, data: bytes) -> None:
        try:
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # the last append was torn by a crash: start on a line of our own
                    data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_directory(path.parent)
        except OSError as e:
            raise AuditError(f"{path}: cannot write the audit log: {e.strerror or e}") from e

    # --- reading ---------------------------------------------------------------------------

    def days(self) -> list[date]:
        """The days that have a file, newest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise AuditError(f"{self.directory}: cannot list the audit log: {e}") from e
        found = []
        for name in names:
            match = _DAY_FILE.match(name)
            if match:
                with contextlib.suppress(ValueError):
                    found.append(date.fromisoformat(match.group(1)))
        return sorted(found, reverse=True)

    def _read_day(self, day: date, filters: _Filters) -> list[AuditEvent]:
        path = self.directory / f"{day.isoformat()}.jsonl"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise AuditError(f"{path}: cannot read the audit log: {e.strerror or e}") from e
        lines = data.split(b"\n")
        if lines and lines[-1]:
            lines.pop()  # torn: not yet, or never, ended by its newline
        found = []
        for number, line in enumerate(lines, 1):
            if not line or filters.quick_reject(line):
                continue
            try:
                event = AuditEvent.from_json(orjson.loads(line))
            except (orjson.JSONDecodeError, ModelError) as e:
                log.warning("%s line %d: skipped, not an audit event: %s", path, number, e)
                continue
            if filters.matches(event):
                found.append(event)
        # newest first; events a host reported late sit among the day's by their time
        found.reverse()
        found.sort(key=lambda event: event.when, reverse=True)
        return found

    def _matching(self, filters: _Filters) -> Iterator[list[AuditEvent]]:
        first, last = filters.first_day, filters.last_day
        for day in self.days():
            if (last is not None and day > last) or (first is not None and day < first):
                continue
            yield self._read_day(day, filters)

    def search(
        self,
        *,
        text: str | None = None,
        who: str | None = None,
        action: str | None = None,
        role: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[AuditEvent], int]:
        """The page of matching events, newest first, and how many match in all.

        Raises:
            AuditError: a bound has no time zone, `limit` or `offset` is negative, or a file
                cannot be read.
        """
        if limit < 0 or offset < 0:
            raise AuditError(f"audit search: limit {limit} and offset {offset} must be >= 0")
        filters = _Filters(
            text or None, who or None, action or None, role or None, outcome or None, since, until
        )
        page: list[AuditEvent] = []
        total = 0
        for events in self._matching(filters):
            start = max(0, offset - total)
            end = max(0, offset + limit - total)
            page.extend(events[start:end])
            total += len(events)
        return page, total

    def export_csv(self, stream: TextIO, **filters: Any) -> int:
        """Write the matching events (newest first) as CSV with a header; return their number.

        Takes the filters of `search` (not `limit` and `offset`). Cells that a spreadsheet
        would run as formulas are prefixed with ``'`` (`csv_cell`).

        Raises:
            AuditError: as `search`; TypeError for an unknown filter.
        """
        count = 0
        for chunk, rows in self.csv_chunks(**filters):
            stream.write(chunk)
            count += rows
        return count

    def csv_chunks(self, **filters: Any) -> Iterator[tuple[str, int]]:
        """The CSV of `export_csv` in pieces (the header, then one piece per day) with their
        number of rows, for an answer streamed as it is read."""
        chosen = _Filters(**{k: v or None for k, v in filters.items()})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue(), 0
        for events in self._matching(chosen):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(event.row() for event in events)
            yield buffer.getvalue(), len(events)
