"""Signing in and out, and the language switch: the `auth` blueprint and flask-login's setup.

The login form's credentials go to the agent's `/login` through the bridge, and the agent
decides. Its answer (user, groups, token) is kept in the server-side session record only; the
user's id for flask-login is their user name. On a site server the same sessions may hold a
site admin instead (`AdminUser`, signed in by `portal.admin`, id ``admin:<user name>``): the
teacher pages treat an admin as not signed in, and the admin pages a teacher. Failed logins
are throttled by user name and by address (`portal.throttle`): while one waits, the agent is
not even asked.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, redirect, request, session, url_for
from flask_login import (  # type: ignore[import-untyped]
    LoginManager,
    UserMixin,
    current_user,
    login_user,
    logout_user,
)
from werkzeug.wrappers import Response

from agent_bridge.agent.auth import Identity
from agent_bridge.errors import AgentError, AuthenticationError
from agent_bridge.models import Session
from portal import context
from portal.i18n import gettext as _
from portal.i18n import ngettext
from portal.render import is_htmx, render

__all__ = [
    "AdminUser",
    "PortalUser",
    "bp",
    "expiry_message",
    "init_app",
    "is_teacher",
    "login_form",
    "safe_next",
    "sign_in_again",
    "throttled",
]

bp = Blueprint("auth", __name__)


class PortalUser(UserMixin):  # type: ignore[misc]
    """The signed-in teacher, as the agent described them at login."""

    is_admin = False

    def __init__(self, agent_session: Session) -> None:
        self.agent_session = agent_session

    def get_id(self) -> str:
        return self.agent_session.username

    @property
    def username(self) -> str:
        return self.agent_session.username

    @property
    def groups(self) -> tuple[str, ...]:
        return self.agent_session.groups


class AdminUser(UserMixin):  # type: ignore[misc]
    """A site admin, as the directory described them at the admin login (`portal.admin`)."""

    is_admin = True
    ID_PREFIX = "admin:"

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def get_id(self) -> str:
        return self.ID_PREFIX + self.identity.username

    @property
    def username(self) -> str:
        return self.identity.username

    @property
    def display_name(self) -> str:
        return self.identity.display_name or self.identity.username

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted(self.identity.groups))


def is_teacher() -> bool:
    """Whether a teacher (not a site admin) is signed in on this request."""
    return bool(current_user.is_authenticated) and not getattr(current_user, "is_admin", False)


def safe_next(url: str | None) -> str | None:
    """`url` if it is a path on this site (no scheme, no host, no `//` or backslash), else None."""
    if not url or not url.startswith("/") or url.startswith(("//", "/\\")) or "\\" in url:
        return None
    parts = urlsplit(url)
    return url if not parts.scheme and not parts.netloc else None


def sign_in_again(message: str | None = None, *, login: str = "auth.login") -> Response:
    """Send the user to the login page `login` (a redirect, or `HX-Redirect` for htmx), with
    `message`."""
    if message:
        flash(message, "warning")
    here = request.full_path.rstrip("?") if request.method == "GET" and not is_htmx() else None
    target = url_for(login, next=safe_next(here))
    if is_htmx():
        response = Response("", status=401)
        response.headers["HX-Redirect"] = target
        response.vary.add("HX-Request")
        return response
    return redirect(target, 303)


def init_app(app: Flask) -> None:
    """Set flask-login up over the server-side sessions and register the blueprint."""
    manager = LoginManager(app)
    # Ids are random, server-side, rotated at sign-in and sign-out; binding them to the
    # address and browser adds nothing on loopback and would rewrite anonymous sessions.
    manager.session_protection = None

    def load_user(user_id: str) -> PortalUser | AdminUser | None:
        server_session = context.server_session()
        admin = server_session.admin
        if admin is not None:
            return AdminUser(admin) if user_id == AdminUser.ID_PREFIX + admin.username else None
        agent_session = server_session.agent_session
        if agent_session is None or agent_session.username != user_id:
            return None
        return PortalUser(agent_session)

    def unauthorized() -> Response:
        return sign_in_again(expiry_message())

    manager.user_loader(load_user)
    manager.unauthorized_handler(unauthorized)
    app.register_blueprint(bp)


def expiry_message() -> str | None:
    """Why the session the request's cookie named has just ended, for the login page."""
    expired = context.server_session().expired
    if expired == "idle":
        minutes = max(1, round(context.settings().idle_timeout / 60))
        return ngettext(
            "You were signed out after %(num)d minute without activity. Sign in again to continue.",
            "You were signed out after %(num)d minutes without activity. "
            "Sign in again to continue.",
            minutes,
        )
    if expired == "lifetime":
        return _("Your session has ended. Sign in again to continue.")
    return None


def login_form(
    *,
    template: str = "auth/login.html",
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The login page `template` (the teacher's, or the admin's), with the posted user name."""
    return render(
        template,
        error=error,
        username=request.form.get("username", "").strip(),
        next=safe_next(request.values.get("next")),
        status=status,
        headers=headers,
    )


def throttled(wait: float, *, template: str = "auth/login.html") -> Response:
    """The login page saying how long to wait (429, `Retry-After`)."""
    seconds = max(1, int(wait + 0.999))
    message = ngettext(
        "Too many failed attempts. Wait %(num)d second before trying again.",
        "Too many failed attempts. Wait %(num)d seconds before trying again.",
        seconds,
    )
    return login_form(
        template=template, error=message, status=429, headers={"Retry-After": str(seconds)}
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    """The login form; its `POST` asks the agent."""
    if is_teacher():
        return redirect(safe_next(request.values.get("next")) or url_for("catalog.index"), 303)
    if request.method == "GET":
        return login_form()
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not username or not password:
        return login_form(error=_("Enter your user name and your password."), status=400)
    throttle = context.throttle()
    address = request.remote_addr
    wait = throttle.wait(username, address)
    if wait > 0:
        return throttled(wait)
    try:
        agent_session = context.agent_client().login(username, password)
    except AuthenticationError:
        wait = throttle.failure(username, address)
        if wait > 0:
            return throttled(wait)
        return login_form(error=_("Wrong user name or password."), status=401)
    except AgentError as e:
        if e.status != 503:
            raise
        return login_form(
            error=_(
                "The directory that checks passwords does not answer. "
                "Try again in a moment; if it lasts, tell your IT contact."
            ),
            status=503,
        )
    throttle.success(username)
    server_session = context.server_session()
    server_session.pop("csrf_token", None)
    server_session.begin(agent_session)
    login_user(PortalUser(agent_session))
    return redirect(safe_next(request.form.get("next")) or url_for("catalog.index"), 303)


@bp.post("/logout")
def logout() -> Response:
    """Sign out: the session record and the agent's token are forgotten."""
    logout_user()
    context.server_session().end()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"), 303)


@bp.post("/language")
def language() -> Response:
    """Keep the chosen language in the session, then go back to the page."""
    chosen = request.form.get("lang", "")
    if chosen in context.settings().languages:
        session["lang"] = chosen
    return redirect(safe_next(request.form.get("next")) or url_for("catalog.index"), 303)
