"""What every request and answer goes through: the login requirement, CSRF, security headers.

- **Login.** Every endpoint needs a signed-in teacher except those in `PUBLIC_ENDPOINTS` and
  the blueprints that guard themselves (`guarded_by_blueprint`: the site server's admin pages,
  its public catalogs, its host API): a route added later is protected without anyone
  remembering to. A request that matches no route (an unknown URL, a wrong method) is sent to
  the login page too when nobody is signed in (a signed-in teacher or admin gets the 404 or 405
  page), except under a prefix given to `answers_unmatched` (the host API, whose clients are
  programs: they get its JSON 404 or 405, not a login page).
- **CSRF.** Flask-WTF checks a token on every `POST`. Forms carry it in a hidden field; htmx
  sends it in the `X-CSRFToken` header that `hx-headers` on `<body>` sets. The token lives in
  the server-side session, so it is as long-lived as the session.
- **Headers.** A strict Content-Security-Policy (no inline script or style anywhere),
  `X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options` and `frame-ancestors`, and
  `Cache-Control: no-store` on everything but static files: on a shared machine the back
  button must not show the previous user's pages.
"""

from __future__ import annotations

from typing import Final

from flask import Flask, Response, request
from flask_login import current_user  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFProtect  # type: ignore[import-untyped]

from portal.settings import PortalSettings

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PUBLIC_ENDPOINTS",
    "SECURITY_HEADERS",
    "answers_unmatched",
    "guarded_by_blueprint",
    "init_app",
]

PUBLIC_ENDPOINTS: Final = frozenset({"auth.login", "auth.language", "static", "health.healthz"})

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def guarded_by_blueprint(app: Flask, *blueprints: str) -> None:
    """Leave the teacher login requirement off `blueprints`: each checks access itself (a
    `before_request` of its own), e.g. the admin pages want a site admin, not a teacher."""
    app.extensions.setdefault("comptoir.guarded_blueprints", set()).update(blueprints)


def answers_unmatched(app: Flask, prefix: str) -> None:
    """Leave the requests under `prefix` that match no route (404, 405) to the app's owner of
    that prefix: no login is asked, and its own `before_request` answers them."""
    app.extensions.setdefault("comptoir.unmatched_prefixes", set()).add(prefix.rstrip("/"))


def _unmatched_owned(app: Flask) -> bool:
    if request.routing_exception is None:
        return False
    return any(
        request.path == prefix or request.path.startswith(prefix + "/")
        for prefix in app.extensions.get("comptoir.unmatched_prefixes", ())
    )


def init_app(app: Flask, settings: PortalSettings) -> None:
    """Install CSRF protection, the login requirement and the security headers on `app`."""
    app.config["WTF_CSRF_TIME_LIMIT"] = int(settings.session_lifetime)
    CSRFProtect(app)

    @app.before_request
    def require_login() -> Response | None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if request.blueprint in app.extensions.get("comptoir.guarded_blueprints", ()):
            return None
        if _unmatched_owned(app):
            return None
        if request.routing_exception is not None and current_user.is_authenticated:
            return None  # a signed-in user (teacher or admin) gets the real 404 or 405 page
        if current_user.is_authenticated and not getattr(current_user, "is_admin", False):
            return None
        unauthorized: Response = app.login_manager.unauthorized()  # type: ignore[attr-defined]
        return unauthorized

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
