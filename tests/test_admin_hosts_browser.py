"""The hosts and rollout pages in Debian's chromium (Playwright), as an admin uses them.

The site app is real (`tests.site_harness`), served on loopback by werkzeug's threaded server,
with hosts that registered and reported through the real API (`test_admin_hosts.populated`:
one of them reports hostile markup). Tests find things by role and label and wait with
`expect`; an alert dialog anywhere fails the test (escaping); axe-core audits each page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.site_harness import ADMIN, SiteFixture, make_site
from tests.test_admin_hosts import CORPUS_HOST, populated, uuid
from tests.test_agent_reporting import ServedApp
from tests.test_portal_browser import audit, screenshot, words

pytestmark = pytest.mark.slow

expect.set_options(timeout=10_000)


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1024, "height": 768}, "locale": "fr-FR"}


@pytest.fixture
def served_site(tmp_path: Path) -> Iterator[tuple[SiteFixture, ServedApp]]:
    site = make_site(tmp_path)
    app, _store = populated(site)
    server = ServedApp(app)
    yield site, server
    server.stop()
    site.stop()


@pytest.fixture
def admin_page(page: Page, served_site: tuple[SiteFixture, ServedApp]) -> Page:
    """Signed in as the site's admin; any alert dialog fails the test."""
    _site, server = served_site
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.set_default_timeout(10_000)
    page.goto(f"{server.url}/admin/login")
    page.get_by_label("Identifiant", exact=True).fill(ADMIN[0])
    page.get_by_label("Mot de passe", exact=True).fill(ADMIN[1])
    page.get_by_role("button", name="Se connecter", exact=True).click()
    expect(page).to_have_url(f"{server.url}/admin/")
    yield page  # type: ignore[misc]
    assert dialogs == [], f"a script ran: {dialogs}"


def rows(page: Page) -> list[str | None]:
    return [r.get_attribute("data-host") for r in page.locator("tr.host-row").all()]


def test_the_host_list_searches_and_filters_without_reloading(admin_page: Page) -> None:
    page = admin_page
    page.get_by_role("link", name="Postes", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Postes")
    expect(page.locator("tr.host-row")).to_have_count(5)
    page.evaluate("window.__same_page = true")  # gone if the page reloads
    page.get_by_role("searchbox", name="Nom ou UUID").press_sequentially("101-03", delay=30)
    expect(page.locator("tr.host-row")).to_have_count(1)
    expect(page.locator("tr.host-row a")).to_have_text("PC-101-03")
    expect(page.locator(".result-count")).to_have_text("1 poste")
    assert "q=101-03" in page.url  # the search is in the address: a link to share
    page.get_by_role("searchbox", name="Nom ou UUID").fill("")
    page.get_by_label("État").select_option(label="En échec")
    expect(page.locator("tr.host-row")).to_have_count(2)
    assert sorted(h or "" for h in rows(page)) == sorted([uuid(3), CORPUS_HOST])
    page.get_by_label("État").select_option(label="Jamais signalé")
    expect(page.locator("tr.host-row")).to_have_count(1)
    page.get_by_label("État").select_option(label="Tous")
    page.get_by_label("Groupe de postes").select_option(label="Salle 101")
    expect(page.locator("tr.host-row")).to_have_count(3)
    assert page.evaluate("window.__same_page") is True
    screenshot(page, "admin-hosts-list")
    audit(page, "the host list")


def test_a_failed_host_shows_its_log_as_text(
    admin_page: Page, served_site: tuple[SiteFixture, ServedApp]
) -> None:
    page = admin_page
    _site, server = served_site
    page.goto(f"{server.url}/admin/hosts?status=failed")
    page.locator(f'tr[data-host="{CORPUS_HOST}"] a').click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text('<img src=x onerror=alert("name")>')
    log = page.locator("article.failure pre.log")
    expect(log).to_contain_text("</pre><script>alert('log')</script>")
    assert page.locator("script:not([src])").count() == 0
    # the log can be reached and scrolled with the keyboard
    log.focus()
    assert log.evaluate("e => e === document.activeElement")
    screenshot(page, "admin-host-hostile")
    audit(page, "a host's page")


def test_rollout_of_a_package_with_its_failures(
    admin_page: Page, served_site: tuple[SiteFixture, ServedApp]
) -> None:
    page = admin_page
    _site, server = served_site
    page.goto(f"{server.url}/admin/rollout")
    row = page.locator('tr[data-package="tis-geogebra"]')
    expect(row).to_contain_text("installé sur 2 des 3, 1 en échec")
    page.get_by_role("searchbox", name="Paquet").press_sequentially("geo", delay=30)
    expect(page.locator("tr[data-package]")).to_have_count(1)
    audit(page, "the rollout index")
    row.get_by_role("link", name="tis-geogebra").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Déploiement de tis-geogebra")
    summary = page.locator("p.rollout-summary")
    assert "installé sur 2 des 3, 1 en échec" in words(summary.inner_text())
    failed = page.locator(".rollout-failed li")
    expect(failed).to_have_count(1)
    expect(failed.locator("pre.log")).to_have_text("setup.py: exit 1")
    expect(page.locator(".rollout-installed li")).to_have_count(2)
    screenshot(page, "admin-rollout")
    audit(page, "a package's rollout")


def test_an_admin_resets_a_host_key(
    admin_page: Page, served_site: tuple[SiteFixture, ServedApp]
) -> None:
    page = admin_page
    site, server = served_site
    page.goto(f"{server.url}/admin/hosts/{uuid(1)}")
    page.get_by_role("button", name="Réinitialiser la clé du poste").click()
    expect(page.get_by_text("est réinitialisée")).to_be_visible()
    expect(
        page.get_by_text("aucune : réinitialisée, la machine doit s’enregistrer de nouveau")
    ).to_be_visible()
    events, _ = site.audit.search(action="host.reset_key")
    assert [e.target for e in events] == [uuid(1)]
