"""`comptoir portal serve`: the teacher portal, served by waitress on loopback.

The portal binds 127.0.0.1 by default. Another address is refused unless `--allow-remote` is
given: the login form carries directory passwords, so a portal reachable from the network must
sit behind HTTPS (a reverse proxy), and exposing it has to be a visible decision in the unit
file rather than a typo in a configuration.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

# portal.settings.CONFIG_ENV; spelled out so that `comptoir --help` does not import Flask
CONFIG_ENV = "COMPTOIR_PORTAL_CONFIG"


@click.group()
def portal() -> None:
    """Run the teacher portal."""


@portal.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"The portal's TOML settings (docs/portal.md); also {CONFIG_ENV}.",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1, or listen_host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8080, or port).")
@click.option("--agent-url", help="The agent's URL (default http://127.0.0.1:8088).")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host (put HTTPS in front: passwords cross the network).",
)
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
def serve_command(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    agent_url: str | None,
    allow_remote: bool,
    log_level: str,
) -> None:
    """Serve the portal with waitress until interrupted."""
    from waitress import serve

    from portal import create_app
    from portal.settings import SettingsError, is_loopback, load_settings

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["listen_host"] = host
    if port is not None:
        overrides["port"] = port
    if agent_url is not None:
        overrides["agent_url"] = agent_url
    try:
        settings = load_settings(config_path, overrides=overrides)
    except SettingsError as e:
        raise click.ClickException(str(e)) from e
    if not is_loopback(settings.listen_host) and not allow_remote:
        raise click.UsageError(
            f"{settings.listen_host} is not a loopback address: the portal listens on "
            "127.0.0.1 unless --allow-remote is given (and then put HTTPS in front of it)"
        )

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = create_app(settings)
    except SettingsError as e:
        raise click.ClickException(str(e)) from e
    if not is_loopback(settings.listen_host):
        click.echo(
            f"comptoir: warning: serving on {settings.listen_host}: use HTTPS in front", err=True
        )
    click.echo(
        f"Comptoir portal on http://{settings.listen_host}:{settings.port}/ "
        f"(agent {settings.agent_url})",
        err=True,
    )
    sys.stderr.flush()
    serve(
        app,
        host=settings.listen_host,
        port=settings.port,
        threads=settings.threads,
        ident="comptoir-portal",
    )
