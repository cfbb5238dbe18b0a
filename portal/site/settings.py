"""The site server's settings: the `[site]` table of the portal's settings, as a frozen record.

A portal whose settings have a `[site]` table is a site server: `portal.create_app` then adds
the admin blueprints (`portal.admin`). `site_settings_from_mapping` parses the table (from the
TOML file or from test overrides); `portal.settings.load_settings` calls it and reports its
errors as its own. Nothing here reads a file: paths are only resolved and checked for shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent_bridge.agent.auth import LdapSettings
from agent_bridge.agent.config import ConfigError, ldap_from_mapping
from portal.site.localtime import DEFAULT_ZONE, check_zone
from portal.site.model import NAME_PATTERN, ModelError

__all__ = ["SiteSettings", "SiteSettingsError", "site_settings_from_mapping"]


class SiteSettingsError(ValueError):
    """The `[site]` table cannot be used; the message names the source, the key and why."""


@dataclass(frozen=True)
class SiteSettings:
    """Where a site server keeps its state and repositories, and who may administer it.

    `docs/portal.md` (section "The site server") describes each key. The other site modules
    rely on these names; add fields, do not rename them.
    """

    #: the site's state: stores, audit log (backed up by `portal.site.backup`)
    data_dir: Path
    #: the site repository: .wapt files and their `Packages` index, served by any web server
    repository_dir: Path
    #: host packages `<uuid>.wapt` (default: `repository_dir / "wapt-host"`)
    host_repository_dir: Path
    #: the site's keys (default: `data_dir / "keys"`); private keys never leave the server
    keys_dir: Path
    key_passphrase_file: Path | None = None
    #: the site's id: names its backups (`backups/<name>/`)
    name: str = "site"
    #: the first part of the names of the group, host and selfservice packages it publishes
    package_prefix: str = "site"
    #: the directory group whose members are the site's admins
    admin_group: str = "comptoir-admins"
    ldap: LdapSettings | None = None
    #: local accounts (the agent's format, `LocalAccounts`), for the demo and for tests
    accounts_file: Path | None = None
    #: certificates uploaded packages and backups must chain to (default: `keys_dir/trusted`)
    trusted_certs: Path = Path()
    #: the secret hosts enrol with (default: `data_dir/private/enrolment_secret`)
    enrolment_secret_file: Path = Path()
    #: where backups go: a directory or an http(s) URL; None: no scheduled backup
    backup_target: str | None = None
    backup_interval_hours: float = 24.0
    #: the zone admins enter and read deadlines in (IANA name); times are kept in UTC
    timezone: str = DEFAULT_ZONE

    @property
    def private_dir(self) -> Path:
        """Secrets of the site (never backed up): `data_dir / "private"`."""
        return self.data_dir / "private"


_KEYS: Final = {
    "data_dir": "path",
    "repository_dir": "path",
    "host_repository_dir": "path",
    "keys_dir": "path",
    "key_passphrase_file": "path",
    "name": "name",
    "package_prefix": "name",
    "admin_group": "str",
    "ldap": "ldap",
    "accounts_file": "path",
    "trusted_certs": "path",
    "enrolment_secret_file": "path",
    "backup_target": "target",
    "backup_interval_hours": "float",
    "timezone": "zone",
}
_REQUIRED: Final = ("data_dir", "repository_dir")


def _value(raw: Any, kind: str, key: str, source: str, base: Path) -> Any:
    def wrong(expected: str) -> SiteSettingsError:
        return SiteSettingsError(f"{source}: site.{key}: expected {expected}, got {raw!r}")

    if isinstance(raw, Path):
        raw = str(raw)
    if kind == "ldap":
        if isinstance(raw, LdapSettings):
            return raw
        try:
            return ldap_from_mapping(raw, f"{source}: site", base)
        except ConfigError as e:
            raise SiteSettingsError(str(e)) from e
    if kind == "float":
        if isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                raise wrong("a number") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise wrong("a number")
        return float(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise wrong("a path" if kind == "path" else "a non-empty string")
    if kind == "path":
        path = Path(raw).expanduser()
        return path if path.is_absolute() else base / path
    if kind == "name" and not NAME_PATTERN.match(raw):
        raise SiteSettingsError(
            f"{source}: site.{key}: {raw!r}: use 1 to 64 lower-case letters, digits and "
            "inner dashes (it becomes part of package names and paths)"
        )
    if kind == "zone":
        try:
            return check_zone(raw.strip())
        except ModelError as e:
            raise SiteSettingsError(f"{source}: site.{key}: {e}") from e
    if kind == "target" and not raw.startswith(("http://", "https://")):
        path = Path(raw).expanduser()
        return str(path if path.is_absolute() else base / path)
    return raw


def site_settings_from_mapping(
    raw: Mapping[str, Any] | SiteSettings, *, source: str, base: Path
) -> SiteSettings:
    """The `[site]` table `raw` (parsed TOML or test overrides) as `SiteSettings`.

    Relative paths are taken from `base` (the TOML file's directory). A `SiteSettings` is
    returned as it is.

    Raises:
        SiteSettingsError: not a table, a missing or unknown key, a value of the wrong type,
            or values that make no sense together; the message names every problem.
    """
    if isinstance(raw, SiteSettings):
        return raw
    if not isinstance(raw, Mapping):
        raise SiteSettingsError(f"{source}: site: expected a [site] table, got {raw!r}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise SiteSettingsError(f"{source}: site: unknown key(s) {', '.join(unknown)}")
    missing = [f"site.{key}" for key in _REQUIRED if key not in raw]
    if missing:
        raise SiteSettingsError(f"{source}: {', '.join(missing)} is required")
    values = {
        key: _value(value, _KEYS[key], key, source, base)
        for key, value in raw.items()
        if value is not None
    }
    data_dir: Path = values["data_dir"]
    values.setdefault("host_repository_dir", values["repository_dir"] / "wapt-host")
    values.setdefault("keys_dir", data_dir / "keys")
    values.setdefault("trusted_certs", values["keys_dir"] / "trusted")
    values.setdefault("enrolment_secret_file", data_dir / "private" / "enrolment_secret")
    settings = SiteSettings(**values)
    _check(settings, source)
    return settings


def _check(settings: SiteSettings, source: str) -> None:
    problems: list[str] = []
    hours = settings.backup_interval_hours
    if not math.isfinite(hours) or hours <= 0:
        problems.append(f"site.backup_interval_hours: {hours!r} must be a positive number")
    if settings.ldap is None and settings.accounts_file is None:
        problems.append(
            "configure site.ldap or site.accounts_file: without either no admin can log in"
        )
    if not settings.admin_group.strip():
        problems.append("site.admin_group: empty")
    if settings.repository_dir == settings.data_dir:
        problems.append(
            "site.repository_dir: must not be data_dir (the repository is served to everyone, "
            "the state is not)"
        )
    if settings.data_dir in settings.repository_dir.parents or (
        settings.repository_dir in settings.data_dir.parents
    ):
        problems.append(
            "site.repository_dir and site.data_dir: one is inside the other (the state would "
            "be served, or backed up with every package)"
        )
    if problems:
        raise SiteSettingsError(f"{source}: " + "; ".join(problems))
