"""The catalog as each teacher sees it: cards, languages, search, categories, pages, icons.

Also what every page carries: escaping, no inline script or style, labels, security headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from bs4 import BeautifulSoup

from portal.security import CONTENT_SECURITY_POLICY
from tests.portal_site import (
    XSS_CATEGORY,
    XSS_DESCRIPTION,
    XSS_NAME,
    Browser,
    Site,
    card,
    soup,
    start_site,
    text,
)
from tests.slapd import SlapdServer

ALICE_SEES = {
    "tis-geogebra",
    "tis-hang",
    "tis-notepad",
    "tis-raise",
    "tis-slow",
    "tis-stellarium",
    "tis-xss",
}


@pytest.fixture(scope="module")
def portal_site(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Site]:
    """One real agent for this module's tests."""
    yield from start_site(tmp_path_factory.mktemp("portal-site"), ldap_server)


def cards_of(page: BeautifulSoup) -> list[str]:
    return [str(li["data-package"]) for li in page.select("li.card")]


@pytest.fixture
def alice(portal_site: Site) -> Browser:
    browser = Browser(portal_site.app())
    browser.login("alice")
    return browser


def test_each_teacher_sees_the_cards_the_agent_grants(portal_site: Site, alice: Browser) -> None:
    page = soup(alice.get("/"))
    assert set(cards_of(page)) == ALICE_SEES
    assert text(page.select_one(".result-count")) == "7 logiciels"
    names = [text(title) for title in page.select("li.card .card-title")]
    assert names == sorted(names, key=str.casefold), "sorted by display name"

    bob = Browser(portal_site.app())
    bob.login("bob")
    assert cards_of(soup(bob.get("/"))) == ["tis-notepad"]

    carol = Browser(portal_site.app())
    carol.login("carol")
    empty = soup(carol.get("/"))
    assert cards_of(empty) == []
    assert text(empty.select_one(".result-count")) == "0 logiciel"
    assert "Aucun logiciel" in text(empty.select_one("#results .empty"))


def test_a_card_shows_name_description_categories_version_size_and_state(
    alice: Browser,
) -> None:
    page = soup(alice.get("/"))
    geogebra = card(page, "tis-geogebra")
    assert text(geogebra.select_one(".card-title")) == "GeoGebra"
    description = text(geogebra.select_one(".description"))
    assert description == "Mathématiques dynamiques : géométrie et algèbre"
    assert [text(li) for li in geogebra.select(".categories li")] == ["Mathematics", "Science"]
    assert text(geogebra.select_one(".version")) == "Version 1.0-1"
    size = geogebra.select_one(".size")
    assert size is not None and re.fullmatch(r"\d+(,\d)?\xa0k?o", size.get_text())
    assert geogebra["data-state"] == "available"
    assert text(geogebra.select_one(".badge")) == "Disponible"
    button = geogebra.select_one(".actions button")
    assert button is not None and text(button) == "Installer GeoGebra"
    form = button.find_parent("form")
    assert form is not None and form["action"] == "/install" and form["hx-post"] == "/install"
    assert form.select_one('input[name="package"]')["value"] == "tis-geogebra"  # type: ignore[index]
    # No French description: the default one.
    assert text(card(page, "tis-slow").select_one(".description")) == "Takes its time"


def test_english_on_request_then_french_again(alice: Browser) -> None:
    answer = alice.post("/language", {"lang": "en", "next": "/?q=geo"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/?q=geo"
    page = soup(alice.get("/"))
    assert page.html is not None and page.html["lang"] == "en"
    geogebra = card(page, "tis-geogebra")
    assert text(geogebra.select_one(".description")) == "Dynamic mathematics: geometry and algebra"
    assert text(geogebra.select_one(".badge")) == "Available"
    size = geogebra.select_one(".size")
    assert size is not None and re.fullmatch(r"\d+(\.\d)?\xa0k?B", size.get_text())
    current = page.select_one('form.language button[aria-current="true"]')
    assert current is not None and current["value"] == "en" and current["lang"] == "en"

    alice.post("/language", {"lang": "fr", "next": "/"})
    page = soup(alice.get("/"))
    assert page.html is not None and page.html["lang"] == "fr"
    # An unknown language changes nothing.
    alice.post("/language", {"lang": "de", "next": "/"})
    assert soup(alice.get("/")).html["lang"] == "fr"  # type: ignore[index]


def test_the_language_switch_works_before_login(portal_site: Site) -> None:
    browser = Browser(portal_site.app())
    browser.get("/login")
    answer = browser.post("/language", {"lang": "en", "next": "/login"})
    assert answer.headers["Location"] == "/login"
    page = soup(browser.get("/login"))
    assert text(page.select_one("h1")) == "Sign in"


def test_search_as_you_type_answers_a_fragment(alice: Browser) -> None:
    page = soup(alice.get("/"))
    search = page.select_one("input#q")
    assert search is not None
    assert search["hx-get"] == "/catalog/results"
    assert search["hx-trigger"] == "input changed delay:250ms, search"
    assert search["hx-target"] == "#results"
    assert page.select_one('label[for="q"]') is not None

    answer = alice.get("/catalog/results?q=geometrie", htmx=True)
    assert answer.status_code == 200
    assert "HX-Request" in answer.headers["Vary"]
    assert answer.headers["HX-Push-Url"] == "/?q=geometrie"
    fragment = soup(answer)
    assert fragment.select_one("html, body, header") is None, "a fragment, not a page"
    assert cards_of(fragment) == ["tis-geogebra"], "accents and case are ignored"
    status = fragment.select_one('#search-status[hx-swap-oob="innerHTML"]')
    assert text(status) == "1 logiciel trouvé."

    nothing = soup(alice.get("/catalog/results?q=zzz", htmx=True))
    assert cards_of(nothing) == []
    assert "Aucun logiciel" in text(nothing.select_one(".empty"))


def test_search_works_without_javascript(alice: Browser) -> None:
    page = soup(alice.get("/?q=PLANET"))
    assert cards_of(page) == ["tis-stellarium"]
    search = page.select_one("input#q")
    assert search is not None and search["value"] == "PLANET"
    form = page.select_one('form[role="search"]')
    assert form is not None and form["method"] == "get" and form["action"] == "/"
    # The fragment's URL, opened without htmx, leads to the page.
    answer = alice.get("/catalog/results?q=planet")
    assert answer.status_code == 303 and answer.headers["Location"] == "/?q=planet"


def test_category_filter(alice: Browser) -> None:
    page = soup(alice.get("/"))
    options = [str(o["value"]) for o in page.select("select#category option")]
    assert options == ["", XSS_CATEGORY, "Mathematics", "Office", "Science"]
    assert page.select_one('label[for="category"]') is not None
    fragment = soup(alice.get("/catalog/results?category=Science", htmx=True))
    assert cards_of(fragment) == ["tis-geogebra", "tis-stellarium"]
    both = soup(alice.get("/?category=Science&q=planet"))
    assert cards_of(both) == ["tis-stellarium"]
    selected = both.select_one("select#category option[selected]")
    assert selected is not None and selected["value"] == "Science"


def test_cards_come_a_page_at_a_time(portal_site: Site) -> None:
    browser = Browser(portal_site.app(page_size=3))
    browser.login("alice")
    page = soup(browser.get("/"))
    assert len(cards_of(page)) == 3
    more = page.select_one("#more a#more-button")
    assert more is not None
    assert more["href"] == "/?page=2"
    assert more["hx-get"] == "/catalog/results?page=2"
    assert more["hx-target"] == "#cards" and more["hx-swap"] == "beforeend"

    answer = browser.get("/catalog/results?page=2", htmx=True)
    assert answer.headers["HX-Push-Url"] == "/?page=2"
    second = soup(answer)
    assert len(cards_of(second)) == 3
    assert not set(cards_of(second)) & set(cards_of(page))
    assert second.select_one('#more[hx-swap-oob="true"] a#more-button') is not None
    last = soup(browser.get("/catalog/results?page=3", htmx=True))
    assert len(cards_of(last)) == 1
    assert last.select_one("#more a") is None

    # Without JavaScript, page 2 shows the first two pages.
    assert len(cards_of(soup(browser.get("/?page=2")))) == 6
    assert len(cards_of(soup(browser.get("/?page=oops")))) == 3


def test_icons_are_served_by_uuid_with_a_placeholder(portal_site: Site, alice: Browser) -> None:
    page = soup(alice.get("/"))
    icon = card(page, "tis-notepad").select_one("img.icon")
    assert icon is not None and icon["alt"] == ""
    src = str(icon["src"])
    assert re.fullmatch(r"/icons/[0-9a-f-]{36}\.png", src)
    answer = alice.get(src)
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    assert answer.data.startswith(b"\x89PNG")

    no_icon = str(card(page, "tis-geogebra").select_one("img.icon")["src"])  # type: ignore[index]
    answer = alice.get(no_icon)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/static/img/package.svg"
    assert alice.get(answer.headers["Location"]).mimetype == "image/svg+xml"

    for bad in ("/icons/not-a-uuid.png", "/icons/..%2F..%2Fagent.toml.png", "/icons/.png"):
        assert alice.get(bad).status_code == 404, bad
    # Icons need a login, like everything but the login page, static files and /healthz.
    assert Browser(alice.app).get(src).status_code == 303


def test_package_text_is_escaped_everywhere(alice: Browser) -> None:
    answer = alice.get("/")
    html = answer.get_data(as_text=True)
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "<b>bold</b>" not in html
    page = soup(answer)
    xss = card(page, "tis-xss")
    assert text(xss.select_one(".card-title")) == XSS_NAME
    assert text(xss.select_one(".description")) == " ".join(XSS_DESCRIPTION.split())
    assert [text(li) for li in xss.select(".categories li")] == [XSS_CATEGORY]
    assert page.select("[onmouseover], [onerror], b") == []
    assert all(tag.has_attr("src") and not tag.string for tag in page.select("script"))
    button = xss.select_one(".actions button")
    assert button is not None and text(button) == f"Installer {XSS_NAME}"
    fragment = alice.get("/catalog/results?q=alert", htmx=True).get_data(as_text=True)
    assert "<script>alert" not in fragment and "&lt;script&gt;" in fragment


def test_pages_carry_no_inline_script_or_style(alice: Browser) -> None:
    anonymous = Browser(alice.app)
    for browser, url in ((alice, "/"), (alice, "/mine"), (alice, "/tasks"), (anonymous, "/login")):
        page = soup(browser.get(url))
        assert all(script.has_attr("src") for script in page.select("script")), url
        assert page.select("style, [style]") == [], url
        handlers = [
            (tag.name, attr)
            for tag in page.find_all(True)
            for attr in tag.attrs
            if attr.startswith("on")
        ]
        assert handlers == [], url
        for control in page.select("input:not([type=hidden]), select, textarea"):
            assert page.select_one(f'label[for="{control["id"]}"]') is not None, control
        for button in page.select("button, a.button"):
            assert text(button), f"{url}: a button without a name"
        body = page.select_one("body")
        assert body is not None
        headers = json.loads(str(body["hx-headers"]))
        token = page.select_one('input[name="csrf_token"]')
        assert token is not None and headers == {"X-CSRFToken": token["value"]}
        config = page.select_one('meta[name="htmx-config"]')
        assert config is not None
        settings = json.loads(str(config["content"]))
        assert settings["allowEval"] is False and settings["includeIndicatorStyles"] is False


@pytest.mark.parametrize(
    ("url", "htmx", "status"),
    [
        ("/login", False, 303),  # signed in: on to the catalog
        ("/", False, 200),
        ("/mine", False, 200),
        ("/tasks", True, 200),
        ("/catalog/results?q=a", True, 200),
        ("/no-such-page", False, 404),
        ("/static/css/portal.css", False, 200),
        ("/healthz", False, 200),
    ],
)
def test_security_headers_on_every_answer(
    alice: Browser, url: str, htmx: bool, status: int
) -> None:
    answer = alice.get(url, htmx=htmx)
    assert answer.status_code == status
    if url == "/login":
        answer = Browser(alice.app).get(url)
        assert answer.status_code == 200
    headers = answer.headers
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    if not url.startswith("/static"):
        assert headers["Cache-Control"] == "no-store"


def test_unknown_pages(portal_site: Site, alice: Browser) -> None:
    answer = alice.get("/no-such-page")
    assert answer.status_code == 404
    page = soup(answer)
    assert text(page.select_one("main h1")) == "Page introuvable"
    assert page.select_one("nav.main-nav") is not None
    fragment = alice.get("/no-such-page", htmx=True)
    assert fragment.status_code == 404
    assert fragment.headers["HX-Retarget"] == "#errors"
    assert soup(fragment).select_one("html") is None
    # Signed out, an unknown page does not say whether it exists.
    assert Browser(portal_site.app()).get("/no-such-page").status_code == 303


def test_healthz_reports_the_agent(portal_site: Site) -> None:
    answer = Browser(portal_site.app()).get("/healthz")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_json() == {
        "status": "ok",
        "portal": "ok",
        "agent": {"reachable": True, "url": portal_site.agent.url, "version": "1.8.2"},
    }
