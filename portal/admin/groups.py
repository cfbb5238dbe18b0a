"""The groups pages: machine groups, their assignments, host assignments, forced shutdown installs.

- `/admin/groups`: the machine groups; create one (name, title, hosts, teacher groups).
- `/admin/groups/<name>`: edit or delete it; its assignments (package, intent, deadline).
- `/admin/assignments/hosts/<host>`: one host's groups and its own assignments.
- `/admin/shutdown`: force installs at shutdown: packages × groups and hosts, with a deadline
  (they become `at_shutdown` assignments; `comptoir shutdown` installs them).

Every change is a `POST` (CSRF-checked) that changes the `AssignmentStore`, is audited
(`group.*`, `assignment.*`), then publishes the signed group, selfservice and host packages
(`portal.site.publish`, audited as `site.publish`). A refused change re-renders its page with
the reason (422) and is audited as refused. Deadlines are entered and shown in the site's
time zone (`SiteSettings.timezone`, named on the page) and kept and published in UTC; a time
the zone skips or has twice (clock changes) is refused with a message that says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from flask import Flask, current_app, redirect, request, url_for
from werkzeug.wrappers import Response

from portal.admin import (
    DashboardItem,
    add_dashboard_item,
    admin_blueprint,
    current_admin,
    record,
    register,
    site_settings,
)
from portal.admin.packages import lifecycle
from portal.errors import error_response
from portal.i18n import gettext as _
from portal.render import notify, render
from portal.site.assignments import (
    AssignmentError,
    AssignmentStore,
    UnknownRecordError,
    check_host,
    check_package_name,
)
from portal.site.localtime import LocalTimeError, local_text, local_to_utc
from portal.site.model import INTENTS, MachineGroup, ModelError, utc_text
from portal.site.publish import PublishError, publish
from portal.site.settings import SiteSettings

__all__ = ["bp", "init_app", "shutdown_bp", "store"]

bp = admin_blueprint("admin_groups", __name__)
shutdown_bp = admin_blueprint("admin_shutdown", __name__)


def store() -> AssignmentStore:
    """The site's groups and assignments."""
    return cast(AssignmentStore, current_app.extensions["comptoir.assignments"])


def intent_labels() -> dict[str, str]:
    return {
        "available": _("Available (self-service)"),
        "required": _("Required (next update)"),
        "at_shutdown": _("At shutdown"),
        "uninstall": _("Uninstall"),
    }


def _lines(text: str) -> list[str]:
    return [v.strip() for v in text.replace(",", "\n").splitlines() if v.strip()]


def _deadline(text: str) -> datetime | None:
    """The UTC time of a deadline typed in the site's zone; None when none is given.

    Raises:
        ModelError: not a date and time, or one the zone skips or has twice (translated).
    """
    text = text.strip()
    if not text:
        return None
    zone_name = site_settings().timezone
    try:
        return local_to_utc(text, zone_name)
    except LocalTimeError as e:
        if e.problem == "nonexistent":
            message = _(
                "Deadline %(time)s does not exist in %(zone)s: the clocks go forward at that "
                "hour. Choose another time.",
                time=text,
                zone=zone_name,
            )
        elif e.problem == "ambiguous":
            message = _(
                "Deadline %(time)s happens twice in %(zone)s: the clocks go back at that hour. "
                "Choose a time outside that hour.",
                time=text,
                zone=zone_name,
            )
        else:
            message = _("Deadline %(time)s: not a date and time.", time=text)
        raise ModelError(message) from e


def site_time(when: datetime | None) -> str:
    """A stored (UTC) time in the site's zone, with the zone's abbreviation; "–" for None."""
    return local_text(when, site_settings().timezone) if when is not None else "–"


def _zone_context() -> dict[str, str]:
    """The site's time zone, for the pages' labels ("Deadline (Europe/Paris)")."""
    if "comptoir.site" not in current_app.extensions:
        return {}
    return {"site_zone": site_settings().timezone}


def _known_packages() -> list[str]:
    names = {
        r.package for r in lifecycle().releases() if r.state in ("qualification", "production")
    }
    return sorted(names)


def _changed(action: str, target: str, details: str = "") -> None:
    """Audit a change, then publish what it means; tell the admin how it went."""
    record(action, target, details=details)
    try:
        result = publish(site_settings(), store())
    except PublishError as e:
        record("site.publish", target, outcome="failed", details=str(e))
        notify(
            _("Saved, but the packages could not be published: %(error)s", error=str(e)), "error"
        )
        return
    if result.written:
        record("site.publish", target, details=", ".join(result.written))
    for warning in result.warnings:
        notify(warning, "warning")
    notify(_("Saved and published."), "success")


def _refused(action: str, target: str, error: ModelError) -> None:
    record(action, target, outcome="refused", details=str(error))


# --- groups -------------------------------------------------------------------------------


def _index_page(status: int = 200, error: str | None = None) -> Response:
    groups = store().groups()
    counts = {g.name: len(store().assignments(group=g.name)) for g in groups}
    return render(
        "admin/groups/index.html",
        status=status,
        groups=groups,
        counts=counts,
        error=error,
        form=request.form,
    )


@bp.get("/groups")
def index() -> Response:
    """The machine groups and the form to make one."""
    return _index_page()


def _group_from_form(name: str) -> MachineGroup:
    return MachineGroup(
        name=name,
        title=request.form.get("title", "").strip()[:200],
        hosts=tuple(_lines(request.form.get("hosts", ""))),
        teacher_groups=tuple(_lines(request.form.get("teacher_groups", ""))),
    )


@bp.post("/groups")
def create() -> Response:
    """Make a machine group."""
    name = request.form.get("name", "").strip()
    try:
        group = store().save_group(_group_from_form(name), create=True)
    except ModelError as e:
        _refused("group.create", name, e)
        return _index_page(422, str(e))
    _changed("group.create", group.name, group.title)
    return redirect(url_for("admin_groups.group", name=group.name), 303)


def _group_page(name: str, status: int = 200, error: str | None = None) -> Response:
    try:
        group = store().group(name)
    except UnknownRecordError:
        return error_response(404, _("Page not found"), _("There is no such machine group."))
    return render(
        "admin/groups/group.html",
        status=status,
        group=group,
        assignments=store().assignments(group=name),
        intents=INTENTS,
        intent_labels=intent_labels(),
        packages=_known_packages(),
        error=error,
        form=request.form,
    )


@bp.get("/groups/<name>")
def group(name: str) -> Response:
    """A group: its settings and its assignments."""
    return _group_page(name)


@bp.post("/groups/<name>")
def update(name: str) -> Response:
    """Change a group's title, hosts and teacher groups."""
    try:
        changed = store().save_group(_group_from_form(name), create=False)
    except UnknownRecordError:
        return error_response(404, _("Page not found"), _("There is no such machine group."))
    except ModelError as e:
        _refused("group.update", name, e)
        return _group_page(name, 422, str(e))
    _changed(
        "group.update",
        name,
        f"hosts: {len(changed.hosts)}; teachers: {', '.join(changed.teacher_groups)}",
    )
    return redirect(url_for("admin_groups.group", name=name), 303)


@bp.post("/groups/<name>/delete")
def delete(name: str) -> Response:
    """Delete a group and its assignments; its hosts are told to remove its packages."""
    try:
        removed = store().delete_group(name)
    except UnknownRecordError:
        return error_response(404, _("Page not found"), _("There is no such machine group."))
    _changed("group.delete", name, f"{len(removed)} assignment(s) removed")
    return redirect(url_for("admin_groups.index"), 303)


@bp.post("/groups/<name>/assign")
def assign_group(name: str) -> Response:
    """Assign a package to the group."""
    package = request.form.get("package", "").strip()
    intent = request.form.get("intent", "")
    try:
        item = store().assign(
            package,
            intent,
            group=name,
            deadline=_deadline(request.form.get("deadline", "")),
            created_by=current_admin().username,
        )
    except UnknownRecordError:
        return error_response(404, _("Page not found"), _("There is no such machine group."))
    except ModelError as e:
        _refused("assignment.create", f"{package} → {name}", e)
        return _group_page(name, 422, str(e))
    _changed("assignment.create", f"{item.package} → {name}", item.intent)
    return redirect(url_for("admin_groups.group", name=name), 303)


# --- hosts --------------------------------------------------------------------------------


def _host_page(host: str, status: int = 200, error: str | None = None) -> Response:
    return render(
        "admin/groups/host.html",
        status=status,
        host=host,
        groups=store().groups_of(host),
        assignments=store().assignments(host=host),
        intents=[i for i in INTENTS if i != "available"],
        intent_labels=intent_labels(),
        packages=_known_packages(),
        error=error,
        form=request.form,
    )


@bp.get("/assignments/hosts")
def find_host() -> Response:
    """The host asked for in the lookup form."""
    host = request.args.get("host", "").strip().lower()
    if not host:
        return redirect(url_for("admin_groups.index"), 303)
    return redirect(url_for("admin_groups.host", host=host), 303)


@bp.get("/assignments/hosts/<host>")
def host(host: str) -> Response:
    """One host: the groups it is in and its own assignments."""
    return _host_page(host)


@bp.post("/assignments/hosts/<host>/assign")
def assign_host(host: str) -> Response:
    """Assign a package to one host."""
    package = request.form.get("package", "").strip()
    try:
        item = store().assign(
            package,
            request.form.get("intent", ""),
            host=host,
            deadline=_deadline(request.form.get("deadline", "")),
            created_by=current_admin().username,
        )
    except ModelError as e:
        _refused("assignment.create", f"{package} → {host}", e)
        return _host_page(host, 422, str(e))
    _changed("assignment.create", f"{item.package} → {item.host}", item.intent)
    return redirect(url_for("admin_groups.host", host=item.host), 303)


@bp.post("/assignments/<assignment_id>/delete")
def unassign(assignment_id: str) -> Response:
    """Remove an assignment; back to its group's or host's page."""
    try:
        item = store().unassign(assignment_id)
    except UnknownRecordError:
        return error_response(404, _("Page not found"), _("There is no such assignment."))
    _changed("assignment.delete", f"{item.package} → {item.target}", item.intent)
    back = request.form.get("back", "")
    if back == "shutdown":
        return redirect(url_for("admin_shutdown.index"), 303)
    if item.group is not None:
        return redirect(url_for("admin_groups.group", name=item.group), 303)
    return redirect(url_for("admin_groups.host", host=item.target), 303)


# --- forced installs at shutdown -----------------------------------------------------------


def _shutdown_page(status: int = 200, error: str | None = None) -> Response:
    return render(
        "admin/groups/shutdown.html",
        status=status,
        groups=store().groups(),
        assignments=store().assignments(intent="at_shutdown"),
        intent_labels=intent_labels(),
        packages=_known_packages(),
        error=error,
        form=request.form,
    )


@shutdown_bp.get("/shutdown", endpoint="index")
def shutdown_index() -> Response:
    """The forced installs at shutdown, and the form to add some."""
    return _shutdown_page()


@shutdown_bp.post("/shutdown", endpoint="create")
def shutdown_create() -> Response:
    """Force packages on groups and hosts at their next shutdown, by a deadline."""
    packages = _lines(request.form.get("packages", "")) + request.form.getlist("package")
    groups = request.form.getlist("group")
    hosts = _lines(request.form.get("hosts", ""))
    try:
        deadline = _deadline(request.form.get("deadline", ""))
        if not packages:
            raise AssignmentError("choose at least one package")
        if not groups and not hosts:
            raise AssignmentError("choose at least one group or host")
        if deadline is None:
            raise AssignmentError("give a deadline: after it, users may no longer postpone")
        # Everything is checked before the first assignment is saved: all or nothing.
        for package in packages:
            check_package_name(package)
        for name in groups:
            store().group(name)
        hosts = [check_host(one) for one in hosts]
        targets: list[dict[str, str]] = [{"group": n} for n in groups]
        targets += [{"host": h} for h in hosts]
        made = [
            store().assign(
                package,
                "at_shutdown",
                deadline=deadline,
                created_by=current_admin().username,
                **target,
            )
            for package in dict.fromkeys(packages)
            for target in targets
        ]
    except ModelError as e:
        _refused("shutdown.create", ", ".join(packages), e)
        return _shutdown_page(422, str(e))
    _changed(
        "shutdown.create",
        ", ".join(dict.fromkeys(packages)),
        f"{len(made)} assignment(s), deadline {utc_text(deadline)} "
        f"({request.form.get('deadline', '').strip()} {site_settings().timezone})",
    )
    return redirect(url_for("admin_shutdown.index"), 303)


def _groups_count() -> DashboardItem:
    return DashboardItem(_("Machine groups"), len(store().groups()), "admin_groups.index")


def init_app(app: Flask, site: SiteSettings) -> None:
    """Register the groups and shutdown pages and their dashboard count."""
    app.extensions["comptoir.assignments"] = AssignmentStore(site.data_dir)
    register(app, bp)
    register(app, shutdown_bp)
    app.add_template_filter(site_time, "site_time")
    app.context_processor(_zone_context)
    add_dashboard_item(app, _groups_count)
