"""Groups and assignments published as signed packages, checked with the real agent's code."""

from __future__ import annotations

import getpass
import socket
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent_bridge.agent.host import compute_pending
from agent_bridge.agent.rules import parse_rules
from agent_bridge.errors import NotAllowedError
from portal.site.assignments import AssignmentStore
from portal.site.audit import AuditLog
from portal.site.keys import load_signer
from portal.site.lifecycle import PackageLifecycle
from portal.site.model import MachineGroup
from portal.site.publish import publish
from portal.site.settings import SiteSettings
from tests.agent_harness import HOST_UUID, AgentProcess, wait_until
from tests.helpers import fixture_signer, write_source
from tests.httpserver import serve_directory
from tests.lifecycle_harness import site_settings
from tests.slapd import SlapdServer, free_port
from tests.test_agent_assignments import SETUP
from wapt.control import PackageEntry
from wapt.package import build_package, verify_package
from wapt.repository import load_index
from wapt.resolve import HostProfile
from wapt.trust import TrustStore

OTHER_HOST = "0f6b1f52-1c2d-4f1e-9e55-3b1c0a2d9e01"
ROOM_101 = "Lycée Chateaubriand — salle 101"
SOFTWARE = {"tis-app": "tis-lib", "tis-lib": "", "tis-x": "", "tis-y": "", "tis-old": ""}


def production_software(site: SiteSettings, root: Path) -> None:
    """Each of `SOFTWARE` made by an académie packager and taken through the site's lifecycle
    to production (signed by the site's production key)."""
    life = PackageLifecycle(site)
    incoming = root / "incoming"
    incoming.mkdir()
    for name, depends in SOFTWARE.items():
        source = write_source(
            root / "src",
            name,
            "1.0-1",
            setup=False,
            depends=depends,
            files={"setup.py": SETUP.encode()},
        )
        path = build_package(source, fixture_signer("codesign"), incoming)
        with path.open("rb") as stream:
            item = life.upload(stream, who="dave", name=path.name)
        life.promote(life.qualify(item.id, who="dave").id, who="dave")


def production_trust(site: SiteSettings) -> TrustStore:
    return TrustStore.from_path(site.keys_dir / "agents" / "production-machines.crt")


def rooms(store: AssignmentStore) -> datetime:
    store.save_group(
        MachineGroup("salle-101", ROOM_101, (HOST_UUID.upper(),), ("profs-maths",)), create=True
    )
    store.save_group(
        MachineGroup("salle-102", "Salle 102", (OTHER_HOST,), ("profs-histoire",)), create=True
    )
    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    store.assign("tis-app", "required", group="salle-101", created_by="dave")
    store.assign("tis-old", "required", group="salle-101", created_by="dave")
    store.assign("tis-x", "available", group="salle-101", created_by="dave")
    store.assign("tis-heavy", "at_shutdown", group="salle-101", deadline=deadline)
    store.assign("tis-y", "available", group="salle-102")
    return deadline


def read_rules(path: Path) -> dict[str, frozenset[str]]:
    with zipfile.ZipFile(path) as zf:
        return parse_rules(zf.read("WAPT/persistent/selfservice.json"), source=path.name)


def test_published_packages_mean_what_the_admin_decided(tmp_path: Path) -> None:
    site = site_settings(tmp_path)
    store = AssignmentStore(site.data_dir)
    deadline = rooms(store)
    store.assign("tis-z", "uninstall", host=HOST_UUID)
    store.assign("tis-w", "at_shutdown", host=HOST_UUID, deadline=deadline + timedelta(hours=1))
    result = publish(site, store)
    assert sorted(result.written) == sorted(
        [
            "test-salle-101_1.wapt",
            "test-salle-101-selfservice_1.wapt",
            "test-salle-102_1.wapt",
            "test-salle-102-selfservice_1.wapt",
            f"{HOST_UUID}.wapt",
            f"{OTHER_HOST}.wapt",
        ]
    )
    trust = production_trust(site)
    repo, hosts = site.repository_dir, site.host_repository_dir
    group = verify_package(repo / "test-salle-101_1.wapt", trust)
    assert group.signer.cn == "test deployer" and not group.signer.is_code_signing
    assert group.entry.section == "group" and group.entry.name == ROOM_101
    assert group.entry.depends == ["tis-app", "tis-old", "test-salle-101-selfservice"]
    assert group.entry.get("at_shutdown") == "tis-heavy"
    when = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert group.entry.get("deadlines") == f"tis-heavy={when}"
    host = verify_package(hosts / f"{HOST_UUID}.wapt", trust).entry
    assert host.section == "host" and host.package == HOST_UUID
    assert host.depends == ["test-salle-101"] and host.conflicts == ["tis-z"]
    assert host.get("at_shutdown") == "tis-w"
    assert str(host.get("deadlines")).startswith("tis-w=")
    assert read_rules(repo / "test-salle-101-selfservice_1.wapt") == {"profs-maths": {"tis-x"}}
    assert read_rules(repo / "test-salle-102-selfservice_1.wapt") == {"profs-histoire": {"tis-y"}}

    # What the agent's own code makes of them.
    catalog = load_index(repo, trust).entries + [
        PackageEntry({"package": n, "version": "1.0-1", "depends": d})
        for n, d in {**SOFTWARE, "tis-heavy": "", "tis-w": ""}.items()
    ]
    installed = {"tis-z": PackageEntry({"package": "tis-z", "version": "1"})}
    pending = compute_pending(host, catalog, installed, HostProfile())
    assert pending.errors == []
    assert pending.install == ["test-salle-101(=1)"]
    assert sorted(pending.additional) == [
        "test-salle-101-selfservice(=1)",
        "tis-app(=1.0-1)",
        "tis-lib(=1.0-1)",
        "tis-old(=1.0-1)",
    ]
    assert pending.remove == ["tis-z"]
    assert sorted(pending.at_shutdown) == ["tis-heavy(=1.0-1)", "tis-w(=1.0-1)"]

    # Publishing again with nothing changed writes nothing.
    stamps = {p: p.stat().st_mtime_ns for p in [*repo.glob("*.wapt"), *hosts.glob("*.wapt")]}
    again = publish(site, store)
    assert again.written == [] and len(again.unchanged) == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A change gives a higher version; the older file goes away; the index follows.
    store.assign("tis-lib", "available", group="salle-101")
    third = publish(site, store)
    assert third.written == ["test-salle-101-selfservice_2.wapt"]
    assert third.removed == ["test-salle-101-selfservice_1.wapt"]
    names = {(e.package, e.version) for e in load_index(repo, trust).entries}
    assert ("test-salle-101-selfservice", "2") in names
    assert ("test-salle-101-selfservice", "1") not in names
    assert read_rules(repo / "test-salle-101-selfservice_2.wapt") == {
        "profs-maths": {"tis-x", "tis-lib"}
    }


def test_a_host_that_leaves_its_groups_is_told_to_remove_them(tmp_path: Path) -> None:
    site = site_settings(tmp_path)
    store = AssignmentStore(site.data_dir)
    rooms(store)
    publish(site, store)
    store.save_group(MachineGroup("salle-101", ROOM_101, (), ("profs-maths",)), create=False)
    result = publish(site, store)
    assert result.written == [f"{HOST_UUID}.wapt"]  # the group packages did not change
    host = verify_package(site.host_repository_dir / f"{HOST_UUID}.wapt", production_trust(site))
    assert host.entry.version == "2" and host.entry.depends == []
    assert host.entry.conflicts == ["test-salle-101", "test-salle-101-selfservice"]
    # Deleting a group leaves its packages for hosts that still name them, and tells its
    # hosts to remove them.
    store.delete_group("salle-102")
    publish(site, store)
    other = verify_package(site.host_repository_dir / f"{OTHER_HOST}.wapt", production_trust(site))
    assert other.entry.depends == []
    assert other.entry.conflicts == ["test-salle-102", "test-salle-102-selfservice"]
    # Back in the group: the conflict goes, the dependency comes back.
    store.save_group(MachineGroup("salle-101", ROOM_101, (HOST_UUID,), ()), create=False)
    publish(site, store)
    host = verify_package(site.host_repository_dir / f"{HOST_UUID}.wapt", production_trust(site))
    assert host.entry.depends == ["test-salle-101"] and host.entry.conflicts == []


def test_contradictions_are_reported(tmp_path: Path) -> None:
    site = site_settings(tmp_path)
    store = AssignmentStore(site.data_dir)
    rooms(store)
    store.assign("tis-app", "uninstall", host=HOST_UUID)
    result = publish(site, store)
    assert any("tis-app: both required and to uninstall" in w for w in result.warnings)


def test_publish_needs_the_deployer_key(tmp_path: Path) -> None:
    from portal.site.publish import PublishError

    site = site_settings(tmp_path, key_passphrase_file=None)
    store = AssignmentStore(site.data_dir)
    with pytest.raises(PublishError, match="key_passphrase_file"):
        publish(site, store)
    # An explicit signer is used as given.
    assert publish(site, store, signer=fixture_signer("plain")).written == []
    assert load_signer(site_settings(tmp_path / "b"), "deployer")


@pytest.mark.slow
def test_the_real_agent_obeys_what_was_published(tmp_path: Path, ldap_server: SlapdServer) -> None:
    site = site_settings(tmp_path)
    production_software(site, tmp_path)
    store = AssignmentStore(site.data_dir)
    rooms(store)
    publish(site, store)
    installed = tmp_path / "installed"
    installed.mkdir()
    with serve_directory(site.repository_dir) as url:
        port = free_port()
        config = tmp_path / "agent.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "agent-data"}"\n'
            f'trusted_certs = "{site.keys_dir / "agents" / "production-machines.crt"}"\n'
            f'port = {port}\nhost_uuid = "{HOST_UUID}"\n'
            f'host_repository = "{site.host_repository_dir}"\n'
            f'[install_env]\nCOMPTOIR_INSTALL_ROOT = "{installed}"\n'
            f'[[repositories]]\nname = "site"\nurl = "{url}"\n'
            f'[ldap]\nuri = "{ldap_server.uri}"\nbase_dn = "dc=example,dc=org"\n'
            'user_base = "ou=people,dc=example,dc=org"\n'
            'group_base = "ou=groups,dc=example,dc=org"\ntimeout = 3.0\n',
            "utf-8",
        )
        agent = AgentProcess(config, port, tmp_path / "agent.log")
        client = agent.start()
        try:
            first = wait_until(lambda: (u := client.checkupgrades()) and u.upgrades and u)
            assert first.pending.install == ("test-salle-101(=1)",), agent.log_text()
            [task] = client.upgrade()
            assert client.wait_for_task(task.id, timeout=60).state == "done", agent.log_text()
            assert sorted(p.name for p in installed.iterdir()) == ["tis-app", "tis-lib", "tis-old"]

            # Available software: offered to the room's teachers (alice), to nobody else.
            alice = client.login("alice", "alice-pw")
            offered = {p.package for p in client.packages(alice)}
            assert "tis-x" in offered and "tis-y" not in offered
            bob = client.login("bob", "bob-pw")
            assert not {"tis-x", "tis-y"} & {p.package for p in client.packages(bob)}
            with pytest.raises(NotAllowedError):
                client.install(bob, "tis-x")
            task = client.install(alice, "tis-x")
            assert client.wait_for_task(task.id, timeout=60).state == "done"
            assert (installed / "tis-x").exists()

            # The admin now wants tis-old gone from the room.
            store.assign("tis-old", "uninstall", group="salle-101", created_by="dave")
            publish(site, store)
            client.wait_for_task(client.update().id, timeout=60)
            pending = client.checkupgrades()
            assert pending is not None and pending.pending.remove == ("tis-old",)
            [task] = client.upgrade()
            assert client.wait_for_task(task.id, timeout=60).state == "done", agent.log_text()
            assert not (installed / "tis-old").exists()
            assert (installed / "tis-app").exists()
        finally:
            agent.stop()


def test_site_init_and_publish_commands(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from comptoir.cli import main
    from portal.settings import load_settings
    from tests.site_harness import ADMIN

    runner = CliRunner()
    config = tmp_path / "site.toml"
    args = [
        "site",
        "init",
        "--data-dir",
        str(tmp_path / "data"),
        "--repository",
        str(tmp_path / "repo"),
        "--name",
        "lycee",
        "--prefix",
        "lycee",
        "--config",
        str(config),
    ]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "production-machines.crt" in first.output
    secret = (tmp_path / "data" / "private" / "key_passphrase").read_text().strip()
    assert secret not in first.output
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert "exists, left as it is" in again.output
    # The skeleton needs the admins' login; then it is a site server's settings.
    from agent_bridge.agent.auth import write_accounts_file

    write_accounts_file(
        tmp_path / "accounts.toml", {ADMIN[0]: (ADMIN[1], "A", ["comptoir-admins"])}
    )
    config.write_text(
        config.read_text().replace(
            '# accounts_file = "accounts.toml"', 'accounts_file = "accounts.toml"'
        )
    )
    site = load_settings(config).site
    assert site is not None and site.package_prefix == "lycee"
    store = AssignmentStore(site.data_dir)
    store.save_group(MachineGroup("cdi", "CDI", (HOST_UUID,)), create=True)
    published = runner.invoke(main, ["site", "publish", "--config", str(config)])
    assert published.exit_code == 0, published.output
    assert "written: lycee-cdi_1.wapt" in published.output
    assert (site.host_repository_dir / f"{HOST_UUID}.wapt").exists()
    # Each command is audited in the site's log: the OS user, role admin, from cli@<host>.
    events = AuditLog(site.data_dir / "audit").search(action="site")[0]
    who, where = getpass.getuser(), f"cli@{socket.gethostname()}"
    assert [(e.action, e.who, e.role, e.where, e.outcome, e.target) for e in events] == [
        ("site.publish", who, "admin", where, "ok", "lycee"),
        ("site.init", who, "admin", where, "ok", "lycee"),
        ("site.init", who, "admin", where, "ok", "lycee"),
    ]
    assert "lycee-cdi_1.wapt" in events[0].details
    assert events[1].details == "made: nothing (every key was there)"
    assert "deployer.crt" in events[2].details
    assert site.key_passphrase_file is not None
    site.key_passphrase_file.write_text("a wrong passphrase\n")
    failed = runner.invoke(main, ["site", "publish", "--config", str(config)])
    assert failed.exit_code == 1, failed.output
    refused = AuditLog(site.data_dir / "audit").search(action="site.publish", outcome="failed")
    assert [(e.who, e.where) for e in refused[0]] == [(who, where)]
    assert refused[0][0].details and refused[0][0].details in failed.output
    bad = runner.invoke(
        main, ["site", "init", "--data-dir", "d", "--repository", "r", "--name", "Bad Name"]
    )
    assert bad.exit_code == 2 and "site name" in bad.output
