"""A replay of WAPT 1.8.2's agent: a real HTTP server on 127.0.0.1 answering the recorded files.

WAPT's agent is Python 2 and cannot run here, so the contract tests talk to this stand-in. It
implements the agent's real interface from the recording in
``fixtures/wapt-1.8.2/waptservice``: the table of `sequence.md` (step, URL, credentials,
status, answer file) is parsed into `RECORDING`, and every request is answered from it.

- **Matching.** A request matches a recorded call with the same path and the same query
  parameters (decoded), except `timeout`, whose value is free: the harness long-polled with
  ``timeout=2`` and clients send their own. Among the matching calls, the earliest not yet
  answered is played, so repeated calls replay the recording in order (`/task.json?id=2`
  answers step 8, then step 9); once all are played, the last one repeats.
- **Credentials**, checked as the agent's `check_auth` does: `/login` wants Basic
  ``admin:fixture-A-pass``; `/packages.json`, `/install.json` and `/remove.json` want Basic
  ``admin:<token>`` (the token of `03_login.json`) or the password; the other endpoints are
  local-only and ignore the header. A refusal is a 401 with the recorded body: step 6 when no
  credentials are sent, step 33 for a wrong password on `/login`, step 34 for a bad token.
  Refusals do not consume a step.
- **Peers.** Like WAPT's `allow_local`, a peer other than 127.0.0.1 gets a 403.
- Anything the recording does not hold is a 404 and is listed in `ReplayAgent.unmatched`, so a
  test can insist on an exact replay.

`ReplayAgent.served` logs every answer (step, file, the credentials kind received, the raw
query) for the tests to check what the client asked for.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from tests.conftest import WAPT_FIXTURES

RECORDING_DIR = WAPT_FIXTURES / "waptservice"
USERNAME = "admin"
PASSWORD = "fixture-A-pass"  # sequence.md: the local account of the recorded agent
TOKEN: str = json.loads((RECORDING_DIR / "03_login.json").read_text("utf-8"))["token"]

AuthKind = Literal["none", "password", "token", "wrong", "malformed"]
FREE_VALUE_PARAMS = frozenset({"timeout"})

# | 12 | GET | `/tasks_status.json?…` | `none` | 200 | `12_tasks_status_install_1.json` | note |
_ROW = re.compile(
    r"^\|\s*(?P<step>\d+)\s*\|\s*(?P<method>[A-Z]+)\s*\|\s*`(?P<url>[^`]+)`\s*\|"
    r"\s*`(?P<auth>[^`]+)`\s*\|\s*(?P<status>\d{3})\s*\|\s*`(?P<file>[^`]+)`\s*\|(?P<note>.*)\|\s*$"
)
_NOT_FOUND = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<title>404 Not Found</title>\n'
    b"<h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p>\n"
)


@dataclass(frozen=True)
class RecordedCall:
    """One row of sequence.md: what was asked, with which credentials, and what came back."""

    step: int
    path: str
    raw_query: str
    params: tuple[tuple[str, str], ...]
    credentials: str
    status: int
    file: str
    note: str

    @property
    def auth(self) -> AuthKind:
        """The credentials the harness sent, as a kind."""
        text = self.credentials
        if text == "none":
            return "none"
        if text.endswith("(password)"):
            return "password"
        if "<token from login>" in text:
            return "token"
        return "wrong"

    @property
    def body(self) -> bytes:
        return (RECORDING_DIR / self.file).read_bytes()

    def matches(self, path: str, params: dict[str, list[str]]) -> bool:
        """Same path, same parameter names, same values except for `FREE_VALUE_PARAMS`."""
        if path != self.path or set(params) != {name for name, _ in self.params}:
            return False
        return all(
            name in FREE_VALUE_PARAMS or params[name] == [value] for name, value in self.params
        )


def load_recording(directory: Path = RECORDING_DIR) -> tuple[RecordedCall, ...]:
    """Parse the calls table of `directory/sequence.md`, in step order."""
    calls = []
    for line in (directory / "sequence.md").read_text("utf-8").splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        url = urlsplit(row["url"])
        params = tuple(
            (name, value)
            for name, values in parse_qs(url.query, keep_blank_values=True).items()
            for value in values
        )
        calls.append(
            RecordedCall(
                step=int(row["step"]),
                path=url.path,
                raw_query=url.query,
                params=params,
                credentials=row["auth"],
                status=int(row["status"]),
                file=row["file"],
                note=row["note"].strip(),
            )
        )
    return tuple(sorted(calls, key=lambda call: call.step))


RECORDING = load_recording()
ANSWERS = tuple(call for call in RECORDING if call.status == 200)
_REFUSALS = [call for call in RECORDING if call.status == 401]
NO_CREDENTIALS = next(c for c in _REFUSALS if c.auth == "none")
BAD_PASSWORD = next(c for c in _REFUSALS if c.auth == "wrong" and c.path == "/login")
BAD_TOKEN = next(c for c in _REFUSALS if c.auth == "wrong" and c.path != "/login")
REQUIRED_AUTH: dict[str, AuthKind] = {
    call.path: call.auth for call in ANSWERS if call.auth in ("password", "token")
}


def credentials_kind(header: str | None) -> AuthKind:
    """What an `Authorization` header holds, measured against the recorded account."""
    if header is None:
        return "none"
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "malformed"
    try:
        username, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "malformed"
    if not sep or username != USERNAME:
        return "malformed"
    if secret == PASSWORD:
        return "password"
    return "token" if secret == TOKEN else "wrong"


@dataclass(frozen=True)
class Served:
    """One answer the replay gave."""

    path: str
    raw_query: str
    auth: AuthKind
    status: int
    step: int | None
    file: str | None


@dataclass
class ReplayAgent:
    """The running replay: its URL and what it has answered so far."""

    url: str
    answers: tuple[RecordedCall, ...]
    served: list[Served] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    _played: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def files(self) -> list[str | None]:
        """The recorded files served, in order."""
        with self._lock:
            return [s.file for s in self.served]

    def choose(self, path: str, params: dict[str, list[str]]) -> RecordedCall | None:
        """The earliest matching call not played yet, else the last matching one."""
        matching = [call for call in self.answers if call.matches(path, params)]
        if not matching:
            return None
        with self._lock:
            return next((c for c in matching if c.step not in self._played), matching[-1])

    def note_unmatched(self, target: str) -> None:
        with self._lock:
            self.unmatched.append(target)

    def record(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)
            if served.step is not None and served.status == 200:
                self._played.add(served.step)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _ReplayServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        agent = self.server.agent
        url = urlsplit(self.path)
        auth = credentials_kind(self.headers.get("Authorization"))

        def log(status: int, call: RecordedCall | None) -> None:
            agent.record(
                Served(
                    url.path,
                    url.query,
                    auth,
                    status,
                    call.step if call else None,
                    call.file if call else None,
                )
            )

        if self.client_address[0] != "127.0.0.1":  # WAPT's allow_local
            log(403, None)
            self._send(403, b"Forbidden", "text/html; charset=utf-8")
            return
        call = agent.choose(url.path, parse_qs(url.query, keep_blank_values=True))
        if call is None:
            agent.note_unmatched(self.path)
            log(404, None)
            self._send(404, _NOT_FOUND, "text/html; charset=utf-8")
            return
        refusal = self._refusal(call.path, auth)
        if refusal is not None:
            log(401, refusal)
            self._send(
                401,
                refusal.body,
                "text/html; charset=utf-8",
                WWW_Authenticate='Basic realm="Login Required"',
            )
            return
        log(call.status, call)
        self._send(call.status, call.body, "application/json")

    @staticmethod
    def _refusal(path: str, auth: AuthKind) -> RecordedCall | None:
        required = REQUIRED_AUTH.get(path)
        if required is None:
            return None
        if auth in ("none", "malformed"):  # werkzeug reads no credentials at all
            return NO_CREDENTIALS
        if required == "password":
            return None if auth == "password" else BAD_PASSWORD
        return None if auth in ("token", "password") else BAD_TOKEN


class _ReplayServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    agent: ReplayAgent


@contextmanager
def replay_agent(steps: Iterable[int] | None = None) -> Iterator[ReplayAgent]:
    """Serve the recording on 127.0.0.1 on a free port; yield the running `ReplayAgent`.

    `steps` limits the answers to those recorded calls (all of them by default); refusals
    (steps 6, 33, 34) are always available.
    """
    chosen = set(steps) if steps is not None else None
    answers = tuple(c for c in ANSWERS if chosen is None or c.step in chosen)
    if chosen is not None and len(answers) != len(chosen):
        raise ValueError(f"steps {sorted(chosen)}: not all are recorded 200 answers")
    server = _ReplayServer(("127.0.0.1", 0), _Handler)
    server.agent = ReplayAgent(url=f"http://127.0.0.1:{server.server_address[1]}", answers=answers)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="wapt-replay", daemon=True
    )
    thread.start()
    try:
        yield server.agent
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
