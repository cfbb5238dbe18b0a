"""The `Packages` index: scanning like WAPT (incrementally), loading and verifying entries."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PKI, fixture_signer, write_source
from tests.httpserver import serve_directory
from wapt import errors
from wapt.control import format_records, parse_records
from wapt.package import build_package
from wapt.repository import SCAN_MEMBER, load_index, read_index, recorded_files, scan_repository
from wapt.trust import TrustStore


@pytest.fixture(scope="module")
def trust() -> TrustStore:
    return TrustStore.from_path(PKI / "ca.crt")


def _summary(entry: Any) -> dict[str, Any]:
    return {
        k: entry.get(k) for k in ("package", "version", "maturity", "filename", "size", "md5sum")
    }


def test_fixture_repository_loads_like_wapt(
    wapt_fixtures: Path, expected: dict[str, Any], trust: TrustStore
) -> None:
    index = load_index(wapt_fixtures / "repo", trust)
    wanted = sorted(
        (e["package"], e["version"], e["maturity"], e["filename"], e["size"], e["md5sum"])
        for e in expected["repo_check"]["accepted"]
    )
    got = sorted(tuple(_summary(e).values()) for e in index.entries)
    assert got == wanted
    assert index.discarded == []
    assert {e.signer for e in index.entries} == {"Acme Packager", "Acme Deployer"}


def test_scan_of_the_fixture_repository_reproduces_wapt_index(
    wapt_fixtures: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for path in (wapt_fixtures / "repo").glob("*.wapt"):
        shutil.copy(path, repo)
    result = scan_repository(repo)
    assert result.written and len(result.read) == 6
    with zipfile.ZipFile(wapt_fixtures / "repo" / "Packages") as zf:
        theirs = parse_records(zf.read("Packages").decode("utf-8"))
        their_certs = sorted(n for n in zf.namelist() if n.startswith("ssl/"))
    with zipfile.ZipFile(repo / "Packages") as zf:
        ours = parse_records(zf.read("Packages").decode("utf-8"))
        our_certs = sorted(n for n in zf.namelist() if n.startswith("ssl/"))
    by_file = {e.filename: e for e in theirs}
    assert sorted(by_file) == sorted(e.filename for e in ours)
    for entry in ours:
        assert format_records([entry]) == format_records([by_file[entry.filename]])
    assert our_certs == their_certs
    icons = sorted(p.name for p in (repo / "icons").iterdir())
    assert icons == sorted(p.name for p in (wapt_fixtures / "repo" / "icons").iterdir())


def test_index_of_every_fixture_package_matches_wapt_verdicts(
    wapt_fixtures: Path, expected: dict[str, Any], tmp_path: Path, trust: TrustStore
) -> None:
    repo = tmp_path / "all"
    repo.mkdir()
    for case in expected["packages"]:
        shutil.copy(wapt_fixtures / "packages" / case["file"], repo)
    scan_repository(repo)
    index = load_index(repo, trust)
    verdicts = {e.filename: "accepted" for e in index.entries}
    verdicts.update({d.entry.filename: "discarded" for d in index.discarded})
    assert verdicts == {c["file"]: c["index_entry_verdict"] for c in expected["packages"]}
    reasons = {d.entry.filename: type(d.reason) for d in index.discarded}
    assert reasons["acme-rogue_1.0-1_PROD.wapt"] is errors.UntrustedCertificateError
    assert reasons["acme-expired_1.0-1_PROD.wapt"] is errors.CertificateExpiredError
    tampered = "acme-hello_1.0.0-1_PROD_fr.tampered-control.wapt"
    assert reasons[tampered] is errors.ControlSignatureError


@pytest.fixture
def built_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    signer = fixture_signer("codesign")
    for i in range(4):
        source = write_source(tmp_path / "src", f"tis-p{i}", f"1.{i}-1", files={"f.txt": b"x"})
        build_package(source, signer, repo)
    return repo


def test_rescan_reads_only_what_changed(built_repo: Path, trust: TrustStore) -> None:
    first = scan_repository(built_repo)
    assert first.written and len(first.read) == 4
    mtime = (built_repo / "Packages").stat().st_mtime_ns

    again = scan_repository(built_repo)
    assert not again.written and again.read == [] and again.reused == 4
    assert (built_repo / "Packages").stat().st_mtime_ns == mtime

    touched = built_repo / "tis-p1_1.1-1.wapt"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    third = scan_repository(built_repo)
    assert third.written and third.read == ["tis-p1_1.1-1.wapt"] and third.reused == 3

    (built_repo / "tis-p2_1.2-1.wapt").unlink()
    fourth = scan_repository(built_repo)
    assert fourth.removed == ["tis-p2_1.2-1.wapt"] and fourth.read == []
    assert sorted(e.package for e in load_index(built_repo, trust).entries) == [
        "tis-p0",
        "tis-p1",
        "tis-p3",
    ]

    forced = scan_repository(built_repo, force=True)
    assert len(forced.read) == 3


def test_scan_records_each_files_sha256_and_inode(built_repo: Path) -> None:
    scan_repository(built_repo)
    data = (built_repo / "Packages").read_bytes()
    recorded = recorded_files(data)
    packages = sorted(built_repo.glob("*.wapt"))
    assert sorted(recorded) == [p.name for p in packages]
    for path in packages:
        record = recorded[path.name]
        assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record.matches(path.stat())
    # a record written before sha256 and inodes were kept: each file is read once more
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    state = json.loads(members[SCAN_MEMBER])
    for info in state["files"].values():
        del info["sha256"], info["ino"]
    members[SCAN_MEMBER] = json.dumps(state).encode()
    with zipfile.ZipFile(built_repo / "Packages", "w") as zf:
        for name, member in members.items():
            zf.writestr(name, member)
    assert recorded_files((built_repo / "Packages").read_bytes()) == {}
    upgraded = scan_repository(built_repo)
    assert upgraded.written and len(upgraded.read) == len(packages)
    assert recorded_files((built_repo / "Packages").read_bytes()) == recorded
    # the same bytes under another inode (`cp -p`, rsync) are another file: read again
    moved = packages[0]
    shutil.copy2(moved, built_repo / "copy.tmp")
    os.replace(built_repo / "copy.tmp", moved)
    again = scan_repository(built_repo)
    assert again.read == [moved.name] and again.reused == len(packages) - 1
    assert recorded_files((built_repo / "Packages").read_bytes())[moved.name].matches(moved.stat())
    for garbage in (b"", b"not a zip", members["Packages"]):
        assert recorded_files(garbage) == {}


def test_unreadable_package_is_skipped_with_its_reason(built_repo: Path, trust: TrustStore) -> None:
    (built_repo / "garbage.wapt").write_bytes(b"not a zip at all")
    result = scan_repository(built_repo)
    assert [name for name, _ in result.skipped] == ["garbage.wapt"]
    assert isinstance(result.skipped[0][1], errors.VerificationError)
    assert len(load_index(built_repo, trust).entries) == 4
    again = scan_repository(built_repo)
    assert not again.written, "a skipped file that did not change is not read again"


def test_host_packages_are_left_out_unless_asked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    host = write_source(tmp_path, "4c4c4544-0001", "0-1", section="host", setup=False)
    build_package(host, fixture_signer("plain"), repo)
    assert scan_repository(repo).entries == []
    assert len(scan_repository(repo, force=True, include_host_packages=True).entries) == 1


def test_index_over_http(built_repo: Path, trust: TrustStore) -> None:
    scan_repository(built_repo)
    with serve_directory(built_repo) as url:
        index = load_index(url, trust)
        assert len(index.entries) == 4
        assert index.last_modified
        assert len(load_index(url + "/Packages", trust).entries) == 4
        with pytest.raises(errors.FetchError, match="404"):
            load_index(url + "/missing/", trust)
    with pytest.raises(errors.FetchError):
        load_index(url, trust, timeout=2)


def _index_with(records: str, certs: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("Packages", records)
        for name, pem in certs.items():
            zf.writestr(name, pem)
    return buffer.getvalue()


def test_hostile_index_entries_are_discarded(wapt_fixtures: Path, trust: TrustStore) -> None:
    with zipfile.ZipFile(wapt_fixtures / "repo" / "Packages") as zf:
        records = parse_records(zf.read("Packages").decode("utf-8"))
        certs = {n: zf.read(n) for n in zf.namelist() if n.startswith("ssl/")}
    traversal = records[0].copy()
    traversal["filename"] = "../../etc/passwd"
    no_cert = records[1].copy()
    no_cert["signer_fingerprint"] = "00" * 32
    data = _index_with(format_records([traversal, no_cert, records[2]]), certs)
    index = read_index(data, trust, source="hostile")
    assert [e.filename for e in index.entries] == [records[2].filename]
    kinds = [type(d.reason) for d in index.discarded]
    assert kinds == [errors.UnsafePathError, errors.UntrustedCertificateError]


def test_index_without_its_certificates_discards_everything(
    wapt_fixtures: Path, trust: TrustStore
) -> None:
    with zipfile.ZipFile(wapt_fixtures / "repo" / "Packages") as zf:
        text = zf.read("Packages").decode("utf-8")
    index = read_index(_index_with(text, {}), trust, source="nocerts")
    assert index.entries == [] and len(index.discarded) == 6


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not a zip", "not a zip"),
        (_index_with("x", {}).replace(b"Packages", b"Packagez"), "no Packages"),
        (_index_with("package: a\nno colon here\n", {}), "no colon"),
    ],
)
def test_malformed_index_is_a_clear_error(data: bytes, match: str, trust: TrustStore) -> None:
    with pytest.raises(errors.IndexFormatError, match=match):
        read_index(data, trust, source="bad")


def test_scan_reports_progress(built_repo: Path) -> None:
    calls: list[tuple[int, int]] = []
    scan_repository(built_repo, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
