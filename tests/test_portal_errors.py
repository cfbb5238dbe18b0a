"""When the agent is away or answers nonsense: friendly pages, fragments and JSON, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_harness import AgentProcess, agent_config
from tests.httpserver import serve_directory
from tests.portal_site import Browser, FakeClock, Site, soup, start_site, text
from tests.slapd import SlapdServer, free_port


@pytest.fixture(scope="module")
def portal_site(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Site]:
    """One real agent for this module's tests."""
    yield from start_site(tmp_path_factory.mktemp("portal-site"), ldap_server)


def test_no_agent_at_all_gives_the_friendly_page(tmp_path: Path, portal_site: Site) -> None:
    app = portal_site.app(
        agent_url=f"http://127.0.0.1:{free_port()}", agent_connect_retries=0, data_dir=tmp_path
    )
    browser = Browser(app)
    assert browser.get("/login").status_code == 200, "the login page needs no agent"
    answer = browser.login("alice")
    assert answer.status_code == 503
    page = soup(answer)
    assert text(page.select_one("main h1")) == "Le service d’installation ne répond pas"
    assert "injoignable" in text(page.select_one(".error-message"))
    assert page.select_one(".error-box.error-agent-unavailable a.button") is not None
    assert "Traceback" not in answer.get_data(as_text=True)
    assert "127.0.0.1" not in text(page.select_one("main")), "no technical details"

    health = browser.get("/healthz")
    assert health.status_code == 503 and health.mimetype == "application/json"
    body = health.get_json()
    assert body["status"] == "degraded" and body["portal"] == "ok"
    assert body["agent"]["reachable"] is False
    assert body["agent"]["error"] == "AgentUnavailableError"


def test_the_agent_stopping_and_coming_back(portal_site: Site) -> None:
    clock = FakeClock()
    browser = Browser(portal_site.app(clock, agent_connect_retries=0))
    browser.login("alice")
    assert browser.get("/").status_code == 200
    portal_site.agent.stop()
    clock.advance(1)  # past the task list's short cache
    try:
        page = browser.get("/")
        assert page.status_code == 503
        assert text(soup(page).select_one("main h1")) == "Le service d’installation ne répond pas"
        fragment = browser.get("/tasks", htmx=True)
        assert fragment.status_code == 503
        assert fragment.headers["HX-Retarget"] == "#errors"
        assert fragment.headers["HX-Reswap"] == "innerHTML"
        assert "HX-Request" in fragment.headers["Vary"]
        part = soup(fragment)
        assert part.select_one("html") is None
        assert text(part.select_one(".error-box h2")) == "Le service d’installation ne répond pas"
        browser.post("/language", {"lang": "en", "next": "/"})
        english = soup(browser.get("/"))
        assert text(english.select_one("main h1")) == "The installation service does not answer"
        assert english.select_one("nav.main-nav") is not None, "still signed in"
    finally:
        portal_site.client = portal_site.agent.start()
    # The agent keeps its token key: the session goes on, and the error region is cleared.
    assert browser.get("/").status_code == 200
    poll = soup(browser.get("/tasks", htmx=True))
    assert poll.select_one('#errors[hx-swap-oob="innerHTML"]') is not None
    assert text(poll.select_one('#errors[hx-swap-oob="innerHTML"]')) == ""


def test_something_else_than_an_agent_gives_a_502(tmp_path: Path, portal_site: Site) -> None:
    (tmp_path / "index.html").write_text("not an agent")
    with serve_directory(tmp_path) as url:
        browser = Browser(portal_site.app(agent_url=url, data_dir=tmp_path / "portal"))
        answer = browser.login("alice")
    assert answer.status_code == 502
    assert text(soup(answer).select_one("main h1")) == "Réponse inattendue"


def test_a_directory_that_fails_is_not_a_wrong_password(portal_site: Site) -> None:
    # The agent answers 503 when LDAP cannot be asked: say so, and do not count a failure.
    # (A slapd of its own: the session's one must keep running.)
    with SlapdServer() as other:
        root = portal_site.root / "ldap-down"
        root.mkdir()
        (root / "hosts").mkdir()
        config, port = agent_config(root, "http://127.0.0.1:9/", other)
        agent = AgentProcess(config, port, root / "agent.log")
        agent.start()
        other.stop()
        try:
            browser = Browser(portal_site.app(agent_url=agent.url, login_failures_per_user=1))
            answer = browser.login("alice")
            assert answer.status_code == 503
            assert "L’annuaire qui vérifie les mots de passe ne répond pas" in text(
                soup(answer).select_one("#login-error")
            )
            assert browser.login("alice").status_code == 503, "not throttled"
        finally:
            agent.stop()
