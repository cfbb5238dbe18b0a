"""The admin login against the session's real slapd, and who may reach the admin pages.

`dave` (in `comptoir-admins`) gets in by LDAP bind; `alice`, a teacher, is refused at the admin
login, and, signed in as a teacher through the real agent, gets 403 on every admin URL, each
refusal audited. Wrong passwords, throttling, CSRF, idle timeouts and sign-out as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from portal.sessions import SessionStore
from tests.portal_site import Browser, FakeClock, Site, soup, start_site, text
from tests.site_harness import ADMIN, TEACHER, SiteFixture, admin_login, make_site
from tests.slapd import USERS, SlapdServer


@pytest.fixture(scope="module")
def portal_site(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Site]:
    """The real agent, for a teacher's session on the site server."""
    yield from start_site(tmp_path_factory.mktemp("agent-site"), ldap_server)


@pytest.fixture
def site(tmp_path: Path, ldap_server: SlapdServer) -> Iterator[SiteFixture]:
    fixture = make_site(tmp_path, ldap_server)
    yield fixture
    fixture.stop()


def admin_urls(app: Flask) -> list[tuple[str, str]]:
    """(method, URL) of every admin route, with made-up values for its variables."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin") or rule.endpoint in ("admin.login", "admin.logout"):
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = url.replace(f"<{argument}>", "x").replace(f"<string:{argument}>", "x")
        url = url.split("<")[0] + ("x" if "<" in url else "")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, url))
    return found


def test_an_admin_of_the_directory_group_signs_in(site: SiteFixture) -> None:
    browser = site.browser()
    page = soup(browser.get("/admin/login"))
    assert page.html is not None and page.html["lang"] == "fr"
    assert text(page.select_one("h1")) == "Connexion administrateur"
    assert page.select_one('label[for="username"]') and page.select_one('label[for="password"]')
    before = browser.client.get_cookie("comptoir_session")

    answer = admin_login(browser, "dave", USERS["dave"][0])
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/"
    after = browser.client.get_cookie("comptoir_session")
    assert before is not None and after is not None and after.value != before.value
    dashboard = soup(browser.get("/admin/"))
    assert "dave" in text(dashboard.select_one(".who"))
    nav = [text(a) for a in dashboard.select("nav.admin-nav a")]
    assert "Journal d’audit" in nav or "Audit" in nav
    [event] = site.audit.search(action="admin.login")[0]
    assert (event.who, event.role, event.outcome, event.where) == (
        "dave",
        "admin",
        "ok",
        "127.0.0.1",
    )


def test_local_accounts_work_too(site: SiteFixture) -> None:
    browser = site.admin_client(*ADMIN)
    assert browser.get("/admin/").status_code == 200


def test_a_teacher_is_refused_at_the_admin_login_and_it_is_audited(site: SiteFixture) -> None:
    for user, password in (("alice", USERS["alice"][0]), TEACHER):
        browser = site.browser()
        answer = admin_login(browser, user, password)
        assert answer.status_code == 403
        assert "administrateur" in text(soup(answer).select_one("#login-error"))
        assert browser.get("/admin/").status_code == 303, "not signed in"
    refusals = site.audit.search(action="admin.login", outcome="refused")[0]
    assert {(e.who, e.details) for e in refusals} == {
        ("alice", "not a member of comptoir-admins"),
        ("teacher", "not a member of comptoir-admins"),
    }


def test_a_signed_in_teacher_gets_403_on_every_admin_url_and_each_is_audited(
    site: SiteFixture, portal_site: Site
) -> None:
    app = site.app(agent_url=portal_site.agent.url)
    teacher = Browser(app)
    assert teacher.login("alice").status_code == 303
    assert teacher.get("/").status_code == 200, "the teacher's own pages work"
    urls = admin_urls(app)
    assert ("GET", "/admin/audit") in urls and ("POST", "/admin/catalogs") in urls
    for method, url in urls:
        answer = teacher.get(url) if method == "GET" else teacher.post(url, {})
        assert answer.status_code == 403, (method, url)
    denied = site.audit.search(action="admin.denied", limit=1000)[0]
    assert len(denied) == len(urls)
    assert {(e.who, e.role, e.outcome) for e in denied} == {("alice", "teacher", "refused")}
    assert {e.target for e in denied} == {url for _, url in urls}


def test_visitors_are_sent_to_the_admin_login_and_back(site: SiteFixture) -> None:
    browser = site.browser()
    answer = browser.get("/admin/audit?q=x")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/admin/login?next=/admin/audit?q%3Dx"
    htmx = browser.get("/admin/audit", htmx=True)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/admin/login")
    browser.get("/admin/login?next=/admin/audit")
    answer = browser.post(
        "/admin/login",
        {"username": "dave", "password": USERS["dave"][0], "next": "/admin/audit"},
    )
    assert answer.headers["Location"] == "/admin/audit"
    assert site.audit.search(action="admin.denied")[1] == 0, "visitors are not refusals"


def test_a_signed_in_admin_is_not_a_teacher(site: SiteFixture) -> None:
    browser = site.admin_client()
    answer = browser.get("/")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login")
    assert browser.get("/login").status_code == 200, "the teacher login page, no loop"


def test_a_signed_in_admin_gets_a_not_found_page_for_an_unknown_url(site: SiteFixture) -> None:
    browser = site.admin_client()
    for url in ("/admin/no-such-page", "/admin/packages/", "/no-such-page"):
        answer = browser.get(url)
        assert answer.status_code == 404, url
        assert "/login" not in answer.headers.get("Location", "")
    wrong_method = browser.post("/admin/")
    assert wrong_method.status_code == 405


def test_wrong_passwords_are_refused_audited_and_throttled(site: SiteFixture) -> None:
    clock = FakeClock()
    app = site.app(clock, login_failures_per_user=2, login_delay=30)
    browser = site.browser(app)
    answer = admin_login(browser, "dave", "not-the-password")
    assert answer.status_code == 401
    assert text(soup(answer).select_one("#login-error")) == "Identifiant ou mot de passe incorrect."
    answer = admin_login(browser, "dave", "still-wrong")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "30"
    answer = admin_login(browser, "dave", USERS["dave"][0])
    assert answer.status_code == 429, "while throttled even the right password waits"
    clock.advance(31)
    assert admin_login(browser, "dave", USERS["dave"][0]).status_code == 303
    details = [e.details for e in site.audit.search(action="admin.login", who="dave")[0]]
    assert details == ["", "throttled", "wrong password", "wrong password"]


def test_empty_fields_and_hostile_user_names_are_refused(site: SiteFixture) -> None:
    browser = site.browser()
    assert admin_login(browser, "dave", "").status_code == 400
    assert admin_login(browser, "*)(uid=*", "x").status_code == 401, "an LDAP filter is no user"
    long_name = "a" * 300
    assert admin_login(browser, long_name, "x").status_code == 401
    [event] = site.audit.search(text="aaaa")[0]
    assert len(event.who) == 256 and event.who.endswith("…")


def test_csrf_is_required_for_the_login_and_every_admin_post(site: SiteFixture) -> None:
    browser = site.browser()
    browser.get("/admin/login")
    answer = browser.post(
        "/admin/login", {"username": "dave", "password": USERS["dave"][0]}, csrf=False
    )
    assert answer.status_code == 400
    assert site.audit.search()[1] == 0
    admin = site.admin_client()
    answer = admin.post("/admin/catalogs", {"name": "x", "title": "X"}, csrf=False)
    assert answer.status_code == 400
    assert admin.post("/admin/logout", csrf=False).status_code == 400
    assert admin.get("/admin/").status_code == 200, "still signed in"


def test_admin_sessions_idle_out_like_teachers(site: SiteFixture) -> None:
    clock = FakeClock()
    app = site.app(clock, idle_timeout=60)
    browser = site.admin_client(app=app)
    clock.advance(59)
    assert browser.get("/admin/").status_code == 200
    clock.advance(61)
    answer = browser.get("/admin/")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/admin/login")
    page = soup(browser.get(answer.headers["Location"]))
    assert "1 minute" in text(page.select_one(".flashes"))


def test_sign_out_ends_the_session_and_is_audited(site: SiteFixture) -> None:
    app = site.app()
    browser = site.admin_client(app=app)
    store: SessionStore = app.extensions["comptoir.sessions"]
    assert len(store.find(lambda record: record.admin is not None)) == 1
    answer = browser.post("/admin/logout")
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/login"
    assert store.find(lambda record: record.admin is not None) == []
    assert browser.get("/admin/").status_code == 303
    assert site.audit.search(action="admin.logout")[1] == 1
