"""The real agent process reporting to a real site server on loopback, and onto a USB stick.

The site server is the portal app with a `[site]` table (`tests.site_harness.make_site`),
served by werkzeug's threaded server in this process; the agent is `comptoir agent serve` in a
child process on the school repository of `tests.agent_harness`, with the session's slapd.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from agent_bridge.agent.auth import write_accounts_file
from agent_bridge.agent.config import load_config
from agent_bridge.reports import host_key_from_seed, public_key_text, verify_report
from portal.site.hosts import HostStore
from tests.agent_harness import (
    HOST_UUID,
    AgentProcess,
    agent_config,
    build_school_repository,
    wait_until,
)
from tests.helpers import PKI
from tests.httpserver import serve_directory
from tests.site_harness import make_site
from tests.slapd import USERS, SlapdServer, free_port
from tests.test_bundle_common import Corpus, fresh_copy
from usb_bundler import BundleKeys
from wapt.bundle import REPORTS_DIR

pytest_plugins = ["tests.test_bundle_common"]  # the shared bundle fixtures


class ServedApp:
    """A Flask app served on 127.0.0.1:`port` by werkzeug's threaded server, in a thread."""

    def __init__(self, app: Flask, port: int = 0) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def served() -> Iterator[list[ServedApp]]:
    running: list[ServedApp] = []
    yield running
    for item in running:
        item.stop()


def host_public_key(data_dir: Path) -> str:
    return public_key_text(host_key_from_seed((data_dir / "private" / "host_key").read_bytes()))


@pytest.mark.slow
def test_the_agent_registers_and_reports_after_each_task(
    tmp_path: Path, ldap_server: SlapdServer, served: list[ServedApp]
) -> None:
    site = make_site(tmp_path / "site")
    app = site.app()  # makes the enrolment secret
    store: HostStore = app.extensions["comptoir.hosts"]
    secret = tmp_path / "agent-secret"
    shutil.copy(site.site.enrolment_secret_file, secret)
    secret.chmod(0o600)
    site_port = free_port()  # nothing listens there yet: the site is down
    repo = build_school_repository(tmp_path / "school")
    root = tmp_path / "school"
    with serve_directory(repo) as repo_url:
        config, port = agent_config(root, repo_url, ldap_server, install_timeout=5)
        with open(config, "a", encoding="utf-8") as f:
            f.write(
                f'\n[site]\nurl = "http://127.0.0.1:{site_port}"\n'
                f'enrolment_secret_file = "{secret}"\nretry_seconds = 0.3\n'
                "report_period_minutes = 60\n"
            )
        agent = AgentProcess(config, port, root / "agent.log")
        client = agent.start()
        try:
            # the first update's report fails: nobody answers
            wait_until(lambda: "cannot report to the site server" in agent.log_text())
            assert store.get(HOST_UUID) is None
            served.append(ServedApp(app, site_port))  # the site comes up: the retry gets in
            record = wait_until(lambda: (h := store.get(HOST_UUID)) and h.last_seen and h)
            data_dir = root / "agent-data"
            assert record.public_key == host_public_key(data_dir)
            assert oct((data_dir / "private" / "host_key").stat().st_mode)[-3:] == "600"
            assert record.pending.install == ("tis-rules(=1-1)",)  # from the host package
            registered, _ = site.audit.search(action="host.register")
            assert [(e.who, e.role, e.where) for e in registered] == [
                (HOST_UUID, "host", "127.0.0.1")
            ]

            dave = client.login("dave", USERS["dave"][0])
            done = client.wait_for_task(client.install(dave, "tis-notepad").id, timeout=30)
            assert done.state == "done"
            record = wait_until(
                lambda: (
                    (h := store.get(HOST_UUID))
                    and "tis-notepad" in {p.package for p in h.installed}
                    and h
                )
            )
            installs = wait_until(lambda: site.audit.search(action="host.install")[0])
            assert [(e.who, e.target, e.where, e.outcome) for e in installs] == [
                ("dave", "tis-notepad", HOST_UUID, "ok")
            ]

            failed = client.wait_for_task(client.install(dave, "tis-raise").id, timeout=30)
            assert failed.state == "error"
            logs = wait_until(lambda: store.failure_logs(HOST_UUID))
            assert logs[0].package == "tis-raise" and "boom from setup.py" in logs[0].log
            record = store.get(HOST_UUID)
            assert record is not None and record.status == "failed"
            assert [h.seq for h in record.history] == sorted(
                (h.seq for h in record.history), reverse=True
            )
            assert len(record.history) >= 3
            # each event audited once, whatever the number of reports that carried it
            wait_until(lambda: len(site.audit.search(action="host.install")[0]) == 2)
            assert [e.outcome for e in site.audit.search(action="host.install")[0]] == [
                "failed",
                "ok",
            ]
            log = agent.log_text()
            assert secret.read_bytes().hex() not in log
            assert (data_dir / "private" / "host_key").read_bytes().hex() not in log
        finally:
            agent.stop()
    # the agent keeps its seq: a restarted agent continues above the site's last report
    state = json.loads((root / "agent-data" / "state.json").read_text("utf-8"))
    seq = next(d["value"]["seq"] for d in state["params"].values() if d["key"] == "site_report")
    assert seq >= store.get(HOST_UUID).last_seq  # type: ignore[union-attr]


def offline_agent(tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys) -> tuple[Path, Path]:
    """An offline site's agent settings (no [site] table, a USB bundle as the only source):
    the settings file and the stick."""
    stick = fresh_copy(bundle_v1, tmp_path)
    root_file = tmp_path / "bundle-root.json"
    root_file.write_bytes(site_keys.root)
    accounts = tmp_path / "accounts.toml"
    write_accounts_file(accounts, {"tech": ("tech-pw", "Technician", ["waptselfservice"])})
    install_root = tmp_path / "installed"
    install_root.mkdir()
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "agent-data"}"\ntrusted_certs = "{PKI / "ca.crt"}"\n'
        f'port = {port}\nhost_uuid = "{HOST_UUID}"\naccounts_file = "{accounts}"\n'
        f'[install_env]\nCOMPTOIR_INSTALL_ROOT = "{install_root}"\n'
        f'[[repositories]]\nname = "usb"\npath = "{stick}"\nbundle_root = "{root_file}"\n',
        "utf-8",
    )
    assert load_config(config, environ={}).site is None
    return config, stick


@pytest.mark.slow
def test_the_agent_writes_its_report_onto_the_stick(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus
) -> None:
    """An offline site: no [site] table, a USB bundle as the only source."""
    config, stick = offline_agent(tmp_path, bundle_v1, site_keys)
    port = load_config(config, environ={}).port
    agent = AgentProcess(config, port, tmp_path / "agent.log")
    client = agent.start()
    report_file = stick / REPORTS_DIR / f"{HOST_UUID}.json"
    try:
        wait_until(lambda: client.packages(client.login("tech", "tech-pw"), latest=True))
        assert not report_file.exists()  # an update alone writes nothing onto the stick
        session = client.login("tech", "tech-pw")
        done = client.wait_for_task(client.install(session, "tis-gimp").id, timeout=30)
        assert done.state == "done", done.logs
        data = wait_until(lambda: report_file.is_file() and report_file.read_bytes())
        report = verify_report(data, host_public_key(tmp_path / "agent-data"))
        assert report.host_uuid == HOST_UUID
        assert [p.package for p in report.installed] == ["tis-gimp"]
        assert [(e.user, e.action, e.package, e.outcome) for e in report.events] == [
            ("tech", "install", "tis-gimp", "done")
        ]
        first_seq = report.seq
        removal = client.remove(session, "tis-gimp")
        assert client.wait_for_task(removal[0].id, timeout=30).state == "done"
        public = host_public_key(tmp_path / "agent-data")
        later = wait_until(
            lambda: (r := verify_report(report_file.read_bytes(), public)).seq > first_seq and r
        )
        assert later.installed == ()
        assert [e.action for e in later.events] == ["install", "remove"]
        # the reports directory never makes the bundle fail its verification
        assert client.wait_for_task(client.update().id, timeout=30).state == "done"
        assert client.packages(session, latest=True)
    finally:
        agent.stop()
    assert sorted(p.name for p in (stick / REPORTS_DIR).iterdir()) == [f"{HOST_UUID}.json"]


@pytest.mark.slow
def test_a_lost_task_history_starts_a_new_epoch_the_site_tells_apart(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus
) -> None:
    """The agent's task file is lost: its task ids start again at 1. Its reports say so with a
    new epoch, and the site audits the new events although their ids are old ones."""
    config, stick = offline_agent(tmp_path, bundle_v1, site_keys)
    port = load_config(config, environ={}).port
    data_dir = tmp_path / "agent-data"
    report_file = stick / REPORTS_DIR / f"{HOST_UUID}.json"
    site = HostStore(tmp_path / "site")
    reports = []
    for life in range(2):
        agent = AgentProcess(config, port, tmp_path / f"agent-{life}.log")
        client = agent.start()
        try:
            session = client.login("tech", "tech-pw")
            done = client.wait_for_task(client.install(session, "tis-gimp").id, timeout=30)
            assert done.state == "done", done.logs
            removal = client.remove(session, "tis-gimp")[0]
            assert client.wait_for_task(removal.id, timeout=30).state == "done"
            public = host_public_key(data_dir)

            def has_removal(public: str = public, last: int = removal.id) -> bool:
                if not report_file.is_file():
                    return False
                events = verify_report(report_file.read_bytes(), public).events
                return bool(events) and events[-1].id == last

            wait_until(has_removal)
        finally:
            agent.stop()
        data = report_file.read_bytes()
        reports.append((verify_report(data, public), data))
        (data_dir / "tasks.json").unlink()  # the task file is lost
    (first, first_data), (second, second_data) = reports
    assert first.epoch and second.epoch and first.epoch != second.epoch
    assert [e.action for e in second.events] == ["install", "remove"]
    assert max(e.id for e in second.events) <= max(e.id for e in first.events), "ids restarted"
    assert second.seq > first.seq  # the reports' numbering is the agent state's, not lost
    site.register(HOST_UUID, public, "PC")
    assert [e.action for e in site.ingest(first_data).events] == ["install", "remove"]
    assert site.ingest(second_data).events == second.events  # new, although the ids are old
