"""The agent's durable state: atomic TinyDB storage, installed records, parameters, recovery."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent_bridge.agent.state import (
    INTERRUPTED_SUFFIX,
    MAX_INSTALL_OUTPUT,
    AgentState,
    DurableJSONStorage,
    InstalledRecord,
    StateError,
)
from tests.conftest import ROOT


def record(package: str = "acme-hello", **fields: Any) -> InstalledRecord:
    values: dict[str, Any] = {
        "version": "1.2.0-3",
        "architecture": "all",
        "maturity": "PROD",
        "locale": "fr",
        "section": "base",
        "install_status": "OK",
        "install_date": "2026-11-21T05:11:05.577012",
        "install_output": "acme-hello: marker written\n",
        "install_par": "alice",
        "source": "http://127.0.0.1:18471",
        "package_uuid": "512f264b-01b8-480d-8ba2-bfebecbff7e5",
        "control": {"package": package, "version": "1.2.0-3", "description": "Acme – Übung €"},
        "persistent_dir": "/var/lib/comptoir/persistent/512f264b",
    }
    values.update(fields)
    return InstalledRecord(package=package, **values)


def temporaries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- InstalledRecord ----------------------------------------------------------------------


def test_record_dict_round_trip() -> None:
    original = record(last_audit_status="OK", last_audit_date="2026-11-21T06:00:00")
    data = original.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert InstalledRecord.from_dict(data) == original
    data["control"]["version"] = "changed"
    assert original.control["version"] == "1.2.0-3", "as_dict must return a copy"


def test_record_explicit_by_is_wapts_name_for_install_par() -> None:
    assert record(install_par="bob").explicit_by == "bob"
    data = record().as_dict()
    del data["install_par"]
    assert InstalledRecord.from_dict({**data, "explicit_by": "carol"}).install_par == "carol"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"install_status": "INSTALLED"}, "install_status"),
        ({"package": ""}, "package name"),
        ({"control": ["not", "a", "dict"]}, "control"),
        ({"version": 3}, "version"),
        ({"package": None}, "package name"),
    ],
)
def test_record_from_dict_rejects_bad_values(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InstalledRecord.from_dict({**record().as_dict(), **change})


def test_record_output_keeps_its_end() -> None:
    long = "start\n" + "x" * (MAX_INSTALL_OUTPUT * 2) + "\nTHE ERROR"
    capped = record(install_output=long)
    assert capped.install_output.endswith("\nTHE ERROR")
    assert "earlier characters cut" in capped.install_output
    assert len(capped.install_output) < MAX_INSTALL_OUTPUT + 100


# --- AgentState ---------------------------------------------------------------------------


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.json"  # the directory is created on the first write
    with AgentState(path) as state:
        assert state.installed() == []
        state.put_installed(record("acme-hello"))
        state.put_installed(record("acme-app", install_par="", persistent_dir=None))
    with AgentState(path) as state:
        assert [r.package for r in state.installed()] == ["acme-app", "acme-hello"]
        assert state.get_installed("acme-hello") == record("acme-hello")
        assert state.get_installed("acme-app") == record(
            "acme-app", install_par="", persistent_dir=None
        )
        assert state.get_installed("missing") is None


def test_put_installed_replaces_the_record_of_the_same_package(tmp_path: Path) -> None:
    with AgentState(tmp_path / "agent.json") as state:
        state.put_installed(record(version="1.0.0-1", install_status="RUNNING"))
        state.put_installed(record(version="1.2.0-3", install_status="OK", install_par=""))
        (only,) = state.installed()
        assert (only.version, only.install_status, only.install_par) == ("1.2.0-3", "OK", "")
        state.remove_installed("acme-hello")
        state.remove_installed("acme-hello")  # removing twice is harmless
        assert state.installed() == []


def test_params(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    with AgentState(path) as state:
        assert state.get_param("last_update") is None
        assert state.get_param("last_update", {"never": True}) == {"never": True}
        state.set_param("last_update", {"date": "2026-11-21T05:11:04", "count": 5})
        state.set_param("uuid", "86b0234f")
        state.set_param("uuid", "replaced")
        value = state.get_param("last_update")
        value["count"] = 99  # a copy: the stored value does not change
    with AgentState(path) as state:
        assert state.get_param("last_update") == {"date": "2026-11-21T05:11:04", "count": 5}
        assert state.get_param("uuid") == "replaced"
        with pytest.raises(StateError, match="cannot encode"):
            state.set_param("bad", {1, 2})
        with pytest.raises(StateError, match="cannot encode"):
            state.set_param("bad", float("nan"))
        assert state.get_param("bad") is None
        assert state.get_param("uuid") == "replaced"


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    state = AgentState(path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                state.put_installed(record(f"pkg-{n}-{i}", version=f"{i}-1"))
                state.set_param(f"writer-{n}", i)
        except BaseException as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state.close()
    with AgentState(path) as reopened:
        assert len(reopened.installed()) == 6 * 15
        assert [reopened.get_param(f"writer-{n}") for n in range(6)] == [14] * 6
    assert temporaries(tmp_path) == []


def test_recover_marks_interrupted_operations(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    with AgentState(path) as state:
        state.put_installed(record("acme-hello", install_status="RUNNING", install_output="half"))
        state.put_installed(record("acme-app", install_status="RUNNING", install_output=""))
        state.put_installed(record("acme-libfoo", install_status="OK"))
        state.put_installed(record("acme-broken", install_status="ERROR"))
    with AgentState(path) as state:  # a new agent starts
        recovered = state.recover()
        assert sorted(r.package for r in recovered) == ["acme-app", "acme-hello"]
        assert all(r.install_status == "ERROR" for r in recovered)
        assert state.recover() == []
    with AgentState(path) as state:
        statuses = {r.package: r.install_status for r in state.installed()}
        assert statuses == {
            "acme-app": "ERROR",
            "acme-broken": "ERROR",
            "acme-hello": "ERROR",
            "acme-libfoo": "OK",
        }
        hello = state.get_installed("acme-hello")
        assert hello is not None and hello.install_output == "half" + INTERRUPTED_SUFFIX
        libfoo = state.get_installed("acme-libfoo")
        assert libfoo is not None and libfoo == record("acme-libfoo")


@pytest.mark.parametrize(
    "content",
    [
        b'{"installed": {"1": {"package": "acme-hello"',  # cut in the middle
        b"",  # what a lost write looks like
        b"  \n",
        b"[]",
        b'{"installed": []}',
        b"\xff\xfe{}",
        b"null",
    ],
)
def test_corrupt_file_raises_and_is_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "agent.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match=str(path)):
        AgentState(path)
    assert path.read_bytes() == content, "a corrupt state must never be reset"


def test_tampered_record_raises_state_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"installed": {"1": {"package": "x", "install_status": "??"}}}))
    state = AgentState(path)  # the file parses: the record is bad
    with pytest.raises(StateError, match="bad installed record"):
        state.installed()


def test_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text("{}")
    path.chmod(0o644)
    with AgentState(path) as state:
        state.set_param("k", "v")
    assert path.stat().st_mode & 0o777 == 0o600


def test_closed_state_refuses_calls(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.json")
    state.close()
    state.close()
    with pytest.raises(StateError, match="closed"):
        state.installed()


# --- DurableJSONStorage -------------------------------------------------------------------


def test_storage_parses_only_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.json"
    storage = DurableJSONStorage(path)
    assert storage.read() is None
    parses: list[bytes] = []
    original = DurableJSONStorage._parse

    def counting(self: DurableJSONStorage, raw: bytes) -> Any:
        parses.append(raw)
        return original(self, raw)

    monkeypatch.setattr(DurableJSONStorage, "_parse", counting)
    storage.write({"t": {"1": {"a": 1}}})
    for _ in range(5):
        assert storage.read() == {"t": {"1": {"a": 1}}}
    assert parses == [], "our own write primes the cache"
    data = storage.read()
    assert data is not None
    data["t"]["1"]["a"] = 2  # TinyDB mutates what it reads: the cache must not change
    assert storage.read() == {"t": {"1": {"a": 1}}}

    other = tmp_path / "other.json"  # someone else replaces the file
    other.write_text('{"t": {"1": {"a": 3}}}')
    os.replace(other, path)
    assert storage.read() == {"t": {"1": {"a": 3}}}
    assert storage.read() == {"t": {"1": {"a": 3}}}
    assert len(parses) == 1
    path.unlink()
    assert storage.read() is None


def test_storage_failed_write_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    storage = DurableJSONStorage(path)
    storage.write({"t": {"1": {"a": 1}}})
    before = path.read_bytes()
    with pytest.raises(StateError, match="cannot encode"):
        storage.write({"t": {"1": {"a": object()}}})
    assert path.read_bytes() == before
    assert temporaries(tmp_path) == []


def test_storage_write_error_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot write"):
        DurableJSONStorage(blocker / "db.json").write({})


def test_storage_removes_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()
    from agent_bridge.agent import state as state_module

    own = f"{os.getpid()}-{state_module._PROCESS_TOKEN}"
    names = {
        f".db.json.{dead_pid}-abcd1234.x1y2z3.tmp": False,  # a writer that died: removed
        f".db.json.{os.getpid()}-0badc0de.q9w8e7.tmp": False,  # our pid, earlier life: removed
        f".db.json.{live_pid}-abcd1234.k5j6h7.tmp": True,  # a live writer: kept
        f".db.json.{own}.m1n2b3.tmp": True,  # this very process may be writing it: kept
        ".db.json.bak": True,  # not ours
        ".db.json.bak.123-abcd.x.tmp": True,  # a temporary of another file
    }
    for name in names:
        (tmp_path / name).write_text("partial")
    DurableJSONStorage(tmp_path / "db.json")
    assert {name: (tmp_path / name).exists() for name in names} == names


# --- crash safety -------------------------------------------------------------------------

WRITER = r"""
import sys
from pathlib import Path
from agent_bridge.agent.state import AgentState, InstalledRecord

state = AgentState(Path(sys.argv[1]))
i = int(state.get_param("counter", 0))
print("ready", flush=True)
output = "x" * 40000  # a big record makes every write take a while
while True:
    i += 1
    state.put_installed(
        InstalledRecord(package=f"pkg{i % 50}", version=str(i), install_output=output)
    )
    state.set_param("counter", i)
    print(i, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_during_writes_never_corrupts(tmp_path: Path) -> None:
    """Kill a writer at random moments: the state always opens and holds every acknowledged
    write, and the temporary files of killed writers are cleaned up."""
    path = tmp_path / "agent.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(20261121)
    acknowledged = 0
    started = time.monotonic()
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.010, 0.200))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        done = [int(line) for line in rest.splitlines() if line.isdigit()]
        acknowledged = max([acknowledged, *done])

        with AgentState(path) as state:  # always readable, never corrupt
            counter = state.get_param("counter", 0)
            assert counter >= acknowledged
            acknowledged = counter
            if counter:
                last = state.get_installed(f"pkg{counter % 50}")
                assert last is not None and last.version == str(counter)
            assert all(r.install_output == "x" * 40000 for r in state.installed())
        assert temporaries(tmp_path) == [], "the next opening removes killed writers' leftovers"
    assert acknowledged > 20
    assert time.monotonic() - started < 20  # "within a few seconds", with room for a slow machine
