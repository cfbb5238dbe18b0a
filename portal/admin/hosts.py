"""The hosts and rollout pages: `/admin/hosts`, `/admin/hosts/<uuid>`, `/admin/rollout[/<package>]`.

- The host list: paged, searched as you type, filtered by status (ok, pending, failed, never
  reported, not seen for N days) and by machine group; "last seen" is relative ("il y a 3 h").
- A host's page: what it has, what it still has to do, what failed with the end of each log,
  the reports the site took, and its pinned key, which an admin may reset (audited) when a
  machine was reinstalled and comes back with a new key.
- Rollouts: for each package, on how many of the hosts concerned it is installed ("installé sur
  183 des 200, 4 en échec"), and for one package the hosts in each state, with the logs of the
  failures.

Everything a host reports is untrusted text: templates escape it (logs in `<pre>`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from flask import Flask, abort, redirect, request, url_for
from werkzeug.wrappers import Response

from portal.admin import (
    DashboardItem,
    add_dashboard_item,
    admin_blueprint,
    record,
    register,
    site_settings,
)
from portal.api import host_store
from portal.i18n import gettext as _
from portal.i18n import ngettext
from portal.render import is_htmx, notify, render
from portal.site.assignments import AssignmentStore
from portal.site.hosts import HOST_STATUSES, HostStoreError
from portal.site.settings import SiteSettings

__all__ = ["PAGE_SIZE", "bp", "init_app", "last_seen_text"]

bp = admin_blueprint("admin_hosts", __name__)

PAGE_SIZE: Final = 50
DEFAULT_STALE_DAYS: Final = 7
MAX_STALE_DAYS: Final = 3650


def last_seen_text(when: datetime | str | None, now: datetime | None = None) -> str:
    """How long ago `when` was, for people: "il y a 3 h", "3 h ago"; "never" for None."""
    if when is None or when == "":
        return _("never")
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    elapsed = (now or datetime.now(UTC)) - when
    minutes = int(elapsed.total_seconds() // 60)
    if minutes < 1:
        return _("just now")
    if minutes < 60:
        return ngettext("%(num)d min ago", "%(num)d min ago", minutes)
    hours = minutes // 60
    if hours < 48:
        return ngettext("%(num)d h ago", "%(num)d h ago", hours)
    return ngettext("%(num)d day ago", "%(num)d days ago", hours // 24)


def _status_labels() -> dict[str, str]:
    return {
        "ok": _("Up to date"),
        "pending": _("Work pending"),
        "failed": _("Failure"),
        "unknown": _("Never reported"),
        "stale": _("Not seen lately"),
    }


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        return default
    return min(max(value, low), high)


@bp.get("/hosts")
def index() -> Response:
    """The host list; the results alone for htmx (search as you type)."""
    search = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    status = status if status in HOST_STATUSES else ""
    group = request.args.get("group", "").strip()[:64]
    stale_days = _int_arg("days", DEFAULT_STALE_DAYS, 1, MAX_STALE_DAYS)
    page = _int_arg("page", 1, 1, 1_000_000)
    store = host_store()
    hosts, total = store.list(
        search=search,
        status=status or None,
        group=group or None,
        page=page,
        per_page=PAGE_SIZE,
        stale_days=stale_days,
    )
    pages = max(1, -(-total // PAGE_SIZE))
    args = {"q": search, "status": status, "group": group, "days": stale_days}
    args = {k: v for k, v in args.items() if v and not (k == "days" and v == DEFAULT_STALE_DAYS)}
    whole_page = not is_htmx()  # the filters and counts are not in the fragment
    groups = AssignmentStore(site_settings().data_dir).groups() if whole_page else []
    return render(
        "admin/hosts/index.html",
        "admin/hosts/partials/_results.html",
        hosts=hosts,
        total=total,
        page=min(page, pages),
        pages=pages,
        args=args,
        search=search,
        chosen_status=status,
        group=group,
        groups=groups,
        stale_days=stale_days,
        statuses=HOST_STATUSES,
        status_labels=_status_labels(),
        counts=store.counts(stale_days) if whole_page else {},
        now=datetime.now(UTC),
        stale_since=datetime.now(UTC) - timedelta(days=stale_days),
        ago=last_seen_text,
    )


@bp.get("/hosts/<host_uuid>")
def show(host_uuid: str) -> Response:
    """One host: identity, key, installed, pending, failures with their logs, reports."""
    store = host_store()
    host = store.get(host_uuid)
    if host is None:
        abort(404)
    groups = [g for g in AssignmentStore(site_settings().data_dir).groups() if host.uuid in g.hosts]
    return render(
        "admin/hosts/show.html",
        host=host,
        failures=store.failure_logs(host.uuid),
        groups=groups,
        status_labels=_status_labels(),
        ago=last_seen_text,
    )


@bp.post("/hosts/<host_uuid>/reset-key")
def reset_key(host_uuid: str) -> Response:
    """Forget the host's pinned key: its next registration pins a new one (audited)."""
    store = host_store()
    host = store.get(host_uuid)
    if host is None:
        abort(404)
    try:
        store.reset_key(host.uuid)
    except HostStoreError as e:
        record("host.reset_key", host.uuid, outcome="failed", details=str(e))
        raise
    record("host.reset_key", host.uuid, details=f"key {host.fingerprint or '-'} forgotten")
    notify(
        _(
            "The key of %(host)s is reset: the machine's next registration will pin a new key.",
            host=host.name or host.uuid,
        ),
        "success",
    )
    return redirect(url_for("admin_hosts.show", host_uuid=host.uuid), 303)


@bp.get("/rollout")
def rollouts() -> Response:
    """Every package's rollout, by name, 50 a page; filtered as you type."""
    search = request.args.get("q", "").strip().lower()[:200]
    items = [r for r in host_store().rollouts() if search in r.package.lower()]
    pages = max(1, -(-len(items) // PAGE_SIZE))
    page = min(_int_arg("page", 1, 1, 1_000_000), pages)
    return render(
        "admin/hosts/rollouts.html",
        "admin/hosts/partials/_rollouts.html",
        rollouts=items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        total=len(items),
        page=page,
        pages=pages,
        args={"q": search} if search else {},
        search=search,
    )


@bp.get("/rollout/<package>")
def rollout(package: str) -> Response:
    """One package's rollout: the hosts in each state, the logs of the failures."""
    store = host_store()
    result = store.rollout(package[:200])
    if not result.lines and not result.targeted:
        abort(404)
    logs = {}
    for line in result.of("failed"):
        for failure in store.failure_logs(line.uuid):
            if failure.package == result.package:
                logs[line.uuid] = failure
    return render("admin/hosts/rollout.html", rollout=result, logs=logs)


def _hosts_count() -> DashboardItem:
    return DashboardItem(_("Hosts"), host_store().counts()["all"], "admin_hosts.index")


def _failed_count() -> DashboardItem:
    return DashboardItem(
        _("Hosts with a failure"), host_store().counts()["failed"], "admin_hosts.index"
    )


def init_app(app: Flask, site: SiteSettings) -> None:
    """Register the hosts and rollout pages and their dashboard counts (after `portal.api`,
    which makes the host store)."""
    del site  # the store is the API's (`app.extensions["comptoir.hosts"]`)
    register(app, bp)
    add_dashboard_item(app, _hosts_count)
    add_dashboard_item(app, _failed_count)
