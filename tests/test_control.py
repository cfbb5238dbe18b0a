"""Tests of wapt.control: control files and `Packages` records, checked against WAPT's own files."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from wapt.control import (
    DEFAULT_SIGNED_ATTRIBUTES,
    INT_ATTRIBUTES,
    LOCAL_ATTRIBUTES,
    LOCALIZED_DESCRIPTIONS,
    MAX_CONTROL_BYTES,
    OPTIONAL_ATTRIBUTES,
    PRE_2017_SIGNED_ATTRIBUTES,
    REPO_ATTRIBUTES,
    REQUIRED_ATTRIBUTES,
    SIGNATURE_ATTRIBUTES,
    PackageEntry,
    format_control,
    format_records,
    parse_control,
    parse_records,
)
from wapt.errors import (
    ControlEncodingError,
    ControlError,
    ControlSyntaxError,
    ControlTooLargeError,
    ControlValueError,
)

CONTROL_ORDER = REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES + SIGNATURE_ATTRIBUTES

PACKAGE_FILES = (
    "acme-app_3.0.1-1_PROD.wapt",
    "acme-broken_1.0-1_PROD.wapt",
    "acme-expired_1.0-1_PROD.wapt",
    "acme-hello_1.0.0-1_PROD_fr.tampered-control.wapt",
    "acme-hello_1.0.0-1_PROD_fr.tampered-extra-file.wapt",
    "acme-hello_1.0.0-1_PROD_fr.tampered-missing-file.wapt",
    "acme-hello_1.0.0-1_PROD_fr.tampered-payload.wapt",
    "acme-hello_1.0.0-1_PROD_fr.tampered-signature-notbase64.wapt",
    "acme-hello_1.0.0-1_PROD_fr.tampered-signature.wapt",
    "acme-hello_1.0.0-1_PROD_fr.wapt",
    "acme-hello_1.2.0-3_PROD_fr.wapt",
    "acme-hello_1.3.0-1_PREPROD_fr.wapt",
    "acme-libfoo_2.1-3_PROD.wapt",
    "acme-plainsigned_1.0-1_PROD.wapt",
    "acme-rogue_1.0-1_PROD.wapt",
    "acme-toolbox_1-2_PROD.wapt",
)
UNTAMPERED_FILES = tuple(name for name in PACKAGE_FILES if ".tampered-" not in name)


def read_member(path: Path, member: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(member)


def packages_text(wapt_fixtures: Path) -> str:
    return read_member(wapt_fixtures / "repo" / "Packages", "Packages").decode("utf-8")


def signer_key(chain_pem: bytes) -> rsa.RSAPublicKey:
    key = x509.load_pem_x509_certificates(chain_pem)[0].public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def control_signature_verifies(entry: PackageEntry, chain_pem: bytes) -> bool:
    try:
        signer_key(chain_pem).verify(
            base64.b64decode(entry.signature),
            entry.signed_content(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


# --- the fixtures WAPT 1.8.2 wrote ---------------------------------------------------------


def test_fixture_package_list_is_complete(wapt_fixtures: Path) -> None:
    found = sorted(path.name for path in (wapt_fixtures / "packages").glob("*.wapt"))
    assert found == sorted(PACKAGE_FILES)


@pytest.mark.parametrize("name", PACKAGE_FILES)
def test_control_rewrites_byte_for_byte(wapt_fixtures: Path, name: str) -> None:
    raw = read_member(wapt_fixtures / "packages" / name, "WAPT/control")
    assert not raw.endswith(b"\n"), "WAPT writes no final newline"
    entry = parse_control(raw, source=name)
    assert format_control(entry).encode("utf-8") == raw


def test_parsed_controls_agree_with_expected(wapt_fixtures: Path, expected: dict[str, Any]) -> None:
    for verdict in expected["packages"]:
        path = wapt_fixtures / "packages" / verdict["file"]
        entry = parse_control(read_member(path, "WAPT/control"), source=verdict["file"])
        for name in ("package", "maturity", "signer", "signer_fingerprint", "package_uuid"):
            assert entry[name] == verdict[name], (verdict["file"], name)
        assert entry.signature_date == verdict["signature_date"]
        if "tampered-control" not in verdict["file"]:
            assert entry.version == verdict["version"]


def test_parsed_control_values(wapt_fixtures: Path) -> None:
    raw = read_member(
        wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt", "WAPT/control"
    )
    entry = parse_control(raw)
    assert list(entry) == list(CONTROL_ORDER)
    assert entry.installed_size == 2048
    assert entry["installed_size"] == 2048
    assert entry.name == "Acme Hello (démo)"
    assert entry.description.startswith("Acme Hello – harmless test package.\nIt only writes")
    assert entry.description.endswith("\nÜbung: ÄÖÜ ß €")
    assert entry.description_for("fr").startswith("Paquet de test inoffensif.\nÉcrit")
    assert entry.description_for("de") == entry.description
    assert entry.categories == ["Utilities", "Demo"]
    assert entry.locales == ["fr"]
    assert entry.depends == []
    assert entry.signed_attributes == list(DEFAULT_SIGNED_ATTRIBUTES)


@pytest.mark.parametrize("name", PACKAGE_FILES)
def test_control_signature_covers_signed_content(wapt_fixtures: Path, name: str) -> None:
    path = wapt_fixtures / "packages" / name
    entry = parse_control(read_member(path, "WAPT/control"), source=name)
    verifies = control_signature_verifies(entry, read_member(path, "WAPT/certificate.crt"))
    assert verifies is ("tampered-control" not in name)


@pytest.mark.parametrize("name", UNTAMPERED_FILES)
def test_package_filename_is_wapts(wapt_fixtures: Path, name: str) -> None:
    entry = parse_control(read_member(wapt_fixtures / "packages" / name, "WAPT/control"))
    assert entry.package_filename() == name


def test_packages_index_reproduces_byte_for_byte(wapt_fixtures: Path) -> None:
    text = packages_text(wapt_fixtures)
    entries = parse_records(text)
    assert len(entries) == 6
    assert format_records(entries) == text
    # WAPT ends each record with a newline and separates records with one blank line.
    blocks = text[:-1].split("\n\n")
    assert [format_control(entry, with_repo_attributes=True) for entry in entries] == blocks


def test_packages_index_records_match_the_packages(
    wapt_fixtures: Path, expected: dict[str, Any]
) -> None:
    repo = wapt_fixtures / "repo"
    entries = parse_records(packages_text(wapt_fixtures))
    accepted = {row["filename"]: row for row in expected["repo_check"]["accepted"]}
    assert sorted(entry.filename for entry in entries) == sorted(accepted)
    for entry in entries:
        row = accepted[entry.filename]
        assert entry.size == row["size"] == (repo / entry.filename).stat().st_size
        assert entry.md5sum == row["md5sum"]
        assert entry.md5sum == hashlib.md5((repo / entry.filename).read_bytes()).hexdigest()
        assert entry.package_filename() == entry.filename
        control = parse_control(read_member(repo / entry.filename, "WAPT/control"))
        without_repo = entry.copy()
        for name in REPO_ATTRIBUTES:
            del without_repo[name]
        assert without_repo == control


def test_packages_index_records_verify_with_index_certificates(wapt_fixtures: Path) -> None:
    index = wapt_fixtures / "repo" / "Packages"
    for entry in parse_records(packages_text(wapt_fixtures)):
        chain = read_member(index, f"ssl/{entry.signer_fingerprint}.crt")
        assert control_signature_verifies(entry, chain), entry.filename


# --- reading -------------------------------------------------------------------------------


def test_keys_are_lowercased_and_values_stripped() -> None:
    entry = parse_control(b"Package :  acme \nVERSION:1.0-1\n\tSection\t: base\t")
    assert entry.fields == {"package": "acme", "version": "1.0-1", "section": "base"}


def test_value_keeps_every_colon_after_the_first() -> None:
    entry = parse_control("homepage: https://acme.example:8443/a:b")
    assert entry["homepage"] == "https://acme.example:8443/a:b"


def test_continuation_lines_join_with_newline_and_lose_indentation() -> None:
    entry = parse_control(b"description: first\n second\n      third: with colon\nname: x")
    assert entry["description"] == "first\nsecond\nthird: with colon"
    assert entry["name"] == "x"


def test_continuation_of_an_empty_first_line() -> None:
    assert parse_control("description:\n first")["description"] == "\nfirst"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2048", 2048),
        ("+7", 7),
        ("-3", -3),
        ("0012", 12),
        ("", ""),
        ("12 MB", "12 MB"),
        ("1_000", "1_000"),
        ("0x10", "0x10"),
    ],
)
def test_int_attributes_become_int_when_they_parse(text: str, value: str | int) -> None:
    entry = parse_control(f"installed_size: {text}\nsize: {text}\nkeywords: 12")
    assert entry["installed_size"] == value
    assert entry["size"] == value
    assert entry["keywords"] == "12"


def test_trailing_blank_lines_are_accepted() -> None:
    entry = parse_control(b"package: a\nversion: 1\n\n  \n\n")
    assert entry.fields == {"package": "a", "version": "1"}


def test_str_and_bytes_read_alike() -> None:
    text = "package: café\ndescription: a\n b"
    assert parse_control(text) == parse_control(text.encode("utf-8"))


HOSTILE_CONTROLS = [
    pytest.param(b"\xef\xbb\xbfpackage: a", ControlEncodingError, "byte-order mark", id="bom"),
    pytest.param(b"package: a\r\nversion: 1\r\n", ControlEncodingError, "CRLF", id="crlf"),
    pytest.param(b"package: a\rversion: 1", ControlEncodingError, "CRLF", id="cr"),
    pytest.param(
        "package: café".encode("latin-1"), ControlEncodingError, "byte offset 12", id="latin-1"
    ),
    pytest.param(b"package: a\x00b", ControlEncodingError, "NUL", id="nul"),
    pytest.param(b"\x00" * 8, ControlEncodingError, "NUL", id="binary"),
    pytest.param(
        "description: a\u2028b".encode(), ControlEncodingError, "U+2028", id="line-separator"
    ),
    pytest.param(b"description: a\x0cb", ControlEncodingError, "U+000C", id="form-feed"),
    pytest.param(b" continued\npackage: a", ControlSyntaxError, "line 1", id="continuation-first"),
    pytest.param(b"package: a\nPackage : b", ControlSyntaxError, "line 2", id="repeated-key"),
    pytest.param(b"package: a\n\nversion: 1", ControlSyntaxError, "line 3", id="blank-line"),
    pytest.param(b"package: a\n \t \nversion: 1", ControlSyntaxError, "line 3", id="space-line"),
    pytest.param(b"package: a\n\n more", ControlSyntaxError, "line 3", id="after-blank"),
    pytest.param(b"package: a\ngarbage", ControlSyntaxError, "line 2", id="no-colon"),
    pytest.param(b"package: a\n: value", ControlSyntaxError, "empty key", id="empty-key"),
    pytest.param(b"pack age: a", ControlSyntaxError, "whitespace inside key", id="spaced-key"),
    pytest.param(b"", ControlSyntaxError, "no field", id="empty"),
    pytest.param(b"\n \n\n", ControlSyntaxError, "no field", id="only-blank-lines"),
    pytest.param(b"a" * 65, ControlTooLargeError, "more than the 64", id="oversize"),
]


@pytest.mark.parametrize(("data", "kind", "fragment"), HOSTILE_CONTROLS)
def test_hostile_control_is_refused(data: bytes, kind: type[ControlError], fragment: str) -> None:
    source = "evil_1.0-1.wapt:WAPT/control"
    with pytest.raises(kind) as caught:
        parse_control(data, source=source, max_bytes=64)
    assert type(caught.value) is kind
    assert str(caught.value).startswith(f"{source}: ")
    assert fragment in str(caught.value)


def test_syntax_error_quotes_the_line() -> None:
    with pytest.raises(ControlSyntaxError) as caught:
        parse_control("package: a\nversion: 1\nthis line is wrong")
    assert str(caught.value) == "WAPT/control: line 3: no ':' in line: 'this line is wrong'"


def test_error_message_shortens_a_huge_line() -> None:
    with pytest.raises(ControlSyntaxError) as caught:
        parse_control("x" * 100_000)
    assert len(str(caught.value)) < 200


def test_default_size_cap() -> None:
    body = b"description: " + b"a" * MAX_CONTROL_BYTES
    with pytest.raises(ControlTooLargeError):
        parse_control(body)
    with pytest.raises(ControlTooLargeError):
        parse_control(body.decode("ascii"))
    assert parse_control(body[:MAX_CONTROL_BYTES])["description"]


def test_size_cap_counts_utf8_bytes_of_text() -> None:
    with pytest.raises(ControlTooLargeError, match="120 bytes"):
        parse_control("name: " + "€" * 38, max_bytes=100)


def test_str_errors_give_character_offsets() -> None:
    with pytest.raises(ControlEncodingError, match=r"at offset 6 \(line 1\)"):
        parse_control("name: \x00")
    with pytest.raises(ControlEncodingError, match=r"at byte offset 8 \(line 1\)"):
        parse_control("name: é\x00".encode())
    with pytest.raises(ControlEncodingError, match="byte-order mark"):
        parse_control("\ufeffpackage: a")


def test_records_are_separated_by_one_or_more_blank_lines() -> None:
    text = "package: a\nversion: 1\n\npackage: b\n\n\n \npackage: c\n continued\n"
    assert [entry.package for entry in parse_records(text)] == ["a", "b", "c\ncontinued"]
    assert parse_records("") == []
    assert parse_records("\n\n") == []


def test_records_errors_count_lines_from_the_start() -> None:
    text = "package: a\nversion: 1\n\npackage: b\nversion: 1\nversion: 2\n"
    with pytest.raises(ControlSyntaxError) as caught:
        parse_records(text, source="https://repo/Packages")
    assert str(caught.value) == (
        "https://repo/Packages: line 6: repeated key 'version': 'version: 2'"
    )


def test_records_error_on_a_short_line_names_the_right_line() -> None:
    # One-character lines are shared objects in CPython: the line is still found.
    with pytest.raises(ControlSyntaxError, match="line 4"):
        parse_records("package: a\n\npackage: b\nx\npackage: c\nx\n")
    with pytest.raises(ControlSyntaxError, match="line 2: empty key"):
        parse_records("package: a\n:\n")


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffpackage: a",
        "package: a\r\n",
        "package: a\x00",
        "description: a\x85b",
        "description: a\u2029b",
        "description: a\x1cb",
    ],
)
def test_records_refuse_hostile_characters(text: str) -> None:
    with pytest.raises(ControlEncodingError, match=r"^Packages: "):
        parse_records(text)


def test_parse_records_reads_a_full_size_index(wapt_fixtures: Path) -> None:
    # 5,004 records of about 50 lines, 11 MB. How fast is measured by bench/index_http.py,
    # not here (a timed test fails on a busy machine and proves nothing on a quiet one).
    one = parse_records(packages_text(wapt_fixtures))
    entries = parse_records("\n".join([packages_text(wapt_fixtures)] * 834))
    assert len(entries) == 834 * len(one) == 5004
    assert [e.package for e in entries[-len(one) :]] == [e.package for e in one]
    assert format_control(entries[-1]) == format_control(one[-1])


# --- writing -------------------------------------------------------------------------------


def test_every_signed_attribute_is_written_even_when_absent() -> None:
    text = format_control(PackageEntry({"package": "acme", "version": "1-1"}))
    lines = text.split("\n")
    assert [line.split(":")[0].strip() for line in lines] == list(CONTROL_ORDER)
    assert lines[0] == "package           : acme"
    assert lines[2] == "architecture      : "
    assert "signer_fingerprint: " in lines
    assert "signature         : " in lines
    assert not text.endswith("\n")


def test_unknown_then_repo_attributes_local_never() -> None:
    entry = PackageEntry(
        {
            "md5sum": "0" * 32,
            "x-custom": "kept",
            "package": "acme",
            "repo_url": "https://repo",
            "size": 10,
            "localpath": "/tmp/x.wapt",
            "filename": "acme.wapt",
            "a_very_long_custom_key": "",
        }
    )
    tail = format_control(entry).split("\n")[len(CONTROL_ORDER) :]
    assert tail == ["x-custom          : kept", "a_very_long_custom_key: "]
    tail = format_control(entry, with_repo_attributes=True).split("\n")[len(CONTROL_ORDER) :]
    assert tail[2:] == [
        "filename          : acme.wapt",
        "size              : 10",
        "md5sum            : " + "0" * 32,
    ]
    assert not any(
        name in format_control(entry, with_repo_attributes=True) for name in LOCAL_ATTRIBUTES
    )


def test_empty_repo_attributes_are_not_written() -> None:
    entry = PackageEntry({"package": "acme", "filename": "", "md5sum": ""})
    assert "filename" not in format_control(entry, with_repo_attributes=True)


def test_multiline_value_gets_a_space_after_each_newline() -> None:
    entry = PackageEntry({"description": "one\ntwo: 2\nthree"})
    assert "description       : one\n two: 2\n three\n" in format_control(entry)
    assert parse_control(format_control(entry))["description"] == "one\ntwo: 2\nthree"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"description": "one\n\nthree"}, "blank"),
        ({"description": "one\n   \nthree"}, "blank"),
        ({"description": "one\n  indented"}, "whitespace"),
        ({"description": "trailing \nline"}, "whitespace"),
        ({"name": " leading"}, "whitespace"),
        ({"name": "trailing\u00a0"}, "whitespace"),
        ({"name": "a\x00b"}, "NUL"),
        ({"name": "a\rb"}, "carriage return"),
        ({"name": "a\u2028b"}, "U+2028"),
        ({"": "x"}, "control key"),
        ({"Name": "x"}, "control key"),
        ({"my key": "x"}, "control key"),
        ({"my:key": "x"}, "control key"),
        ({"tab\tkey": "x"}, "control key"),
    ],
)
def test_unwritable_values_are_refused(fields: dict[str, str], fragment: str) -> None:
    (name,) = fields
    with pytest.raises(ControlValueError) as caught:
        format_control(PackageEntry(fields))
    assert repr(name) in str(caught.value)
    assert fragment in str(caught.value)


# --- PackageEntry --------------------------------------------------------------------------


def test_entry_normalises_values_as_the_parser_reads_them() -> None:
    entry = PackageEntry({"installed_size": "2048", "size": 7, "version": 3, "keywords": "12"})
    assert entry.fields == {"installed_size": 2048, "size": 7, "version": "3", "keywords": "12"}
    entry["installed_size"] = "lots"
    assert entry["installed_size"] == "lots"
    assert entry.installed_size is None
    for bad in (1.5, None, True, b"x"):
        with pytest.raises(TypeError):
            PackageEntry({"name": bad})  # type: ignore[dict-item]


def test_entry_mapping_protocol() -> None:
    entry = PackageEntry({"package": "acme", "custom": "x"})
    assert entry.get("custom") == "x"
    assert entry.get("missing") == ""
    assert entry.get("missing", 0) == 0
    assert "custom" in entry
    assert "missing" not in entry
    del entry["custom"]
    assert list(entry) == ["package"]
    assert len(entry) == 1
    with pytest.raises(KeyError):
        entry["custom"]


def test_entry_copy_is_independent_and_equal() -> None:
    entry = PackageEntry({"package": "acme", "version": "1-1"})
    copy = entry.copy()
    assert copy == entry
    copy.version = "2-1"
    assert entry.version == "1-1"
    assert copy != entry
    assert entry != {"package": "acme", "version": "1-1"}


def test_entry_properties() -> None:
    entry = PackageEntry(
        {
            "package": "acme",
            "depends": " a , b(>=1.0),,c ",
            "locale": "fr,en",
            "impacted_process": "firefox.exe,",
            "size": 12,
        }
    )
    assert entry.depends == ["a", "b(>=1.0)", "c"]
    assert entry.conflicts == []
    assert entry.locales == ["fr", "en"]
    assert entry.impacted_processes == ["firefox.exe"]
    assert entry.size == 12
    assert entry.installed_size is None
    assert entry.maturity == ""
    entry.maturity = "PROD"
    assert entry["maturity"] == "PROD"
    assert repr(entry) == "PackageEntry('acme', '', maturity='PROD', locale='fr,en')"


@pytest.mark.parametrize("lang", LOCALIZED_DESCRIPTIONS)
def test_description_for(lang: str) -> None:
    entry = PackageEntry({"description": "generic", f"description_{lang}": "localized"})
    assert entry.description_for(lang) == "localized"
    assert entry.description_for(lang.upper()) == "localized"
    assert entry.description_for("en") == "generic"
    entry[f"description_{lang}"] = ""
    assert entry.description_for(lang) == "generic"


@pytest.mark.parametrize(
    ("fields", "filename"),
    [
        (
            {"package": "tis-demo", "version": "1.2.3-4", "maturity": "PROD", "locale": "fr"},
            "tis-demo_1.2.3-4_PROD_fr.wapt",
        ),
        (
            {
                "package": "tis-x",
                "version": "1.0-1",
                "architecture": "x64",
                "maturity": "PREPROD",
                "locale": "fr, en",
            },
            "tis-x_1.0-1_x64_PREPROD_fr-en.wapt",
        ),
        (
            {"package": "demo-group", "version": "0-1", "architecture": "all", "section": "group"},
            "demo-group_0-1.wapt",
        ),
        (
            {"package": "4C4C4544-0042-3510", "version": "12", "section": "host", "maturity": "X"},
            "4C4C4544-0042-3510.wapt",
        ),
        ({"package": "poste~01.ÉCOLE", "version": "1-1"}, "poste~01.ÉCOLE_1-1.wapt"),
        (
            {"package": "OU=Salle 12,DC=ecole", "version": "0-1", "section": "unit"},
            hashlib.md5(b"OU=Salle 12,DC=ecole").hexdigest() + "_0-1.wapt",
        ),
        ({"package": "acme", "version": "1.0(beta)..2"}, "acme_1.0beta_2.wapt"),
    ],
)
def test_package_filename(fields: dict[str, str], filename: str) -> None:
    assert PackageEntry(fields).package_filename() == filename


@pytest.mark.parametrize(
    "fields", [{}, {"version": "1-1"}, {"package": "acme"}, {"package": "acme", "version": ""}]
)
def test_package_filename_needs_name_and_version(fields: dict[str, str]) -> None:
    with pytest.raises(ControlValueError):
        PackageEntry(fields).package_filename()


# --- signed content ------------------------------------------------------------------------


def test_signed_content_is_canonical_ascii_json() -> None:
    entry = PackageEntry(
        {
            "package": "acme",
            "version": "1-1",
            "name": "Démo 😀",
            "installed_size": "2048",
            "signed_attributes": "version,package,name,installed_size,signer,x-absent",
        }
    )
    assert entry.signed_content() == (
        b'{"installed_size":2048,"name":"D\\u00e9mo \\ud83d\\ude00","package":"acme",'
        b'"signer":null,"version":"1-1","x-absent":null}'
    )


def test_signed_content_of_absent_attributes() -> None:
    content = json.loads(PackageEntry({"package": "acme"}).signed_content())
    assert list(content) == sorted(DEFAULT_SIGNED_ATTRIBUTES)
    for name in DEFAULT_SIGNED_ATTRIBUTES:
        if name == "package":
            assert content[name] == "acme"
        elif name in SIGNATURE_ATTRIBUTES:
            assert content[name] is None, name
        else:
            assert content[name] == "", name


@pytest.mark.parametrize(
    ("signature_date", "signed"),
    [
        ("20170101-120000", PRE_2017_SIGNED_ATTRIBUTES),
        ("20170608-235959", PRE_2017_SIGNED_ATTRIBUTES),
        ("20170609-000000", DEFAULT_SIGNED_ATTRIBUTES),
        ("2026-11-21T05:11:03.023792", DEFAULT_SIGNED_ATTRIBUTES),
        ("", DEFAULT_SIGNED_ATTRIBUTES),
    ],
)
def test_signed_content_without_signed_attributes(
    signature_date: str, signed: tuple[str, ...]
) -> None:
    entry = PackageEntry(
        {"package": "a", "signed_attributes": " , ", "signature_date": signature_date}
    )
    assert entry.effective_signed_attributes() == signed
    assert set(json.loads(entry.signed_content())) == set(signed)


# --- properties ----------------------------------------------------------------------------

_LINE_BREAKS = "\x00\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_text_char = st.characters(exclude_categories=("Cs",), exclude_characters=_LINE_BREAKS)
_special_char = st.sampled_from("😀𝄞éßİ\u00a0\t:- ")
_line = st.text(_text_char | _special_char, max_size=12).map(str.strip)
_value = st.builds(
    lambda first, rest: "\n".join([first, *rest]),
    _line,
    st.lists(_line.filter(bool), max_size=3),
)
_plain_names = tuple(name for name in CONTROL_ORDER if name not in INT_ATTRIBUTES)
_known_fields = st.dictionaries(st.sampled_from(_plain_names), _value, max_size=8)
_int_fields = st.dictionaries(
    st.just("installed_size"), st.integers(-(10**12), 10**12) | _value, max_size=1
)
_custom_key = st.text(
    st.characters(categories=("Ll", "Nd")) | st.sampled_from("_-.~"), min_size=1, max_size=10
).filter(
    lambda key: key == key.lower() and key not in CONTROL_ORDER + REPO_ATTRIBUTES + LOCAL_ATTRIBUTES
)
_custom_fields = st.dictionaries(_custom_key, _value, max_size=4)
_repo_fields = st.fixed_dictionaries(
    {"filename": _line.filter(bool), "size": st.integers(0, 10**10), "md5sum": _line.filter(bool)}
)


def _expected_after_round_trip(entry: PackageEntry) -> PackageEntry:
    return PackageEntry({**dict.fromkeys(CONTROL_ORDER, ""), **entry.fields})


@settings(max_examples=200, deadline=None)
@given(_known_fields, _int_fields, _custom_fields)
def test_control_round_trip(
    known: dict[str, str], ints: dict[str, Any], custom: dict[str, str]
) -> None:
    entry = PackageEntry({**known, **ints, **custom})
    parsed = parse_control(format_control(entry).encode("utf-8"))
    assert parsed == _expected_after_round_trip(entry)
    assert list(parsed)[len(CONTROL_ORDER) :] == list(custom)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_known_fields, _custom_fields, _repo_fields), max_size=4))
def test_records_round_trip(records: list[tuple[dict[str, str], ...]]) -> None:
    entries = [PackageEntry({**known, **custom, **repo}) for known, custom, repo in records]
    parsed = parse_records(format_records(entries))
    assert parsed == [_expected_after_round_trip(entry) for entry in entries]


# `signature` itself is never signed: absent, it signs as null but reads back as "".
_signable = tuple(name for name in CONTROL_ORDER if name != "signature")


@settings(max_examples=200, deadline=None)
@given(
    _known_fields, _int_fields, _custom_fields, st.lists(_custom_key | st.sampled_from(_signable))
)
def test_signed_content_survives_the_round_trip(
    known: dict[str, str], ints: dict[str, Any], custom: dict[str, str], signed: list[str]
) -> None:
    signature = {
        "signer": "Acme Packager",
        "signer_fingerprint": "ab" * 32,
        "signature_date": "2026-11-21T05:11:03.023792",
        "signed_attributes": ",".join(signed),
    }
    entry = PackageEntry({**known, **ints, **custom, **signature})
    assert parse_control(format_control(entry)).signed_content() == entry.signed_content()


_soup_line = st.sampled_from(
    [
        "package: a",
        "Package : b",
        "version: 1.0-1",
        "description: text",
        " continued",
        "   indented: more",
        "",
        " ",
        "\t",
        "installed_size: 12",
        "size: 0x1",
        "custom_key: value",
        "filename: a.wapt",
        "repo_url: https://repo",
        "garbage",
        ":",
        "a b: c",
    ]
) | st.text(st.characters(exclude_categories=("Cs",)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(_soup_line, max_size=12))
def test_any_text_parses_or_raises_a_control_error(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        entries = parse_records(text)
    except ControlError:
        return
    # Whatever parses writes back, and reads back the same (local attributes are not written).
    again = parse_records(format_records(entries))
    expected = [
        _expected_after_round_trip(
            PackageEntry(
                {
                    name: value
                    for name, value in entry.fields.items()
                    if name not in LOCAL_ATTRIBUTES
                    and not (name in REPO_ATTRIBUTES and value == "")
                }
            )
        )
        for entry in entries
    ]
    assert again == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_a_control_error(data: bytes) -> None:
    try:
        parse_control(data, source="fuzz")
    except ControlError as e:
        assert str(e).startswith("fuzz")
