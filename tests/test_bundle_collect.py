"""`comptoir bundle collect PATH`: the reports a technician brings back on a stick go into the
site's host state; bad files are listed and refused, never stop the others; all is audited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent_bridge.reports import (
    FailedPackage,
    HostReport,
    InstalledPackage,
    ReportEvent,
    public_key_text,
    sign_report,
)
from comptoir.cli import main
from portal.site.audit import AuditLog
from portal.site.hosts import HostStore
from tests.conftest import TEST_DATA
from tests.site_harness import make_site

CORPUS_HOST = "0a1b2c3d-0000-4000-8000-00000000beef"


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def report(key: ed25519.Ed25519PrivateKey, host: str, seq: int, **changes: Any) -> bytes:
    values: dict[str, Any] = {"host_uuid": host, "seq": seq, "created": "2026-11-21T08:00:00Z"}
    values.update(changes)
    return sign_report(HostReport(**values), key)


def site_config(tmp_path: Path) -> tuple[Path, Path]:
    """A site's settings file (as the server reads it) and its data directory."""
    site = make_site(tmp_path / "site")
    config = tmp_path / "site.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "portal"}"\n[site]\n'
        f'data_dir = "{site.site.data_dir}"\nrepository_dir = "{site.site.repository_dir}"\n'
        f'accounts_file = "{site.site.accounts_file}"\n',
        "utf-8",
    )
    return config, site.site.data_dir


def test_collect_imports_reports_and_lists_every_bad_file(tmp_path: Path) -> None:
    config, data_dir = site_config(tmp_path)
    store = HostStore(data_dir)
    known, stale = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    store.register(uuid(1), public_key_text(known), "PC-1")
    store.register(uuid(3), public_key_text(stale), "PC-3")
    store.ingest(report(stale, uuid(3), 9))
    stick = tmp_path / "stick"
    reports = stick / "reports"
    reports.mkdir(parents=True)
    installed = (InstalledPackage("tis-geogebra", "6.0-1", "PROD", "", "OK"),)
    event = ReportEvent(12, "2026-11-21T07:00:00Z", "alice", "install", "tis-geogebra", "done")
    (reports / f"{uuid(1)}.json").write_bytes(
        report(known, uuid(1), 2, installed=installed, events=(event,))
    )
    newcomer = ed25519.Ed25519PrivateKey.generate()
    (reports / f"{uuid(2)}.json").write_bytes(
        report(newcomer, uuid(2), 1, failed=(FailedPackage("tis-raise", log="boom"),))
    )
    (reports / f"{uuid(3)}.json").write_bytes(report(stale, uuid(3), 4))  # older than the site's
    impostor = ed25519.Ed25519PrivateKey.generate()
    store.register(uuid(4), public_key_text(known), "PC-4")
    (reports / f"{uuid(4)}.json").write_bytes(report(impostor, uuid(4), 1))  # not its key
    shutil.copy(TEST_DATA / "reports" / "log-too-long.json", reports / f"{CORPUS_HOST}.json")
    (reports / "notes.txt").write_text("not a report: not read")

    result = CliRunner().invoke(
        main, ["bundle", "collect", str(stick), "--site-config", str(config)]
    )
    assert result.exit_code == 1, result.output  # some files were refused
    out = result.stdout
    assert f"{stick}: 5 report(s): 1 taken, 1 registered, 1 stale, 2 refused" in out
    assert f"new host (trusted on first use): {uuid(2)}" in out
    assert f"older than the site's: {uuid(3)}.json" in out
    assert f"REFUSED {uuid(4)}.json: bad-signature" in result.stderr
    assert f"REFUSED {CORPUS_HOST}.json: malformed: report.failed[0].log" in result.stderr

    store = HostStore(data_dir)
    assert [p.package for p in store.get(uuid(1)).installed] == ["tis-geogebra"]  # type: ignore[union-attr]
    assert store.get(uuid(2)).registered_source == "usb"  # type: ignore[union-attr]
    assert store.failure_logs(uuid(2))[0].log == "boom"
    assert store.get(uuid(4)).last_seen is None  # type: ignore[union-attr]
    assert store.get(CORPUS_HOST) is None  # a refused report registers nobody
    audit = AuditLog(data_dir / "audit")
    collected, total = audit.search(action="bundle.collect", limit=20)
    assert total == 5 and {e.role for e in collected} == {"technician"}
    assert sum(e.outcome == "refused" for e in collected) == 2
    teachers, _ = audit.search(action="host.install")
    assert [(e.who, e.where) for e in teachers] == [("alice", uuid(1))]

    # again, as JSON: everything already taken is now stale, and said so
    again = CliRunner().invoke(
        main,
        ["bundle", "collect", str(stick), "--json"],
        env={"COMPTOIR_PORTAL_CONFIG": str(config)},
    )
    rows = json.loads(again.stdout)
    assert {r["file"]: r["outcome"] for r in rows} == {
        f"{uuid(1)}.json": "stale",
        f"{uuid(2)}.json": "stale",
        f"{uuid(3)}.json": "stale",
        f"{uuid(4)}.json": "refused",
        f"{CORPUS_HOST}.json": "refused",
    }
    assert len(audit.search(action="host.install")[0]) == 1  # no event counted twice


def test_collect_needs_a_site_and_a_stick_with_reports(tmp_path: Path) -> None:
    config, _ = site_config(tmp_path)
    runner = CliRunner()
    no_config = runner.invoke(main, ["bundle", "collect", str(tmp_path)], env={})
    assert no_config.exit_code == 1 and "give --site-config (or set" in no_config.stderr
    teacher_portal = tmp_path / "portal.toml"
    teacher_portal.write_text(f'data_dir = "{tmp_path / "p"}"\n', "utf-8")
    not_site = runner.invoke(
        main, ["bundle", "collect", str(tmp_path), "--site-config", str(teacher_portal)]
    )
    assert not_site.exit_code == 1 and "no [site] table" in not_site.stderr
    empty = runner.invoke(main, ["bundle", "collect", str(tmp_path), "--site-config", str(config)])
    assert empty.exit_code == 1 and "no reports/ directory" in empty.stderr
