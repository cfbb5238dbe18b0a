"""Machine assignments: host and group packages, pending work, upgrade and the shutdown run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_bridge.agent.auth import write_accounts_file
from agent_bridge.agent.host import compute_pending
from agent_bridge.agent.rules import RulesError, granted_packages, merge_rules, parse_rules
from agent_bridge.client import AgentClient
from tests.agent_harness import HOST_UUID, AgentProcess, wait_until
from tests.helpers import PKI, fixture_signer, write_source
from tests.httpserver import serve_directory
from tests.slapd import free_port
from wapt.control import PackageEntry
from wapt.package import build_package
from wapt.repository import scan_repository
from wapt.resolve import HostProfile

SETUP = (
    "import os\n"
    "def install():\n"
    "    open(os.path.join(os.environ['COMPTOIR_INSTALL_ROOT'], control.package), 'w').close()\n"
    "def uninstall():\n"
    "    os.remove(os.path.join(os.environ['COMPTOIR_INSTALL_ROOT'], control.package))\n"
)


def entry(package: str, version: str = "1-1", **fields: str) -> PackageEntry:
    return PackageEntry({"package": package, "version": version, **fields})


def test_pending_lists_what_wapt_lists() -> None:
    catalog = [
        entry("app", depends="lib"),
        entry("lib"),
        entry("old", "2-1"),
        entry("room", section="group", depends="app", at_shutdown="heavy"),
        entry("heavy"),
    ]
    installed = {"old": entry("old", "1-1"), "gone": entry("gone")}
    host = entry(HOST_UUID, section="host", depends="room", conflicts="gone")
    pending = compute_pending(host, catalog, installed, HostProfile())
    assert pending.install == ["room(=1-1)"]
    assert pending.additional == ["lib(=1-1)", "app(=1-1)"]
    assert pending.upgrade == ["old(=2-1)"]
    assert pending.remove == ["gone"]
    assert pending.at_shutdown == ["heavy(=1-1)"]
    assert pending.shutdown_requests == ["heavy"]


def test_pending_reports_what_cannot_be_resolved() -> None:
    host = entry(HOST_UUID, section="host", depends="missing")
    pending = compute_pending(host, [], {}, HostProfile())
    assert pending.install == [] and "missing: no such package" in pending.errors[0]


def test_rules_are_parsed_strictly_and_merged(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"maths": ["geogebra"], "tous": ["firefox"]}))
    (tmp_path / "b.json").write_text(json.dumps({"maths": ["scratch"]}))
    (tmp_path / "bad.json").write_text(json.dumps({"maths": "geogebra"}))
    rules = merge_rules([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"])
    assert rules["maths"] == {"geogebra", "scratch"}
    assert granted_packages(rules, ["maths", "tous"]) == {"geogebra", "scratch", "firefox"}
    assert granted_packages(rules, ["nobody"]) == frozenset()
    for bad in (b"[1, 2]", b"{not json", b'{"g": [1]}', b"\xff\xfe"):
        with pytest.raises(RulesError, match=r"rules\.json"):
            parse_rules(bad, source="rules.json")


def _publish_host(root: Path, depends: str, conflicts: str = "", version: str = "1") -> None:
    hosts = root / "hosts"
    hosts.mkdir(exist_ok=True)
    source = write_source(
        root / f"host-src-{version}",
        HOST_UUID,
        version,
        section="host",
        setup=False,
        depends=depends,
        conflicts=conflicts,
    )
    build_package(source, fixture_signer("plain"), hosts, overwrite=True)


def test_assignments_end_to_end(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    packager = fixture_signer("codesign")
    for name in ("tis-x", "tis-app", "tis-lib", "tis-heavy"):
        depends = "tis-lib" if name == "tis-app" else ""
        source = write_source(
            tmp_path / "src",
            name,
            "1-1",
            setup=False,
            depends=depends,
            files={"setup.py": SETUP.encode()},
        )
        build_package(source, packager, repo)
    group = write_source(
        tmp_path / "src",
        "tis-room",
        "1-1",
        section="group",
        setup=False,
        depends="tis-app",
        at_shutdown="tis-heavy",
    )
    build_package(group, fixture_signer("plain"), repo)
    scan_repository(repo)
    _publish_host(tmp_path, depends="tis-x")
    installed = tmp_path / "installed"
    installed.mkdir()
    accounts = tmp_path / "accounts.toml"
    write_accounts_file(accounts, {"admin": ("pw", "Admin", ["waptselfservice"])})

    with serve_directory(repo) as url:
        port = free_port()
        config = tmp_path / "agent.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\ntrusted_certs = "{PKI / "ca.crt"}"\n'
            f'port = {port}\nhost_uuid = "{HOST_UUID}"\nhost_repository = "{tmp_path / "hosts"}"\n'
            f'accounts_file = "{accounts}"\n'
            f'[install_env]\nCOMPTOIR_INSTALL_ROOT = "{installed}"\n'
            f'[[repositories]]\nname = "school"\nurl = "{url}"\n'
        )
        agent = AgentProcess(config, port, tmp_path / "agent.log")
        client: AgentClient = agent.start()
        try:
            first = wait_until(lambda: (u := client.checkupgrades()) and u.upgrades and u)
            assert first.upgrades == ("tis-x(=1-1)",)
            [task] = client.upgrade()
            assert client.wait_for_task(task.id, timeout=30).state == "done"
            assert (installed / "tis-x").exists()

            # The admin moves the machine into room 101 and takes tis-x away.
            _publish_host(tmp_path, depends="tis-room", conflicts="tis-x", version="2")
            client.wait_for_task(client.update().id, timeout=30)
            pending = client.checkupgrades()
            assert pending is not None
            assert pending.pending.install == ("tis-room(=1-1)",)
            assert pending.pending.additional == ("tis-lib(=1-1)", "tis-app(=1-1)")
            assert pending.pending.remove == ("tis-x",)
            assert pending.pending.at_shutdown == ("tis-heavy(=1-1)",)

            [task] = client.upgrade()
            done = client.wait_for_task(task.id, timeout=30)
            assert done.state == "done", done.logs
            assert sorted(p.name for p in installed.iterdir()) == ["tis-app", "tis-lib"]
            assert not (installed / "tis-heavy").exists(), "kept for the shutdown run"

            [task] = client.upgrade(shutdown=True)
            assert client.wait_for_task(task.id, timeout=30).state == "done"
            assert (installed / "tis-heavy").exists()
            after = client.checkupgrades()
            assert after is not None and after.upgrades == () and not after.pending.remove
        finally:
            agent.stop()
