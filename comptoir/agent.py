"""`comptoir agent`: run the agent, and talk to the machine's agent like `wapt-get` does.

`serve` runs Comptoir's agent. The other commands go through the bridge, so they work the same
against Comptoir's agent and against a real WAPT agent.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from agent_bridge.client import AgentClient
from agent_bridge.errors import BridgeError
from agent_bridge.models import Session, Task
from comptoir.common import ProgressBar, emit_json

P = ParamSpec("P")
R = TypeVar("R")

PASSWORD_ENV = "COMPTOIR_PASSWORD"  # noqa: S105 (a variable name)
DEFAULT_URL = "http://127.0.0.1:8088"


def bridge_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a bridge error into a one-line message and exit status 1."""
    from functools import wraps

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except BridgeError as e:
            click.echo(f"comptoir: {e}", err=True)
            sys.exit(1)

    return wrapper


_url = click.option(
    "--url",
    default=lambda: os.environ.get("COMPTOIR_AGENT_URL", DEFAULT_URL),
    show_default=DEFAULT_URL,
    help="The agent's address (COMPTOIR_AGENT_URL).",
)
_user = click.option(
    "--user",
    "username",
    default=lambda: os.environ.get("USER", ""),
    help="Directory account to act as (asks for its password, or reads COMPTOIR_PASSWORD).",
)


def _session(client: AgentClient, username: str) -> Session:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = click.prompt(f"Password for {username}", hide_input=True, err=True)
    return client.login(username, str(password))


@click.group()
def agent() -> None:
    """Run the agent, or ask the machine's agent for something."""


@agent.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The agent's TOML configuration (docs/agent.md).",
)
def serve_command(config_path: Path | None) -> None:
    """Run Comptoir's agent on loopback until interrupted (what the systemd unit starts)."""
    from agent_bridge.agent.config import ConfigError, load_config
    from agent_bridge.agent.core import Agent
    from agent_bridge.agent.service import serve

    try:
        config = load_config(config_path)
    except ConfigError as e:
        click.echo(f"comptoir: {e}", err=True)
        sys.exit(2)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    serve(Agent(config))


def _print_task(task: Task) -> None:
    click.echo(f"task #{task.id} {task.description}: {task.state}")


def _follow(client: AgentClient, task: Task, timeout: float) -> Task:
    """Follow a task with a progress bar until it ends; return it finished."""
    with ProgressBar(task.description) as bar:
        last_event = -1
        current = task
        while not current.is_finished:
            status = client.tasks_status(last_event, timeout_ms=2000)
            last_event = status.last_event_id
            for seen in status.tasks or ():
                if seen.id == task.id:
                    current = seen
                    bar.update(int(seen.progress), 100)
        return client.task(task.id) or current


@agent.command("status")
@_url
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@bridge_errors
def status_command(url: str, as_json: bool) -> None:
    """Installed packages and what is pending on this machine."""
    client = AgentClient(url)
    installed = client.status()
    upgrades = client.checkupgrades()
    if as_json:
        emit_json(
            {
                "installed": [p.__dict__ for p in installed],
                "upgrades": upgrades.__dict__ if upgrades else None,
            }
        )
        return
    for row in installed:
        click.echo(f"{row.package:<30} {row.version:<14} {row.install_status}")
    if upgrades is None:
        click.echo("No update has run yet.")
    elif upgrades.upgrades:
        click.echo("Pending: " + ", ".join(upgrades.upgrades))
    else:
        click.echo("Up to date.")


@agent.command("list")
@_url
@_user
@click.option("--search", "query", help="Words to look for.")
@bridge_errors
def list_command(url: str, username: str, query: str | None) -> None:
    """The packages this user may install, with their state."""
    client = AgentClient(url)
    session = _session(client, username)
    for package in client.packages(session, query=query):
        click.echo(
            f"{package.package:<30} {package.version:<14} {package.state:<16} {package.name}"
        )


def _act(
    url: str, username: str, wait: bool, timeout: float, act: Callable[[AgentClient, Any], Task]
) -> None:
    client = AgentClient(url)
    session = _session(client, username)
    task = act(client, session)
    _print_task(task)
    if wait:
        done = _follow(client, task, timeout)
        _print_task(done)
        if done.state != "done":
            click.echo(done.summary or done.logs, err=True)
            sys.exit(1)


_wait = click.option("--wait/--no-wait", default=True, help="Follow the task until it ends.")
_timeout = click.option("--timeout", default=3600.0, help="Seconds to wait for the task.")


@agent.command("install")
@click.argument("package")
@_url
@_user
@_wait
@_timeout
@bridge_errors
def install_command(url: str, package: str, username: str, wait: bool, timeout: float) -> None:
    """Install PACKAGE (a name, or a request such as 'geogebra(>=6)')."""
    _act(url, username, wait, timeout, lambda c, s: c.install(s, package))


@agent.command("remove")
@click.argument("package")
@_url
@_user
@_wait
@_timeout
@bridge_errors
def remove_command(url: str, package: str, username: str, wait: bool, timeout: float) -> None:
    """Remove PACKAGE."""
    _act(url, username, wait, timeout, lambda c, s: c.remove(s, package)[0])


@agent.command("upgrade")
@_url
@_wait
@_timeout
@bridge_errors
def upgrade_command(url: str, wait: bool, timeout: float) -> None:
    """Install what this machine's assignments require, and upgrade what is installed."""
    client = AgentClient(url)
    tasks = client.upgrade()
    for task in tasks:
        _print_task(task)
        if wait:
            _print_task(_follow(client, task, timeout))


@agent.command("update")
@_url
@bridge_errors
def update_command(url: str) -> None:
    """Read the repositories' indexes again."""
    _print_task(AgentClient(url).update())
