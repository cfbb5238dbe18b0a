"""`GET /healthz`: is the portal up, and does the agent answer? JSON, no login.

200 with ``{"status": "ok", "agent": {"reachable": true, "version": …}}`` when the agent
answers its `/ping`; 503 with ``"status": "degraded"`` and ``"reachable": false`` when it does
not (the portal itself still serves its friendly pages). The ping uses its own client, with a
short timeout and no connection retries, so a health check never hangs.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from werkzeug.wrappers import Response

from agent_bridge.client import AgentClient
from agent_bridge.errors import BridgeError

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    client: AgentClient = current_app.extensions["comptoir.health_agent"]
    try:
        version = client.ping()["version"]
    except BridgeError as e:
        answer = jsonify(
            status="degraded",
            portal="ok",
            agent={"reachable": False, "url": client.base_url, "error": type(e).__name__},
        )
        answer.status_code = 503
        return answer
    return jsonify(
        status="ok",
        portal="ok",
        agent={"reachable": True, "url": client.base_url, "version": version},
    )
