"""A site's settings, keys and uploads for the lifecycle and publish tests.

Making the five site keys takes a second or two, so `site_settings` makes them once per test
session (`init_site_keys`, the real code) and copies them into each test's site.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from portal.site.keys import init_site_keys
from portal.site.settings import SiteSettings
from tests.helpers import PKI
from tests.site_harness import SiteFixture, make_site
from tests.slapd import SlapdServer

PASSPHRASE = b"site-test-passphrase"

_template: Path | None = None


def keys_template() -> Path:
    """A keys directory made once by `init_site_keys` (site name "test")."""
    global _template
    if _template is None:
        root = Path(tempfile.mkdtemp(prefix="comptoir-site-keys-"))
        init_site_keys(root / "keys", PASSPHRASE, site_name="test")
        _template = root / "keys"
    return _template


def site_settings(root: Path, *, trust_fixture_ca: bool = True, **overrides: Any) -> SiteSettings:
    """A site under `root` with the shared keys; uploads may also chain to the fixture CA of
    WAPT 1.8.2's packages (as an académie CA would be) unless `trust_fixture_ca` is false."""
    keys = root / "keys"
    shutil.copytree(keys_template(), keys)
    if trust_fixture_ca:
        shutil.copy(PKI / "ca.crt", keys / "trusted" / "academie-ca.crt")
    passphrase = root / "passphrase"
    passphrase.write_bytes(PASSPHRASE + b"\n")
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "repository_dir": root / "repo",
        "host_repository_dir": root / "repo" / "wapt-host",
        "keys_dir": keys,
        "key_passphrase_file": passphrase,
        "name": "test",
        "package_prefix": "test",
        "trusted_certs": keys / "trusted",
        "enrolment_secret_file": root / "data" / "private" / "enrolment_secret",
        **overrides,
    }
    (root / "repo").mkdir(exist_ok=True)
    return SiteSettings(**values)


def install_site_keys(site: SiteSettings, *, trust_fixture_ca: bool = True) -> None:
    """Put the shared site keys (every role) into `site.keys_dir`, e.g. of a
    `tests.site_harness` site; uploads may also chain to the fixture CA."""
    shutil.copytree(keys_template(), site.keys_dir, dirs_exist_ok=True)
    site.trusted_certs.mkdir(parents=True, exist_ok=True)
    if site.trusted_certs != site.keys_dir / "trusted":
        for name in ("site-ca.crt", "developer-ca.crt"):
            shutil.copy(site.keys_dir / "trusted" / name, site.trusted_certs / name)
    if trust_fixture_ca:
        shutil.copy(PKI / "ca.crt", site.trusted_certs / "academie-ca.crt")


def keyed_site(tmp_path: Path, ldap_server: SlapdServer) -> Iterator[SiteFixture]:
    """For a fixture: a `tests.site_harness` site with every site key, its admins in the
    session's slapd (`dave`), stopped at the end."""
    fixture = make_site(tmp_path, ldap_server)
    install_site_keys(fixture.site)
    yield fixture
    fixture.stop()
