"""`comptoir shutdown`: install what is pending before the machine stops (WAPT's waptexit).

Run by the systemd unit `deploy/comptoir-shutdown.service` or the Windows shutdown script
(`docs/shutdown.md`). The policy is `agent_bridge.shutdown`; this module reads the options,
finds the agent, picks the window or the terminal, prints and logs the report, and exits with
the report's code: 0 done or nothing pending, 1 failures, 3 postponed, 4 out of time, 5 agent
unusable, 2 bad options.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import click

from agent_bridge.client import DEFAULT_URL, AgentClient
from agent_bridge.errors import BridgeError
from agent_bridge.models import Session
from agent_bridge.shutdown import (
    Choice,
    InstallProgress,
    Plan,
    PostponeStore,
    Report,
    ShutdownPolicy,
    ShutdownUI,
    run_shutdown,
)

DEFAULT_AGENT_CONFIG = Path("/etc/comptoir/agent.toml")
FALLBACK_STATE_DIR = Path("/var/lib/comptoir/shutdown")
SHUTDOWN_USER = "comptoir-shutdown"
LOG_FILE = "shutdown.log"

log = logging.getLogger("comptoir.shutdown")


class TerminalUI:
    """The run on a terminal (or the journal): a countdown and progress bar, no window.

    While postponing is allowed, a line "p" (or "postpone") on standard input postpones and
    "i" (or "install") installs now; at shutdown standard input is empty and nothing is read.
    """

    def __init__(self, out: TextIO | None = None, stdin: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.stdin = stdin if stdin is not None else sys.stdin
        self.tty = self.out.isatty()
        self.plan: Plan | None = None
        self._last_shown: int | None = None
        self._last_step = ""
        self._input_open = sys.platform != "win32"

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @staticmethod
    def _bar(fraction: float, width: int = 30) -> str:
        filled = round(max(0.0, min(1.0, fraction)) * width)
        return "[" + "#" * filled + "." * (width - filled) + "]"

    def show(self, plan: Plan) -> None:
        self.plan = plan
        self._say("Pending before shutdown:")
        for item in plan.items:
            deadline = f", deadline {item.deadline:%Y-%m-%d %H:%M}Z" if item.deadline else ""
            self._say(f"  {item.request} ({item.kind}{deadline})")
        if plan.running_tasks:
            self._say(f"  {plan.running_tasks} task(s) already running in the agent")
        if plan.apps:
            self._say("These applications will be closed: " + ", ".join(plan.apps))
        if plan.can_postpone:
            self._say(
                f"Postponements left: {plan.postpones_left}. "
                "Type p and Enter to postpone, i and Enter to install now."
            )
        elif plan.forced_by == "deadline":
            self._say("The deadline has passed: the installation cannot be postponed.")
        else:
            self._say("No postponement left: the installation cannot be postponed.")

    def _read_choice(self) -> Choice | None:
        if not self._input_open:
            return None
        try:
            ready, _, _ = select.select([self.stdin], [], [], 0)
        except (OSError, ValueError):  # not a selectable stream
            self._input_open = False
            return None
        if not ready:
            return None
        line = self.stdin.readline()
        if line == "":
            self._input_open = False  # end of input: nobody is there to choose
            return None
        word = line.strip().lower()
        if word in ("p", "postpone"):
            return "postpone"
        if word in ("i", "install"):
            return "install"
        return None

    def countdown(self, remaining: float) -> Choice | None:
        seconds = int(remaining + 0.999)
        total = self.plan.countdown if self.plan is not None else 0
        if self.tty:
            fraction = 1 - remaining / total if total else 1.0
            self.out.write(f"\rInstallation in {seconds:4d} s {self._bar(fraction)}")
            self.out.flush()
            if remaining <= 0:
                self.out.write("\n")
        elif seconds != self._last_shown and (seconds % 10 == 0 or seconds <= 3):
            self._say(f"Installation in {seconds} s")
        self._last_shown = seconds
        return self._read_choice()

    def closing(self, apps: Sequence[str]) -> None:
        self._say("Closing: " + ", ".join(apps))

    def installing(self, progress: InstallProgress) -> None:
        if self.tty:
            self.out.write(f"\r{self._bar(progress.percent / 100)} {progress.percent:5.1f} % ")
            self.out.write(f"{progress.step[:40]:<40}")
            self.out.flush()
        elif progress.step and progress.step != self._last_step:
            self._say(f"{progress.percent:5.1f} % {progress.step}")
        self._last_step = progress.step

    def finished(self, report: Report) -> None:
        if self.tty and self._last_step:
            self.out.write("\n")


def _admin_session(config_path: Path | None) -> tuple[str | None, Path | None, Session | None]:
    """From Comptoir's agent configuration: its URL, its data directory, and an admin session.

    The session is a token signed with the agent's own key (readable by root only), so only a
    privileged process can make it; it lets the run cancel the agent's tasks when its budget
    runs out. Returns Nones for what cannot be found (a real WAPT agent has no such file).
    """
    if config_path is None or not config_path.is_file():
        return None, None, None
    from agent_bridge.agent.auth import AuthError, Identity, TokenSigner, load_or_create_secret
    from agent_bridge.agent.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    url = f"http://127.0.0.1:{config.port}"
    session = None
    if config.secret_file.is_file():
        try:
            signer = TokenSigner(load_or_create_secret(config.secret_file), 3600)
        except (AuthError, OSError) as e:
            log.warning("no admin session for cancelling tasks: %s", e)
        else:
            identity = Identity(SHUTDOWN_USER, frozenset({config.admin_group}))
            session = Session(SHUTDOWN_USER, signer.issue(identity), (config.admin_group,))
    return url, config.data_dir, session


def _setup_logging(state_dir: Path) -> None:
    """Append the run's log to `<state_dir>/shutdown.log`, the history admins read."""
    logger = logging.getLogger("comptoir.shutdown")
    logger.setLevel(logging.INFO)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(state_dir / LOG_FILE, encoding="utf-8")
    except OSError as e:
        click.echo(f"comptoir: cannot write the log in {state_dir}: {e}", err=True)
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


def _default_language() -> str:
    for name in ("COMPTOIR_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            return "en" if value.lower().startswith("en") else "fr"
    return "fr"


@click.command("shutdown")
@click.option(
    "--agent-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("COMPTOIR_AGENT_CONFIG", str(DEFAULT_AGENT_CONFIG)),
    show_default=str(DEFAULT_AGENT_CONFIG),
    help="Comptoir agent's configuration: its port, data directory and key (optional).",
)
@click.option("--url", help="The agent's address (default: from --agent-config, else 8088).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where postponements and the log are kept (default: <agent data>/shutdown).",
)
@click.option(
    "--countdown",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds before installing.",
)
@click.option(
    "--max-postpones",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Postponements allowed in a row (0: none).",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=1800.0,
    show_default=True,
    help="Hard time limit of the whole run, in seconds.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds an application has to close before it is killed.",
)
@click.option("--no-window", is_flag=True, help="Run in the terminal, without a window.")
@click.option("--lang", type=click.Choice(["fr", "en"]), help="Language of the window.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def shutdown(
    agent_config: Path,
    url: str | None,
    state_dir: Path | None,
    countdown: float,
    max_postpones: int,
    budget: float,
    grace: float,
    no_window: bool,
    lang: str | None,
    as_json: bool,
) -> None:
    """Install what is pending before shutdown, after a countdown the user may postpone.

    Exits at once when nothing is pending. Exit status: 0 done or nothing to do, 1 some
    installs failed, 3 postponed, 4 time budget exhausted, 5 agent unusable, 2 bad options.
    """
    config_url, data_dir, session = _admin_session(agent_config)
    url = url or os.environ.get("COMPTOIR_AGENT_URL") or config_url or DEFAULT_URL
    if state_dir is None:
        state_dir = data_dir / "shutdown" if data_dir is not None else FALLBACK_STATE_DIR
    _setup_logging(state_dir)
    policy = ShutdownPolicy(countdown, max_postpones, budget, grace)
    try:
        client = AgentClient(
            url, timeout=30.0, connect_retries=10.0, user_agent="comptoir-shutdown"
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--url") from e
    store = PostponeStore(state_dir)
    language = lang or _default_language()

    def work(ui: ShutdownUI) -> Report:
        return run_shutdown(client, policy, store, ui, session=session)

    report: Report | None = None
    if not no_window and _worth_a_window(client):
        from comptoir.shutdown_window import display_available, run_with_window

        if display_available():
            try:
                report = run_with_window(work, lang=language)
            except (ImportError, RuntimeError) as e:
                log.warning("no window (%s): running in the terminal", e)
    if report is None:
        report = work(TerminalUI())
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(report.exit_code)


def _worth_a_window(client: AgentClient) -> bool:
    """Open a window only when something is pending: with nothing, the run ends at once."""
    try:
        upgrades = client.checkupgrades()
    except BridgeError:
        return False  # the run reports the agent error without a window
    return upgrades is not None and upgrades.has_shutdown_work
