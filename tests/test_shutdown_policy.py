"""The shutdown policy: nothing pending, postpones, deadlines, budget, apps closed, state file.

Everything that talks to an agent talks to the real agent process (`tests/shutdown_harness.py`);
time runs on a `FastClock`, so a 30-second countdown costs nothing.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_bridge.agent.host import compute_pending, parse_deadlines
from agent_bridge.client import AgentClient
from agent_bridge.models import Upgrades
from agent_bridge.shutdown import (
    EXIT_AGENT,
    EXIT_BUDGET,
    EXIT_OK,
    EXIT_POSTPONED,
    PendingItem,
    PostponeStore,
    Report,
    ShutdownPolicy,
    StateError,
    close_processes,
    pending_items,
    run_shutdown,
)
from tests.agent_harness import HOST_UUID
from tests.conftest import WAPT_FIXTURES
from tests.shutdown_harness import (
    APP_NAME,
    FastClock,
    Machine,
    ScriptedUI,
    dummy_app,
    future,
    past,
    running_machine,
)
from tests.slapd import free_port
from wapt.control import PackageEntry
from wapt.resolve import HostProfile


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    with running_machine(tmp_path_factory.mktemp("shutdown-policy")) as found:
        yield found  # type: ignore[misc]


def _run(
    machine: Machine, state: Path, ui: ScriptedUI, **policy: float
) -> tuple[Report, FastClock]:
    clock = FastClock()
    settings = {"countdown": 30.0, "max_postpones": 2, "budget": 600.0, "grace": 2.0, **policy}
    report = run_shutdown(
        machine.client,
        ShutdownPolicy(**settings),  # type: ignore[arg-type]
        PostponeStore(state),
        ui,
        clock=clock,
        session=machine.client.login("admin", "pw"),
    )
    return report, clock


# --- deadlines on the agent's side --------------------------------------------------------------


def test_deadlines_are_read_strictly_and_the_earliest_wins() -> None:
    found, problems = parse_deadlines(
        "a=2026-12-01T18:00:00Z, b=2026-12-02T10:00:00+02:00,a=2026-11-30T08:00:00Z,"
        "c=2026-12-01T18:00:00,d,=2026-12-01T00:00:00Z,e=tomorrow",
        source="room-101",
    )
    assert found == {
        "a": datetime(2026, 11, 30, 8, tzinfo=UTC),
        "b": datetime(2026, 12, 2, 8, tzinfo=UTC),
    }
    assert len(problems) == 4 and all(p.startswith("room-101: deadlines: ") for p in problems)
    assert "no zone" in problems[0] and "'d'" in problems[1] and "tomorrow" in problems[3]


def test_pending_shutdown_items_carry_deadline_and_impacted_process() -> None:
    def entry(package: str, **fields: str) -> PackageEntry:
        return PackageEntry({"package": package, "version": "1-1", **fields})

    catalog = [
        entry("heavy", impacted_process="editor, viewer"),
        entry("light"),
        entry("app", impacted_process="app-bin"),
        entry(
            "room",
            section="group",
            at_shutdown="heavy,light",
            deadlines="heavy=2026-12-01T18:00:00Z,light=2026-12-05T18:00:00Z",
        ),
    ]
    host = entry(
        HOST_UUID,
        section="host",
        depends="room,app",
        deadlines="heavy=2026-12-03T18:00:00Z,light=2026-12-04T00:00:00Z,bad",
    )
    pending = compute_pending(host, catalog, {}, HostProfile())
    assert pending.shutdown_items == [
        {
            "request": "heavy(=1-1)",
            "package": "heavy",
            "deadline": "2026-12-01T18:00:00Z",
            "impacted_process": ["editor", "viewer"],
        },
        {
            "request": "light(=1-1)",
            "package": "light",
            "deadline": "2026-12-04T00:00:00Z",
            "impacted_process": [],
        },
    ]
    assert pending.impacted == {"heavy": ["editor", "viewer"], "app": ["app-bin"]}
    assert any("'bad'" in error for error in pending.errors)


def test_a_wapt_agent_answer_without_extras_still_reads() -> None:
    data = json.loads((WAPT_FIXTURES / "waptservice" / "10_checkupgrades.json").read_text())
    data["upgrades"] = ["acme-hello(=1.2.0-3)"]
    data["pending"]["upgrade"] = ["acme-hello(=1.2.0-3)"]
    data["pending"]["remove"] = ["acme-old"]
    upgrades = Upgrades.from_json(data, endpoint="/checkupgrades.json")
    items = pending_items(upgrades)
    assert [(i.request, i.kind, i.deadline) for i in items] == [
        ("acme-hello(=1.2.0-3)", "upgrade", None),
        ("acme-old", "remove", None),
    ]


# --- the state file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1]", "expected an object"),
        (b'{"postpones": -1}', "not a count"),
        (b'{"postpones": true}', "not a count"),
        (b'{"postpones": 1, "last_postponed": 5}', "not a time"),
        (b'{"postpones": 1, "items": "x"}', "not a list"),
    ],
)
def test_a_damaged_state_file_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    store = PostponeStore(tmp_path)
    store.path.write_bytes(content)
    with pytest.raises(StateError, match=reason) as error:
        store.load()
    assert str(store.path) in str(error.value)


def test_postpones_are_counted_durably_and_reset(tmp_path: Path) -> None:
    store = PostponeStore(tmp_path / "state")
    assert store.load().postpones == 0
    store.record_postpone(datetime(2026, 11, 21, 8, tzinfo=UTC), ["a(=1)"])
    again = PostponeStore(tmp_path / "state").record_postpone(datetime.now(UTC), ["a(=1)"])
    assert again.postpones == 2 and PostponeStore(tmp_path / "state").load().postpones == 2
    store.reset()
    assert store.load().postpones == 0


def test_policy_settings_are_checked() -> None:
    for bad in ({"budget": 0}, {"countdown": -1}, {"max_postpones": -1}, {"grace": -0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ShutdownPolicy(**bad)  # type: ignore[arg-type]


# --- closing applications -----------------------------------------------------------------------


def test_apps_are_terminated_and_stubborn_ones_killed(tmp_path: Path) -> None:
    with dummy_app(tmp_path) as polite:
        closed = close_processes([APP_NAME], grace=5)
        assert polite.wait(5) == -signal.SIGTERM
    assert closed.closed == (APP_NAME,) and closed.killed == ()
    stubborn_dir = tmp_path / "stubborn"
    stubborn_dir.mkdir()
    with dummy_app(stubborn_dir, ignore_term=True) as stubborn:
        time.sleep(0.3)  # let the shell install its trap
        closed = close_processes([APP_NAME], grace=0.5)
        assert stubborn.wait(5) == -signal.SIGKILL
    assert closed.killed == (APP_NAME,)
    assert close_processes(["no-such-app"], grace=1).closed == ()


# --- runs against the real agent ------------------------------------------------------------------


def test_nothing_pending_ends_at_once(machine: Machine, tmp_path: Path) -> None:
    machine.publish_host()
    ui = ScriptedUI(choice="postpone")
    report, clock = _run(machine, tmp_path, ui)
    assert report.outcome == "nothing" and report.exit_code == EXIT_OK
    assert ui.plans == [] and ui.ticks == [] and clock.slept == 0


def test_an_agent_that_does_not_answer_is_reported(tmp_path: Path) -> None:
    client = AgentClient(f"http://127.0.0.1:{free_port()}", connect_retries=0)
    report = run_shutdown(client, ShutdownPolicy(), PostponeStore(tmp_path), ScriptedUI())
    assert report.outcome == "agent" and report.exit_code == EXIT_AGENT
    assert "refused" in report.message


def test_postpones_then_forced_install(machine: Machine, tmp_path: Path) -> None:
    upgrades = machine.publish_host(at_shutdown="tis-quick", deadlines=f"tis-quick={future()}")
    assert upgrades.pending.at_shutdown == ("tis-quick(=1-1)",)
    for left in (1, 0):
        ui = ScriptedUI(choice="postpone", after_ticks=3)
        report, _ = _run(machine, tmp_path, ui)
        assert report.outcome == "postponed" and report.exit_code == EXIT_POSTPONED
        assert report.postpones_left == left and report.postponed == ["tis-quick(=1-1)"]
        [plan] = ui.plans
        assert plan.can_postpone and plan.deadline is not None and plan.forced_by is None
        assert not machine.is_installed("tis-quick")
    assert PostponeStore(tmp_path).load().postpones == 2

    ui = ScriptedUI(choice="postpone")  # asks again: no postpone left
    report, _clock = _run(machine, tmp_path, ui)
    [plan] = ui.plans
    assert not plan.can_postpone and plan.forced_by == "postpones"
    assert ui.ticks[0] == pytest.approx(30, abs=1) and ui.ticks[-1] == 0  # the whole countdown
    assert report.outcome == "done" and report.done == ["tis-quick(=1-1)"]
    assert machine.is_installed("tis-quick")
    assert ui.progress and ui.progress[-1].percent == 100
    assert PostponeStore(tmp_path).load().postpones == 0, "reset once nothing is pending"


def test_a_passed_deadline_forbids_postponing_and_closes_apps(
    machine: Machine, tmp_path: Path
) -> None:
    machine.publish_host(at_shutdown="tis-heavy", deadlines=f"tis-heavy={past()}")
    with dummy_app(tmp_path) as app:
        ui = ScriptedUI(choice="postpone")
        report, _ = _run(machine, tmp_path, ui)
        assert app.wait(5) == -signal.SIGTERM
    [plan] = ui.plans
    assert plan.forced_by == "deadline" and plan.postpones_left == 2 and not plan.can_postpone
    assert plan.apps == (APP_NAME,) and ui.closed == [[APP_NAME]]
    assert report.outcome == "done" and report.closed_apps == [APP_NAME]
    assert machine.is_installed("tis-heavy")


def test_install_now_skips_the_countdown(machine: Machine, tmp_path: Path) -> None:
    upgrades = machine.publish_host(depends="tis-light")  # waptexit's case: a plain install
    assert upgrades.pending.install == ("tis-light(=1-1)",) and not upgrades.shutdown_items
    ui = ScriptedUI(choice="install")
    report, clock = _run(machine, tmp_path, ui)
    assert len(ui.ticks) == 1 and clock.slept < 5
    assert report.outcome == "done" and report.done == ["tis-light(=1-1)"]
    assert machine.is_installed("tis-light")


def test_a_damaged_state_counts_every_postpone_as_used(machine: Machine, tmp_path: Path) -> None:
    machine.publish_host(at_shutdown="tis-hang", deadlines=f"tis-hang={future()}")
    PostponeStore(tmp_path).path.write_text("{garbage")
    ui = ScriptedUI(choice="postpone")
    report, _ = _run(machine, tmp_path, ui, budget=3.0, grace=5.0)
    assert ui.plans[0].forced_by == "postpones"
    # ...and tis-hang never finishes: the budget ends the run, the agent's task is cancelled
    assert report.outcome == "budget" and report.exit_code == EXIT_BUDGET
    assert report.not_done == ["tis-hang(=1-1)"] and "budget" in report.message
    assert not machine.is_installed("tis-hang")
    machine.publish_host()


# --- the unit and the documentation -------------------------------------------------------------


def test_the_unit_outlasts_the_budget_and_the_docs_name_every_option() -> None:
    from comptoir.shutdown import shutdown

    root = Path(__file__).resolve().parents[1]
    unit = dict(
        line.split("=", 1)
        for line in (root / "deploy" / "comptoir-shutdown.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    command = unit["ExecStop"].split()
    assert command[1:3] == ["shutdown", "--no-window"] and unit["Type"] == "oneshot"
    assert unit["RemainAfterExit"] == "yes" and "comptoir-agent.service" in unit["After"]
    budget = float(command[command.index("--budget") + 1])
    assert float(unit["TimeoutStopSec"]) > budget
    docs = (root / "docs" / "shutdown.md").read_text()
    for option in shutdown.params:
        assert f"`{option.opts[0]}`" in docs, option.opts[0]
    for code in (EXIT_OK, EXIT_POSTPONED, EXIT_BUDGET, EXIT_AGENT, 1, 2):
        assert f"| {code} |" in docs


@pytest.mark.parametrize(
    ("request_text", "package", "version"),
    [
        ("tis-heavy(=1-1)", "tis-heavy", "1-1"),
        ("tis-heavy", "tis-heavy", ""),
        ("tis-x(>=2.0-1)", "tis-x", ""),
        ("app( = 3.0-1 )", "app", "3.0-1"),
    ],
)
def test_the_window_names_a_package_and_its_exact_version(
    request_text: str, package: str, version: str
) -> None:
    item = PendingItem(request_text, "install")
    assert (item.package, item.version) == (package, version)
