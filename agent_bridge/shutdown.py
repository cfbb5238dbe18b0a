"""The shutdown run (`comptoir shutdown`, WAPT's waptexit): postpones, countdown, install, report.

At shutdown the machine installs what is pending: upgrades and assignments, like waptexit
(wapt-format.md §5), plus what its assignments keep for the shutdown run (`at_shutdown`). The run
talks to the agent through `AgentClient` only, so it works against Comptoir's agent and against
a real WAPT agent; with WAPT's, which sends no deadlines, it behaves like waptexit.

The policy, in order:

1. Nothing pending (no upgrade, removal, shutdown item or running task): the run ends at once.
2. Otherwise the user sees what is pending and a countdown. They may postpone, at most
   `max_postpones` times in a row (kept in a small file under the state directory, so across
   shutdowns), and never once the earliest deadline of the pending items has passed. When
   postponing is not allowed there is no postpone button and the window cannot be closed.
3. When the countdown ends or the user says "install now", the applications that the pending
   packages name in `impacted_process` are closed (terminate, then kill after `grace` seconds),
   and the agent's upgrade runs (`upgrade.json?shutdown=1`), followed task by task.
4. The whole run has a hard time budget: past it, the agent's tasks are cancelled and the run
   ends, saying what was not done.
5. A `Report` tells what was installed, failed, not done or postponed; its `exit_code` is the
   command's exit status (see `docs/shutdown.md`).

The user interface (window or terminal) is a `ShutdownUI`; time comes from a `Clock`, so tests
can run the policy fast and the same code runs for real. Nothing here knows about Flask or Qt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from agent_bridge.agent.runtime.setuphelpers import find_processes
from agent_bridge.client import AgentClient
from agent_bridge.errors import BridgeError
from agent_bridge.models import Session, Task, Upgrades
from wapt.fsutil import write_atomic

__all__ = [
    "EXIT_AGENT",
    "EXIT_BUDGET",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_POSTPONED",
    "Choice",
    "Clock",
    "InstallProgress",
    "PendingItem",
    "Plan",
    "PostponeStore",
    "Report",
    "ShutdownPolicy",
    "ShutdownUI",
    "StateError",
    "SystemClock",
    "close_processes",
    "run_shutdown",
]

log = logging.getLogger("comptoir.shutdown")

EXIT_OK: Final = 0
"""Nothing was pending, or everything pending is now done."""
EXIT_FAILED: Final = 1
"""At least one install or removal failed."""
EXIT_POSTPONED: Final = 3
"""The user postponed: nothing was installed."""
EXIT_BUDGET: Final = 4
"""The time budget ran out: the agent's remaining tasks were cancelled."""
EXIT_AGENT: Final = 5
"""The agent could not be reached, or answered something unusable."""

STATE_FILE: Final = "shutdown-state.json"
TICK: Final = 0.25
"""How often the countdown asks the user interface for a choice (seconds)."""
POLL_MS: Final = 1000
"""Long-poll length while following the agent's tasks."""

Choice = Literal["install", "postpone"]
Kind = Literal["install", "upgrade", "additional", "remove", "at_shutdown"]
Outcome = Literal["nothing", "done", "postponed", "failed", "budget", "agent"]


class StateError(Exception):
    """The postpone state file cannot be read or written; the message names it and why."""


# --- time -------------------------------------------------------------------------------------


class Clock(Protocol):
    """Where the run gets the time and how it waits (a test clock can run faster)."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


# --- policy and state -------------------------------------------------------------------------


@dataclass(frozen=True)
class ShutdownPolicy:
    """How patient the run is: countdown, postpones, budget, and the grace given to apps."""

    countdown: float = 60.0
    max_postpones: int = 3
    budget: float = 1800.0
    grace: float = 10.0

    def __post_init__(self) -> None:
        """Raises ValueError naming the setting that is out of range."""
        if not self.countdown >= 0:
            raise ValueError(f"countdown {self.countdown!r}: must be 0 or more seconds")
        if self.max_postpones < 0:
            raise ValueError(f"max_postpones {self.max_postpones!r}: must be 0 or more")
        if not self.budget > 0:
            raise ValueError(f"budget {self.budget!r}: must be a positive number of seconds")
        if not self.grace >= 0:
            raise ValueError(f"grace {self.grace!r}: must be 0 or more seconds")


@dataclass(frozen=True)
class PostponeRecord:
    """How many times in a row the user postponed, and when last."""

    postpones: int = 0
    last_postponed: str | None = None
    items: tuple[str, ...] = ()


class PostponeStore:
    """The postpone count, kept durably in `<state_dir>/shutdown-state.json` (atomic writes).

    The count grows with each postpone and goes back to 0 once a run finds nothing pending.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STATE_FILE

    def load(self) -> PostponeRecord:
        """The record; a fresh one when the file does not exist.

        Raises:
            StateError: the file exists but cannot be read or is not a valid record.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return PostponeRecord()
        except OSError as e:
            raise StateError(f"{self.path}: cannot read: {e.strerror or e}") from e
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise StateError(f"{self.path}: not JSON: {e}") from e
        if not isinstance(data, dict):
            raise StateError(f"{self.path}: expected an object")
        count = data.get("postpones")
        last = data.get("last_postponed")
        items = data.get("items", [])
        if type(count) is not int or count < 0:
            raise StateError(f"{self.path}: postpones {count!r} is not a count")
        if last is not None and not isinstance(last, str):
            raise StateError(f"{self.path}: last_postponed {last!r} is not a time")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise StateError(f"{self.path}: items is not a list of package requests")
        return PostponeRecord(count, last, tuple(items))

    def _write(self, record: PostponeRecord) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {"version": 1, **asdict(record), "items": list(record.items)}
            write_atomic(self.path, json.dumps(data, indent=1).encode("utf-8"))
        except OSError as e:
            raise StateError(f"{self.path}: cannot write: {e.strerror or e}") from e

    def record_postpone(self, now: datetime, items: Sequence[str]) -> PostponeRecord:
        """Count one more postpone.

        Raises:
            StateError: the state cannot be read or written.
        """
        current = self.load()
        record = PostponeRecord(current.postpones + 1, _utc_text(now), tuple(items))
        self._write(record)
        return record

    def reset(self) -> None:
        """Forget the postpones (nothing is pending any more).

        Raises:
            StateError: the file cannot be written.
        """
        if self.path.exists():
            self._write(PostponeRecord())


# --- what is pending --------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingItem:
    """One thing the run would do: a package request to install or a name to remove."""

    request: str
    kind: Kind
    deadline: datetime | None = None
    impacted_process: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        return _name(self.request)

    @property
    def version(self) -> str:
        """The exact version the request names (`tis-heavy(=1-1)` -> `1-1`), else ""."""
        _, _, rest = self.request.partition("(")
        rest = rest.strip().removesuffix(")").strip()
        return rest[1:].strip() if rest.startswith("=") and not rest.startswith("==") else ""


def _name(request: str) -> str:
    """`tis-heavy(=1-1)` -> `tis-heavy`."""
    return request.split("(", 1)[0].strip()


@dataclass(frozen=True)
class Plan:
    """What the user is shown before the countdown: the items, the deadline, the choices."""

    items: tuple[PendingItem, ...]
    deadline: datetime | None
    postpones_used: int
    postpones_left: int
    can_postpone: bool
    #: why postponing is not allowed: "deadline", "postpones", or None
    forced_by: Literal["deadline", "postpones"] | None
    #: applications named in `impacted_process` that are running now, to be closed
    apps: tuple[str, ...]
    countdown: float
    #: the agent is busy with tasks of its own
    running_tasks: int = 0


def _parse_deadline(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        log.warning("ignoring the deadline %r: not an ISO time", text)
        return None
    if moment.tzinfo is None:
        log.warning("ignoring the deadline %r: no time zone", text)
        return None
    return moment.astimezone(UTC)


def pending_items(upgrades: Upgrades) -> list[PendingItem]:
    """Everything an upgrade at shutdown would do, from `checkupgrades.json`.

    WAPT's answer gives install, upgrade, additional and remove; Comptoir's adds the shutdown
    items (with deadlines) and the processes each install closes.
    """
    impacted = upgrades.impacted_process
    items: list[PendingItem] = []
    pending = upgrades.pending
    kinds: tuple[tuple[Kind, tuple[str, ...]], ...] = (
        ("install", pending.install),
        ("upgrade", pending.upgrade),
        ("additional", pending.additional),
    )
    for kind, requests in kinds:
        for request in requests:
            items.append(
                PendingItem(request, kind, impacted_process=impacted.get(_name(request), ()))
            )
    listed = {item.request for item in items}
    for request in upgrades.upgrades:  # a WAPT agent may list upgrades only here
        if request not in listed:
            items.append(
                PendingItem(request, "upgrade", impacted_process=impacted.get(_name(request), ()))
            )
    for name in pending.remove:
        items.append(PendingItem(name, "remove"))
    detailed = {item.request: item for item in upgrades.shutdown_items}
    for request in pending.at_shutdown:
        detail = detailed.get(request)
        items.append(
            PendingItem(
                request,
                "at_shutdown",
                deadline=_parse_deadline(detail.deadline) if detail else None,
                impacted_process=detail.impacted_process
                if detail
                else impacted.get(_name(request), ()),
            )
        )
    return items


def running_apps(names: Sequence[str]) -> list[str]:
    """Those of these process names that have a running process (not this one or its parents)."""
    return [name for name in dict.fromkeys(names) if find_processes(name)]


def make_plan(
    items: Sequence[PendingItem],
    record: PostponeRecord,
    policy: ShutdownPolicy,
    now: datetime,
    *,
    running_tasks: int = 0,
) -> Plan:
    """Decide what the user may do: postpone or not, and why not."""
    deadlines = [item.deadline for item in items if item.deadline is not None]
    deadline = min(deadlines) if deadlines else None
    left = max(0, policy.max_postpones - record.postpones)
    forced_by: Literal["deadline", "postpones"] | None = None
    if deadline is not None and now >= deadline:
        forced_by = "deadline"
    elif left == 0:
        forced_by = "postpones"
    names = [name for item in items for name in item.impacted_process]
    return Plan(
        items=tuple(items),
        deadline=deadline,
        postpones_used=record.postpones,
        postpones_left=left,
        can_postpone=forced_by is None,
        forced_by=forced_by,
        apps=tuple(running_apps(names)),
        countdown=min(policy.countdown, policy.budget),
        running_tasks=running_tasks,
    )


# --- closing applications ---------------------------------------------------------------------


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        listing = subprocess.run(  # noqa: S603
            ["tasklist", "/FI", f"PID eq {pid}", "/NH"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return str(pid) in listing
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


def _signal(pid: int, *, force: bool) -> None:
    if sys.platform == "win32":
        # without /F, taskkill asks the application to close; with it, the process is ended
        command = ["taskkill", *(["/F"] if force else []), "/T", "/PID", str(pid)]
        subprocess.run(command, capture_output=True, check=False)  # noqa: S603
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)


@dataclass(frozen=True)
class Closed:
    """What `close_processes` did: names that closed when asked, and names it had to kill."""

    closed: tuple[str, ...]
    killed: tuple[str, ...]


def close_processes(
    names: Sequence[str], grace: float, *, sleep: Callable[[float], None] = time.sleep
) -> Closed:
    """Close every running process with one of these names: terminate, wait, then kill.

    Linux: SIGTERM, then SIGKILL after `grace` seconds (processes found through /proc).
    Windows: `taskkill` (which asks the application to close), then `taskkill /F`. This process
    and its parents are never touched. Raises nothing: a process that is gone is closed.
    """
    targets: dict[int, str] = {}
    for name in dict.fromkeys(names):
        for process in find_processes(name):
            targets[process.pid] = name
    for pid, name in targets.items():
        log.info("closing %s (pid %d)", name, pid)
        _signal(pid, force=False)
    waited = 0.0
    step = 0.1
    while any(_alive(pid) for pid in targets) and waited < grace:
        sleep(step)
        waited += step
    killed: dict[str, None] = {}
    for pid, name in targets.items():
        if _alive(pid):
            log.warning("%s (pid %d) did not close within %g s: killing it", name, pid, grace)
            _signal(pid, force=True)
            killed[name] = None
    closed = [name for name in dict.fromkeys(targets.values()) if name not in killed]
    return Closed(tuple(closed), tuple(killed))


# --- the user interface -----------------------------------------------------------------------


@dataclass(frozen=True)
class InstallProgress:
    """What the agent is doing: the overall percentage, its current step, and per item."""

    percent: float
    step: str
    #: request -> "waiting", "running" or "finished" (the final word is in the report)
    items: dict[str, str]


class ShutdownUI(Protocol):
    """A window or a terminal: it shows, and the user may choose during the countdown."""

    def show(self, plan: Plan) -> None:
        """Show what is pending and what the user may do."""

    def countdown(self, remaining: float) -> Choice | None:
        """Show `remaining` seconds; return the user's choice so far, if any."""

    def closing(self, apps: Sequence[str]) -> None:
        """Say that these applications are being closed."""

    def installing(self, progress: InstallProgress) -> None:
        """Show the progress of the install."""

    def finished(self, report: Report) -> None:
        """Show the final report."""


# --- the report -------------------------------------------------------------------------------


@dataclass
class Report:
    """What the run did. `exit_code` is the command's exit status."""

    outcome: Outcome
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)
    closed_apps: list[str] = field(default_factory=list)
    killed_apps: list[str] = field(default_factory=list)
    postpones_left: int | None = None
    deadline: datetime | None = None
    message: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return {
            "nothing": EXIT_OK,
            "done": EXIT_OK,
            "postponed": EXIT_POSTPONED,
            "failed": EXIT_FAILED,
            "budget": EXIT_BUDGET,
            "agent": EXIT_AGENT,
        }[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["deadline"] = _utc_text(self.deadline) if self.deadline else None
        data["exit_code"] = self.exit_code
        return data

    def lines(self) -> list[str]:
        """The report as plain lines, for the terminal and the log."""
        headline = {
            "nothing": "nothing pending",
            "done": "everything pending is done",
            "postponed": "postponed by the user",
            "failed": "some installs failed",
            "budget": "time budget exhausted: remaining work cancelled",
            "agent": "the agent could not be used",
        }[self.outcome]
        lines = [f"shutdown run: {headline} ({self.seconds:.1f} s, exit {self.exit_code})"]
        for label, values in (
            ("done", self.done),
            ("failed", self.failed),
            ("not done", self.not_done),
            ("postponed", self.postponed),
            ("closed applications", self.closed_apps),
            ("killed applications", self.killed_apps),
        ):
            if values:
                lines.append(f"  {label}: {', '.join(values)}")
        if self.outcome == "postponed" and self.postpones_left is not None:
            deadline = f", deadline {_utc_text(self.deadline)}" if self.deadline else ""
            lines.append(f"  postponements left: {self.postpones_left}{deadline}")
        if self.message:
            lines.append(f"  {self.message}")
        return lines


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the run ----------------------------------------------------------------------------------


def _has_work(upgrades: Upgrades | None) -> bool:
    return upgrades is not None and upgrades.has_shutdown_work


def _item_states(items: Sequence[PendingItem], tasks: Sequence[Task]) -> dict[str, str]:
    """Per item, from the tasks' logs: "Installing <name> …" or "Removing <name>" lines."""
    started: list[str] = []
    finished = all(task.is_finished for task in tasks)
    for task in tasks:
        for line in task.logs.splitlines():
            for item in items:
                name = item.package
                if line.startswith((f"Installing {name} ", f"Removing {name}")):
                    if name in started:
                        started.remove(name)
                    started.append(name)
    states = {}
    for item in items:
        if item.package not in started:
            states[item.request] = "waiting"
        elif item.package == started[-1] and not finished:
            states[item.request] = "running"
        else:
            states[item.request] = "finished"
    return states


class ShutdownRun:
    """One shutdown run; `run_shutdown` is the function to call."""

    def __init__(
        self,
        client: AgentClient,
        policy: ShutdownPolicy,
        store: PostponeStore,
        ui: ShutdownUI,
        clock: Clock,
        session: Session | None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.store = store
        self.ui = ui
        self.clock = clock
        self.session = session
        self.started = clock.monotonic()
        self.budget_end = self.started + policy.budget

    def _report(self, report: Report) -> Report:
        report.seconds = self.clock.monotonic() - self.started
        for line in report.lines():
            log.info("%s", line)
        self.ui.finished(report)
        return report

    def run(self) -> Report:
        try:
            return self._run()
        except BridgeError as e:
            log.error("agent error: %s", e)
            return self._report(Report("agent", message=str(e)))

    def _run(self) -> Report:
        upgrades = self.client.checkupgrades()
        if not _has_work(upgrades):
            self._reset_postpones()
            return self._report(Report("nothing"))
        assert upgrades is not None
        items = pending_items(upgrades)
        try:
            record = self.store.load()
        except StateError as e:
            # Unreadable state must not let the user postpone forever: count them as spent.
            log.error("%s; counting every postponement as used", e)
            record = PostponeRecord(self.policy.max_postpones)
        plan = make_plan(
            items,
            record,
            self.policy,
            self.clock.now(),
            running_tasks=len(upgrades.running_tasks),
        )
        log.info(
            "pending: %s; deadline %s; postponements left %d%s",
            ", ".join(i.request for i in items) or "running tasks only",
            _utc_text(plan.deadline) if plan.deadline else "none",
            plan.postpones_left,
            f"; forced by {plan.forced_by}" if plan.forced_by else "",
        )
        self.ui.show(plan)
        if self._countdown(plan) == "postpone":
            try:
                saved = self.store.record_postpone(self.clock.now(), [i.request for i in items])
            except StateError as e:
                log.error("%s", e)
                saved = PostponeRecord(record.postpones + 1)
            return self._report(
                Report(
                    "postponed",
                    postponed=[i.request for i in items],
                    postpones_left=max(0, self.policy.max_postpones - saved.postpones),
                    deadline=plan.deadline,
                )
            )
        return self._install(plan)

    def _countdown(self, plan: Plan) -> Choice:
        end = self.clock.monotonic() + plan.countdown
        while True:
            remaining = max(0.0, end - self.clock.monotonic())
            choice = self.ui.countdown(remaining)
            if choice == "postpone" and plan.can_postpone:
                log.info("the user postponed")
                return "postpone"
            if choice == "install":
                log.info("the user asked to install now")
                return "install"
            if remaining <= 0:
                return "install"
            self.clock.sleep(min(TICK, remaining))

    def _install(self, plan: Plan) -> Report:
        report = Report("done", deadline=plan.deadline)
        # looked up again: an application may have been started during the countdown
        apps = running_apps([name for item in plan.items for name in item.impacted_process])
        if apps:
            self.ui.closing(apps)
            closed = close_processes(apps, self.policy.grace, sleep=self.clock.sleep)
            report.closed_apps, report.killed_apps = list(closed.closed), list(closed.killed)
        tasks = {task.id: task for task in self.client.upgrade(shutdown=True)}
        log.info("agent tasks: %s", ", ".join(f"#{t.id} {t.description}" for t in tasks.values()))
        over_budget = self._follow(plan, tasks)
        if over_budget:
            log.warning("time budget of %g s exhausted: cancelling", self.policy.budget)
            self._cancel(plan, tasks)
        after = self.client.checkupgrades()
        remaining = {i.request for i in pending_items(after)} if after is not None else set()
        remaining_names = {_name(r) for r in remaining}
        for item in plan.items:
            if item.request not in remaining and item.package not in remaining_names:
                report.done.append(item.request)
            elif over_budget:
                report.not_done.append(item.request)
            else:
                report.failed.append(item.request)
        errors = [t for t in tasks.values() if t.state == "error"]
        if over_budget:
            report.outcome = "budget"
            report.message = f"time budget of {self.policy.budget:g} s exhausted"
        elif report.failed or errors:
            report.outcome = "failed"
            report.message = "; ".join(f"task #{t.id}: {t.summary}" for t in errors if t.summary)
        if not remaining:
            self._reset_postpones()
        return self._report(report)

    def _follow(self, plan: Plan, tasks: dict[int, Task]) -> bool:
        """Follow the tasks until they end; True when the budget ran out first."""
        last_event = -1
        while not all(task.is_finished for task in tasks.values()):
            left = self.budget_end - self.clock.monotonic()
            if left <= 0:
                return True
            status = self.client.tasks_status(last_event, timeout_ms=int(min(POLL_MS, left * 1000)))
            changed = status.last_event_id != last_event
            last_event = status.last_event_id
            for seen in status.tasks or ():
                if seen.id in tasks:
                    tasks[seen.id] = seen
            running = [t for t in tasks.values() if t.state == "running"]
            percent = sum(t.progress if not t.is_finished else 100.0 for t in tasks.values())
            self.ui.installing(
                InstallProgress(
                    percent=percent / max(len(tasks), 1),
                    step=running[0].runstatus if running else "",
                    items=_item_states(plan.items, list(tasks.values())),
                )
            )
            if not changed:
                self.clock.sleep(TICK)
        return False

    def _cancel(self, plan: Plan, tasks: dict[int, Task]) -> None:
        try:
            cancelled = self.client.cancel_all_tasks(self.session)
        except BridgeError as e:
            log.error("could not cancel the agent's tasks: %s", e)
            return
        log.info("cancelled: %s", ", ".join(f"#{t.id}" for t in cancelled) or "nothing")
        # A running install stops at its next step; give it the grace period to do so.
        end = self.clock.monotonic() + self.policy.grace
        for task_id in tasks:
            with contextlib.suppress(BridgeError):
                found = self.client.task(task_id)
                while found is not None and not found.is_finished and self.clock.monotonic() < end:
                    self.clock.sleep(TICK)
                    found = self.client.task(task_id)

    def _reset_postpones(self) -> None:
        try:
            self.store.reset()
        except StateError as e:
            log.error("%s", e)


def run_shutdown(
    client: AgentClient,
    policy: ShutdownPolicy,
    store: PostponeStore,
    ui: ShutdownUI,
    *,
    clock: Clock | None = None,
    session: Session | None = None,
) -> Report:
    """Run the shutdown policy once against the agent behind `client`; return the report.

    `session` (an admin of Comptoir's agent) is needed only to cancel tasks when the budget
    runs out; WAPT's agent cancels for any local caller. Raises nothing: agent errors end the
    run with an ``agent`` report.
    """
    return ShutdownRun(client, policy, store, ui, clock or SystemClock(), session).run()
