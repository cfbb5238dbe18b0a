"""Building, signing and re-signing packages the way WAPT does, then verifying them."""

from __future__ import annotations

import base64
import json
import os
import zipfile
from pathlib import Path

import pytest

from tests.helpers import PKI, fixture_signer, write_source
from wapt import errors
from wapt.control import DEFAULT_SIGNED_ATTRIBUTES, parse_control
from wapt.package import (
    build_package,
    extract_package,
    read_control,
    resign_package,
    safe_join,
    sign_control,
    verify_package,
)
from wapt.trust import TrustStore


@pytest.fixture(scope="module")
def trust() -> TrustStore:
    return TrustStore.from_path(PKI / "ca.crt")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_source(
        tmp_path,
        "tis-demo",
        "1.2.3-4",
        name="Démo",
        description="Ligne un\nLigne deux",
        description_fr="Paquet de démonstration « test »",
        maturity="PREPROD",
        locale="fr",
        installed_size="2048",
        custom_field="kept",
        files={
            "files/a.txt": b"alpha\n",
            "files/sub/b.bin": os.urandom(70_000),
            ".git/config": b"excluded",
            "setup.pyc": b"excluded",
            "files/x.pyc": b"excluded",
        },
    )


def test_built_package_verifies_and_is_named_canonically(
    source: Path, tmp_path: Path, trust: TrustStore
) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    path = build_package(source, fixture_signer("codesign"), out)
    assert path.name == "tis-demo_1.2.3-4_PREPROD_fr.wapt"
    verified = verify_package(path, trust)
    entry = verified.entry
    assert entry.signer == "Acme Packager"
    assert entry.signer_fingerprint == verified.signer.fingerprint
    assert entry.get("custom_field") == "kept"
    assert entry.installed_size == 2048
    assert entry.get("description") == "Ligne un\nLigne deux"


def test_built_package_has_what_wapt_needs(source: Path, tmp_path: Path, trust: TrustStore) -> None:
    path = build_package(source, fixture_signer("codesign"), tmp_path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert not [n for n in names if n.endswith("/")], "no directory entries"
        assert sorted(n for n in names if not n.startswith("WAPT/")) == [
            "files/a.txt",
            "files/sub/b.bin",
            "setup.py",
        ]
        manifest = json.loads(zf.read("WAPT/manifest.sha256"))
        listed = {p for p, _ in manifest}
        assert listed == set(names) - {"WAPT/manifest.sha256", "WAPT/signature.sha256"}
        assert "WAPT/control" in listed and "WAPT/certificate.crt" in listed
        signature = zf.read("WAPT/signature.sha256").decode("ascii")
        lines = signature.split("\n")
        assert signature.endswith("\n") and all(len(line) <= 76 for line in lines)
        assert len(base64.b64decode(signature)) == 256
        control = parse_control(zf.read("WAPT/control"))
        raw_control = zf.read("WAPT/control").decode("utf-8")
        for attr in (*DEFAULT_SIGNED_ATTRIBUTES, "signature"):
            assert f"\n{attr:<18}:" in "\n" + raw_control, attr
        assert control.signed_attributes == [*DEFAULT_SIGNED_ATTRIBUTES, "custom_field"]
        certificate = zf.read("WAPT/certificate.crt").decode("ascii")
        assert certificate.count("BEGIN CERTIFICATE") == 2
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())


def test_each_signature_gets_a_new_uuid(source: Path, tmp_path: Path) -> None:
    signer = fixture_signer("codesign")
    first = read_control(build_package(source, signer, tmp_path))
    second = read_control(build_package(source, signer, tmp_path, overwrite=True))
    assert first.package_uuid != second.package_uuid
    assert first.signature != second.signature


def test_existing_file_is_not_overwritten_by_accident(source: Path, tmp_path: Path) -> None:
    signer = fixture_signer("codesign")
    path = build_package(source, signer, tmp_path)
    before = path.read_bytes()
    with pytest.raises(errors.BuildError, match="already exists"):
        build_package(source, signer, tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_plain_certificate_cannot_sign_setup_py(source: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.NotCodeSigningError, match="Acme Deployer"):
        build_package(source, fixture_signer("plain"), tmp_path)
    assert not list(tmp_path.glob("*.wapt"))


def test_deployer_signs_a_group_package(tmp_path: Path, trust: TrustStore) -> None:
    group = write_source(tmp_path, "demo-group", "0-1", section="group", setup=False, depends="a,b")
    path = build_package(group, fixture_signer("plain"), tmp_path)
    assert path.name == "demo-group_0-1.wapt"
    assert verify_package(path, trust).entry.depends == ["a", "b"]


def test_symlink_in_source_is_refused(source: Path, tmp_path: Path) -> None:
    (source / "files" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(errors.BuildError, match="passwd"):
        build_package(source, fixture_signer("codesign"), tmp_path)


def test_value_that_would_not_round_trip_is_refused(tmp_path: Path) -> None:
    source = write_source(tmp_path, "tis-bad", "1-1", description="ok")
    entry = parse_control((source / "WAPT" / "control").read_bytes())
    entry["description"] = "first\n\nafter a blank line"
    with pytest.raises(errors.ControlValueError):
        sign_control(entry, fixture_signer("codesign"))


def test_promotion_re_signs_with_new_maturity(
    source: Path, tmp_path: Path, trust: TrustStore
) -> None:
    qualification = build_package(source, fixture_signer("codesign"), tmp_path)
    prod_dir = tmp_path / "prod"
    prod_dir.mkdir()
    promoted = resign_package(
        qualification, fixture_signer("codesign"), prod_dir, trust, maturity="PROD"
    )
    assert promoted.name == "tis-demo_1.2.3-4_PROD_fr.wapt"
    old = verify_package(qualification, trust)
    new = verify_package(promoted, trust)
    assert new.entry.maturity == "PROD"
    assert new.entry.package_uuid != old.entry.package_uuid
    assert new.entry.get("custom_field") == "kept"
    payload = {k: v for k, v in old.manifest.items() if not k.startswith("WAPT/")}
    assert payload == {k: v for k, v in new.manifest.items() if not k.startswith("WAPT/")}


def test_a_fixture_package_made_by_wapt_can_be_promoted(
    wapt_fixtures: Path, tmp_path: Path, trust: TrustStore
) -> None:
    source = wapt_fixtures / "packages" / "acme-hello_1.3.0-1_PREPROD_fr.wapt"
    promoted = resign_package(source, fixture_signer("codesign"), tmp_path, trust, maturity="PROD")
    assert promoted.name == "acme-hello_1.3.0-1_PROD_fr.wapt"
    entry = verify_package(promoted, trust).entry
    assert entry.description_for("fr").startswith("Paquet de test inoffensif.")


def test_tampered_package_is_not_re_signed(
    wapt_fixtures: Path, tmp_path: Path, trust: TrustStore
) -> None:
    source = wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.tampered-payload.wapt"
    with pytest.raises(errors.VerificationError):
        resign_package(source, fixture_signer("codesign"), tmp_path, trust)
    assert list(tmp_path.iterdir()) == []


def test_extract_writes_verified_files(
    wapt_fixtures: Path, tmp_path: Path, trust: TrustStore
) -> None:
    dest = tmp_path / "out"
    extract_package(wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt", dest, trust)
    assert (dest / "files" / "hello.txt").is_file()
    assert (dest / "setup.py").read_text("utf-8").startswith("# -*- coding: utf-8 -*-")


def test_extract_of_a_bad_package_writes_nothing(
    wapt_fixtures: Path, tmp_path: Path, trust: TrustStore
) -> None:
    dest = tmp_path / "out"
    bad = wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.tampered-extra-file.wapt"
    with pytest.raises(errors.VerificationError):
        extract_package(bad, dest, trust)
    assert not dest.exists()


@pytest.mark.parametrize(
    "name", ["../x", "a/../../x", "/etc/x", "C:/x", "C:x", "a\\b", "CON", "a/nul.txt", "a\x00b"]
)
def test_safe_join_refuses_escapes(tmp_path: Path, name: str) -> None:
    with pytest.raises(errors.UnsafePathError):
        safe_join(tmp_path, name)


def test_safe_join_refuses_a_symlinked_parent(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(errors.UnsafePathError, match="outside"):
        safe_join(tmp_path, "link/x")
