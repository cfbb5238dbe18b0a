"""`comptoir kiosk`: the portal in a locked-down window, online or offline from a USB bundle.

Online, the window shows the portal already running on this machine (its `/healthz` answers as
a Comptoir portal at `--url`, or at the configured address), or one started in this process on
a free loopback port. Offline (`--bundle PATH`, or the frozen executable started from a stick
that holds a bundle), it runs an agent and a portal over the bundle, opens on the technician
view and needs no network (`kiosk.offline`). `--check` opens the window, checks that the first
page is drawn with its form, prints one JSON line and exits: the smoke test and the start-up
benchmark use it. `--serve-only` runs the servers without a window until interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from comptoir.portal import CONFIG_ENV

#: when this process began the kiosk (the start-up figures count from here)
STARTED = time.monotonic()

#: what the first page must hold for `--check`: the login form, or the technician PIN form
_FORM_PRESENT = (
    "!!(document.querySelector('form input[name=username]') || "
    "document.querySelector('form input[name=pin]') || "
    "document.querySelector('#unavailable-title'))"
)


@dataclass(frozen=True)
class Site:
    """Where the window goes: the portal's URL and its first page."""

    portal_url: str
    start: str
    #: the offline site (agent, bundle), or None online
    offline: Any = None


@click.command()
@click.option("--url", help="A running portal to show (default: the configured one, if it runs).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"The portal's TOML settings (docs/portal.md); also {CONFIG_ENV}.",
)
@click.option("--agent-url", help="The agent's URL, for a portal started here.")
@click.option("--fullscreen/--windowed", default=False, show_default=True)
@click.option(
    "--lock/--no-lock",
    default=True,
    show_default=True,
    help="Kiosk mode: no context menu, no page outside the portal, no new window.",
)
@click.option(
    "--allow-close/--no-close",
    default=True,
    show_default=True,
    help="Whether the user may close the window (--no-close needs --lock).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, 7 * 86400, max_open=True),
    default=300.0,
    show_default=True,
    help="Sign the user out after this many seconds without input (0: never).",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Offline mode over this USB bundle (default: the stick the executable runs from).",
)
@click.option(
    "--agent-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Offline: this machine's agent configuration, for the roots of trust, the install "
    "environment and the local accounts [default: /etc/comptoir/agent.toml if present].",
)
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Offline: root.json of the site's bundle keys (overrides the agent configuration's).",
)
@click.option(
    "--trusted",
    type=click.Path(exists=True, path_type=Path),
    help="Offline: trusted certificates for the packages (overrides trusted_certs).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Offline: where the agent keeps its state [default: /var/lib/comptoir/kiosk as root].",
)
@click.option("--check", is_flag=True, help="Open, check the first page is drawn, print, exit.")
@click.option(
    "--screenshot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --check: save the window as a PNG.",
)
@click.option("--serve-only", is_flag=True, help="Run the servers without a window.")
@click.option("--log-level", default="WARNING", show_default=True, help="Logging level.")
def kiosk(
    url: str | None,
    config_path: Path | None,
    agent_url: str | None,
    fullscreen: bool,
    lock: bool,
    allow_close: bool,
    idle_timeout: float,
    bundle: Path | None,
    agent_config: Path | None,
    root: Path | None,
    trusted: Path | None,
    data_dir: Path | None,
    check: bool,
    screenshot: Path | None,
    serve_only: bool,
    log_level: str,
) -> None:
    """Show the portal in a locked-down window (online, or offline from a USB bundle)."""
    from kiosk.offline import DEFAULT_AGENT_CONFIG, bundle_beside
    from kiosk.policy import KioskError, KioskOptions

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        options = KioskOptions(
            fullscreen=fullscreen, locked=lock, allow_close=allow_close, idle_timeout=idle_timeout
        )
    except KioskError as e:
        raise click.UsageError(str(e)) from e
    if bundle is None and getattr(sys, "frozen", False):
        bundle = bundle_beside(Path(sys.executable))
    if agent_config is None and bundle is not None and DEFAULT_AGENT_CONFIG.is_file():
        agent_config = DEFAULT_AGENT_CONFIG
    try:
        if bundle is not None:
            site_cm = _offline_site(bundle, agent_config, root, trusted, data_dir, idle_timeout)
        else:
            site_cm = _online_site(url, config_path, agent_url, idle_timeout)
        with site_cm as site:
            if serve_only:
                _serve_until_stopped(site)
            else:
                _show(site, options, check=check, screenshot=screenshot)
    except KioskError as e:
        raise click.ClickException(str(e)) from e


@contextmanager
def _offline_site(
    bundle: Path,
    agent_config: Path | None,
    root: Path | None,
    trusted: Path | None,
    data_dir: Path | None,
    idle_timeout: float,
) -> Iterator[Site]:
    from kiosk.offline import default_data_dir, offline_agent_config, running_offline_site

    directory = data_dir or default_data_dir()
    config = offline_agent_config(
        bundle, directory, agent_config=agent_config, root=root, trusted=trusted
    )
    with running_offline_site(config, data_dir=directory, idle_timeout=idle_timeout) as offline:
        yield Site(offline.portal_url, "technician/", offline)


@contextmanager
def _online_site(
    url: str | None, config_path: Path | None, agent_url: str | None, idle_timeout: float
) -> Iterator[Site]:
    from kiosk.launcher import portal_status, serve_in_thread
    from kiosk.policy import KioskError, Origin
    from portal.settings import SettingsError, load_settings

    if url is not None:
        base = Origin.of(url).url
        if not portal_status(base).portal:
            raise KioskError(f"no Comptoir portal answers at {base}")
        yield Site(base, "login")
        return
    overrides: dict[str, Any] = {}
    if agent_url is not None:
        overrides["agent_url"] = agent_url
    try:
        settings = load_settings(config_path, overrides=overrides)
    except SettingsError as e:
        raise KioskError(str(e)) from e
    configured = f"http://{settings.listen_host}:{settings.port}/"
    if agent_url is None and portal_status(configured, timeout=1.0).portal:
        yield Site(configured, "login")
        return
    from dataclasses import replace

    from portal import create_app

    try:
        app = create_app(replace(settings, idle_timeout=max(idle_timeout, 1.0)))
    except SettingsError as e:
        raise KioskError(str(e)) from e
    with serve_in_thread(app, threads=settings.threads) as served:
        yield Site(served.url, "login")


def _serve_until_stopped(site: Site) -> None:
    """Print the addresses as one JSON line, then wait for SIGTERM or Ctrl-C."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    answer = {"portal": site.portal_url, "start": site.portal_url + site.start}
    if site.offline is not None:
        answer["agent"] = site.offline.agent_url
        answer["bundle"] = str(site.offline.bundle)
    click.echo(json.dumps(answer), nl=True)
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _show(site: Site, options: Any, *, check: bool, screenshot: Path | None) -> None:
    from kiosk.launcher import first_page, portal_status
    from kiosk.policy import KioskError
    from kiosk.window import KioskWindow

    status = portal_status(site.portal_url)
    if not status.portal:
        raise KioskError(f"the portal at {site.portal_url} does not answer")
    window = KioskWindow(first_page(site.portal_url, status, site.start), options)
    outcome: dict[str, Any] = {}
    on_start: Callable[[KioskWindow], None] | None = None
    if check:

        def on_start(win: KioskWindow) -> None:
            try:
                outcome.update(_check(win, screenshot))
            except Exception as e:  # reported as the check's result
                outcome.update(ok=False, error=str(e))
            finally:
                # the line goes out before the window closes: start-up is measured to it
                outcome.setdefault("ok", False)
                click.echo(json.dumps(outcome))
                sys.stdout.flush()
                win.close()

    else:
        # SIGTERM (a service manager, a test) closes the window, and so stops the servers
        signal.signal(
            signal.SIGTERM, lambda *_: threading.Thread(target=window.close, daemon=True).start()
        )
    window.run(on_start)
    if check and not outcome.get("ok"):
        sys.exit(1)


def _check(win: Any, screenshot: Path | None) -> dict[str, Any]:
    """Wait for the first page, its form and its pixels; the figures count from `STARTED`."""
    win.wait_ready(30)
    ready = time.monotonic() - STARTED
    form = bool(win.evaluate(_FORM_PRESENT))
    painted = win.painted(10)
    painted_s = time.monotonic() - STARTED
    result: dict[str, Any] = {
        "ok": form and painted,
        "url": win.current_url(),
        "form": form,
        "painted": painted,
        "ready_s": round(ready, 3),
        "painted_s": round(painted_s, 3),
        "pid": os.getpid(),
    }
    if screenshot is not None:
        result["screenshot"] = str(win.screenshot(screenshot))
    return result
