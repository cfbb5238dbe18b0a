"""WAPT's three version comparators (wapt-format.md §1.4) and package requests.

WAPT compares versions three ways, and they do not always agree:

1. `compare_versions` / `compare_entries` / `entry_sort_key`: `PackageEntry.__cmp__`, which picks
   the newest package of an index and detects upgrades. Versions matching WAPT's
   `REGEX_PACKAGE_VERSION` (up to 4 numeric members, optional `-packaging`) compare member by
   member as integers, a missing member lower than any number, then packaging in natural order;
   any other version falls back to plain string comparison.
2. `PackageVersion`: what `PackageRequest` uses for `depends` and `install x(>=1.2)`. The
   software part is padded or truncated to 4 members, the packaging must be an integer.
3. `OsVersion`: `waptutils.Version`, for OS versions and `min_wapt_version`; natural order
   member by member, a missing member as the empty string.

Python 2 orders `None` before every number and compares mixed lists of ints and strings; the
keys below reproduce those orders with tuples whose positions always hold the same type.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wapt.errors import VersionError

if TYPE_CHECKING:
    from wapt.control import PackageEntry

__all__ = [
    "OPERATORS",
    "OsVersion",
    "PackageRequest",
    "PackageVersion",
    "VersionKey",
    "compare_entries",
    "compare_versions",
    "entry_sort_key",
    "is_wapt_version",
    "version_key",
]

NaturalKey = tuple[str | int, ...]
"""Alternating text (lower-cased) and digit runs (as int), always starting with text."""

VersionKey = tuple[int, tuple[int, ...] | str, NaturalKey]
"""`(1, members, packaging)` for a WAPT version, `(0, text, ())` for any other string."""

# WAPT's REGEX_PACKAGE_VERSION. Its `$` also matches before a final newline; so does `\n?\Z`.
_PACKAGE_VERSION = re.compile(
    r"(?P<major>[0-9]+)(?:\.(?P<minor>[0-9]+))?(?:\.(?P<patch>[0-9]+))?(?:\.(?P<subpatch>[0-9]+))?"
    r"(?:-(?P<packaging>[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*))?\n?\Z"
)
_DIGIT_RUNS = re.compile(r"([0-9]+)")
_MISSING_MEMBER = -1  # members are digit runs, hence >= 0: -1 sorts first, like Python 2's None


def _natural_key(text: str) -> NaturalKey:
    """WAPT's `nat_cmp` key: `re.split('([0-9]+)')`, digit runs as int, text lower-cased."""
    parts = _DIGIT_RUNS.split(text)
    return tuple(int(part) if index % 2 else part.lower() for index, part in enumerate(parts))


def _cmp(a: Any, b: Any) -> int:
    """Python 2's `cmp` for two values of one orderable type."""
    return int(a > b) - int(a < b)


# --- comparator 1: PackageEntry.__cmp__ --------------------------------------------------


def is_wapt_version(version: str) -> bool:
    """Tell whether `version` matches WAPT's `REGEX_PACKAGE_VERSION` (compared structurally)."""
    return _PACKAGE_VERSION.match(version) is not None


@functools.lru_cache(maxsize=4096)
def version_key(version: str) -> VersionKey:
    """Return a sort key ordering versions like `PackageEntry.__cmp__` (comparator 1).

    For a version matching `REGEX_PACKAGE_VERSION`: `(1, members, packaging)`, members as ints
    with a missing one as -1 (before any number, as Python 2's None), packaging as a natural
    key (no packaging is `("",)`, which sorts before `-0`). For any other string: `(0, text,
    ())`, so such versions sort among themselves as plain strings, as WAPT does.

    WAPT compares a well-formed version with a malformed one as plain strings too, and that
    is not a total order (`1.2.3.4.5-1` > `1.10-1` > `1.9-1` > `1.2.3.4.5-1`): no key can
    agree with it. This key places every malformed version *before* every well-formed one,
    so `max()` never prefers a malformed version. Only such mixed pairs differ from
    `compare_versions`. Raises nothing.
    """
    match = _PACKAGE_VERSION.match(version)
    if match is None:
        return (0, version, ())
    members = tuple(
        _MISSING_MEMBER if (member := match.group(name)) is None else int(member)
        for name in ("major", "minor", "patch", "subpatch")
    )
    return (1, members, _natural_key(match.group("packaging") or ""))


def compare_versions(a: str, b: str) -> int:
    """Compare two versions as `PackageEntry.__cmp__` does: -1, 0 or 1 (comparator 1).

    Exactly WAPT's answer, including plain string comparison when either version does not
    match `REGEX_PACKAGE_VERSION` (see `version_key` for the one case where a sort key cannot
    follow). Raises nothing.
    """
    key_a, key_b = version_key(a), version_key(b)
    if key_a[0] and key_b[0]:
        return _cmp(key_a, key_b)
    return _cmp(a, b)


def compare_entries(a: PackageEntry, b: PackageEntry) -> int:
    """Compare two entries as `PackageEntry.__cmp__` does: -1, 0 or 1.

    Package name, then version (`compare_versions`), then maturity as a plain string (so
    `PROD` > `PREPROD` > `DEV` > ""), then the `signature_date` string. Raises nothing.
    """
    return (
        _cmp(a.package, b.package)
        or compare_versions(a.version, b.version)
        or _cmp(a.maturity, b.maturity)
        or _cmp(a.signature_date, b.signature_date)
    )


def entry_sort_key(entry: PackageEntry) -> tuple[str, VersionKey, str, str]:
    """Return a sort key consistent with `compare_entries`, for `sorted()` and `max()`.

    Agrees with `compare_entries` except between a well-formed and a malformed version of one
    package, where the malformed one sorts first (see `version_key`). Raises nothing.
    """
    return (entry.package, version_key(entry.version), entry.maturity, entry.signature_date)


# --- comparator 2: PackageVersion (PackageRequest) ---------------------------------------


def _python2_int(text: str, version: str) -> int:
    """`int(text)` as Python 2 reads it (no `_` digit separators), or VersionError."""
    try:
        if "_" in text:
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise VersionError(
            f"version {version!r}: packaging {text!r} is not an integer"
            " (WAPT's PackageVersion needs one)"
        ) from None


@functools.total_ordering
class PackageVersion:
    """WAPT's `PackageVersion` (comparator 2), the version of a package request.

    Split at the first `-`: the software part is padded with `0` or truncated to 4 members
    compared naturally (so `1.2` == `1.2.0.0`), the packaging is an `int` (None when absent,
    lower than any number).
    """

    __slots__ = ("packaging", "software", "text")

    text: str
    software: tuple[NaturalKey, ...]
    packaging: int | None

    def __init__(self, version: str) -> None:
        """Parse `version`.

        Raises:
            VersionError: the packaging (after the first `-`) is not an integer.
        """
        software, dash, packaging = version.partition("-")
        members = [member.strip() for member in software.split(".")]
        members = (members + ["0"] * 4)[:4]
        self.text = version
        self.software = tuple(_natural_key(member) for member in members)
        self.packaging = _python2_int(packaging, version) if dash else None

    def _key(self) -> tuple[tuple[NaturalKey, ...], tuple[int, ...]]:
        packaging = () if self.packaging is None else (self.packaging,)
        return (self.software, packaging)

    def compare(self, other: PackageVersion) -> int:
        """-1, 0 or 1, as Python 2's `cmp` on WAPT's `(Version, int)` tuples."""
        return _cmp(self._key(), other._key())

    def compare_software(self, other: PackageVersion) -> int:
        """-1, 0 or 1 on the software part only (a request without packaging)."""
        return _cmp(self.software, other.software)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackageVersion):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: PackageVersion) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"PackageVersion({self.text!r})"


# --- comparator 3: waptutils.Version -----------------------------------------------------


@functools.total_ordering
class OsVersion:
    """WAPT's `waptutils.Version` (comparator 3): OS versions, `min_wapt_version`.

    Members split on `.` and stripped, compared naturally one by one; a missing member is the
    empty string, which sorts before any other (`10.0` < `10.0.1`, `1.0` == `1.0.`). With
    `members_count`, padded with `0` or truncated to that many members.
    """

    __slots__ = ("_key", "members", "text")

    text: str
    members: tuple[str, ...]
    _key: tuple[NaturalKey, ...]

    def __init__(self, version: str, members_count: int | None = None) -> None:
        """Split `version`. Raises nothing."""
        members = [member.strip() for member in version.split(".")]
        if members_count is not None:
            members = (members + ["0"] * members_count)[:members_count]
        self.text = version
        self.members = tuple(members)
        key = [_natural_key(member) for member in members]
        # Comparing with missing members as "" is comparing with trailing "" members removed.
        while key and key[-1] == ("",):
            key.pop()
        self._key = tuple(key)

    def compare(self, other: OsVersion) -> int:
        """-1, 0 or 1, as `waptutils.Version.__cmp__`."""
        return _cmp(self._key, other._key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OsVersion):
            return NotImplemented
        return self._key == other._key

    def __lt__(self, other: OsVersion) -> bool:
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"OsVersion({self.text!r})"


# --- package requests --------------------------------------------------------------------

OPERATORS: dict[str, tuple[int, ...]] = {
    "==": (0,),
    "=": (0,),
    ">=": (0, 1),
    "<=": (-1, 0),
    ">": (1,),
    "<": (-1,),
}
"""Each operator and the comparison results (entry vs request version) that satisfy it."""

# WAPT's REGEX_PACKAGE_CONDITION, anchored: spaces are tolerated around the name, inside the
# parentheses and around the operator; anything WAPT would ignore or crash on is an error.
_REQUEST = re.compile(
    r"\s*(?P<name>[^\s(),]+)\s*"
    r"(?:\(\s*(?P<operator>[<=>]*)\s*(?P<version>[^\s()]*)\s*\))?\s*"
)


@dataclass(frozen=True)
class PackageRequest:
    """A package request: `name` or `name(op version)`, as in `depends` and install requests.

    `operator` is one of `OPERATORS` and is None exactly when `version` is None.
    """

    name: str
    operator: str | None = None
    version: str | None = None
    _wanted: PackageVersion | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the parts.

        Raises:
            VersionError: an empty or malformed name, an unknown operator, an operator without
                a version or the reverse, or a version `PackageVersion` cannot read.
        """
        problem = self._problem()
        if problem is not None:
            raise VersionError(f"package request {self!s}: {problem}")

    def _problem(self) -> str | None:
        """What is wrong with the parts, or None; parses the version on the way."""
        if not self.name or any(char.isspace() or char in "()," for char in self.name):
            return f"bad package name {self.name!r}"
        if self.operator is None and self.version is None:
            return None
        if self.operator is None:
            return f"version {self.version!r} without an operator"
        if self.operator not in OPERATORS:
            return f"unknown operator {self.operator!r} (expected one of {' '.join(OPERATORS)})"
        if not self.version:
            return f"operator {self.operator!r} without a version"
        if any(char.isspace() or char in "()" for char in self.version):
            return f"bad version {self.version!r}"
        try:
            object.__setattr__(self, "_wanted", PackageVersion(self.version))
        except VersionError as e:
            return str(e)
        return None

    @classmethod
    def parse(cls, text: str) -> PackageRequest:
        """Parse `name` or `name(op version)`; spaces around the parts are tolerated.

        Raises:
            VersionError: the text is not a request, the operator is not one of
                `= == > < >= <=`, or the version's packaging is not an integer. The message
                quotes the text.
        """
        match = _REQUEST.fullmatch(text)
        if match is None:
            raise VersionError(f"package request {text!r}: expected 'name' or 'name(op version)'")
        name, operator, version = match.group("name", "operator", "version")
        request = cls.__new__(cls)
        for attribute, value in (
            ("name", name),
            ("operator", operator),
            ("version", version),
            ("_wanted", None),
        ):
            object.__setattr__(request, attribute, value)
        problem = request._problem()
        if problem is not None:
            raise VersionError(f"package request {text!r}: {problem}")
        return request

    def is_matched_by(self, entry: PackageEntry | tuple[str, str]) -> bool:
        """Tell whether a package `(name, version)` satisfies this request.

        The name must be equal. The version is compared with `PackageVersion`; when the
        request gives no packaging, only the software part is compared (`=2.1` matches
        `2.1-3`).

        Raises:
            VersionError: the request has a version and the package's packaging is not an
                integer (WAPT raises too).
        """
        name, version = entry if isinstance(entry, tuple) else (entry.package, entry.version)
        if name != self.name:
            return False
        if self._wanted is None or self.operator is None:
            return True
        have = PackageVersion(version)
        if self._wanted.packaging is None:
            result = have.compare_software(self._wanted)
        else:
            result = have.compare(self._wanted)
        return result in OPERATORS[self.operator]

    def __str__(self) -> str:
        if self.operator is None:
            return self.name
        return f"{self.name}({self.operator}{self.version})"
