"""Packages through their life on a site: upload (verified), qualify, promote, retire."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from portal.site.lifecycle import (
    LifecycleError,
    PackageLifecycle,
    TransitionError,
    UploadRefusedError,
    UploadTooLargeError,
)
from portal.site.settings import SiteSettings
from tests.conftest import TEST_DATA, WAPT_FIXTURES
from tests.lifecycle_harness import site_settings
from wapt.errors import UntrustedCertificateError, VerificationError
from wapt.package import verify_package
from wapt.repository import load_index
from wapt.trust import TrustStore

PACKAGES = WAPT_FIXTURES / "packages"
HOSTILE = TEST_DATA / "hostile"
CORPUS: list[dict[str, Any]] = json.loads((HOSTILE / "corpus.json").read_text("utf-8"))
REFUSED_FIXTURES = [
    "acme-broken_1.0-1_PROD.wapt",
    "acme-expired_1.0-1_PROD.wapt",
    "acme-plainsigned_1.0-1_PROD.wapt",
    "acme-rogue_1.0-1_PROD.wapt",
    *sorted(p.name for p in PACKAGES.glob("*.tampered-*.wapt")),
]


@pytest.fixture
def site(tmp_path: Path) -> SiteSettings:
    return site_settings(tmp_path)


@pytest.fixture
def life(site: SiteSettings) -> PackageLifecycle:
    return PackageLifecycle(site)


def upload(life: PackageLifecycle, path: Path, who: str = "dave") -> Any:
    with path.open("rb") as stream:
        return life.upload(stream, who=who, name=path.name)


def bundles(site: SiteSettings) -> tuple[TrustStore, TrustStore]:
    agents = site.keys_dir / "agents"
    return (
        TrustStore.from_path(agents / "production-machines.crt"),
        TrustStore.from_path(agents / "qualification-machines.crt"),
    )


def index_of(site: SiteSettings, trust: TrustStore) -> list[tuple[str, str, str]]:
    entries = load_index(site.repository_dir, trust).entries
    return sorted((e.package, e.version, e.maturity) for e in entries)


def test_new_development_qualification_production(site: SiteSettings) -> None:
    life = PackageLifecycle(site)
    production_trust, qualification_trust = bundles(site)
    request = life.request("acme-hello", title="Hello", who="dave", note="asked by room 101")
    assert request.state == "new" and life.file_of(request) is None

    first = upload(life, PACKAGES / "acme-hello_1.0.0-1_PROD_fr.wapt", who="erin")
    assert (first.state, first.version, first.maturity) == ("development", "1.0.0-1", "PROD")
    assert first.signer == "Acme Packager"
    assert [h.action for h in first.history] == ["request", "upload"]
    assert first.history[0].note == "asked by room 101" and first.history[1].who == "erin"
    assert life.releases(state="new") == []
    dev_file = life.file_of(first)
    assert dev_file is not None and dev_file.parent == life.development_dir
    assert not (site.repository_dir / "Packages").exists()  # development serves nothing

    qualified = life.qualify(first.id, who="dave")
    assert (qualified.state, qualified.maturity) == ("qualification", "PREPROD")
    assert qualified.signer == "test developer"
    qual_file = site.repository_dir / "acme-hello_1.0.0-1_PREPROD_fr.wapt"
    assert life.file_of(qualified) == qual_file and not dev_file.exists()
    verify_package(qual_file, qualification_trust)
    with pytest.raises(VerificationError) as caught:
        verify_package(qual_file, production_trust)
    assert caught.value.has(UntrustedCertificateError)
    assert index_of(site, qualification_trust) == [("acme-hello", "1.0.0-1", "PREPROD")]
    assert index_of(site, production_trust) == []  # production machines discard it

    promoted = life.promote(qualified.id, who="dave")
    prod_file = site.repository_dir / "acme-hello_1.0.0-1_PROD_fr.wapt"
    assert (promoted.state, promoted.maturity, promoted.signer) == (
        "production",
        "PROD",
        "test production",
    )
    verified = verify_package(prod_file, production_trust)
    assert [c.cn for c in verified.trust_path] == ["test production", "test CA"]
    assert verified.entry.maturity == "PROD" and verified.entry.locales == ["fr"]
    assert not qual_file.exists()
    assert index_of(site, production_trust) == [("acme-hello", "1.0.0-1", "PROD")]
    assert [h.action for h in promoted.history] == ["request", "upload", "qualify", "promote"]
    assert all(h.who for h in promoted.history)

    # The next version goes through qualification while 1.0.0-1 stays in production.
    second = upload(life, PACKAGES / "acme-hello_1.2.0-3_PROD_fr.wapt")
    second = life.qualify(second.id, who="dave")
    assert prod_file.exists()
    assert index_of(site, qualification_trust) == [
        ("acme-hello", "1.0.0-1", "PROD"),
        ("acme-hello", "1.2.0-3", "PREPROD"),
    ]
    assert index_of(site, production_trust) == [("acme-hello", "1.0.0-1", "PROD")]
    second = life.promote(second.id, who="dave")
    assert not prod_file.exists()
    assert index_of(site, production_trust) == [("acme-hello", "1.2.0-3", "PROD")]
    old = life.release(promoted.id)
    assert old.state == "retired" and old.history[-1].note == "replaced by 1.2.0-3"
    archived = life.file_of(old)
    assert archived is not None and archived.parent == life.archive_dir and archived.is_file()
    # Every file that left the repository is in the archive: nothing deleted silently.
    assert len(list(life.archive_dir.glob("*.wapt"))) == 5

    retired = life.retire(second.id, who="dave", note="licence ended")
    assert retired.state == "retired"
    assert index_of(site, production_trust) == []
    assert [r.state for r in life.releases(text="HELLO")] == ["retired", "retired"]


def test_transitions_that_are_not_allowed_are_refused(life: PackageLifecycle) -> None:
    dev = upload(life, PACKAGES / "acme-hello_1.2.0-3_PROD_fr.wapt")
    with pytest.raises(TransitionError, match="only a package in qualification"):
        life.promote(dev.id, who="dave")
    qual = life.qualify(dev.id, who="dave")
    with pytest.raises(TransitionError, match="only a package in development"):
        life.qualify(qual.id, who="dave")
    prod = life.promote(qual.id, who="dave")
    # An older version cannot push a newer one out of production.
    older = life.qualify(upload(life, PACKAGES / "acme-hello_1.0.0-1_PROD_fr.wapt").id, who="d")
    with pytest.raises(TransitionError, match=r"version 1\.2\.0-3 is in production already"):
        life.promote(older.id, who="dave")
    assert life.release(prod.id).state == "production"
    life.retire(older.id, who="dave")
    with pytest.raises(TransitionError, match="already retired"):
        life.retire(older.id, who="dave")
    with pytest.raises(LifecycleError, match="no such release"):
        life.retire("nope", who="dave")
    with pytest.raises(TransitionError, match="already known"):
        life.request("acme-hello", title="again", who="dave")
    with pytest.raises(LifecycleError, match="not a package name"):
        life.request("bad name,x", title="x", who="dave")


def test_the_same_version_twice_is_refused(life: PackageLifecycle) -> None:
    upload(life, PACKAGES / "acme-app_3.0.1-1_PROD.wapt")
    with pytest.raises(UploadRefusedError, match="already on the site"):
        upload(life, PACKAGES / "acme-app_3.0.1-1_PROD.wapt")
    assert [p.name for p in life.development_dir.iterdir()] == ["acme-app_3.0.1-1_PROD.wapt"]


def test_a_group_package_is_not_an_upload(life: PackageLifecycle) -> None:
    with pytest.raises(UploadRefusedError, match="a group package"):
        upload(life, PACKAGES / "acme-toolbox_1-2_PROD.wapt")


@pytest.mark.parametrize("name", REFUSED_FIXTURES)
def test_wapt_fixtures_that_do_not_verify_are_refused(life: PackageLifecycle, name: str) -> None:
    with pytest.raises(UploadRefusedError) as caught:
        upload(life, PACKAGES / name)
    assert caught.value.problems and str(caught.value).startswith(f"{name}: refused: ")
    assert list(life.development_dir.iterdir()) == []
    assert life.releases() == []


def test_every_hostile_upload_is_refused_and_nothing_is_kept(site: SiteSettings) -> None:
    life = PackageLifecycle(site)
    refused = 0
    for case in CORPUS:
        if case["expect"] is None:
            continue
        with pytest.raises(UploadRefusedError) as caught:
            upload(life, HOSTILE / case["file"])
        assert caught.value.problems, case["file"]
        refused += 1
    assert refused > 60
    assert list(life.development_dir.iterdir()) == []
    assert life.releases() == []
    assert not (site.repository_dir / "Packages").exists()


def test_uploads_that_are_too_large_or_empty_are_refused(life: PackageLifecycle) -> None:
    data = (PACKAGES / "acme-app_3.0.1-1_PROD.wapt").read_bytes()
    seen: list[tuple[int, int]] = []
    with pytest.raises(UploadTooLargeError, match="upload limit of 1000 bytes"):
        life.upload(io.BytesIO(data), who="d", name="big.wapt", max_size=1000)
    with pytest.raises(UploadRefusedError, match="the file is empty"):
        life.upload(io.BytesIO(b""), who="d", name="empty.wapt")
    with pytest.raises(UploadRefusedError, match=r"not-a-package\.wapt: refused"):
        life.upload(io.BytesIO(b"hello" * 100), who="d", name="../../not-a-package.wapt")
    assert list(life.development_dir.iterdir()) == []
    item = life.upload(
        io.BytesIO(data),
        who="d",
        name="x.wapt",
        expected_size=len(data),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert item.package == "acme-app" and seen[-1] == (len(data), len(data))


def test_an_untrusted_site_refuses_the_academie_packages(tmp_path: Path) -> None:
    life = PackageLifecycle(site_settings(tmp_path, trust_fixture_ca=False))
    with pytest.raises(UploadRefusedError, match="trusted"):
        upload(life, PACKAGES / "acme-hello_1.0.0-1_PROD_fr.wapt")


def test_a_missing_file_is_reported(life: PackageLifecycle) -> None:
    item = upload(life, PACKAGES / "acme-libfoo_2.1-3_PROD.wapt")
    path = life.file_of(item)
    assert path is not None
    path.unlink()
    with pytest.raises(LifecycleError, match="is missing"):
        life.qualify(item.id, who="dave")
    assert life.release(item.id).state == "development"
