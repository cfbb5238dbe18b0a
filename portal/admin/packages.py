"""The packages pages: list and search, upload, request, qualify, promote, retire, history.

`/admin/packages` lists the site's package releases (`portal.site.lifecycle`) with filters by
state and maturity and a search as you type; `/admin/packages/<id>` shows one with its
history. Every change is a `POST` (CSRF-checked), audited (`package.<action>`, refused ones
too), and answered with the list fragment for htmx or a redirect for a plain form.

Uploads have their own size limit (`COMPTOIR_MAX_UPLOAD`, default 2 GiB) while the rest of
the app keeps its 64 KiB: the limit is raised for the upload endpoint alone, for a signed-in
admin alone, before anything reads the body (the CSRF check included).
"""

from __future__ import annotations

from typing import Final, cast

from flask import Flask, current_app, redirect, request, url_for
from flask_login import current_user  # type: ignore[import-untyped]
from werkzeug.wrappers import Response

from portal.admin import (
    DashboardItem,
    add_dashboard_item,
    admin_blueprint,
    current_admin,
    record,
    register,
)
from portal.errors import error_response
from portal.i18n import gettext as _
from portal.render import is_htmx, notify, render
from portal.site.lifecycle import (
    DEFAULT_MAX_UPLOAD,
    STATES,
    LifecycleError,
    PackageLifecycle,
    Release,
    UploadRefusedError,
)
from portal.site.settings import SiteSettings

__all__ = ["UPLOAD_LIMIT_KEY", "bp", "init_app", "lifecycle"]

bp = admin_blueprint("admin_packages", __name__)

UPLOAD_LIMIT_KEY: Final = "COMPTOIR_MAX_UPLOAD"
MATURITIES: Final = ("DEV", "PREPROD", "PROD")


def lifecycle() -> PackageLifecycle:
    """The site's package lifecycle."""
    return cast(PackageLifecycle, current_app.extensions["comptoir.lifecycle"])


def state_labels() -> dict[str, str]:
    return {
        "new": _("New"),
        "development": _("Development"),
        "qualification": _("Qualification"),
        "production": _("Production"),
        "retired": _("Retired"),
    }


def _list_page(status: int = 200) -> Response:
    state = request.values.get("state", "")
    maturity = request.values.get("maturity", "")
    text = request.values.get("q", "").strip()[:200]
    if state not in STATES:
        state = ""
    if maturity not in MATURITIES:
        maturity = ""
    releases = lifecycle().releases(state=state or None, maturity=maturity or None, text=text)
    return render(
        "admin/packages/index.html",
        "admin/packages/partials/_list.html",
        status=status,
        releases=releases,
        state=state,
        maturity=maturity,
        q=text,
        states=STATES,
        maturities=MATURITIES,
        state_labels=state_labels(),
        upload_limit=current_app.config[UPLOAD_LIMIT_KEY],
    )


def _done(message: str) -> Response:
    notify(message, "success")
    if is_htmx():
        return _list_page()
    return redirect(url_for("admin_packages.index"), 303)


def _refused(action: str, target: str, error: LifecycleError, status: int = 409) -> Response:
    record(f"package.{action}", target, outcome="refused", details=str(error))
    return error_response(status, _("Not done"), str(error), kind="warning")


@bp.get("/packages")
def index() -> Response:
    """The releases, filtered; the list alone for htmx."""
    return _list_page()


@bp.get("/packages/<release_id>")
def detail(release_id: str) -> Response:
    """One release and its history."""
    try:
        item = lifecycle().release(release_id)
    except LifecycleError:
        return error_response(404, _("Page not found"), _("There is no such package."))
    return render("admin/packages/detail.html", item=item, state_labels=state_labels())


@bp.post("/packages/upload")
def upload() -> Response:
    """Receive a `.wapt` file: verified completely, kept in development, or refused."""
    file = request.files.get("package")
    if file is None or not file.filename:
        return error_response(400, _("Not done"), _("Choose a .wapt file to upload."))
    name = file.filename[-200:]
    try:
        item = lifecycle().upload(
            file.stream,
            who=current_admin().username,
            name=name,
            max_size=current_app.config[UPLOAD_LIMIT_KEY],
        )
    except UploadRefusedError as e:
        record("package.upload", name, outcome="refused", details=str(e))
        message = _(
            "%(file)s was refused: %(reasons)s", file=e.subject, reasons="; ".join(e.problems)
        )
        return error_response(422, _("Package refused"), message, kind="warning")
    except LifecycleError as e:
        return _refused("upload", name, e, status=500)
    record("package.upload", _target(item), details=f"signed by {item.signer}")
    return _done(_("%(package)s %(version)s is in development.", **_names(item)))


@bp.post("/packages/request")
def new_request() -> Response:
    """Record a request for a package that does not exist yet (state new)."""
    package = request.form.get("package", "").strip()
    title = request.form.get("title", "").strip()[:200]
    note = request.form.get("note", "").strip()[:1000]
    if not package:
        return error_response(400, _("Not done"), _("Give the package's name."))
    try:
        item = lifecycle().request(package, title=title, who=current_admin().username, note=note)
    except LifecycleError as e:
        return _refused("request", package, e)
    record("package.request", item.package, details=note)
    return _done(_("The request for %(package)s is recorded.", package=item.package))


def _target(item: Release) -> str:
    return f"{item.package} {item.version}".strip()


def _names(item: Release) -> dict[str, str]:
    return {"package": item.package, "version": item.version}


@bp.post("/packages/<release_id>/<action>")
def transition(release_id: str, action: str) -> Response:
    """Qualify, promote or retire a release."""
    life = lifecycle()
    who = current_admin().username
    note = request.form.get("note", "").strip()[:1000]
    steps = {"qualify": life.qualify, "promote": life.promote, "retire": life.retire}
    step = steps.get(action)
    if step is None:
        return error_response(404, _("Page not found"), _("There is no page at this address."))
    try:
        target = _target(life.release(release_id))
        item = step(release_id, who=who, note=note)
    except LifecycleError as e:
        return _refused(action, release_id, e)
    record(f"package.{action}", target, details=note)
    messages = {
        "qualify": _("%(package)s %(version)s is in qualification (PREPROD).", **_names(item)),
        "promote": _("%(package)s %(version)s is in production (PROD).", **_names(item)),
        "retire": _("%(package)s %(version)s is retired.", **_names(item)),
    }
    return _done(messages[action])


def _allow_large_upload() -> None:
    """Before anything reads the body: the upload limit, for an admin's upload only."""
    if request.endpoint == "admin_packages.upload" and getattr(current_user, "is_admin", False):
        request.max_content_length = current_app.config[UPLOAD_LIMIT_KEY]


def _count(state: str, label: str) -> DashboardItem:
    return DashboardItem(label, len(lifecycle().releases(state=state)), "admin_packages.index")


def init_app(app: Flask, site: SiteSettings) -> None:
    """Register the packages pages, their upload limit and dashboard counts."""
    app.config.setdefault(UPLOAD_LIMIT_KEY, DEFAULT_MAX_UPLOAD)
    app.extensions["comptoir.lifecycle"] = PackageLifecycle(site)
    # First of all request hooks: the CSRF check reads the form, hence the body.
    app.before_request_funcs.setdefault(None, []).insert(0, _allow_large_upload)
    register(app, bp)
    add_dashboard_item(app, lambda: _count("qualification", _("Packages in qualification")))
    add_dashboard_item(app, lambda: _count("production", _("Packages in production")))
