"""The audit pages: `/admin/audit` (search as you type, paging) and `/admin/audit.csv`.

Both take the same filters from the query string: `q` (text), `who`, `action`, `role`,
`outcome`, `since` and `until` (dates, `until` included, days of the site's time zone), and the
page `page`. Bad values are reported on the page, never guessed. The page shows times in the
site's time zone (`[site] timezone`), named; the CSV keeps UTC, for programs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Final

from flask import Flask, Response, request, stream_with_context, url_for

from portal.admin import (
    DashboardItem,
    add_dashboard_item,
    admin_blueprint,
    audit_log,
    record,
    register,
    site_settings,
)
from portal.i18n import gettext as _
from portal.render import render
from portal.site.audit import OUTCOMES, ROLES
from portal.site.localtime import zone
from portal.site.settings import SiteSettings

__all__ = ["PAGE_SIZE", "bp", "init_app"]

bp = admin_blueprint("admin_audit", __name__)

PAGE_SIZE: Final = 50


@dataclass(frozen=True)
class AuditQuery:
    """The filters of a request, checked; `errors` says what was wrong."""

    text: str
    who: str
    action: str
    role: str
    outcome: str
    since: date | None
    until: date | None
    page: int
    errors: tuple[str, ...]

    @classmethod
    def from_request(cls) -> AuditQuery:
        args = request.args
        errors: list[str] = []

        def day(name: str, label: str) -> date | None:
            value = args.get(name, "").strip()
            if not value:
                return None
            try:
                return date.fromisoformat(value)
            except ValueError:
                errors.append(_("%(field)s: “%(value)s” is not a date.", field=label, value=value))
                return None

        def choice(name: str, allowed: tuple[str, ...]) -> str:
            value = args.get(name, "").strip()
            if value and value not in allowed:
                errors.append(_("Unknown value “%(value)s”.", value=value))
                return ""
            return value

        try:
            page = max(1, int(args.get("page", "1")))
        except ValueError:
            page = 1
        since, until = day("since", _("From")), day("until", _("To"))
        if since and until and since > until:
            errors.append(_("The start date is after the end date."))
        return cls(
            text=args.get("q", "").strip()[:200],
            who=args.get("who", "").strip()[:256],
            action=args.get("action", "").strip()[:64],
            role=choice("role", ROLES),
            outcome=choice("outcome", OUTCOMES),
            since=since,
            until=until,
            page=page,
            errors=tuple(errors),
        )

    def filters(self, where: tzinfo = UTC) -> dict[str, Any]:
        """The keyword arguments of `AuditLog.search`: days from midnight in the time zone
        `where` (`until` is the end of its day)."""
        return {
            "text": self.text,
            "who": self.who,
            "action": self.action,
            "role": self.role,
            "outcome": self.outcome,
            "since": datetime.combine(self.since, time(), where) if self.since else None,
            "until": (
                datetime.combine(self.until + timedelta(days=1), time(), where)
                if self.until
                else None
            ),
        }

    def args(self, **changes: Any) -> dict[str, Any]:
        """The query string of this search (for links), with `changes`."""
        values = {
            "q": self.text,
            "who": self.who,
            "action": self.action,
            "role": self.role,
            "outcome": self.outcome,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        values.update(changes)
        return {key: value for key, value in values.items() if value not in ("", None, 1)}


@bp.get("/audit")
def index() -> Response:
    """The audit log, newest first, filtered; the results alone for htmx."""
    query = AuditQuery.from_request()
    local = zone(site_settings().timezone)
    events: list[Any] = []
    total = 0
    if not query.errors:
        events, total = audit_log().search(
            **query.filters(local), limit=PAGE_SIZE, offset=(query.page - 1) * PAGE_SIZE
        )
    pages = max(1, -(-total // PAGE_SIZE))
    return render(
        "admin/audit/index.html",
        "admin/audit/partials/_results.html",
        query=query,
        events=events,
        total=total,
        pages=pages,
        roles=ROLES,
        outcomes=OUTCOMES,
        local=local,
        csv_url=url_for("admin_audit.export", **query.args()),
    )


@bp.get("/audit.csv")
def export() -> Response:
    """Every matching event as CSV (UTF-8 with a BOM, for spreadsheets), streamed."""
    query = AuditQuery.from_request()
    if query.errors:
        return Response("\n".join(query.errors) + "\n", status=400, mimetype="text/plain")
    chunks = audit_log().csv_chunks(**query.filters(zone(site_settings().timezone)))
    record("audit.export", details=request.query_string.decode("utf-8", "replace"))

    def body() -> Iterator[str]:
        yield "\ufeff"  # a BOM: spreadsheets then read the file as UTF-8
        for chunk, _rows in chunks:
            yield chunk

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(body()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )


def _today_count() -> DashboardItem:
    today = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    _events, total = audit_log().search(since=today, limit=0)
    return DashboardItem(_("Audit events today"), total, "admin_audit.index")


def _refusals_count() -> DashboardItem:
    today = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    _events, total = audit_log().search(since=today, outcome="refused", limit=0)
    return DashboardItem(_("Refusals today"), total, "admin_audit.index")


def init_app(app: Flask, site: SiteSettings) -> None:
    """Register the audit pages and their dashboard counts."""
    register(app, bp)
    add_dashboard_item(app, _today_count)
    add_dashboard_item(app, _refusals_count)
