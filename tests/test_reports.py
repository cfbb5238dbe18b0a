"""Host reports (`agent_bridge.reports`): format, canonical encoding, signatures, caps, the
registration proof, and the hostile corpus of `tests/data/reports/`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent_bridge.reports import (
    MAX_LOG_CHARS,
    MAX_REPORT_BYTES,
    FailedPackage,
    HostReport,
    InstalledPackage,
    PendingWork,
    ReportError,
    ReportEvent,
    ReportSignatureError,
    ReportTooLargeError,
    canonical_json,
    enrolment_secret,
    host_key_from_seed,
    make_registration,
    public_key_text,
    read_registration,
    read_signed_report,
    registration_proof,
    sign_report,
    tail,
    verify_report,
)
from tests.conftest import TEST_DATA

REPORTS = TEST_DATA / "reports"
sys.path.insert(0, str(REPORTS))
import make_reports  # noqa: E402

CORPUS: list[dict[str, Any]] = json.loads((REPORTS / "corpus.json").read_text("utf-8"))
HOST_KEY = host_key_from_seed(make_reports.HOST_SEED)


def sample(**changes: Any) -> HostReport:
    values: dict[str, Any] = {
        "host_uuid": "4c4c4544-0042-3010-8053-b7c04f4e3132",
        "seq": 3,
        "created": "2026-11-21T08:00:00Z",
        "computer_name": "PC-101-03",
        "os": "Linux 6.1",
        "agent_version": "0.1.0",
        "installed": (InstalledPackage("tis-notepad", "1.0-1", "PROD", "2026-11-21T07:00", "OK"),),
        "pending": PendingWork(install=("tis-app(=2.0-1)",), at_shutdown=("tis-heavy(=1-1)",)),
        "failed": (FailedPackage("tis-raise", "1.0-1", "2026-11-21T07:30", "boom « é »"),),
        "events": (
            ReportEvent(4, "2026-11-21T07:31:00Z", "marie", "install", "tis-raise", "error"),
        ),
    }
    values.update(changes)
    return HostReport(**values)


def test_a_signed_report_verifies_and_reads_back_the_same() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    report = sample()
    data = sign_report(report, key)
    assert verify_report(data, public_key_text(key)) == report
    assert verify_report(data, key.public_key()) == report
    # canonical: sorted keys, no spaces, UTF-8 text as it is
    envelope = orjson.loads(data)
    assert data == canonical_json(envelope)
    assert "« é »".encode() in data and b": " not in data
    assert list(envelope) == sorted(envelope)


def test_the_canonical_encoding_agrees_with_an_independent_one() -> None:
    """The corpus was signed with `json.dumps(sort_keys=True)`: the baseline must verify."""
    data = (REPORTS / "baseline.json").read_bytes()
    report = verify_report(data, make_reports.public_text(make_reports.HOST_SEED))
    assert report.host_uuid == make_reports.HOST and report.seq == 1
    assert [p.package for p in report.installed] == [
        "tice-firefox",
        "tice-geogebra",
        "tice-scratch",
    ]
    assert report.events[0].user == "marie"


def test_the_corpus_on_disk_is_what_its_script_makes() -> None:
    answer = subprocess.run(
        [sys.executable, str(REPORTS / "make_reports.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr


@pytest.mark.parametrize("case", CORPUS, ids=[c["file"] for c in CORPUS])
def test_hostile_reports_are_refused_with_a_reason(case: dict[str, Any]) -> None:
    data = (REPORTS / case["file"]).read_bytes()
    public = public_key_text(HOST_KEY)
    expect = case["expect"]
    if expect is None:
        assert verify_report(data, public).host_uuid == make_reports.HOST
        return
    if expect == "wrong-host":  # well formed, but not the host it is sent for
        signed = read_signed_report(data)
        assert signed.host_uuid != make_reports.HOST
        with pytest.raises(ReportSignatureError):
            signed.verify(public)
        return
    error = ReportSignatureError if expect == "bad-signature" else ReportError
    with pytest.raises(error) as caught:
        verify_report(data, public)
    if expect == "malformed":
        assert not isinstance(caught.value, ReportSignatureError)
    assert str(caught.value)  # says what and why


def test_errors_name_the_field_and_the_reason() -> None:
    cases = {
        "seq-bool.json": "report.seq: expected a positive whole number",
        "uuid-traversal.json": "report.host_uuid '../../etc/passwd'",
        "log-too-long.json": "report.failed[0].log: 65537 characters, at most 65536",
        "too-many-events.json": "report.events: 501 entries, at most 500",
        "event-bad-action.json": "report.events[0].action: 'rm -rf' is not one of",
        "time-without-zone.json": "report.created: '2026-11-20T10:00:00' has no time zone",
        "extra-report-field.json": "report: unknown field(s) admin",
        "installed-not-list.json": "report.installed: expected a list, got dict",
    }
    public = public_key_text(HOST_KEY)
    for name, message in cases.items():
        with pytest.raises(ReportError, match=None) as caught:
            verify_report((REPORTS / name).read_bytes(), public)
        assert message in str(caught.value), (name, str(caught.value))


def test_oversize_reports_are_refused_before_parsing() -> None:
    data = b'{"format":"comptoir-host-report/1","report":' + b" " * MAX_REPORT_BYTES + b"}"
    with pytest.raises(ReportTooLargeError, match="over the 4194304 cap"):
        read_signed_report(data)


def test_an_agent_never_signs_what_the_site_would_refuse() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    too_long = FailedPackage("x", log="y" * (MAX_LOG_CHARS + 1))
    with pytest.raises(ReportError, match="log"):
        sign_report(sample(failed=(too_long,)), key)
    with pytest.raises(ReportError, match="host_uuid"):
        sign_report(sample(host_uuid="UPPER-case"), key)


def test_tail_keeps_the_end_of_a_log_within_the_cap() -> None:
    text = "start\n" + "x" * 100 + "\nthe error"
    kept = tail(text, 50)
    assert len(kept) == 50 and kept.endswith("the error") and kept.startswith("[… ")
    assert tail("short", 50) == "short"


def test_registration_proves_the_secret_and_the_key() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    secret = b"s" * 32
    data = make_registration(key, secret, "host-1", "PC-1")
    registration = read_registration(data)
    assert registration.host_uuid == "host-1" and registration.computer_name == "PC-1"
    assert registration.public_key == public_key_text(key)
    assert registration.proof_matches(secret) and not registration.proof_matches(b"t" * 32)
    assert registration.proof == registration_proof(secret, "host-1", public_key_text(key))
    # another key put in the registration: not signed by it, refused
    tampered = orjson.loads(data)
    other = ed25519.Ed25519PrivateKey.generate()
    tampered["registration"]["public_key"] = public_key_text(other)
    with pytest.raises(ReportSignatureError, match="not signed by the key it names"):
        read_registration(canonical_json(tampered))
    with pytest.raises(ReportError, match="over the 8192 cap"):
        read_registration(b" " * 9000)


def test_the_enrolment_secret_is_read_the_same_on_both_sides(tmp_path: Path) -> None:
    assert enrolment_secret(b"a-long-enough-secret\n") == b"a-long-enough-secret"
    with pytest.raises(ReportError, match="at least 16"):
        enrolment_secret(b"short\n")
