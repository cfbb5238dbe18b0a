"""The agent's HTTP service: WAPT's local agent API (wapt-format.md §4.3) on loopback.

Routes parse the query, authenticate, call one method of `Agent`, and answer with WAPT's JSON
shapes. Refusals answer 401 (no, expired or forged token), 403 (not granted, or not from
loopback), 404 (unknown package or task) or 400 (malformed request), each with a one-line text.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import socket
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Response, g, jsonify, request

from agent_bridge.agent.auth import AuthError, Identity, InvalidCredentialsError
from agent_bridge.agent.core import AGENT_VERSION, COMPTOIR_VERSION, Agent, AgentRefusal
from agent_bridge.agent.memory import limit_arenas

log = logging.getLogger("comptoir.agent.service")

P = ParamSpec("P")
R = TypeVar("R")

UNAUTHORIZED = (
    "Could not verify your access level for that URL.\nYou have to login with proper credentials"
)
MAX_LONG_POLL_S = 30.0


def _text(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Comptoir agent"'
    return response


def _basic_credentials() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep and user else None


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _flag(name: str) -> bool:
    return request.args.get(name, "0").lower() in ("1", "true", "yes")


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError as e:
        raise AgentRefusal(400, f"{name}: {request.args.get(name)!r} is not a number") from e


def _timeout_s() -> float:
    """WAPT's long polls take `timeout` in milliseconds; capped so a request cannot hang."""
    return min(max(_int_arg("timeout", 2000), 0) / 1000, MAX_LONG_POLL_S)


def create_app(agent: Agent) -> Flask:
    """The Flask application serving `agent` (routes and error handling in one place)."""
    app = Flask("comptoir_agent")
    app.config["JSON_SORT_KEYS"] = False
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    def authenticated(func: Callable[P, R]) -> Callable[P, R | Response]:
        """Require Basic `username:token` with a token this agent issued to that user."""

        @wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            credentials = _basic_credentials()
            if credentials is None:
                return _text(401, UNAUTHORIZED)
            user, token = credentials
            try:
                g.identity = agent.tokens.verify(token, user)
            except AuthError:
                log.warning("refused: bad or expired token for %s on %s", user, request.path)
                return _text(401, UNAUTHORIZED)
            return func(*args, **kwargs)

        return wrapper

    @app.before_request
    def only_loopback() -> Response | None:
        if not _is_loopback(request.remote_addr):
            log.warning("refused: request from %s", request.remote_addr)
            return _text(403, "the agent answers local requests only")
        return None

    @app.errorhandler(AgentRefusal)
    def refusal(error: AgentRefusal) -> Response:
        return _text(error.status, str(error))

    @app.errorhandler(404)
    def not_found(error: Exception) -> Response:
        return _text(404, f"no such endpoint: {request.path}")

    @app.get("/ping")
    def ping() -> Response:
        answer: dict[str, Any] = {"version": AGENT_VERSION, "comptoir": COMPTOIR_VERSION}
        if "uuid" in request.args:
            answer.update(hostname=socket.gethostname(), uuid=agent.host_uuid, waptserver=None)
        return jsonify(answer)

    @app.get("/login")
    def login() -> Response:
        credentials = _basic_credentials()
        if credentials is None:
            return _text(401, UNAUTHORIZED)
        user, password = credentials
        try:
            identity = agent.authenticator.authenticate(user, password)
        except InvalidCredentialsError:
            log.warning("login refused for %s", user)
            return _text(401, "WRONG_PASSWORD_USERNAME")
        except AuthError as e:
            log.error("login of %s impossible: %s", user, e)
            return _text(503, f"authentication unavailable: {e}")
        return jsonify(
            token=agent.tokens.issue(identity),
            username=identity.username,
            groups=sorted(identity.groups),
        )

    def identity() -> Identity:
        found: Identity = g.identity
        return found

    @app.get("/packages.json")
    @app.get("/packages")
    @app.get("/list")
    @authenticated
    def packages() -> Response:
        if _flag("all_versions"):
            mode = "all"
        elif _flag("latest"):
            mode = "latest"
        else:
            mode = "default"
        body, etag = agent.package_json(identity(), query=request.args.get("q"), mode=mode)
        if etag in request.headers.get("If-None-Match", ""):
            return Response(status=304, headers={"ETag": etag})
        return Response(body, mimetype="application/json", headers={"ETag": etag})

    @app.get("/install.json")
    @authenticated
    def install() -> Response:
        who = identity()
        wanted = agent.may_act(who, "install", request.args.get("package", ""))
        task = agent.request_install(
            wanted, user=who.username, force=_flag("force"), notify_user=_flag("notify_user")
        )
        log.info("%s asked to install %s (task %s)", who.username, wanted, task.id)
        return jsonify(task.as_dict())

    @app.get("/remove.json")
    @authenticated
    def remove() -> Response:
        who = identity()
        wanted = agent.may_act(who, "remove", request.args.get("package", ""))
        task = agent.request_remove(wanted.name, user=who.username)
        log.info("%s asked to remove %s (task %s)", who.username, wanted.name, task.id)
        return jsonify([task.as_dict()])

    @app.get("/update.json")
    def update() -> Response:
        return jsonify(agent.request_update(force=_flag("force")).as_dict())

    @app.get("/upgrade.json")
    def upgrade() -> Response:
        if _flag("update"):
            agent.request_update()
        task = agent.request_upgrade(shutdown=_flag("shutdown"))
        return jsonify(result="OK", content=[task.as_dict()])

    @app.get("/checkupgrades.json")
    def checkupgrades() -> Response:
        return jsonify(agent.checkupgrades())

    @app.get("/status.json")
    def status() -> Response:
        return jsonify(agent.status_dicts())

    @app.get("/task.json")
    def task() -> Response:
        found = agent.queue.get(_int_arg("id", -1))
        return jsonify(found.as_dict() if found is not None else {})

    @app.get("/tasks_status.json")
    def tasks_status() -> Response:
        return jsonify(agent.queue.tasks_status(_int_arg("last_event_id", -1), _timeout_s()))

    @app.get("/tasks.json")
    def tasks() -> Response:
        return jsonify(agent.queue.wait_snapshot(_int_arg("last_event_id", -1), _timeout_s()))

    @app.get("/events.json")
    def events() -> Response:
        found = agent.queue.events(
            _int_arg("last_read", -1), _timeout_s(), _int_arg("max_count", 100)
        )
        return jsonify(found)

    def may_cancel(task_created_by: str | None) -> bool:
        who = identity()
        return agent.is_admin(who) or task_created_by == who.username

    @app.get("/cancel_task.json")
    @authenticated
    def cancel_task() -> Response:
        found = agent.queue.get(_int_arg("id", -1))
        if found is None:
            return jsonify(None)
        if not may_cancel(found.created_by):
            raise AgentRefusal(403, f"{identity().username} may not cancel task {found.id}")
        cancelled = agent.queue.cancel(found.id)
        return jsonify(cancelled.as_dict() if cancelled else None)

    @app.get("/cancel_running_task.json")
    @authenticated
    def cancel_running_task() -> Response:
        running = agent.queue.snapshot()["running"]
        if running is None:
            return jsonify(None)
        if not may_cancel(running.get("created_by")):
            raise AgentRefusal(403, f"{identity().username} may not cancel the running task")
        cancelled = agent.queue.cancel_running()
        return jsonify(cancelled.as_dict() if cancelled else None)

    @app.get("/cancel_all_tasks.json")
    @authenticated
    def cancel_all_tasks() -> Response:
        if not agent.is_admin(identity()):
            raise AgentRefusal(403, f"{identity().username} may not cancel every task")
        return jsonify([t.as_dict() for t in agent.queue.cancel_all()])

    return app


def serve(agent: Agent, *, threads: int = 16) -> None:
    """Serve the agent's API with waitress until interrupted."""
    from waitress import serve as waitress_serve

    config = agent.config
    limit_arenas()
    agent.start()
    try:
        waitress_serve(
            create_app(agent),
            host=config.listen_host,
            port=config.port,
            threads=threads,
            ident="comptoir-agent",
        )
    finally:
        agent.stop()
