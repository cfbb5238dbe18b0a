"""Behaviour of `AgentClient` against small real HTTP servers on loopback.

Agents that are down, start late, hang, answer garbage or refuse; URL encoding; credentials;
calls from many threads. Every server here is a real socket on 127.0.0.1.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from agent_bridge.client import DEFAULT_URL, AgentClient
from agent_bridge.errors import (
    AgentError,
    AgentUnavailableError,
    AuthenticationError,
    BridgeError,
    NotAllowedError,
    ProtocolError,
    TaskTimeoutError,
    UnknownPackageError,
    UnknownTaskError,
)
from agent_bridge.models import Session

LOOPBACK = "127.0.0.1"
TOKEN = "eyJhbGciOiJIUzUxMiJ9.secret-token-value"
PASSWORD = "pässword-123"


# --- a small agent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A request the fake agent received."""

    path: str
    raw_query: str
    params: dict[str, list[str]]
    authorization: str | None


Answer = tuple[int, bytes, str]
Route = Callable[[Seen], Answer]


def json_answer(data: Any, status: int = 200) -> Route:
    body = json.dumps(data).encode()
    return lambda _seen: (status, body, "application/json")


def text_answer(text: str, status: int, content_type: str = "text/html; charset=utf-8") -> Route:
    return lambda _seen: (status, text.encode(), content_type)


def task_dict(task_id: int = 1, **changes: Any) -> dict[str, Any]:
    """A task dict with WAPT 1.8.2's exact keys."""
    task: dict[str, Any] = {
        "id": task_id,
        "classname": "WaptPackageInstall",
        "priority": 100,
        "order": task_id,
        "force": False,
        "create_date": "2026-11-21T05:11:05.527977",
        "start_date": None,
        "finish_date": None,
        "logs": "",
        "result": "null",
        "summary": "",
        "progress": 0.0,
        "runstatus": "",
        "description": f"Installation of acme-hello (task #{task_id})",
        "pidlist": "[]",
        "notify_user": False,
        "notify_server_on_start": True,
        "notify_server_on_finish": True,
        "created_by": None,
    }
    task.update(changes)
    return task


def package_dict(**changes: Any) -> dict[str, Any]:
    package: dict[str, Any] = {
        "package": "acme-hello",
        "version": "1.2.0-3",
        "architecture": "all",
        "section": "base",
        "maturity": "PROD",
        "locale": "fr",
        "description": "Acme Hello",
        "install_status": None,
        "install_version": None,
        "editor": "served-as-editor",
        "audit_schedule": "served-as-audit_schedule",
    }
    package.update(changes)
    return package


@dataclass
class FakeAgent:
    url: str
    routes: dict[str, Route]
    seen: list[Seen] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        agent = self.server.agent
        url = urlsplit(self.path)
        seen = Seen(url.path, url.query, parse_qs(url.query), self.headers.get("Authorization"))
        with agent.lock:
            agent.seen.append(seen)
            agent.active += 1
            agent.max_active = max(agent.max_active, agent.active)
        try:
            route = agent.routes.get(url.path)
            status, body, content_type = (
                route(seen) if route else (404, b"<h1>Not Found</h1>", "text/html")
            )
        finally:
            with agent.lock:
                agent.active -= 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    agent: FakeAgent


def _start(server: _Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


@contextmanager
def fake_agent(routes: dict[str, Route], *, start_after: float = 0.0) -> Iterator[FakeAgent]:
    """A real HTTP server on 127.0.0.1; with `start_after`, it listens only after that delay.

    Until it listens, its port is bound but refuses connections, like an agent starting up.
    """
    server = _Server((LOOPBACK, 0), _Handler, bind_and_activate=False)
    server.server_bind()
    server.agent = FakeAgent(url=f"http://{LOOPBACK}:{server.server_address[1]}", routes=routes)
    threads: list[threading.Thread] = []

    def activate() -> None:
        time.sleep(start_after)
        server.server_activate()
        threads.append(_start(server))

    if start_after:
        starter = threading.Thread(target=activate, daemon=True)
        starter.start()
    else:
        activate()
    try:
        yield server.agent
    finally:
        if start_after:
            starter.join(5)
        if threads:
            server.shutdown()
            threads[0].join(5)
        server.server_close()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


@contextmanager
def raw_server(behaviour: Callable[[socket.socket], None] | None) -> Iterator[str]:
    """A listening socket; each accepted connection gets `behaviour` (None: never accepted)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(8)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(connection)
            if behaviour is not None:
                behaviour(connection)

    thread = threading.Thread(target=serve, daemon=True)
    if behaviour is not None:
        thread.start()
    try:
        yield f"http://{LOOPBACK}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        if behaviour is not None:
            thread.join(5)
        for connection in connections:
            connection.close()
        listener.close()


def client_for(url: str, **options: Any) -> AgentClient:
    options.setdefault("timeout", 2.0)
    options.setdefault("connect_retries", 0.5)
    return AgentClient(url, **options)


SESSION = Session(username="teacher", token=TOKEN, groups=("profs",))


# --- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8088",
        "http://192.0.2.10:8088",
        "http://agent.example:8088",
        "ftp://127.0.0.1",
        "http://user:pw@127.0.0.1:8088",
        "http://127.0.0.1:8088/?x=1",
        "http://127.0.0.1:notaport",
    ],
)
def test_only_plain_http_to_loopback_is_accepted(url: str) -> None:
    with pytest.raises(ValueError, match=r"loopback|http|port|user info"):
        AgentClient(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8088", "http://localhost:1", "http://[::1]:8088", "http://127.1.2.3"]
)
def test_loopback_urls_are_accepted_without_any_io(url: str) -> None:
    client = AgentClient(url)
    assert client.base_url == url
    assert url in repr(client)


@pytest.mark.parametrize(("option", "value"), [("timeout", 0), ("connect_retries", -1)])
def test_bad_timeouts_are_refused(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        options: dict[str, Any] = {option: value}
        AgentClient(DEFAULT_URL, **options)


# --- an agent that is down, late, or hangs ---------------------------------------------------


def test_an_agent_that_is_not_running_is_unavailable_after_the_retry_budget(
    refusing_port: int,
) -> None:
    client = client_for(f"http://{LOOPBACK}:{refusing_port}", connect_retries=0.5)
    started = time.monotonic()
    with pytest.raises(AgentUnavailableError) as caught:
        client.ping()
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0
    assert caught.value.url == f"http://{LOOPBACK}:{refusing_port}/ping"
    assert caught.value.url in str(caught.value)
    assert "refused" in caught.value.reason
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_without_a_retry_budget_a_refusal_fails_at_once(refusing_port: int) -> None:
    client = client_for(f"http://{LOOPBACK}:{refusing_port}", connect_retries=0)
    started = time.monotonic()
    with pytest.raises(AgentUnavailableError, match="1 attempt"):
        client.status()
    assert time.monotonic() - started < 0.3


def test_an_agent_that_starts_late_is_waited_for() -> None:
    with fake_agent({"/ping": json_answer({"version": "1.8.2"})}, start_after=0.3) as agent:
        client = client_for(agent.url, connect_retries=5.0)
        started = time.monotonic()
        assert client.ping() == {"version": "1.8.2"}
        assert time.monotonic() - started >= 0.25
        assert len(agent.seen) == 1


def test_an_agent_that_never_answers_times_out() -> None:
    with raw_server(None) as url:  # connections wait in the backlog, nobody reads them
        client = client_for(url, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(AgentUnavailableError, match=r"no answer within 0\.3 s") as caught:
            client.checkupgrades()
        assert time.monotonic() - started < 2.0
        assert caught.value.url == f"{url}/checkupgrades.json"


def test_a_long_poll_gets_its_length_added_to_the_timeout() -> None:
    def slow(seen: Seen) -> Answer:
        time.sleep(0.4)
        return 200, json.dumps({"last_event_id": 3}).encode(), "application/json"

    with fake_agent({"/tasks_status.json": slow}) as agent:
        client = client_for(agent.url, timeout=0.2)
        status = client.tasks_status(2, timeout_ms=400)
        assert (status.last_event_id, status.tasks) == (3, None)
        with pytest.raises(AgentUnavailableError, match="no answer"):
            client.tasks_status(2, timeout_ms=0)


def test_an_agent_that_closes_without_answering_is_unavailable() -> None:
    def hang_up(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.close()

    with raw_server(hang_up) as url, pytest.raises(AgentUnavailableError, match="connection lost"):
        client_for(url).ping()


def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    def babble(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(b"HELLO THERE\r\n\r\n")
        connection.close()

    with raw_server(babble) as url:
        with pytest.raises(ProtocolError, match="not an HTTP answer") as caught:
            client_for(url).ping()
        assert caught.value.endpoint == "/ping"


# --- malformed answers ------------------------------------------------------------------------

VERSION_2 = {"/ping": json_answer({"version": "2.0.1"})}
TASK_BAD_RESULT = task_dict(result="{not json")
TASK_BAD_PROGRESS = task_dict(progress="50")
TASK_NO_FORCE = {k: v for k, v in task_dict().items() if k != "force"}


@pytest.mark.parametrize(
    ("endpoint", "route", "call", "problem"),
    [
        ("/ping", text_answer("not json{", 200, "application/json"), "ping", "not JSON"),
        (
            "/ping",
            text_answer("<!DOCTYPE html><h1>Welcome</h1>", 200),
            "ping",
            "not JSON (text/html",
        ),
        ("/ping", json_answer([]), "ping", "expected an object"),
        ("/ping", json_answer({"version": 3}), "ping", "'version'"),
        ("/login", json_answer({"username": "u", "groups": []}), "login", "'token' is missing"),
        ("/login", json_answer({"username": "u", "token": "t", "groups": "g"}), "login", "groups"),
        ("/packages.json", json_answer({"packages": []}), "packages", "expected an array"),
        ("/packages.json", json_answer([{"package": "x"}]), "packages", "'version' is missing"),
        ("/packages.json", json_answer([7]), "packages", "expected an object, got an integer"),
        (
            "/packages.json",
            json_answer([package_dict(size="big")]),
            "packages",
            "expected a byte count",
        ),
        ("/status.json", json_answer([{"package": "x", "version": "1"}]), "status", "install"),
        ("/task.json", json_answer(TASK_BAD_RESULT), "task", "result is not a JSON text"),
        ("/task.json", json_answer(TASK_BAD_PROGRESS), "task", "'progress' is a string"),
        ("/task.json", json_answer(TASK_NO_FORCE), "task", "'force' is missing"),
        ("/task.json", json_answer("task"), "task", "expected an object"),
        ("/tasks_status.json", json_answer({"tasks": []}), "tasks_status", "last_event_id"),
        (
            "/tasks_status.json",
            json_answer({"last_event_id": 1, "tasks": {}}),
            "tasks_status",
            "expected an array",
        ),
        ("/tasks.json", json_answer({"running": None}), "tasks", "'pending' is missing"),
        ("/checkupgrades.json", json_answer({"upgrades": []}), "checkupgrades", "pending"),
        ("/remove.json", json_answer(task_dict()), "remove", "expected an array"),
        ("/install.json", json_answer([task_dict()]), "install", "expected an object"),
        ("/upgrade.json", json_answer([task_dict()]), "upgrade", "'content'"),
        ("/cancel_all_tasks.json", json_answer(None), "cancel_all_tasks", "expected an array"),
    ],
)
def test_malformed_answers_are_protocol_errors_naming_the_endpoint(
    endpoint: str, route: Route, call: str, problem: str
) -> None:
    with fake_agent({**VERSION_2, endpoint: route}) as agent:
        client = client_for(agent.url)
        calls: dict[str, Callable[[], object]] = {
            "ping": client.ping,
            "login": lambda: client.login("teacher", PASSWORD),
            "packages": lambda: client.packages(SESSION),
            "status": client.status,
            "task": lambda: client.task(1),
            "tasks_status": client.tasks_status,
            "tasks": client.tasks,
            "checkupgrades": client.checkupgrades,
            "remove": lambda: client.remove(SESSION, "acme-hello"),
            "install": lambda: client.install(SESSION, "acme-hello"),
            "upgrade": client.upgrade,
            "cancel_all_tasks": client.cancel_all_tasks,
        }
        with pytest.raises(ProtocolError) as caught:
            calls[call]()
        assert caught.value.endpoint == endpoint
        assert str(caught.value).startswith(f"{endpoint}: malformed answer: ")
        assert problem in caught.value.problem


def test_an_oversized_answer_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent_bridge.client.MAX_ANSWER_BYTES", 1000)
    routes = {"/status.json": json_answer(["x" * 2000]), **VERSION_2}
    with fake_agent(routes) as agent, pytest.raises(ProtocolError, match="larger than 1000"):
        client_for(agent.url).status()


# --- refusals and failures --------------------------------------------------------------------


def test_403_is_not_allowed_naming_the_package() -> None:
    routes = {"/install.json": text_answer("NOT_ALLOWED", 403, "text/plain")}
    with fake_agent(routes) as agent, pytest.raises(NotAllowedError) as caught:
        client_for(agent.url).install(SESSION, "acme-secret")
    assert caught.value.package == "acme-secret"
    assert caught.value.agent_message == "NOT_ALLOWED"
    assert "'acme-secret'" in str(caught.value)
    assert str(caught.value).startswith("/install.json: ")


def test_403_on_remove_names_the_package() -> None:
    routes = {"/remove.json": text_answer("Forbidden", 403)}
    with fake_agent(routes) as agent, pytest.raises(NotAllowedError, match="'acme-app' not all"):
        client_for(agent.url).remove(SESSION, "acme-app")


def test_404_on_a_package_call_is_an_unknown_package() -> None:
    routes = {"/install.json": json_answer({"error": "no such package"}, status=404)}
    with fake_agent(routes) as agent, pytest.raises(UnknownPackageError) as caught:
        client_for(agent.url).install(SESSION, "acme-nothing")
    assert caught.value.package == "acme-nothing"
    assert "acme-nothing" in str(caught.value)


def test_404_of_a_missing_endpoint_is_an_agent_error() -> None:
    with fake_agent({}) as agent, pytest.raises(AgentError) as caught:
        client_for(agent.url).ping()
    assert caught.value.status == 404
    assert not isinstance(caught.value, UnknownPackageError)


def test_500_is_an_agent_error_with_the_status_and_an_excerpt() -> None:
    page = "<html><title>500 Internal Server Error</title>" + "x" * 1000 + "</html>"
    routes = {"/update.json": text_answer(page, 500)}
    with fake_agent(routes) as agent, pytest.raises(AgentError) as caught:
        client_for(agent.url).update()
    assert caught.value.status == 500
    assert "500 Internal Server Error" in caught.value.body
    assert len(caught.value.body) <= 200
    assert str(caught.value).startswith("/update.json: agent answered HTTP 500")


def test_401_is_an_authentication_error_with_the_agents_message() -> None:
    routes = {"/packages.json": text_answer("token expired", 401), **VERSION_2}
    with fake_agent(routes) as agent, pytest.raises(AuthenticationError) as caught:
        client_for(agent.url).packages(SESSION)
    assert caught.value.agent_message == "token expired"
    assert TOKEN not in str(caught.value)


def test_a_username_basic_auth_cannot_carry_is_refused_before_sending() -> None:
    with fake_agent({"/login": json_answer({})}) as agent:
        with pytest.raises(AuthenticationError, match="contains ':'"):
            client_for(agent.url).login("evil:name", PASSWORD)
        assert agent.seen == []


def test_every_error_is_a_bridge_error() -> None:
    for error in (
        AgentError,
        AgentUnavailableError,
        AuthenticationError,
        NotAllowedError,
        ProtocolError,
        TaskTimeoutError,
        UnknownPackageError,
        UnknownTaskError,
    ):
        assert issubclass(error, BridgeError)


# --- what the client sends --------------------------------------------------------------------


def _task_for(seen: Seen) -> Answer:
    task_id = int(seen.params.get("id", ["1"])[0])
    return 200, json.dumps(task_dict(task_id)).encode(), "application/json"


def test_queries_are_url_encoded() -> None:
    routes = {
        **VERSION_2,
        "/install.json": json_answer(task_dict(14)),
        "/packages.json": json_answer([]),
        "/task.json": _task_for,
        "/tasks_status.json": json_answer({"last_event_id": 5}),
        "/upgrade.json": json_answer({"result": "OK", "content": []}),
    }
    with fake_agent(routes) as agent:
        client = client_for(agent.url)
        client.install(SESSION, "acme-hello(=1.0.0-1)")
        client.install(SESSION, "tis-7zip", force=True)
        client.packages(SESSION, query="café & co=1")
        client.packages(SESSION, latest=False)
        client.task(3)
        client.tasks_status(5, timeout_ms=100)
        client.upgrade(only_priorities=["critical", "high"])
    queries = [(s.path, s.raw_query) for s in agent.seen if s.path != "/ping"]
    assert queries == [
        ("/install.json", "package=acme-hello%28%3D1.0.0-1%29"),
        ("/install.json", "package=tis-7zip&force=1"),
        ("/packages.json", "q=caf%C3%A9%20%26%20co%3D1&latest=1"),
        ("/packages.json", ""),
        ("/task.json", "id=3"),
        ("/tasks_status.json", "last_event_id=5&timeout=100"),
        ("/upgrade.json", "only_priorities=critical%2Chigh"),
    ]
    assert agent.seen[3].params == {"q": ["café & co=1"], "latest": ["1"]}


def _basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


def test_credentials_go_only_where_the_api_wants_them() -> None:
    login = {"username": "teacher", "token": TOKEN, "groups": ["profs"]}
    routes = {
        **VERSION_2,
        "/login": json_answer(login),
        "/packages.json": json_answer([]),
        "/install.json": json_answer(task_dict()),
        "/remove.json": json_answer([task_dict(classname="WaptPackageRemove")]),
        "/task.json": _task_for,
        "/update.json": json_answer(task_dict(classname="WaptUpdate")),
    }
    with fake_agent(routes) as agent:
        client = client_for(agent.url)
        session = client.login("teacher", PASSWORD)
        client.packages(session)
        client.install(session, "acme-hello")
        client.install(None, "acme-hello")
        client.remove(session, "acme-hello")
        client.task(1)
        client.update()
    sent = {(s.path, s.authorization) for s in agent.seen}
    assert sent == {
        ("/ping", None),
        ("/login", _basic("teacher", PASSWORD)),
        ("/packages.json", _basic("teacher", TOKEN)),
        ("/install.json", _basic("teacher", TOKEN)),
        ("/install.json", None),
        ("/remove.json", _basic("teacher", TOKEN)),
        ("/task.json", None),
        ("/update.json", None),
    }


def test_secrets_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    login = {"username": "teacher", "token": TOKEN, "groups": ["profs"]}
    routes = {**VERSION_2, "/login": json_answer(login), "/packages.json": json_answer([])}
    with fake_agent(routes) as agent, caplog.at_level(logging.DEBUG, logger="agent_bridge"):
        client = client_for(agent.url)
        session = client.login("teacher", PASSWORD)
        client.packages(session)
    assert "GET /login" in caplog.text and "GET /packages.json" in caplog.text
    assert PASSWORD not in caplog.text and TOKEN not in caplog.text
    assert base64.b64encode(f"teacher:{TOKEN}".encode()).decode() not in caplog.text
    assert TOKEN not in repr(session) and TOKEN not in str(session)


# --- answers of every shape -------------------------------------------------------------------


def test_null_and_empty_answers() -> None:
    routes = {
        "/task.json": json_answer({}),
        "/tasks.json": json_answer(None),
        "/tasks_status.json": json_answer(None),
        "/checkupgrades.json": json_answer(None),
        "/cancel_task.json": json_answer(None),
        "/cancel_running_task.json": json_answer(None),
        "/cancel_all_tasks.json": json_answer([]),
    }
    with fake_agent(routes) as agent:
        client = client_for(agent.url)
        assert client.task(99) is None
        assert client.tasks(4) is None
        status = client.tasks_status(4)
        assert (status.last_event_id, status.tasks) == (4, None)
        assert client.checkupgrades() is None
        assert client.cancel_task(99) is None
        assert client.cancel_running_task() is None
        assert client.cancel_all_tasks() == []


def test_cancelled_and_upgrade_tasks() -> None:
    running = task_dict(7, start_date="2026-11-21T05:11:10", summary="Canceled")
    routes = {
        "/cancel_task.json": json_answer(task_dict(9)),
        "/cancel_running_task.json": json_answer(running),
        "/upgrade.json": json_answer(
            {
                "result": "OK",
                "content": [
                    task_dict(20, classname="WaptUpdate", description="Updating"),
                    task_dict(21, classname="WaptUpgrade", description="Upgrade"),
                ],
            }
        ),
    }
    with fake_agent(routes) as agent:
        client = client_for(agent.url)
        cancelled = client.cancel_task(9)
        assert cancelled is not None and cancelled.state == "cancelled" and cancelled.is_finished
        stopped = client.cancel_running_task()
        assert stopped is not None and stopped.state == "cancelled"
        assert [(t.id, t.classname, t.state) for t in client.upgrade()] == [
            (20, "WaptUpdate", "pending"),
            (21, "WaptUpgrade", "pending"),
        ]


@pytest.mark.parametrize(("version", "shifted"), [("1.8.2", True), ("2.0.1", False)])
def test_columns_are_unshifted_only_for_wapt_1_8_2(version: str, shifted: bool) -> None:
    status_row = {"package": "acme-hello", "version": "1", "install_status": "OK"}
    routes = {
        "/ping": json_answer({"version": version}),
        "/packages.json": json_answer([package_dict()]),
        "/status.json": json_answer([{**status_row, "editor": "served-as-editor"}]),
    }
    with fake_agent(routes) as agent:
        client = client_for(agent.url)
        (package,) = client.packages(SESSION)
        (installed,) = client.status()
        assert client.version() == version
        assert sum(s.path == "/ping" for s in agent.seen) == 1  # the version is cached
    if shifted:
        assert package.editor == "served-as-audit_schedule"
        assert package.keywords == "served-as-editor"
        assert installed.keywords == "served-as-editor" and installed.editor == ""
    else:
        assert package.editor == "served-as-editor"
        assert package.audit_schedule == "served-as-audit_schedule"
        assert installed.editor == "served-as-editor"


@pytest.mark.parametrize(
    ("status", "installed", "state"),
    [
        (None, None, "available"),
        ("OK", "1.2.0-3", "installed"),
        ("OK", "1.2-3", "update-available"),  # 1.2-3 < 1.2.0-3: a missing member is lower
        ("OK", "1.10.0-1", "installed"),
        ("ERROR", "1.2.0-3", "failed"),
        ("RUNNING", "1.0.0-1", "update-available"),
    ],
)
def test_package_state(status: str | None, installed: str | None, state: str) -> None:
    routes = {
        **VERSION_2,
        "/packages.json": json_answer(
            [package_dict(install_status=status, install_version=installed)]
        ),
    }
    with fake_agent(routes) as agent:
        (package,) = client_for(agent.url).packages(SESSION)
    assert package.state == state


# --- waiting for a task -----------------------------------------------------------------------


def test_wait_for_task_times_out() -> None:
    calls: list[str] = []

    def unchanged(seen: Seen) -> Answer:
        calls.append(seen.raw_query)
        event = int(seen.params["last_event_id"][0])
        if event == -1:
            body = {"last_event_id": 10, "tasks": [task_dict(3, start_date="2026-11-21")]}
        else:
            time.sleep(int(seen.params["timeout"][0]) / 1000)
            body = {"last_event_id": 10}
        return 200, json.dumps(body).encode(), "application/json"

    with fake_agent({"/tasks_status.json": unchanged}) as agent:
        client = client_for(agent.url)
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError) as caught:
            client.wait_for_task(3, timeout=0.6, poll_ms=200)
        elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 2.0
    assert caught.value.last_state == "running"
    assert "task #3" in str(caught.value)
    assert calls[0] == "last_event_id=-1&timeout=200"
    assert all(q.startswith("last_event_id=10&") for q in calls[1:])


def test_wait_for_task_of_an_unknown_task() -> None:
    routes = {"/tasks_status.json": json_answer({"last_event_id": 1, "tasks": [task_dict(1)]})}
    with fake_agent(routes) as agent, pytest.raises(UnknownTaskError, match="task #42"):
        client_for(agent.url).wait_for_task(42, timeout=1)


def test_wait_for_task_sees_a_cancelled_task() -> None:
    listing = {
        "last_event_id": 8,
        "tasks": [
            task_dict(1, start_date="d", finish_date="d", progress=100.0),
            task_dict(5, start_date="d", finish_date="d", summary="Canceled"),
            task_dict(4),
            task_dict(5, start_date="d", finish_date="d", summary="Canceled"),
        ],
    }
    with fake_agent({"/tasks_status.json": json_answer(listing)}) as agent:
        client = client_for(agent.url)
        cancelled_pending = client.wait_for_task(4, timeout=1)
        cancelled_running = client.wait_for_task(5, timeout=1)
    assert (cancelled_pending.state, cancelled_pending.listed_as) == ("cancelled", "cancelled")
    assert cancelled_running.state == "cancelled"


# --- threads -----------------------------------------------------------------------------------


def test_concurrent_calls_from_8_threads() -> None:
    def slow_task(seen: Seen) -> Answer:
        time.sleep(0.01)
        return _task_for(seen)

    with fake_agent({"/task.json": slow_task}) as agent:
        client = client_for(agent.url)
        errors: list[BaseException] = []
        results: dict[int, list[int]] = {}
        barrier = threading.Barrier(8)

        def worker(index: int) -> None:
            try:
                barrier.wait(5)
                ids = [index * 100 + n for n in range(15)]
                got = [client.task(task_id) for task_id in ids]
                results[index] = [t.id for t in got if t is not None]
                assert results[index] == ids
            except BaseException as e:  # collected for the main thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert sorted(results) == list(range(8))
    assert len(agent.seen) == 8 * 15
    assert agent.max_active > 1  # calls really overlapped: no lock serializes them


def test_a_long_poll_does_not_block_other_threads() -> None:
    def long_poll(seen: Seen) -> Answer:
        time.sleep(1.0)
        return 200, b'{"last_event_id": 1}', "application/json"

    routes = {"/tasks_status.json": long_poll, "/ping": json_answer({"version": "1.8.2"})}
    with fake_agent(routes) as agent:
        client = client_for(agent.url)
        poller = threading.Thread(target=lambda: client.tasks_status(0, timeout_ms=1000))
        poller.start()
        time.sleep(0.1)
        started = time.monotonic()
        for _ in range(5):
            client.ping()
        assert time.monotonic() - started < 0.5
        poller.join(5)


def test_tasks_status_takes_the_list_comptoirs_agent_names() -> None:
    """A task cancelled while it ran is finished like a failure; WAPT lists it twice, Comptoir's
    agent once, naming its list: the bridge takes the name, and guesses only without it."""
    from agent_bridge.models import TASK_LIST_KEY, TasksStatus

    times = {"start_date": "2026-11-21T10:00:01", "finish_date": "2026-11-21T10:00:02"}
    done = task_dict(1, progress=100.0, **times)
    cancelled = task_dict(2, progress=40.0, **times)
    named = TasksStatus.from_json(
        {
            "last_event_id": 5,
            "tasks": [{**done, TASK_LIST_KEY: "done"}, {**cancelled, TASK_LIST_KEY: "cancelled"}],
        },
        endpoint="/tasks_status.json",
    )
    assert [t.state for t in named.tasks or ()] == ["done", "cancelled"]
    guessed = TasksStatus.from_json(
        {"last_event_id": 5, "tasks": [done, cancelled]}, endpoint="/tasks_status.json"
    )
    assert [t.state for t in guessed.tasks or ()] == ["done", "error"]
