"""The app's shared objects for the request being served: settings, the bridge, the stores.

`create_app` puts them in `app.extensions`; views reach them through these functions, and
hand them, typed, to the classes that do the work.
"""

from __future__ import annotations

from typing import Any, cast

from flask import current_app, session

from agent_bridge.client import AgentClient
from portal.board import TaskBoard, UserBoard
from portal.sessions import Clock, ServerSession, SessionStore
from portal.settings import PortalSettings
from portal.throttle import LoginThrottle

__all__ = [
    "agent_client",
    "clock",
    "server_session",
    "settings",
    "store",
    "task_board",
    "throttle",
    "user_board",
]


def _get(name: str) -> Any:
    return current_app.extensions[f"comptoir.{name}"]


def settings() -> PortalSettings:
    return cast(PortalSettings, _get("settings"))


def agent_client() -> AgentClient:
    return cast(AgentClient, _get("agent"))


def task_board() -> TaskBoard:
    return cast(TaskBoard, _get("tasks"))


def store() -> SessionStore:
    return cast(SessionStore, _get("sessions"))


def throttle() -> LoginThrottle:
    return cast(LoginThrottle, _get("throttle"))


def clock() -> Clock:
    return cast(Clock, _get("clock"))


def server_session() -> ServerSession:
    """Flask's `session`, as the server-side session it is."""
    current = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(current, ServerSession)
    return current


def user_board() -> UserBoard:
    """The signed-in user's board (views behind the login only)."""
    record = server_session().record
    assert record is not None and record.signed_in
    return UserBoard(
        agent_client(),
        task_board(),
        record,
        cache_seconds=settings().catalog_cache_seconds,
        clock=clock(),
    )
