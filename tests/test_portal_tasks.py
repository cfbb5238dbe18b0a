"""Installing, removing, cancelling and updating through the portal, on the real agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bs4 import BeautifulSoup

from tests.portal_site import Browser, Site, card, publish, soup, start_site, text
from tests.slapd import SlapdServer


@pytest.fixture(scope="module")
def portal_site(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Site]:
    """One real agent for this module's tests."""
    yield from start_site(tmp_path_factory.mktemp("portal-site"), ldap_server)


@pytest.fixture
def alice(portal_site: Site) -> Browser:
    browser = Browser(portal_site.app())
    browser.login("alice")
    return browser


def task_ids(site: Site) -> set[int]:
    listing = site.client.tasks(timeout_ms=0)
    assert listing is not None
    return {task.id for task in listing.all()}


def state_of(page: BeautifulSoup, package: str) -> str | None:
    found = page.select_one(f'li.card[data-package="{package}"]')
    return None if found is None else str(found["data-state"])


def test_install_shows_its_progress_then_the_result(portal_site: Site, alice: Browser) -> None:
    page = soup(alice.get("/"))
    box = page.select_one("aside.activity #status-box")
    assert box is not None and not box.has_attr("hx-trigger"), "nothing to poll for"
    form = card(page, "tis-slow").select_one("form[hx-post='/install']")
    assert form is not None and form["hx-target"] == "#status-box"

    answer = alice.post("/install", {"package": "tis-slow"}, htmx=True)
    assert answer.status_code == 200
    fragment = soup(answer)
    box = fragment.select_one("#status-box")
    assert box is not None
    assert box["hx-get"] == "/tasks" and box["hx-trigger"] == "every 1s"
    assert box["hx-include"] == "[name='watch']"
    task = box.select_one("li.task")
    assert task is not None and task["data-state"] in ("pending", "running")
    assert "Slow Installer" in text(task.select_one(".task-title"))
    bar = task.select_one('[role="progressbar"]')
    assert bar is not None and bar["aria-valuemin"] == "0" and bar["aria-valuemax"] == "100"
    cancel = task.select_one("form[action$='/cancel'] button")
    assert cancel is not None and text(cancel) == "Annuler l’installation de Slow Installer"
    oob = fragment.select_one('li.card[data-package="tis-slow"][hx-swap-oob="true"]')
    assert oob is not None and oob["data-state"] in ("queued", "installing")
    assert oob.select_one('input[name="watch"][value="tis-slow"]') is not None
    announcer = fragment.select_one('#announcer[hx-swap-oob="innerHTML"]')
    assert "« Slow Installer » est en file d’attente" in text(announcer)

    # The step and the figure come from the agent while it works (setup.py sleeps a while).
    def installing_step(page: BeautifulSoup) -> bool:
        label = page.select_one('li.card[data-state="installing"] .progress-label')
        return label is not None and text(label).startswith("Installation")

    running = alice.wait_until(installing_step, "tis-slow")
    installing = card(running, "tis-slow")
    assert installing["hx-swap-oob"] == "true"
    assert text(installing.select_one(".progress-label")).startswith("Installation")
    bar = installing.select_one('[role="progressbar"]')
    assert bar is not None and int(str(bar["aria-valuenow"])) >= 60
    label = bar["aria-labelledby"]
    assert installing.select_one(f"#{label}") is not None

    last = alice.wait_idle("tis-slow")
    done = last.select_one("#status-box li.task")
    assert done is not None and done["data-state"] == "done"
    assert text(done.select_one(".result")) == "Installé"
    assert state_of(last, "tis-slow") == "installed"
    assert "Slow Installer est installé." in text(last.select_one("#announcer"))
    assert portal_site.marker("tis-slow").exists()

    page = soup(alice.get("/"))
    assert state_of(page, "tis-slow") == "installed"
    remove = card(page, "tis-slow").select_one(".actions button")
    assert remove is not None and text(remove) == "Désinstaller Slow Installer"
    portal_site.uninstall("tis-slow")


def test_a_failed_install_says_why_and_can_be_retried(portal_site: Site, alice: Browser) -> None:
    alice.post("/install", {"package": "tis-raise"}, htmx=True)
    last = alice.wait_idle("tis-raise")
    failed = last.select_one("#status-box li.task")
    assert failed is not None and failed["data-state"] == "error"
    assert "RuntimeError: boom from setup.py" in text(failed.select_one(".reason"))
    assert "install() raised RuntimeError" in text(failed.select_one("details.task-log pre"))
    retry = failed.select_one("form[action='/install'] input[name='action']")
    assert retry is not None and retry["value"] == "retry"
    assert "Broken Tool : échec" in text(last.select_one("#announcer"))

    page = soup(alice.get("/"))
    broken = card(page, "tis-raise")
    assert broken["data-state"] == "failed"
    assert text(broken.select_one(".badge")) == "Échec"
    assert "boom from setup.py" in text(broken.select_one(".failure .reason"))
    button = broken.select_one(".actions button")
    assert button is not None and text(button) == "Réessayer Broken Tool"

    # Retry without JavaScript: the install really runs again (forced), and fails again.
    before = task_ids(portal_site)
    retry_form = {"package": "tis-raise", "action": "retry", "next": "/?q=broken"}
    answer = alice.post("/install", retry_form)
    assert answer.status_code == 303 and answer.headers["Location"] == "/?q=broken"
    flashed = soup(alice.get("/?q=broken"))
    assert "« Broken Tool » est en file d’attente" in text(flashed.select_one(".flashes"))
    [new] = task_ids(portal_site) - before
    done = portal_site.client.wait_for_task(new, timeout=30)
    assert done.state == "error" and "boom from setup.py" in done.logs
    assert done.force


def test_a_package_not_granted_is_refused_and_nothing_is_queued(
    portal_site: Site, alice: Browser
) -> None:
    before = task_ids(portal_site)
    answer = alice.post("/install", {"package": "tis-secret"})
    assert answer.status_code == 403
    page = soup(answer)
    assert text(page.select_one("main h1")) == "Action non autorisée"
    assert "« tis-secret »" in text(page.select_one(".error-message"))

    answer = alice.post("/install", {"package": "tis-secret"}, htmx=True)
    assert answer.status_code == 403
    assert answer.headers["HX-Retarget"] == "#errors"
    assert answer.headers["HX-Reswap"] == "innerHTML"
    fragment = soup(answer)
    assert fragment.select_one("html") is None
    assert "tis-secret" in text(fragment.select_one(".error-box .error-message"))

    bob = Browser(portal_site.app())
    bob.login("bob")
    assert bob.post("/install", {"package": "tis-geogebra"}).status_code == 403
    unknown = alice.post("/install", {"package": "no-such-package"})
    assert unknown.status_code == 404
    assert text(soup(unknown).select_one("main h1")) == "Logiciel inconnu"
    for sneaky in ("tis-notepad(=0.1)", "tis-notepad,tis-secret", "", "../x"):
        assert alice.post("/install", {"package": sneaky}).status_code == 400, sneaky
    assert task_ids(portal_site) == before
    assert not portal_site.marker("tis-secret").exists()


def test_actions_need_the_csrf_token_htmx_included(portal_site: Site, alice: Browser) -> None:
    before = task_ids(portal_site)
    page = alice.post("/install", {"package": "tis-notepad"}, csrf=False)
    assert page.status_code == 400
    assert text(soup(page).select_one("main h1")) == "Cette page a expiré"
    fragment = alice.post("/install", {"package": "tis-notepad"}, htmx=True, csrf=False)
    assert fragment.status_code == 400
    assert fragment.headers["HX-Retarget"] == "#errors"
    assert "Cette page a expiré" in text(soup(fragment).select_one(".error-box"))
    forged = alice.post(
        "/install", {"package": "tis-notepad"}, headers={"X-CSRFToken": "forged"}, csrf=False
    )
    assert forged.status_code == 400
    assert task_ids(portal_site) == before
    # Signed out, an action is not even looked at.
    assert Browser(alice.app).post("/install", {"package": "tis-notepad"}).status_code == 303


def test_remove_from_my_software(portal_site: Site, alice: Browser) -> None:
    answer = alice.post("/install", {"package": "tis-notepad", "next": "/mine"})
    assert answer.headers["Location"] == "/mine"
    alice.wait_idle()
    page = soup(alice.get("/mine"))
    assert text(page.select_one("main h1")) == "Mes logiciels"
    assert page.select_one('nav a[aria-current="page"][href="/mine"]') is not None
    notepad = card(page, "tis-notepad")
    assert notepad["data-state"] == "installed"
    remove = notepad.select_one("form[action='/remove']")
    assert remove is not None
    assert remove["hx-confirm"] == "Désinstaller Notepad de cet ordinateur\xa0?"
    assert state_of(page, "tis-geogebra") is None, "not installed: not here"

    on_mine = {"HX-Current-URL": "http://localhost/mine"}
    fragment = soup(alice.post("/remove", {"package": "tis-notepad"}, htmx=True, headers=on_mine))
    removal = fragment.select_one("#status-box li.task")
    assert removal is not None and "désinstallation" in text(removal.select_one(".task-kind"))
    assert card(fragment, "tis-notepad")["hx-swap-oob"] == "true"
    last = alice.wait_idle("tis-notepad", page="/mine")
    assert text(last.select_one("#status-box li.task .result")) == "Désinstallé"
    # On "My software" the card goes away; elsewhere it shows the package available again.
    assert state_of(last, "tis-notepad") is None
    assert last.select_one(f'li#{notepad["id"]}[hx-swap-oob="delete"]') is not None
    assert state_of(alice.poll("tis-notepad"), "tis-notepad") == "available"
    assert not portal_site.marker("tis-notepad").exists()
    assert state_of(soup(alice.get("/mine")), "tis-notepad") is None


def test_installs_queue_and_can_be_cancelled(portal_site: Site, alice: Browser) -> None:
    alice.post("/install", {"package": "tis-hang"}, htmx=True)
    alice.wait_until(lambda p: p.select_one('li.task[data-state="running"]'))
    fragment = soup(alice.post("/install", {"package": "tis-geogebra"}, htmx=True))
    queued = card(fragment, "tis-geogebra")
    assert queued["data-state"] == "queued"
    assert "position 2 dans la file" in text(queued.select_one(".state-detail"))
    tasks = {str(li["data-state"]): li for li in fragment.select("#status-box li.task")}
    assert set(tasks) == {"pending", "running"}
    pending_id = tasks["pending"]["data-task-id"]
    running_id = tasks["running"]["data-task-id"]

    # The page stays usable meanwhile, and another user may not cancel alice's tasks.
    assert cards_found(soup(alice.get("/?q=stellarium"))) == ["tis-stellarium"]
    bob = Browser(portal_site.app())
    bob.login("bob")
    assert bob.post(f"/tasks/{pending_id}/cancel").status_code == 403

    fragment = soup(alice.post(f"/tasks/{pending_id}/cancel", htmx=True))
    cancelled = fragment.select_one(f'li.task[data-task-id="{pending_id}"]')
    assert cancelled is not None and cancelled["data-state"] == "cancelled"
    assert text(cancelled.select_one(".result")) == "Annulé"
    assert state_of(fragment, "tis-geogebra") == "available"

    alice.post(f"/tasks/{running_id}/cancel", htmx=True)
    last = alice.wait_idle("tis-hang")
    stopped = last.select_one(f'li.task[data-task-id="{running_id}"]')
    assert stopped is not None and stopped["data-state"] == "cancelled"
    # setup.py was killed half-way: cancelled (not failed), may be incomplete, with a retry
    assert text(stopped.select_one(".result")) == "Annulé — installation peut-être incomplète"
    assert stopped.select_one('input[name="action"][value="retry"]') is not None
    hang = card(last, "tis-hang")
    assert hang["data-state"] == "cancelled"
    assert text(hang.select_one(".badge")) == "Annulé"
    assert "peut-être incomplète" in text(hang.select_one(".cancelled-note"))
    assert text(hang.select_one(".actions button")) == "Réessayer Hanging Installer"
    # seen from a new session too (it does not know the task is hers), and on My software
    fresh = Browser(portal_site.app())
    fresh.login("alice")
    assert card(soup(fresh.get("/mine")), "tis-hang")["data-state"] == "cancelled"
    assert not portal_site.marker("tis-geogebra").exists()
    again = soup(alice.post(f"/tasks/{running_id}/cancel", htmx=True))
    assert "déjà terminée" in text(again.select_one("#announcer"))
    portal_site.uninstall("tis-hang")


def cards_found(page: BeautifulSoup) -> list[str]:
    return [str(li["data-package"]) for li in page.select("li.card")]


def test_updates_one_by_one_or_all_at_once(portal_site: Site, alice: Browser) -> None:
    for name in ("tis-notepad", "tis-stellarium"):
        alice.post("/install", {"package": name})
    alice.wait_idle()
    publish(portal_site.root, "tis-notepad", "1.1-1")
    portal_site.update()

    page = soup(alice.get("/mine"))
    notepad = card(page, "tis-notepad")
    assert notepad["data-state"] == "update-available"
    assert text(notepad.select_one(".badge")) == "Mise à jour disponible"
    assert "version 1.0-1 installée" in text(notepad.select_one(".state-detail"))
    assert text(notepad.select_one(".version")) == "Version 1.1-1"
    update = notepad.select_one(".actions button")
    assert update is not None and text(update) == "Mettre à jour Notepad"
    assert text(page.select_one("form.update-all button")) == "Tout mettre à jour (1 mise à jour)"

    alice.post("/install", {"package": "tis-notepad", "action": "update"}, htmx=True)
    last = alice.wait_idle("tis-notepad")
    assert state_of(last, "tis-notepad") == "installed"
    assert portal_site.marker("tis-notepad").read_text() == "1.1-1\n"
    assert soup(alice.get("/mine")).select_one("form.update-all") is None

    publish(portal_site.root, "tis-notepad", "1.2-1")
    publish(portal_site.root, "tis-stellarium", "1.2-1")
    portal_site.update()
    page = soup(alice.get("/mine"))
    assert text(page.select_one("form.update-all button")) == "Tout mettre à jour (2 mises à jour)"
    answer = alice.post("/update-all", {"next": "/mine"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/mine"
    flashed = soup(alice.get("/mine"))
    assert "2 mises à jour sont dans la file" in text(flashed.select_one(".flashes"))
    alice.wait_idle()
    page = soup(alice.get("/mine"))
    assert {state_of(page, "tis-notepad"), state_of(page, "tis-stellarium")} == {"installed"}
    assert portal_site.marker("tis-stellarium").read_text() == "1.2-1\n"
    portal_site.uninstall("tis-notepad", "tis-stellarium")


def test_without_javascript_the_tasks_page_refreshes_itself(
    portal_site: Site, alice: Browser
) -> None:
    alice.post("/install", {"package": "tis-slow"})
    page = soup(alice.get("/tasks"))
    assert text(page.select_one("main h1")) == "Installations"
    assert page.select_one('noscript meta[http-equiv="refresh"]') is not None
    alice.wait_idle()
    assert soup(alice.get("/tasks")).select_one("noscript") is None
    portal_site.uninstall("tis-slow")
