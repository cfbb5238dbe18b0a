"""Build a school's repository of real signed packages and run the real agent process on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from agent_bridge.client import AgentClient
from tests.helpers import PKI, fixture_signer, write_source
from tests.slapd import SlapdServer, free_port
from wapt.package import build_package
from wapt.repository import scan_repository

HOST_UUID = "4c4c4544-0042-3010-8053-b7c04f4e3132"

SETUP = """\
from setuphelpers import *
import os, time

BEHAVIOUR = {behaviour!r}


def _marker():
    return os.path.join(os.environ["COMPTOIR_INSTALL_ROOT"], control.package + ".installed")


def install():
    if BEHAVIOUR == "raise":
        raise RuntimeError("boom from setup.py")
    with open(_marker(), "w") as f:
        f.write(control.version + "\\n")
    print("installed", control.package, control.version)
    if BEHAVIOUR in ("hang", "slow"):
        time.sleep({sleep})


def uninstall():
    if os.path.exists(_marker()):
        os.remove(_marker())
    print("removed", control.package)
"""

#: name -> (version, depends, behaviour)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "tis-notepad": ("1.0-1", "", "ok"),
    "tis-libx": ("1.0-1", "", "ok"),
    "tis-app": ("2.0-1", "tis-libx(>=1.0)", "ok"),
    "tis-raise": ("1.0-1", "", "raise"),
    "tis-hang": ("1.0-1", "", "hang"),
    "tis-slow": ("1.0-1", "", "slow"),
    "tis-secret": ("1.0-1", "", "ok"),
    "tis-tampered": ("1.0-1", "", "ok"),
}

RULES = {
    "profs-maths": ["tis-notepad", "tis-app", "tis-raise", "tis-hang", "tis-slow", "tis-tampered"],
    "profs-histoire": ["tis-notepad"],
}


def build_school_repository(root: Path, *, sleep: float = 600) -> Path:
    """A repository of the packages above, a self-service rules package, and a host package.

    `tis-tampered` has a payload file changed after signing: its index entry verifies (the
    control is intact), the package file does not.
    """
    repo = root / "repo"
    repo.mkdir(parents=True)
    sources = root / "src"
    packager, deployer = fixture_signer("codesign"), fixture_signer("plain")
    for name, (version, depends, behaviour) in PACKAGES.items():
        source = write_source(
            sources,
            name,
            version,
            setup=False,
            name=name.replace("tis-", "").title(),
            description=f"Test package {name}",
            description_fr=f"Paquet de test {name} « é »",
            depends=depends,
            files={
                "setup.py": SETUP.format(behaviour=behaviour, sleep=sleep).encode(),
                "files/readme.txt": b"hello",
            },
        )
        build_package(source, packager, repo)
    rules = write_source(
        sources,
        "tis-rules",
        "1-1",
        section="selfservice",
        setup=False,
        files={"WAPT/persistent/selfservice.json": json.dumps(RULES).encode()},
    )
    build_package(rules, deployer, repo)
    _tamper(repo / "tis-tampered_1.0-1.wapt", "files/readme.txt", b"evil")
    scan_repository(repo)

    hosts = root / "hosts"
    hosts.mkdir()
    host = write_source(sources, HOST_UUID, "1", section="host", setup=False, depends="tis-rules")
    build_package(host, deployer, hosts)
    return repo


def _tamper(path: Path, member: str, data: bytes) -> None:
    """Replace one member's bytes after signing: the control and its signature stay valid."""
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, content in members:
            zf.writestr(info, data if info.filename == member else content)


def agent_config(
    root: Path,
    repo_url: str,
    ldap: SlapdServer,
    *,
    port: int | None = None,
    install_timeout: float = 20,
) -> tuple[Path, int]:
    """Write the agent's TOML configuration; return its path and port."""
    port = port or free_port()
    install_root = root / "installed-software"
    install_root.mkdir(exist_ok=True)
    config = f"""
data_dir = "{root / "agent-data"}"
trusted_certs = "{PKI / "ca.crt"}"
port = {port}
host_uuid = "{HOST_UUID}"
host_repository = "{root / "hosts"}"
install_timeout = {install_timeout}
admin_group = "comptoir-admins"
log_level = "DEBUG"

[install_env]
COMPTOIR_INSTALL_ROOT = "{install_root}"

[[repositories]]
name = "school"
url = "{repo_url}"

[ldap]
uri = "{ldap.uri}"
base_dn = "dc=example,dc=org"
user_base = "ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"
timeout = 3.0
"""
    path = root / "agent.toml"
    path.write_text(config, "utf-8")
    return path, port


class AgentProcess:
    """The real agent, `comptoir agent serve`, in a child process."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AgentClient:
        exe = Path(sys.executable).parent / "comptoir"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(exe), "agent", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        client = AgentClient(self.url, connect_retries=15.0)
        client.ping()
        return client

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
