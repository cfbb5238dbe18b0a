"""Contract tests: every answer recorded from WAPT 1.8.2's agent, through the bridge's typed client.

The answers are replayed by `tests.replay` (WAPT's agent is Python 2 and cannot run here), a
real HTTP server that checks credentials as the agent does. One test walks the whole recorded
sequence in order; the others replay a few steps each and check the typed results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from agent_bridge.client import AgentClient
from agent_bridge.errors import AuthenticationError, BridgeError
from agent_bridge.models import (
    TASK_KEYS,
    WAPT_182_SHIFTED_COLUMNS,
    AgentPackage,
    Session,
    Task,
    unshift_wapt_182_columns,
)
from tests.replay import (
    ANSWERS,
    PASSWORD,
    RECORDING,
    RECORDING_DIR,
    TOKEN,
    USERNAME,
    ReplayAgent,
    replay_agent,
)

PING, LOGIN = 1, 3


def recorded(step: int) -> Any:
    """The decoded JSON of a recorded answer."""
    call = next(c for c in RECORDING if c.step == step)
    return json.loads(call.body)


Replay = Callable[..., tuple[AgentClient, ReplayAgent]]


@pytest.fixture
def replay() -> Iterator[Replay]:
    """`replay(*steps)` starts a replay of those steps (plus ping and login): (client, agent)."""
    with ExitStack() as stack:

        def start(*steps: int) -> tuple[AgentClient, ReplayAgent]:
            agent = stack.enter_context(replay_agent({PING, LOGIN, *steps}))
            return AgentClient(agent.url, timeout=5.0, connect_retries=0.5), agent

        yield start


def login(client: AgentClient) -> Session:
    return client.login(USERNAME, PASSWORD)


# --- the whole recording ---------------------------------------------------------------------


def test_the_recording_table_names_every_answer_file() -> None:
    files = {path.name for path in RECORDING_DIR.iterdir() if path.suffix in (".json", ".txt")}
    assert [call.step for call in RECORDING] == list(range(1, 43))
    assert {call.file for call in RECORDING} == files


def test_the_whole_recorded_sequence_replays_in_order_through_the_client() -> None:
    with replay_agent() as agent:
        client = AgentClient(agent.url, timeout=5.0, connect_retries=0.5)
        session: list[Session] = []
        forged = Session(username=USERNAME, token="not-a-token", groups=())

        def unauthorized(call: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                with pytest.raises(AuthenticationError) as caught:
                    call()
                return caught.value

            return run

        steps: list[tuple[int, Callable[[], object]]] = [
            (1, client.ping),
            (2, lambda: client.ping(host_info=True)),
            (3, lambda: session.append(login(client))),
            (4, lambda: client.packages(session[0], latest=False)),
            (5, lambda: client.packages(session[0])),
            (6, unauthorized(lambda: client.packages(None, latest=False))),
            (7, client.update),
            (8, lambda: client.task(2)),
            (9, lambda: client.task(2)),
            (10, client.checkupgrades),
            (11, lambda: client.install(session[0], "acme-hello")),
            (12, lambda: client.tasks_status(-1)),
            (13, lambda: client.task(3)),
            (14, lambda: client.tasks_status(22)),
            (15, lambda: client.task(3)),
            (16, client.status),
            (17, lambda: client.remove(session[0], "acme-hello")),
            (18, lambda: client.task(5)),
            (19, lambda: client.task(5)),
            (20, lambda: client.tasks(-1)),
            (21, lambda: client.update(force=True)),
            (22, lambda: client.task(6)),
            (23, lambda: client.task(6)),
            (24, lambda: client.install(session[0], "acme-broken")),
            (25, lambda: client.tasks_status(-1)),
            (26, lambda: client.task(7)),
            (27, lambda: client.tasks_status(66)),
            (28, lambda: client.task(7)),
            (29, lambda: client.update(force=True)),
            (30, lambda: client.install(session[0], "acme-app")),
            (31, client.cancel_all_tasks),
            (32, lambda: client.tasks(-1)),
            (33, unauthorized(lambda: client.login(USERNAME, "wrong-password"))),
            (34, unauthorized(lambda: client.packages(forged, latest=False))),
            (35, lambda: client.install(session[0], "acme-app")),
            (36, lambda: client.task(12)),
            (37, lambda: client.task(12)),
            (38, lambda: client.install(session[0], "acme-hello(=1.0.0-1)")),
            (39, lambda: client.task(14)),
            (40, lambda: client.task(14)),
            (41, client.status),
            (42, client.checkupgrades),
        ]
        for step, call in steps:
            result = call()
            assert result is not None or step == 3, f"step {step} gave None"
            served = agent.served[-1]
            assert served.step == step, f"step {step}: the replay played {served}"
        assert not agent.unmatched
        assert [s.step for s in agent.served] == list(range(1, 43))
        recorded_by_step = {c.step: c for c in RECORDING}
        for served in agent.served:
            row = recorded_by_step[served.step or 0]
            assert served.status == row.status
            if row.auth in ("none", "password", "token"):
                assert served.auth == row.auth, f"step {served.step}: sent {served.auth}"
            # the recorded URL is what the client sends, byte for byte (URL encoding included);
            # only the long polls' `timeout` differs (the harness sent 2, the client sends ms)
            if not row.raw_query.startswith("last_event_id"):
                assert served.raw_query == row.raw_query, f"step {served.step}"
        assert agent.served[37].raw_query == "package=acme-hello%28%3D1.0.0-1%29"


# --- ping and login ----------------------------------------------------------------------


def test_ping_and_version(replay: Replay) -> None:
    client, agent = replay(2)
    assert client.version() == "1.8.2"
    assert client.ping() == {"version": "1.8.2"}
    details = client.ping(host_info=True)
    assert details["uuid"] == "86b0234f-45ab-4ee3-8ef3-999bc40262fe"
    assert details["hostname"] == "localhost"
    assert details["waptserver"] is None
    assert [s.step for s in agent.served] == [1, 1, 2]


def test_login_gives_the_token_and_the_groups(
    replay: Replay,
) -> None:
    client, _ = replay()
    session = login(client)
    assert session.username == "admin"
    assert session.groups == ("waptselfservice",)
    assert session.token == TOKEN
    assert TOKEN not in repr(session)
    assert "<hidden>" in repr(session)
    with pytest.raises(FrozenInstanceError):
        session.token = "x"  # type: ignore[misc]


def test_a_bad_password_is_an_authentication_error_with_the_agents_message(
    replay: Replay,
) -> None:
    client, agent = replay()
    with pytest.raises(AuthenticationError) as caught:
        client.login(USERNAME, "wrong-password")
    assert caught.value.agent_message == "BAD_AUTHENTICATION"
    assert caught.value.endpoint == "/login"
    assert "wrong-password" not in str(caught.value)
    assert agent.served[-1].file == "33_login_bad_password.txt"


def test_a_forged_token_is_an_authentication_error(
    replay: Replay,
) -> None:
    client, agent = replay(5)
    forged = Session(username=USERNAME, token="not-a-token", groups=("waptselfservice",))
    with pytest.raises(AuthenticationError) as caught:
        client.packages(forged)
    assert "Could not verify your access level" in caught.value.agent_message
    assert "not-a-token" not in str(caught.value)
    assert agent.served[-1].file == "34_packages_bad_token.txt"


def test_packages_without_credentials_is_an_authentication_error(
    replay: Replay,
) -> None:
    client, agent = replay(4)
    with pytest.raises(AuthenticationError) as caught:
        client.packages(None, latest=False)
    assert caught.value.agent_message.startswith("Could not verify your access level")
    assert agent.served[-1].file == "06_packages_noauth.txt"


# --- packages and the shifted columns -------------------------------------------------------


def test_packages_latest_list(replay: Replay) -> None:
    client, agent = replay(5)
    packages = client.packages(login(client))
    assert agent.served[-1].file == "05_packages_latest.json"
    assert agent.served[-1].auth == "token"
    by_name = {p.package: p for p in packages}
    assert set(by_name) == {"acme-toolbox", "acme-app", "acme-libfoo", "acme-hello"}
    hello = by_name["acme-hello"]
    assert hello.version == "1.2.0-3"
    assert hello.name == "Acme Hello (démo)"
    assert hello.categories == ("Utilities", "Demo")
    assert hello.maturity == "PROD"
    assert hello.locale == "fr"
    assert hello.installed_size == 2048
    assert hello.size == 5011
    assert hello.filename == "acme-hello_1.2.0-3_PROD_fr.wapt"
    assert hello.repo_url == "http://127.0.0.1:18471"
    assert hello.signer == "Acme Packager"
    assert hello.install_status is None
    assert hello.state == "available"
    assert hello.previous == ()
    assert hello.description_for("fr").startswith("Acme Hello – harmless test package.")
    assert by_name["acme-toolbox"].section == "group"
    assert by_name["acme-toolbox"].depends == "acme-hello,acme-app"
    assert by_name["acme-app"].depends == "acme-libfoo(>=2.0)"
    assert {"score", "id", "signature", "signed_attributes"} <= set(hello.extra)
    assert all(p.state == "available" for p in packages)


@pytest.mark.parametrize(("step", "latest"), [(4, False), (5, True)])
def test_the_shifted_columns_of_wapt_1_8_2_are_put_back(
    replay: Replay, step: int, latest: bool
) -> None:
    raw_hello = next(row for row in recorded(step) if row["package"] == "acme-hello")
    # what 1.8.2 serves (the control says editor Acme, keywords demo,test)
    assert raw_hello["editor"] == "demo,test"
    assert raw_hello["audit_schedule"] == "Acme"
    client, _ = replay(step)
    hello = next(
        p for p in client.packages(login(client), latest=latest) if p.package == "acme-hello"
    )
    # what the control of acme-hello_1.2.0-3_PROD_fr.wapt says
    assert hello.editor == "Acme"
    assert hello.keywords == "demo,test"
    assert hello.licence == "GPL-3.0-or-later"
    assert hello.homepage == "https://acme.example/hello"
    assert hello.changelog == "1.2.0-3: new upstream release\n1.0.0-1: first package"
    assert hello.impacted_process == ""
    assert hello.audit_schedule == ""
    # the fix reaches the older versions too (1.0.0-1 has no changelog)
    for older in hello.previous:
        assert (older.version, older.editor, older.keywords) == ("1.0.0-1", "Acme", "demo,test")
        assert older.homepage == "https://acme.example/hello"
        assert older.changelog == ""
    assert len(hello.previous) == (0 if latest else 1)


def test_the_unshift_is_a_rotation_of_the_seven_columns() -> None:
    assert sorted(WAPT_182_SHIFTED_COLUMNS) == sorted(WAPT_182_SHIFTED_COLUMNS.values())
    row = {key: f"value served as {key}" for key in WAPT_182_SHIFTED_COLUMNS}
    fixed = unshift_wapt_182_columns(row)
    assert fixed["editor"] == "value served as audit_schedule"
    assert fixed["keywords"] == "value served as editor"
    assert fixed["licence"] == "value served as keywords"
    assert fixed["homepage"] == "value served as licence"
    assert fixed["changelog"] == "value served as homepage"
    assert fixed["impacted_process"] == "value served as changelog"
    assert fixed["audit_schedule"] == "value served as impacted_process"


@pytest.mark.parametrize("step", [16, 41])
def test_status_rows_read_with_the_fix_keep_the_empty_columns(replay: Replay, step: int) -> None:
    client, _ = replay(step)
    rows = client.status()
    assert len(rows) == len(recorded(step))
    for row, raw in zip(rows, recorded(step), strict=True):
        fixed = unshift_wapt_182_columns(raw)
        for key in WAPT_182_SHIFTED_COLUMNS:
            assert getattr(row, key) == fixed[key] == ""


def test_status_after_the_first_install(
    replay: Replay,
) -> None:
    client, _ = replay(16)
    (hello,) = client.status()
    assert (hello.package, hello.version, hello.install_status) == ("acme-hello", "1.2.0-3", "OK")
    assert hello.install_par == "root"
    assert hello.repo_version == "1.2.0-3"
    assert hello.repo_versions == ("1.0.0-1", "1.2.0-3")
    assert hello.install_output.startswith("acme-hello: marker written")
    assert not hello.update_available
    assert not hello.failed


def test_status_at_the_end_shows_the_failed_install_and_the_older_version(
    replay: Replay,
) -> None:
    client, _ = replay(41)
    rows = {row.package: row for row in client.status()}
    assert set(rows) == {"acme-app", "acme-broken", "acme-hello", "acme-libfoo"}
    assert rows["acme-broken"].failed
    assert "SSLVerifyException" in rows["acme-broken"].install_output
    assert rows["acme-hello"].version == "1.0.0-1"
    assert rows["acme-hello"].update_available
    assert not rows["acme-app"].update_available


# --- tasks -----------------------------------------------------------------------------


def test_update_returns_a_pending_update_task(
    replay: Replay,
) -> None:
    client, agent = replay(7)
    task = client.update()
    assert agent.served[-1].auth == "none"
    assert (task.id, task.classname, task.state) == (2, "WaptUpdate", "pending")
    assert task.result is None and task.result_raw == "null"
    assert task.package is None
    assert not task.force and not task.is_finished


def test_task_polls_of_the_update(replay: Replay) -> None:
    client, _ = replay(8, 9)
    first, second = client.task(2), client.task(2)
    assert first is not None and second is not None
    assert first.state == "pending"
    assert second.state == "done" and second.is_finished
    assert second.progress == 100.0
    assert second.result["count"] == 5
    assert second.result["upgrades"] == {
        "upgrade": [],
        "additional": [],
        "install": [],
        "remove": [],
    }
    assert json.loads(second.result_raw) == second.result


def test_install_returns_a_pending_install_task_for_the_package(
    replay: Replay,
) -> None:
    client, agent = replay(11)
    task = client.install(login(client), "acme-hello")
    assert agent.served[-1].auth == "token"
    assert agent.served[-1].raw_query == "package=acme-hello"
    assert task.classname == "WaptPackageInstall"
    assert task.id == 3
    assert task.state == "pending"
    assert task.package == "acme-hello"
    assert task.packages == ("acme-hello",)
    assert task.description == "Installation of acme-hello (task #3)"
    assert task.created_by is None
    assert task.notify_server_on_start and task.notify_server_on_finish
    assert set(task.extra) == set()


def test_every_task_key_is_kept(replay: Replay) -> None:
    client, _ = replay(15)
    task = client.task(3)
    assert task is not None
    raw = recorded(15)
    assert set(raw) == set(TASK_KEYS)
    for key in TASK_KEYS:
        if key != "result":
            assert getattr(task, key) == raw[key], key
    assert task.result_raw == raw["result"]


def test_tasks_status_long_polls_with_double_decoded_results(
    replay: Replay,
) -> None:
    client, _ = replay(12, 14)
    first = client.tasks_status(-1)
    assert first.last_event_id == 22
    assert first.tasks is not None
    assert {t.id: t.state for t in first.tasks} == {
        3: "pending",
        4: "pending",
        1: "done",
        2: "done",
    }
    assert first.find(3) is not None and first.find(3).package == "acme-hello"  # type: ignore[union-attr]
    second = client.tasks_status(first.last_event_id)
    assert second.last_event_id == 42
    install = second.find(3)
    assert install is not None and install.state == "done"
    assert install.summary == "Installed : acme-hello(=1.2.0-3)"
    assert isinstance(install.result, dict)
    (request, entry), *_ = install.result["install"]
    assert request.startswith("acme-hello")
    assert entry["package"] == "acme-hello" and entry["version"] == "1.2.0-3"
    audit = second.find(4)
    assert audit is not None and audit.result == ["acme-hello: OK"] and audit.package is None


def test_task_polls_of_the_install(replay: Replay) -> None:
    client, _ = replay(13, 15)
    pending, done = client.task(3), client.task(3)
    assert pending is not None and pending.state == "pending"
    assert done is not None and done.state == "done"
    assert done.package == "acme-hello"
    assert done.result["downloads"]["downloaded"] == [
        "/opt/wapt/agent/cache/acme-hello_1.2.0-3_PROD_fr.wapt"
    ]
    assert "marker written" in done.logs


def test_wait_for_task_follows_the_recorded_polls(
    replay: Replay,
) -> None:
    client, agent = replay(12, 14)
    task = client.wait_for_task(3, timeout=10)
    assert task.state == "done" and task.package == "acme-hello"
    assert [s.step for s in agent.served] == [12, 14]


def test_remove_returns_a_list_of_tasks(replay: Replay) -> None:
    client, _ = replay(17, 18, 19)
    (task,) = client.remove(login(client), "acme-hello")
    assert (task.id, task.classname, task.state) == (5, "WaptPackageRemove", "pending")
    assert task.package == "acme-hello"
    assert task.created_by == "admin"
    assert client.task(5).state == "pending"  # type: ignore[union-attr]
    done = client.task(5)
    assert done is not None and done.state == "done"
    assert done.result == {"not_allowed": [], "removed": ["acme-hello"], "errors": []}
    assert done.summary == "Removed : acme-hello"


def test_tasks_lists(replay: Replay) -> None:
    client, _ = replay(20)
    lists = client.tasks(-1)
    assert lists is not None
    assert lists.running is None
    assert lists.pending == lists.errors == lists.cancelled == ()
    assert [t.id for t in lists.done] == [1, 2, 3, 4, 5]
    assert all(t.state == "done" and t.listed_as == "done" for t in lists.done)
    assert (lists.last_task_id, lists.last_event_id) == (5, 53)
    assert lists.done[0].created_by == "TASK MANAGER"


def test_forced_update(replay: Replay) -> None:
    client, agent = replay(21, 22, 23)
    task = client.update(force=True)
    assert agent.served[-1].raw_query == "force=1"
    assert task.force and task.id == 6
    assert client.task(6).state == "pending"  # type: ignore[union-attr]
    done = client.task(6)
    assert done is not None and done.state == "done" and done.result["count"] == 6


def test_the_failed_install_of_acme_broken(
    replay: Replay,
) -> None:
    client, _ = replay(24, 25, 26, 27, 28)
    queued = client.install(login(client), "acme-broken")
    assert (queued.id, queued.state, queued.package) == (7, "pending", "acme-broken")
    first = client.tasks_status(-1)
    assert first.last_event_id == 66
    assert first.find(7).state == "pending"  # type: ignore[union-attr]
    running = client.task(7)
    assert running is not None and running.state == "running"
    assert running.start_date and running.finish_date is None
    second = client.tasks_status(first.last_event_id)
    failed_listed = second.find(7)
    assert failed_listed is not None
    assert (failed_listed.state, failed_listed.listed_as) == ("error", "errors")
    assert second.find(8).state == "error"  # type: ignore[union-attr]
    assert {t.id: t.state for t in second.tasks or ()} == {
        1: "done",
        2: "done",
        3: "done",
        4: "done",
        5: "done",
        6: "done",
        7: "error",
        8: "error",
    }
    failed = client.task(7)
    assert failed is not None
    assert failed.state == "error" and failed.is_finished
    assert failed.progress == 0.0 and failed.finish_date
    assert failed.package == "acme-broken"
    assert "SSLVerifyException" in failed.summary
    assert "SSL signature verification failed" in failed.logs
    (request, _entry, trace) = failed.result["errors"][0]
    assert request.startswith("acme-broken")
    assert "SSLVerifyException" in trace


def test_wait_for_task_returns_the_failed_install(
    replay: Replay,
) -> None:
    client, agent = replay(25, 27)
    task = client.wait_for_task(7, timeout=10)
    assert task.state == "error" and task.package == "acme-broken"
    assert [s.step for s in agent.served] == [25, 27]


def test_cancel_all_tasks(replay: Replay) -> None:
    client, _ = replay(29, 30, 31, 32)
    queued_update = client.update(force=True)
    queued_install = client.install(login(client), "acme-app")
    assert (queued_update.id, queued_install.id) == (9, 10)
    cancelled = client.cancel_all_tasks()
    assert [t.id for t in cancelled] == [9, 10, 11]
    assert all(t.state == "cancelled" and t.is_finished for t in cancelled)
    assert cancelled[1].package == "acme-app"
    assert cancelled[2].classname == "WaptAuditPackage" and cancelled[2].package is None
    lists = client.tasks(-1)
    assert lists is not None
    assert [t.id for t in lists.cancelled] == [9, 10, 11]
    assert [t.id for t in lists.errors] == [7, 8]
    assert [t.id for t in lists.done] == [1, 2, 3, 4, 5, 6]
    assert lists.find(10).state == "cancelled"  # type: ignore[union-attr]
    assert lists.find(7).state == "error"  # type: ignore[union-attr]
    assert (lists.last_task_id, lists.last_event_id) == (11, 94)


def test_install_with_a_dependency(replay: Replay) -> None:
    client, _ = replay(35, 36, 37)
    task = client.install(login(client), "acme-app")
    assert (task.id, task.package) == (12, "acme-app")
    client.task(12)
    done = client.task(12)
    assert done is not None and done.state == "done"
    assert done.package == "acme-app"
    assert done.summary == "Installed : acme-app(=3.0.1-1),acme-libfoo(=2.1-3)"
    assert [request for request, _ in done.result["additional"]] == [
        "acme-libfoo(>=2.0) [x64_fr,en_PROD]"
    ]


def test_install_of_an_older_version_is_url_encoded(
    replay: Replay,
) -> None:
    client, agent = replay(38, 39, 40)
    task = client.install(login(client), "acme-hello(=1.0.0-1)")
    assert agent.served[-1].raw_query == "package=acme-hello%28%3D1.0.0-1%29"
    assert task.description == "Installation of acme-hello(=1.0.0-1) (task #14)"
    assert task.package == "acme-hello"
    assert client.task(14).state == "pending"  # type: ignore[union-attr]
    done = client.task(14)
    assert done is not None and done.state == "done"
    assert done.summary == "Installed : acme-hello(=1.0.0-1)"


def test_checkupgrades_before_and_after(
    replay: Replay,
) -> None:
    client, _ = replay(10, 42)
    before = client.checkupgrades()
    assert before is not None
    assert before.upgrades == before.errors == ()
    assert before.running_tasks == before.pending_tasks == ()
    assert before.date == "2026-11-21T05:11:04.877966"
    assert not before.has_work
    after = client.checkupgrades()
    assert after is not None
    assert after.upgrades == ("acme-hello(=1.2.0-3)", "acme-broken(=1.0-1)")
    assert after.errors == ("acme-broken(=1.0-1)",)
    assert after.pending.upgrade == after.upgrades
    assert after.pending.install == after.pending.additional == after.pending.remove == ()
    assert after.has_work


# --- every answer, typed --------------------------------------------------------------------


@pytest.mark.parametrize("call", ANSWERS, ids=lambda call: call.file)
def test_every_task_dict_in_the_recording_parses(call: Any) -> None:
    """Every task dict anywhere in the recording reads as a `Task` with a known state."""
    data = json.loads(call.body)

    def tasks_in(value: Any) -> Iterator[dict[str, Any]]:
        if isinstance(value, dict):
            if set(TASK_KEYS) <= set(value):
                yield value
            else:
                for item in value.values():
                    yield from tasks_in(item)
        elif isinstance(value, list):
            for item in value:
                yield from tasks_in(item)

    for raw in tasks_in(data):
        task = Task.from_json(raw, endpoint=call.path)
        assert task.state in ("pending", "running", "done", "error")
        if task.classname in ("WaptPackageInstall", "WaptPackageRemove"):
            assert task.package in ("acme-hello", "acme-broken", "acme-app")


def test_package_dicts_parse_without_the_fix_too() -> None:
    for raw in recorded(4):
        package = AgentPackage.from_json(raw, endpoint="/packages.json")
        assert package.editor == raw["editor"]
    with pytest.raises(BridgeError):
        AgentPackage.from_json({"version": "1"}, endpoint="/packages.json")
