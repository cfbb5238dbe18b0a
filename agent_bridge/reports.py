"""Host reports: what an agent tells the site server about itself, signed with its host key.

A `HostReport` is one machine's state at one moment: what is installed, what is still to do,
what failed (with the end of the log), and what teachers and the shutdown run did since the
previous report. The agent signs it with its own Ed25519 host key (`sign_report`); the site
server verifies it with the key it pinned when the host registered (`read_signed_report`, then
`SignedReport.verify`), so a machine can only ever report for itself. The same signed bytes
travel over HTTP or on a USB stick (`<bundle>/reports/<uuid>.json`).

Wire format (`REPORT_FORMAT`), one JSON object::

    {"format": "comptoir-host-report/1", "report": {...}, "signature": "<base64>"}

The signature covers `REPORT_FORMAT`, a newline and the canonical JSON of `report` (keys
sorted, no spaces, UTF-8; `canonical_json`): the verifier re-encodes exactly what it parsed, so
what is verified is what is used. Verification needs nothing but the bytes and the pinned key:
no I/O. Everything is bounded (`MAX_REPORT_BYTES`, and per field) and every refusal is a
`ReportError` naming the field and the reason.

Registration (`make_registration`, `read_registration`): the agent sends its UUID, its public
key and its name, signed with the host key (it holds the private key) and with a proof that it
knows the site's enrolment secret, an HMAC-SHA256 over the UUID and the public key.

No Flask and no files here: the agent, the site server and the command line all import it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = [
    "EPOCH_PATTERN",
    "MAX_EVENTS",
    "MAX_FAILED",
    "MAX_INSTALLED",
    "MAX_LOG_CHARS",
    "MAX_REGISTRATION_BYTES",
    "MAX_REPORT_BYTES",
    "REGISTRATION_FORMAT",
    "REPORT_FORMAT",
    "FailedPackage",
    "HostReport",
    "InstalledPackage",
    "PendingWork",
    "Registration",
    "ReportError",
    "ReportEvent",
    "ReportSignatureError",
    "ReportTooLargeError",
    "SignedReport",
    "canonical_json",
    "check_host_uuid",
    "enrolment_secret",
    "host_key_from_seed",
    "key_fingerprint",
    "make_registration",
    "public_key_text",
    "read_public_key",
    "read_registration",
    "read_signed_report",
    "registration_proof",
    "sign_report",
    "tail",
    "utc_now_text",
    "verify_report",
]

REPORT_FORMAT: Final = "comptoir-host-report/1"
REGISTRATION_FORMAT: Final = "comptoir-host-registration/1"

MAX_REPORT_BYTES: Final = 4 * 1024 * 1024
"""A signed report is at most this big (bytes): 50 failure logs of 64 KiB and 5,000 packages."""
MAX_REGISTRATION_BYTES: Final = 8 * 1024
MAX_INSTALLED: Final = 5000
MAX_PENDING: Final = 5000
MAX_FAILED: Final = 50
MAX_EVENTS: Final = 500
MAX_LOG_CHARS: Final = 64 * 1024
"""A failure's log keeps at most this many characters: its end, where the error is."""
MAX_TEXT: Final = 512
"""Any other text field (names, versions, dates, users) is at most this long."""
MAX_SEQ: Final = 2**53
HOST_UUID_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
#: an agent's task-history id (`HostReport.epoch`, `agent_bridge.agent.tasks.TaskQueue.epoch`)
EPOCH_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A host's UUID (or its FQDN when the agent uses that): lower case, safe in a file name."""

EVENT_ACTIONS: Final = frozenset({"install", "remove", "upgrade", "shutdown"})
EVENT_OUTCOMES: Final = frozenset({"done", "error", "cancelled"})


class ReportError(ValueError):
    """A report or a registration is malformed, too large, or does not verify."""


class ReportTooLargeError(ReportError):
    """The bytes are over their cap: refused before being parsed."""


class ReportSignatureError(ReportError):
    """The signature does not verify with the host's key: forged, altered, or another host's."""


def enrolment_secret(data: bytes) -> bytes:
    """The enrolment secret kept in a file's `data`, as both sides use it (surrounding white
    space removed, so a secret typed into a file with a final newline still matches).

    Raises:
        ReportError: nothing is left, or fewer than 16 bytes (too easy to guess).
    """
    secret = data.strip()
    if len(secret) < 16:
        raise ReportError(f"the enrolment secret is {len(secret)} bytes; at least 16 are needed")
    return secret


def utc_now_text() -> str:
    """Now, in UTC, to the second, with a Z: how reports carry times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """The last `limit` characters of `text`, with a first line saying how many were cut."""
    if len(text) <= limit:
        return text
    marker = f"[… {len(text) - limit} earlier characters cut …]\n"
    return marker + text[len(text) - limit + len(marker) :]


def canonical_json(value: Any) -> bytes:
    """The one encoding signatures cover: keys sorted, no spaces, UTF-8, no floats needed.

    Raises:
        ReportError: the value is not plain JSON (or holds an integer over 64 bits).
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:
        raise ReportError(f"not plain JSON: {e}") from e


def check_host_uuid(value: object, what: str = "host_uuid") -> str:
    """`value` if it is a host UUID (or FQDN) in lower case, safe as a file name.

    Raises:
        ReportError: it is not.
    """
    if not isinstance(value, str) or not HOST_UUID_PATTERN.fullmatch(value):
        raise ReportError(
            f"{what} {str(value)[:80]!r}: expected a lower-case UUID or host name "
            "(letters, digits, dots, dashes, underscores; at most 128)"
        )
    return value


# --- keys ------------------------------------------------------------------------------------


def host_key_from_seed(seed: bytes) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 host key whose 32-byte private seed is `seed` (how the agent keeps it).

    Raises:
        ReportError: `seed` is not 32 bytes.
    """
    if len(seed) < 32:
        raise ReportError(f"a host key seed is 32 bytes, not {len(seed)}")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed[:32])


def public_key_text(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> str:
    """The public half of a host key as the site pins it: base64 of the 32 raw bytes."""
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def read_public_key(text: object) -> ed25519.Ed25519PublicKey:
    """The host public key written by `public_key_text`.

    Raises:
        ReportError: not base64 of 32 bytes.
    """
    raw = _b64(text, "public_key", 32)
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def key_fingerprint(public_key: str) -> str:
    """A short, stable name of a pinned key for pages and the audit: `SHA256:` and 16 hex."""
    return "SHA256:" + hashlib.sha256(public_key.encode("ascii")).hexdigest()[:16]


def _b64(text: object, what: str, size: int) -> bytes:
    if not isinstance(text, str) or len(text) > 4 * size:
        raise ReportError(f"{what}: expected base64 of {size} bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ReportError(f"{what}: not base64: {e}") from e
    if len(raw) != size:
        raise ReportError(f"{what}: {len(raw)} bytes, expected {size}")
    return raw


# --- strict readers of untrusted JSON ----------------------------------------------------------


def _text(raw: Mapping[str, Any], key: str, where: str, *, limit: int = MAX_TEXT) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise ReportError(f"{where}.{key}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise ReportError(f"{where}.{key}: {len(value)} characters, at most {limit}")
    return value


def _object(value: object, where: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{where}: expected an object, got {type(value).__name__}")
    unknown = set(value) - keys
    if unknown:
        raise ReportError(f"{where}: unknown field(s) {', '.join(sorted(unknown)[:5])}")
    return value


def _list(value: object, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise ReportError(f"{where}: expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise ReportError(f"{where}: {len(value)} entries, at most {limit}")
    return value


def _texts(value: object, where: str, limit: int) -> tuple[str, ...]:
    items = _list(value, where, limit)
    for i, item in enumerate(items):
        if not isinstance(item, str) or len(item) > MAX_TEXT:
            raise ReportError(f"{where}[{i}]: expected text of at most {MAX_TEXT} characters")
    return tuple(items)


def _time(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(raw, key, where, limit=40)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise ReportError(f"{where}.{key}: {value!r} is not an ISO 8601 time") from e
    if when.tzinfo is None:
        raise ReportError(f"{where}.{key}: {value!r} has no time zone (UTC expected)")
    return value


# --- the report --------------------------------------------------------------------------------


class _Flat:
    """A record of plain fields whose JSON is its fields, in order."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


def _package(data: Mapping[str, Any], where: str) -> str:
    package = _text(data, "package", where)
    if not package:
        raise ReportError(f"{where}.package: empty")
    return package


@dataclass(frozen=True)
class InstalledPackage(_Flat):
    """One package the agent has a record of; `status` is the agent's (OK, ERROR, …)."""

    package: str
    version: str
    maturity: str = ""
    install_date: str = ""
    status: str = "OK"

    _KEYS = frozenset({"package", "version", "maturity", "install_date", "status"})

    @classmethod
    def from_json(cls, raw: object, where: str) -> InstalledPackage:
        data = _object(raw, where, cls._KEYS)
        return cls(
            package=_package(data, where),
            version=_text(data, "version", where),
            maturity=_text(data, "maturity", where),
            install_date=_text(data, "install_date", where),
            status=_text(data, "status", where, limit=16),
        )


@dataclass(frozen=True)
class PendingWork:
    """What the machine still has to do: install, upgrade, remove, and at the next shutdown."""

    install: tuple[str, ...] = ()
    upgrade: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    at_shutdown: tuple[str, ...] = ()

    _KEYS = frozenset({"install", "upgrade", "remove", "at_shutdown"})

    def __bool__(self) -> bool:
        return bool(self.install or self.upgrade or self.remove or self.at_shutdown)

    def to_json(self) -> dict[str, Any]:
        return {
            "install": list(self.install),
            "upgrade": list(self.upgrade),
            "remove": list(self.remove),
            "at_shutdown": list(self.at_shutdown),
        }

    @classmethod
    def from_json(cls, raw: object, where: str) -> PendingWork:
        data = _object(raw, where, cls._KEYS)
        return cls(
            **{key: _texts(data.get(key, []), f"{where}.{key}", MAX_PENDING) for key in cls._KEYS}
        )


@dataclass(frozen=True)
class FailedPackage(_Flat):
    """A package whose last install or removal failed, with the end of its log."""

    package: str
    version: str = ""
    when: str = ""
    log: str = ""

    _KEYS = frozenset({"package", "version", "when", "log"})

    @classmethod
    def from_json(cls, raw: object, where: str) -> FailedPackage:
        data = _object(raw, where, cls._KEYS)
        return cls(
            package=_package(data, where),
            version=_text(data, "version", where),
            when=_text(data, "when", where),
            log=_text(data, "log", where, limit=MAX_LOG_CHARS),
        )


@dataclass(frozen=True)
class ReportEvent(_Flat):
    """Something a person (a teacher) or the shutdown run did on the machine.

    `id` is the agent's task id, unique within the report's `epoch` (its task history): the
    site server records each event once even when it comes twice (over the network and on a
    stick), and a new epoch's ids, which start again at 1, are new events.
    """

    id: int
    when: str
    user: str
    action: str
    package: str = ""
    outcome: str = "done"

    _KEYS = frozenset({"id", "when", "user", "action", "package", "outcome"})

    @classmethod
    def from_json(cls, raw: object, where: str) -> ReportEvent:
        data = _object(raw, where, cls._KEYS)
        event_id = data.get("id")
        if (
            not isinstance(event_id, int)
            or isinstance(event_id, bool)
            or not (0 <= event_id < MAX_SEQ)
        ):
            raise ReportError(f"{where}.id: expected a whole number, got {event_id!r}")
        action = _text(data, "action", where)
        if action not in EVENT_ACTIONS:
            raise ReportError(f"{where}.action: {action!r} is not one of {sorted(EVENT_ACTIONS)}")
        outcome = _text(data, "outcome", where)
        if outcome not in EVENT_OUTCOMES:
            raise ReportError(
                f"{where}.outcome: {outcome!r} is not one of {sorted(EVENT_OUTCOMES)}"
            )
        return cls(
            id=event_id,
            when=_time(data, "when", where),
            user=_text(data, "user", where),
            action=action,
            package=_text(data, "package", where),
            outcome=outcome,
        )


@dataclass(frozen=True)
class HostReport:
    """One machine's state, as its agent reports it. `seq` increases with every report."""

    host_uuid: str
    seq: int
    created: str
    computer_name: str = ""
    os: str = ""
    agent_version: str = ""
    installed: tuple[InstalledPackage, ...] = ()
    pending: PendingWork = field(default_factory=PendingWork)
    failed: tuple[FailedPackage, ...] = ()
    events: tuple[ReportEvent, ...] = ()
    #: the agent's task history the events' ids belong to ("" from agents that have none)
    epoch: str = ""

    _KEYS = frozenset(
        {
            "epoch",
            "host_uuid",
            "seq",
            "created",
            "computer_name",
            "os",
            "agent_version",
            "installed",
            "pending",
            "failed",
            "events",
        }
    )

    def to_json(self) -> dict[str, Any]:
        epoch = {"epoch": self.epoch} if self.epoch else {}
        return {
            **epoch,
            "host_uuid": self.host_uuid,
            "seq": self.seq,
            "created": self.created,
            "computer_name": self.computer_name,
            "os": self.os,
            "agent_version": self.agent_version,
            "installed": [p.to_json() for p in self.installed],
            "pending": self.pending.to_json(),
            "failed": [f.to_json() for f in self.failed],
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, raw: object) -> HostReport:
        """The report `raw` (parsed JSON) describes, checked field by field.

        Raises:
            ReportError: a field is missing, unknown, of the wrong type or over its cap.
        """
        where = "report"
        data = _object(raw, where, cls._KEYS)
        for required in ("host_uuid", "seq", "created"):
            if required not in data:
                raise ReportError(f"{where}.{required}: missing")
        seq = data["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < MAX_SEQ:
            raise ReportError(f"{where}.seq: expected a positive whole number, got {seq!r}")
        installed = _list(data.get("installed", []), f"{where}.installed", MAX_INSTALLED)
        failed = _list(data.get("failed", []), f"{where}.failed", MAX_FAILED)
        events = _list(data.get("events", []), f"{where}.events", MAX_EVENTS)
        epoch = data.get("epoch", "")
        if not isinstance(epoch, str) or (epoch and not EPOCH_PATTERN.match(epoch)):
            raise ReportError(
                f"{where}.epoch: expected 1 to 64 letters, digits, '-' or '_', got {epoch!r:.80}"
            )
        return cls(
            epoch=epoch,
            host_uuid=check_host_uuid(data["host_uuid"], f"{where}.host_uuid"),
            seq=seq,
            created=_time(data, "created", where),
            computer_name=_text(data, "computer_name", where),
            os=_text(data, "os", where),
            agent_version=_text(data, "agent_version", where),
            installed=tuple(
                InstalledPackage.from_json(p, f"{where}.installed[{i}]")
                for i, p in enumerate(installed)
            ),
            pending=PendingWork.from_json(data.get("pending", {}), f"{where}.pending"),
            failed=tuple(
                FailedPackage.from_json(f, f"{where}.failed[{i}]") for i, f in enumerate(failed)
            ),
            events=tuple(
                ReportEvent.from_json(e, f"{where}.events[{i}]") for i, e in enumerate(events)
            ),
        )


def _message(kind: str, payload: Any) -> bytes:
    return kind.encode("ascii") + b"\n" + canonical_json(payload)


def sign_report(report: HostReport, key: ed25519.Ed25519PrivateKey) -> bytes:
    """The signed report, as sent to the site and written on sticks.

    Raises:
        ReportError: the report breaks a cap (checked here too: an agent never sends what the
            site would refuse).
    """
    payload = report.to_json()
    HostReport.from_json(payload)
    signature = key.sign(_message(REPORT_FORMAT, payload))
    data = canonical_json(
        {
            "format": REPORT_FORMAT,
            "report": payload,
            "signature": base64.b64encode(signature).decode("ascii"),
            "public_key": public_key_text(key),
        }
    )
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"the report is {len(data)} bytes, over the {MAX_REPORT_BYTES} cap")
    return data


def _envelope(
    data: bytes, kind: str, limit: int, keys: frozenset[str], what: str
) -> dict[str, Any]:
    if len(data) > limit:
        raise ReportTooLargeError(f"{what}: {len(data)} bytes, over the {limit} cap")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ReportError(f"{what}: not JSON: {e}") from e
    envelope = _object(parsed, what, keys)
    if envelope.get("format") != kind:
        raise ReportError(f"{what}: format {str(envelope.get('format'))[:60]!r}, expected {kind}")
    return dict(envelope)


@dataclass(frozen=True)
class SignedReport:
    """A report read from the wire but not verified yet: only `host_uuid` may be looked at,
    to find the key to verify it with. `public_key` is the key the sender says it signed with:
    worth nothing by itself (anyone can sign with a key of their own); the site uses it only
    to register an unknown host whose report a technician carried (trust on first use)."""

    host_uuid: str
    payload: Mapping[str, Any]
    signature: bytes
    public_key: str | None = None

    def verify(self, public_key: ed25519.Ed25519PublicKey | str) -> HostReport:
        """Check the signature with the host's pinned key, then every field.

        Raises:
            ReportError: the signature does not verify, or the report is malformed.
        """
        key = read_public_key(public_key) if isinstance(public_key, str) else public_key
        try:
            key.verify(self.signature, _message(REPORT_FORMAT, self.payload))
        except InvalidSignature as e:
            raise ReportSignatureError(
                f"report of {self.host_uuid}: the signature does not verify with the host's key"
            ) from e
        return HostReport.from_json(self.payload)


def read_signed_report(data: bytes) -> SignedReport:
    """Parse the envelope of a signed report (size, format, signature shape, host UUID).

    Raises:
        ReportError: too large, not JSON, not a report envelope.
    """
    envelope = _envelope(
        data,
        REPORT_FORMAT,
        MAX_REPORT_BYTES,
        frozenset({"format", "report", "signature", "public_key"}),
        "report",
    )
    payload = envelope.get("report")
    if not isinstance(payload, dict):
        raise ReportError("report: the report is not an object")
    public_key = envelope.get("public_key")
    if public_key is not None:
        read_public_key(public_key)
    return SignedReport(
        host_uuid=check_host_uuid(payload.get("host_uuid"), "report.host_uuid"),
        payload=payload,
        signature=_b64(envelope.get("signature"), "signature", 64),
        public_key=public_key,
    )


def verify_report(data: bytes, public_key: ed25519.Ed25519PublicKey | str) -> HostReport:
    """Read and verify a signed report in one step (see `read_signed_report`).

    Raises:
        ReportError: malformed, too large, or not signed by `public_key`.
    """
    return read_signed_report(data).verify(public_key)


# --- registration ------------------------------------------------------------------------------


def registration_proof(secret: bytes, host_uuid: str, public_key: str) -> str:
    """HMAC-SHA256 (hex) with the site's enrolment secret over the UUID and the public key."""
    message = f"{REGISTRATION_FORMAT}\n{host_uuid}\n{public_key}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Registration:
    """A host asking the site to pin its key (signature and proof already shape-checked)."""

    host_uuid: str
    public_key: str
    computer_name: str
    proof: str

    def proof_matches(self, secret: bytes) -> bool:
        """Whether the proof was made with the enrolment secret `secret` (constant time)."""
        expected = registration_proof(secret, self.host_uuid, self.public_key)
        return hmac.compare_digest(expected, self.proof)


def make_registration(
    key: ed25519.Ed25519PrivateKey, secret: bytes, host_uuid: str, computer_name: str
) -> bytes:
    """The registration request of a host: its identity, signed, with the enrolment proof."""
    check_host_uuid(host_uuid)
    public = public_key_text(key)
    body = {
        "host_uuid": host_uuid,
        "public_key": public,
        "computer_name": computer_name[:MAX_TEXT],
        "proof": registration_proof(secret, host_uuid, public),
    }
    signature = key.sign(_message(REGISTRATION_FORMAT, body))
    return canonical_json(
        {
            "format": REGISTRATION_FORMAT,
            "registration": body,
            "signature": base64.b64encode(signature).decode("ascii"),
        }
    )


def read_registration(data: bytes) -> Registration:
    """Parse a registration and check that the key it names signed it (proof of possession).

    The enrolment proof is checked by the caller (`Registration.proof_matches`), which holds
    the secret.

    Raises:
        ReportError: malformed, too large, or not signed by its own key.
    """
    envelope = _envelope(
        data,
        REGISTRATION_FORMAT,
        MAX_REGISTRATION_BYTES,
        frozenset({"format", "registration", "signature"}),
        "registration",
    )
    where = "registration"
    body = _object(
        envelope.get("registration"),
        where,
        frozenset({"host_uuid", "public_key", "computer_name", "proof"}),
    )
    host_uuid = check_host_uuid(body.get("host_uuid"), f"{where}.host_uuid")
    public = _text(body, "public_key", where, limit=64)
    key = read_public_key(public)
    proof = _text(body, "proof", where, limit=64)
    if not re.fullmatch(r"[0-9a-f]{64}", proof):
        raise ReportError(f"{where}.proof: expected 64 hexadecimal digits")
    try:
        key.verify(
            _b64(envelope.get("signature"), "signature", 64), _message(REGISTRATION_FORMAT, body)
        )
    except InvalidSignature as e:
        raise ReportSignatureError(f"{where} of {host_uuid}: not signed by the key it names") from e
    return Registration(host_uuid, public, _text(body, "computer_name", where), proof)
