"""The groups pages: groups, assignments, host assignments and forced shutdown installs, each
change audited and published as signed packages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from portal.site.assignments import AssignmentStore
from portal.site.model import utc_text
from tests.agent_harness import HOST_UUID
from tests.lifecycle_harness import keyed_site
from tests.portal_site import Browser, soup
from tests.site_harness import SiteFixture
from tests.slapd import SlapdServer
from wapt.package import verify_package
from wapt.trust import TrustStore

OTHER = "0f6b1f52-1c2d-4f1e-9e55-3b1c0a2d9e01"


@pytest.fixture
def site(tmp_path: Path, ldap_server: SlapdServer) -> Iterator[SiteFixture]:
    yield from keyed_site(tmp_path, ldap_server)


@pytest.fixture
def admin(site: SiteFixture) -> Browser:
    return site.admin_client("dave", "dave-pw")


def later(days: int = 2) -> str:
    """A deadline as the admin types it: 10:00 in the site's zone (Paris), `days` from now."""
    day = datetime.now(ZoneInfo("Europe/Paris")) + timedelta(days=days)
    return day.strftime("%Y-%m-%dT10:00")


def utc_of(local: str) -> str:
    """The UTC time a deadline typed in Paris time is kept and published as."""
    return utc_text(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Paris")))


def published(site: SiteFixture, name: str) -> Any:
    """The newest published group/selfservice package `name`, or a host package, verified."""
    trust = TrustStore.from_path(site.site.keys_dir / "agents" / "production-machines.crt")
    host = site.site.host_repository_dir / f"{name}.wapt"
    if host.exists():
        return verify_package(host, trust).entry
    [path] = site.site.repository_dir.glob(f"{name}_*.wapt")
    return verify_package(path, trust).entry


def actions(site: SiteFixture) -> list[tuple[str, str]]:
    found, _ = site.audit.search(limit=200)
    return [(e.action, e.outcome) for e in reversed(found) if e.action != "admin.login"]


def make_room(admin: Browser) -> None:
    answer = admin.post(
        "/admin/groups",
        {
            "name": "salle-101",
            "title": "Lycée Chateaubriand — salle 101",
            "hosts": f"{HOST_UUID.upper()}\n{OTHER}",
            "teacher_groups": "profs-maths",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith("/admin/groups/salle-101")


def test_groups_and_assignments_are_published(site: SiteFixture, admin: Browser) -> None:
    make_room(admin)
    group = published(site, "site-salle-101")
    assert group.section == "group" and group.name == "Lycée Chateaubriand — salle 101"
    assert published(site, HOST_UUID).depends == ["site-salle-101"]
    page = soup(admin.get("/admin/groups"))
    assert page.select_one("tbody th a").get_text() == "Lycée Chateaubriand — salle 101"

    deadline = later()
    for package, intent in (
        ("tis-app", "required"),
        ("tis-x", "available"),
        ("tis-old", "uninstall"),
    ):
        answer = admin.post(
            "/admin/groups/salle-101/assign",
            {
                "package": package,
                "intent": intent,
                "deadline": deadline if intent == "required" else "",
            },
        )
        assert answer.status_code == 303, answer.get_data(as_text=True)
    group = published(site, "site-salle-101")
    assert group.depends == ["tis-app", "site-salle-101-selfservice"]
    assert group.conflicts == ["tis-old"]
    assert str(group.get("deadlines")) == f"tis-app={utc_of(deadline)}"
    assert published(site, HOST_UUID).conflicts == ["tis-old"]
    page = admin.get("/admin/groups/salle-101").get_data(as_text=True)
    assert "tis-x" in page and "Disponible" in page  # French by default

    # Refused: a deadline in the past, an unknown intent; nothing changes, refusals audited.
    for form in (
        {"package": "tis-y", "intent": "required", "deadline": "2001-01-01T10:00"},
        {"package": "tis-y", "intent": "maybe"},
        {"package": "bad name", "intent": "required"},
    ):
        answer = admin.post("/admin/groups/salle-101/assign", form)
        assert answer.status_code == 422
        assert soup(answer).select_one("#form-errors") is not None
    assert "tis-y" not in {a.package for a in AssignmentStore(site.site.data_dir).assignments()}

    # Removing an assignment publishes again.
    store = AssignmentStore(site.site.data_dir)
    [old] = store.assignments(intent="uninstall")
    assert admin.post(f"/admin/assignments/{old.id}/delete").status_code == 303
    assert published(site, "site-salle-101").conflicts == []

    # The host leaves the group: its host package says to remove the group's packages.
    answer = admin.post(
        "/admin/groups/salle-101",
        {"title": "Salle 101", "hosts": OTHER, "teacher_groups": "profs-maths"},
    )
    assert answer.status_code == 303
    host = published(site, HOST_UUID)
    assert host.depends == []
    assert host.conflicts == ["site-salle-101", "site-salle-101-selfservice"]
    assert admin.post("/admin/groups/salle-101/delete").status_code == 303
    assert published(site, OTHER).depends == []
    assert ("group.delete", "ok") in actions(site)
    assert ("site.publish", "ok") in actions(site)
    assert ("assignment.create", "refused") in actions(site)


def test_host_assignments(site: SiteFixture, admin: Browser) -> None:
    answer = admin.get(f"/admin/assignments/hosts?host={HOST_UUID.upper()}")
    assert answer.headers["Location"].endswith(f"/admin/assignments/hosts/{HOST_UUID}")
    answer = admin.post(
        f"/admin/assignments/hosts/{HOST_UUID}/assign", {"package": "tis-z", "intent": "uninstall"}
    )
    assert answer.status_code == 303
    assert published(site, HOST_UUID).conflicts == ["tis-z"]
    refused = admin.post(
        f"/admin/assignments/hosts/{HOST_UUID}/assign", {"package": "tis-z", "intent": "available"}
    )
    assert refused.status_code == 422
    assert "tis-z" in admin.get(f"/admin/assignments/hosts/{HOST_UUID}").get_data(as_text=True)
    bad = admin.post(
        "/admin/assignments/hosts/bad host!/assign", {"package": "a", "intent": "required"}
    )
    assert bad.status_code == 422


def test_forced_installs_at_shutdown(site: SiteFixture, admin: Browser) -> None:
    make_room(admin)
    deadline = later(1)
    # All or nothing: an unknown group refuses the whole request.
    answer = admin.post(
        "/admin/shutdown",
        {"packages": "tis-heavy", "group": "nowhere", "hosts": HOST_UUID, "deadline": deadline},
    )
    assert answer.status_code == 422
    assert AssignmentStore(site.site.data_dir).assignments(intent="at_shutdown") == []
    assert (
        admin.post("/admin/shutdown", {"packages": "tis-heavy", "group": "salle-101"}).status_code
        == 422
    )

    answer = admin.post(
        "/admin/shutdown",
        {
            "packages": "tis-heavy\ntis-big",
            "group": "salle-101",
            "hosts": OTHER,
            "deadline": deadline,
        },
    )
    assert answer.status_code == 303
    group = published(site, "site-salle-101")
    assert group.get("at_shutdown") == "tis-big,tis-heavy"
    utc = utc_of(deadline)
    assert group.get("deadlines") == f"tis-big={utc},tis-heavy={utc}"
    other = published(site, OTHER)
    assert other.get("at_shutdown") == "tis-big,tis-heavy"
    page = soup(admin.get("/admin/shutdown"))
    assert len(page.select("tbody tr")) == 4
    [item, *_] = AssignmentStore(site.site.data_dir).assignments(intent="at_shutdown")
    answer = admin.post(f"/admin/assignments/{item.id}/delete", {"back": "shutdown"})
    assert answer.headers["Location"].endswith("/admin/shutdown")
    assert ("shutdown.create", "refused") in actions(site)
    assert ("shutdown.create", "ok") in actions(site)


def test_bad_groups_are_refused_and_text_is_escaped(site: SiteFixture, admin: Browser) -> None:
    for form in (
        {"name": "Salle 101", "title": "x"},
        {"name": "x-selfservice", "title": "x"},
        {"name": "ok", "title": "x", "hosts": "not a host!"},
    ):
        answer = admin.post("/admin/groups", form)
        assert answer.status_code == 422
    answer = admin.post("/admin/groups", {"name": "xss", "title": '<script>alert("t")</script>'})
    assert answer.status_code == 303
    text = admin.get("/admin/groups").get_data(as_text=True)
    assert '<script>alert("t")</script>' not in text and "&lt;script&gt;" in text
    assert admin.post("/admin/groups", {"name": "xss", "title": "again"}).status_code == 422
    assert admin.get("/admin/groups/nope").status_code == 404
    assert admin.post("/admin/groups/nope/delete").status_code == 404
    assert admin.post("/admin/groups", {"name": "y", "title": "y"}, csrf=False).status_code == 400


def test_deadlines_are_entered_and_shown_in_the_sites_time_zone(
    site: SiteFixture, admin: Browser
) -> None:
    make_room(admin)
    page = soup(admin.get("/admin/groups/salle-101"))
    assert "Europe/Paris" in page.select_one("label[for=assign-deadline]").get_text()
    # 18:00 in Paris in summer is 16:00 UTC: kept and published in UTC, shown in Paris time.
    answer = admin.post(
        "/admin/groups/salle-101/assign",
        {"package": "tis-app", "intent": "required", "deadline": "2027-07-01T18:00"},
    )
    assert answer.status_code == 303, answer.get_data(as_text=True)
    [item] = AssignmentStore(site.site.data_dir).assignments()
    assert utc_text(item.deadline) == "2027-07-01T16:00:00Z"  # type: ignore[arg-type]
    assert published(site, "site-salle-101").get("deadlines") == "tis-app=2027-07-01T16:00:00Z"
    page = soup(admin.get("/admin/groups/salle-101"))
    shown = page.select_one("tbody time")
    assert shown["datetime"] == "2027-07-01T16:00:00Z"
    assert shown.get_text() == "2027-07-01 18:00 CEST"
    assert "Europe/Paris" in page.select_one("thead").get_text()
    # In winter Paris is UTC+1.
    answer = admin.post(
        "/admin/shutdown",
        {"packages": "tis-heavy", "group": "salle-101", "deadline": "2027-12-01T18:00"},
    )
    assert answer.status_code == 303
    page = soup(admin.get("/admin/shutdown"))
    assert "Europe/Paris" in page.select_one("label[for=shutdown-deadline]").get_text()
    assert [t.get_text() for t in page.select("tbody time")] == ["2027-12-01 18:00 CET"]
    assert published(site, "site-salle-101").get("deadlines") == (
        "tis-app=2027-07-01T16:00:00Z,tis-heavy=2027-12-01T17:00:00Z"
    )
    shutdown = site.audit.search(action="shutdown.create")[0][0]
    assert "2027-12-01T17:00:00Z" in shutdown.details and "Europe/Paris" in shutdown.details

    # The clocks go forward at 02:00 on 28 March 2027 (02:30 never happens) and back at
    # 03:00 on 31 October 2027 (02:30 happens twice): both are refused, saying why.
    for typed, words in (
        ("2027-03-28T02:30", "avance"),
        ("2027-10-31T02:30", "recule"),
        ("demain", "date"),
    ):
        answer = admin.post(
            "/admin/groups/salle-101/assign",
            {"package": "tis-dst", "intent": "required", "deadline": typed},
        )
        assert answer.status_code == 422
        error = soup(answer).select_one("#form-errors").get_text()
        assert typed in error and words in error, error
        answer = admin.post(
            "/admin/shutdown", {"packages": "tis-dst", "group": "salle-101", "deadline": typed}
        )
        assert answer.status_code == 422
        assert typed in soup(answer).select_one("#form-errors").get_text()
    assert "tis-dst" not in {a.package for a in AssignmentStore(site.site.data_dir).assignments()}
