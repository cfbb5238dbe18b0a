"""Server-side sessions: records kept in memory under random ids, and Flask's session interface.

The cookie holds only a record's id (`HttpOnly`, `SameSite=Lax`, `Secure` over HTTPS). The
record holds Flask's session data (flask-login's user id, the CSRF token, the language), who is
signed in — a teacher: the agent's answer to the login (a bridge `Session`, whose token never
leaves the server); or, on a site server, an admin: the directory's `Identity` — and the
user's caches. Records live in memory only: a restarted portal forgets every session, and no
token is ever written to disk.

A signed-in record ends after `idle_timeout` seconds without a request (passive requests, such
as the status box's poll, do not count: an install left running does not keep a shared machine
logged in), after `session_lifetime` seconds in all, at logout, or when the store is full (the
least recently used anonymous record goes first, then the least recently used one). An
anonymous record only ends with its lifetime, so a login form left open keeps its CSRF token.
Signing in and out start a new record under a new id (no session fixation).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Flask, Request, Response, request
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from agent_bridge.agent.auth import Identity
from agent_bridge.models import Session

__all__ = [
    "Clock",
    "Expiry",
    "ServerSession",
    "ServerSessionInterface",
    "SessionRecord",
    "SessionStore",
]

Clock = Callable[[], float]
Expiry = Literal["idle", "lifetime"]

#: Flask session keys a new record inherits when the previous one ends (sign-in, sign-out, expiry)
KEPT_ACROSS_SESSIONS = ("lang",)


@dataclass
class SessionRecord:
    """One session on the server. While someone is signed in, `agent_session` (a teacher)
    or `admin` (a site admin) is set, never both."""

    sid: str = field(repr=False)
    created: float
    last_seen: float
    data: dict[str, Any] = field(default_factory=dict)
    agent_session: Session | None = None
    admin: Identity | None = None
    #: the user's caches (catalog, last task states seen), for `portal.board`
    cache: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def signed_in(self) -> bool:
        return self.agent_session is not None or self.admin is not None


class SessionStore:
    """The records, keyed by id; thread-safe. `clock` is monotonic seconds (tests inject one)."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        lifetime: float,
        max_sessions: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self.clock = clock
        self._records: dict[str, SessionRecord] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _expiry(self, record: SessionRecord, now: float) -> Expiry | None:
        if now - record.created > self.lifetime:
            return "lifetime"
        if record.signed_in and now - record.last_seen > self.idle_timeout:
            return "idle"
        return None

    def create(
        self,
        data: dict[str, Any] | None = None,
        agent_session: Session | None = None,
        admin: Identity | None = None,
    ) -> SessionRecord:
        """A new record under a new random id, making room if the store is full."""
        now = self.clock()
        record = SessionRecord(
            sid=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
            data=dict(data or {}),
            agent_session=agent_session,
            admin=admin,
        )
        with self._lock:
            if len(self._records) >= self.max_sessions:
                self._make_room(now)
            self._records[record.sid] = record
        return record

    def _make_room(self, now: float) -> None:
        for sid, record in list(self._records.items()):
            if self._expiry(record, now) is not None:
                del self._records[sid]
        while len(self._records) >= self.max_sessions:
            oldest = min(
                self._records.values(), key=lambda r: (r.signed_in, r.last_seen), default=None
            )
            if oldest is None:
                return
            del self._records[oldest.sid]

    def get(self, sid: str) -> tuple[SessionRecord | None, Expiry | None]:
        """The live record for `sid`; or None, with why when it just ended (it is removed)."""
        now = self.clock()
        with self._lock:
            record = self._records.get(sid)
            if record is None:
                return None, None
            expiry = self._expiry(record, now)
            if expiry is not None:
                del self._records[sid]
                return record, expiry
            return record, None

    def touch(self, record: SessionRecord) -> None:
        """Note activity on `record` (the idle timeout starts again)."""
        record.last_seen = self.clock()

    def delete(self, sid: str) -> None:
        with self._lock:
            self._records.pop(sid, None)

    def find(self, predicate: Callable[[SessionRecord], bool]) -> list[SessionRecord]:
        """The live records for which `predicate` holds (tests, administration)."""
        with self._lock:
            return [r for r in self._records.values() if predicate(r)]


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """Flask's `session` for one request: a copy of the record's data, and what to do with it.

    `expired` says why the record the cookie named has just ended (idle or lifetime), for the
    login page's message. `begin` (a teacher), `begin_admin` and `end` sign a user in or out
    under a new id.
    """

    def __init__(
        self,
        record: SessionRecord | None,
        initial: dict[str, Any] | None = None,
        *,
        expired: Expiry | None = None,
    ) -> None:
        def on_update(self: ServerSession) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.record = record
        self.expired = expired
        self.agent_session = record.agent_session if record is not None else None
        self.admin = record.admin if record is not None else None
        self.modified = False
        self.renew = False
        self.passive = False

    def begin(self, agent_session: Session) -> None:
        """Sign `agent_session`'s user in: the data moves to a new record with a new id."""
        self.agent_session = agent_session
        self.admin = None
        self.renew = True
        self.modified = True

    def begin_admin(self, admin: Identity) -> None:
        """Sign the site admin `admin` in: the data moves to a new record with a new id."""
        self.admin = admin
        self.agent_session = None
        self.renew = True
        self.modified = True

    def end(self) -> None:
        """Sign out: everything but the language is dropped, under a new id."""
        kept = {key: self[key] for key in KEPT_ACROSS_SESSIONS if key in self}
        self.clear()
        self.update(kept)
        self.agent_session = None
        self.admin = None
        self.renew = True


class ServerSessionInterface(SessionInterface):
    """Flask's session interface over a `SessionStore`."""

    def __init__(self, store: SessionStore, *, cookie_name: str, secure: bool) -> None:
        self.store = store
        self.cookie_name = cookie_name
        self.secure = secure

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.cookie_name)
        if not sid:
            return ServerSession(None)
        record, expiry = self.store.get(sid)
        if record is None:
            return ServerSession(None)
        if expiry is not None:
            kept = {k: record.data[k] for k in KEPT_ACROSS_SESSIONS if k in record.data}
            session = ServerSession(None, kept, expired=expiry if record.signed_in else None)
            session.modified = bool(kept)
            return session
        return ServerSession(record, record.data)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        response.vary.add("Cookie")
        record = session.record
        signed_in = session.agent_session is not None or session.admin is not None
        if session.renew or (record is None and (session.modified or signed_in)):
            if record is not None:
                self.store.delete(record.sid)
            if not session and not signed_in:
                self._delete_cookie(app, response)
                return
            record = self.store.create(dict(session), session.agent_session, session.admin)
            self._set_cookie(app, response, record.sid)
            return
        if record is None:
            if self.cookie_name in request.cookies:
                self._delete_cookie(app, response)
            return
        if session.modified:
            with record.lock:
                record.data = dict(session)
        if not session.passive:
            self.store.touch(record)

    def _set_cookie(self, app: Flask, response: Response, sid: str) -> None:
        response.set_cookie(
            self.cookie_name,
            sid,
            httponly=True,
            samesite="Lax",
            secure=self.secure or request.is_secure,
            path=self.get_cookie_path(app),
        )

    def _delete_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name, path=self.get_cookie_path(app), httponly=True, samesite="Lax"
        )
