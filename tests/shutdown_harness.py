"""A machine with work for the shutdown run: real signed packages, the real agent, a fast clock."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent_bridge.agent.auth import write_accounts_file
from agent_bridge.client import AgentClient
from agent_bridge.models import Upgrades
from agent_bridge.shutdown import Choice, InstallProgress, Plan, Report
from tests.agent_harness import HOST_UUID, AgentProcess, wait_until
from tests.helpers import PKI, fixture_signer, write_source
from tests.httpserver import serve_directory
from tests.slapd import free_port
from wapt.package import build_package
from wapt.repository import scan_repository

SETUP = (
    "import os, time\n"
    "def install():\n"
    "    time.sleep(SLEEP)\n"
    "    open(os.path.join(os.environ['COMPTOIR_INSTALL_ROOT'], control.package), 'w').close()\n"
    "def uninstall():\n"
    "    os.remove(os.path.join(os.environ['COMPTOIR_INSTALL_ROOT'], control.package))\n"
)

#: name -> (seconds its setup.py sleeps, impacted_process)
PACKAGES = {
    "tis-heavy": (0, "fake-editor"),
    "tis-quick": (0, ""),
    "tis-light": (0, ""),
    "tis-hang": (600, ""),
}
#: the dummy application `tis-heavy` names in impacted_process
APP_NAME = "fake-editor"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Machine:
    """A repository, a host package, and the agent process that obeys them."""

    root: Path
    client: AgentClient
    agent: AgentProcess
    config: Path
    installed: Path
    host_version: int = 1

    def publish_host(
        self, *, depends: str = "", at_shutdown: str = "", deadlines: str = ""
    ) -> Upgrades:
        """Sign a new host package, make the agent read it, return its `checkupgrades`."""
        self.host_version += 1
        publish_host(self.root, depends, at_shutdown, deadlines, self.host_version)
        task = self.client.update()
        assert self.client.wait_for_task(task.id, timeout=30).state == "done"
        upgrades = self.client.checkupgrades()
        assert upgrades is not None
        return upgrades

    def is_installed(self, name: str) -> bool:
        return (self.installed / name).exists()


def publish_host(root: Path, depends: str, at_shutdown: str, deadlines: str, version: int) -> None:
    fields = {"depends": depends}
    if at_shutdown:
        fields["at_shutdown"] = at_shutdown
    if deadlines:
        fields["deadlines"] = deadlines
    source = write_source(
        root / f"host-src-{version}",
        HOST_UUID,
        str(version),
        section="host",
        setup=False,
        **fields,
    )
    build_package(source, fixture_signer("plain"), root / "hosts", overwrite=True)


def build_repository(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True)
    packager = fixture_signer("codesign")
    for name, (sleep, impacted) in PACKAGES.items():
        extra = {"impacted_process": impacted} if impacted else {}
        source = write_source(
            root / "src",
            name,
            "1-1",
            setup=False,
            files={"setup.py": SETUP.replace("SLEEP", str(sleep)).encode()},
            **extra,
        )
        build_package(source, packager, repo)
    scan_repository(repo)
    (root / "hosts").mkdir()
    return repo


def write_agent_config(
    root: Path,
    *,
    trusted: Path,
    repo_url: str,
    host_repository: str | Path,
    install_timeout: float = 900,
    extra: str = "",
) -> tuple[Path, int, Path]:
    """The agent's TOML in `root` (data in `root/data`, installs into `root/installed`, a local
    admin account `admin`/`pw`) plus `extra` TOML; return its path, its port and `installed`."""
    installed = root / "installed"
    installed.mkdir(exist_ok=True)
    accounts = root / "accounts.toml"
    write_accounts_file(accounts, {"admin": ("pw", "Admin", ["waptselfservice"])})
    port = free_port()
    config = root / "agent.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\ntrusted_certs = "{trusted}"\n'
        f'port = {port}\nhost_uuid = "{HOST_UUID}"\nhost_repository = "{host_repository}"\n'
        f'accounts_file = "{accounts}"\ninstall_timeout = {install_timeout}\n'
        f'[install_env]\nCOMPTOIR_INSTALL_ROOT = "{installed}"\n'
        f'[[repositories]]\nname = "school"\nurl = "{repo_url}"\n{extra}'
    )
    return config, port, installed


@contextmanager
def running_machine(root: Path, *, install_timeout: float = 900) -> Iterator[Machine]:
    """The agent on loopback, its repository served over HTTP, an empty host package."""
    repo = build_repository(root)
    publish_host(root, "", "", "", 1)
    with serve_directory(repo) as url:
        config, port, installed = write_agent_config(
            root,
            trusted=PKI / "ca.crt",
            repo_url=url,
            host_repository=root / "hosts",
            install_timeout=install_timeout,
        )
        agent = AgentProcess(config, port, root / "agent.log")
        client = agent.start()
        try:
            wait_until(lambda: client.checkupgrades() is not None)
            yield Machine(root, client, agent, config, installed)
        finally:
            agent.stop()


@contextmanager
def dummy_app(root: Path, *, ignore_term: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """A real process named `fake-editor` (a copy of sleep, or a shell that ignores SIGTERM)."""
    exe = root / APP_NAME
    if ignore_term:
        exe.write_text("#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n")
        exe.chmod(0o755)
        command = [str(exe)]  # run through its #! line: the kernel names it fake-editor
    else:
        shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
        command = [str(exe), "600"]
    process = subprocess.Popen(command)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


class FastClock:
    """Real time plus whatever `sleep` skipped: waits cost (almost) nothing, time still flows."""

    def __init__(self, now: datetime | None = None) -> None:
        self.offset = 0.0
        self.start = time.monotonic()
        self.base = now or datetime.now(UTC)
        self.slept = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.monotonic() - self.start)

    def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        self.slept += max(0.0, seconds)
        time.sleep(0.005)


@dataclass
class ScriptedUI:
    """A `ShutdownUI` that records what it was shown and answers with a fixed choice."""

    choice: Choice | None = None
    #: answer `choice` once this many countdown ticks have passed
    after_ticks: int = 0
    plans: list[Plan] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    closed: list[list[str]] = field(default_factory=list)
    progress: list[InstallProgress] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)

    def show(self, plan: Plan) -> None:
        self.plans.append(plan)

    def countdown(self, remaining: float) -> Choice | None:
        self.ticks.append(remaining)
        return self.choice if len(self.ticks) > self.after_ticks else None

    def closing(self, apps: list[str]) -> None:  # type: ignore[override]
        self.closed.append(list(apps))

    def installing(self, progress: InstallProgress) -> None:
        self.progress.append(progress)

    def finished(self, report: Report) -> None:
        self.reports.append(report)


def past(hours: float = 1) -> str:
    return utc_text(datetime.now(UTC) - timedelta(hours=hours))


def future(hours: float = 48) -> str:
    return utc_text(datetime.now(UTC) + timedelta(hours=hours))
