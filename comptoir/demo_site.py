"""The running demo: Comptoir's agent, portal and site server on loopback.

Everything stays on this machine: the agent reads the demo repository as a directory (no web
server, no network), logs teachers in with the demo accounts, and installs into
`<demo>/installed/`; the portal talks to the agent and serves the teacher's pages. The site
server (the admin side, `portal.site`) has its own keys, state and repository under
`<demo>/site/`, seeded through the real lifecycle with copies of the demo's packages; the demo
agent keeps reading the demo repository, so the teacher side behaves the same without it.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent_bridge.agent.auth import write_accounts_file
from agent_bridge.client import AgentClient

if TYPE_CHECKING:
    from flask import Flask

    from portal.site.hosts import HostRecord
    from portal.site.model import MachineGroup, PublishedCatalog
    from portal.site.settings import SiteSettings

AGENT_PORT = 18088
PORTAL_PORT = 8080
SITE_PORT = 8090
#: the site server's session cookie: not the teacher portal's, so one browser can use both
SITE_COOKIE = "comptoir_site_session"


@dataclass(frozen=True)
class DemoSite:
    root: Path
    agent_url: str
    portal_url: str


def write_agent_config(
    root: Path, host: str, port: int, *, site_url: str | None = None, enrolment: Path | None = None
) -> Path:
    """The demo agent's configuration; returns its path. With `site_url`, the agent registers
    with the demo site server (proving `enrolment`, the site's secret) and reports to it."""
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
"""
        + (
            f"""
[site]
url = "{site_url}"
enrolment_secret_file = "{enrolment}"
retry_seconds = 1
"""
            if site_url and enrolment
            else ""
        ),
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
    from portal import create_app

    app = create_app(
        {
            "data_dir": str(root / "portal-data"),
            "agent_url": agent_url,
            "icons_dir": str(root / "agent-data" / "cache" / "icons"),
            "port": port,
        }
    )
    with _serving(app, port) as url:
        yield url


@contextmanager
def _serving(app: Flask, port: int) -> Iterator[str]:
    """`app` served by waitress on 127.0.0.1:`port` in a daemon thread; yields its URL."""
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=port, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()


def prepare_site(
    root: Path,
    passphrase: bytes,
    accounts: Mapping[str, tuple[str, str, Iterable[str]]],
    trusted_ca: Path,
) -> SiteSettings:
    """Lay out the demo site under `root` (made with the real code) and return its settings.

    `keys/`: the site's keys (`init_site_keys`, encrypted with `passphrase`, made once and
    reused), with `trusted_ca` (the demo CA) among the certificates uploads must chain to, as an
    académie's CA would be; `passphrase` (mode 0600); `accounts.toml`: the local admin
    accounts; `data/`: the state; `repository/`: the site repository.
    """
    from portal.site.keys import init_site_keys
    from portal.site.settings import site_settings_from_mapping
    from wapt.fsutil import write_atomic

    root.mkdir(parents=True, exist_ok=True)
    keys = root / "keys"
    init_site_keys(keys, passphrase, site_name="comptoir-demo", organization="Comptoir demo")
    shutil.copyfile(trusted_ca, keys / "trusted" / "demo-ca.crt")
    write_atomic(root / "passphrase", passphrase + b"\n", mode=0o600)
    write_accounts_file(root / "accounts.toml", accounts)
    (root / "repository").mkdir(exist_ok=True)
    return site_settings_from_mapping(
        {
            "data_dir": "data",
            "repository_dir": "repository",
            "keys_dir": "keys",
            "key_passphrase_file": "passphrase",
            "accounts_file": "accounts.toml",
            "name": "comptoir-demo",
            "package_prefix": "demo-site",
        },
        source=str(root),
        base=root.resolve(),
    )


def seed_site(
    site: SiteSettings,
    packages: Iterable[Path],
    group: MachineGroup,
    catalog: PublishedCatalog,
    *,
    who: str,
) -> None:
    """Give the demo site something to show, through the real lifecycle and stores.

    Each package file not on the site yet is uploaded (a copy, verified completely), then
    qualified (re-signed PREPROD by the site developer key), then, if its maturity is PROD,
    promoted (re-signed PROD by the production key). `group` and `catalog` are created when
    missing (an admin's changes are kept from one run to the next); then the site publishes
    its group and host packages.

    Raises:
        LifecycleError, ModelError, PublishError: the real code refused something; the
            message names what and why.
    """
    from portal.site.assignments import AssignmentStore
    from portal.site.catalogs import CatalogStore
    from portal.site.lifecycle import PackageLifecycle
    from portal.site.publish import publish
    from wapt.package import read_control

    lifecycle = PackageLifecycle(site)
    known = {(r.package, r.version) for r in lifecycle.releases()}
    for path in packages:
        entry = read_control(path)
        if (entry.package, entry.version) in known:
            continue
        with path.open("rb") as stream:
            release = lifecycle.upload(stream, who=who, name=path.name)
        release = lifecycle.qualify(release.id, who=who, note="demo")
        if entry.maturity == "PROD":
            lifecycle.promote(release.id, who=who, note="demo")
    groups = AssignmentStore(site.data_dir)
    if group.name not in {g.name for g in groups.groups()}:
        groups.save_group(group, create=True)
    catalogs = CatalogStore(site.data_dir)
    if catalog.name not in {c.name for c in catalogs.list()}:
        catalogs.create(catalog)
    publish(site, groups)


@contextmanager
def running_site(site: SiteSettings, data_dir: Path, agent_url: str, port: int) -> Iterator[str]:
    """The site server (the portal with its admin pages) served by waitress in a thread of
    this process; yields its URL. Stops its background work when done."""
    from portal import create_app

    app = create_app(
        {
            "data_dir": str(data_dir),
            "agent_url": agent_url,
            "port": port,
            "cookie_name": SITE_COOKIE,
            "site": site,
        }
    )
    try:
        with _serving(app, port) as url:
            yield url
    finally:
        scheduler = app.extensions.get("comptoir.backups")
        if scheduler is not None:
            scheduler.stop()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_DASHBOARD_ITEM = re.compile(
    r'class="dashboard-count">(\d+)</span>\s*<span class="dashboard-label">([^<]+)</span>'
)


def check_admin_login(url: str, user: str, password: str, timeout: float = 10.0) -> list[str]:
    """Sign in at `url`admin/login as a browser does (GET the form, POST it with its CSRF
    token, follow to the dashboard); returns the dashboard's items ("label: count").

    Raises:
        RuntimeError: a step did not answer as it should; the message says which.
    """
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    login = urllib.parse.urljoin(url, "admin/login")
    with opener.open(login, timeout=timeout) as answer:
        form = answer.read().decode("utf-8")
    token = _CSRF.search(form)
    if token is None:
        raise RuntimeError(f"{login}: the sign-in form has no CSRF token")
    body = urllib.parse.urlencode(
        {"csrf_token": token.group(1), "username": user, "password": password}
    ).encode("ascii")
    try:
        with opener.open(login, data=body, timeout=timeout) as answer:
            where, page = answer.geturl(), answer.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{login}: signing in as {user!r} was refused ({e.code})") from e
    if urllib.parse.urlsplit(where).path != "/admin/" or 'class="dashboard"' not in page:
        raise RuntimeError(f"{login}: signing in as {user!r} did not lead to the dashboard")
    return [f"{label.strip()}: {count}" for count, label in _DASHBOARD_ITEM.findall(page)]


def wait_for_report(site: SiteSettings, host: str, timeout: float = 60.0) -> HostRecord | None:
    """The site's record of `host` once it has taken one of its reports, or None after
    `timeout` seconds (the agent registers, then reports after each task and retries)."""
    from portal.site.hosts import make_host_store

    store = make_host_store(site)
    deadline = time.monotonic() + timeout
    while True:
        record = store.get(host)
        if record is not None and record.last_seen:
            return record
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


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
