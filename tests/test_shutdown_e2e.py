"""`comptoir shutdown --no-window` end to end: the real command against the real agent process.

The machine's host package keeps work for the shutdown run; the command counts down, is
postponed (and remembers it across runs), is forced by a passed deadline (closing a real
process named in `impacted_process`), and gives up when its time budget is spent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.shutdown_harness import APP_NAME, Machine, dummy_app, future, past, running_machine

pytestmark = pytest.mark.slow
COMPTOIR = str(Path(sys.executable).parent / "comptoir")


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    with running_machine(tmp_path_factory.mktemp("shutdown-e2e")) as found:
        yield found  # type: ignore[misc]


def shutdown(
    machine: Machine, *options: str, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
    env.pop("DISPLAY", None)
    return subprocess.run(
        [COMPTOIR, "shutdown", "--agent-config", str(machine.config), *options],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def state_file(machine: Machine) -> Path:
    return machine.root / "data" / "shutdown" / "shutdown-state.json"


def test_nothing_pending_exits_at_once(machine: Machine) -> None:
    machine.publish_host()
    started = time.monotonic()
    run = shutdown(machine, "--countdown", "30")
    assert run.returncode == 0, run.stderr
    assert "nothing pending" in run.stdout and "Installation in" not in run.stdout
    assert time.monotonic() - started < 10


def test_countdown_postpone_is_kept_across_runs_then_installs(machine: Machine) -> None:
    machine.publish_host(at_shutdown="tis-quick", deadlines=f"tis-quick={future()}")
    run = shutdown(machine, "--countdown", "20", "--max-postpones", "2", stdin="p\n")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "tis-quick(=1-1) (at_shutdown, deadline" in run.stdout
    assert "postponed by the user" in run.stdout and "postponements left: 1" in run.stdout
    assert json.loads(state_file(machine).read_text())["postpones"] == 1
    assert not machine.is_installed("tis-quick")

    # A new run remembers the postpone: one left of two, then none.
    run = shutdown(machine, "--countdown", "20", "--max-postpones", "1", stdin="p\n", timeout=90)
    assert "No postponement left" in run.stdout
    assert "Installation in 1 s" in run.stdout and "Installation in 0 s" in run.stdout
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done: tis-quick(=1-1)" in run.stdout
    assert machine.is_installed("tis-quick")
    assert json.loads(state_file(machine).read_text())["postpones"] == 0
    log = (machine.root / "data" / "shutdown" / "shutdown.log").read_text()
    assert "the user postponed" in log and "everything pending is done" in log


def test_a_passed_deadline_forces_the_install_and_closes_the_app(
    machine: Machine, tmp_path: Path
) -> None:
    machine.publish_host(at_shutdown="tis-heavy", deadlines=f"tis-heavy={past()}")
    with dummy_app(tmp_path) as app:
        run = shutdown(machine, "--countdown", "1", "--grace", "5", "--json", stdin="p\n")
        assert app.wait(10) == -signal.SIGTERM
    assert run.returncode == 0, run.stdout + run.stderr
    assert "The deadline has passed" in run.stdout
    assert f"These applications will be closed: {APP_NAME}" in run.stdout
    report = json.loads(run.stdout[run.stdout.index("{") :])
    assert report["outcome"] == "done" and report["done"] == ["tis-heavy(=1-1)"]
    assert report["closed_apps"] == [APP_NAME] and report["exit_code"] == 0
    assert machine.is_installed("tis-heavy")


def test_the_budget_cancels_what_is_left(machine: Machine) -> None:
    machine.publish_host(at_shutdown="tis-hang", deadlines=f"tis-hang={past()}")
    started = time.monotonic()
    run = shutdown(machine, "--countdown", "0", "--budget", "4", "--grace", "5")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "time budget exhausted" in run.stdout and "not done: tis-hang(=1-1)" in run.stdout
    assert time.monotonic() - started < 30
    assert not machine.is_installed("tis-hang")
    cancelled = machine.client.tasks().cancelled  # type: ignore[union-attr]
    assert any("shutdown" in task.description for task in cancelled)
    machine.publish_host()


def test_bad_options_exit_2(machine: Machine) -> None:
    run = shutdown(machine, "--budget", "0")
    assert run.returncode == 2 and "--budget" in run.stderr
