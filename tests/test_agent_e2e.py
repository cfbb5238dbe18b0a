"""End to end: the real agent process, a repository over HTTP, a real slapd, through the bridge."""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_bridge.agent.config import AgentConfig, RepositoryConfig
from agent_bridge.agent.installer import Installer
from agent_bridge.agent.sources import make_sources
from agent_bridge.agent.state import AgentState
from agent_bridge.agent.tasks import TaskCancelled
from agent_bridge.client import AgentClient
from agent_bridge.errors import AuthenticationError, NotAllowedError, UnknownPackageError
from agent_bridge.models import Session
from tests.agent_harness import AgentProcess, agent_config, build_school_repository, wait_until
from tests.helpers import PKI
from tests.httpserver import serve_directory
from tests.slapd import USERS, SlapdServer
from wapt.trust import TrustStore


@dataclass
class Site:
    root: Path
    agent: AgentProcess
    client: AgentClient
    install_root: Path

    def login(self, user: str) -> Session:
        return self.client.login(user, USERS[user][0])

    def marker(self, package: str) -> Path:
        return self.install_root / f"{package}.installed"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ldap_server: SlapdServer) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    repo = build_school_repository(root, sleep=600)
    with serve_directory(repo) as url:
        config, port = agent_config(root, url, ldap_server, install_timeout=3)
        agent = AgentProcess(config, port, root / "agent.log")
        client = agent.start()
        try:
            # The agent's first update reads the host package: the rules package is pending.
            wait_until(lambda: (u := client.checkupgrades()) and u.upgrades)
            for task in client.upgrade():
                done = client.wait_for_task(task.id, timeout=30)
                assert done.state == "done", done.logs
            yield Site(root, agent, client, root / "installed-software")
        finally:
            agent.stop()


def test_ping_and_identity(site: Site) -> None:
    assert site.client.ping()["version"] == "1.8.2"
    assert site.client.ping(host_info=True)["uuid"] == "4c4c4544-0042-3010-8053-b7c04f4e3132"


def test_login_through_the_directory(site: Site) -> None:
    session = site.login("alice")
    assert session.username == "alice"
    assert {"profs-maths", "profs-tous"} <= set(session.groups)
    with pytest.raises(AuthenticationError):
        site.client.login("alice", "not-her-password")
    with pytest.raises(AuthenticationError):
        site.client.login("nobody", "x")


def test_the_catalog_follows_the_rules(site: Site) -> None:
    alice = {p.package for p in site.client.packages(site.login("alice"))}
    assert alice == {"tis-notepad", "tis-app", "tis-raise", "tis-hang", "tis-slow", "tis-tampered"}
    bob = {p.package for p in site.client.packages(site.login("bob"))}
    assert bob == {"tis-notepad"}
    assert site.client.packages(site.login("carol")) == []
    admin = {p.package for p in site.client.packages(site.login("dave"))}
    assert "tis-secret" in admin and "tis-rules" not in admin


def test_install_and_remove_really_happen(site: Site) -> None:
    alice = site.login("alice")
    task = site.client.install(alice, "tis-notepad")
    done = site.client.wait_for_task(task.id, timeout=30)
    assert done.state == "done", done.logs
    assert site.marker("tis-notepad").read_text() == "1.0-1\n"
    rows = {p.package: p for p in site.client.status()}
    assert rows["tis-notepad"].install_status == "OK"
    listed = {p.package: p for p in site.client.packages(alice)}
    assert listed["tis-notepad"].state == "installed"

    [removal] = site.client.remove(alice, "tis-notepad")
    assert site.client.wait_for_task(removal.id, timeout=30).state == "done"
    assert not site.marker("tis-notepad").exists()
    assert "tis-notepad" not in {p.package for p in site.client.status()}


def test_dependencies_are_installed_first(site: Site) -> None:
    task = site.client.install(site.login("alice"), "tis-app")
    done = site.client.wait_for_task(task.id, timeout=30)
    assert done.state == "done", done.logs
    assert site.marker("tis-libx").exists() and site.marker("tis-app").exists()
    assert done.logs.index("Installing tis-libx") < done.logs.index("Installing tis-app")


def test_refusals(site: Site) -> None:
    bob = site.login("bob")
    with pytest.raises(NotAllowedError):
        site.client.install(bob, "tis-app")
    with pytest.raises(NotAllowedError):
        site.client.install(site.login("alice"), "tis-secret")
    with pytest.raises(UnknownPackageError):
        site.client.install(bob, "no-such-package")
    forged = Session("alice", site.login("bob").token, ("profs-maths",))
    with pytest.raises(AuthenticationError):
        site.client.install(forged, "tis-notepad")
    assert not site.marker("tis-secret").exists()
    assert "bob may not install tis-app" in site.agent.log_text()


def test_raw_requests_without_token_or_with_garbage(site: Site) -> None:
    def status_of(path: str, auth: str | None = None) -> int:
        request = urllib.request.Request(site.agent.url + path)
        if auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return e.code

    assert status_of("/install.json?package=tis-notepad") == 401
    assert status_of("/install.json?package=tis-notepad", "alice:forged.token.value") == 401
    assert status_of("/packages.json", "alice:alice-pw") == 401, "passwords only at /login"
    assert status_of("/cancel_all_tasks.json") == 401


def test_a_raising_setup_is_recorded_with_its_traceback(site: Site) -> None:
    task = site.client.install(site.login("alice"), "tis-raise")
    done = site.client.wait_for_task(task.id, timeout=30)
    assert done.state == "error"
    row = {p.package: p for p in site.client.status()}["tis-raise"]
    assert row.install_status == "ERROR"
    assert "RuntimeError: boom from setup.py" in row.install_output
    assert "Traceback" in row.install_output
    # A failed package is not installed: asking again runs it again (and it fails again).
    again = site.client.install(site.login("alice"), "tis-raise")
    assert again.id != task.id
    retried = site.client.wait_for_task(again.id, timeout=30)
    assert retried.state == "error" and "boom from setup.py" in retried.logs


def test_a_hanging_setup_is_killed_at_its_timeout(site: Site) -> None:
    task = site.client.install(site.login("alice"), "tis-hang")
    done = site.client.wait_for_task(task.id, timeout=30)
    assert done.state == "error"
    assert "timed out" in done.logs
    assert {p.package: p for p in site.client.status()}["tis-hang"].install_status == "ERROR"


def test_a_cancelled_install_is_cancelled_and_says_it_may_be_incomplete(site: Site) -> None:
    """Cancelled while setup.py runs: the task is cancelled (not an error), and the package's
    record says truthfully that setup.py was stopped half-way."""
    alice = site.login("alice")
    site.marker("tis-hang").unlink(missing_ok=True)
    task = site.client.install(alice, "tis-hang")
    wait_until(site.marker("tis-hang").exists)  # setup.py has started
    site.client.cancel_task(task.id, alice)
    # /tasks_status.json (what wait_for_task follows) names each task's list too
    assert site.client.wait_for_task(task.id, timeout=30).state == "cancelled"
    listing = site.client.tasks(timeout_ms=0)  # /tasks.json names the list of each task
    assert listing is not None
    [done] = [t for t in listing.all() if t.id == task.id]
    assert done.state == "cancelled", done.logs
    assert "may be incomplete" in done.logs
    row = {p.package: p for p in site.client.status()}["tis-hang"]
    assert row.install_status == "ERROR"
    assert row.install_output.rstrip().endswith(
        "cancelled while setup.py install() was running: it was stopped half-way, so the "
        "installation may be incomplete"
    )
    assert "installed tis-hang 1.0-1" in row.install_output


@pytest.mark.parametrize("when", ["verifying", "installing"])
def test_an_install_cancelled_before_setup_py_ran_changes_nothing(
    site: Site, tmp_path: Path, when: str
) -> None:
    """Cancelled before the child started (early, or just before the runner): the machine's
    record stays as it was, whether the package was installed before or not."""
    config = AgentConfig(
        data_dir=tmp_path / "agent",
        trusted_certs=PKI / "ca.crt",
        repositories=(RepositoryConfig("school", path=site.root / "repo"),),
        install_env={"COMPTOIR_INSTALL_ROOT": str(tmp_path)},
    )
    config.data_dir.mkdir()
    trust = TrustStore.from_path(config.trusted_certs)
    state = AgentState(config.state_file)
    try:
        [source] = make_sources(config)
        loaded = source.load_index(trust)
        assert loaded is not None
        entry = next(e for e in loaded.index.entries if e.package == "tis-notepad")
        installer = Installer(config, trust, state)
        previous = installer.install(entry, source, user="alice", progress=lambda *_: None)
        (tmp_path / "tis-notepad.installed").unlink()
        for before in (previous, None):
            if before is None:
                state.remove_installed("tis-notepad")
            cancel = threading.Event()

            def progress(percent: float, step: str, cancel: threading.Event = cancel) -> None:
                if step.startswith(when):
                    cancel.set()

            with pytest.raises(TaskCancelled, match=r"cancelled before setup\.py ran"):
                installer.install(entry, source, user="bob", progress=progress, cancel=cancel)
            assert state.get_installed("tis-notepad") == before
            assert not (tmp_path / "tis-notepad.installed").exists()
    finally:
        state.close()


def test_a_package_that_fails_verification_never_runs(site: Site) -> None:
    task = site.client.install(site.login("alice"), "tis-tampered")
    done = site.client.wait_for_task(task.id, timeout=30)
    assert done.state == "error"
    assert "sha256 mismatch" in done.logs
    assert not site.marker("tis-tampered").exists()
    assert "tis-tampered" not in {p.package for p in site.client.status()}


def test_a_killed_agent_reports_the_interrupted_install(site: Site) -> None:
    alice = site.login("alice")
    task = site.client.install(alice, "tis-slow")
    wait_until(site.marker("tis-slow").exists)
    site.agent.kill()
    client = site.agent.start()
    site.client = client
    row = {p.package: p for p in client.status()}["tis-slow"]
    assert row.install_status == "ERROR"
    assert "interrupted" in row.install_output
    old = client.task(task.id)
    assert old is not None and old.state == "error" and "interrupted" in old.logs
    # The token survives the restart (the key is kept), and the package can be retried.
    assert {p.package for p in client.packages(alice)}


def test_command_line_through_the_bridge(site: Site) -> None:
    from click.testing import CliRunner

    from comptoir.cli import main

    runner = CliRunner()
    env = {"COMPTOIR_PASSWORD": USERS["alice"][0]}
    url = ["--url", site.agent.url]
    result = runner.invoke(main, ["agent", "list", *url, "--user", "alice"], env=env)
    assert result.exit_code == 0, result.output
    assert "tis-notepad" in result.output and "tis-secret" not in result.output
    result = runner.invoke(
        main, ["agent", "install", "tis-notepad", *url, "--user", "alice"], env=env
    )
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(": done")
    assert site.marker("tis-notepad").exists()
    result = runner.invoke(main, ["agent", "status", *url])
    assert "tis-notepad" in result.output and "OK" in result.output
    result = runner.invoke(
        main, ["agent", "install", "tis-secret", *url, "--user", "alice"], env=env
    )
    assert result.exit_code == 1 and "tis-secret" in result.output
    result = runner.invoke(
        main, ["agent", "remove", "tis-notepad", *url, "--user", "alice"], env=env
    )
    assert result.exit_code == 0 and not site.marker("tis-notepad").exists()


def test_only_loopback_peers_are_served(tmp_path: Path) -> None:
    """The service itself refuses other peers (checked in-process: no traffic leaves loopback)."""
    from agent_bridge.agent.auth import write_accounts_file
    from agent_bridge.agent.config import load_config
    from agent_bridge.agent.core import Agent
    from agent_bridge.agent.service import create_app
    from tests.helpers import PKI

    accounts = tmp_path / "accounts.toml"
    write_accounts_file(accounts, {"x": ("pw", "X", [])})
    config = load_config(
        None,
        environ={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "trusted_certs": str(PKI / "ca.crt"),
            "accounts_file": str(accounts),
        },
    )
    client = create_app(Agent(config)).test_client()
    assert client.get("/ping", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/ping", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    for peer in ("10.1.2.3", "192.168.0.7", "8.8.8.8", "::ffff:10.0.0.1"):
        answer = client.get("/login", environ_base={"REMOTE_ADDR": peer})
        assert answer.status_code == 403, peer


def test_the_catalog_is_sent_again_only_when_it_changed(site: Site) -> None:
    alice = site.login("alice")
    first, etag = site.client.packages_if_changed(alice, None)
    assert first and etag
    again, same = site.client.packages_if_changed(alice, etag)
    assert again is None and same == etag, "unchanged: 304, nothing to parse"
    bob_rows, bob_etag = site.client.packages_if_changed(site.login("bob"), etag)
    assert bob_rows is not None and bob_etag != etag, "another user's list is another answer"
