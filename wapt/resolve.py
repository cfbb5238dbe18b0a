"""Install sets: which packages a request brings in, in which order, and what must go (§1.4, §3.2).

Candidates are filtered like WAPT's `HostCapabilities.is_matching_package` (operating system,
architecture, locale, maturity, version bounds, validity dates) and ordered like
`PackageRequest.compare_packages`: highest version first, then the host's preference order for
architecture, locale and maturity. Dependencies come before the packages that need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from wapt.control import PackageEntry
from wapt.errors import (
    ConflictError,
    DependencyCycleError,
    MissingDependencyError,
    VersionError,
)
from wapt.version import OsVersion, PackageRequest, version_key

UNIX_SYSTEMS = frozenset({"linux", "darwin"})


@dataclass(frozen=True)
class HostProfile:
    """What a machine is and prefers; orders are preference orders, first preferred."""

    os: str = "linux"
    os_version: str = ""
    architectures: tuple[str, ...] = ("x64", "x86")
    locales: tuple[str, ...] = ("fr", "en")
    #: accepted maturities; an empty maturity counts as PROD
    maturities: tuple[str, ...] = ("PROD",)
    agent_version: str = "1.8.2"
    today: date | None = None

    def why_not(self, entry: PackageEntry) -> str | None:
        """None if `entry` suits this host, else the reason it does not."""
        targets = {t.strip().lower() for t in str(entry.get("target_os")).split(",") if t.strip()}
        if targets and "all" not in targets:
            ok = self.os in targets or ("unix" in targets and self.os in UNIX_SYSTEMS)
            if not ok:
                return f"target_os {entry.get('target_os')!r} excludes {self.os}"
        arch = entry.architecture or "all"
        if arch != "all" and arch not in self.architectures:
            return f"architecture {arch} is not one of {', '.join(self.architectures)}"
        locales = {loc for loc in entry.locales if loc != "all"}
        if locales and not locales & set(self.locales):
            return f"locale {','.join(sorted(locales))} is not one of {', '.join(self.locales)}"
        maturity = entry.maturity or "PROD"
        if maturity not in self.maturities:
            return f"maturity {maturity} is not accepted here ({', '.join(self.maturities)})"
        if self.os_version:
            low, high = str(entry.get("min_os_version")), str(entry.get("max_os_version"))
            if low and OsVersion(self.os_version) < OsVersion(low):
                return f"needs OS version {low} or later"
            if high and OsVersion(self.os_version) > OsVersion(high):
                return f"needs OS version {high} or earlier"
        needed = str(entry.get("min_wapt_version"))
        if needed and OsVersion(self.agent_version) < OsVersion(needed):
            return f"needs agent version {needed} or later"
        today = (self.today or date.today()).isoformat()
        valid_from, valid_until = str(entry.get("valid_from")), str(entry.get("valid_until"))
        if valid_from and today < valid_from[:10]:
            return f"valid only from {valid_from}"
        if valid_until and today > valid_until[:10]:
            return f"valid only until {valid_until}"
        return None

    def preference(self, entry: PackageEntry) -> tuple[int, int, int]:
        """Higher is better: architecture, locale, maturity by this host's order."""

        def rank(value: str, order: Sequence[str]) -> int:
            return len(order) - order.index(value) if value in order else 0

        locale_rank = max((rank(loc, self.locales) for loc in entry.locales), default=0)
        return (
            rank(entry.architecture, self.architectures),
            locale_rank,
            rank(entry.maturity or "PROD", self.maturities),
        )


@dataclass
class InstallPlan:
    """What to do, in order: `install` has every dependency before its dependents."""

    install: list[PackageEntry] = field(default_factory=list)
    #: installed packages that a package of the set conflicts with
    remove: list[str] = field(default_factory=list)
    #: requested packages already installed in a suitable version
    unchanged: list[str] = field(default_factory=list)


def best_candidate(
    request: PackageRequest, candidates: Iterable[PackageEntry], host: HostProfile
) -> PackageEntry | None:
    """The entry that WAPT would pick for `request` on `host`, or None."""
    best: PackageEntry | None = None
    best_key: tuple[object, ...] = ()
    for entry in candidates:
        if entry.package != request.name or host.why_not(entry) is not None:
            continue
        try:
            if not request.is_matched_by(entry):
                continue
        except VersionError:
            continue
        key = (version_key(entry.version), host.preference(entry))
        if best is None or key > best_key:
            best, best_key = entry, key
    return best


def resolve(
    requests: Iterable[str | PackageRequest],
    available: Iterable[PackageEntry],
    host: HostProfile,
    *,
    installed: Mapping[str, PackageEntry] | None = None,
    upgrade: bool = False,
) -> InstallPlan:
    """Resolve requests such as `acme-app` or `acme-libfoo(>=2.1)` into an install plan.

    A package already installed in a version that satisfies a request is kept unless
    `upgrade` is set and a newer one is available.

    Raises:
        VersionError: a request or a `depends` entry cannot be parsed.
        MissingDependencyError: nothing available satisfies a request; names the chain.
        DependencyCycleError: dependencies loop; names the cycle.
        ConflictError: two packages of the set conflict; names both.
    """
    by_name: dict[str, list[PackageEntry]] = {}
    for entry in available:
        by_name.setdefault(entry.package, []).append(entry)
    installed = dict(installed or {})
    plan = InstallPlan()
    chosen: dict[str, PackageEntry] = {}
    visiting: list[str] = []

    def label(entry: PackageEntry) -> str:
        return f"{entry.package}(={entry.version})"

    def visit(request: PackageRequest, chain: list[str]) -> None:
        name = request.name
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise DependencyCycleError(f"dependency cycle: {' -> '.join(cycle)}")
        if name in chosen:
            if not request.is_matched_by(chosen[name]):
                raise ConflictError(
                    f"{' -> '.join([*chain, str(request)])}: {label(chosen[name])} is already "
                    "chosen for another request"
                )
            return
        current = installed.get(name)
        newest = best_candidate(request, by_name.get(name, ()), host)
        if current is not None and request.is_matched_by(current):
            newer = newest is not None and version_key(newest.version) > version_key(
                current.version
            )
            if not (upgrade and newer):
                if not chain:
                    plan.unchanged.append(name)
                return
        if newest is None:
            reason = _why_missing(request, by_name.get(name, ()), host)
            raise MissingDependencyError(f"{' -> '.join([*chain, str(request)])}: {reason}")
        visiting.append(name)
        for dependency in newest.depends:
            visit(PackageRequest.parse(dependency), [*chain, label(newest)])
        visiting.pop()
        chosen[name] = newest
        plan.install.append(newest)

    for request in requests:
        parsed = request if isinstance(request, PackageRequest) else PackageRequest.parse(request)
        visit(parsed, [])

    for entry in plan.install:
        for text in entry.conflicts:
            conflict = PackageRequest.parse(text)
            other = chosen.get(conflict.name)
            if other is not None and other is not entry and conflict.is_matched_by(other):
                raise ConflictError(f"{label(entry)} conflicts with {label(other)}")
            present = installed.get(conflict.name)
            if (
                present is not None
                and conflict.is_matched_by(present)
                and conflict.name not in plan.remove
            ):
                plan.remove.append(conflict.name)
    return plan


def _why_missing(
    request: PackageRequest, candidates: Sequence[PackageEntry], host: HostProfile
) -> str:
    if not candidates:
        return "no such package"
    reasons = []
    for entry in candidates:
        why = host.why_not(entry)
        if why is None:
            why = "version does not match"
        reasons.append(f"{entry.version} ({entry.maturity or 'PROD'}): {why}")
    return "no suitable version: " + "; ".join(reasons)
