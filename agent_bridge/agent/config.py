"""The agent's configuration: defaults in code, a TOML file, then `COMPTOIR_AGENT_*` variables.

Nothing is read at import time. `load_config` returns a frozen `AgentConfig`; every error names
the file, the key and what was wrong with its value.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent_bridge.agent.auth import AuthConfigError, LdapSettings

ENV_PREFIX = "COMPTOIR_AGENT_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the reason."""


@dataclass(frozen=True)
class RepositoryConfig:
    """One package source: an HTTP(S) repository (`url`) or a directory (`path`)."""

    name: str
    url: str | None = None
    path: Path | None = None
    #: narrows the agent's maturities for this source (None: the agent's own)
    maturities: tuple[str, ...] | None = None
    timeout: float = 30.0
    #: CA bundle for HTTPS, None for the system's
    ca_file: Path | None = None
    #: root.json of the site's bundle keys; `path` is then a USB bundle, verified with it
    bundle_root: Path | None = None

    @property
    def location(self) -> str:
        return self.url if self.url is not None else str(self.path)


@dataclass(frozen=True)
class SiteConfig:
    """The site server this agent registers with and reports to (`[site]`)."""

    url: str
    #: file holding the site's enrolment secret (proof for the first registration)
    enrolment_secret_file: Path
    report_period_minutes: int = 60
    #: first delay before retrying a report the site did not take; doubles up to the period
    retry_seconds: float = 30.0
    timeout: float = 30.0
    #: CA bundle for HTTPS, None for the system's
    ca_file: Path | None = None


#: where desktops mount removable media: /media/<user>/<label>, /media/<label>, /run/media/…
MOUNT_PATTERNS = ("/media/*", "/media/*/*", "/run/media/*/*")


@dataclass(frozen=True)
class UsbConfig:
    """USB bundles found on sticks as they are inserted (`[usb]`)."""

    detect: bool = False
    #: root.json of the site's bundle keys: every stick is verified with it, never its own
    bundle_root: Path | None = None
    #: glob patterns of the directories where sticks are mounted
    roots: tuple[str, ...] = MOUNT_PATTERNS
    #: also look at drive letters (None: only on Windows)
    drive_letters: bool | None = None
    #: how often to look for sticks inserted or pulled out
    poll_seconds: float = 5.0


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs; see `docs/agent.md` for each key."""

    data_dir: Path
    trusted_certs: Path
    repositories: tuple[RepositoryConfig, ...] = ()
    host_repository: str | None = None
    listen_host: str = "127.0.0.1"
    port: int = 8088
    maturities: tuple[str, ...] = ("PROD",)
    locales: tuple[str, ...] = ("fr", "en")
    architectures: tuple[str, ...] = ("x64", "x86")
    host_uuid: str | None = None
    use_fqdn_as_uuid: bool = False
    update_period_minutes: int = 120
    install_timeout: float = 3600.0
    admin_group: str = "waptselfservice"
    accounts_file: Path | None = None
    ldap: LdapSettings | None = None
    token_lifetime: int = 86400
    install_env: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    site: SiteConfig | None = None
    usb: UsbConfig = field(default_factory=UsbConfig)

    @property
    def state_file(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def tasks_file(self) -> Path:
        return self.data_dir / "tasks.json"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "private" / "secret_key"

    @property
    def host_key_file(self) -> Path:
        """The host's Ed25519 key (its 32-byte seed, mode 0600): signs its reports."""
        return self.data_dir / "private" / "host_key"


def _expect(value: Any, kind: type | tuple[type, ...], key: str, source: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{source}: {key}: expected {names}, got {value!r}")
    return value


def _strings(value: Any, key: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    _expect(value, list, key, source)
    return tuple(_expect(v, str, key, source) for v in value)


def _path(value: Any, key: str, source: str, base: Path) -> Path:
    path = Path(_expect(value, str, key, source)).expanduser()
    return path if path.is_absolute() else base / path


def _check_loopback(host: str, source: str) -> str:
    candidate = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(candidate).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"{source}: listen_host: {host!r} is not a loopback address; the agent only "
            "listens on 127.0.0.1 or ::1"
        )
    return host


def _repository(raw: Any, index: int, source: str, base: Path) -> RepositoryConfig:
    key = f"repositories[{index}]"
    _expect(raw, dict, key, source)
    unknown = set(raw) - {"name", "url", "path", "maturities", "timeout", "ca_file", "bundle_root"}
    if unknown:
        raise ConfigError(f"{source}: {key}: unknown key(s) {', '.join(sorted(unknown))}")
    url = raw.get("url")
    path = raw.get("path")
    if (url is None) == (path is None):
        raise ConfigError(f"{source}: {key}: give exactly one of url or path")
    if url is not None and "bundle_root" in raw:
        raise ConfigError(f"{source}: {key}.bundle_root: only with path (a USB bundle)")
    if url is not None and not _expect(url, str, f"{key}.url", source).startswith(
        ("http://", "https://")
    ):
        raise ConfigError(f"{source}: {key}.url: {url!r} is not an http(s) URL")
    return RepositoryConfig(
        name=_expect(raw.get("name", f"repo{index}"), str, f"{key}.name", source),
        url=url,
        path=_path(path, f"{key}.path", source, base) if path is not None else None,
        maturities=(
            _strings(raw["maturities"], f"{key}.maturities", source)
            if "maturities" in raw
            else None
        ),
        timeout=float(_expect(raw.get("timeout", 30.0), (int, float), f"{key}.timeout", source)),
        ca_file=(
            _path(raw["ca_file"], f"{key}.ca_file", source, base) if "ca_file" in raw else None
        ),
        bundle_root=(
            _path(raw["bundle_root"], f"{key}.bundle_root", source, base)
            if "bundle_root" in raw
            else None
        ),
    )


_LDAP_KEYS = set(LdapSettings.__dataclass_fields__)


def ldap_from_mapping(raw: Any, source: str, base: Path) -> LdapSettings:
    """Build `LdapSettings` from an `[ldap]` table (the agent's and the site server's).

    Relative `ca_file` paths are taken from `base`.

    Raises:
        ConfigError: not a table, an unknown, missing or ill-typed key, or settings that
            `LdapSettings` refuses; the message names `source` and the key.
    """
    _expect(raw, dict, "ldap", source)
    unknown = set(raw) - _LDAP_KEYS
    if unknown:
        raise ConfigError(f"{source}: ldap: unknown key(s) {', '.join(sorted(unknown))}")
    for required in ("uri", "base_dn"):
        if required not in raw:
            raise ConfigError(f"{source}: ldap.{required} is required")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "ca_file":
            values[key] = _path(value, "ldap.ca_file", source, base)
        elif key in ("use_memberof", "start_tls"):
            values[key] = _expect(value, bool, f"ldap.{key}", source)
        elif key == "timeout":
            values[key] = float(_expect(value, (int, float), "ldap.timeout", source))
        else:
            values[key] = _expect(value, str, f"ldap.{key}", source)
    try:
        return LdapSettings(**values)
    except AuthConfigError as e:
        raise ConfigError(f"{source}: ldap: {e}") from e


_SITE_KEYS = frozenset(
    {"url", "enrolment_secret_file", "report_period_minutes", "retry_seconds", "timeout", "ca_file"}
)


def _site(raw: Any, source: str, base: Path) -> SiteConfig:
    _expect(raw, dict, "site", source)
    unknown = set(raw) - _SITE_KEYS
    if unknown:
        raise ConfigError(f"{source}: site: unknown key(s) {', '.join(sorted(unknown))}")
    for required in ("url", "enrolment_secret_file"):
        if required not in raw:
            raise ConfigError(f"{source}: site.{required} is required")
    url = _expect(raw["url"], str, "site.url", source)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: site.url: {url!r} is not an http(s) URL")
    period = _expect(
        raw.get("report_period_minutes", 60), int, "site.report_period_minutes", source
    )
    if period < 1:
        raise ConfigError(f"{source}: site.report_period_minutes must be at least 1")
    numbers = {
        key: float(_expect(raw[key], (int, float), f"site.{key}", source))
        for key in ("retry_seconds", "timeout")
        if key in raw
    }
    if any(value <= 0 for value in numbers.values()):
        raise ConfigError(f"{source}: site: retry_seconds and timeout must be positive")
    return SiteConfig(
        url=url.rstrip("/"),
        enrolment_secret_file=_path(
            raw["enrolment_secret_file"], "site.enrolment_secret_file", source, base
        ),
        report_period_minutes=period,
        ca_file=_path(raw["ca_file"], "site.ca_file", source, base) if "ca_file" in raw else None,
        **numbers,
    )


_USB_KEYS = frozenset({"detect", "bundle_root", "roots", "drive_letters", "poll_seconds"})


def _usb(raw: Any, source: str, base: Path) -> UsbConfig:
    _expect(raw, dict, "usb", source)
    unknown = set(raw) - _USB_KEYS
    if unknown:
        raise ConfigError(f"{source}: usb: unknown key(s) {', '.join(sorted(unknown))}")
    detect = _expect(raw.get("detect", False), bool, "usb.detect", source)
    root = (
        _path(raw["bundle_root"], "usb.bundle_root", source, base) if "bundle_root" in raw else None
    )
    if detect and root is None:
        raise ConfigError(
            f"{source}: usb.bundle_root is required with usb.detect = true: the root.json of "
            "the site's bundle keys, which every stick is verified with"
        )
    poll = float(_expect(raw.get("poll_seconds", 5.0), (int, float), "usb.poll_seconds", source))
    if poll <= 0:
        raise ConfigError(f"{source}: usb.poll_seconds must be positive")
    letters = raw.get("drive_letters")
    return UsbConfig(
        detect=detect,
        bundle_root=root,
        roots=_strings(raw["roots"], "usb.roots", source) if "roots" in raw else MOUNT_PATTERNS,
        drive_letters=_expect(letters, bool, "usb.drive_letters", source)
        if letters is not None
        else None,
        poll_seconds=poll,
    )


_SIMPLE: dict[str, tuple[type | tuple[type, ...], str]] = {
    "listen_host": (str, "str"),
    "port": (int, "int"),
    "host_uuid": (str, "str"),
    "use_fqdn_as_uuid": (bool, "bool"),
    "update_period_minutes": (int, "int"),
    "install_timeout": ((int, float), "float"),
    "admin_group": (str, "str"),
    "token_lifetime": (int, "int"),
    "log_level": (str, "str"),
    "host_repository": (str, "str"),
}
_LISTS = ("maturities", "locales", "architectures")
_PATHS = ("data_dir", "trusted_certs", "accounts_file")


def config_from_mapping(raw: Mapping[str, Any], *, source: str, base: Path) -> AgentConfig:
    """Build an `AgentConfig` from parsed TOML (or any mapping); relative paths from `base`.

    Raises:
        ConfigError: a missing, unknown or ill-typed key.
    """
    known = set(_SIMPLE) | set(_LISTS) | set(_PATHS)
    known |= {"repositories", "ldap", "install_env", "site", "usb"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    for required in ("data_dir", "trusted_certs"):
        if required not in raw:
            raise ConfigError(f"{source}: {required} is required")
    values: dict[str, Any] = {}
    for key, (kind, _) in _SIMPLE.items():
        if key in raw:
            value = _expect(raw[key], kind, key, source)
            values[key] = float(value) if key == "install_timeout" else value
    for key in _LISTS:
        if key in raw:
            values[key] = _strings(raw[key], key, source)
    for key in _PATHS:
        if key in raw:
            values[key] = _path(raw[key], key, source, base)
    repositories = _expect(raw.get("repositories", []), list, "repositories", source)
    values["repositories"] = tuple(
        _repository(r, i, source, base) for i, r in enumerate(repositories)
    )
    if "ldap" in raw:
        values["ldap"] = ldap_from_mapping(raw["ldap"], source, base)
    if "site" in raw:
        values["site"] = _site(raw["site"], source, base)
    if "usb" in raw:
        values["usb"] = _usb(raw["usb"], source, base)
    if "install_env" in raw:
        env = _expect(raw["install_env"], dict, "install_env", source)
        values["install_env"] = {
            _expect(k, str, "install_env", source): _expect(v, str, f"install_env.{k}", source)
            for k, v in env.items()
        }
    config = AgentConfig(**values)
    _check_loopback(config.listen_host, source)
    if not 0 < config.port < 65536:
        raise ConfigError(f"{source}: port: {config.port} is not a TCP port")
    if config.ldap is None and config.accounts_file is None:
        raise ConfigError(
            f"{source}: configure [ldap] or accounts_file: without either nobody can log in"
        )
    if config.update_period_minutes < 1:
        raise ConfigError(f"{source}: update_period_minutes must be at least 1")
    return config


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, (kind, _) in _SIMPLE.items():
        name = ENV_PREFIX + key.upper()
        if name in environ:
            text = environ[name]
            if kind is bool:
                overrides[key] = text.lower() in ("1", "true", "yes", "on")
            elif kind is int:
                try:
                    overrides[key] = int(text)
                except ValueError as e:
                    raise ConfigError(f"{name}: {text!r} is not a whole number") from e
            elif kind == (int, float):
                try:
                    overrides[key] = float(text)
                except ValueError as e:
                    raise ConfigError(f"{name}: {text!r} is not a number") from e
            else:
                overrides[key] = text
    for key in (*_LISTS, *_PATHS):
        name = ENV_PREFIX + key.upper()
        if name in environ:
            overrides[key] = environ[name]
    return overrides


def load_config(
    path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Read the TOML file at `path` (if any), then `COMPTOIR_AGENT_*`, then `overrides`.

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is wrong.
    """
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else "configuration"
    base = path.parent if path is not None else Path.cwd()
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text("utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
    raw.update(_from_environment(os.environ if environ is None else environ))
    raw.update(overrides or {})
    return config_from_mapping(raw, source=source, base=base)


def with_changes(config: AgentConfig, **changes: Any) -> AgentConfig:
    """A copy of `config` with some values replaced (tests, the kiosk's offline mode)."""
    return replace(config, **changes)
