"""The unreachable-agent screen: what the kiosk shows while this computer's agent does not answer.

`GET /unavailable` says, in the user's language, that software cannot be listed or installed
right now, and checks again by itself: its status box asks `GET /unavailable/check` every few
seconds (htmx), which sends the window to the login page as soon as the agent answers.
Without JavaScript the "Try again" link does the same. Open to everyone (no login: nobody can
sign in while the agent is away), and it reveals nothing but the agent's reachability.
"""

from __future__ import annotations

from typing import Final

from flask import Blueprint, Flask, current_app, redirect, url_for
from werkzeug.wrappers import Response

from agent_bridge.client import AgentClient
from agent_bridge.errors import BridgeError
from portal.render import is_htmx, render
from portal.security import guarded_by_blueprint

__all__ = ["CHECK_SECONDS", "bp", "init_app"]

bp = Blueprint("unavailable", __name__, url_prefix="/unavailable")

#: how often the screen asks again
CHECK_SECONDS: Final = 3


def _agent_answers() -> bool:
    client: AgentClient = current_app.extensions["comptoir.health_agent"]
    try:
        client.ping()
    except BridgeError:
        return False
    return True


@bp.get("")
def screen() -> Response:
    """The friendly screen; straight to the login page if the agent answers after all."""
    if _agent_answers():
        return redirect(url_for("auth.login"), 303)
    return render("unavailable/index.html", status=503, check_seconds=CHECK_SECONDS)


@bp.get("/check")
def check() -> Response:
    """Ask the agent again: the login page once it answers; else the status box (htmx) or the
    screen itself."""
    if _agent_answers():
        if is_htmx():
            response = Response("", status=200)
            response.headers["HX-Redirect"] = url_for("auth.login")
            response.vary.add("HX-Request")
            return response
        return redirect(url_for("auth.login"), 303)
    return render(
        "unavailable/index.html",
        "unavailable/partials/_status.html",
        status=200 if is_htmx() else 503,
        check_seconds=CHECK_SECONDS,
    )


def init_app(app: Flask) -> None:
    """Register the screen, open without login."""
    guarded_by_blueprint(app, bp.name)
    app.register_blueprint(bp)
