"""The site's local time: deadlines entered and shown in the site's time zone, kept in UTC.

Admins of a French school think in Paris time; the site stores and publishes every time in
UTC (`portal.site.model.utc_text`, the `deadlines` control field). `local_to_utc` reads what a
`datetime-local` field sends ("2026-12-01T18:00") as a time of the site's zone, and refuses a
time the zone skips (the clocks go forward) or has twice (they go back): guessing would move a
deadline by an hour. `local_text` shows a UTC time in the zone, with the zone's abbreviation
(CET, CEST), so the reader knows which.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portal.site.model import ModelError

__all__ = ["DEFAULT_ZONE", "LocalTimeError", "check_zone", "local_text", "local_to_utc", "zone"]

DEFAULT_ZONE: Final = "Europe/Paris"

Problem = Literal["invalid", "nonexistent", "ambiguous"]


class LocalTimeError(ModelError):
    """A local time that cannot be turned into one UTC time; `problem` says why."""

    def __init__(self, message: str, problem: Problem, text: str, zone_name: str) -> None:
        super().__init__(message)
        self.problem: Problem = problem
        self.text = text
        self.zone_name = zone_name


@lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    """The time zone `name` (an IANA name such as "Europe/Paris").

    Raises:
        ModelError: no such zone on this system.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ModelError(
            f"time zone {name!r}: unknown (use an IANA name such as {DEFAULT_ZONE!r})"
        ) from e


def check_zone(name: str) -> str:
    """`name` if it is a known time zone (see `zone`)."""
    zone(name)
    return name


def local_to_utc(text: str, zone_name: str, what: str = "deadline") -> datetime:
    """The UTC time of `text`, a date and time in zone `zone_name` (or with its own offset).

    Raises:
        LocalTimeError: not a date and time; a time the zone skips (`nonexistent`) or has
            twice (`ambiguous`) on the day its clocks change.
    """
    text = text.strip()
    try:
        naive = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LocalTimeError(
            f"{what} {text!r}: not a date and time (YYYY-MM-DDTHH:MM)", "invalid", text, zone_name
        ) from None
    if naive.tzinfo is not None:  # an explicit offset says which instant it is
        return naive.astimezone(UTC)
    tz = zone(zone_name)
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise LocalTimeError(
            f"{what} {text!r}: this time does not exist in {zone_name} (the clocks go forward)",
            "nonexistent",
            text,
            zone_name,
        )
    if first.utcoffset() != second.utcoffset():
        raise LocalTimeError(
            f"{what} {text!r}: this time happens twice in {zone_name} (the clocks go back)",
            "ambiguous",
            text,
            zone_name,
        )
    return first.astimezone(UTC)


def local_text(when: datetime, zone_name: str) -> str:
    """`when` in zone `zone_name` for people: "2026-12-01 19:00 CET"."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(zone(zone_name)).strftime("%Y-%m-%d %H:%M %Z")
