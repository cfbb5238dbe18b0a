"""The site server's API for agents: host registration and signed reports, as JSON.

- `POST /api/v1/hosts/register`: a host pins its Ed25519 key, with the proof that it knows the
  site's enrolment secret (`agent_bridge.reports.read_registration`). 201 for a new host (or a
  new key after an admin reset), 200 when it was already registered with that key.
- `POST /api/v1/hosts/<uuid>/report`: a report signed by that host's pinned key
  (`portal.site.hosts.HostStore.ingest`). The teachers' and shutdown actions it carries go to
  the audit log, each once.

Any other method on these URLs answers a JSON 405 with `Allow`, any other URL under `/api/v1`
a JSON 404 (`not-found`), never the login page: the clients are programs.

No cookie, no session, no CSRF token: every request is authenticated by its signature (this
blueprint guards itself, `security.guarded_by_blueprint`). Bodies are capped. A refusal answers
`{"error": <reason>, "message": ...}` with a 4xx status and is audited (role `host`, from the
remote address); successful reports are not (120,000 a day at 5,000 hosts), registrations are.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final, cast

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

from agent_bridge.reports import (
    MAX_REGISTRATION_BYTES,
    MAX_REPORT_BYTES,
    ReportError,
    enrolment_secret,
    read_registration,
)
from portal import security
from portal.site.audit import AuditEvent, AuditLog, Outcome
from portal.site.hosts import HostRefused, HostStore, host_audit_events, make_host_store
from portal.site.settings import SiteSettings
from wapt.fsutil import load_or_create_secret

__all__ = ["bp", "host_store", "init_app"]

log = logging.getLogger("comptoir.api")

API_PREFIX: Final = "/api/v1"
bp = Blueprint("api", __name__, url_prefix=API_PREFIX)


def host_store() -> HostStore:
    """The host store of the app serving the request."""
    return cast(HostStore, current_app.extensions["comptoir.hosts"])


def _audit(action: str, who: str, *, outcome: Outcome = "ok", details: str = "") -> None:
    audit_log: AuditLog = current_app.extensions["comptoir.audit"]
    audit_log.record(
        AuditEvent.clipped(
            when=datetime.now(UTC),
            who=who or "?",
            role="host",
            action=action,
            target=who,
            where=request.remote_addr or "",
            outcome=outcome,
            details=details,
        )
    )


def _refuse(action: str, who: str, error: HostRefused) -> Response:
    log.warning("%s refused for %r from %s: %s", action, who, request.remote_addr, error)
    _audit(action, who, outcome="refused", details=f"{error.reason}: {error}")
    body: dict[str, Any] = {"error": error.reason, "message": str(error)}
    if error.last_seq is not None:
        body["last_seq"] = error.last_seq
    answer = jsonify(body)
    answer.status_code = error.status
    return answer


def _body(limit: int) -> bytes:
    request.max_content_length = limit
    return request.get_data(cache=False)


@bp.post("/hosts/register")
def register() -> Response:
    """Pin a host's key (see the module's docstring)."""
    try:
        registration = read_registration(_body(MAX_REGISTRATION_BYTES))
    except ReportError as e:
        return _refuse("host.register", "", HostRefused("malformed", 400, str(e)))
    who = registration.host_uuid
    secret = current_app.extensions["comptoir.enrolment_secret"]
    if not registration.proof_matches(secret):
        return _refuse(
            "host.register",
            who,
            HostRefused("bad-proof", 403, "the enrolment proof does not match the site's secret"),
        )
    try:
        outcome = host_store().register(
            who, registration.public_key, registration.computer_name, "network"
        )
    except HostRefused as e:
        return _refuse("host.register", who, e)
    if outcome != "known":
        _audit("host.register", who, details=f"{outcome}: {registration.computer_name}")
    answer = jsonify(status=outcome, host_uuid=who)
    answer.status_code = 200 if outcome == "known" else 201
    return answer


@bp.post("/hosts/<host_uuid>/report")
def report(host_uuid: str) -> Response:
    """Take a host's signed report (see the module's docstring)."""
    try:
        taken = host_store().ingest(_body(MAX_REPORT_BYTES), source="network", host_uuid=host_uuid)
    except HostRefused as e:
        return _refuse("host.report", host_uuid[:128], e)
    if taken.events:
        audit_log: AuditLog = current_app.extensions["comptoir.audit"]
        audit_log.record_many(host_audit_events(taken.host_uuid, taken.events, source="network"))
    return jsonify(status="ok", seq=taken.seq, events=len(taken.events))


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> Response:
    """The API's errors are JSON too (a body over its cap is 413 `too-large`)."""
    if error.code == 413:
        path = request.view_args or {}
        _audit(
            "host.report" if "host_uuid" in path else "host.register",
            str(path.get("host_uuid", ""))[:128],
            outcome="refused",
            details="too-large",
        )
    return _error_json(error)


def _error_json(error: HTTPException) -> Response:
    status = error.code or 500
    reason = "too-large" if status == 413 else (error.name or "error").lower().replace(" ", "-")
    answer = jsonify(error=reason, message=error.description or "")
    answer.status_code = status
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        answer.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return answer


def unmatched() -> Response | None:
    """A request under the API's prefix that matches no route: its JSON 404 or 405.

    Routing failed, so no blueprint handler sees it; this app-level `before_request` does
    (`security.answers_unmatched` keeps the login page away from it).
    """
    error = request.routing_exception
    if not isinstance(error, HTTPException) or isinstance(error, RequestRedirect):
        return None  # a redirect (e.g. a missing slash) is Flask's to answer
    if not (request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")):
        return None
    return _error_json(error)


def init_app(app: Flask, site: SiteSettings) -> None:
    """Serve the host API on `app` (a site server), with its host store and enrolment secret.

    The enrolment secret is made once (`site.enrolment_secret_file`, mode 0600); copy that
    file to the agents (`[site] enrolment_secret_file`).

    Raises:
        SecretFileError: the enrolment secret cannot be read or made.
        ReportError: it is too short.
    """
    secret = load_or_create_secret(site.enrolment_secret_file, what="enrolment secret")
    app.extensions["comptoir.enrolment_secret"] = enrolment_secret(secret)
    app.extensions.setdefault("comptoir.hosts", make_host_store(site))
    app.register_blueprint(bp)
    security.guarded_by_blueprint(app, bp.name)
    security.answers_unmatched(app, API_PREFIX)
    app.before_request(unmatched)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
