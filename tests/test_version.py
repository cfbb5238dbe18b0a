"""Tests of wapt.version: WAPT's three version comparators and package requests."""

from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import WAPT_FIXTURES
from wapt.control import PackageEntry, parse_control
from wapt.errors import VersionError
from wapt.version import (
    OPERATORS,
    OsVersion,
    PackageRequest,
    PackageVersion,
    compare_entries,
    compare_versions,
    entry_sort_key,
    is_wapt_version,
    version_key,
)


def _expected_rows(section: str) -> list[dict[str, Any]]:
    """Rows of expected.json, read at collection time to parametrize (checked non-empty below)."""
    path = WAPT_FIXTURES / "expected.json"
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))[section]
    return rows


def _row_id(row: dict[str, Any]) -> str:
    return f"{row['a']}|{row['b']}|{row.get('note', '')}"


VERSION_ROWS = _expected_rows("version_comparisons")
SET_PACKAGE_ROWS = _expected_rows("version_comparisons_of_set_packages")
REQUEST_ROWS = _expected_rows("package_requests")


def _entry(row: dict[str, Any], side: str) -> PackageEntry:
    fields = {"package": "acme-demo", "version": row[side]}
    for name in ("maturity", "signature_date"):
        if f"{side}_{name}" in row:
            fields[name] = row[f"{side}_{name}"]
    return PackageEntry(fields)


def _order(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def test_expected_rows_are_loaded(expected: dict[str, Any]) -> None:
    assert expected["version_comparisons"] == VERSION_ROWS
    assert expected["version_comparisons_of_set_packages"] == SET_PACKAGE_ROWS
    assert expected["package_requests"] == REQUEST_ROWS
    assert VERSION_ROWS
    assert SET_PACKAGE_ROWS
    assert REQUEST_ROWS


# --- comparator 1: PackageEntry.__cmp__ -------------------------------------------------------


@pytest.mark.parametrize("row", VERSION_ROWS, ids=_row_id)
def test_compare_entries_is_wapts(row: dict[str, Any]) -> None:
    a, b = _entry(row, "a"), _entry(row, "b")
    assert compare_entries(a, b) == row["cmp"]
    assert compare_entries(b, a) == -row["cmp"]


@pytest.mark.parametrize("row", VERSION_ROWS, ids=_row_id)
def test_compare_versions_is_wapts(row: dict[str, Any]) -> None:
    tie_breaks = {"a_maturity", "b_maturity", "a_signature_date", "b_signature_date"} & set(row)
    expected = 0 if tie_breaks and row["a"] == row["b"] else row["cmp"]
    assert compare_versions(row["a"], row["b"]) == expected


@pytest.mark.parametrize("row", VERSION_ROWS, ids=_row_id)
def test_entry_sort_key_agrees_with_compare_entries(row: dict[str, Any]) -> None:
    a, b = _entry(row, "a"), _entry(row, "b")
    key_order = _order(entry_sort_key(a), entry_sort_key(b))
    if is_wapt_version(row["a"]) == is_wapt_version(row["b"]):
        assert key_order == row["cmp"]
    else:
        # The documented exception: WAPT's mixed string comparison is not an order; the key
        # puts the malformed version first.
        assert key_order == (1 if is_wapt_version(row["a"]) else -1)


@pytest.mark.parametrize(
    "row", SET_PACKAGE_ROWS, ids=lambda row: f"{row['a_file']}|{row['b_file']}"
)
def test_compare_real_packages(wapt_fixtures: Path, row: dict[str, Any]) -> None:
    def load(name: str) -> PackageEntry:
        with zipfile.ZipFile(wapt_fixtures / "packages" / name) as archive:
            return parse_control(archive.read("WAPT/control"), source=name)

    a, b = load(row["a_file"]), load(row["b_file"])
    assert (a.version, a.maturity, a.signature_date) == (
        row["a"],
        row["a_maturity"],
        row["a_signature_date"],
    )
    assert (b.version, b.maturity, b.signature_date) == (
        row["b"],
        row["b_maturity"],
        row["b_signature_date"],
    )
    assert compare_entries(a, b) == row["cmp"]
    assert _order(entry_sort_key(a), entry_sort_key(b)) == row["cmp"]


def test_newest_real_package(wapt_fixtures: Path) -> None:
    entries = []
    for path in sorted((wapt_fixtures / "repo").glob("acme-hello_*.wapt")):
        with zipfile.ZipFile(path) as archive:
            entries.append(parse_control(archive.read("WAPT/control")))
    assert max(entries, key=entry_sort_key).version == "1.3.0-1"


def test_names_compare_first() -> None:
    a = PackageEntry({"package": "acme-a", "version": "9-9"})
    b = PackageEntry({"package": "acme-b", "version": "1-1"})
    assert compare_entries(a, b) == -1
    assert entry_sort_key(a) < entry_sort_key(b)


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        ("1.2.3.4.5-1", "1.2.3.4-1", 1),
        ("1.2.3.4.5-1", "10.0-1", -1),
        ("latest", "1.0-1", 1),
        ("abc", "abd", -1),
        ("1.0-1 ", "1.0-1 ", 0),
        ("", "0", -1),
        ("1.0-1\n", "1.0-1", 0),
    ],
)
def test_malformed_versions_compare_as_strings(a: str, b: str, result: int) -> None:
    assert compare_versions(a, b) == result


def test_version_key_shapes() -> None:
    assert version_key("1.2-3") == (1, (1, 2, -1, -1), ("", 3, ""))
    assert version_key("1.0") == (1, (1, 0, -1, -1), ("",))
    assert version_key("1.0-RC1.b") == (1, (1, 0, -1, -1), ("rc", 1, ".b"))
    assert version_key("1.2.3.4.5") == (0, "1.2.3.4.5", ())
    assert version_key("x") < version_key("0")


# --- comparator 2: PackageVersion -------------------------------------------------------------


@pytest.mark.parametrize("row", VERSION_ROWS, ids=_row_id)
def test_package_version_is_wapts(row: dict[str, Any]) -> None:
    wanted = row["package_version_cmp"]
    if isinstance(wanted, int):
        a, b = PackageVersion(row["a"]), PackageVersion(row["b"])
        assert a.compare(b) == wanted
        assert b.compare(a) == -wanted
        assert (a == b) is (wanted == 0)
        assert (a < b) is (wanted < 0)
    else:
        assert wanted.startswith("ValueError: invalid literal for int()")
        packaging = wanted.rsplit(": ", 1)[1].strip("'")
        with pytest.raises(VersionError) as caught:
            PackageVersion(row["a"]).compare(PackageVersion(row["b"]))
        assert repr(packaging) in str(caught.value)
        assert "version" in str(caught.value)


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        ("1.2", "1.2.0.0", 0),
        ("1.2.3.4.5", "1.2.3.4", 0),
        ("1.2", "1.2-0", -1),
        ("1.2-0", "1.2--1", 1),
        ("1.2- 3", "1.2-3", 0),
        ("1.10", "1.9", 1),
        ("1.0a", "1.0B", -1),
        ("", "0", -1),
    ],
)
def test_package_version_cases(a: str, b: str, result: int) -> None:
    assert PackageVersion(a).compare(PackageVersion(b)) == result
    if result == 0:
        assert hash(PackageVersion(a)) == hash(PackageVersion(b))


@pytest.mark.parametrize("version", ["1.0-", "1.0-1_000", "1.0-1-2", "1.0-0x1"])
def test_package_version_needs_integer_packaging(version: str) -> None:
    with pytest.raises(VersionError, match=version):
        PackageVersion(version)


# --- comparator 3: OsVersion --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        ("10.0", "10.0.1", -1),
        ("10.0", "10.0.", 0),
        ("10.0", "10.0.0", -1),
        ("6.1", "6.10", -1),
        ("10.0.19045", "10.0.9200", 1),
        ("1.0a", "1.0b", -1),
        ("1.0A", "1.0a", 0),
        (" 1 . 2 ", "1.2", 0),
        ("1.8.2.7", "1.8.2", 1),
        ("", "0", -1),
    ],
)
def test_os_version(a: str, b: str, result: int) -> None:
    assert OsVersion(a).compare(OsVersion(b)) == result
    assert OsVersion(b).compare(OsVersion(a)) == -result
    assert (OsVersion(a) == OsVersion(b)) is (result == 0)
    assert (OsVersion(a) < OsVersion(b)) is (result < 0)


def test_os_version_members_count() -> None:
    assert OsVersion("1.2", 4).members == ("1", "2", "0", "0")
    assert OsVersion("1.2.3.4.5", 4) == OsVersion("1.2.3.4")
    assert OsVersion("1.2", 4) == OsVersion("1.2.0.0")
    assert OsVersion("1.2") < OsVersion("1.2.0.0")
    assert str(OsVersion("10.0")) == "10.0"


# --- package requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("row", REQUEST_ROWS, ids=lambda row: f"{row['request']}|{row['version']}")
def test_package_requests_are_wapts(row: dict[str, Any]) -> None:
    request = PackageRequest.parse(row["request"])
    entry = PackageEntry({"package": "acme-libfoo", "version": row["version"]})
    assert request.is_matched_by(entry) is row["matches"]
    assert request.is_matched_by(("acme-libfoo", row["version"])) is row["matches"]
    assert request.is_matched_by(("acme-other", row["version"])) is False


@pytest.mark.parametrize(
    ("text", "name", "operator", "version", "canonical"),
    [
        ("acme", "acme", None, None, "acme"),
        ("acme(>=1.0)", "acme", ">=", "1.0", "acme(>=1.0)"),
        (" acme ( >= 1.0-2 ) ", "acme", ">=", "1.0-2", "acme(>=1.0-2)"),
        ("acme(=1.0)", "acme", "=", "1.0", "acme(=1.0)"),
        ("acme(==1.0)", "acme", "==", "1.0", "acme(==1.0)"),
        ("acme(<3)", "acme", "<", "3", "acme(<3)"),
        ("acme(>0-1)", "acme", ">", "0-1", "acme(>0-1)"),
        ("acme(<= 2)", "acme", "<=", "2", "acme(<=2)"),
        ("OU=Salle~12_DC=ecole(=0-1)", "OU=Salle~12_DC=ecole", "=", "0-1", None),
    ],
)
def test_parse_request(
    text: str, name: str, operator: str | None, version: str | None, canonical: str | None
) -> None:
    request = PackageRequest.parse(text)
    assert (request.name, request.operator, request.version) == (name, operator, version)
    assert str(request) == (canonical or text)
    assert PackageRequest.parse(str(request)) == request


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "two names",
        "a,b",
        "acme(",
        "acme(>=1.0",
        "acme()",
        "acme(>=)",
        "acme(1.0)",
        "acme(=>1.0)",
        "acme(<>1.0)",
        "acme(===1.0)",
        "acme(>=1.0-rc1)",
        "acme(>=1 0)",
        "acme(>=1.0) trailing",
        "(>=1.0)",
        "acme(>=1.0)(<2)",
    ],
)
def test_garbage_requests_are_refused(text: str) -> None:
    with pytest.raises(VersionError) as caught:
        PackageRequest.parse(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "operator", "version"),
    [("", None, None), ("acme", ">=", None), ("acme", None, "1"), ("acme", "~", "1")],
)
def test_requests_built_directly_are_checked(
    name: str, operator: str | None, version: str | None
) -> None:
    with pytest.raises(VersionError):
        PackageRequest(name, operator, version)


def test_request_against_unreadable_packaging() -> None:
    entry = PackageEntry({"package": "acme", "version": "1.0-rc1"})
    assert PackageRequest.parse("acme").is_matched_by(entry)
    with pytest.raises(VersionError, match="rc1"):
        PackageRequest.parse("acme(>=1.0)").is_matched_by(entry)


def test_every_operator() -> None:
    results = {
        op: [PackageRequest("a", op, "2-1").is_matched_by(("a", v)) for v in ("1-9", "2-1", "3-0")]
        for op in OPERATORS
    }
    assert results == {
        "==": [False, True, False],
        "=": [False, True, False],
        ">=": [False, True, True],
        "<=": [True, True, False],
        ">": [False, False, True],
        "<": [True, False, False],
    }


# --- properties ---------------------------------------------------------------------------------

_member = st.integers(0, 12).map(str) | st.sampled_from(["0", "00", "007", "10", "100"])
_packaging = st.lists(
    st.text(alphabet="0129abAB", min_size=1, max_size=3), min_size=1, max_size=3
).map(".".join)
wapt_versions = st.builds(
    lambda members, packaging: ".".join(members) + ("" if packaging is None else f"-{packaging}"),
    st.lists(_member, min_size=1, max_size=4),
    st.none() | _packaging,
)
malformed_versions = st.text(alphabet="0123.-abA ", max_size=8).filter(
    lambda text: not is_wapt_version(text)
)


@settings(max_examples=200, deadline=None)
@given(wapt_versions, wapt_versions)
def test_compare_versions_is_antisymmetric(a: str, b: str) -> None:
    assert is_wapt_version(a)
    assert compare_versions(a, b) == -compare_versions(b, a)
    assert compare_versions(a, a) == 0


@settings(max_examples=200, deadline=None)
@given(wapt_versions, wapt_versions, wapt_versions)
def test_compare_versions_is_transitive(a: str, b: str, c: str) -> None:
    if compare_versions(a, b) <= 0 and compare_versions(b, c) <= 0:
        assert compare_versions(a, c) <= 0
    if compare_versions(a, b) == 0 and compare_versions(b, c) == 0:
        assert compare_versions(a, c) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(wapt_versions, min_size=2, max_size=12))
def test_sorting_by_version_key_agrees_with_compare_versions(versions: list[str]) -> None:
    ordered = sorted(versions, key=version_key)
    for earlier, later in itertools.pairwise(ordered):
        assert compare_versions(earlier, later) <= 0
    for a in versions:
        for b in versions:
            assert _order(version_key(a), version_key(b)) == compare_versions(a, b)


@settings(max_examples=200, deadline=None)
@given(malformed_versions, malformed_versions, wapt_versions)
def test_malformed_versions_order(a: str, b: str, valid: str) -> None:
    assert compare_versions(a, b) == _order(a, b)
    assert _order(version_key(a), version_key(b)) == _order(a, b)
    assert version_key(a) < version_key(valid)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_member, min_size=1, max_size=6).map(".".join),
    st.lists(_member, min_size=1, max_size=6).map(".".join),
    st.lists(_member, min_size=1, max_size=6).map(".".join),
)
def test_os_version_is_a_total_order(a: str, b: str, c: str) -> None:
    va, vb, vc = OsVersion(a), OsVersion(b), OsVersion(c)
    assert va.compare(vb) == -vb.compare(va)
    if va <= vb <= vc:
        assert va <= vc
    if va == vb:
        assert hash(va) == hash(vb)
