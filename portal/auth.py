"""Signing in and out, and the language switch: the `auth` blueprint and flask-login's setup.

The login form's credentials go to the agent's `/login` through the bridge, and the agent
decides. Its answer (user, groups, token) is kept in the server-side session record only; the
user's id for flask-login is their user name. Failed logins are throttled by user name and by
address (`portal.throttle`): while one waits, the agent is not even asked.
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

from agent_bridge.errors import AgentError, AuthenticationError
from agent_bridge.models import Session
from portal import context
from portal.i18n import gettext as _
from portal.i18n import ngettext
from portal.render import is_htmx, render

__all__ = ["PortalUser", "bp", "init_app", "safe_next", "sign_in_again"]

bp = Blueprint("auth", __name__)


class PortalUser(UserMixin):  # type: ignore[misc]
    """The signed-in teacher, as the agent described them at login."""

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


def safe_next(url: str | None) -> str | None:
    """`url` if it is a path on this site (no scheme, no host, no `//` or backslash), else None."""
    if not url or not url.startswith("/") or url.startswith(("//", "/\\")) or "\\" in url:
        return None
    parts = urlsplit(url)
    return url if not parts.scheme and not parts.netloc else None


def sign_in_again(message: str | None = None) -> Response:
    """Send the user to the login page (a redirect, or `HX-Redirect` for htmx), with `message`."""
    if message:
        flash(message, "warning")
    here = request.full_path.rstrip("?") if request.method == "GET" and not is_htmx() else None
    target = url_for("auth.login", next=safe_next(here))
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

    def load_user(user_id: str) -> PortalUser | None:
        agent_session = context.server_session().agent_session
        if agent_session is None or agent_session.username != user_id:
            return None
        return PortalUser(agent_session)

    def unauthorized() -> Response:
        expired = context.server_session().expired
        if expired == "idle":
            minutes = max(1, round(context.settings().idle_timeout / 60))
            return sign_in_again(
                ngettext(
                    "You were signed out after %(num)d minute without activity. "
                    "Sign in again to continue.",
                    "You were signed out after %(num)d minutes without activity. "
                    "Sign in again to continue.",
                    minutes,
                )
            )
        if expired == "lifetime":
            return sign_in_again(_("Your session has ended. Sign in again to continue."))
        return sign_in_again()

    manager.user_loader(load_user)
    manager.unauthorized_handler(unauthorized)
    app.register_blueprint(bp)


def _login_form(
    *, error: str | None = None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return render(
        "auth/login.html",
        error=error,
        username=request.form.get("username", "").strip(),
        next=safe_next(request.values.get("next")),
        status=status,
        headers=headers,
    )


def _throttled(wait: float) -> Response:
    seconds = max(1, int(wait + 0.999))
    message = ngettext(
        "Too many failed attempts. Wait %(num)d second before trying again.",
        "Too many failed attempts. Wait %(num)d seconds before trying again.",
        seconds,
    )
    return _login_form(error=message, status=429, headers={"Retry-After": str(seconds)})


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    """The login form; its `POST` asks the agent."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.values.get("next")) or url_for("catalog.index"), 303)
    if request.method == "GET":
        return _login_form()
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not username or not password:
        return _login_form(error=_("Enter your user name and your password."), status=400)
    throttle = context.throttle()
    address = request.remote_addr
    wait = throttle.wait(username, address)
    if wait > 0:
        return _throttled(wait)
    try:
        agent_session = context.agent_client().login(username, password)
    except AuthenticationError:
        wait = throttle.failure(username, address)
        if wait > 0:
            return _throttled(wait)
        return _login_form(error=_("Wrong user name or password."), status=401)
    except AgentError as e:
        if e.status != 503:
            raise
        return _login_form(
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
