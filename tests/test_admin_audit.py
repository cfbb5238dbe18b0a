"""The audit pages: search (page and htmx fragment), paging, the CSV export, escaping."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portal.admin.audit import PAGE_SIZE
from portal.site.audit import AuditEvent
from tests.portal_site import XSS_NAME, Browser, soup, text
from tests.site_harness import TEACHER, SiteFixture, admin_login, make_site

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteFixture]:
    fixture = make_site(tmp_path)
    fixture.audit.record_many(
        [
            AuditEvent(
                NOW - timedelta(days=2), "bob", "teacher", "install", "tis-notepad", "uuid-b"
            ),
            AuditEvent(
                NOW - timedelta(days=1),
                XSS_NAME,
                "teacher",
                "remove",
                "tis-geogebra",
                "uuid-x",
                "failed",
                '=cmd|" /C calc"!A0',
            ),
            AuditEvent(
                NOW - timedelta(hours=1), "eve", "admin", "catalog.delete", "maths", "10.0.0.9"
            ),
        ]
    )
    yield fixture
    fixture.stop()


@pytest.fixture
def admin(site: SiteFixture) -> Browser:
    return site.admin_client()


def rows(browser: Browser, url: str, **kwargs: object) -> list[list[str]]:
    page = soup(browser.get(url, **kwargs))  # type: ignore[arg-type]
    return [
        [text(cell) for cell in row.select("td")] for row in page.select("#audit-results tbody tr")
    ]


def test_the_page_lists_events_newest_first_and_escapes_them(admin: Browser) -> None:
    answer = admin.get("/admin/audit")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert XSS_NAME not in html and "&lt;script&gt;" in html
    page = soup(answer)
    assert page.select_one("form[role=search] label[for=audit-q]") is not None
    found = rows(admin, "/admin/audit")
    assert [row[3] for row in found] == ["admin.login", "catalog.delete", "remove", "install"]
    assert found[2][1] == XSS_NAME and found[2][6] == "Échec"
    assert "4 évènements" in text(page.select_one(".result-count"))


def test_filters_combine_and_htmx_gets_only_the_results(admin: Browser) -> None:
    assert [r[3] for r in rows(admin, "/admin/audit?role=teacher")] == ["remove", "install"]
    assert [r[3] for r in rows(admin, "/admin/audit?q=GEOGEBRA")] == ["remove"]
    assert [r[3] for r in rows(admin, "/admin/audit?who=eve")] == ["catalog.delete"]
    assert [r[3] for r in rows(admin, "/admin/audit?outcome=failed")] == ["remove"]
    assert [r[3] for r in rows(admin, "/admin/audit?action=catalog")] == ["catalog.delete"]
    today = NOW.date()
    since = (today - timedelta(days=2)).isoformat()
    until = (today - timedelta(days=2)).isoformat()
    assert [r[3] for r in rows(admin, f"/admin/audit?since={since}&until={until}")] == ["install"]

    fragment = admin.get("/admin/audit?role=admin", htmx=True)
    assert fragment.status_code == 200 and "HX-Request" in fragment.headers["Vary"]
    html = fragment.get_data(as_text=True)
    assert "<html" not in html and 'id="audit-results"' in html
    assert [text(r.select("td")[3]) for r in soup(fragment).select("tbody tr")] == [
        "admin.login",
        "catalog.delete",
    ]


def test_bad_filters_are_reported_not_guessed(admin: Browser) -> None:
    page = soup(admin.get("/admin/audit?since=yesterday&role=root"))
    errors = text(page.select_one("#audit-results [role=alert]"))
    assert "« yesterday » n’est pas une date" in errors and "« root »" in errors
    assert page.select("#audit-results tbody tr") == []
    page = soup(admin.get("/admin/audit?since=2026-05-02&until=2026-05-01"))
    assert "après la date de fin" in text(page.select_one("#audit-results [role=alert]"))
    assert admin.get("/admin/audit.csv?since=nope").status_code == 400


def test_pages_of_results(site: SiteFixture, admin: Browser) -> None:
    site.audit.record_many(
        AuditEvent(NOW - timedelta(minutes=i + 5), f"user{i}", "host", "report", where="h")
        for i in range(PAGE_SIZE + 3)
    )
    first = soup(admin.get("/admin/audit?role=host"))
    assert len(first.select("tbody tr")) == PAGE_SIZE
    older = first.select_one("nav.pager a[rel=next]")
    assert (
        older is not None and "page=2" in str(older["href"]) and "role=host" in str(older["href"])
    )
    second = soup(admin.get(str(older["href"])))
    assert [text(r.select("td")[1]) for r in second.select("tbody tr")] == [
        f"user{i}" for i in range(PAGE_SIZE, PAGE_SIZE + 3)
    ]
    assert "Page 2 sur 2" in text(second.select_one("nav.pager"))


def test_the_csv_export_takes_the_same_filters_and_defuses_formulas(admin: Browser) -> None:
    page = soup(admin.get("/admin/audit?role=teacher"))
    link = page.select_one("#audit-results a[download]")
    assert link is not None and link["href"] == "/admin/audit.csv?role=teacher"
    answer = admin.get(str(link["href"]))
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"].startswith('attachment; filename="audit-')
    body = answer.get_data(as_text=True)
    assert body.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(body[1:])))
    assert table[0][:4] == ["when", "who", "role", "action"]
    assert [row[3] for row in table[1:]] == ["remove", "install"]
    assert table[1][7] == '\'=cmd|" /C calc"!A0'
    assert table[1][1] == XSS_NAME, "CSV is not HTML: the text is kept as it is"


def test_only_admins_see_the_audit(site: SiteFixture) -> None:
    visitor = site.browser()
    assert visitor.get("/admin/audit.csv").status_code == 303
    teacher = site.browser()
    assert admin_login(teacher, *TEACHER).status_code == 403
    assert teacher.get("/admin/audit.csv").status_code == 303, "a refused login signs nobody in"


def test_times_and_days_are_the_site_time_zone(site: SiteFixture, admin: Browser) -> None:
    # 23:30 UTC on 14 January is 00:30 on the 15th in Paris (the default `[site] timezone`)
    late = datetime(2026, 1, 14, 23, 30, tzinfo=UTC)
    site.audit.record(AuditEvent(late, "night-owl", "admin", "group.create", "salle-9", "10.0.0.7"))
    page = soup(admin.get("/admin/audit?who=night-owl"))
    cell = page.select_one("#audit-results tbody time")
    assert cell is not None and text(cell) == "2026-01-15 00:30:00 CET"
    assert cell["datetime"] == "2026-01-14T23:30:00Z", "machines still read UTC"
    on_the_15th = soup(admin.get("/admin/audit?who=night-owl&since=2026-01-15&until=2026-01-15"))
    assert "night-owl" in text(on_the_15th.select_one("#audit-results tbody"))
    on_the_14th = admin.get("/admin/audit?who=night-owl&since=2026-01-14&until=2026-01-14")
    assert soup(on_the_14th).select_one("#audit-results tbody") is None
    assert "Réussi" in text(page.select_one("#audit-results tbody"))
