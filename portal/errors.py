"""Errors become answers here and nowhere else: a page, an htmx fragment, or JSON.

- A page request gets the error page (`errors/error.html`, in the layout, translated).
- An htmx request gets the small fragment (`errors/partials/_error.html`) with
  `HX-Retarget: #errors` and `HX-Reswap: innerHTML`: it lands in the page's alert region
  instead of the element the request targeted, and the page stays as it was.
- `/healthz` (the `health` blueprint) gets JSON.

The agent's errors are the bridge's (`agent_bridge.errors`): unreachable is a friendly 503
that the kiosk relies on, a refusal a 403 naming the package, an expired token sends the user
back to the login page, anything malformed a 502. Details go to the log, never to the page.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from flask_login import logout_user  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFError  # type: ignore[import-untyped]
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed
from werkzeug.wrappers import Response

from agent_bridge.errors import (
    AgentUnavailableError,
    AuthenticationError,
    BridgeError,
    NotAllowedError,
    UnknownPackageError,
)
from portal import context
from portal.auth import sign_in_again
from portal.i18n import gettext as _
from portal.render import is_htmx, render

__all__ = ["error_response", "init_app"]

log = logging.getLogger("comptoir.portal")


def error_response(
    status: int, title: str, message: str, *, kind: str = "error", retry: bool = False
) -> Response:
    """The answer for an error, in the form the request wants."""
    if request.blueprint == "health":
        answer = jsonify(status="error", error=title)
        answer.status_code = status
        return answer
    if is_htmx():
        return render(
            "errors/error.html",
            "errors/partials/_error.html",
            status=status,
            headers={"HX-Retarget": "#errors", "HX-Reswap": "innerHTML"},
            title=title,
            message=message,
            kind=kind,
            retry=retry,
        )
    return render(
        "errors/error.html", status=status, title=title, message=message, kind=kind, retry=retry
    )


def _http_titles() -> dict[int, tuple[str, str]]:
    return {
        400: (_("Bad request"), _("The request could not be understood.")),
        403: (_("Not allowed"), _("You are not allowed to do that.")),
        404: (_("Page not found"), _("There is no page at this address.")),
        405: (_("Not allowed"), _("This address does not accept that kind of request.")),
        429: (_("Too many requests"), _("Wait a moment before trying again.")),
        500: (
            _("Something went wrong"),
            _(
                "The portal met an unexpected problem. "
                "Try again; if it lasts, tell your IT contact."
            ),
        ),
    }


def agent_unavailable() -> Response:
    """The friendly answer when the agent cannot be reached (also used by the kiosk)."""
    return error_response(
        503,
        _("The installation service does not answer"),
        _(
            "This computer's installation service cannot be reached right now, so software "
            "cannot be listed or installed. Try again in a moment; if it lasts, tell your "
            "IT contact."
        ),
        kind="agent-unavailable",
        retry=True,
    )


def init_app(app: Flask) -> None:
    """Register the error handlers on `app`."""

    @app.errorhandler(AgentUnavailableError)
    def unreachable(error: AgentUnavailableError) -> Response:
        log.warning("agent unavailable: %s", error)
        return agent_unavailable()

    @app.errorhandler(AuthenticationError)
    def token_refused(error: AuthenticationError) -> Response:
        # The agent no longer accepts the token (expired, or the agent's key changed).
        who = context.server_session().get("_user_id")
        log.info("agent refused the token of %s: %s", who, error)
        logout_user()
        context.server_session().end()
        return sign_in_again(_("Your sign-in has expired. Sign in again to continue."))

    @app.errorhandler(NotAllowedError)
    def not_allowed(error: NotAllowedError) -> Response:
        log.info("agent refused: %s", error)
        if error.package:
            message = _(
                "You are not allowed to install or remove “%(package)s” on this computer. "
                "Ask your IT contact if you need it.",
                package=error.package,
            )
        else:
            message = _("The installation service refused this action.")
        return error_response(403, _("Not allowed"), message, kind="refused")

    @app.errorhandler(UnknownPackageError)
    def unknown_package(error: UnknownPackageError) -> Response:
        return error_response(
            404,
            _("Unknown software"),
            _("“%(package)s” is not in the catalog.", package=error.package),
        )

    @app.errorhandler(BridgeError)
    def bridge_error(error: BridgeError) -> Response:
        log.error("agent error: %s", error)
        return error_response(
            502,
            _("Unexpected answer"),
            _(
                "The installation service gave an answer the portal does not understand. "
                "Try again; if it lasts, tell your IT contact."
            ),
            retry=True,
        )

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Response:
        log.info("CSRF refusal on %s %s: %s", request.method, request.path, error.description)
        return error_response(
            400,
            _("This page has expired"),
            _(
                "The form was sent without its security token, or from a page that has "
                "expired. Reload the page and try again."
            ),
            kind="csrf",
            retry=True,
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if isinstance(error, InternalServerError) and error.original_exception is not None:
            log.error("unexpected error on %s", request.path, exc_info=error.original_exception)
        titles = _http_titles()
        title, message = titles.get(code) or titles[400 if code < 500 else 500]
        response = error_response(code, title, message)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response
