"""The agent's task queue: WAPT's task dicts, order, dedupe, cancellation, long polls, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_bridge.agent.state import StateError
from agent_bridge.agent.tasks import (
    INTERRUPTED,
    MAX_LOG_LINES,
    WAPT_TASK_KEYS,
    AgentTask,
    TaskCancelled,
    TaskContext,
    TaskQueue,
)
from tests.conftest import ROOT, WAPT_FIXTURES

SERVICE_FIXTURES = WAPT_FIXTURES / "waptservice"
Snapshot = dict[str, Any]


class Driver:
    """An executor the test drives. With `block`, a task works until the test releases it (or
    until it is cancelled, which it notices like a cooperative executor); `fail` makes a task
    raise once released."""

    def __init__(self, *, block: bool = False) -> None:
        self.block = block
        self.ran: list[int] = []
        self.fail: set[int] = set()
        self._lock = threading.Lock()
        self._gates: dict[int, threading.Event] = {}

    def gate(self, task_id: int) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(task_id, threading.Event())

    def release(self, task_id: int) -> None:
        self.gate(task_id).set()

    def __call__(self, task: AgentTask, ctx: TaskContext) -> Any:
        self.ran.append(task.id)
        ctx.progress(10, f"working on #{task.id}")
        if self.block:
            gate = self.gate(task.id)
            while not gate.wait(0.005):
                ctx.check_cancelled()
        if task.id in self.fail:
            explode(task.id)
        ctx.set_summary(f"#{task.id} done")
        return {"ran": task.id, "params": task.params}


def explode(task_id: int) -> None:
    raise RuntimeError(f"task {task_id} exploded")


@pytest.fixture
def make_queue(tmp_path: Path) -> Iterator[Callable[..., TaskQueue]]:
    made: list[TaskQueue] = []

    def make(executor: Any, path: Path | None = None, **kwargs: Any) -> TaskQueue:
        queue = TaskQueue(path or tmp_path / "tasks.json", executor, **kwargs)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        assert queue.stop(5), "a worker did not stop"


def add(queue: TaskQueue, name: str, *, kind: str = "install", priority: int = 100) -> AgentTask:
    classname = {"install": "WaptPackageInstall", "remove": "WaptPackageRemove"}.get(
        kind, "WaptUpdate"
    )
    return queue.add(
        classname,
        f"{kind} of {name} (task #{{id}})",
        action_key=(kind, name),
        params={"package": name},
        created_by="alice",
        priority=priority,
    )


def wait_for(
    queue: TaskQueue, predicate: Callable[[Snapshot], bool], timeout: float = 5
) -> Snapshot:
    """Long-poll the queue until its snapshot satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        snapshot = queue.wait_snapshot(last, deadline - time.monotonic())
        if snapshot is None:
            raise AssertionError(f"timed out; last snapshot: {queue.snapshot()}")
        if predicate(snapshot):
            return snapshot
        last = snapshot["last_event_id"]


def ids(tasks: list[dict[str, Any]]) -> list[int]:
    return [t["id"] for t in tasks]


def running_id(snapshot: Snapshot) -> int | None:
    return snapshot["running"]["id"] if snapshot["running"] else None


# --- WAPT's task dicts ------------------------------------------------------------------


def recorded_task_dicts() -> list[dict[str, Any]]:
    """Every task dict in the answers recorded from WAPT 1.8.2's agent."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "classname" in value and "pidlist" in value:
                found.append(value)
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in sorted(SERVICE_FIXTURES.glob("*.json")):
        walk(json.loads(path.read_text("utf-8")))
    return found


def from_wapt_dict(d: dict[str, Any]) -> AgentTask:
    """The task a recorded WAPT dict describes (the inverse of `as_dict`)."""
    fields = {k: d[k] for k in WAPT_TASK_KEYS if k not in ("logs", "result")}
    return AgentTask(**fields, logs=d["logs"].split("\n"), result=json.loads(d["result"]))


def test_task_dict_has_exactly_wapts_keys() -> None:
    recorded = recorded_task_dicts()
    assert len(recorded) > 50
    assert {frozenset(d) for d in recorded} == {frozenset(WAPT_TASK_KEYS)}
    ours = AgentTask(id=3, classname="WaptPackageInstall", description="Installation").as_dict()
    assert list(ours) == list(WAPT_TASK_KEYS)
    pending = json.loads((SERVICE_FIXTURES / "11_install_acme-hello.json").read_text())
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in pending.items()}
    assert ours["result"] == "null" and ours["logs"] == "" and ours["pidlist"] == "[]"


def test_as_dict_reproduces_recorded_task_dicts() -> None:
    for recorded in recorded_task_dicts():
        assert from_wapt_dict(recorded).as_dict() == recorded


def test_result_is_json_encoded_a_second_time() -> None:
    task = AgentTask(id=1, classname="WaptAuditPackage", result=["acme-hello: OK"])
    assert task.as_dict()["result"] == '["acme-hello: OK"]'
    assert json.loads(task.as_dict()["result"]) == ["acme-hello: OK"]


def test_task_record_round_trip() -> None:
    task = AgentTask(
        id=7,
        classname="WaptPackageInstall",
        logs=["a", "b"],
        result={"x": [1, 2]},
        action_key=("install", "acme"),
        params={"package": "acme"},
        state="error",
    )
    again = AgentTask.from_record(json.loads(json.dumps(task.as_record())))
    assert again == task and again.action_key == ("install", "acme")
    with pytest.raises(ValueError, match="unknown state"):
        AgentTask(id=1, classname="X", state="lost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad task record"):
        AgentTask.from_record({"classname": "X"})


# --- TaskContext alone --------------------------------------------------------------------


def test_context_progress_log_and_cancel() -> None:
    task = AgentTask(id=1, classname="WaptPackageInstall")
    ctx = TaskContext(task)
    ctx.progress(150, "Installing acme-hello")
    ctx.progress(-3, "Installing acme-hello")  # same step: logged once
    ctx.log("two\nlines")
    assert task.progress == 0.0 and task.runstatus == "Installing acme-hello"
    assert task.logs == ["Installing acme-hello", "two", "lines"]
    with pytest.raises(ValueError, match="not a number"):
        ctx.progress(float("nan"))
    ctx.check_cancelled()
    ctx.cancelled.set()
    with pytest.raises(TaskCancelled):
        ctx.check_cancelled()


def test_context_caps_the_log() -> None:
    task = AgentTask(id=1, classname="WaptPackageInstall")
    ctx = TaskContext(task)
    for i in range(MAX_LOG_LINES + 500):
        ctx.log(f"line {i}")
    assert len(task.logs) == MAX_LOG_LINES
    assert task.logs[0] == "[… 501 earlier lines dropped …]"
    assert task.logs[-1] == f"line {MAX_LOG_LINES + 499}"
    ctx.log("x" * 50_000)
    assert len(task.logs) == MAX_LOG_LINES and task.logs[0] == "[… 502 earlier lines dropped …]"
    assert len(task.logs[-1]) < 10_100


# --- order, dedupe ------------------------------------------------------------------------


def test_runs_by_priority_then_first_in_first_out(make_queue: Callable[..., TaskQueue]) -> None:
    driver = Driver()
    queue = make_queue(driver)
    a = add(queue, "acme-a")
    b = add(queue, "acme-b")
    update = add(queue, "repos", kind="update", priority=10)
    c = add(queue, "acme-c")
    assert (a.id, b.id, update.id, c.id) == (1, 2, 3, 4)
    assert [a.order, b.order, update.order, c.order] == [1, 2, 3, 4]
    assert ids(queue.snapshot()["pending"]) == [3, 1, 2, 4]
    queue.start()
    snapshot = wait_for(queue, lambda s: len(s["done"]) == 4)
    assert driver.ran == [3, 1, 2, 4]
    assert ids(snapshot["done"]) == [3, 1, 2, 4]
    done = queue.get(a.id)
    assert done is not None and done.state == "done" and done.progress == 100.0
    assert done.result == {"ran": 1, "params": {"package": "acme-a"}}
    assert done.summary == "#1 done" and done.logs == ["working on #1"]
    assert done.description == "install of acme-a (task #1)"
    assert done.start_date and done.finish_date and done.create_date <= done.start_date


def test_same_action_returns_the_pending_or_running_task(
    make_queue: Callable[..., TaskQueue],
) -> None:
    driver = Driver(block=True)
    queue = make_queue(driver)
    queue.start()
    first = add(queue, "acme-hello")
    wait_for(queue, lambda s: running_id(s) == first.id)
    assert add(queue, "acme-hello").id == first.id  # running
    second = add(queue, "acme-app")
    assert add(queue, "acme-app").id == second.id  # pending
    assert add(queue, "acme-hello", kind="remove").id == 3  # another action
    assert queue.last_task_id == 3
    queue.cancel(first.id)  # being cancelled: a new request makes a new task
    assert add(queue, "acme-hello").id == 4
    wait_for(queue, lambda s: ids(s["cancelled"]) == [1])
    driver.release(second.id)
    wait_for(queue, lambda s: ids(s["done"]) == [2])
    assert add(queue, "acme-app").id == 5  # the earlier one finished


def test_add_validates(make_queue: Callable[..., TaskQueue]) -> None:
    queue = make_queue(Driver())
    with pytest.raises(ValueError, match="action_key"):
        queue.add("WaptUpdate", "u", action_key=(), params={}, created_by=None)
    with pytest.raises(TypeError, match="not JSON"):
        queue.add("WaptUpdate", "u", action_key=("u",), params={"x": object()}, created_by=None)
    assert queue.snapshot()["pending"] == [] and queue.last_task_id == 0


# --- cancellation -------------------------------------------------------------------------


def test_cancel_pending(make_queue: Callable[..., TaskQueue]) -> None:
    driver = Driver()
    queue = make_queue(driver)
    a, b = add(queue, "acme-a"), add(queue, "acme-b")
    cancelled = queue.cancel(b.id)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert cancelled.summary == "Cancelled" and cancelled.finish_date
    assert queue.cancel(b.id) is None and queue.cancel(99) is None
    snapshot = queue.snapshot()
    assert ids(snapshot["pending"]) == [a.id] and ids(snapshot["cancelled"]) == [b.id]
    assert queue.events(-1, 0, 10)[-1]["event_type"] == "TASK_CANCEL"
    queue.start()
    wait_for(queue, lambda s: ids(s["done"]) == [a.id])
    assert driver.ran == [a.id]
    assert queue.cancel(a.id) is None  # finished


@pytest.mark.parametrize("how", ["cancel", "cancel_running"])
def test_cancel_running_with_a_cooperative_executor(
    make_queue: Callable[..., TaskQueue], how: str
) -> None:
    queue = make_queue(Driver(block=True))
    queue.start()
    task = add(queue, "acme-hello")
    wait_for(queue, lambda s: running_id(s) == task.id)
    asked = queue.cancel(task.id) if how == "cancel" else queue.cancel_running()
    assert asked is not None and asked.id == task.id and asked.state == "running"
    snapshot = wait_for(queue, lambda s: ids(s["cancelled"]) == [task.id])
    assert snapshot["running"] is None and snapshot["errors"] == []
    done = queue.get(task.id)
    assert done is not None and done.state == "cancelled" and done.summary == "Cancelled"
    assert "cancellation requested" in done.logs and done.logs[-1] == "task #1 cancelled"
    assert queue.cancel_running() is None


def test_cancel_all(make_queue: Callable[..., TaskQueue]) -> None:
    queue = make_queue(Driver(block=True))
    queue.start()
    running = add(queue, "acme-hello")
    wait_for(queue, lambda s: running_id(s) == running.id)
    install = add(queue, "acme-app")
    update = add(queue, "repos", kind="update", priority=10)
    answer = queue.cancel_all()
    assert [t.id for t in answer] == [update.id, install.id, running.id]  # WAPT's order
    assert [t.as_dict()["id"] for t in answer] == [3, 2, 1]
    snapshot = wait_for(queue, lambda s: s["running"] is None)
    assert ids(snapshot["cancelled"]) == [update.id, install.id, running.id]
    assert snapshot["pending"] == [] and snapshot["done"] == [] and snapshot["errors"] == []
    assert queue.cancel_all() == []


def test_stop_cancels_the_running_task_and_keeps_pending_ones(
    make_queue: Callable[..., TaskQueue], tmp_path: Path
) -> None:
    queue = make_queue(Driver(block=True))
    queue.start()
    running = add(queue, "acme-hello")
    wait_for(queue, lambda s: running_id(s) == running.id)
    pending = add(queue, "acme-app")
    assert queue.stop(5)
    stopped = queue.get(running.id)
    assert stopped is not None and stopped.state == "cancelled"
    assert "cancelled: the agent is stopping" in stopped.logs
    again = make_queue(Driver())
    assert ids(again.snapshot()["pending"]) == [pending.id]
    assert again.recovered == []


# --- errors -------------------------------------------------------------------------------


def test_failing_executor_gives_an_error_with_its_traceback(
    make_queue: Callable[..., TaskQueue],
) -> None:
    driver = Driver()
    driver.fail.add(1)
    queue = make_queue(driver)
    queue.start()
    add(queue, "acme-broken")
    add(queue, "acme-hello")  # the worker survives the failure
    snapshot = wait_for(queue, lambda s: len(s["errors"]) + len(s["done"]) == 2)
    assert ids(snapshot["errors"]) == [1] and ids(snapshot["done"]) == [2]
    (error,) = snapshot["errors"]
    assert error["summary"] == "RuntimeError: task 1 exploded"
    assert "Traceback (most recent call last):" in error["logs"]
    assert "in explode" in error["logs"]
    assert error["finish_date"] and error["result"] == "null"
    events = [e["event_type"] for e in queue.events(-1, 0, 100) if e["data"]["id"] == 1]
    assert events[0] == "TASK_ADD" and events[-1] == "TASK_ERROR"


def test_result_that_is_not_json_is_an_error(make_queue: Callable[..., TaskQueue]) -> None:
    queue = make_queue(lambda task, ctx: {"not json": {1, 2}})
    queue.start()
    add(queue, "acme-hello")
    snapshot = wait_for(queue, lambda s: len(s["errors"]) == 1)
    assert "the task's result is not JSON" in snapshot["errors"][0]["summary"]


def test_exception_after_cancel_counts_as_cancelled(make_queue: Callable[..., TaskQueue]) -> None:
    def executor(task: AgentTask, ctx: TaskContext) -> None:
        ctx.cancelled.wait(5)
        raise OSError("child process killed")

    queue = make_queue(executor)
    queue.start()
    add(queue, "acme-hello")
    wait_for(queue, lambda s: running_id(s) == 1)
    queue.cancel(1)
    snapshot = wait_for(queue, lambda s: len(s["cancelled"]) == 1)
    assert "OSError: child process killed" in snapshot["cancelled"][0]["logs"]


# --- long polls and events ----------------------------------------------------------------


def test_long_polls_answer_at_once_when_something_is_newer(
    make_queue: Callable[..., TaskQueue],
) -> None:
    queue = make_queue(Driver(block=True))
    add(queue, "acme-hello")
    last = queue.last_event_id
    assert last == 1

    started = time.monotonic()
    status = queue.tasks_status(-1, 5)
    assert ids(status["tasks"]) == [1] and status["last_event_id"] == last
    assert queue.wait_snapshot(last - 1, 5) is not None
    assert [e["id"] for e in queue.events(last - 1, 5)] == [last]
    assert queue.tasks_status(last + 500, 5)["last_event_id"] == last  # from an earlier life
    assert time.monotonic() - started < 0.5

    started = time.monotonic()
    assert queue.tasks_status(last, 0.2) == {"last_event_id": last}
    assert queue.wait_snapshot(last, 0.2) is None
    assert queue.events(last, 0.2) == []
    assert 0.55 <= time.monotonic() - started < 1.5


def test_long_poll_wakes_up_on_a_new_event(make_queue: Callable[..., TaskQueue]) -> None:
    queue = make_queue(Driver(block=True))
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(queue.tasks_status(0, 5)))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    add(queue, "acme-hello")
    waiter.join(5)
    assert time.monotonic() - started < 0.5
    assert ids(answers[0]["tasks"]) == [1]


def test_events_in_order_with_paging(make_queue: Callable[..., TaskQueue]) -> None:
    queue = make_queue(Driver())
    queue.start()
    add(queue, "acme-hello")
    wait_for(queue, lambda s: len(s["done"]) == 1)
    events = queue.events(-1, 0, 100)
    types = [e["event_type"] for e in events]
    assert types[0] == "TASK_ADD" and types[1] == "TASK_START" and types[-1] == "TASK_FINISH"
    assert set(types) <= {"TASK_ADD", "TASK_START", "TASK_STATUS", "TASK_FINISH"}
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert all(
        isinstance(e["date"], float) and list(e["data"]) == list(WAPT_TASK_KEYS) for e in events
    )
    assert events[-1]["data"]["progress"] == 100.0
    assert queue.events(-1, 0, 2) == events[:2]
    assert queue.events(2, 0, 100) == events[2:]
    events[0]["data"]["id"] = 99  # a copy
    assert queue.events(-1, 0, 1)[0]["data"]["id"] == 1


def test_progress_events_are_rate_limited_and_the_last_one_arrives(
    make_queue: Callable[..., TaskQueue],
) -> None:
    release = threading.Event()

    def executor(task: AgentTask, ctx: TaskContext) -> None:
        for i in range(2000):
            ctx.progress(i / 40)
        ctx.progress(77, "Downloading")  # throttled, then announced late
        while not release.wait(0.01):
            ctx.check_cancelled()

    queue = make_queue(executor)
    queue.start()
    started = time.monotonic()
    add(queue, "acme-hello")
    statuses: list[dict[str, Any]] = []
    last = -1
    while not statuses or statuses[-1]["data"]["progress"] != 77.0:
        events = queue.events(last, 2)
        assert events, "the last progress was never announced"
        last = events[-1]["id"]
        statuses += [e for e in events if e["event_type"] == "TASK_STATUS"]
    elapsed = time.monotonic() - started
    assert elapsed < 2
    assert statuses[-1]["data"]["runstatus"] == "Downloading"
    assert len(statuses) <= 1 + 10 * elapsed + 1, "more than ~10 TASK_STATUS events a second"
    release.set()
    wait_for(queue, lambda s: len(s["done"]) == 1)


def test_tasks_status_order_is_pending_running_done_errors_cancelled(
    make_queue: Callable[..., TaskQueue],
) -> None:
    driver = Driver(block=True)
    driver.fail.add(2)
    queue = make_queue(driver)
    queue.start()
    for name in ("a", "b", "c", "d", "e"):
        add(queue, name)
    wait_for(queue, lambda s: running_id(s) == 1)
    driver.release(1)
    wait_for(queue, lambda s: running_id(s) == 2)
    driver.release(2)
    wait_for(queue, lambda s: running_id(s) == 3)
    queue.cancel(5)
    status = queue.tasks_status(-1, 0)
    assert ids(status["tasks"]) == [4, 3, 1, 2, 5]
    assert status["last_event_id"] == queue.last_event_id


# --- persistence and restarts -------------------------------------------------------------


def test_finished_tasks_are_trimmed_and_ids_never_reused(
    make_queue: Callable[..., TaskQueue], tmp_path: Path
) -> None:
    queue = make_queue(Driver(), keep_finished=2)
    queue.start()
    for name in "abcde":
        add(queue, name)
    snapshot = wait_for(queue, lambda s: not s["pending"] and s["running"] is None)
    assert ids(snapshot["done"]) == [4, 5]
    assert queue.stop(5)
    stored = json.loads((tmp_path / "tasks.json").read_text())["queue"]
    assert [t["id"] for t in stored["tasks"]] == [4, 5] and stored["last_task_id"] == 5
    assert (tmp_path / "tasks.json").stat().st_mode & 0o777 == 0o600

    again = make_queue(Driver(), keep_finished=2)
    assert again.last_event_id > snapshot["last_event_id"]
    assert add(again, "a").id == 6 and add(again, "b").order == 7


def test_corrupt_task_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    for content in ('{"queue": {"format": 1}}', '{"queue": {"format": 99}}', "{broken"):
        path.write_text(content)
        with pytest.raises(StateError, match=str(path)):
            TaskQueue(path, Driver())
        assert path.read_text() == content


CRASHING_AGENT = r"""
import sys, threading
from pathlib import Path
from agent_bridge.agent.tasks import TaskQueue

started, added = threading.Event(), threading.Event()

def executor(task, ctx):
    ctx.log("downloading " + task.params["package"])
    started.set()
    added.wait()
    ctx.progress(30, "Downloading")
    ctx.log("still downloading")  # only the housekeeping thread can save this line
    threading.Event().wait()  # the agent dies here

queue = TaskQueue(Path(sys.argv[1]), executor)
queue.start()
def install(name, priority=100):
    return queue.add("WaptPackageInstall", "Installation of %s (task #{id})" % name,
                     action_key=("install", name), params={"package": name},
                     created_by="alice", priority=priority)
install("acme-a")
started.wait()
install("acme-b")
install("repos", priority=10)
added.set()
print("ready", flush=True)
threading.Event().wait()
"""


def stored_tasks(path: Path) -> dict[int, dict[str, Any]]:
    return {t["id"]: t for t in json.loads(path.read_text())["queue"]["tasks"]}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_restart_after_a_crash(make_queue: Callable[..., TaskQueue], tmp_path: Path) -> None:
    """A real agent process is killed while a task runs: after a restart the running task is an
    error that kept its log, pending tasks run in order, and ids continue."""
    path = tmp_path / "tasks.json"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_AGENT, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 5
        while "still downloading" not in stored_tasks(path)[1]["logs"]:
            assert time.monotonic() < deadline, stored_tasks(path)
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    before = json.loads(path.read_text())["queue"]
    assert stored_tasks(path)[1]["state"] == "running"

    driver = Driver()
    queue = make_queue(driver, path)
    (interrupted,) = queue.recovered
    assert interrupted.id == 1 and interrupted.state == "error"
    assert interrupted.summary == INTERRUPTED
    assert interrupted.logs == [
        "downloading acme-a",
        "Downloading",
        "still downloading",
        INTERRUPTED,
    ]
    assert interrupted.progress == 30.0
    snapshot = queue.snapshot()
    assert ids(snapshot["errors"]) == [1] and ids(snapshot["pending"]) == [3, 2]
    assert snapshot["last_event_id"] > before["last_event_id"]
    assert queue.events(-1, 0)[-1]["event_type"] == "TASK_ERROR"
    queue.start()
    wait_for(queue, lambda s: len(s["done"]) == 2)
    assert driver.ran == [3, 2]
    assert add(queue, "acme-c").id == 4
    assert stored_tasks(path)[1]["state"] == "error"


# --- invariants under random operations ---------------------------------------------------

KEYS = ["a", "b", "c", "d"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(KEYS), st.sampled_from([10, 100])),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("finish"), st.sampled_from(["ok", "fail"])),
    ),
    max_size=12,
)


class Model:
    """What the queue should hold after each operation, once the worker has caught up."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.last_id = 0
        self.pending: list[tuple[int, int, str]] = []  # (priority, id, key)
        self.running: tuple[int, int, str] | None = None
        self.finished: list[tuple[int, str]] = []  # (id, state) in finish order

    def next(self) -> None:
        if self.running is None and self.pending:
            self.pending.sort()
            self.running = self.pending.pop(0)

    def finish(self, state: str) -> None:
        assert self.running is not None
        self.finished = [*self.finished, (self.running[1], state)][-self.keep :]
        self.running = None
        self.next()

    def expected(self) -> dict[str, Any]:
        by_state = {s: [i for i, st_ in self.finished if st_ == s] for s in ("done", "error")}
        return {
            "running": self.running[1] if self.running else None,
            "pending": [i for _, i, _ in sorted(self.pending)],
            "done": by_state["done"],
            "errors": by_state["error"],
            "cancelled": [i for i, s in self.finished if s == "cancelled"],
            "last_task_id": self.last_id,
        }


def observed(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "running": running_id(snapshot),
        "pending": ids(snapshot["pending"]),
        "done": ids(snapshot["done"]),
        "errors": ids(snapshot["errors"]),
        "cancelled": ids(snapshot["cancelled"]),
        "last_task_id": snapshot["last_task_id"],
    }


def check_invariants(snapshot: Snapshot, previous_event_id: int) -> None:
    lists = [snapshot["pending"], snapshot["done"], snapshot["errors"], snapshot["cancelled"]]
    every = [t["id"] for tasks in lists for t in tasks] + (
        [snapshot["running"]["id"]] if snapshot["running"] else []
    )
    assert len(every) == len(set(every)), "a task is in two places"
    assert all(i <= snapshot["last_task_id"] for i in every)
    pending = snapshot["pending"]
    assert [(t["priority"], t["order"]) for t in pending] == sorted(
        (t["priority"], t["order"]) for t in pending
    )
    active = [*pending, *([snapshot["running"]] if snapshot["running"] else [])]
    descriptions = [t["description"].split(" (")[0] for t in active]
    assert len(descriptions) == len(set(descriptions)), "one action queued twice"
    assert all(t["finish_date"] is None for t in active)
    assert all(t["finish_date"] for tasks in lists[1:] for t in tasks)
    assert snapshot["last_event_id"] >= previous_event_id


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(operations)
def test_random_operations_keep_the_snapshot_consistent(ops: list[tuple[Any, ...]]) -> None:
    driver = Driver(block=True)
    model = Model(keep=4)
    with tempfile.TemporaryDirectory() as tmp:
        queue = TaskQueue(Path(tmp) / "tasks.json", driver, keep_finished=4)
        queue.start()
        try:
            last_event_id = 0
            for op in ops:
                if op[0] == "add":
                    _, key, priority = op
                    task = add(queue, key, priority=priority)
                    same = [t for t in [*model.pending, model.running] if t and t[2] == key]
                    if same:
                        assert task.id == same[0][1]
                    else:
                        model.last_id += 1
                        assert task.id == model.last_id
                        model.pending.append((priority, task.id, key))
                        model.next()
                elif op[0] == "cancel":
                    target = op[1] % model.last_id + 1 if model.last_id else 1
                    answer = queue.cancel(target)
                    if model.running and model.running[1] == target:
                        assert answer is not None and answer.state == "running"
                        model.finish("cancelled")
                    elif any(t[1] == target for t in model.pending):
                        assert answer is not None and answer.state == "cancelled"
                        model.pending = [t for t in model.pending if t[1] != target]
                        model.finished = [*model.finished, (target, "cancelled")][-model.keep :]
                    else:
                        assert answer is None
                elif model.running is not None:  # finish the running task
                    task_id = model.running[1]
                    if op[1] == "fail":
                        driver.fail.add(task_id)
                    driver.release(task_id)
                    model.finish("done" if op[1] == "ok" else "error")
                expected = model.expected()

                def matches(s: Snapshot, want: dict[str, Any] = expected) -> bool:
                    return observed(s) == want

                try:
                    snapshot = wait_for(queue, matches)
                except AssertionError:
                    assert observed(queue.snapshot()) == expected
                    raise
                check_invariants(snapshot, last_event_id)
                last_event_id = snapshot["last_event_id"]
        finally:
            assert queue.stop(5)
        # what was saved is what the queue held (the running task was cancelled by stop)
        restored = TaskQueue(Path(tmp) / "tasks.json", driver, keep_finished=4)
        assert ids(restored.snapshot()["pending"]) == model.expected()["pending"]
        assert restored.last_task_id == model.last_id
        assert restored.recovered == []
