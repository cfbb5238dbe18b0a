"""The offline USB kiosk: an agent and a portal in this process, over one bundle, no network.

Started from a stick (the executable in `<stick>/comptoir-kiosk/`, the bundle at `<stick>/`)
or with `--bundle PATH`. The roots of trust never come from the stick: the bundle's TUF root
and the certificates packages must be signed by are the machine's (its agent configuration,
`/etc/comptoir/agent.toml` by default), or named on the command line. The bundle is verified
(metadata, signatures, expiry, index) before anything else; then:

- an agent (`agent_bridge.agent.core.Agent`) with the bundle as its only source and no host
  repository, no directory and no site server, its data in the kiosk's own directory, served
  on a free loopback port. It knows the machine's local accounts (`accounts_file`) if its
  configuration has them, and one more: `technicien`, whose password is the bundle's
  technician PIN, checked against the salted hash in the bundle's signed metadata
  (`TechnicianPin`), in the agent's admin group;
- the portal, with the technician view (`portal.technician`), on another free loopback port.

The agent writes its signed report onto the stick after every install task, and on demand
from the technician view (`Agent.write_bundle_reports`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent_bridge.agent.auth import (
    Authenticator,
    ChainAuthenticator,
    Identity,
    InvalidCredentialsError,
)
from agent_bridge.agent.config import (
    AgentConfig,
    ConfigError,
    RepositoryConfig,
    UsbConfig,
    load_config,
    with_changes,
)
from kiosk.policy import KioskError
from wapt.bundle import METADATA_DIR, BundleInfo, check_technician_pin, verify_bundle
from wapt.errors import WaptError
from wapt.trust import TrustStore

__all__ = [
    "DEFAULT_AGENT_CONFIG",
    "STICK_KIOSK_DIR",
    "TECHNICIAN",
    "OfflineSite",
    "TechnicianPin",
    "bundle_beside",
    "default_data_dir",
    "offline_agent_config",
    "running_offline_site",
    "verified_bundle_info",
]

log = logging.getLogger("comptoir.kiosk")

#: the folder of the kiosk build on a stick, beside the bundle (`comptoir bundle create
#: --with-kiosk` writes it; `docs/kiosk.md` describes the layout)
STICK_KIOSK_DIR: Final = "comptoir-kiosk"
DEFAULT_AGENT_CONFIG: Final = Path("/etc/comptoir/agent.toml")
#: the agent account a correct technician PIN opens
TECHNICIAN: Final = "technicien"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the offline kiosk keeps its agent's state and the portal's key: `/var/lib/comptoir/
    kiosk` as root (the machine's own record of what it installed), else under
    `$XDG_STATE_HOME` (`%LOCALAPPDATA%` on Windows)."""
    environ = os.environ if environ is None else environ
    if os.name == "nt":
        base = environ.get("PROGRAMDATA") or environ.get("LOCALAPPDATA") or str(Path.home())
        return Path(base) / "Comptoir" / "kiosk"
    if os.geteuid() == 0:
        return Path("/var/lib/comptoir/kiosk")
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "comptoir" / "kiosk"


def bundle_beside(executable: Path) -> Path | None:
    """The bundle of the stick the kiosk executable runs from: `<stick>/` when the executable
    is in `<stick>/comptoir-kiosk/` and `<stick>/comptoir-bundle/root.json` exists."""
    folder = executable.resolve().parent
    if folder.name != STICK_KIOSK_DIR:
        return None
    stick = folder.parent
    return stick if (stick / METADATA_DIR / "root.json").is_file() else None


class TechnicianPin:
    """The agent's `Authenticator` for the technician: user `username`, password the PIN whose
    salted scrypt hash `record` is (from the bundle's signed metadata)."""

    def __init__(self, record: Mapping[str, Any], *, username: str, groups: frozenset[str]):
        self._record = dict(record)
        self.username = username
        self.groups = groups

    def __repr__(self) -> str:
        return f"TechnicianPin(username={self.username!r})"

    def authenticate(self, username: str, password: str) -> Identity:
        """Raises `InvalidCredentialsError` for another user name or a wrong PIN."""
        matches = check_technician_pin(password, self._record)  # the same work either way
        if username != self.username or not matches:
            raise InvalidCredentialsError()
        log.info("technician unlocked the offline kiosk")
        return Identity(username, self.groups, "Technicien")


def offline_agent_config(
    bundle: Path,
    data_dir: Path,
    *,
    agent_config: Path | None = None,
    root: Path | None = None,
    trusted: Path | None = None,
) -> AgentConfig:
    """The offline agent's configuration: the bundle as its only source, no host repository,
    its data under `data_dir/agent`; trust, install environment, profile and accounts from the
    machine's `agent_config` (if given), `root` and `trusted` overriding theirs.

    Raises:
        KioskError: the agent configuration cannot be read, or no bundle root or trusted
            certificates are known (they never come from the stick itself).
    """
    base: AgentConfig | None = None
    if agent_config is not None:
        try:
            base = load_config(agent_config)
        except ConfigError as e:
            raise KioskError(f"the machine's agent configuration: {e}") from e
    if root is None and base is not None:
        root = next((r.bundle_root for r in base.repositories if r.bundle_root), None)
    if trusted is None and base is not None:
        trusted = base.trusted_certs
    missing = [
        what
        for what, value in (
            ("the bundle keys' root (--root, or a repository's bundle_root)", root),
            ("the trusted certificates (--trusted, or trusted_certs)", trusted),
        )
        if value is None
    ]
    if missing:
        raise KioskError(
            "cannot trust the USB bundle without " + " and ".join(missing) + ": they come "
            "from this machine's agent configuration (--agent-config) or the command line, "
            "never from the stick"
        )
    assert root is not None and trusted is not None
    source = RepositoryConfig(name="usb", path=bundle.resolve(), bundle_root=root.resolve())
    changes: dict[str, Any] = {
        "data_dir": (data_dir / "agent").resolve(),
        "trusted_certs": trusted.resolve(),
        "repositories": (source,),
        "host_repository": None,
        "listen_host": "127.0.0.1",
        # no network: no directory, no site server, no watching other sticks
        "ldap": None,
        "site": None,
        "usb": UsbConfig(),
        "accounts_file": base.accounts_file if base is not None else None,
    }
    if base is None:
        return AgentConfig(**changes)
    return with_changes(base, **changes)


def verified_bundle_info(config: AgentConfig) -> BundleInfo:
    """The bundle's signed details, after the full check of its metadata and index (package
    files are checked as the agent copies them).

    Raises:
        KioskError: the bundle does not verify, or carries no technician PIN.
    """
    source = config.repositories[0]
    assert source.path is not None and source.bundle_root is not None
    try:
        trust = TrustStore.from_path(config.trusted_certs)
        verified = verify_bundle(source.path, source.bundle_root, trust=trust, check_files=False)
    except (WaptError, OSError) as e:
        raise KioskError(f"USB bundle {source.path} refused: {e}") from e
    if not verified.info.technician_pin:
        raise KioskError(
            f"USB bundle {source.path} has no technician PIN: make it again with "
            "`comptoir bundle create --pin`"
        )
    return verified.info


@dataclass
class OfflineSite:
    """The running offline kiosk: its agent and portal, and the bundle they serve."""

    bundle: Path
    info: BundleInfo
    agent: Any  # agent_bridge.agent.core.Agent
    agent_url: str
    portal_url: str
    #: the portal's Flask app (tests drive it directly too)
    portal_app: Any


@contextmanager
def running_offline_site(
    config: AgentConfig, *, data_dir: Path, idle_timeout: float
) -> Iterator[OfflineSite]:
    """Verify the bundle, start the agent and the portal over it; stop both afterwards.

    Raises:
        KioskError: the bundle is refused, or a server cannot start.
        SettingsError: the portal's settings are wrong (from `portal.create_app`).
    """
    from agent_bridge.agent.core import Agent, build_authenticator
    from agent_bridge.agent.service import create_app as agent_app
    from kiosk.launcher import serve_in_thread
    from portal import create_app
    from portal.technician import TechnicianSetup

    info = verified_bundle_info(config)
    assert info.technician_pin is not None
    technician: Authenticator = TechnicianPin(
        info.technician_pin, username=TECHNICIAN, groups=frozenset({config.admin_group})
    )
    if config.accounts_file is not None:
        technician = ChainAuthenticator(technician, build_authenticator(config))
    bundle = config.repositories[0].path
    assert bundle is not None
    with ExitStack() as stack:
        agent = Agent(config, authenticator=technician)
        agent.start()
        stack.callback(agent.stop)
        agent_served = stack.enter_context(serve_in_thread(agent_app(agent), name="agent"))
        setup = TechnicianSetup(
            username=TECHNICIAN,
            bundle_name=info.name,
            bundle_id=info.bundle_id,
            bundle_created=info.created,
            bundle_path=bundle,
            write_reports=agent.write_bundle_reports,
        )
        app = create_app(
            {
                "data_dir": str(data_dir / "portal"),
                "agent_url": agent_served.url.rstrip("/"),
                "icons_dir": str(config.cache_dir / "icons"),
                "idle_timeout": max(idle_timeout, 1.0),
            },
            technician=setup,
        )
        portal_served = stack.enter_context(serve_in_thread(app, name="portal"))
        log.info("offline kiosk: bundle %s (%s), agent %s", bundle, info.name, agent_served.url)
        yield OfflineSite(bundle, info, agent, agent_served.url, portal_served.url, app)
