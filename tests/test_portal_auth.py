"""Signing in and out against the real agent and slapd: cookies, throttling, idle timeout, CSRF."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portal.sessions import SessionRecord, SessionStore
from tests.portal_site import Browser, FakeClock, Site, soup, start_site, text
from tests.slapd import USERS, SlapdServer


@pytest.fixture(scope="module")
def portal_site(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Site]:
    """One real agent for this module's tests."""
    yield from start_site(tmp_path_factory.mktemp("portal-site"), ldap_server)


def session_records(browser: Browser) -> list[SessionRecord]:
    store: SessionStore = browser.app.extensions["comptoir.sessions"]
    return store.find(lambda record: record.signed_in)


def test_login_page_is_french_by_default_and_labelled(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    answer = browser.get("/login")
    assert answer.status_code == 200
    page = soup(answer)
    assert page.html is not None and page.html["lang"] == "fr"
    assert text(page.select_one("h1")) == "Se connecter"
    for field in ("username", "password"):
        control = page.select_one(f"input#{field}")
        assert control is not None and control.has_attr("required")
        assert page.select_one(f'label[for="{field}"]') is not None
    assert page.select_one('input[name="csrf_token"]') is not None


def test_login_success_sets_an_opaque_session_cookie(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    browser.get("/login")
    first_cookie = browser.client.get_cookie("comptoir_session")
    assert first_cookie is not None
    answer = browser.post("/login", {"username": "alice", "password": USERS["alice"][0]})
    assert answer.status_code == 303 and answer.headers["Location"] == "/"

    [set_cookie] = answer.headers.getlist("Set-Cookie")
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP on loopback
    cookie = browser.client.get_cookie("comptoir_session")
    assert cookie is not None and cookie.value != first_cookie.value, "a new id at sign-in"

    [record] = session_records(browser)
    assert record.agent_session is not None and record.agent_session.username == "alice"
    token = record.agent_session.token
    assert token not in cookie.value and cookie.value == record.sid

    catalog = browser.get("/")
    assert catalog.status_code == 200
    html = catalog.get_data(as_text=True)
    assert token not in html
    assert "alice" in text(soup(catalog).select_one(".who"))


def test_secure_cookie_when_configured_for_https(portal_site: Site) -> None:
    browser = Browser(portal_site.app(cookie_secure=True))
    browser.get("/login")
    answer = browser.login("bob")
    assert "Secure" in answer.headers["Set-Cookie"]


def test_wrong_password_and_unknown_user_get_one_answer(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    for user, password in (("alice", "not-her-password"), ("nobody", "x")):
        answer = browser.login(user, password)
        assert answer.status_code == 401
        page = soup(answer)
        assert text(page.select_one("#login-error")) == "Identifiant ou mot de passe incorrect."
        assert page.select_one("input#username[aria-invalid='true']") is not None
    assert session_records(browser) == []
    assert browser.get("/").status_code == 303


def test_empty_fields_are_refused_before_the_agent(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    answer = browser.post("/login", {"username": "alice", "password": ""})
    assert answer.status_code == 400
    assert "Saisissez" in text(soup(answer).select_one("#login-error"))


def test_failed_logins_are_throttled_per_user_then_released(portal_site: Site) -> None:
    clock = FakeClock()
    browser = Browser(portal_site.app(clock, login_failures_per_user=3, login_delay=30))
    for _ in range(2):
        assert browser.login("alice", "wrong").status_code == 401
    answer = browser.login("alice", "wrong")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "30"
    assert "Attendez 30 secondes" in text(soup(answer).select_one("#login-error"))

    # While throttled, even the right password is not tried.
    answer = browser.login("alice")
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) <= 30
    # Another user is not affected.
    assert Browser(browser.app).login("bob").status_code == 303

    clock.advance(31)
    assert browser.login("alice", "wrong").status_code == 429, "the wait doubles"
    assert browser.login("alice", "wrong").headers["Retry-After"] == "60"
    clock.advance(61)
    assert browser.login("alice").status_code == 303


def test_failed_logins_are_throttled_per_address_in_english(portal_site: Site) -> None:
    app = portal_site.app(login_failures_per_address=4, login_failures_per_user=100)
    browser = Browser(app, address="10.9.8.7")
    browser.post("/language", {"lang": "en", "next": "/login"})
    for user in ("u1", "u2", "u3"):
        assert browser.login(user, "x").status_code == 401
    answer = browser.login("u4", "x")
    assert answer.status_code == 429
    assert "Wait 30 seconds" in text(soup(answer).select_one("#login-error"))
    assert Browser(app, address="10.9.8.8").login("alice").status_code == 303


def test_logout_forgets_the_session_and_its_token(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    browser.login("alice")
    browser.post("/language", {"lang": "en", "next": "/"})
    old = browser.client.get_cookie("comptoir_session")
    assert old is not None
    answer = browser.post("/logout")
    assert answer.status_code == 303 and answer.headers["Location"] == "/login"
    assert session_records(browser) == []
    page = soup(browser.get("/login"))
    assert "You are signed out." in text(page.select_one(".flashes"))
    assert page.html is not None and page.html["lang"] == "en", "the language is kept"
    # The old cookie is worth nothing now.
    browser.client.set_cookie("comptoir_session", old.value)
    assert browser.get("/").status_code == 303


def test_logout_needs_the_csrf_token(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    browser.login("alice")
    answer = browser.post("/logout", csrf=False)
    assert answer.status_code == 400
    assert text(soup(answer).select_one("h1")) == "Cette page a expiré"
    assert len(session_records(browser)) == 1


def test_idle_timeout_signs_out_and_says_why(portal_site: Site) -> None:
    clock = FakeClock()
    browser = Browser(portal_site.app(clock))
    browser.login("alice")
    clock.advance(599)
    assert browser.get("/").status_code == 200, "activity restarts the idle time"
    clock.advance(599)
    assert browser.get("/mine").status_code == 200
    clock.advance(601)
    answer = browser.get("/mine")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/login?next=/mine"
    page = soup(browser.get(answer.headers["Location"]))
    assert "après 10 minutes sans activité" in text(page.select_one(".flashes"))
    assert session_records(browser) == []


def test_polling_does_not_keep_an_idle_session_alive(portal_site: Site) -> None:
    clock = FakeClock()
    browser = Browser(portal_site.app(clock, idle_timeout=60))
    browser.login("alice")
    for _ in range(2):
        clock.advance(25)
        assert browser.get("/tasks", htmx=True).status_code == 200
    clock.advance(15)  # 65 s after the last page, 15 s after the last poll
    answer = browser.get("/tasks", htmx=True)
    assert answer.status_code == 401
    assert answer.headers["HX-Redirect"] == "/login"


def test_session_lifetime_ends_even_an_active_session(portal_site: Site) -> None:
    clock = FakeClock()
    browser = Browser(portal_site.app(clock, session_lifetime=3600))
    browser.login("bob")
    for _ in range(7):
        clock.advance(500)
        assert browser.get("/").status_code == 200
    clock.advance(200)
    answer = browser.get("/")
    assert answer.status_code == 303
    assert "session est terminée" in text(soup(browser.get("/login")).select_one(".flashes"))


def test_an_expired_agent_token_sends_back_to_login(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    browser.login("alice")
    [record] = session_records(browser)
    forged = portal_site.client.login("bob", USERS["bob"][0]).token
    assert record.agent_session is not None
    record.agent_session = type(record.agent_session)("alice", forged, ("profs-maths",))
    answer = browser.get("/")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login")
    assert "connexion a expiré" in text(soup(browser.get("/login")).select_one(".flashes"))
    assert session_records(browser) == []


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
def test_next_never_leaves_the_site(portal_site: Site, target: str) -> None:
    browser = Browser(portal_site.app())
    browser.get("/login")
    answer = browser.post(
        "/login", {"username": "bob", "password": USERS["bob"][0], "next": target}
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/"


def test_login_then_back_to_the_page_asked_for(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    first = browser.get("/mine?x=1")
    assert first.headers["Location"] == "/login?next=/mine?x%3D1"
    page = soup(browser.get(first.headers["Location"]))
    next_field = page.select_one('form.stacked input[name="next"]')
    assert next_field is not None and next_field["value"] == "/mine?x=1"
    answer = browser.post(
        "/login", {"username": "bob", "password": USERS["bob"][0], "next": "/mine?x=1"}
    )
    assert answer.headers["Location"] == "/mine?x=1"
