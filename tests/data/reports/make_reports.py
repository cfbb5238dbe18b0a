"""Generate the hostile host reports the site server must refuse (and two it must take).

Regenerate from the project root (rewrites every `*.json` here but `corpus.json`'s own name)::

    .venv/bin/python tests/data/reports/make_reports.py

and check that the files on disk are what this script makes (exit status 1 if not)::

    .venv/bin/python tests/data/reports/make_reports.py --check

This script deliberately does not import `agent_bridge.reports`: it signs with `cryptography`
and the standard `json` module (`sort_keys`, no spaces, UTF-8), so that the tests also check
that the project's canonical encoding (orjson) agrees with an independent one.

Every report is about `HOST` and signed with the Ed25519 key whose seed is `HOST_SEED` (its
public key is what the tests register), except where the case is about the key. Ed25519 is
deterministic and every time is fixed: two runs give the same bytes.

`corpus.json` lists ``{"file", "expect", "what"}``; ``expect`` is the reason
(`portal.site.hosts.HostRefused.reason`) the site answers when the file is posted as
`HOST`'s report, or ``null`` for the files it must take.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

HERE = Path(__file__).resolve().parent
HOST = "0a1b2c3d-0000-4000-8000-00000000beef"
OTHER_HOST = "0a1b2c3d-0000-4000-8000-0000000f00d5"
HOST_SEED = hashlib.sha256(b"comptoir hostile reports: the host's key").digest()
OTHER_SEED = hashlib.sha256(b"comptoir hostile reports: another key").digest()
FORMAT = "comptoir-host-report/1"
WHEN = "2026-11-20T10:00:00Z"


def key(seed: bytes) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def public_text(seed: bytes) -> str:
    raw = (
        key(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode("ascii")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host_uuid": HOST,
        "seq": 1,
        "created": WHEN,
        "computer_name": "PC-SALLE101-03",
        "os": "Windows 10",
        "agent_version": "0.1.0",
        "installed": [
            {
                "package": f"tice-{name}",
                "version": "1.0-1",
                "maturity": "PROD",
                "install_date": "2026-11-19T08:00:00",
                "status": "OK",
            }
            for name in ("firefox", "geogebra", "scratch")
        ],
        "pending": {
            "install": ["tice-audacity(=3.4-1)"],
            "upgrade": [],
            "remove": [],
            "at_shutdown": [],
        },
        "failed": [],
        "events": [
            {
                "id": 7,
                "when": WHEN,
                "user": "marie",
                "action": "install",
                "package": "tice-scratch",
                "outcome": "done",
            }
        ],
    }
    base.update(changes)
    return base


def signed(payload: Any, seed: bytes = HOST_SEED, **envelope: Any) -> bytes:
    signature = key(seed).sign(FORMAT.encode() + b"\n" + canonical(payload))
    data = {
        "format": FORMAT,
        "report": payload,
        "signature": base64.b64encode(signature).decode("ascii"),
        "public_key": public_text(seed),
    }
    data.update(envelope)
    return canonical(data)


def cases() -> list[tuple[str, bytes, str | None, str]]:
    """(file, bytes, expected reason, what)."""
    good = report()
    altered = json.loads(signed(good))
    altered["report"]["installed"][0]["version"] = "9.9-9"
    hostile_text = '<script>alert("pkg")</script>'
    xss = report(
        computer_name='<img src=x onerror=alert("name")>',
        installed=[
            {
                "package": hostile_text,
                "version": '"><b>1</b>',
                "maturity": "PROD",
                "install_date": "",
                "status": "ERROR",
            }
        ],
        failed=[
            {
                "package": hostile_text,
                "version": "1",
                "when": WHEN,
                "log": "Traceback …\n</pre><script>alert('log')</script>\n\x1b[31mred\u202e",
            }
        ],
        events=[
            {
                "id": 8,
                "when": WHEN,
                "user": '=HYPERLINK("http://x")',
                "action": "install",
                "package": hostile_text,
                "outcome": "error",
            }
        ],
    )
    many_events = [dict(good["events"][0], id=i) for i in range(501)]
    return [
        ("baseline.json", signed(good), None, "a good report: taken"),
        (
            "hostile-text.json",
            signed(xss),
            None,
            "markup, a formula and control characters "
            "in every text field, signed: taken, and escaped everywhere it is shown",
        ),
        (
            "forged-signature.json",
            signed(good, OTHER_SEED),
            "bad-signature",
            "signed by another key (and carrying that key: it must not be believed)",
        ),
        (
            "altered-after-signing.json",
            canonical(altered),
            "bad-signature",
            "a version changed after signing",
        ),
        (
            "other-host.json",
            signed(report(host_uuid=OTHER_HOST), OTHER_SEED),
            "wrong-host",
            "another host's report, sent as this host's",
        ),
        ("not-json.json", b"\xff\xfe{garbage", "malformed", "not JSON"),
        (
            "wrong-format.json",
            signed(good, format="comptoir-host-report/2"),
            "malformed",
            "an unknown format",
        ),
        (
            "extra-envelope-field.json",
            signed(good, admin=True),
            "malformed",
            "an unknown field beside the report",
        ),
        (
            "extra-report-field.json",
            signed(report(admin=True)),
            "malformed",
            "an unknown field in the signed report",
        ),
        ("seq-bool.json", signed(report(seq=True)), "malformed", "seq is true, not a number"),
        ("seq-negative.json", signed(report(seq=-1)), "malformed", "seq below 1"),
        (
            "uuid-traversal.json",
            signed(report(host_uuid="../../etc/passwd")),
            "malformed",
            "a host UUID that is a path",
        ),
        (
            "log-too-long.json",
            signed(
                report(
                    failed=[
                        {"package": "x", "version": "1", "when": WHEN, "log": "x" * (64 * 1024 + 1)}
                    ]
                )
            ),
            "malformed",
            "a failure log over 64 KiB",
        ),
        (
            "too-many-events.json",
            signed(report(events=many_events)),
            "malformed",
            "501 events, over the cap of 500",
        ),
        (
            "bad-signature-shape.json",
            signed(good, signature="AAAA"),
            "malformed",
            "a signature that is not 64 bytes",
        ),
        (
            "event-bad-action.json",
            signed(report(events=[dict(good["events"][0], action="rm -rf")])),
            "malformed",
            "an event with an unknown action",
        ),
        (
            "time-without-zone.json",
            signed(report(created="2026-11-20T10:00:00")),
            "malformed",
            "a time without a zone",
        ),
        (
            "installed-not-list.json",
            signed(report(installed={"a": 1})),
            "malformed",
            "installed is an object",
        ),
    ]


def main() -> int:
    check = "--check" in sys.argv
    corpus = []
    differ = []
    for name, data, expect, what in cases():
        corpus.append({"file": name, "expect": expect, "what": what})
        path = HERE / name
        if check:
            if not path.exists() or path.read_bytes() != data:
                differ.append(name)
        else:
            path.write_bytes(data)
    listing = json.dumps(corpus, indent=1, ensure_ascii=False).encode() + b"\n"
    if check:
        if (HERE / "corpus.json").read_bytes() != listing:
            differ.append("corpus.json")
        for name in differ:
            print(f"{name}: differs from what this script makes", file=sys.stderr)
        return 1 if differ else 0
    (HERE / "corpus.json").write_bytes(listing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
