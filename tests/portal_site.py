"""A school site for the portal's tests: real signed packages, the real agent, a real slapd.

`start_site` (each test module makes one `portal_site` fixture of it: one agent per module)
builds a repository of packages made for the portal (display names, French and English
descriptions, categories, an icon, hostile text), serves it over HTTP, starts `comptoir agent
serve` on it with the session's slapd, and installs the self-service rules. `Site.app()`
builds a portal on that agent; `Browser` drives it with Flask's test client, and `soup`
parses its HTML for selector assertions.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup, Tag
from flask import Flask
from werkzeug.test import TestResponse

from agent_bridge.client import AgentClient
from portal import create_app
from portal.settings import load_settings
from tests.agent_harness import HOST_UUID, SETUP, AgentProcess, agent_config, wait_until
from tests.helpers import fixture_signer, write_source
from tests.httpserver import serve_directory
from tests.slapd import USERS, SlapdServer
from wapt.package import build_package
from wapt.repository import scan_repository

XSS_NAME = '<script>alert("name")</script>'
XSS_DESCRIPTION = '"onmouseover="alert(1)" <img src=x onerror=alert(2)>'
XSS_CATEGORY = "<b>bold</b>"

#: name -> (behaviour, control fields); every package is version 1.0-1
PACKAGES: dict[str, tuple[str, dict[str, str]]] = {
    "tis-notepad": (
        "ok",
        {
            "name": "Notepad",
            "description": "A simple text editor",
            "description_fr": "Un éditeur de texte simple",
            "categories": "Office",
        },
    ),
    "tis-geogebra": (
        "ok",
        {
            "name": "GeoGebra",
            "description": "Dynamic mathematics: geometry and algebra",
            "description_fr": "Mathématiques dynamiques : géométrie et algèbre",
            "categories": "Mathematics,Science",
        },
    ),
    "tis-stellarium": (
        "ok",
        {
            "name": "Stellarium",
            "description": "A planetarium",
            "description_fr": "Un planétarium",
            "categories": "Science",
        },
    ),
    "tis-raise": (
        "raise",
        {"name": "Broken Tool", "description": "Always fails", "categories": "Office"},
    ),
    "tis-slow": ("slow", {"name": "Slow Installer", "description": "Takes its time"}),
    "tis-hang": ("hang", {"name": "Hanging Installer", "description": "Never ends"}),
    "tis-xss": (
        "ok",
        {
            "name": XSS_NAME,
            "description": XSS_DESCRIPTION,
            "description_fr": XSS_DESCRIPTION,
            "categories": XSS_CATEGORY,
        },
    ),
    "tis-secret": ("ok", {"name": "Secret", "description": "Granted to nobody"}),
}

RULES = {
    "profs-maths": [name for name in PACKAGES if name != "tis-secret"],
    "profs-histoire": ["tis-notepad"],
}

SLOW_SECONDS = 1.5


def tiny_png() -> bytes:
    """A valid 1×1 PNG (the agent keeps only icons that start like one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x1d\x4e\xd8")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _setup(behaviour: str) -> bytes:
    sleep = 600 if behaviour == "hang" else SLOW_SECONDS
    return SETUP.format(behaviour=behaviour, sleep=sleep).encode()


def build_portal_repository(root: Path) -> Path:
    """The repository of `PACKAGES`, the rules package and the host package, in `root`."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    for name, (behaviour, fields) in PACKAGES.items():
        publish(root, name, "1.0-1", behaviour, fields, scan=False)
    sources = root / "src"
    deployer = fixture_signer("plain")
    rules = write_source(
        sources,
        "tis-rules",
        "1-1",
        section="selfservice",
        setup=False,
        files={"WAPT/persistent/selfservice.json": json.dumps(RULES).encode()},
    )
    build_package(rules, deployer, repo)
    scan_repository(repo)
    hosts = root / "hosts"
    hosts.mkdir()
    host = write_source(sources, HOST_UUID, "1", section="host", setup=False, depends="tis-rules")
    build_package(host, deployer, hosts)
    return repo


def publish(
    root: Path,
    name: str,
    version: str,
    behaviour: str = "ok",
    fields: dict[str, str] | None = None,
    *,
    scan: bool = True,
) -> None:
    """Build `name` at `version` into the repository, replacing its other versions."""
    repo = root / "repo"
    for old in repo.glob(f"{name}_*.wapt"):
        old.unlink()
    files = {"setup.py": _setup(behaviour), "files/readme.txt": b"hello"}
    if name == "tis-notepad":
        files["WAPT/icon.png"] = tiny_png()
    source = write_source(
        root / "src" / version,
        name,
        version,
        setup=False,
        files=files,
        **(fields if fields is not None else PACKAGES[name][1]),
    )
    build_package(source, fixture_signer("codesign"), repo)
    if scan:
        index = repo / "Packages"
        before = int(index.stat().st_mtime)
        scan_repository(repo)
        # The server's Last-Modified counts whole seconds: make the new index visibly newer
        # than the one the agent read, or it would answer its conditional request with 304.
        if int(index.stat().st_mtime) <= before:
            os.utime(index, (before + 1, before + 1))


class FakeClock:
    """Monotonic seconds that tests move forward by hand."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Site:
    root: Path
    agent: AgentProcess
    client: AgentClient
    apps: list[Flask] = field(default_factory=list)

    @property
    def install_root(self) -> Path:
        return self.root / "installed-software"

    @property
    def icons_dir(self) -> Path:
        return self.root / "agent-data" / "cache" / "icons"

    def marker(self, package: str) -> Path:
        return self.install_root / f"{package}.installed"

    def app(self, clock: FakeClock | None = None, **overrides: Any) -> Flask:
        """A portal on this site's agent; `overrides` are settings."""
        values: dict[str, Any] = {
            "agent_url": self.agent.url,
            "data_dir": self.root / f"portal-{len(self.apps)}",
            "icons_dir": self.icons_dir,
            "catalog_cache_seconds": 0,
        }
        values.update(overrides)
        settings = load_settings(None, environ={}, overrides=values)
        app = create_app(settings, clock=clock or time.monotonic)
        self.apps.append(app)
        return app

    def update(self) -> None:
        """Make the agent read the repositories again, and wait for it (icons included)."""
        task = self.client.update(force=True)
        assert self.client.wait_for_task(task.id, timeout=30).state == "done"
        self.wait_for_icons()

    def wait_for_icons(self) -> None:
        """Wait until the agent has the icon of every package it lists that has one in the
        repository: it fetches them on a thread of its own after each update."""
        admin = self.client.login("dave", USERS["dave"][0])
        listed = {row.package_uuid for row in self.client.packages(admin)}
        wanted = {p.stem for p in (self.root / "repo" / "icons").glob("*.png")} & listed
        wait_until(lambda: wanted <= {p.stem for p in self.icons_dir.glob("*.png")})

    def uninstall(self, *names: str) -> None:
        """Remove packages as an admin, so that a test starts from a clean machine."""
        admin = self.client.login("dave", USERS["dave"][0])
        installed = {row.package for row in self.client.status()}
        for name in names:
            if name in installed:
                for task in self.client.remove(admin, name):
                    self.client.wait_for_task(task.id, timeout=30)


def start_site(root: Path, ldap: SlapdServer) -> Iterator[Site]:
    repo = build_portal_repository(root)
    with serve_directory(repo) as url:
        config, port = agent_config(root, url, ldap, install_timeout=20)
        agent = AgentProcess(config, port, root / "agent.log")
        client = agent.start()
        try:
            wait_until(lambda: (u := client.checkupgrades()) and u.upgrades)
            for task in client.upgrade():
                done = client.wait_for_task(task.id, timeout=30)
                assert done.state == "done", done.logs
            site = Site(root, agent, client)
            site.wait_for_icons()
            yield site
        finally:
            agent.stop()


# --- driving the portal ---------------------------------------------------------------------

HTMX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/"}


class Browser:
    """Flask's test client with the portal's CSRF token at hand, and HTML parsing."""

    def __init__(self, app: Flask, address: str = "127.0.0.1") -> None:
        self.app = app
        self.client = app.test_client()
        self.address = address
        self.csrf: str | None = None

    def _remember(self, response: TestResponse) -> TestResponse:
        response.get_data()  # read it all, then close (static files are streamed)
        response.close()
        if response.mimetype == "text/html":
            text = response.get_data(as_text=True)
            found = re.search(r'name="csrf_token" value="([^"]+)"', text)
            if found:
                self.csrf = found.group(1)
        return response

    def get(self, url: str, *, htmx: bool = False, **kwargs: Any) -> TestResponse:
        headers = dict(HTMX if htmx else {}, **kwargs.pop("headers", {}))
        return self._remember(
            self.client.get(
                url, headers=headers, environ_base={"REMOTE_ADDR": self.address}, **kwargs
            )
        )

    def post(
        self,
        url: str,
        data: dict[str, str] | None = None,
        *,
        htmx: bool = False,
        csrf: bool = True,
        **kwargs: Any,
    ) -> TestResponse:
        headers = dict(HTMX if htmx else {}, **kwargs.pop("headers", {}))
        form = dict(data or {})
        if csrf:
            if self.csrf is None:
                self.get("/login")
            assert self.csrf is not None
            if htmx:
                headers["X-CSRFToken"] = self.csrf
            else:
                form["csrf_token"] = self.csrf
        return self._remember(
            self.client.post(
                url,
                data=form,
                headers=headers,
                environ_base={"REMOTE_ADDR": self.address},
                **kwargs,
            )
        )

    def login(self, user: str, password: str | None = None) -> TestResponse:
        """Sign in as a browser does: the form, the post, then the page it leads to."""
        self.get("/login")
        answer = self.post(
            "/login",
            {"username": user, "password": USERS[user][0] if password is None else password},
        )
        if answer.status_code == 303:
            self.get(answer.headers["Location"])  # the new session's CSRF token
        return answer

    def poll(self, *watch: str, page: str = "/") -> BeautifulSoup:
        """One poll of the status box, as htmx sends it from `page` (with the live cards'
        `watch`)."""
        query = "&".join(f"watch={name}" for name in watch)
        headers = {"HX-Current-URL": f"http://localhost{page}"}
        return soup(self.get(f"/tasks?{query}", htmx=True, headers=headers))

    def wait_until(
        self,
        predicate: Callable[[BeautifulSoup], object],
        *watch: str,
        page: str = "/",
        timeout: float = 30.0,
    ) -> BeautifulSoup:
        """Poll until `predicate` holds for the answer; that answer."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.poll(*watch, page=page)
            if predicate(answer):
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met after {timeout} s: {answer}")
            time.sleep(0.05)

    def wait_idle(self, *watch: str, page: str = "/", timeout: float = 30.0) -> BeautifulSoup:
        """Poll the status box like htmx does until it stops polling; its last HTML."""
        return self.wait_until(
            lambda answer: answer.select_one("#status-box[hx-trigger]") is None,
            *watch,
            page=page,
            timeout=timeout,
        )


def soup(response: TestResponse) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def card(page: BeautifulSoup, package: str) -> Tag:
    found = page.select_one(f'li.card[data-package="{package}"]')
    assert found is not None, f"no card for {package}"
    return found


def text(element: Tag | None) -> str:
    assert element is not None
    return " ".join(element.get_text(" ").split())
