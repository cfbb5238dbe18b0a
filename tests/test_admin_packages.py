"""The packages pages: upload (verified, audited), qualify, promote, retire, search, limits."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portal.admin.packages import UPLOAD_LIMIT_KEY
from portal.site.lifecycle import PackageLifecycle
from tests.conftest import TEST_DATA, WAPT_FIXTURES
from tests.helpers import fixture_signer, write_source
from tests.lifecycle_harness import keyed_site
from tests.portal_site import Browser, soup
from tests.site_harness import TEACHER, SiteFixture, admin_login
from tests.slapd import SlapdServer
from wapt.package import build_package, verify_package
from wapt.trust import TrustStore

PACKAGES = WAPT_FIXTURES / "packages"
HELLO = PACKAGES / "acme-hello_1.0.0-1_PROD_fr.wapt"


@pytest.fixture
def site(tmp_path: Path, ldap_server: SlapdServer) -> Iterator[SiteFixture]:
    yield from keyed_site(tmp_path, ldap_server)


@pytest.fixture
def admin(site: SiteFixture) -> Browser:
    return site.admin_client("dave", "dave-pw")


def send(
    browser: Browser, path: Path | None, *, name: str = "", htmx: bool = False, **kw: Any
) -> Any:
    data: dict[str, Any] = {}
    if path is not None:
        data["package"] = (io.BytesIO(path.read_bytes()), name or path.name)
    return browser.post(
        "/admin/packages/upload", data, htmx=htmx, content_type="multipart/form-data", **kw
    )


def big_package(root: Path, size: int) -> Path:
    """A package over the app's 64 KiB request limit (random bytes do not compress)."""
    source = write_source(root, "tis-big", "1.0-1", files={"payload.bin": os.urandom(size)})
    return build_package(source, fixture_signer("codesign"), root)


def listed(browser: Browser, url: str, htmx: bool = False) -> list[str]:
    """The package names in the list's rows."""
    page = soup(browser.get(url, htmx=htmx))
    return [row.find("a").get_text(strip=True) for row in page.select("#packages tbody th")]


def events(site: SiteFixture, action: str) -> list[Any]:
    found, _ = site.audit.search(action=action, limit=100)
    return found


def test_upload_qualify_promote_retire(site: SiteFixture, admin: Browser) -> None:
    answer = send(admin, HELLO)
    assert answer.status_code == 303
    page = admin.get("/admin/packages")
    text = page.get_data(as_text=True)
    assert "acme-hello" in text and "1.0.0-1" in text and "Acme Packager" in text
    [upload] = events(site, "package.upload")
    assert (upload.who, upload.outcome, upload.target) == ("dave", "ok", "acme-hello 1.0.0-1")

    life = PackageLifecycle(site.site)
    [item] = life.releases()
    answer = admin.post(f"/admin/packages/{item.id}/qualify", htmx=True)
    assert answer.status_code == 200 and 'id="packages"' in answer.get_data(as_text=True)
    assert life.release(item.id).state == "qualification"
    answer = admin.post(f"/admin/packages/{item.id}/promote")
    assert answer.status_code == 303
    prod = site.site.repository_dir / "acme-hello_1.0.0-1_PROD_fr.wapt"
    trust = TrustStore.from_path(site.site.keys_dir / "agents" / "production-machines.crt")
    assert verify_package(prod, trust).entry.maturity == "PROD"
    detail = admin.get(f"/admin/packages/{item.id}").get_data(as_text=True)
    for action in ("upload", "qualify", "promote"):
        assert f"<td>{action}</td>" in detail
    assert [e.outcome for e in events(site, "package.promote")] == ["ok"]

    # Not allowed: promoting again; refused, said, audited.
    answer = admin.post(f"/admin/packages/{item.id}/promote", htmx=True)
    assert answer.status_code == 409 and answer.headers["HX-Retarget"] == "#errors"
    assert "only a package in qualification" in answer.get_data(as_text=True)
    assert [e.outcome for e in events(site, "package.promote")] == ["refused", "ok"]

    assert admin.post(f"/admin/packages/{item.id}/retire").status_code == 303
    assert not prod.exists() and life.release(item.id).state == "retired"
    assert admin.post(f"/admin/packages/{item.id}/explode").status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "acme-hello_1.0.0-1_PROD_fr.tampered-payload.wapt",
        "acme-rogue_1.0-1_PROD.wapt",
        "acme-plainsigned_1.0-1_PROD.wapt",
    ],
)
def test_a_bad_upload_is_refused_clearly_and_audited(
    site: SiteFixture, admin: Browser, name: str
) -> None:
    answer = send(admin, PACKAGES / name, htmx=True)
    assert answer.status_code == 422
    text = answer.get_data(as_text=True)
    assert name in text and "refus" in text
    [event] = events(site, "package.upload")
    assert event.outcome == "refused" and name in event.details
    assert list((site.site.data_dir / "lifecycle" / "development").iterdir()) == []


def test_hostile_names_and_texts_are_escaped(site: SiteFixture, admin: Browser) -> None:
    answer = send(
        admin, TEST_DATA / "hostile" / "not-a-zip.wapt", name="<img src=x onerror=1>.wapt"
    )
    assert answer.status_code == 422
    assert "<img src=x" not in answer.get_data(as_text=True)
    assert "&lt;img src=x onerror=1&gt;.wapt" in answer.get_data(as_text=True)
    source = write_source(site.root / "src", "tis-xss", "1-1", name='<script>alert("x")</script>')
    send(admin, build_package(source, fixture_signer("codesign"), site.root))
    text = admin.get("/admin/packages").get_data(as_text=True)
    assert '<script>alert("x")</script>' not in text
    assert "&lt;script&gt;alert(" in text


def test_uploads_have_their_own_limit_and_the_rest_keeps_64_kib(
    site: SiteFixture, tmp_path: Path
) -> None:
    big = big_package(tmp_path, 200_000)
    app = site.app()
    admin = site.admin_client("dave", "dave-pw", app=app)
    assert send(admin, big).status_code == 303  # above 64 KiB, below 2 GiB
    assert PackageLifecycle(site.site).releases()[0].package == "tis-big"
    # Other routes keep the app's limit.
    filler = {"title": "x" * 100_000, "name": "room"}
    assert admin.post("/admin/groups", filler).status_code == 413
    # A teacher gets no larger limit on the upload route.
    teacher = site.browser(app)
    admin_login(teacher, *TEACHER)
    assert send(teacher, big).status_code == 413
    # The limit is configurable.
    small = site.app()
    small.config[UPLOAD_LIMIT_KEY] = 100_000
    other = site.admin_client("dave", "dave-pw", app=small)
    assert send(other, big_package(tmp_path / "b", 150_000)).status_code == 413


def test_upload_needs_csrf_and_a_file(site: SiteFixture, admin: Browser) -> None:
    answer = admin.post(
        "/admin/packages/upload",
        {"package": (io.BytesIO(HELLO.read_bytes()), HELLO.name)},  # type: ignore[dict-item]
        csrf=False,
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400
    assert send(admin, None).status_code == 400
    assert PackageLifecycle(site.site).releases() == []


def test_requests_filters_and_search(site: SiteFixture, admin: Browser) -> None:
    answer = admin.post(
        "/admin/packages/request", {"package": "tis-scratch", "title": "Scratch", "note": "for 5e"}
    )
    assert answer.status_code == 303
    send(admin, HELLO)
    send(admin, PACKAGES / "acme-app_3.0.1-1_PROD.wapt")
    assert listed(admin, "/admin/packages?state=new") == ["tis-scratch"]
    found = admin.get("/admin/packages?q=hello", htmx=True)
    assert "<html" not in found.get_data(as_text=True)
    assert listed(admin, "/admin/packages?q=hello", htmx=True) == ["acme-hello"]
    assert listed(admin, "/admin/packages?maturity=PREPROD") == []
    assert listed(admin, "/admin/packages?maturity=PROD&state=development") == [
        "acme-app",
        "acme-hello",
    ]
    again = admin.post("/admin/packages/request", {"package": "tis-scratch"})
    assert again.status_code == 409
    assert admin.get("/admin/packages/nope").status_code == 404


def test_a_teacher_gets_nothing_done(site: SiteFixture) -> None:
    teacher = site.browser()
    assert admin_login(teacher, "alice", "alice-pw").status_code == 403
    assert [e.outcome for e in events(site, "admin.login")] == ["refused"]
    for answer in (
        teacher.get("/admin/packages"),
        teacher.post("/admin/packages/request", {"package": "tis-evil"}),
        send(teacher, HELLO),
    ):
        assert answer.status_code == 303
        assert answer.headers["Location"].startswith("/admin/login")
    assert PackageLifecycle(site.site).releases() == []
