"""A site server for tests: `[site]` settings in a temporary directory, keys, an admin app.

`make_site(tmp_path, ldap_server=None, **overrides)` lays out a site under `tmp_path`:

- `data/` (`data_dir`), `repository/` (`repository_dir`, empty: publish into it),
  `passphrase` (the key passphrase file, outside the state);
- `data/keys/`: the site's deployer key (`deployer.pem`, encrypted, and `deployer.crt`, the
  chain) issued by a test CA whose certificate is `data/keys/trusted/ca.crt` (the default
  `trusted_certs`); `SiteFixture.ca_key`/`ca_cert` issue more signers;
- admins log in through `ldap_server` when given (the session's slapd: `dave`/`dave-pw` is in
  `comptoir-admins`, `alice` is a teacher), and always through a local accounts file with
  `ADMIN` (in `comptoir-admins`) and `TEACHER` (not).

`overrides` are `[site]` keys (`backup_target=…`) or portal keys (`idle_timeout=…`), told
apart by name. `SiteFixture.app()` builds the app (more overrides allowed),
`SiteFixture.admin_client()` a `tests.portal_site.Browser` signed in as an admin, and
`SiteFixture.browser()` one signed in as nobody. The API is shared by every site test: keep it
stable.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from agent_bridge.agent.auth import write_accounts_file
from portal import create_app
from portal.settings import PortalSettings, load_settings
from portal.site.audit import AuditLog
from portal.site.settings import SiteSettings
from tests.httpserver import _Handler, serve_directory
from tests.portal_site import Browser, FakeClock
from tests.slapd import SUFFIX, SlapdServer
from wapt.trust import Certificate, new_ca, new_signer, save_certificate, save_private_key

__all__ = [
    "ADMIN",
    "PASSPHRASE",
    "TEACHER",
    "SiteFixture",
    "admin_login",
    "ldap_table",
    "make_site",
    "serve_uploads",
]

#: local accounts of every test site: (user name, password)
ADMIN = ("admin", "admin-pw")
TEACHER = ("teacher", "teacher-pw")
PASSPHRASE = b"site-test-passphrase"

_SITE_KEYS = {field.name for field in dataclasses.fields(SiteSettings)}


@functools.cache
def _test_pki() -> tuple[rsa.RSAPrivateKey, Certificate, rsa.RSAPrivateKey, Certificate]:
    """One CA and one deployer per test process (RSA keys are slow to make)."""
    ca_key, ca_cert = new_ca("Comptoir test site CA")
    key, cert = new_signer(ca_key, ca_cert, "Comptoir test site deployer", code_signing=False)
    return ca_key, ca_cert, key, cert


def ldap_table(server: SlapdServer) -> dict[str, Any]:
    """The `[site] ldap` table for the session's slapd (search-then-bind, group search)."""
    return {
        "uri": server.uri,
        "base_dn": SUFFIX,
        "user_base": f"ou=people,{SUFFIX}",
        "group_base": f"ou=groups,{SUFFIX}",
        "timeout": 3.0,
    }


def admin_login(browser: Browser, user: str, password: str) -> Any:
    """Sign in at `/admin/login` as a browser does; the answer to the post."""
    browser.get("/admin/login")
    answer = browser.post("/admin/login", {"username": user, "password": password})
    if answer.status_code == 303:
        browser.get(answer.headers["Location"])  # the new session's CSRF token
    return answer


@dataclass
class SiteFixture:
    """A site laid out in `root`; `settings` are the portal's, with `settings.site` set."""

    root: Path
    settings: PortalSettings
    ca_key: rsa.RSAPrivateKey
    ca_cert: Certificate
    apps: list[Flask] = field(default_factory=list)

    @property
    def site(self) -> SiteSettings:
        assert self.settings.site is not None
        return self.settings.site

    @property
    def audit(self) -> AuditLog:
        """The site's audit log, read as the admin pages do."""
        return AuditLog(self.site.data_dir / "audit")

    def app(self, clock: FakeClock | None = None, **overrides: Any) -> Flask:
        """A site server app; `overrides` are portal keys or `[site]` keys."""
        settings = self.settings
        site_changes = {k: v for k, v in overrides.items() if k in _SITE_KEYS}
        portal_changes = {k: v for k, v in overrides.items() if k not in _SITE_KEYS}
        if site_changes:
            settings = dataclasses.replace(
                settings, site=dataclasses.replace(self.site, **site_changes)
            )
        if portal_changes:
            settings = dataclasses.replace(settings, **portal_changes)
        app = create_app(settings, clock=clock or time.monotonic)
        self.apps.append(app)
        return app

    def browser(self, app: Flask | None = None, address: str = "127.0.0.1") -> Browser:
        """A browser on `app` (default: a new app), signed in as nobody."""
        return Browser(app or self.app(), address=address)

    def admin_client(
        self, user: str = ADMIN[0], password: str = ADMIN[1], *, app: Flask | None = None
    ) -> Browser:
        """A browser signed in as the admin `user` (default: the local `ADMIN`)."""
        browser = self.browser(app)
        answer = admin_login(browser, user, password)
        assert answer.status_code == 303, answer.get_data(as_text=True)
        return browser

    def write_config(self, ldap_server: SlapdServer | None = None, **extra: str) -> Path:
        """This site's settings as a TOML file (`root/site.toml`), for the command line and
        `comptoir portal serve`; `extra` are more `[site]` keys (strings)."""
        s = self.site
        lines = [
            f'data_dir = "{self.settings.data_dir}"',
            "[site]",
            f'data_dir = "{s.data_dir}"',
            f'repository_dir = "{s.repository_dir}"',
            f'key_passphrase_file = "{s.key_passphrase_file}"',
            f'accounts_file = "{s.accounts_file}"',
            f'name = "{s.name}"',
            *(f'{key} = "{value}"' for key, value in extra.items()),
        ]
        if ldap_server is not None:
            lines.append("[site.ldap]")
            lines += [f"{key} = {value!r}" for key, value in ldap_table(ldap_server).items()]
        path = self.root / "site.toml"
        path.write_text("\n".join(lines) + "\n", "utf-8")
        return path

    def stop(self) -> None:
        """Stop the apps' background threads (scheduled backups)."""
        for app in self.apps:
            scheduler = app.extensions.get("comptoir.backups")
            if scheduler is not None:
                scheduler.stop()


def make_site(
    tmp_path: Path, ldap_server: SlapdServer | None = None, **overrides: Any
) -> SiteFixture:
    """A site in `tmp_path` (see the module's docstring)."""
    root = Path(tmp_path)
    data_dir = root / "data"
    keys = data_dir / "keys"
    (keys / "trusted").mkdir(parents=True, exist_ok=True)
    (root / "repository").mkdir(exist_ok=True)
    ca_key, ca_cert, key, cert = _test_pki()
    save_certificate([ca_cert], keys / "trusted" / "ca.crt", overwrite=True)
    save_private_key(key, keys / "deployer.pem", PASSPHRASE, overwrite=True)
    save_certificate([cert, ca_cert], keys / "deployer.crt", overwrite=True)
    passphrase = root / "passphrase"
    passphrase.write_bytes(PASSPHRASE + b"\n")
    passphrase.chmod(0o600)
    accounts = root / "accounts.toml"
    write_accounts_file(
        accounts,
        {
            ADMIN[0]: (ADMIN[1], "Site Admin", ["comptoir-admins"]),
            TEACHER[0]: (TEACHER[1], "Tess Teacher", ["profs-maths"]),
        },
    )
    site: dict[str, Any] = {
        "data_dir": data_dir,
        "repository_dir": root / "repository",
        "key_passphrase_file": passphrase,
        "accounts_file": accounts,
        "name": "test-site",
    }
    if ldap_server is not None:
        site["ldap"] = ldap_table(ldap_server)
    portal: dict[str, Any] = {"data_dir": root / "portal", "catalog_cache_seconds": 0}
    for key, value in overrides.items():
        (site if key in _SITE_KEYS else portal)[key] = value
    settings = load_settings(None, environ={}, overrides={**portal, "site": site})
    return SiteFixture(root, settings, ca_key, ca_cert)


class _UploadHandler(_Handler):
    """GET files, and PUT them (written whole, then renamed), as a backup store does."""

    def do_PUT(self) -> None:
        target = Path(self.translate_path(self.path))
        root = Path(self.directory).resolve()
        if root not in target.resolve().parents:
            self.send_error(403)
            return
        size = int(self.headers.get("Content-Length", "-1"))
        if size < 0:
            self.send_error(411)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        with partial.open("wb") as sink:
            remaining = size
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                sink.write(chunk)
                remaining -= len(chunk)
        if remaining:
            partial.unlink()
            self.send_error(400, "short body")
            return
        os.replace(partial, target)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def serve_uploads(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 for GET and PUT; yield the base URL."""
    with serve_directory(directory, handler=_UploadHandler) as url:
        yield url
