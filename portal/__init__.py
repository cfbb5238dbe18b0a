"""The teacher portal: a Flask app over the agent bridge, built by `create_app`.

One blueprint per feature (`auth`, `catalog`, `health`); templates in `templates/<blueprint>/`
with their htmx partials in `partials/`; static files, htmx included, in `static/`. ADR 6
gives the reasons; `docs/portal.md` the settings and the URLs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import Flask, request

from agent_bridge.client import AgentClient
from portal import auth, catalog, errors, health, i18n, security, unavailable
from portal.board import TaskBoard
from portal.cards import render_cards
from portal.sessions import Clock, ServerSessionInterface, SessionStore
from portal.settings import (
    CONFIG_ENV,
    PortalSettings,
    load_or_create_secret_key,
    load_settings,
)
from portal.throttle import LoginThrottle

if TYPE_CHECKING:
    from portal.technician import TechnicianSetup

__all__ = ["PROJECT_ROOT", "create_app"]

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
"""Where `templates/` and `static/` are."""

HTMX_CONFIG: Final = {
    # The CSP forbids inline styles and eval: htmx must not need them.
    "includeIndicatorStyles": False,
    "allowEval": False,
    "allowScriptTags": False,
    "selfRequestsOnly": True,
    # Shared machines: never keep pages in the browser's storage; a history miss reloads.
    "historyCacheSize": 0,
    "refreshOnHistoryMiss": True,
    # Error answers are fragments meant to be shown (they retarget to #errors).
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "[45]..", "swap": True, "error": True},
    ],
}


def create_app(
    config: PortalSettings | Mapping[str, Any] | None = None,
    *,
    clock: Clock = time.monotonic,
    agent: AgentClient | None = None,
    technician: TechnicianSetup | None = None,
) -> Flask:
    """Build the portal.

    `config` is the settings: a `PortalSettings`; or a mapping of test overrides, applied over
    the defaults only (neither a file nor the environment is read); or None, which reads the
    file named by `COMPTOIR_PORTAL_CONFIG` (if set) and the `COMPTOIR_PORTAL_*` variables.
    `clock` (monotonic seconds) drives idle timeouts, throttling and caches; `agent` replaces
    the bridge client made from `agent_url`. `technician` (the offline USB kiosk only) adds
    the technician view (`portal.technician`).

    Raises:
        SettingsError: the settings are wrong, or the secret key cannot be read or made.
    """
    if isinstance(config, PortalSettings):
        settings = config
    elif config is not None:
        settings = load_settings(None, environ={}, overrides=config)
    else:
        path = os.environ.get(CONFIG_ENV)
        settings = load_settings(Path(path) if path else None)

    app = Flask(
        "portal",
        root_path=str(PROJECT_ROOT),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.secret_key = load_or_create_secret_key(settings)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["SESSION_COOKIE_NAME"] = settings.cookie_name

    client = agent or AgentClient(
        settings.agent_url,
        timeout=settings.agent_timeout,
        connect_retries=settings.agent_connect_retries,
        user_agent="comptoir-portal",
    )
    store = SessionStore(
        idle_timeout=settings.idle_timeout,
        lifetime=settings.session_lifetime,
        max_sessions=settings.max_sessions,
        clock=clock,
    )
    app.extensions.update(
        {
            "comptoir.settings": settings,
            "comptoir.clock": clock,
            "comptoir.agent": client,
            "comptoir.health_agent": AgentClient(
                client.base_url, timeout=2.0, connect_retries=0, user_agent="comptoir-portal"
            ),
            "comptoir.tasks": TaskBoard(client, clock=clock),
            "comptoir.sessions": store,
            "comptoir.throttle": LoginThrottle(
                per_user=settings.login_failures_per_user,
                per_address=settings.login_failures_per_address,
                delay=settings.login_delay,
                max_delay=settings.login_max_delay,
                window=settings.login_failure_window,
                clock=clock,
            ),
        }
    )
    app.session_interface = ServerSessionInterface(
        store, cookie_name=settings.cookie_name, secure=settings.cookie_secure
    )

    i18n.init_app(app, settings)
    security.init_app(app, settings)
    auth.init_app(app)
    app.register_blueprint(catalog.bp)
    app.register_blueprint(health.bp)
    unavailable.init_app(app)  # the kiosk's unreachable-agent screen
    if technician is not None:  # the offline USB kiosk only (kiosk.offline)
        from portal import technician as technician_view

        technician_view.init_app(app, technician)
    if settings.site is not None:  # a site server: the admin side (ADR 8)
        from portal import admin

        admin.init_app(app, settings.site)
    errors.init_app(app)

    @app.context_processor
    def layout() -> dict[str, Any]:
        # csrf_token() and current_user come from Flask-WTF and flask-login
        return {"htmx_config": HTMX_CONFIG, "back_url": _back_url, "render_cards": render_cards}

    return app


def _back_url() -> str:
    """The page the user is on, for forms that send them back to it without JavaScript.

    For htmx, the page htmx says it is on; for a form that was posted, the page that posted
    it (same site only); else the page itself.
    """
    current = request.headers.get("HX-Current-URL")
    if request.method != "GET" and not current and request.referrer:
        current = request.referrer if _same_site(request.referrer) else None
    if current:
        parts = urlsplit(current)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return auth.safe_next(path) or "/"
    if request.method != "GET":
        return "/"
    return auth.safe_next(request.full_path.rstrip("?")) or "/"


def _same_site(url: str) -> bool:
    parts = urlsplit(url)
    return parts.netloc == request.host and parts.scheme in ("http", "https")
