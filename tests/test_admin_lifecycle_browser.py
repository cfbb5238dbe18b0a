"""The packages and groups pages in Debian's chromium (Playwright), as an admin uses them.

The site server is the real app (`tests.site_harness`) served by waitress on loopback, with
the session's slapd for the admin login (`dave`). The admin uploads a WAPT package (the
progress bar fills), qualifies and promotes it, makes a machine group with the keyboard alone,
assigns the package to it, and plans an install at shutdown. axe-core audits each page.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from portal.site.assignments import AssignmentStore
from tests.agent_harness import HOST_UUID
from tests.conftest import WAPT_FIXTURES
from tests.lifecycle_harness import install_site_keys
from tests.site_harness import SiteFixture, make_site
from tests.slapd import SlapdServer, free_port
from tests.test_portal_browser import audit, tab_to

pytestmark = pytest.mark.slow

HELLO = WAPT_FIXTURES / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt"
TAMPERED = WAPT_FIXTURES / "packages" / "acme-hello_1.0.0-1_PROD_fr.tampered-payload.wapt"

expect.set_options(timeout=10_000)


@pytest.fixture
def served(tmp_path: Path, ldap_server: SlapdServer) -> Iterator[tuple[str, SiteFixture]]:
    from waitress.server import create_server

    site = make_site(tmp_path, ldap_server)
    install_site_keys(site.site)
    port = free_port()
    server = create_server(site.app(), host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", site
    finally:
        server.close()
        site.stop()
        thread.join(5)


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/admin/login")
    page.locator("#username").fill("dave")
    page.locator("#password").fill("dave-pw")
    page.locator("#password").press("Enter")
    expect(page).to_have_url(f"{url}/admin/")


def test_upload_promote_assign_with_keyboard_and_axe(
    page: Page, served: tuple[str, SiteFixture]
) -> None:
    url, site = served
    page.set_viewport_size({"width": 1024, "height": 768})
    sign_in(page, url)
    page.get_by_role("link", name="Paquets").first.click()
    expect(page.get_by_role("heading", name="Paquets", level=1)).to_be_visible()
    audit(page, "packages")

    # A tampered package is refused, and the page says so in its alert region.
    page.get_by_label("Fichier du paquet (.wapt)").set_input_files(str(TAMPERED))
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.locator("#errors")).to_contain_text("Paquet refusé")
    expect(page.locator("#errors")).to_contain_text(TAMPERED.name)

    page.get_by_label("Fichier du paquet (.wapt)").set_input_files(str(HELLO))
    page.get_by_role("button", name="Envoyer", exact=True).click()
    row = page.locator("#packages tbody tr", has_text="acme-hello")
    expect(row).to_contain_text("Développement")
    expect(page.locator("#upload-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#errors")).to_be_empty()

    row.get_by_role("button", name="Passer en qualification").click()
    expect(row).to_contain_text("Qualification")
    expect(row).to_contain_text("PREPROD")
    row.get_by_role("button", name="Passer en production").click()
    expect(row).to_contain_text("Production")
    expect(row).to_contain_text("test production")
    audit(page, "packages after promotion")
    assert (site.site.repository_dir / "acme-hello_1.0.0-1_PROD_fr.wapt").is_file()

    # A machine group, made with the keyboard alone (visible focus on every step).
    page.get_by_role("link", name="Groupes").first.click()
    audit(page, "groups")
    page.get_by_label("Nom (dans les noms de paquets)").fill("salle-101")
    page.get_by_label("Titre").fill("Lycée Chateaubriand — salle 101")
    page.get_by_label("Postes", exact=True).fill(HOST_UUID)
    page.get_by_label("Groupes d'enseignants").fill("profs-maths")
    create = page.get_by_role("button", name="Créer le groupe")
    tab_to(page, create)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Lycée Chateaubriand — salle 101")).to_be_visible()

    page.get_by_label("Paquet", exact=True).fill("acme-hello")
    page.get_by_label("Intention").select_option("required")
    page.get_by_role("button", name="Attribuer", exact=True).click()
    expect(page.locator("table")).to_contain_text("acme-hello")
    expect(page.get_by_text("Enregistré et publié.")).to_be_visible()
    audit(page, "group")
    [assignment] = AssignmentStore(site.site.data_dir).assignments(group="salle-101")
    assert (assignment.package, assignment.intent) == ("acme-hello", "required")
    assert (site.site.host_repository_dir / f"{HOST_UUID}.wapt").is_file()

    # An install at shutdown, with a deadline.
    page.get_by_role("link", name="Extinction").first.click()
    page.get_by_label("acme-hello").check()
    page.get_by_label("Lycée Chateaubriand — salle 101").check()
    # typed in the site's time zone, at 10:00 (never in an hour the clocks change)
    deadline = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT10:00")
    page.get_by_label("Échéance (heure de Europe/Paris)").fill(deadline)
    page.get_by_role("button", name="Imposer à l'extinction").click()
    expect(page.locator("tbody")).to_contain_text("salle-101")
    audit(page, "shutdown")
    [forced] = AssignmentStore(site.site.data_dir).assignments(intent="at_shutdown")
    assert forced.deadline is not None
    typed = datetime.fromisoformat(deadline).replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert forced.deadline == typed
