"""The site's key layout: roles, chains, trust bundles, never overwritten, never logged."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from portal.site.keys import (
    SiteKeyError,
    init_site_keys,
    load_signer,
    read_passphrase,
    upload_trust,
)
from tests.helpers import write_source
from tests.lifecycle_harness import PASSPHRASE, keys_template, site_settings
from wapt.errors import NotCodeSigningError, UntrustedCertificateError, VerificationError
from wapt.package import build_package, verify_package
from wapt.trust import TrustStore


def test_each_role_signs_what_it_may_and_is_trusted_where_it_should(tmp_path: Path) -> None:
    settings = site_settings(tmp_path, trust_fixture_ca=False)
    production = load_signer(settings, "production")
    developer = load_signer(settings, "developer")
    deployer = load_signer(settings, "deployer")
    assert production.certificate.is_code_signing and developer.certificate.is_code_signing
    assert not deployer.certificate.is_code_signing
    assert [c.cn for c in production.chain] == ["test production", "test CA"]
    assert [c.cn for c in developer.chain] == ["test developer", "test developer CA"]
    assert [c.cn for c in deployer.chain] == ["test deployer", "test CA"]

    keys = settings.keys_dir
    production_machines = TrustStore.from_path(keys / "agents" / "production-machines.crt")
    qualification_machines = TrustStore.from_path(keys / "agents" / "qualification-machines.crt")
    assert [c.cn for c in production_machines.certificates] == ["test CA"]
    assert {c.cn for c in qualification_machines.certificates} == {"test CA", "test developer CA"}

    out = tmp_path / "out"
    out.mkdir()
    app = write_source(tmp_path / "src", "tis-app", "1-1")
    by_developer = build_package(app, developer, out)
    verify_package(by_developer, qualification_machines)
    with pytest.raises(VerificationError) as caught:
        verify_package(by_developer, production_machines)
    assert caught.value.has(UntrustedCertificateError)
    by_production = build_package(app, production, out, overrides={"maturity": "PROD"})
    verify_package(by_production, production_machines)
    # The deployer may not sign software (setup.py), only control packages.
    with pytest.raises(NotCodeSigningError):
        build_package(app, deployer, out, overrides={"maturity": "X"})
    group = write_source(tmp_path / "src", "test-room", "1", section="group", setup=False)
    verify_package(build_package(group, deployer, out), production_machines)

    # Uploads chain to the trusted directory: both CAs of the site.
    assert {c.cn for c in upload_trust(settings).certificates} == {"test CA", "test developer CA"}


def test_keys_are_encrypted_private_and_never_overwritten(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = init_site_keys(keys, b"pw-1", site_name="école")
    assert "production.pem" in first.created and "agents/production-machines.crt" in first.created
    for pem in keys.glob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
        assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem.read_bytes()
    before = {p.name: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    again = init_site_keys(keys, b"pw-1", site_name="école")
    assert again.created == ()
    assert {p.name: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before
    assert again.signers["production"] == first.signers["production"]

    # A signer missing from an older layout is issued by the existing CA; others untouched.
    (keys / "deployer.pem").unlink()
    (keys / "deployer.crt").unlink()
    third = init_site_keys(keys, b"pw-1", site_name="école")
    assert set(third.created) == {"deployer.pem", "deployer.crt"}
    assert third.signers["deployer"].issuer_cn == "école CA"
    assert (keys / "production.pem").read_bytes() == before["production.pem"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("wrong-passphrase", "wrong passphrase"),
        ("half-pair", "exists but"),
        ("empty-passphrase", "passphrase is empty"),
    ],
)
def test_bad_key_layouts_are_refused_clearly(tmp_path: Path, damage: str, message: str) -> None:
    keys = tmp_path / "keys"
    init_site_keys(keys, b"right")
    passphrase = b"right"
    if damage == "wrong-passphrase":
        passphrase = b"wrong"
    elif damage == "half-pair":
        (keys / "developer.crt").unlink()
    else:
        passphrase = b""
    with pytest.raises(SiteKeyError, match=message) as caught:
        init_site_keys(keys, passphrase)
    assert "right" not in str(caught.value) and "wrong" not in str(caught.value).replace(
        "wrong passphrase", ""
    )


def test_load_signer_explains_what_is_missing(tmp_path: Path) -> None:
    settings = site_settings(tmp_path, key_passphrase_file=None)
    with pytest.raises(SiteKeyError, match="no key_passphrase_file"):
        load_signer(settings, "production")
    assert load_signer(settings, "production", passphrase=PASSPHRASE).certificate.cn
    with pytest.raises(SiteKeyError, match="unknown signing role 'root'"):
        load_signer(settings, "root", passphrase=PASSPHRASE)  # type: ignore[arg-type]
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(SiteKeyError, match="empty"):
        read_passphrase(site_settings(tmp_path / "b", key_passphrase_file=empty))
    bare = site_settings(tmp_path / "c", keys_dir=tmp_path / "none")
    with pytest.raises(SiteKeyError, match="run `comptoir site init`"):
        load_signer(bare, "deployer")
    assert keys_template().is_dir()
