"""The portal's settings: defaults in code, a TOML file, `COMPTOIR_PORTAL_*` variables, overrides.

Nothing is read at import time. `load_settings` returns a frozen `PortalSettings`; every error
names where the value came from, the key and what was wrong with it. `load_or_create_secret_key`
gives the key that signs CSRF tokens: the configured one, or one made once in `data_dir`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agent_bridge.client import DEFAULT_URL, AgentClient
from portal.site.settings import SiteSettings, SiteSettingsError, site_settings_from_mapping
from wapt.fsutil import SecretFileError, load_or_create_secret

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SUPPORTED_LANGUAGES",
    "PortalSettings",
    "SettingsError",
    "default_data_dir",
    "is_loopback",
    "load_or_create_secret_key",
    "load_settings",
]

ENV_PREFIX: Final = "COMPTOIR_PORTAL_"
CONFIG_ENV: Final = "COMPTOIR_PORTAL_CONFIG"
"""Names the TOML file `create_app()` reads when it is given no settings."""

SUPPORTED_LANGUAGES: Final = ("fr", "en")
"""The languages the portal has translations for (`portal/translations/`)."""

SECRET_KEY_BYTES: Final = 32


class SettingsError(Exception):
    """The settings cannot be used; the message names the source, the key and the reason."""


@dataclass(frozen=True)
class PortalSettings:
    """Everything the portal needs; `docs/portal.md` describes each key.

    Durations are in seconds. `secret_key` None means "made once and kept in
    `data_dir/secret_key`" (see `load_or_create_secret_key`).
    """

    data_dir: Path
    agent_url: str = DEFAULT_URL
    agent_timeout: float = 10.0
    agent_connect_retries: float = 2.0
    secret_key: str | None = field(default=None, repr=False)
    icons_dir: Path | None = None
    listen_host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8
    idle_timeout: float = 600.0
    session_lifetime: float = 8 * 3600.0
    max_sessions: int = 1000
    cookie_name: str = "comptoir_session"
    cookie_secure: bool = False
    languages: tuple[str, ...] = SUPPORTED_LANGUAGES
    default_language: str = "fr"
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_delay: float = 30.0
    login_max_delay: float = 900.0
    login_failure_window: float = 900.0
    page_size: int = 48
    catalog_cache_seconds: float = 5.0
    #: the `[site]` table: set on a site server (admin pages), None for a teacher portal
    site: SiteSettings | None = None

    @property
    def secret_file(self) -> Path:
        """Where the generated secret key is kept (mode 0600)."""
        return self.data_dir / "secret_key"


# key -> kind; the kind names the parser below
_KINDS: Final[Mapping[str, str]] = {
    "data_dir": "path",
    "agent_url": "str",
    "agent_timeout": "float",
    "agent_connect_retries": "float",
    "secret_key": "str",
    "icons_dir": "path",
    "listen_host": "str",
    "port": "int",
    "threads": "int",
    "idle_timeout": "float",
    "session_lifetime": "float",
    "max_sessions": "int",
    "cookie_name": "str",
    "cookie_secure": "bool",
    "languages": "strings",
    "default_language": "str",
    "login_failures_per_user": "int",
    "login_failures_per_address": "int",
    "login_delay": "float",
    "login_max_delay": "float",
    "login_failure_window": "float",
    "page_size": "int",
    "catalog_cache_seconds": "float",
    "site": "site",
}


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/comptoir/portal`, else `~/.local/state/comptoir/portal`."""
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "comptoir" / "portal"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _typed(value: Any, kind: str, key: str, source: str, base: Path) -> Any:
    """`value` as `kind` (from TOML, or from the text of an environment variable)."""

    def wrong(expected: str) -> SettingsError:
        return SettingsError(f"{source}: {key}: expected {expected}, got {value!r}")

    text = isinstance(value, str)
    if kind == "str":
        if not text:
            raise wrong("a string")
        return value
    if kind == "path":
        if not text or not value:
            raise wrong("a path")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise wrong("true or false")
    if kind in ("int", "float"):
        if isinstance(value, bool):
            raise wrong("a number")
        if text:
            try:
                value = int(value) if kind == "int" else float(value)
            except ValueError:
                raise wrong("a whole number" if kind == "int" else "a number") from None
        if kind == "int" and not isinstance(value, int):
            raise wrong("a whole number")
        if not isinstance(value, int | float):
            raise wrong("a number")
        return value if kind == "int" else float(value)
    if kind == "site":
        try:
            return site_settings_from_mapping(value, source=source, base=base)
        except SiteSettingsError as e:
            raise SettingsError(str(e)) from e
    if kind == "strings":
        items = [v.strip() for v in value.split(",") if v.strip()] if text else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise wrong("a list of strings")
        return tuple(items)
    raise AssertionError(kind)  # pragma: no cover


def _check(settings: PortalSettings, source: str) -> None:
    """Raise `SettingsError` for values of the right type that still make no sense."""
    problems: list[str] = []

    def positive(key: str, *, zero: bool = False) -> None:
        value = getattr(settings, key)
        if value < 0 or (value == 0 and not zero):
            problems.append(f"{key}: {value!r} must be {'>= 0' if zero else '> 0'}")

    for key in ("agent_timeout", "idle_timeout", "session_lifetime", "login_delay"):
        positive(key)
    for key in ("threads", "max_sessions", "login_failures_per_user", "page_size"):
        positive(key)
    for key in ("agent_connect_retries", "catalog_cache_seconds", "login_failure_window"):
        positive(key, zero=True)
    positive("login_failures_per_address")
    if settings.login_max_delay < settings.login_delay:
        problems.append("login_max_delay: must be at least login_delay")
    if not 0 < settings.port < 65536:
        problems.append(f"port: {settings.port} is not a TCP port")
    if settings.page_size > 500:
        problems.append(f"page_size: {settings.page_size} is more than 500 cards")
    unknown = [lang for lang in settings.languages if lang not in SUPPORTED_LANGUAGES]
    if unknown or not settings.languages:
        problems.append(
            f"languages: {list(settings.languages)!r}: choose among {list(SUPPORTED_LANGUAGES)}"
        )
    if settings.default_language not in settings.languages:
        problems.append(f"default_language: {settings.default_language!r} is not in languages")
    if not settings.cookie_name.isascii() or not settings.cookie_name.replace("_", "").isalnum():
        problems.append(f"cookie_name: {settings.cookie_name!r}: letters, digits and _ only")
    if settings.secret_key is not None and len(settings.secret_key) < 32:
        problems.append("secret_key: at least 32 characters (or leave it out: one is made)")
    try:
        AgentClient(settings.agent_url)
    except ValueError as e:
        problems.append(f"agent_url: {e}")
    if problems:
        raise SettingsError(f"{source}: " + "; ".join(problems))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except OSError as e:
        raise SettingsError(f"{path}: cannot read: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: not valid TOML: {e}") from e


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PortalSettings:
    """Defaults, then the TOML file at `path`, then `COMPTOIR_PORTAL_<KEY>`, then `overrides`.

    `environ` defaults to `os.environ`; pass ``{}`` to ignore the environment. Relative paths
    are relative to the file (to the working directory for the other layers).

    Raises:
        SettingsError: the file cannot be read or parsed; a key is unknown; a value has the
            wrong type or makes no sense.
    """
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Path, Mapping[str, Any]]] = []
    if path is not None:
        layers.append((str(path), path.parent, _read_toml(path)))
    from_env = {
        key: environ[ENV_PREFIX + key.upper()]
        for key in _KINDS
        if ENV_PREFIX + key.upper() in environ
    }
    layers.append(("environment", Path.cwd(), from_env))
    layers.append(("overrides", Path.cwd(), dict(overrides or {})))

    values: dict[str, Any] = {}
    for source, base, raw in layers:
        unknown = sorted(set(raw) - set(_KINDS))
        if unknown:
            raise SettingsError(f"{source}: unknown key(s) {', '.join(unknown)}")
        for key, value in raw.items():
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, tuple):
                value = list(value)
            name = f"{ENV_PREFIX}{key.upper()}" if source == "environment" else key
            values[key] = _typed(value, _KINDS[key], name, source, base)
    values.setdefault("data_dir", default_data_dir(environ))
    settings = PortalSettings(**values)
    _check(settings, str(path) if path is not None else "settings")
    return settings


def load_or_create_secret_key(
    settings: PortalSettings,
) -> bytes:
    """The key that signs CSRF tokens: `settings.secret_key`, else `data_dir/secret_key`.

    The file is made once with 32 random bytes, mode 0600, atomically (two portals starting
    together agree on one key).

    Raises:
        SettingsError: the file cannot be read or created, is not a regular file, is too short,
            or (on POSIX) is readable or writable by anyone but its owner.
    """
    if settings.secret_key is not None:
        return settings.secret_key.encode("utf-8")
    try:
        return load_or_create_secret(settings.secret_file, size=SECRET_KEY_BYTES)
    except SecretFileError as e:
        raise SettingsError(str(e)) from e
