"""The host API (`/api/v1/hosts/...`) and the hosts and rollout pages, through Flask's test
client on a real site app (`tests.site_harness`): registration, signed reports, refusals and
their audit, the pages' filters, escaping of hostile package text and logs, the key reset."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from cryptography.hazmat.primitives.asymmetric import ed25519
from flask import Flask

from agent_bridge.reports import (
    FailedPackage,
    HostReport,
    InstalledPackage,
    PendingWork,
    ReportEvent,
    enrolment_secret,
    host_key_from_seed,
    make_registration,
    sign_report,
)
from portal.admin.hosts import last_seen_text
from portal.site.assignments import AssignmentStore
from portal.site.hosts import HostStore
from portal.site.model import MachineGroup
from tests.conftest import TEST_DATA
from tests.portal_site import Browser
from tests.site_harness import TEACHER, SiteFixture, admin_login, make_site

REPORTS = TEST_DATA / "reports"
CORPUS_HOST = "0a1b2c3d-0000-4000-8000-00000000beef"
CORPUS_KEY = host_key_from_seed(
    hashlib.sha256(b"comptoir hostile reports: the host's key").digest()
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteFixture]:
    fixture = make_site(tmp_path)
    yield fixture
    fixture.stop()


def soup(response: Any) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


class Machine:
    """A host as the API sees it: a key, a UUID, a report counter."""

    def __init__(self, app: Flask, uuid: str, key: ed25519.Ed25519PrivateKey | None = None):
        self.client = app.test_client()
        self.app = app
        self.uuid = uuid
        self.key = key or ed25519.Ed25519PrivateKey.generate()
        self.seq = 0

    def post(self, path: str, data: bytes, address: str = "127.0.0.9") -> Any:
        return self.client.post(
            path,
            data=data,
            content_type="application/json",
            environ_base={"REMOTE_ADDR": address},
        )

    def register(self, secret: bytes | None = None, name: str = "PC") -> Any:
        secret = secret or self.app.extensions["comptoir.enrolment_secret"]
        return self.post(
            "/api/v1/hosts/register", make_registration(self.key, secret, self.uuid, name)
        )

    def report(self, **changes: Any) -> Any:
        self.seq = changes.pop("seq", self.seq + 1)
        report = HostReport(
            **{
                "host_uuid": self.uuid,
                "seq": self.seq,
                "created": "2026-11-21T08:00:00Z",
                **changes,
            }
        )
        return self.post(f"/api/v1/hosts/{self.uuid}/report", sign_report(report, self.key))


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_registration_pins_the_key_and_refusals_are_audited(site: SiteFixture) -> None:
    app = site.app()
    secret = site.site.enrolment_secret_file
    assert oct(secret.stat().st_mode)[-3:] == "600"
    assert app.extensions["comptoir.enrolment_secret"] == enrolment_secret(secret.read_bytes())
    host = Machine(app, uuid(1))
    answer = host.register(name="PC-101")
    assert answer.status_code == 201 and answer.json == {"status": "new", "host_uuid": uuid(1)}
    assert "Set-Cookie" not in answer.headers  # no session for machines
    assert host.register(name="PC-101").status_code == 200
    wrong = Machine(app, uuid(2)).register(secret=b"not the site's secret at all")
    assert (wrong.status_code, wrong.json["error"]) == (403, "bad-proof")
    thief = Machine(app, uuid(1)).register()
    assert (thief.status_code, thief.json["error"]) == (409, "key-conflict")
    garbage = host.post("/api/v1/hosts/register", b'{"format": 1}')
    assert (garbage.status_code, garbage.json["error"]) == (400, "malformed")
    huge = host.post("/api/v1/hosts/register", b" " * 9000)
    assert (huge.status_code, huge.json["error"]) == (413, "too-large")
    refused, total = site.audit.search(action="host.register", outcome="refused")
    assert total == 4 and {e.where for e in refused} == {"127.0.0.9"}
    assert {e.details.split(":")[0] for e in refused} == {
        "bad-proof",
        "key-conflict",
        "malformed",
        "too-large",
    }
    done, _ = site.audit.search(action="host.register", outcome="ok")
    assert [(e.who, e.role) for e in done] == [(uuid(1), "host")]


def test_reports_are_taken_once_and_forgeries_refused_and_audited(site: SiteFixture) -> None:
    app = site.app()
    host = Machine(app, uuid(1))
    host.register()
    event = ReportEvent(3, "2026-11-21T07:00:00Z", "alice", "install", "tis-geogebra", "done")
    answer = host.report(events=(event,))
    assert answer.status_code == 200 and answer.json == {"status": "ok", "seq": 1, "events": 1}
    teachers, _ = site.audit.search(action="host.install")
    assert [(e.who, e.role, e.target, e.where) for e in teachers] == [
        ("alice", "teacher", "tis-geogebra", uuid(1))
    ]
    replay = host.report(seq=1, events=(event,))
    assert (replay.status_code, replay.json["error"], replay.json["last_seq"]) == (409, "replay", 1)
    stranger = Machine(app, uuid(1))  # same UUID, its own key: a forgery
    forged = stranger.report(seq=50)
    assert (forged.status_code, forged.json["error"]) == (403, "bad-signature")
    other = Machine(app, uuid(2))
    other.register()
    sent = other.post(
        f"/api/v1/hosts/{uuid(1)}/report",
        sign_report(HostReport(uuid(2), 1, "2026-11-21T08:00:00Z"), other.key),
    )
    assert (sent.status_code, sent.json["error"]) == (403, "wrong-host")
    unknown = Machine(app, uuid(3)).report()
    assert (unknown.status_code, unknown.json["error"]) == (404, "unknown-host")
    oversize = host.post(f"/api/v1/hosts/{uuid(1)}/report", b" " * (4 * 1024 * 1024 + 10))
    assert (oversize.status_code, oversize.json["error"]) == (413, "too-large")
    # only POST is routed: a GET is a JSON 405, not the portal's login page
    assert app.test_client().get(f"/api/v1/hosts/{uuid(1)}/report").status_code == 405
    refused, total = site.audit.search(action="host.report", outcome="refused")
    assert total == 5
    assert {e.details.split(":")[0] for e in refused} == {
        "replay",
        "bad-signature",
        "wrong-host",
        "unknown-host",
        "too-large",
    }
    assert {e.where for e in refused} == {"127.0.0.9"}
    assert len(site.audit.search(action="host.install")[0]) == 1  # the replay added nothing


def populated(site: SiteFixture) -> tuple[Flask, HostStore]:
    """A site with a machine group, an assignment and four hosts in every state."""
    app = site.app()
    store: HostStore = app.extensions["comptoir.hosts"]
    assignments = AssignmentStore(site.site.data_dir)
    assignments.save_group(
        MachineGroup("salle-101", "Salle 101", (uuid(1), uuid(2), uuid(3))), create=True
    )
    assignments.assign("tis-geogebra", "required", group="salle-101")
    geo = InstalledPackage("tis-geogebra", "6.0-1", "PROD", "2026-11-20", "OK")
    machines = [Machine(app, uuid(n)) for n in (1, 2, 3, 4)]
    for n, machine in enumerate(machines, 1):
        machine.register(name=f"PC-101-{n:02d}")
    machines[0].report(computer_name="PC-101-01", installed=(geo,))
    machines[1].report(computer_name="PC-101-02", installed=(geo,))
    machines[2].report(
        computer_name="PC-101-03",
        failed=(FailedPackage("tis-geogebra", "6.0-1", "2026-11-20", "setup.py: exit 1"),),
        pending=PendingWork(at_shutdown=("tis-heavy(=1-1)",)),
    )
    # the fourth host never reported
    corpus = Machine(app, CORPUS_HOST, CORPUS_KEY)
    corpus.register(name="PC-hostile")
    answer = corpus.post(
        f"/api/v1/hosts/{CORPUS_HOST}/report", (REPORTS / "hostile-text.json").read_bytes()
    )
    assert answer.status_code == 200, answer.json
    return app, store


def test_only_admins_see_the_pages(site: SiteFixture) -> None:
    app, _ = populated(site)
    anonymous = site.browser(app)
    assert anonymous.get("/admin/hosts").status_code in (302, 303)
    teacher = site.browser(app)
    admin_login(teacher, *TEACHER)
    assert teacher.get("/admin/hosts").status_code in (302, 303, 403)
    assert teacher.get(f"/admin/hosts/{uuid(1)}").status_code in (302, 303, 403)


def test_the_host_list_filters_and_searches_as_you_type(site: SiteFixture) -> None:
    app, _ = populated(site)
    admin = site.admin_client(app=app)
    page = soup(admin.get("/admin/hosts"))
    rows = page.select("tr.host-row")
    assert len(rows) == 5
    assert page.select_one("label[for=host-q]") and page.select_one("#host-q[type=search]")
    form = page.select_one("form.host-filters")
    assert form is not None and "input changed" in str(form.get("hx-trigger"))
    statuses = {r["data-host"]: r.select_one(".badge").get_text(strip=True) for r in rows}
    assert statuses[uuid(3)] == "En échec"
    assert statuses[uuid(4)] == "Jamais signalé"
    assert rows[0].select_one("time").get_text() == "à l’instant"
    fragment = admin.get("/admin/hosts?q=101-03", htmx=True)
    html = fragment.get_data(as_text=True)
    assert "<html" not in html and 'id="host-results"' in html
    assert [r["data-host"] for r in soup(fragment).select("tr.host-row")] == [uuid(3)]
    failed = soup(admin.get("/admin/hosts?status=failed")).select("tr.host-row")
    assert {r["data-host"] for r in failed} == {uuid(3), CORPUS_HOST}
    group = soup(admin.get("/admin/hosts?group=salle-101")).select("tr.host-row")
    assert {r["data-host"] for r in group} == {uuid(1), uuid(2), uuid(3)}
    never = soup(admin.get("/admin/hosts?status=stale&days=3")).select("tr.host-row")
    assert [r["data-host"] for r in never] == [uuid(4)]
    counts = soup(admin.get("/admin/")).get_text(" ", strip=True)
    assert "Hôtes" in counts or "Postes" in counts


def test_last_seen_reads_as_people_say_it(site: SiteFixture) -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    cases = [
        (None, "jamais", "never"),
        (now - timedelta(seconds=20), "à l’instant", "just now"),
        (now - timedelta(minutes=5), "il y a 5 min", "5 min ago"),
        (now - timedelta(hours=3, minutes=10), "il y a 3 h", "3 h ago"),
        (now - timedelta(days=1), "il y a 24 h", "24 h ago"),
        (now - timedelta(days=3), "il y a 3 jours", "3 days ago"),
        ("2026-11-20T11:00:00Z", "il y a 25 h", "25 h ago"),
    ]
    for language in ("fr", "en"):
        app = site.app(default_language=language)
        with app.test_request_context("/"):
            for when, french, english in cases:
                assert last_seen_text(when, now) == (french if language == "fr" else english)


def test_a_host_page_escapes_what_the_host_says(site: SiteFixture) -> None:
    app, _ = populated(site)
    admin = site.admin_client(app=app)
    answer = admin.get(f"/admin/hosts/{CORPUS_HOST}")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>1</b>" not in html
    page = soup(answer)
    log = page.select_one("article.failure pre.log")
    assert log is not None and "</pre><script>alert('log')</script>" in log.get_text()
    assert page.select_one("h1").get_text().startswith('<img src=x onerror=alert("name")>')
    assert admin.get(f"/admin/hosts/{uuid(99)}").status_code == 404
    three = soup(admin.get(f"/admin/hosts/{uuid(3)}"))
    assert "setup.py: exit 1" in three.select_one("pre.log").get_text()
    assert "tis-heavy(=1-1)" in three.get_text()
    assert "Salle 101" in three.get_text()


def test_rollouts_say_how_far_a_package_went(site: SiteFixture) -> None:
    app, _ = populated(site)
    admin = site.admin_client(app=app)
    index = soup(admin.get("/admin/rollout"))
    row = index.select_one('tr[data-package="tis-geogebra"]')
    assert row is not None
    assert "installé sur 2 des 3, 1 en échec" in row.get_text(" ", strip=True)
    progress = row.select_one("progress")
    assert progress["max"] == "3" and progress["value"] == "2"
    # the hostile package name is escaped in the index and its link
    assert "<script>alert" not in admin.get("/admin/rollout").get_data(as_text=True)
    fragment = admin.get("/admin/rollout?q=geo", htmx=True)
    assert [r["data-package"] for r in soup(fragment).select("tr[data-package]")] == [
        "tis-geogebra"
    ]
    detail = soup(admin.get("/admin/rollout/tis-geogebra"))
    failed = detail.select(".rollout-failed li")
    assert [li["data-host"] for li in failed] == [uuid(3)]
    assert "setup.py: exit 1" in failed[0].select_one("pre.log").get_text()
    assert {li["data-host"] for li in detail.select(".rollout-installed li")} == {uuid(1), uuid(2)}
    assert admin.get("/admin/rollout/no-such-package").status_code == 404
    english = site.admin_client(app=site.app(default_language="en"))
    text = soup(english.get("/admin/rollout")).get_text(" ", strip=True)
    assert "installed on 2 of 3, 1 failed" in text


def test_resetting_a_key_is_audited_and_lets_the_machine_register_anew(
    site: SiteFixture,
) -> None:
    app, store = populated(site)
    admin = site.admin_client(app=app)
    page = soup(admin.get(f"/admin/hosts/{uuid(1)}"))
    assert page.select_one("form.reset-key input[name=csrf_token]") is not None
    without = admin.post(f"/admin/hosts/{uuid(1)}/reset-key", csrf=False)
    assert without.status_code == 400
    assert store.get(uuid(1)).public_key is not None  # type: ignore[union-attr]
    answer = admin.post(f"/admin/hosts/{uuid(1)}/reset-key")
    assert answer.status_code == 303
    assert store.get(uuid(1)).public_key is None  # type: ignore[union-attr]
    resets, _ = site.audit.search(action="host.reset_key")
    assert [(e.who, e.target, e.role) for e in resets] == [("admin", uuid(1), "admin")]
    reinstalled = Machine(app, uuid(1))
    assert reinstalled.register().status_code == 201
    reinstalled.seq = 1
    assert reinstalled.report().status_code == 200  # seq continues above the old reports
    assert "Set-Cookie" not in reinstalled.report().headers


def test_the_api_needs_no_csrf_token_but_admin_posts_do(site: SiteFixture) -> None:
    app = site.app()
    browser = Browser(app)
    host = Machine(app, uuid(5))
    assert host.register().status_code == 201  # no token, no cookie: signature-authenticated
    # and an admin page's post without its token is refused
    admin = site.admin_client(app=app)
    assert admin.post(f"/admin/hosts/{uuid(5)}/reset-key", csrf=False).status_code == 400
    # the API's clients are programs: a wrong method is a JSON 405, never the login page
    assert browser.get("/api/v1/hosts/register").status_code == 405


def test_the_api_answers_wrong_methods_and_unknown_urls_as_json(site: SiteFixture) -> None:
    app = site.app()
    client = app.test_client()
    for method, path in (
        ("GET", "/api/v1/hosts/register"),
        ("PUT", "/api/v1/hosts/register"),
        ("GET", f"/api/v1/hosts/{uuid(6)}/report"),
        ("DELETE", f"/api/v1/hosts/{uuid(6)}/report"),
    ):
        answer = client.open(path, method=method)
        assert answer.status_code == 405, (method, path)
        assert answer.mimetype == "application/json"
        assert answer.get_json()["error"] == "method-not-allowed"
        assert set(answer.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
        assert "Location" not in answer.headers
    for method, path in (
        ("GET", "/api/v1/nothing"),
        ("POST", "/api/v1/hosts"),
        ("POST", f"/api/v1/hosts/{uuid(6)}/report/more"),
        ("GET", "/api/v1"),
    ):
        answer = client.open(path, method=method, data=b"{}")
        assert answer.status_code == 404, (method, path)
        assert answer.get_json()["error"] == "not-found"
    # Elsewhere nothing changed: an unknown teacher page still asks to sign in first.
    assert client.get("/no-such-page").status_code in (302, 303)
    assert client.get("/admin/no-such-page").status_code in (302, 303)
