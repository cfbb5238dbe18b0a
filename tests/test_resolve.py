"""Install sets: dependencies first, best candidate by version then host preferences."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests.helpers import PKI
from wapt import errors
from wapt.control import PackageEntry
from wapt.repository import load_index
from wapt.resolve import HostProfile, best_candidate, resolve
from wapt.trust import TrustStore
from wapt.version import PackageRequest


@pytest.fixture(scope="module")
def fixture_entries(wapt_fixtures: Path) -> list[PackageEntry]:
    return load_index(wapt_fixtures / "repo", TrustStore.from_path(PKI / "ca.crt")).entries


def entry(package: str, version: str, **fields: str) -> PackageEntry:
    return PackageEntry({"package": package, "version": version, "maturity": "PROD", **fields})


def names(plan_install: list[PackageEntry]) -> list[str]:
    return [f"{e.package}={e.version}" for e in plan_install]


def test_dependencies_come_first(fixture_entries: list[PackageEntry]) -> None:
    plan = resolve(["acme-app"], fixture_entries, HostProfile())
    assert names(plan.install) == ["acme-libfoo=2.1-3", "acme-app=3.0.1-1"]


def test_group_brings_its_members(fixture_entries: list[PackageEntry]) -> None:
    plan = resolve(["acme-toolbox"], fixture_entries, HostProfile())
    assert names(plan.install) == [
        "acme-hello=1.2.0-3",
        "acme-libfoo=2.1-3",
        "acme-app=3.0.1-1",
        "acme-toolbox=1-2",
    ]


def test_maturity_decides_what_a_machine_sees(fixture_entries: list[PackageEntry]) -> None:
    production = best_candidate(PackageRequest.parse("acme-hello"), fixture_entries, HostProfile())
    qualification = best_candidate(
        PackageRequest.parse("acme-hello"),
        fixture_entries,
        HostProfile(maturities=("PREPROD", "PROD")),
    )
    assert production is not None and production.version == "1.2.0-3"
    assert qualification is not None and qualification.version == "1.3.0-1"


def test_locale_filter(fixture_entries: list[PackageEntry]) -> None:
    german = HostProfile(locales=("de",))
    with pytest.raises(errors.MissingDependencyError, match="locale fr"):
        resolve(["acme-hello"], fixture_entries, german)


def test_missing_dependency_names_the_chain() -> None:
    available = [entry("a", "1-1", depends="b"), entry("b", "1-1", depends="c(>=2)")]
    with pytest.raises(errors.MissingDependencyError) as caught:
        resolve(["a"], available, HostProfile())
    assert str(caught.value).startswith("a(=1-1) -> b(=1-1) -> c(>=2): no such package")


def test_version_constraint_picks_a_matching_older_version() -> None:
    available = [
        entry("lib", "1.0-1"),
        entry("lib", "2.0-1"),
        entry("app", "1-1", depends="lib(<2)"),
    ]
    plan = resolve(["app"], available, HostProfile())
    assert names(plan.install) == ["lib=1.0-1", "app=1-1"]


def test_cycle_is_named() -> None:
    available = [
        entry("a", "1-1", depends="b"),
        entry("b", "1-1", depends="c"),
        entry("c", "1-1", depends="a"),
    ]
    with pytest.raises(errors.DependencyCycleError, match=r"a -> b -> c -> a"):
        resolve(["a"], available, HostProfile())


def test_conflicts_inside_the_set_and_with_installed() -> None:
    available = [
        entry("a", "1-1", conflicts="b"),
        entry("b", "1-1"),
        entry("c", "1-1", conflicts="old"),
    ]
    with pytest.raises(errors.ConflictError, match=r"a\(=1-1\) conflicts with b\(=1-1\)"):
        resolve(["a", "b"], available, HostProfile())
    plan = resolve(["c"], available, HostProfile(), installed={"old": entry("old", "1-1")})
    assert plan.remove == ["old"]


def test_installed_package_is_kept_unless_upgrading() -> None:
    available = [entry("a", "1-1"), entry("a", "2-1")]
    installed = {"a": entry("a", "1-1")}
    assert resolve(["a"], available, HostProfile(), installed=installed).unchanged == ["a"]
    plan = resolve(["a"], available, HostProfile(), installed=installed, upgrade=True)
    assert names(plan.install) == ["a=2-1"]


def test_host_filters() -> None:
    host = HostProfile(os="linux", architectures=("x64",), today=date(2026, 6, 1))
    assert host.why_not(entry("a", "1", target_os="windows")) is not None
    assert host.why_not(entry("a", "1", target_os="unix")) is None
    assert host.why_not(entry("a", "1", architecture="x86")) is not None
    assert host.why_not(entry("a", "1", valid_until="2026-01-01")) is not None
    assert host.why_not(entry("a", "1", valid_from="2027-01-01")) is not None
    assert host.why_not(entry("a", "1", min_wapt_version="9.0")) is not None
    assert host.why_not(entry("a", "1", maturity="")) is None
    assert host.why_not(entry("a", "1", maturity="DEV")) is not None


def test_preferences_break_version_ties() -> None:
    both = [entry("a", "1-1", architecture="x86"), entry("a", "1-1", architecture="x64")]
    chosen = best_candidate(
        PackageRequest.parse("a"), both, HostProfile(architectures=("x64", "x86"))
    )
    assert chosen is not None and chosen.architecture == "x64"
