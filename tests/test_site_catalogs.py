"""Published catalogs: the store, the admin pages (CSRF, audit), and the public pages built from
a real signed repository (untrusted text escaped, unknown packages shown as such)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.site.catalogs import CatalogStore, UnknownCatalogError
from portal.site.model import ModelError, PublishedCatalog
from tests.helpers import PKI, fixture_signer, write_source
from tests.portal_site import XSS_DESCRIPTION, XSS_NAME, Browser, soup, text, tiny_png
from tests.site_harness import SiteFixture, make_site
from wapt.package import build_package
from wapt.repository import scan_repository


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteFixture]:
    fixture = make_site(tmp_path)
    # the packages below are signed by the WAPT fixtures' code-signing key
    shutil.copy(PKI / "ca.crt", fixture.site.trusted_certs / "fixtures-ca.crt")
    repo = fixture.site.repository_dir
    signer = fixture_signer("codesign")
    packages = {
        "tis-geogebra": {
            "name": "GeoGebra",
            "description": "Dynamic mathematics",
            "description_fr": "Mathématiques dynamiques",
            "editor": "International GeoGebra Institute",
            "licence": "GPL-3.0",
        },
        "tis-xss": {"name": XSS_NAME, "description": XSS_DESCRIPTION, "editor": "<i>evil</i>"},
    }
    for name, fields in packages.items():
        files = {"WAPT/icon.png": tiny_png()} if name == "tis-geogebra" else {}
        for version in ("1.0-1", "2.0-1"):
            source = write_source(tmp_path / "src" / version, name, version, files=files, **fields)
            build_package(source, signer, repo)
    # signed by a key the site does not trust: its entry is refused
    untrusted = write_source(tmp_path / "src", "tis-rogue", "1-1", name="Rogue")
    build_package(untrusted, fixture_signer("untrusted-codesign"), repo)
    scan_repository(repo)
    yield fixture
    fixture.stop()


def test_the_store_keeps_catalogs_by_name(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path)
    maths = PublishedCatalog("maths", "Maths", "Pour les profs", ("tis-geogebra",))
    store.create(maths)
    with pytest.raises(ModelError, match="the name is taken"):
        store.create(maths)
    assert store.put(PublishedCatalog("arts", "Arts")) is True
    assert store.put(PublishedCatalog("maths", "Maths 2")) is False
    assert [c.title for c in CatalogStore(tmp_path).list()] == ["Arts", "Maths 2"]
    store.delete("arts")
    with pytest.raises(UnknownCatalogError):
        store.get("arts")
    with pytest.raises(UnknownCatalogError):
        store.delete("arts")


def test_admins_publish_edit_and_withdraw_catalogs_audited(site: SiteFixture) -> None:
    admin = site.admin_client()
    answer = admin.post(
        "/admin/catalogs",
        {
            "name": "maths",
            "title": "Mathématiques",
            "description": "Les logiciels de maths",
            "packages": "tis-geogebra\ntis-xss, tis-missing tis-geogebra",
        },
    )
    assert answer.status_code == 303
    page = soup(admin.get(answer.headers["Location"]))
    assert "Catalogue « Mathématiques » publié." in text(page.select_one(".flashes"))
    stored = CatalogStore(site.site.data_dir).get("maths")
    assert stored.packages == ("tis-geogebra", "tis-xss", "tis-missing")

    form = soup(admin.get("/admin/catalogs/maths"))
    assert text(form.select_one("textarea#catalog-packages")) == "tis-geogebra tis-xss tis-missing"
    answer = admin.post(
        "/admin/catalogs/maths", {"title": "Maths", "description": "", "packages": "tis-xss"}
    )
    assert answer.status_code == 303
    assert CatalogStore(site.site.data_dir).get("maths").packages == ("tis-xss",)
    assert admin.post("/admin/catalogs/maths/delete").status_code == 303
    assert CatalogStore(site.site.data_dir).list() == []
    events = site.audit.search(action="catalog")[0]
    assert [(e.action, e.target, e.who) for e in events] == [
        ("catalog.delete", "maths", "admin"),
        ("catalog.update", "maths", "admin"),
        ("catalog.create", "maths", "admin"),
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Maths!", "title": "M"}, "1 à 64 lettres minuscules"),
        ({"name": "maths", "title": ""}, "Donnez un titre"),
        ({"name": "maths", "title": "M", "packages": "ok <script>"}, "noms de paquets : <script>"),
    ],
)
def test_bad_catalogs_are_refused_with_the_reason(
    site: SiteFixture, fields: dict[str, str], message: str
) -> None:
    admin = site.admin_client()
    answer = admin.post("/admin/catalogs", fields)
    assert answer.status_code == 400
    assert message in text(soup(answer).select_one("#catalog-errors"))
    assert CatalogStore(site.site.data_dir).list() == []
    assert site.audit.search(action="catalog")[1] == 0


def test_a_taken_name_and_unknown_catalogs(site: SiteFixture) -> None:
    admin = site.admin_client()
    assert admin.post("/admin/catalogs", {"name": "a", "title": "A"}).status_code == 303
    answer = admin.post("/admin/catalogs", {"name": "a", "title": "B"})
    assert answer.status_code == 400 and "existe déjà" in text(soup(answer))
    assert admin.get("/admin/catalogs/nope").status_code == 404
    assert admin.post("/admin/catalogs/nope/delete").status_code == 404
    assert admin.post("/admin/catalogs/a/delete", csrf=False).status_code == 400


def test_the_public_page_describes_each_package_from_the_verified_index(
    site: SiteFixture,
) -> None:
    CatalogStore(site.site.data_dir).create(
        PublishedCatalog(
            "maths",
            "Maths <b>au lycée</b>",
            "Choisis par l'équipe",
            ("tis-geogebra", "tis-xss", "tis-rogue", "tis-missing"),
        )
    )
    visitor = Browser(site.app())
    listing = soup(visitor.get("/catalogs/"))
    assert text(listing.select_one(".catalog-list a")) == "Maths <b>au lycée</b>"
    answer = visitor.get("/catalogs/maths")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert XSS_NAME not in html and "<i>evil</i>" not in html and "<b>au lycée</b>" not in html
    page = soup(answer)
    cards = {card["data-package"]: card for card in page.select("li.card")}
    geogebra = cards["tis-geogebra"]
    assert text(geogebra.select_one(".card-title")) == "GeoGebra"
    meta = text(geogebra.select_one("dl"))
    assert "2.0-1" in meta and "International GeoGebra Institute" in meta and "GPL-3.0" in meta
    assert text(geogebra.select_one(".description")) == "Mathématiques dynamiques"
    icon = geogebra.select_one("img.icon")
    assert icon is not None and str(icon["src"]).startswith("/catalogs/icons/")
    png = visitor.get(str(icon["src"]))
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
    assert text(cards["tis-xss"].select_one(".card-title")) == XSS_NAME
    for unknown in ("tis-rogue", "tis-missing"):
        assert "card-unknown" in cards[unknown]["class"]
        assert "pas (encore) dans le dépôt" in text(cards[unknown])
    visitor.post("/language", {"lang": "en", "next": "/catalogs/maths"})
    english = soup(visitor.get("/catalogs/maths"))
    assert text(english.select_one('li[data-package="tis-geogebra"] .description')) == (
        "Dynamic mathematics"
    )


def test_public_pages_need_no_login_and_refuse_bad_names(site: SiteFixture) -> None:
    visitor = Browser(site.app())
    assert visitor.get("/catalogs/").status_code == 200
    assert visitor.get("/catalogs/nope").status_code == 404
    assert visitor.get("/catalogs/icons/not-a-uuid.png").status_code == 404
    escape = visitor.get("/catalogs/icons/..%2F..%2Fetc%2Fpasswd.png")
    assert escape.status_code in (303, 404) and b"root:" not in escape.data
    assert (
        visitor.get("/catalogs/icons/00000000-0000-0000-0000-000000000000.png").status_code == 404
    )
