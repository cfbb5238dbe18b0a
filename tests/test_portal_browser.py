"""The portal end to end in Debian's chromium, driven by Playwright, as a teacher uses it.

Everything is real and on loopback: the agent process (`tests.portal_site.start_site`, real
signed packages), the session's slapd, and the portal served by waitress through
`comptoir portal serve` in a child process. The browser is Debian's chromium, launched with
no network access (`browser_type_launch_args` in conftest.py), at 1024×768, in French unless
a test switches. Tests find things by role and label, as a screen reader does, and wait with
`expect`; the only sleep is the idle-timeout test's.

Screenshots of each key step go to `test-results/screenshots/` under the project (git ignores
it; pytest-playwright empties `test-results/` when a session starts, so they are the last
run's). axe-core (vendored, `tests/vendor/axe-core/`) audits the login page, the catalog, My
software and a page with tasks in progress: no serious or critical violation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Route, expect

import tests.portal_site
from tests.portal_site import PACKAGES, Site, start_site
from tests.slapd import USERS, SlapdServer, free_port

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-results" / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.10.3"
# Where the page fetches axe from: a path on the portal's own origin that Playwright answers
# (the portal never sees it), so that the page's CSP, `script-src 'self'`, accepts the script
# and the audit runs with the real CSP in force (no `bypass_csp`).
AXE_PATH = "/__browser-tests__/axe.min.js"

VIEWPORT = {"width": 1024, "height": 768}
IDLE_TIMEOUT = 3  # seconds, for the idle portal only
# The slow package's setup.py sleeps this long while "installing": long enough for the status
# box (polled every second) to show the step, so the bar's move is seen on any machine.
SLOW_SECONDS = 3.0

expect.set_options(timeout=10_000)


# --- the site: agent, portal, browser ------------------------------------------------------


class PortalServer:
    """`comptoir portal serve` in a child process, on a free loopback port."""

    def __init__(self, site: Site, name: str, **settings: str) -> None:
        self.port = free_port()
        self.log = site.root / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
        env["COMPTOIR_PORTAL_DATA_DIR"] = str(site.root / name)
        env["COMPTOIR_PORTAL_ICONS_DIR"] = str(site.icons_dir)
        for key, value in settings.items():
            env[f"COMPTOIR_PORTAL_{key.upper()}"] = value
        exe = Path(sys.executable).parent / "comptoir"
        command = [str(exe), "portal", "serve", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "--agent-url", site.agent.url],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the portal exited: {self.log.read_text('utf-8')}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the portal did not start: {self.log.read_text('utf-8')}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture(scope="module")
def portal_site(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Site]:
    """One real agent for this module (its slow package sleeps `SLOW_SECONDS`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.portal_site, "SLOW_SECONDS", SLOW_SECONDS)
        yield from start_site(tmp_path_factory.mktemp("browser-site"), ldap_server)


@pytest.fixture(scope="module")
def portal(portal_site: Site) -> Iterator[PortalServer]:
    """The portal with its default settings."""
    server = PortalServer(portal_site, "portal")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def idle_portal(portal_site: Site) -> Iterator[PortalServer]:
    """A second portal on the same agent that signs users out after `IDLE_TIMEOUT` seconds."""
    server = PortalServer(portal_site, "idle-portal", idle_timeout=str(IDLE_TIMEOUT))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": VIEWPORT, "locale": "fr-FR"}


@pytest.fixture
def page(page: Page) -> Page:
    page.set_default_timeout(10_000)
    return page


@pytest.fixture(autouse=True)
def clean_machine(portal_site: Site) -> Iterator[None]:
    """Each test starts from a machine where nothing of the portal's packages is installed
    or under way, even if the test before it failed half-way."""
    yield
    admin = portal_site.client.login("dave", USERS["dave"][0])
    for task in portal_site.client.cancel_all_tasks(admin):
        portal_site.client.wait_for_task(task.id, timeout=30)
    portal_site.uninstall(*PACKAGES)


# --- helpers -------------------------------------------------------------------------------


def words(text: str) -> str:
    """`text` with its runs of white space (French no-break spaces included) made one space."""
    return " ".join(text.split())


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def sign_in(page: Page, portal: PortalServer, user: str = "alice") -> None:
    page.goto(f"{portal.url}/login")
    page.get_by_label("Identifiant", exact=True).fill(user)
    page.get_by_label("Mot de passe", exact=True).fill(USERS[user][0])
    page.get_by_role("button", name="Se connecter", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Catalogue de logiciels")
    expect(page.get_by_text(f"Compte connecté : {user}")).to_be_visible()


def card(page: Page, package: str) -> Locator:
    return page.locator(f'li.card[data-package="{package}"]')


def cards_shown(page: Page) -> list[str | None]:
    return [li.get_attribute("data-package") for li in page.locator("li.card").all()]


def search_box(page: Page) -> Locator:
    return page.get_by_role("searchbox", name="Rechercher", exact=True)


def audit(page: Page, where: str) -> None:
    """Run axe-core on the page as it is now; fail on any serious or critical violation.

    axe is a test tool, not part of the portal: it is served to the page from a route that
    Playwright answers under the portal's origin (`AXE_PATH`), so the CSP stays in force.
    """
    url = page.url.split("/", 3)
    script = f"{url[0]}//{url[2]}{AXE_PATH}"

    def serve_axe(route: Route) -> None:
        route.fulfill(path=AXE, content_type="text/javascript; charset=utf-8")

    page.route(script, serve_axe)
    try:
        page.add_script_tag(url=script)
    finally:
        page.unroute(script, serve_axe)
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return {
                version: axe.version,
                passes: r.passes.length,
                violations: r.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map(n => ({target: n.target, summary: n.failureSummary})),
                })),
            };
        }"""
    )
    assert result["version"] == AXE_VERSION
    assert result["passes"] > 0, "axe checked nothing"
    violations = result["violations"]
    listing = "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']}\n"
        + "".join(f"    {node['target']}: {node['summary']}\n" for node in v["nodes"])
        for v in violations
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"axe on {where}: serious or critical violations\n{listing}"
    if violations:
        print(f"axe on {where}: minor violations\n{listing}")


def outline_of(page: Page) -> dict[str, str]:
    """The focused element and its computed outline."""
    found: dict[str, str] = page.evaluate(
        """() => {
            const e = document.activeElement;
            const s = getComputedStyle(e);
            return {tag: e.tagName, id: e.id, name: e.getAttribute("aria-label") ||
                    e.textContent.replace(/\\s+/g, " ").trim(),
                    style: s.outlineStyle, width: s.outlineWidth};
        }"""
    )
    return found


def tab_to(page: Page, target: Locator, *, limit: int = 40) -> dict[str, str]:
    """Press Tab until `target` has the focus; every element on the way must show its focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = outline_of(page)
        assert focused["style"] != "none" and focused["width"] != "0px", focused
        if target.evaluate("element => element === document.activeElement"):
            return focused
    raise AssertionError(f"{target} not reached with Tab in {limit} presses")


def no_horizontal_scroll(page: Page) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"horizontal scrolling at 1024×768: {widths}"


# --- the tests -----------------------------------------------------------------------------


def test_sign_in_then_search_and_filter_without_reloading(page: Page, portal: PortalServer) -> None:
    page.goto(f"{portal.url}/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text("Se connecter")
    expect(page.get_by_label("Identifiant", exact=True)).to_be_focused()
    screenshot(page, "01-login")
    audit(page, "the login page")

    sign_in(page, portal)
    expect(page).to_have_url(f"{portal.url}/")
    expect(page.locator("li.card")).to_have_count(7)
    for name in ("Notepad", "GeoGebra", "Stellarium", "Broken Tool", "Slow Installer"):
        expect(page.get_by_role("heading", level=2, name=name, exact=True)).to_be_visible()
    geogebra = card(page, "tis-geogebra")
    expect(geogebra.locator(".description")).to_have_text(
        "Mathématiques dynamiques : géométrie et algèbre"
    )
    expect(geogebra.get_by_role("list", name="Catégories").get_by_role("listitem")).to_have_text(
        ["Mathematics", "Science"]
    )
    expect(geogebra.locator(".badge")).to_have_text("Disponible")
    expect(geogebra.get_by_role("button", name="Installer GeoGebra", exact=True)).to_be_visible()
    expect(card(page, "tis-secret")).to_have_count(0)
    expect(page.locator("#status-box")).to_have_text("Aucune installation en cours.")
    screenshot(page, "02-catalog")
    audit(page, "the catalog")

    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    # Accents and case do not matter: "geometrie" finds the French "géométrie".
    search_box(page).press_sequentially("geometrie", delay=30)
    expect(page.locator("li.card")).to_have_count(1)
    assert cards_shown(page) == ["tis-geogebra"]
    expect(page.locator("#search-status")).to_have_text("1 logiciel trouvé.")
    expect(page.locator(".result-count")).to_have_text("1 logiciel")
    expect(page).to_have_url(f"{portal.url}/?q=geometrie")
    screenshot(page, "03-search")

    search_box(page).fill("")
    expect(page.locator("li.card")).to_have_count(7)
    page.get_by_label("Catégorie", exact=True).select_option("Science")
    expect(page.locator("li.card")).to_have_count(2)
    assert cards_shown(page) == ["tis-geogebra", "tis-stellarium"]
    expect(page).to_have_url(f"{portal.url}/?category=Science")
    search_box(page).press_sequentially("nothing-like-this", delay=10)
    expect(page.locator("#results")).to_contain_text(
        "Aucun logiciel ne correspond à votre recherche."
    )
    expect(page.locator("li.card")).to_have_count(0)
    search_box(page).fill("")
    expect(page.locator("li.card")).to_have_count(2)
    screenshot(page, "04-category")
    assert loads == [], f"the page was loaded again: {loads}"


def test_install_with_visible_progress_then_remove(
    page: Page, portal: PortalServer, portal_site: Site
) -> None:
    sign_in(page, portal)
    box = page.locator("#status-box")
    hang, slow = card(page, "tis-hang"), card(page, "tis-slow")

    # A package that never ends holds the queue, so the next one is seen waiting at 0 %.
    page.get_by_role("button", name="Installer Hanging Installer", exact=True).click()
    hang_task = box.locator("li.task", has_text="Hanging Installer")
    expect(hang_task.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "60")
    expect(hang_task.locator(".progress-label")).to_have_text(re.compile(r"^Installation · 60"))
    expect(hang.locator(".badge")).to_have_text("Installation")

    page.get_by_role("button", name="Installer Slow Installer", exact=True).click()
    expect(slow.locator(".badge")).to_have_text("En attente")
    expect(slow.locator(".state-detail")).to_have_text("position 2 dans la file")
    bar = slow.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuemax", "100")
    expect(bar).to_have_accessible_name("En attente")
    # The page stays usable meanwhile.
    search_box(page).press_sequentially("slow", delay=10)
    expect(page.locator("li.card")).to_have_count(1)
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(page.get_by_role("progressbar")).to_have_count(3)  # the card, and two in the box
    screenshot(page, "05-install-queued")
    audit(page, "the catalog with tasks in progress")

    page.get_by_role("button", name="Annuler l’installation de Hanging Installer").click()
    # Its setup.py was killed half-way: cancelled everywhere (not "failed"), honestly
    # "may be incomplete", with a retry, in the status box and on the card.
    expect(hang_task.locator(".result")).to_have_text("Annulé — installation peut-être incomplète")
    expect(
        hang_task.get_by_role(
            "button", name="Réessayer l’installation de Hanging Installer", exact=True
        )
    ).to_be_visible()
    hang_row = {row.package: row for row in portal_site.client.status()}["tis-hang"]
    assert hang_row.install_status == "ERROR" and "may be incomplete" in hang_row.install_output
    # The bar moves: the agent's step and figure, polled by the status box.
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9][0-9]?|100)$"))
    expect(bar).to_have_accessible_name(re.compile(r"^(Téléchargement|Vérification|Installation)"))
    expect(slow.locator(".badge")).to_have_text("Installation")
    screenshot(page, "06-install-running")

    expect(slow.locator(".badge")).to_have_text("Installé")
    expect(slow.get_by_role("progressbar")).to_have_count(0)
    expect(slow.get_by_role("button", name="Désinstaller Slow Installer")).to_be_visible()
    slow_task = box.locator("li.task", has_text="Slow Installer")
    expect(slow_task.locator(".result")).to_have_text("Installé")
    expect(box).not_to_have_attribute("hx-trigger", re.compile("."))  # polling stopped
    expect(page.locator("#announcer")).to_have_text("Slow Installer est installé.")
    assert portal_site.marker("tis-slow").is_file()
    screenshot(page, "07-installed")
    search_box(page).fill("")
    expect(hang.locator(".badge")).to_have_text("Annulé")
    expect(hang.locator(".cancelled-note")).to_have_text(
        "L’installation a été annulée pendant qu’elle se déroulait : elle est peut-être incomplète."
    )
    expect(
        hang.get_by_role("button", name="Réessayer Hanging Installer", exact=True)
    ).to_be_visible()
    expect(hang.locator(".failure")).to_have_count(0)

    page.get_by_role("link", name="Mes logiciels", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes logiciels")
    mine = card(page, "tis-slow")
    expect(mine.locator(".badge")).to_have_text("Installé")
    # the half-installed package is on the machine: My software shows it, cancelled too
    expect(card(page, "tis-hang").locator(".badge")).to_have_text("Annulé")
    screenshot(page, "08-my-software")
    audit(page, "My software")

    dialogs: list[str] = []

    def confirm(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    mine.get_by_role("button", name="Désinstaller Slow Installer", exact=True).click()
    expect(mine).to_have_count(0)  # it left the machine, so it leaves My software
    assert dialogs == ["Désinstaller Slow Installer de cet ordinateur\xa0?"]
    removal = page.locator("#status-box li.task", has_text="désinstallation")
    expect(removal.locator(".result")).to_have_text("Désinstallé")
    expect(page.locator("#announcer")).to_have_text("Slow Installer a été désinstallé.")
    assert not portal_site.marker("tis-slow").exists()
    screenshot(page, "09-removed")

    page.get_by_role("link", name="Catalogue", exact=True).click()
    expect(card(page, "tis-slow").locator(".badge")).to_have_text("Disponible")


def test_a_package_outside_the_rules_is_not_offered_and_refused(
    page: Page, portal: PortalServer, portal_site: Site
) -> None:
    sign_in(page, portal)
    expect(card(page, "tis-secret")).to_have_count(0)
    search_box(page).press_sequentially("secret", delay=10)
    expect(page.locator("#results")).to_contain_text(
        "Aucun logiciel ne correspond à votre recherche."
    )
    listing = portal_site.client.tasks(timeout_ms=0)
    assert listing is not None
    before = {task.id for task in listing.all()}

    # A forged POST with the page's own session and CSRF token: the agent refuses.
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert token
    refused = "Vous n’avez pas le droit d’installer ou de désinstaller « tis-secret »"
    answer = page.request.post(
        f"{portal.url}/install", form={"package": "tis-secret", "csrf_token": token}
    )
    assert answer.status == 403
    assert refused in words(answer.text())
    answer = page.request.post(
        f"{portal.url}/install",
        form={"package": "tis-secret"},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )
    assert answer.status == 403
    assert answer.headers["hx-retarget"] == "#errors"
    assert refused in words(answer.text())

    # The same forgery through the page (an Install form's hidden field changed): the refusal
    # lands in the page's alert region and nothing else changes.
    search_box(page).fill("")
    notepad = card(page, "tis-notepad")
    notepad.locator('input[name="package"]').evaluate("input => input.value = 'tis-secret'")
    notepad.get_by_role("button", name="Installer Notepad", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Action non autorisée")
    expect(alert).to_contain_text(f"{refused} sur cet ordinateur.")
    expect(notepad.locator(".badge")).to_have_text("Disponible")
    expect(page.locator("#status-box")).to_have_text("Aucune installation en cours.")
    screenshot(page, "10-refused")

    listing = portal_site.client.tasks(timeout_ms=0)
    assert listing is not None
    assert {task.id for task in listing.all()} == before, "a refused install was queued"
    assert not portal_site.marker("tis-secret").exists()


def test_a_failing_install_shows_the_reason_and_a_retry(
    page: Page, portal: PortalServer, portal_site: Site
) -> None:
    sign_in(page, portal)
    broken = card(page, "tis-raise")
    broken.get_by_role("button", name="Installer Broken Tool", exact=True).click()

    expect(broken.locator(".badge")).to_have_text("Échec")
    expect(broken.locator(".failure")).to_contain_text("La dernière installation a échoué.")
    expect(broken.locator(".failure .reason")).not_to_be_empty()
    retry = broken.get_by_role("button", name="Réessayer Broken Tool", exact=True)
    expect(retry).to_be_visible()
    task = page.locator("#status-box li.task", has_text="Broken Tool")
    expect(task.locator(".result")).to_contain_text("Échec :")
    reason = task.locator(".result .reason").inner_text()
    assert reason.strip(), "a failure without its reason"
    expect(task.get_by_text("Détails")).to_be_visible()
    expect(
        task.get_by_role("button", name="Réessayer l’installation de Broken Tool", exact=True)
    ).to_be_visible()
    expect(page.locator("#announcer")).to_have_text(f"Broken Tool : échec — {reason}")
    task.get_by_text("Détails").click()
    expect(task.locator(".task-log pre")).to_contain_text("boom from setup.py")
    screenshot(page, "11-failed")

    listing = portal_site.client.tasks(timeout_ms=0)
    assert listing is not None
    before = {t.id for t in listing.all()}
    retry.click()
    tasks = page.locator("#status-box li.task", has_text="Broken Tool")
    expect(tasks).to_have_count(2)
    expect(tasks.locator(".result")).to_have_text([f"Échec : {reason}"] * 2)
    expect(page.locator("#announcer")).to_have_text(f"Broken Tool : échec — {reason}")
    expect(broken.locator(".badge")).to_have_text("Échec")
    listing = portal_site.client.tasks(timeout_ms=0)
    assert listing is not None
    [again] = [t for t in listing.all() if t.id not in before]
    assert again.force and again.state == "error"
    screenshot(page, "12-retried")


def test_switch_to_english_and_back(page: Page, portal: PortalServer) -> None:
    sign_in(page, portal)
    html = page.locator("html")
    page.get_by_role("button", name="English", exact=True).click()
    expect(html).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Software catalog")
    expect(page.get_by_role("button", name="English", exact=True)).to_have_attribute(
        "aria-current", "true"
    )
    geogebra = card(page, "tis-geogebra")
    expect(geogebra.locator(".description")).to_have_text(
        "Dynamic mathematics: geometry and algebra"
    )
    expect(geogebra.locator(".badge")).to_have_text("Available")
    expect(geogebra.get_by_role("button", name="Install GeoGebra", exact=True)).to_be_visible()
    expect(page.get_by_role("searchbox", name="Search", exact=True)).to_be_visible()
    expect(page.get_by_label("Category", exact=True)).to_be_visible()
    expect(page.get_by_text("Signed in as alice")).to_be_visible()
    expect(page.locator("#status-box")).to_have_text("Nothing in progress.")
    no_horizontal_scroll(page)
    screenshot(page, "13-english")

    page.get_by_role("button", name="Français", exact=True).click()
    expect(html).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text("Catalogue de logiciels")
    expect(geogebra.locator(".description")).to_have_text(
        "Mathématiques dynamiques : géométrie et algèbre"
    )
    expect(geogebra.get_by_role("button", name="Installer GeoGebra", exact=True)).to_be_visible()


def test_signed_out_after_inactivity(page: Page, idle_portal: PortalServer) -> None:
    sign_in(page, idle_portal)
    # The one sleep of this file: being idle is the point of the test.
    page.wait_for_timeout((IDLE_TIMEOUT + 0.5) * 1000)
    # The next action, an htmx search, is sent back to the login page (HX-Redirect).
    search_box(page).press_sequentially("geo", delay=10)
    expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Se connecter")
    expect(page.get_by_role("status").filter(has_text="sans activité")).to_have_text(
        # The message counts whole minutes: a 3-second timeout reads as 1 minute.
        "Votre session a été fermée après 1 minute sans activité. Reconnectez-vous pour continuer."
    )
    expect(page.get_by_text("Compte connecté")).to_have_count(0)
    screenshot(page, "14-idle-signed-out")

    sign_in(page, idle_portal)  # and signing in again works


def test_keyboard_only(page: Page, portal: PortalServer, portal_site: Site) -> None:
    page.goto(f"{portal.url}/login")
    expect(page.get_by_label("Identifiant", exact=True)).to_be_focused()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Mot de passe", exact=True)).to_be_focused()
    page.keyboard.type(USERS["alice"][0])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Catalogue de logiciels")

    page.keyboard.press("Tab")
    first = outline_of(page)
    assert first["name"] == "Aller au contenu principal", first
    focused = tab_to(page, search_box(page))
    expect(search_box(page)).to_be_focused()
    assert focused["style"] == "solid" and focused["width"] == "3px", focused
    page.keyboard.type("stellarium")
    expect(page.locator("li.card")).to_have_count(1)

    button = card(page, "tis-stellarium").get_by_role("button", name="Installer Stellarium")
    focused = tab_to(page, button)
    expect(button).to_be_focused()
    assert focused["style"] == "solid" and focused["width"] == "3px", focused
    screenshot(page, "15-keyboard-focus")
    page.keyboard.press("Enter")
    stellarium = card(page, "tis-stellarium")
    expect(stellarium.locator(".badge")).to_have_text("Installé")
    assert portal_site.marker("tis-stellarium").is_file()
    # After the action the focus comes back to the card's button, now Remove.
    remove = stellarium.get_by_role("button", name="Désinstaller Stellarium", exact=True)
    expect(remove).to_be_focused()
    focused = outline_of(page)
    assert focused["style"] == "solid" and focused["width"] == "3px", focused
    screenshot(page, "16-keyboard-installed")


def test_no_horizontal_scrolling_at_1024x768(page: Page, portal: PortalServer) -> None:
    page.goto(f"{portal.url}/login")
    assert page.viewport_size == VIEWPORT
    no_horizontal_scroll(page)
    sign_in(page, portal)
    expect(page.locator("li.card")).to_have_count(7)
    no_horizontal_scroll(page)
    # The status box sits beside the cards at this width.
    cards = page.locator("#results").bounding_box()
    activity = page.locator("aside.activity").bounding_box()
    assert cards is not None and activity is not None
    assert activity["x"] >= cards["x"] + cards["width"], (cards, activity)
    assert activity["x"] + activity["width"] <= VIEWPORT["width"]
