"""The site server's admin side in Debian's chromium, driven by Playwright, as an admin uses it.

The site server is `comptoir portal serve --config site.toml` in a child process (a `[site]`
table, the session's slapd for `dave`), on a free loopback port. Tests sign in with the
keyboard, search the audit log as they type, download the CSV, publish a catalog and read its
public page; axe-core (as `tests/test_portal_browser.py` runs it, with the real CSP) audits
each page: no serious or critical violation.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from portal.site.audit import AuditEvent, AuditLog
from tests.site_harness import SiteFixture, make_site
from tests.slapd import USERS, SlapdServer, free_port
from tests.test_portal_browser import PortalServer, screenshot
from tests.test_portal_browser import audit as axe_check

pytestmark = pytest.mark.slow

expect.set_options(timeout=10_000)


class SiteServer(PortalServer):
    """`comptoir portal serve` on a site's settings file, on a free loopback port (no agent:
    it is ready when its admin login page answers)."""

    def __init__(self, site: SiteFixture, ldap: SlapdServer) -> None:
        self.port = free_port()
        self.log = site.root / "site-server.log"
        config = site.write_config(ldap)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
        exe = Path(sys.executable).parent / "comptoir"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(exe), "portal", "serve", "--config", str(config), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the site server exited: {self.log.read_text('utf-8')}")
            try:
                with urllib.request.urlopen(f"{self.url}/admin/login", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no site server: {self.log.read_text('utf-8')}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SiteFixture:
    fixture = make_site(tmp_path_factory.mktemp("admin-browser"))
    now = datetime.now(UTC)
    AuditLog(fixture.site.data_dir / "audit").record_many(
        [
            AuditEvent(
                now - timedelta(hours=3), "bob", "teacher", "install", "tis-geogebra", "uuid-1"
            ),
            AuditEvent(
                now - timedelta(hours=2),
                "carol",
                "teacher",
                "install",
                "tis-notepad",
                "uuid-2",
                "failed",
                "=HYPERLINK(1)",
            ),
        ]
    )
    return fixture


@pytest.fixture(scope="module")
def server(site: SiteFixture, ldap_server: SlapdServer) -> Iterator[SiteServer]:
    running = SiteServer(site, ldap_server)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1024, "height": 768}, "locale": "fr-FR"}


def sign_in_with_the_keyboard(page: Page, server: SiteServer) -> None:
    page.goto(f"{server.url}/admin/audit")
    expect(page).to_have_url(f"{server.url}/admin/login?next=/admin/audit")
    expect(page.get_by_label("Identifiant", exact=True)).to_be_focused()
    page.keyboard.type("dave")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Mot de passe", exact=True)).to_be_focused()
    page.keyboard.type(USERS["dave"][0])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Journal d’audit")


def test_an_admin_signs_in_with_the_keyboard_and_finds_the_dashboard(
    page: Page, server: SiteServer
) -> None:
    page.goto(f"{server.url}/admin/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connexion administrateur")
    axe_check(page, "the admin login")
    screenshot(page, "admin-login")
    sign_in_with_the_keyboard(page, server)
    page.get_by_role("link", name="Tableau de bord").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Administration du site")
    expect(page.get_by_text("Connecté en tant que dave (administrateur)")).to_be_visible()
    nav = page.get_by_role("navigation", name="Menu d’administration")
    expect(nav.get_by_role("link", name="Catalogues")).to_be_visible()
    axe_check(page, "the dashboard")
    screenshot(page, "admin-dashboard")


def test_the_audit_log_is_searched_as_one_types_and_downloaded(
    page: Page, server: SiteServer
) -> None:
    sign_in_with_the_keyboard(page, server)
    rows = page.locator("#audit-results tbody tr")
    expect(rows.filter(has_text="tis-geogebra")).to_have_count(1)
    expect(rows.filter(has_text="admin.login").first).to_contain_text("dave")
    axe_check(page, "the audit log")
    page.get_by_role("searchbox", name="Rechercher").press_sequentially("notepad", delay=20)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("carol")
    expect(page.locator("#audit-results .result-count")).to_contain_text("1 évènement")
    expect(page).to_have_url(
        f"{server.url}/admin/audit?q=notepad&who=&action=&role=&outcome=&since=&until="
    )
    page.get_by_label("Rôle").select_option("admin")
    expect(page.get_by_text("Aucun évènement ne correspond à cette recherche.")).to_be_visible()
    page.get_by_label("Rôle").select_option("teacher")
    expect(rows).to_have_count(1)
    screenshot(page, "admin-audit-search")

    with page.expect_download() as waiting:
        page.get_by_role("link", name="Télécharger en CSV").click()
    download = waiting.value
    assert download.suggested_filename.startswith("audit-")
    body = Path(download.path()).read_text("utf-8-sig")
    table = list(csv.reader(io.StringIO(body)))
    assert [row[1] for row in table[1:]] == ["carol"]
    assert table[1][7] == "'=HYPERLINK(1)"


def test_a_published_catalog_has_a_public_page(page: Page, server: SiteServer) -> None:
    sign_in_with_the_keyboard(page, server)
    page.get_by_role("navigation", name="Menu d’administration").get_by_role(
        "link", name="Catalogues"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Catalogues publiés")
    axe_check(page, "the catalogs admin page")
    page.get_by_label("Nom (dans l’adresse)").fill("maths")
    page.get_by_label("Titre").fill("Mathématiques")
    page.get_by_label("Description").fill("Pour les enseignants de maths")
    page.get_by_label("Paquets").fill("tis-geogebra\ntis-notepad")
    page.get_by_role("button", name="Publier", exact=True).click()
    expect(page.get_by_text("Catalogue « Mathématiques » publié.")).to_be_visible()
    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Connexion administrateur")

    page.goto(f"{server.url}/catalogs/")
    page.get_by_role("link", name="Mathématiques").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mathématiques")
    expect(page.locator("li.card")).to_have_count(2)
    expect(page.locator('li.card[data-package="tis-geogebra"]')).to_contain_text(
        "pas (encore) dans le dépôt"
    )
    axe_check(page, "a public catalog")
    screenshot(page, "public-catalog")
