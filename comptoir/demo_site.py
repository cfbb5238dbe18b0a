"""The running demo: Comptoir's agent and portal on loopback, over the demo repository.

Everything stays on this machine: the agent reads the demo repository as a directory (no web
server, no network), logs teachers in with the demo accounts, and installs into
`<demo>/installed/`; the portal talks to the agent and serves the teacher's pages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent_bridge.client import AgentClient

AGENT_PORT = 18088
PORTAL_PORT = 8080


@dataclass(frozen=True)
class DemoSite:
    root: Path
    agent_url: str
    portal_url: str


def write_agent_config(root: Path, host: str, port: int) -> Path:
    """The demo agent's configuration; returns its path."""
    installed = root / "installed"
    installed.mkdir(exist_ok=True)
    config = root / "agent.toml"
    config.write_text(
        f"""# The demo agent (written by `comptoir demo --serve`)
data_dir = "agent-data"
trusted_certs = "pki/ca.crt"
port = {port}
host_uuid = "{host}"
host_repository = "hosts"
accounts_file = "accounts.toml"
maturities = ["PROD"]
install_timeout = 120

[install_env]
COMPTOIR_INSTALL_ROOT = "{installed.resolve()}"

[[repositories]]
name = "demo"
path = "repo"
""",
        "utf-8",
    )
    return config


@contextmanager
def running_agent(root: Path, config: Path, port: int) -> Iterator[AgentClient]:
    """`comptoir agent serve` in a child process; the client once it answers."""
    log = open(root / "agent.log", "ab")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "comptoir", "agent", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    try:
        client = AgentClient(f"http://127.0.0.1:{port}", connect_retries=20.0)
        client.ping()
        yield client
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def apply_assignments(client: AgentClient, timeout: float = 120.0) -> None:
    """Wait for the agent's first update, then install what the demo machine is assigned."""
    deadline = time.monotonic() + timeout
    while client.checkupgrades() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    for task in client.upgrade():
        client.wait_for_task(task.id, timeout=timeout)


@contextmanager
def running_portal(root: Path, agent_url: str, port: int) -> Iterator[str]:
    """The portal served by waitress in a thread of this process; yields its URL."""
    from waitress.server import create_server

    from portal import create_app

    app = create_app(
        {
            "data_dir": str(root / "portal-data"),
            "agent_url": agent_url,
            "icons_dir": str(root / "agent-data" / "cache" / "icons"),
            "port": port,
        }
    )
    server = create_server(app, host="127.0.0.1", port=port, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_window(url: str, title: str = "Comptoir") -> bool:
    """Show the portal in a pywebview window (Qt) and block until it is closed.

    Returns False, having shown nothing, when there is no display or no Qt backend (the
    `kiosk` extra: `pip install 'comptoir[kiosk]'`); the caller then prints the URL.
    """
    if not display_available():
        return False
    try:
        import qtpy  # noqa: F401 (the Qt backend pywebview needs)
        import webview
    except ImportError:
        return False
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1" if os.geteuid() == 0 else "0")
    webview.create_window(title, url, width=1024, height=768)
    webview.start(gui="qt")
    return True
