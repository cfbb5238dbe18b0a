"""The site server's admin side: its login, its layout, and what the admin pages share.

`portal.create_app` calls `init_app(app, site)` when the settings have a `[site]` table. It
keeps the site's objects in `app.extensions`, registers the `admin` blueprint (`/admin/login`,
`/admin/logout`, the dashboard `/admin/`), then each area's module, in the explicit list below.

For the other admin modules:

- `admin_blueprint(name, import_name)` makes a blueprint under `/admin` whose every view needs
  a signed-in admin (a route added later is guarded without anyone remembering to); `register`
  adds it to the app. `admin_required` guards a single view. Anonymous visitors are sent to
  `/admin/login`; a signed-in teacher (or anyone not an admin) gets 403 and an `admin.denied`
  audit record.
- `current_admin()` is the signed-in `AdminUser` (user name, display name, groups),
  `site_settings()` the `SiteSettings`, `audit_log()` the `AuditLog`.
- `record(action, target, outcome=, details=)` audits what the current admin did, from the
  request's remote address.
- The navigation shows the areas whose endpoint exists: `admin_packages.index`,
  `admin_groups.index`, `admin_shutdown.index`, `admin_hosts.index`, `admin_audit.index`,
  `admin_catalogs.index`. `add_dashboard_item` puts a count on the dashboard.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, ParamSpec, TypeVar, cast

from flask import Blueprint, Flask, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user, login_user, logout_user  # type: ignore[import-untyped]
from werkzeug.wrappers import Response

from agent_bridge.agent.auth import (
    AuthConfigError,
    Authenticator,
    ChainAuthenticator,
    DirectoryUnavailableError,
    InvalidCredentialsError,
    LdapAuthenticator,
    LocalAccounts,
)
from portal import context, security
from portal.auth import (
    AdminUser,
    expiry_message,
    login_form,
    safe_next,
    sign_in_again,
    throttled,
)
from portal.i18n import gettext as _
from portal.render import render
from portal.settings import SettingsError
from portal.site.audit import AuditEvent, AuditLog, Outcome, Role
from portal.site.settings import SiteSettings

__all__ = [
    "AdminUser",
    "DashboardItem",
    "add_dashboard_item",
    "admin_blueprint",
    "admin_required",
    "audit_log",
    "audit_request",
    "bp",
    "current_admin",
    "init_app",
    "record",
    "register",
    "site_settings",
]

log = logging.getLogger("comptoir.admin")

P = ParamSpec("P")
R = TypeVar("R")

#: the admin navigation: (endpoint, key); labels in `_nav_label`
NAV: Final = (
    ("admin_packages.index", "packages"),
    ("admin_groups.index", "groups"),
    ("admin_shutdown.index", "shutdown"),
    ("admin_hosts.index", "hosts"),
    ("admin_audit.index", "audit"),
    ("admin_catalogs.index", "catalogs"),
)


@dataclass(frozen=True)
class DashboardItem:
    """A count on the dashboard, with the page that shows what is counted."""

    label: str
    count: int
    endpoint: str


# --- the site's objects --------------------------------------------------------------------


def site_settings() -> SiteSettings:
    """The `[site]` settings of the app serving the request."""
    return cast(SiteSettings, current_app.extensions["comptoir.site"])


def audit_log() -> AuditLog:
    """The site's audit log."""
    return cast(AuditLog, current_app.extensions["comptoir.audit"])


def current_admin() -> AdminUser:
    """The signed-in admin (views behind `admin_required` only)."""
    user = current_user._get_current_object()
    if not isinstance(user, AdminUser):
        raise RuntimeError("current_admin() outside an admin view")
    return user


def audit_request(
    who: str,
    role: Role,
    action: str,
    target: str = "",
    *,
    outcome: Outcome = "ok",
    details: str = "",
) -> None:
    """Record an event of this request (from its remote address); long text is shortened."""
    audit_log().record(
        AuditEvent.clipped(
            when=datetime.now(UTC),
            who=who,
            role=role,
            action=action,
            target=target,
            where=request.remote_addr or "",
            outcome=outcome,
            details=details,
        )
    )


def record(action: str, target: str = "", *, outcome: Outcome = "ok", details: str = "") -> None:
    """Audit what the current admin did: `action` (``catalog.create``…) on `target`.

    Raises:
        AuditError: the audit log cannot be written (the action must then not be confirmed).
    """
    audit_request(
        current_admin().username, "admin", action, target, outcome=outcome, details=details
    )


# --- guarding views ------------------------------------------------------------------------


def _refusal() -> Response | None:
    """None for an admin; the login page for a visitor; 403 (audited) for anyone else."""
    if getattr(current_user, "is_admin", False):
        return None
    if current_user.is_authenticated:
        who = str(getattr(current_user, "username", current_user.get_id()))
        log.warning("%r (not an admin) refused on %s %s", who, request.method, request.path)
        audit_request(who, "teacher", "admin.denied", request.path, outcome="refused")
        abort(403)
    return sign_in_again(expiry_message(), login="admin.login")


def admin_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Let only a signed-in admin through (see the module's docstring for the others)."""

    @functools.wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        refusal = _refusal()
        if refusal is not None:
            return refusal
        return view(*args, **kwargs)

    return guarded


#: endpoints of admin blueprints that anyone may reach
OPEN_ENDPOINTS: Final = frozenset({"admin.login", "admin.logout"})


def admin_blueprint(name: str, import_name: str, url_prefix: str = "/admin") -> Blueprint:
    """A blueprint whose every view needs a signed-in admin."""
    blueprint = Blueprint(name, import_name, url_prefix=url_prefix)

    @blueprint.before_request
    def only_admins() -> Response | None:
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        return _refusal()

    return blueprint


def register(app: Flask, blueprint: Blueprint) -> None:
    """Add `blueprint` (it guards itself) to `app`: the teacher login does not apply to it."""
    app.register_blueprint(blueprint)
    security.guarded_by_blueprint(app, blueprint.name)


def add_dashboard_item(app: Flask, provider: Callable[[], DashboardItem]) -> None:
    """Show `provider()`'s count on the dashboard (called on each visit)."""
    app.extensions.setdefault("comptoir.admin_dashboard", []).append(provider)


# --- login and logout ----------------------------------------------------------------------

bp = admin_blueprint("admin", __name__)


def _authenticator(site: SiteSettings) -> Authenticator:
    """LDAP, then the local accounts file, as configured."""
    chain: list[Authenticator] = []
    if site.ldap is not None:
        chain.append(LdapAuthenticator(site.ldap))
    if site.accounts_file is not None:
        try:
            chain.append(LocalAccounts.from_file(site.accounts_file))
        except AuthConfigError as e:
            raise SettingsError(f"site.accounts_file: {e}") from e
    return ChainAuthenticator(*chain)


ADMIN_LOGIN = "admin/login.html"


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    """The admin login form; its `POST` binds to the directory and checks the admin group."""
    if getattr(current_user, "is_admin", False):
        return redirect(safe_next(request.values.get("next")) or url_for("admin.index"), 303)
    if request.method == "GET":
        return login_form(
            template=ADMIN_LOGIN,
        )
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not username or not password:
        return login_form(
            template=ADMIN_LOGIN, error=_("Enter your user name and your password."), status=400
        )
    throttle = context.throttle()
    address = request.remote_addr
    wait = throttle.wait(username, address)
    if wait > 0:
        audit_request(username, "admin", "admin.login", outcome="refused", details="throttled")
        return throttled(wait, template=ADMIN_LOGIN)
    authenticator: Authenticator = current_app.extensions["comptoir.admin_auth"]
    try:
        identity = authenticator.authenticate(username, password)
    except InvalidCredentialsError:
        audit_request(username, "admin", "admin.login", outcome="refused", details="wrong password")
        wait = throttle.failure(username, address)
        if wait > 0:
            return throttled(wait, template=ADMIN_LOGIN)
        return login_form(template=ADMIN_LOGIN, error=_("Wrong user name or password."), status=401)
    except (DirectoryUnavailableError, AuthConfigError) as e:
        log.error("admin login for %r failed: %s", username[:64], e)
        audit_request(username, "admin", "admin.login", outcome="failed", details=str(e))
        return login_form(
            template=ADMIN_LOGIN,
            error=_(
                "The directory that checks passwords does not answer. "
                "Try again in a moment; if it lasts, tell your IT contact."
            ),
            status=503,
        )
    throttle.success(username)
    group = site_settings().admin_group
    if group not in identity.groups:
        audit_request(
            identity.username,
            "admin",
            "admin.login",
            outcome="refused",
            details=f"not a member of {group}",
        )
        return login_form(
            template=ADMIN_LOGIN,
            error=_("This account is not a site administrator account."),
            status=403,
        )
    server_session = context.server_session()
    server_session.pop("csrf_token", None)
    server_session.begin_admin(identity)
    user = AdminUser(identity)
    login_user(user)
    audit_request(user.username, "admin", "admin.login")
    return redirect(safe_next(request.form.get("next")) or url_for("admin.index"), 303)


@bp.post("/logout")
def logout() -> Response:
    """Sign out (an admin's sign-out is audited)."""
    if getattr(current_user, "is_admin", False):
        record("admin.logout")
    logout_user()
    context.server_session().end()
    flash(_("You are signed out."), "info")
    return redirect(url_for("admin.login"), 303)


@bp.get("/")
def index() -> Response:
    """The dashboard: a count for each area, and links to them."""
    providers: list[Callable[[], DashboardItem]] = current_app.extensions.get(
        "comptoir.admin_dashboard", []
    )
    return render("admin/index.html", items=[provider() for provider in providers])


def _nav_label(key: str) -> str:
    labels = {
        "packages": _("Packages"),
        "groups": _("Groups"),
        "shutdown": _("Shutdown"),
        "hosts": _("Hosts"),
        "audit": _("Audit"),
        "catalogs": _("Catalogs"),
    }
    return labels[key]


def _layout() -> dict[str, Any]:
    """The admin layout's navigation (areas that exist) and who is signed in."""
    if not getattr(current_user, "is_admin", False):
        return {"admin_nav": [], "admin_user": None}
    nav = [
        (url_for(endpoint), _nav_label(key), request.blueprint == endpoint.split(".")[0])
        for endpoint, key in NAV
        if endpoint in current_app.view_functions
    ]
    return {"admin_nav": nav, "admin_user": current_user}


# --- wiring --------------------------------------------------------------------------------


def init_app(app: Flask, site: SiteSettings) -> None:
    """Make `app` a site server: the admin login and pages, the public catalogs, backups.

    Raises:
        SettingsError: the accounts file cannot be used.
    """
    app.extensions["comptoir.site"] = site
    app.extensions["comptoir.audit"] = AuditLog(site.data_dir / "audit")
    app.extensions["comptoir.admin_auth"] = _authenticator(site)
    app.context_processor(_layout)
    register(app, bp)

    # Each area registers its blueprints and dashboard counts. One line per module; the
    # lifecycle helper adds packages and groups, the hosts helper hosts and portal.api.
    from portal.admin import audit as audit_pages
    from portal.admin import catalogs

    audit_pages.init_app(app, site)
    catalogs.init_app(app, site)

    from portal import api
    from portal.admin import hosts

    api.init_app(app, site)
    hosts.init_app(app, site)

    from portal.admin import groups, packages

    packages.init_app(app, site)
    groups.init_app(app, site)

    from portal.site.backup import BackupScheduler

    scheduler = BackupScheduler(site, audit_log=app.extensions["comptoir.audit"])
    app.extensions["comptoir.backups"] = scheduler
    scheduler.start()
