"""Backups: every store filled, backed up to a directory and over HTTP PUT, wiped, restored, and
compared byte for byte and record for record; secrets never archived; every bad archive refused
with nothing written; the command line and the schedule."""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import shutil
import socket
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from comptoir.cli import main
from portal.site.assignments import AssignmentStore
from portal.site.audit import AuditEvent, AuditLog
from portal.site.backup import (
    BackupError,
    _sign_statement,
    backup,
    backup_files,
    load_backup_signer,
    restore,
)
from portal.site.catalogs import CatalogStore
from portal.site.hosts import HostStore
from portal.site.model import MachineGroup, PublishedCatalog
from portal.site.settings import SiteSettings
from tests.site_harness import SiteFixture, make_site, serve_uploads
from wapt.trust import KeySigner, new_ca, new_signer

HOST = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteFixture]:
    fixture = make_site(tmp_path / "site")
    yield fixture
    fixture.stop()


def fill(site: SiteSettings) -> None:
    """Put something in every store the site has, and a secret that must not travel."""
    data = site.data_dir
    CatalogStore(data).create(PublishedCatalog("maths", "Maths", "", ("tis-geogebra",)))
    assignments = AssignmentStore(data)
    assignments.save_group(MachineGroup("salle-101", "Salle 101", (HOST,)), create=True)
    assignments.assign("tis-geogebra", "required", group="salle-101", created_by="dave")
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    HostStore(data).register(HOST, base64.b64encode(public).decode(), "pc-101-01")
    audit = AuditLog(data / "audit")
    audit.record_many(
        AuditEvent(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=i), "dave", "admin", "x")
        for i in range(3)
    )
    site.private_dir.mkdir(parents=True, exist_ok=True)
    (site.private_dir / "enrolment_secret").write_bytes(b"do-not-archive")
    (data / "nested" / "deep").mkdir(parents=True)
    (data / "nested" / "deep" / "notes.bin").write_bytes(bytes(range(256)) * 64)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file a backup must carry (relative path -> hex)."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and not path.name.endswith((".lock", ".tmp"))
        and "private" not in path.relative_to(root).parts
        and b"PRIVATE KEY-----" not in path.read_bytes()
    }


def records(data_dir: Path) -> tuple[object, ...]:
    assignments = AssignmentStore(data_dir)
    return (
        CatalogStore(data_dir).list(),
        assignments.groups(),
        assignments.assignments(),
        HostStore(data_dir).summaries(),
        AuditLog(data_dir / "audit").search(limit=100),
    )


@pytest.mark.parametrize("over_http", [False, True], ids=["directory", "http-put"])
def test_nothing_is_lost_between_backup_and_restore(
    site: SiteFixture, tmp_path: Path, over_http: bool
) -> None:
    settings = site.site
    fill(settings)
    before_files = snapshot(settings.data_dir)
    before_records = records(settings.data_dir)
    assert "catalogs.json" in before_files and "assignments.json" in before_files
    assert any(name.startswith("hosts/") for name in before_files)
    assert any(name.startswith("audit/") for name in before_files)
    store = tmp_path / "academie"
    store.mkdir()
    with serve_uploads(store) as url:
        target = url if over_http else str(store)
        result = backup(settings, load_backup_signer(settings), target)
        assert result.files == len(before_files)
        assert "private/" in result.left_out
        assert {"keys/deployer.pem"} <= set(result.left_out)
        location = store / "backups" / "test-site"
        assert (location / "latest").read_text().strip() == result.archive
        with tarfile.open(location / result.archive) as archive:
            names = archive.getnames()
            assert all(not name.startswith("private") for name in names)
            for member in archive.getmembers():
                data = archive.extractfile(member)
                assert data is not None and b"PRIVATE KEY" not in data.read()
        assert "keys/deployer.crt" in names and "keys/trusted/ca.crt" in names

        shutil.rmtree(settings.data_dir)  # the server is lost
        trusted = _trusted_copy(site, tmp_path)
        restored = restore(target, "test-site", settings.data_dir, trusted)
    assert restored.files == len(before_files) and restored.archive == result.archive
    assert snapshot(settings.data_dir) == before_files, "byte for byte"
    assert records(settings.data_dir) == before_records, "record for record"
    assert not (settings.data_dir / "private").exists()
    assert not (settings.data_dir / "keys" / "deployer.pem").exists()


def _trusted_copy(site: SiteFixture, tmp_path: Path) -> Path:
    """The CA certificate kept outside the state (the state is gone when restoring)."""
    path = tmp_path / "trusted-ca.crt"
    path.write_bytes(site.ca_cert.pem)
    return path


def test_the_latest_backup_is_restored(site: SiteFixture, tmp_path: Path) -> None:
    settings = site.site
    store = str(tmp_path / "store")
    CatalogStore(settings.data_dir).create(PublishedCatalog("old", "Old"))
    signer = load_backup_signer(settings)
    backup(settings, signer, store, now=datetime(2026, 1, 1, tzinfo=UTC))
    CatalogStore(settings.data_dir).create(PublishedCatalog("new", "New"))
    second = backup(settings, signer, store, now=datetime(2026, 1, 2, tzinfo=UTC))
    result = restore(store, "test-site", tmp_path / "restored", _trusted_copy(site, tmp_path))
    assert result.archive == second.archive and result.created == "2026-01-02T00:00:00Z"
    assert [c.name for c in CatalogStore(tmp_path / "restored").list()] == ["new", "old"]


@pytest.fixture
def made(site: SiteFixture, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A valid backup in a directory: (its location, the archive, the trusted CA)."""
    fill(site.site)
    result = backup(site.site, load_backup_signer(site.site), str(tmp_path / "store"))
    location = tmp_path / "store" / "backups" / "test-site"
    return location, location / result.archive, _trusted_copy(site, tmp_path)


def _refused(made: tuple[Path, Path, Path], tmp_path: Path, message: str) -> None:
    location, _, trusted = made
    target = tmp_path / "restored"
    with pytest.raises(BackupError, match=message):
        restore(str(location.parent.parent), "test-site", target, trusted)
    assert not target.exists(), "nothing written"
    assert [p for p in tmp_path.iterdir() if "restoring" in p.name] == [], "no leftovers"


def test_a_tampered_archive_is_refused(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    archive = made[1]
    data = bytearray(archive.read_bytes())
    data[600] ^= 0x01
    archive.write_bytes(bytes(data))
    _refused(made, tmp_path, "does not match its signed statement")


def test_a_tampered_statement_is_refused(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    sig = made[1].with_name(made[1].name + ".sig")
    statement = orjson.loads(sig.read_bytes())
    statement["files"] += 1
    sig.write_bytes(orjson.dumps(statement))
    _refused(made, tmp_path, "signature does not verify")


def test_an_unsigned_backup_is_refused(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    sig = made[1].with_name(made[1].name + ".sig")
    statement = orjson.loads(sig.read_bytes())
    del statement["signature"]
    sig.write_bytes(orjson.dumps(statement))
    _refused(made, tmp_path, "the backup is not signed")
    sig.unlink()
    _refused(made, tmp_path, "cannot read")


def test_a_backup_signed_by_an_untrusted_key_is_refused(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca_key, ca_cert = new_ca("Rogue CA")
    key, cert = new_signer(ca_key, ca_cert, "Rogue deployer", code_signing=False)
    sig = made[1].with_name(made[1].name + ".sig")
    statement = orjson.loads(sig.read_bytes())
    for field in ("signature", "certificates"):
        del statement[field]
    sig.write_bytes(_sign_statement(statement, KeySigner(key, [cert, ca_cert])))
    _refused(made, tmp_path, "None of certificates .* are trusted")


def test_a_backup_of_another_site_or_a_hostile_latest_is_refused(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    location, _archive, trusted = made
    other = location.parent / "other-site"
    shutil.copytree(location, other)
    with pytest.raises(BackupError, match="made for site 'test-site', not 'other-site'"):
        restore(str(location.parent.parent), "other-site", tmp_path / "r", trusted)
    (location / "latest").write_text("../../../etc/passwd\n")
    _refused(made, tmp_path, "does not name a backup archive")


def _hostile_tar() -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for name, kind in (
            ("ok.json", tarfile.REGTYPE),
            ("../escape.txt", tarfile.REGTYPE),
            ("/etc/cron.d/x", tarfile.REGTYPE),
            ("link", tarfile.SYMTYPE),
            ("hard", tarfile.LNKTYPE),
            ("dev", tarfile.CHRTYPE),
            ("ok.json", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                info.linkname = "/etc/shadow"
            payload = b"{}" if kind == tarfile.REGTYPE else b""
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return stream.getvalue()


def test_a_signed_but_unsafe_archive_is_refused_naming_every_problem(
    site: SiteFixture, made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive = made[1]
    data = _hostile_tar()
    archive.write_bytes(data)
    sig = archive.with_name(archive.name + ".sig")
    statement = orjson.loads(sig.read_bytes())
    for field in ("signature", "certificates"):
        del statement[field]
    statement.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    sig.write_bytes(_sign_statement(statement, load_backup_signer(site.site)))
    location, _, trusted = made
    with pytest.raises(BackupError) as caught:
        restore(str(location.parent.parent), "test-site", tmp_path / "r", trusted)
    message = str(caught.value)
    for expected in (
        "'../escape.txt': a path out of the archive",
        "'/etc/cron.d/x': a path out",
        "'link': not a regular file",
        "'hard': not a regular file",
        "'dev': not a regular file",
        "'ok.json': twice in the archive",
    ):
        assert expected in message
    assert not (tmp_path / "r").exists() and not (tmp_path / "escape.txt").exists()


def test_restore_never_mixes_with_an_existing_state(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    location, _, trusted = made
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "catalogs.json").write_text("{}")
    with pytest.raises(BackupError, match="not an empty directory"):
        restore(str(location.parent.parent), "test-site", busy, trusted)
    assert (busy / "catalogs.json").read_text() == "{}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore(str(location.parent.parent), "test-site", empty, trusted).files > 0


def test_backup_errors_name_what_and_why(site: SiteFixture, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no backup target"):
        backup(site.site, load_backup_signer(site.site))
    with pytest.raises(BackupError, match="cannot upload"):
        backup(site.site, load_backup_signer(site.site), "http://127.0.0.1:9/")
    (site.root / "passphrase").write_bytes(b"wrong\n")
    with pytest.raises(BackupError, match="the site's deployer key"):
        load_backup_signer(site.site)
    files, left_out = backup_files(site.site)
    assert (
        "keys/deployer.pem" in left_out
        and ("keys/deployer.crt", site.site.keys_dir / "deployer.crt") in files
    )


def test_the_command_line_backs_up_and_restores(site: SiteFixture, tmp_path: Path) -> None:
    fill(site.site)
    before = snapshot(site.site.data_dir)
    store = tmp_path / "store"
    config = site.write_config(backup_target=str(store))
    runner = CliRunner()
    answer = runner.invoke(main, ["site", "backup", "--config", str(config)])
    assert answer.exit_code == 0, answer.output
    assert "files" in answer.stdout and "private/" in answer.stderr
    trusted = _trusted_copy(site, tmp_path)
    target = tmp_path / "new-data"
    restore_command = ["site", "restore", "--from", str(store), "--to", str(target)]
    restore_command += ["--site", "test-site", "--trusted", str(trusted)]
    answer = runner.invoke(main, restore_command)
    assert answer.exit_code == 0, answer.output
    # the restore is audited in the restored log, after the backup's events
    restored = snapshot(target)
    audited = {k for k in restored if k.startswith("audit/")}
    assert {k: v for k, v in restored.items() if k not in audited} == {
        k: v for k, v in before.items() if k not in audited
    }
    events = AuditLog(target / "audit").search(action="site")[0]
    who, where = getpass.getuser(), f"cli@{socket.gethostname()}"
    assert [(e.action, e.who, e.role, e.where, e.outcome) for e in events] == [
        ("site.restore", who, "admin", where, "ok")
    ], "the backup's own audit record was made after the archive"
    assert AuditLog(target / "audit").search(action="site.restore")[1] == 1
    old_events = [e.to_json() for e in AuditLog(site.site.data_dir / "audit").search()[0]]
    backed_up = site.audit.search(action="site.backup")[0]
    assert [(e.who, e.role, e.where, e.target) for e in backed_up] == [
        (who, "admin", where, str(store))
    ]
    new_events = [e.to_json() for e in AuditLog(target / "audit").search()[0]]
    assert [e for e in old_events if e["action"] != "site.backup"] == new_events[1:]
    answer = runner.invoke(main, restore_command)
    assert answer.exit_code == 1 and "not an empty directory" in answer.stderr
    answer = runner.invoke(
        main, ["site", "backup", "--config", str(config), "--to", "http://127.0.0.1:9/"]
    )
    assert answer.exit_code == 1 and "cannot upload" in answer.stderr
    failed = site.audit.search(action="site.backup", outcome="failed")[0]
    assert [(e.who, e.where, e.target) for e in failed] == [(who, where, "http://127.0.0.1:9/")]
    answer = runner.invoke(main, ["site", "backup"])
    assert answer.exit_code == 2 and "--config" in answer.stderr


@pytest.mark.slow
def test_the_site_server_backs_itself_up_on_schedule(site: SiteFixture, tmp_path: Path) -> None:
    store = tmp_path / "scheduled"
    app = site.app(backup_target=str(store), backup_interval_hours=1 / 3600)
    scheduler = app.extensions["comptoir.backups"]
    latest = store / "backups" / "test-site" / "latest"
    deadline = time.monotonic() + 20
    while not latest.exists() or scheduler.last_success() is None:
        assert time.monotonic() < deadline, scheduler.last_error
        time.sleep(0.1)
    first = latest.read_text()
    while latest.read_text() == first:  # and again, one interval later
        assert time.monotonic() < deadline, scheduler.last_error
        time.sleep(0.1)
    scheduler.stop()
    events = site.audit.search(action="site.backup")[0]
    assert len(events) >= 2 and {(e.role, e.outcome) for e in events} == {("system", "ok")}
    assert not site.app().extensions["comptoir.backups"]._thread, "no target, no thread"
