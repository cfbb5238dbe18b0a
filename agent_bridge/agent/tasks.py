"""The agent's task queue: one worker thread, persisted tasks, progress, cancellation, events.

`TaskQueue` runs one task at a time through an executor function, in WAPT's order: the lowest
`priority` number first, then the lowest `order` (the id), so tasks of one priority run first in
first out. That is WAPT 1.8.2's rule (`WaptTask.__cmp__` compares `(priority, order)` and the
queue is a `PriorityQueue`, so `WaptUpdate` at priority 10 runs before installs at 100). A task
that is queued while one with the same `action_key` is pending or running returns the existing
task, as WAPT's `same_action` does.

Tasks are exported as WAPT's task dicts (`AgentTask.as_dict`, spec §4.3) and every change is
announced by an event with an increasing id (`TASK_ADD`, `TASK_START`, `TASK_STATUS`,
`TASK_FINISH`, `TASK_ERROR`, `TASK_CANCEL`), which the long polls of `/tasks_status.json`,
`/tasks.json` and `/events.json` wait for on a condition variable.

Tasks live in their own durable JSON file (`DurableJSONStorage`). Adding, starting, cancelling
and finishing a task write it before they are announced; progress and log lines of the running
task are written at most once a second by a housekeeping thread. After a crash, pending tasks
run again, a task that was running becomes an error that keeps its log, and ids keep increasing.
Event ids restart above every id the previous process can have announced (see `_RESTART_GAP`),
and a client that asks with an id this queue has not reached yet is answered at once, so a
poller never waits on an id from an earlier life. The task file also holds its `epoch`, a random
id made with the file: task ids are unique only within an epoch (a lost task file starts again
at 1 with a new epoch), which is how the site server tells a new task #3 from an old one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from agent_bridge.agent.state import DurableJSONStorage, StateError
from agent_bridge.models import TASK_KEYS, TASK_LIST_KEY
from agent_bridge.reports import EPOCH_PATTERN

__all__ = [
    "EVENT_TYPES",
    "INTERRUPTED",
    "MAX_LOG_LINES",
    "TASK_STATES",
    "WAPT_TASK_KEYS",
    "AgentTask",
    "TaskCancelled",
    "TaskContext",
    "TaskQueue",
    "TaskState",
]

logger = logging.getLogger(__name__)

TaskState = Literal["pending", "running", "done", "error", "cancelled"]
TASK_STATES: Final[frozenset[str]] = frozenset({"pending", "running", "done", "error", "cancelled"})
_FINISHED: Final = ("done", "error", "cancelled")

#: The keys of WAPT 1.8.2's task dict (`WaptTask.as_dict`), exactly: the bridge's own list.
WAPT_TASK_KEYS: Final = TASK_KEYS

EVENT_TYPES: Final = (
    "TASK_ADD",
    "TASK_START",
    "TASK_STATUS",
    "TASK_FINISH",
    "TASK_ERROR",
    "TASK_CANCEL",
)
_FINISH_EVENT: Final = {"done": "TASK_FINISH", "error": "TASK_ERROR", "cancelled": "TASK_CANCEL"}

#: Summary and last log line of a task that was running when the agent died.
INTERRUPTED: Final = "interrupted: the agent stopped while this task was running"
#: A task keeps at most this many log lines (the first line then says how many were dropped).
MAX_LOG_LINES: Final = 2000
_MAX_LINE_CHARS: Final = 10_000
_MAX_EVENTS: Final = 1000  # events kept in memory for `/events.json`
_STATUS_INTERVAL: Final = 0.1  # at most ~10 TASK_STATUS events per second for the running task
_PERSIST_INTERVAL: Final = 1.0  # progress and log lines reach the disk within about a second
# After a restart, event ids continue from the stored last id plus this gap. Every event but
# TASK_STATUS is written before or with the next write, and TASK_STATUS events are limited to
# ~10/s and written within `_PERSIST_INTERVAL`, so the previous process announced at most a
# few dozen ids beyond the stored one: the gap puts the new ids above all of them.
_RESTART_GAP: Final = 1000
_STORE_TABLE: Final = "queue"
_STORE_FORMAT: Final = 1


def new_epoch() -> str:
    """A new task-history id: random, so that two lives of a task file never share one."""
    return secrets.token_hex(8)


def _now_iso() -> str:
    # WAPT's dates: local time, ISO 8601 without a zone (`datetime.now().isoformat()`).
    return datetime.now().isoformat(timespec="microseconds")


class TaskCancelled(Exception):
    """Raised by an executor (see `TaskContext.check_cancelled`) to stop a cancelled task."""


@dataclass
class AgentTask:
    """One task of the queue: WAPT's task fields, plus what the queue and the executor need.

    `action_key` identifies the action (e.g. `("install", "acme-hello")`): a second task with
    the same key is not queued while the first is pending or running. `params` is what the
    executor needs (JSON). `state` is pending, running, done, error or cancelled. `logs` is a
    list of lines; `result` any JSON value.

    Raises `ValueError` (at construction) for an unknown state.
    """

    id: int
    classname: str
    description: str = ""
    priority: int = 100
    order: int = 0
    force: bool = False
    create_date: str = field(default_factory=_now_iso)
    start_date: str | None = None
    finish_date: str | None = None
    logs: list[str] = field(default_factory=list)
    result: Any = None
    summary: str = ""
    progress: float = 0.0
    runstatus: str = ""
    created_by: str | None = None
    notify_user: bool = False
    notify_server_on_start: bool = False
    notify_server_on_finish: bool = False
    pidlist: str = "[]"
    action_key: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    state: TaskState = "pending"

    def __post_init__(self) -> None:
        if self.state not in TASK_STATES:
            raise ValueError(f"task #{self.id}: unknown state {self.state!r}")

    def as_dict(self) -> dict[str, Any]:
        """WAPT's task dict: exactly `WAPT_TASK_KEYS`, `logs` joined with newlines, `result`
        JSON-encoded a second time (`"null"` for None), as `WaptTask.as_dict` does."""
        return {
            "id": self.id,
            "classname": self.classname,
            "priority": self.priority,
            "order": self.order,
            "force": self.force,
            "create_date": self.create_date,
            "start_date": self.start_date,
            "finish_date": self.finish_date,
            "logs": "\n".join(self.logs),
            "result": json.dumps(self.result),
            "summary": self.summary,
            "progress": float(self.progress),
            "runstatus": self.runstatus,
            "description": self.description,
            "pidlist": self.pidlist,
            "notify_user": self.notify_user,
            "notify_server_on_start": self.notify_server_on_start,
            "notify_server_on_finish": self.notify_server_on_finish,
            "created_by": self.created_by,
        }

    def as_record(self) -> dict[str, Any]:
        """Every field, JSON-ready, as the queue stores it (`from_record` reads it back)."""
        record = dataclasses.asdict(self)
        record["action_key"] = list(self.action_key)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AgentTask:
        """The task an `as_record` dict describes.

        Raises `ValueError` when a field is missing or has the wrong type.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        try:
            task = cls(**values)
        except TypeError as e:
            raise ValueError(f"bad task record: {e}") from e
        if not isinstance(task.id, int) or not isinstance(task.classname, str):
            raise ValueError(f"bad task record: id {task.id!r}, classname {task.classname!r}")
        if not isinstance(task.logs, list) or not all(isinstance(x, str) for x in task.logs):
            raise ValueError(f"task #{task.id}: logs must be a list of strings")
        if not isinstance(task.params, dict):
            raise ValueError(f"task #{task.id}: params must be an object")
        if not isinstance(task.action_key, list | tuple):
            raise ValueError(f"task #{task.id}: action_key must be a list")
        task.action_key = tuple(task.action_key)
        return task

    def copy(self) -> AgentTask:
        """An independent copy (lists and dicts copied too)."""
        return AgentTask.from_record(json.loads(json.dumps(self.as_record())))


class TaskContext:
    """What an executor gets besides its task: progress, log, summary and cancellation.

    `cancelled` is set when someone cancels the task (or the queue stops); a cooperative
    executor checks it, or calls `check_cancelled`, and stops by raising `TaskCancelled`.

    A context can be built alone around a task (for testing an executor); the queue builds its
    own with its lock and a callback that announces and saves the changes.
    """

    def __init__(
        self,
        task: AgentTask,
        *,
        lock: contextlib.AbstractContextManager[Any] | None = None,
        on_change: Callable[[AgentTask], None] | None = None,
    ) -> None:
        self.task = task
        self.cancelled = threading.Event()
        self._lock: contextlib.AbstractContextManager[Any] = lock or threading.Lock()
        self._on_change = on_change
        self._dropped = 0
        self._closed = False  # set when the task has finished: later calls change nothing

    def progress(self, percent: float, step: str | None = None) -> None:
        """Set the progress (clamped to 0–100) and, if given, the current step (`runstatus`);
        a new step is also written to the log. Raises `ValueError` for NaN or infinity."""
        if not math.isfinite(percent):
            raise ValueError(f"task #{self.task.id}: progress {percent!r} is not a number")
        with self._lock:
            if self._closed:
                return
            self.task.progress = min(100.0, max(0.0, float(percent)))
            if step is not None and step != self.task.runstatus:
                self.task.runstatus = step
                self._append(step)
            self._changed()

    def log(self, line: str) -> None:
        """Append one line (or several, split on newlines) to the task's log."""
        with self._lock:
            if self._closed:
                return
            for part in str(line).splitlines() or [""]:
                self._append(part)
            self._changed()

    def set_summary(self, summary: str) -> None:
        """Set the task's one-line outcome (e.g. "Installed : acme-hello(=1.2.0-3)")."""
        with self._lock:
            if self._closed:
                return
            self.task.summary = summary
            self._changed()

    def check_cancelled(self) -> None:
        """Raise `TaskCancelled` if the task was cancelled."""
        if self.cancelled.is_set():
            raise TaskCancelled(f"task #{self.task.id} cancelled")

    def _append(self, line: str) -> None:
        if len(line) > _MAX_LINE_CHARS:
            line = line[:_MAX_LINE_CHARS] + f" [… {len(line) - _MAX_LINE_CHARS} characters cut]"
        logs = self.task.logs
        logs.append(line)
        if len(logs) > MAX_LOG_LINES:
            keep = MAX_LOG_LINES - 1
            start = 1 if self._dropped else 0  # logs[0] is then our marker
            self._dropped += len(logs) - start - keep
            logs[:] = [f"[… {self._dropped} earlier lines dropped …]", *logs[-keep:]]

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.task)


Executor = Callable[[AgentTask, TaskContext], Any]


class TaskQueue:
    """WAPT's task manager: a persisted queue run by one worker thread.

    `executor(task, context)` does the work and returns the task's result (a JSON value). It
    ends the task as done by returning, as cancelled by raising `TaskCancelled` (or any
    exception once cancellation was asked), as an error by raising anything else: the
    exception and its traceback go to the log and its last line to the summary.

    Every public method is thread-safe. `start()` starts the worker (nothing runs before);
    `stop()` stops it. Tasks returned are copies: changing them changes nothing in the queue.

    Raises `StateError` (at construction) when the task file is corrupt.
    """

    def __init__(
        self,
        store_path: Path,
        executor: Executor,
        *,
        keep_finished: int = 200,
    ) -> None:
        if keep_finished < 0:
            raise ValueError(f"keep_finished must be positive, not {keep_finished}")
        self.store_path = Path(store_path)
        self._executor = executor
        self._keep_finished = keep_finished
        self._storage = DurableJSONStorage(self.store_path)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # worker and long polls
        self._house_cond = threading.Condition(self._lock)  # housekeeping thread
        self._pending: list[AgentTask] = []  # sorted by (priority, order)
        self._running: AgentTask | None = None
        self._running_ctx: TaskContext | None = None
        self._finished: list[AgentTask] = []  # in the order they finished
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=_MAX_EVENTS)
        self._last_task_id = 0
        self._last_event_id = 0
        self._epoch = new_epoch()  # kept when the task file has one (`_restore`)
        self._last_status_emit = 0.0
        self._status_pending = False
        self._dirty = False
        self._last_persist = 0.0
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._housekeeper: threading.Thread | None = None
        #: Copies of the tasks found running in the task file at start-up, now errors.
        self.recovered: list[AgentTask] = []
        self._restore()

    # --- start-up ---------------------------------------------------------------------

    def _restore(self) -> None:
        data = self._storage.read()
        if data is None:
            return
        stored = data.get(_STORE_TABLE)
        try:
            if not isinstance(stored, dict) or stored.get("format") != _STORE_FORMAT:
                raise ValueError(f"no {_STORE_TABLE!r} object of format {_STORE_FORMAT}")
            last_task_id, last_event_id = stored["last_task_id"], stored["last_event_id"]
            if not isinstance(last_task_id, int) or not isinstance(last_event_id, int):
                raise ValueError("last_task_id and last_event_id must be integers")
            tasks = [AgentTask.from_record(r) for r in stored["tasks"]]
            epoch = stored.get("epoch")  # absent in files of older agents: a new one
            if epoch is not None and not (isinstance(epoch, str) and EPOCH_PATTERN.match(epoch)):
                raise ValueError(f"epoch {epoch!r}: expected 1 to 64 letters, digits, '-', '_'")
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"{self.store_path}: the task file is corrupt: {e}") from e
        now = _now_iso()
        for task in tasks:
            if task.state == "pending":
                self._pending.append(task)
                continue
            if task.state == "running":
                task.state = "error"
                task.finish_date = now
                task.summary = INTERRUPTED
                task.logs.append(INTERRUPTED)
                self.recovered.append(task)
                logger.warning("task #%s (%s): %s", task.id, task.description, INTERRUPTED)
            self._finished.append(task)
        self._pending.sort(key=_run_order)
        self._last_task_id = max([last_task_id, *(t.id for t in tasks)])
        if epoch is not None:
            self._epoch = epoch
        self._last_event_id = last_event_id + _RESTART_GAP
        self._trim()
        with self._lock:
            for task in self.recovered:
                self._emit("TASK_ERROR", task)
            self._persist_locked()
        self.recovered = [t.copy() for t in self.recovered]

    # --- worker -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (and the housekeeping thread). Raises `RuntimeError` if started."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                raise RuntimeError("the task queue is already running")
            self._stopping = False
            self._worker = threading.Thread(
                target=self._work, name="comptoir-task-worker", daemon=True
            )
            self._housekeeper = threading.Thread(
                target=self._housekeep, name="comptoir-task-housekeeper", daemon=True
            )
        self._worker.start()
        self._housekeeper.start()

    def stop(self, timeout: float = 10.0, *, cancel_running: bool = True) -> bool:
        """Stop the worker after its current task; pending tasks stay (and are saved).

        With `cancel_running`, the running task is asked to cancel. Waits at most `timeout`
        seconds; returns True when both threads have ended.
        """
        with self._lock:
            self._stopping = True
            if cancel_running and self._running_ctx is not None:
                self._request_cancel(self._running_ctx, "cancelled: the agent is stopping")
            self._cond.notify_all()
            self._house_cond.notify_all()
            threads = [t for t in (self._worker, self._housekeeper) if t is not None]
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._pending:
                    self._cond.wait()
                if self._stopping:
                    return
                task = self._pending.pop(0)
                task.state = "running"
                task.start_date = _now_iso()
                ctx = TaskContext(task, lock=self._lock, on_change=self._task_changed)
                self._running, self._running_ctx = task, ctx
                self._last_status_emit = time.monotonic()
                self._persist_locked()
                self._emit("TASK_START", task)
            self._execute(task, ctx)

    def _execute(self, task: AgentTask, ctx: TaskContext) -> None:
        try:
            result = self._executor(task, ctx)
        except TaskCancelled as e:
            self._finish(ctx, "cancelled", lines=[str(e) or "cancelled"])
        except Exception as e:
            lines = "".join(traceback.format_exception(e)).splitlines()
            summary = traceback.format_exception_only(e)[-1].strip()
            if ctx.cancelled.is_set():  # most likely the executor's way of stopping
                self._finish(ctx, "cancelled", lines=lines)
            else:
                logger.warning("task #%s (%s) failed: %s", task.id, task.description, summary)
                self._finish(ctx, "error", lines=[summary, *lines], summary=summary)
        except BaseException as e:  # SystemExit, KeyboardInterrupt: record it, then let it go
            summary = traceback.format_exception_only(e)[-1].strip()
            self._finish(ctx, "error", lines=[summary], summary=summary)
            raise
        else:
            try:
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as e:
                summary = f"{type(e).__name__}: the task's result is not JSON: {e}"
                self._finish(ctx, "error", lines=[summary], summary=summary)
            else:
                self._finish(ctx, "done", result=result)

    def _finish(
        self,
        ctx: TaskContext,
        state: TaskState,
        *,
        result: Any = None,
        lines: list[str] | None = None,
        summary: str | None = None,
    ) -> None:
        task = ctx.task
        with self._lock:
            for line in lines or []:
                ctx._append(line)
            task.state = state
            task.finish_date = _now_iso()
            if state == "done":
                task.result = result
                task.progress = 100.0
            if summary is not None:
                task.summary = summary
            elif state == "cancelled" and not task.summary:
                task.summary = "Cancelled"
            ctx._closed = True
            self._running = self._running_ctx = None
            self._status_pending = False
            self._finished.append(task)
            self._trim()
            self._persist_locked()
            self._emit(_FINISH_EVENT[state], task)

    def _housekeep(self) -> None:
        """Announce throttled status changes and save the running task's progress, late."""
        with self._lock:
            while True:
                now = time.monotonic()
                timeout: float | None = None
                if self._status_pending and self._running is not None:
                    due = self._last_status_emit + _STATUS_INTERVAL
                    if now >= due:
                        self._emit_status(self._running, now)
                    else:
                        timeout = due - now
                if self._dirty:
                    if self._stopping or now >= self._last_persist + _PERSIST_INTERVAL:
                        self._persist_locked()  # on failure, stays dirty and is retried
                    if self._dirty and not self._stopping:
                        due = self._last_persist + _PERSIST_INTERVAL - time.monotonic()
                        timeout = max(0.0, due) if timeout is None else min(timeout, due)
                if self._stopping:
                    return
                self._house_cond.wait(timeout)

    # --- changes, events and persistence (called with the lock held) -----------------

    def _task_changed(self, task: AgentTask) -> None:
        if task is not self._running:
            return
        now = time.monotonic()
        if now - self._last_status_emit >= _STATUS_INTERVAL:
            self._emit_status(task, now)
        else:
            self._status_pending = True
        self._dirty = True
        self._house_cond.notify_all()

    def _emit_status(self, task: AgentTask, now: float) -> None:
        self._last_status_emit = now
        self._status_pending = False
        self._emit("TASK_STATUS", task)

    def _emit(self, event_type: str, task: AgentTask) -> None:
        self._last_event_id += 1
        self._events.append(
            {
                "id": self._last_event_id,
                "event_type": event_type,
                "date": time.time(),
                "data": task.as_dict(),
            }
        )
        self._cond.notify_all()

    def _store_data(self) -> dict[str, dict[str, Any]]:
        tasks = [*self._pending, *([self._running] if self._running else []), *self._finished]
        return {
            _STORE_TABLE: {
                "format": _STORE_FORMAT,
                "last_task_id": self._last_task_id,
                "last_event_id": self._last_event_id,
                "epoch": self._epoch,
                "tasks": [t.as_record() for t in tasks],
            }
        }

    def _persist_locked(self) -> None:
        """Write the queue now. A failure is logged and retried by the housekeeping thread."""
        self._last_persist = time.monotonic()
        try:
            self._storage.write(self._store_data())
        except StateError:
            logger.exception("cannot save the task queue; will retry")
            self._dirty = True
            self._house_cond.notify_all()
        else:
            self._dirty = False

    def _trim(self) -> None:
        excess = len(self._finished) - self._keep_finished
        if excess > 0:
            del self._finished[:excess]

    def _request_cancel(self, ctx: TaskContext, message: str, *, persist: bool = True) -> bool:
        """Set the running task's `cancelled` event; False if it was set already."""
        if ctx.cancelled.is_set():
            return False
        ctx.cancelled.set()
        ctx._append(message)
        if persist:
            self._persist_locked()
            self._emit_status(ctx.task, time.monotonic())
        return True

    def _cancel_pending_locked(self, task: AgentTask) -> None:
        self._pending.remove(task)
        task.state = "cancelled"
        task.finish_date = _now_iso()
        task.summary = "Cancelled"
        self._finished.append(task)
        self._trim()

    # --- queueing ---------------------------------------------------------------------

    def add(
        self,
        classname: str,
        description: str,
        *,
        action_key: tuple[object, ...],
        params: Mapping[str, Any],
        created_by: str | None,
        force: bool = False,
        priority: int = 100,
        notify_user: bool = False,
        notify_server_on_start: bool = False,
        notify_server_on_finish: bool = False,
    ) -> AgentTask:
        """Queue a task, or return the pending or running task with the same `action_key`
        (one whose cancellation was asked does not count). The parts of `action_key` are
        compared as strings (`("upgrade", False)` is stored as `("upgrade", "False")`).

        `description` may contain `{id}`, replaced by the new task's id (WAPT writes
        "Installation of acme-hello (task #3)"). The task is on disk when this returns.

        Raises `ValueError` for an empty `action_key`, `TypeError` when `params` is not JSON,
        `StateError` when the task file cannot be written (the task is then not queued).
        """
        if not action_key:
            raise ValueError("a task needs an action_key")
        key = tuple(str(part) for part in action_key)
        try:
            params_copy = json.loads(json.dumps(dict(params), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{classname}: params are not JSON: {e}") from e
        with self._lock:
            same = self._same_action(key)
            if same is not None:
                return same.copy()
            task_id = self._last_task_id + 1
            task = AgentTask(
                id=task_id,
                classname=classname,
                description=description.replace("{id}", str(task_id)),
                priority=priority,
                order=task_id,
                force=force,
                created_by=created_by,
                notify_user=notify_user,
                notify_server_on_start=notify_server_on_start,
                notify_server_on_finish=notify_server_on_finish,
                action_key=key,
                params=params_copy,
            )
            self._last_task_id = task_id
            self._pending.append(task)
            self._pending.sort(key=_run_order)
            try:
                self._storage.write(self._store_data())
            except StateError:
                self._pending.remove(task)
                self._last_task_id = task_id - 1
                raise
            self._emit("TASK_ADD", task)
            return task.copy()

    def _same_action(self, key: tuple[str, ...]) -> AgentTask | None:
        for task in self._pending:
            if task.action_key == key:
                return task
        ctx = self._running_ctx
        if ctx is not None and ctx.task.action_key == key and not ctx.cancelled.is_set():
            return ctx.task
        return None

    def get(self, task_id: int) -> AgentTask | None:
        """The task with this id in any state (a copy), or None if unknown or trimmed."""
        with self._lock:
            task = self._find(task_id)
            return task.copy() if task is not None else None

    def _find(self, task_id: int) -> AgentTask | None:
        running = [self._running] if self._running else []
        for task in (*self._pending, *running, *self._finished):
            if task.id == task_id:
                return task
        return None

    # --- cancellation -----------------------------------------------------------------

    def cancel(self, task_id: int) -> AgentTask | None:
        """Cancel a task: a pending one is cancelled at once; a running one is asked to stop
        (its context's `cancelled` is set) and becomes cancelled when its executor stops.

        Returns the task (a copy), or None when it is unknown or already finished.
        """
        with self._lock:
            if self._running_ctx is not None and self._running_ctx.task.id == task_id:
                self._request_cancel(self._running_ctx, "cancellation requested")
                return self._running_ctx.task.copy()
            for task in self._pending:
                if task.id == task_id:
                    self._cancel_pending_locked(task)
                    self._persist_locked()
                    self._emit("TASK_CANCEL", task)
                    return task.copy()
            return None

    def cancel_running(self) -> AgentTask | None:
        """Ask the running task to stop. Returns it (a copy), or None if nothing runs."""
        with self._lock:
            ctx = self._running_ctx
            if ctx is None:
                return None
            self._request_cancel(ctx, "cancellation requested")
            return ctx.task.copy()

    def cancel_all(self) -> list[AgentTask]:
        """Cancel every pending task and ask the running one to stop.

        Returns them (copies): the pending ones in run order, then the running one.
        """
        with self._lock:
            cancelled = list(self._pending)
            for task in cancelled:
                self._cancel_pending_locked(task)
            ctx = self._running_ctx
            asked = False
            if ctx is not None:
                cancelled.append(ctx.task)
                asked = self._request_cancel(ctx, "cancellation requested", persist=False)
            self._persist_locked()
            for task in cancelled:
                if task.state == "cancelled":
                    self._emit("TASK_CANCEL", task)
                elif asked:
                    self._emit_status(task, time.monotonic())
            return [t.copy() for t in cancelled]

    # --- reading and long polls -------------------------------------------------------

    @property
    def last_event_id(self) -> int:
        """The id of the latest event (0 before the first one)."""
        with self._lock:
            return self._last_event_id

    @property
    def epoch(self) -> str:
        """The id of this task history: task ids are unique within it, not beyond (a lost
        task file starts a new history whose ids start again at 1)."""
        return self._epoch

    @property
    def last_task_id(self) -> int:
        """The id of the latest task ever queued (0 before the first one)."""
        with self._lock:
            return self._last_task_id

    def snapshot(self) -> dict[str, Any]:
        """`/tasks.json`: `{running, pending, done, errors, cancelled, last_task_id,
        last_event_id}` with WAPT's task dicts; finished lists in the order tasks finished."""
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        def finished(state: str) -> list[dict[str, Any]]:
            return [t.as_dict() for t in self._finished if t.state == state]

        return {
            "running": self._running.as_dict() if self._running else None,
            "pending": [t.as_dict() for t in self._pending],
            "done": finished("done"),
            "errors": finished("error"),
            "cancelled": finished("cancelled"),
            "last_task_id": self._last_task_id,
            "last_event_id": self._last_event_id,
        }

    def _wait_newer(self, last_event_id: int, timeout_s: float) -> bool:
        """Wait (lock held) until an event newer than `last_event_id` exists; False on timeout.

        An id above the latest one comes from before a restart (or from nowhere): it is
        answered at once so the client resynchronizes.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while self._last_event_id == last_event_id:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def wait_snapshot(self, last_event_id: int, timeout_s: float) -> dict[str, Any] | None:
        """`/tasks.json?last_event_id=&timeout=`: the snapshot once an event newer than
        `last_event_id` exists, or None if none came within `timeout_s` seconds."""
        with self._lock:
            if not self._wait_newer(last_event_id, timeout_s):
                return None
            return self._snapshot_locked()

    def tasks_status(self, last_event_id: int, timeout_s: float) -> dict[str, Any]:
        """`/tasks_status.json`: `{"last_event_id": n, "tasks": [...]}` with the tasks
        pending, running, done, in error, cancelled, in that order; `tasks` is absent when no
        event newer than `last_event_id` came within `timeout_s` seconds.

        WAPT's flat list loses which list a task came from (a client guesses it from the
        dates); each task here also says it, in `comptoir_list`, which a WAPT client ignores.
        """
        with self._lock:
            changed = self._wait_newer(last_event_id, timeout_s)
            answer: dict[str, Any] = {"last_event_id": self._last_event_id}
            if changed:
                snap = self._snapshot_locked()
                running = [snap["running"]] if snap["running"] else []
                answer["tasks"] = [
                    {**task, TASK_LIST_KEY: name}
                    for name, tasks in (
                        ("pending", snap["pending"]),
                        ("running", running),
                        ("done", snap["done"]),
                        ("errors", snap["errors"]),
                        ("cancelled", snap["cancelled"]),
                    )
                    for task in tasks
                ]
            return answer

    def events(
        self, last_read: int, timeout_s: float, max_count: int = 100
    ) -> list[dict[str, Any]]:
        """`/events.json`: the events newer than `last_read`, oldest first, at most
        `max_count`; waits up to `timeout_s` seconds for one, else returns []. Only the last
        1000 events are kept. An id above the latest one gets every event kept."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if last_read > self._last_event_id:
                last_read = -1
            while not self._events or self._events[-1]["id"] <= last_read:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            newer = [e for e in self._events if e["id"] > last_read][: max(0, max_count)]
            return [{**e, "data": dict(e["data"])} for e in newer]


def _run_order(task: AgentTask) -> tuple[int, int]:
    return (task.priority, task.order)
