"""End to end through the agent process: no repository reachable (its URL is a closed loopback
port), packages installed from USB bundles, one configured by path and others detected as they
are "inserted" under a fake media root; rollback, freeze, mix-and-match and arbitrary files are
refused with a message that says what to do, through the agent's API."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent_bridge.client import AgentClient
from agent_bridge.models import Session
from tests.agent_harness import AgentProcess, agent_config, build_school_repository, wait_until
from tests.slapd import USERS, SlapdServer, free_port
from tests.test_bundle_common import PASSPHRASE
from usb_bundler import BundleKeys, create_or_update_bundle, new_bundle_keys
from wapt.bundle import METADATA_DIR


@dataclass
class Offline:
    root: Path
    repo: Path
    keys: BundleKeys
    media: Path
    agent: AgentProcess
    client: AgentClient

    def login(self, user: str) -> Session:
        return self.client.login(user, USERS[user][0])

    def offered(self, user: str = "dave") -> set[str]:
        return {p.package for p in self.client.packages(self.login(user))}

    def packages(self, *names: str) -> list[Path]:
        return [next(self.repo.glob(f"{name}_*.wapt")) for name in names]

    def insert(self, bundle: Path, label: str) -> Path:
        """Plug a stick: its bundle appears under the media root, as a desktop mounts it."""
        mount = self.media / "technicien" / label
        shutil.copytree(bundle, mount)
        return mount

    def errors(self) -> str:
        upgrades = self.client.checkupgrades()
        assert upgrades is not None
        return "\n".join(upgrades.errors)

    def install(self, user: str, package: str) -> None:
        task = self.client.install(self.login(user), package)
        done = self.client.wait_for_task(task.id, timeout=30)
        assert done.state == "done", done.logs


@pytest.fixture(scope="module")
def offline(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer
) -> Iterator[Offline]:
    root = tmp_path_factory.mktemp("offline")
    repo = build_school_repository(root, sleep=600)
    keys = new_bundle_keys(root / "bundle-keys", PASSPHRASE)
    configured = root / "configured-stick"
    names = ("tis-rules", "tis-notepad")
    create_or_update_bundle(
        configured, [next(repo.glob(f"{n}_*.wapt")) for n in names], keys, name="Salle 101"
    )
    media = root / "media"
    media.mkdir()
    # the académie repository is unreachable: nothing listens on this loopback port
    config, port = agent_config(root, f"http://127.0.0.1:{free_port()}", ldap_server)
    with open(config, "a", encoding="utf-8") as f:
        f.write(
            f"""
[[repositories]]
name = "stick"
path = "{configured}"
bundle_root = "{keys.directory / "root.json"}"

[usb]
detect = true
bundle_root = "{keys.directory / "root.json"}"
roots = ["{media}/*/*"]
poll_seconds = 0.2
"""
        )
    agent = AgentProcess(config, port, root / "agent.log")
    client = agent.start()
    try:
        wait_until(lambda: (u := client.checkupgrades()) and u.upgrades)
        for task in client.upgrade():  # the host package's tis-rules, from the stick
            done = client.wait_for_task(task.id, timeout=30)
            assert done.state == "done", done.logs
        yield Offline(root, repo, keys, media, agent, client)
    finally:
        agent.stop()


def test_installs_from_the_configured_stick_with_no_repository(offline: Offline) -> None:
    assert "school" in offline.errors()  # the repository is down, and the agent says so
    assert offline.offered("alice") == {"tis-notepad"}
    offline.install("alice", "tis-notepad")
    marker = offline.root / "installed-software" / "tis-notepad.installed"
    assert marker.read_text() == "1.0-1\n"


def test_a_detected_stick_is_offered_then_withdrawn(offline: Offline) -> None:
    bundle = offline.root / "bundle-app"
    create_or_update_bundle(bundle, offline.packages("tis-app", "tis-libx"), offline.keys)
    mount = offline.insert(bundle, "CLE-APP")
    wait_until(lambda: "tis-app" in offline.offered("alice"), timeout=30)
    offline.install("alice", "tis-app")
    installed = offline.root / "installed-software"
    assert (installed / "tis-app.installed").exists() and (
        installed / "tis-libx.installed"
    ).exists()
    shutil.rmtree(mount)  # pulled out
    wait_until(lambda: "tis-app" not in offline.offered("dave"), timeout=30)
    assert "tis-notepad" in offline.offered("dave")  # the configured stick stays


def check_refused(offline: Offline, bundle: Path, label: str, *expected: str) -> None:
    mount = offline.insert(bundle, label)
    try:
        wait_until(lambda: str(mount) in offline.errors(), timeout=30)
        errors = offline.errors()
        for text in expected:
            assert text in errors, errors
        assert "tis-slow" not in offline.offered("dave")
    finally:
        shutil.rmtree(mount)
    wait_until(lambda: str(mount) not in offline.errors(), timeout=30)


def test_rollback_is_refused(offline: Offline) -> None:
    bundle = offline.root / "bundle-slow"
    create_or_update_bundle(bundle, offline.packages("tis-slow"), offline.keys)
    old = offline.root / "bundle-slow-v1"
    shutil.copytree(bundle, old)
    create_or_update_bundle(bundle, offline.packages("tis-slow"), offline.keys)  # version 2
    current = offline.insert(bundle, "CLE-V2")
    wait_until(lambda: "tis-slow" in offline.offered("dave"), timeout=30)
    shutil.rmtree(current)
    wait_until(lambda: "tis-slow" not in offline.offered("dave"), timeout=30)
    check_refused(
        offline,
        old,
        "CLE-V1",
        "refused",
        "older than version 2 already seen on this machine",
        "ask for the current one",
    )


def test_freeze_is_refused(offline: Offline) -> None:
    bundle = offline.root / "bundle-expired"
    long_ago = datetime.now(UTC) - timedelta(days=100)
    create_or_update_bundle(bundle, offline.packages("tis-slow"), offline.keys, now=long_ago)
    check_refused(offline, bundle, "CLE-EXPIREE", "bundle expired on", "ask for a fresh bundle")


def test_mix_and_match_is_refused(offline: Offline) -> None:
    bundle, other = offline.root / "bundle-mixed", offline.root / "bundle-other"
    create_or_update_bundle(bundle, offline.packages("tis-slow"), offline.keys)
    create_or_update_bundle(other, offline.packages("tis-hang"), offline.keys)
    shutil.copy(other / METADATA_DIR / "1.snapshot.json", bundle / METADATA_DIR / "1.snapshot.json")
    check_refused(offline, bundle, "CLE-MELEE", "different", "write the bundle again")


def test_arbitrary_files_are_refused(offline: Offline) -> None:
    bundle = offline.root / "bundle-autorun"
    create_or_update_bundle(bundle, offline.packages("tis-slow"), offline.keys)
    (bundle / "autorun.inf").write_text("[autorun]\nopen=evil.exe\n")
    check_refused(
        offline, bundle, "CLE-AUTORUN", "autorun.inf: not part of the bundle", "remove it"
    )
