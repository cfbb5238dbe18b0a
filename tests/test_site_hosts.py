"""The site's host store (`portal.site.hosts`): registration, pinned keys, reports, replay,
forgeries, sharding, the index, lists, rollouts, reports collected from sticks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent_bridge.reports import (
    FailedPackage,
    HostReport,
    InstalledPackage,
    PendingWork,
    ReportError,
    ReportEvent,
    host_key_from_seed,
    public_key_text,
    sign_report,
)
from portal.site.assignments import AssignmentStore
from portal.site.audit import AuditLog
from portal.site.hosts import (
    EPOCHS_KEPT,
    SHARDS,
    HostRefused,
    HostStore,
    HostStoreError,
    collect_reports,
    make_host_store,
)
from portal.site.model import MachineGroup
from tests.conftest import TEST_DATA
from tests.site_harness import make_site

REPORTS = TEST_DATA / "reports"
CORPUS: list[dict[str, Any]] = json.loads((REPORTS / "corpus.json").read_text("utf-8"))
CORPUS_HOST = "0a1b2c3d-0000-4000-8000-00000000beef"


def corpus_key() -> ed25519.Ed25519PrivateKey:
    import hashlib

    return host_key_from_seed(hashlib.sha256(b"comptoir hostile reports: the host's key").digest())


class Host:
    """A fake machine: a key and a counter (the real agent is in test_agent_reporting)."""

    def __init__(self, uuid: str, name: str = "") -> None:
        self.uuid = uuid
        self.name = name or f"PC-{uuid[:4]}"
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.seq = 0

    @property
    def public(self) -> str:
        return public_key_text(self.key)

    def report(self, **changes: Any) -> bytes:
        self.seq = changes.pop("seq", self.seq + 1)
        values: dict[str, Any] = {
            "host_uuid": self.uuid,
            "seq": self.seq,
            "created": "2026-11-21T08:00:00Z",
            "computer_name": self.name,
            "installed": (InstalledPackage("tis-notepad", "1.0-1", "PROD", "", "OK"),),
        }
        values.update(changes)
        return sign_report(HostReport(**values), self.key)


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_register_pins_a_key_and_refuses_another_until_reset(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    host = Host(uuid(1))
    assert store.register(host.uuid, host.public, "PC-1") == "new"
    assert store.register(host.uuid, host.public, "PC-1 renamed") == "known"
    assert store.get(host.uuid).name == "PC-1 renamed"  # type: ignore[union-attr]
    thief = Host(uuid(1))
    with pytest.raises(HostRefused) as caught:
        store.register(thief.uuid, thief.public, "evil")
    assert caught.value.reason == "key-conflict" and caught.value.status == 409
    assert "an administrator must reset its key" in str(caught.value)
    record = store.reset_key(host.uuid)
    assert record.public_key is None and record.key_reset is not None
    # reports are refused until the host registers again
    with pytest.raises(HostRefused) as caught:
        store.ingest(host.report())
    assert caught.value.reason == "unknown-host" and "its key was reset" in str(caught.value)
    reinstalled = Host(uuid(1))
    assert store.register(reinstalled.uuid, reinstalled.public, "PC-1") == "re-pinned"
    assert store.ingest(reinstalled.report()).seq == 1
    with pytest.raises(HostStoreError, match="no such host"):
        store.reset_key(uuid(99))
    with pytest.raises(HostRefused) as caught:
        store.register("Not A UUID/..", host.public, "x")
    assert caught.value.reason == "malformed"


def test_ingest_verifies_with_the_pinned_key_and_refuses_replays(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    host, other = Host(uuid(1)), Host(uuid(2))
    store.register(host.uuid, host.public, host.name)
    store.register(other.uuid, other.public, other.name)
    first = host.report(
        failed=(FailedPackage("tis-raise", "1.0-1", "t", "boom"),),
        events=(ReportEvent(4, "2026-11-21T07:31:00Z", "marie", "install", "tis-raise", "error"),),
    )
    taken = store.ingest(first, host_uuid=host.uuid)
    assert taken.seq == 1 and [e.user for e in taken.events] == ["marie"]
    for data, url, reason, status in [
        (first, host.uuid, "replay", 409),  # the same bytes again
        (host.report(seq=1), host.uuid, "replay", 409),  # a new report with an old seq
        (other.report(), host.uuid, "wrong-host", 403),  # another host's, sent as this one
        (
            sign_report(HostReport(host.uuid, 9, "2026-11-21T08:00:00Z"), other.key),
            None,
            "bad-signature",
            403,
        ),  # signed by another host's key
        (Host(uuid(3)).report(), None, "unknown-host", 404),
        (b"{" * 10, None, "malformed", 400),
        (b" " * (4 * 1024 * 1024 + 1), None, "too-large", 413),
    ]:
        with pytest.raises(HostRefused) as caught:
            store.ingest(data, host_uuid=url)
        assert (caught.value.reason, caught.value.status) == (reason, status)
    with pytest.raises(HostRefused) as caught:
        store.ingest(host.report(seq=1))
    assert caught.value.last_seq == 1
    # the same event again (a report carried on a stick, then over the network): once only
    again = host.report(
        events=(
            ReportEvent(4, "2026-11-21T07:31:00Z", "marie", "install", "tis-raise", "error"),
            ReportEvent(5, "2026-11-21T07:40:00Z", "marie", "remove", "tis-raise", "done"),
        )
    )
    assert [e.id for e in store.ingest(again).events] == [5]
    record = store.get(host.uuid)
    assert record is not None and record.last_seq == host.seq
    assert [h.seq for h in record.history] == [2, 1]


@pytest.mark.parametrize("case", CORPUS, ids=[c["file"] for c in CORPUS])
def test_the_hostile_corpus_through_the_store(tmp_path: Path, case: dict[str, Any]) -> None:
    store = HostStore(tmp_path)
    store.register(CORPUS_HOST, public_key_text(corpus_key()), "PC")
    data = (REPORTS / case["file"]).read_bytes()
    if case["expect"] is None:
        assert store.ingest(data, host_uuid=CORPUS_HOST).host_uuid == CORPUS_HOST
        return
    with pytest.raises(HostRefused) as caught:
        store.ingest(data, host_uuid=CORPUS_HOST)
    assert caught.value.reason == case["expect"]
    assert store.get(CORPUS_HOST).last_seen is None  # type: ignore[union-attr]


def test_failure_logs_live_beside_the_shards(tmp_path: Path) -> None:
    store = HostStore(tmp_path)
    host = Host(uuid(1))
    store.register(host.uuid, host.public, "PC")
    log = "x" * 60_000 + "\nthe error"
    store.ingest(host.report(failed=(FailedPackage("tis-raise", "1.0-1", "t", log),)))
    shard = tmp_path / "hosts" / f"shard-{store.shard_of(host.uuid):02d}.json"
    assert b"the error" not in shard.read_bytes()  # the shard keeps no log
    assert store.failure_logs(host.uuid)[0].log.endswith("the error")
    assert oct((tmp_path / "hosts" / "failed" / f"{host.uuid}.json").stat().st_mode)[-3:] == "600"
    store.ingest(host.report())
    assert store.failure_logs(host.uuid) == []
    assert not (tmp_path / "hosts" / "failed" / f"{host.uuid}.json").exists()


def test_hosts_are_spread_over_shards_and_another_process_sees_changes(tmp_path: Path) -> None:
    store = HostStore(tmp_path, recheck_seconds=0)
    hosts = [Host(uuid(n)) for n in range(200)]
    for host in hosts:
        store.register(host.uuid, host.public, host.name)
    files = sorted((tmp_path / "hosts").glob("shard-*.json"))
    assert len(files) > SHARDS // 2  # 200 hosts land in most of the 64 files
    for path in files:
        docs = orjson.loads(path.read_bytes())["hosts"].values()
        assert all(store.shard_of(d["uuid"]) == int(path.stem[-2:]) for d in docs)
    # a second store (as `comptoir bundle collect` in another process) writes; the first sees it
    assert len(store) == 200
    other = HostStore(tmp_path)
    other.ingest(hosts[0].report(failed=(FailedPackage("tis-raise"),)))
    assert store.list(status="failed")[1] == 1
    assert store.rollout("tis-raise").failed == 1  # the rollouts follow the reloaded shard
    other.ingest(hosts[0].report())
    assert store.rollout("tis-raise").total == 0 and store.rollout("tis-notepad").installed == 1
    assert [r.package for r in store.rollouts()] == ["tis-notepad"]
    with pytest.raises(HostStoreError, match="was made as"):
        (tmp_path / "hosts" / "format.json").write_text('{"format": 1, "shards": 8}')
        HostStore(tmp_path)


def test_lists_filter_search_and_page(tmp_path: Path) -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    clock = [now - timedelta(days=10)]
    store = HostStore(tmp_path, clock=lambda: clock[0], group_hosts=lambda g: {uuid(1), uuid(2)})
    hosts = [Host(uuid(n), f"Salle-101-{n:02d}") for n in range(1, 8)]
    for host in hosts:
        store.register(host.uuid, host.public, host.name)
    store.ingest(hosts[0].report())  # seen 10 days ago, ok
    clock[0] = now
    store.ingest(hosts[1].report(failed=(FailedPackage("tis-raise"),)))
    store.ingest(hosts[2].report(pending=PendingWork(install=("tis-app(=2.0-1)",))))
    store.ingest(hosts[3].report())
    assert store.counts() == {
        "ok": 2,
        "pending": 1,
        "failed": 1,
        "unknown": 3,
        "stale": 4,
        "all": 7,
    }
    assert [h.uuid for h in store.list(status="failed")[0]] == [uuid(2)]
    assert [h.uuid for h in store.list(status="stale")[0]] == [uuid(1), *map(uuid, (5, 6, 7))]
    assert store.list(status="stale", stale_days=30)[1] == 3  # never seen only
    assert [h.uuid for h in store.list(search="101-03")[0]] == [uuid(3)]
    assert store.list(search="SALLE 101")[1] == 7
    assert store.list(search=uuid(4)[-6:])[1] == 1
    assert [h.uuid for h in store.list(group="salle-101")[0]] == [uuid(1), uuid(2)]
    page, total = store.list(page=2, per_page=3)
    assert total == 7 and [h.name for h in page] == ["Salle-101-04", "Salle-101-05", "Salle-101-06"]
    assert store.list(page=9, per_page=3)[0] == []
    with pytest.raises(HostStoreError, match="status 'weird'"):
        store.list(status="weird")


def test_rollout_counts_assigned_hosts_and_reporting_ones(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    assignments = AssignmentStore(site.site.data_dir)
    room = [Host(uuid(n), f"PC-{n}") for n in range(1, 6)]
    assignments.save_group(
        MachineGroup("salle-101", "Salle 101", tuple(h.uuid for h in room)), create=True
    )
    assignments.assign("tis-geogebra", "required", group="salle-101")
    assignments.assign("tis-geogebra", "required", host=uuid(9))  # never registered
    store = make_host_store(site.site)
    for host in room:
        store.register(host.uuid, host.public, host.name)
    geo = InstalledPackage("tis-geogebra", "6.0-1", "PROD", "", "OK")
    store.ingest(room[0].report(installed=(geo,)))
    store.ingest(room[1].report(installed=(geo,)))
    store.ingest(room[2].report(failed=(FailedPackage("tis-geogebra", "6.0-1", "t", "exit 1"),)))
    store.ingest(room[3].report(pending=PendingWork(install=("tis-geogebra(=6.0-1)",))))
    teacher = Host(uuid(20), "PC-teacher")
    store.register(teacher.uuid, teacher.public, teacher.name)
    store.ingest(teacher.report(installed=(geo,)))  # self-installed, not assigned
    rollout = store.rollout("tis-geogebra")
    assert (rollout.targeted, rollout.total) == (6, 7)
    assert (rollout.installed, rollout.failed, rollout.pending, rollout.missing) == (3, 1, 1, 2)
    assert {line.uuid for line in rollout.of("missing")} == {room[4].uuid, uuid(9)}
    assert [r.package for r in store.rollouts()] == ["tis-geogebra", "tis-notepad"]
    notepad = store.rollout("tis-notepad")
    assert (notepad.targeted, notepad.installed) == (0, 2)  # the two default reports


def test_collect_takes_good_files_and_reports_every_bad_one(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "site")
    audit = AuditLog(tmp_path / "site" / "audit")
    known, newcomer, stale = Host(uuid(1)), Host(uuid(2)), Host(uuid(3))
    for host in (known, stale):
        store.register(host.uuid, host.public, host.name)
    stick = tmp_path / "stick" / "reports"
    stick.mkdir(parents=True)
    (stick / f"{known.uuid}.json").write_bytes(
        known.report(
            events=(
                ReportEvent(3, "2026-11-21T07:00:00Z", "marie", "install", "tis-notepad", "done"),
            )
        )
    )
    (stick / f"{newcomer.uuid}.json").write_bytes(newcomer.report())
    store.ingest(stale.report(seq=5))
    (stick / f"{stale.uuid}.json").write_bytes(stale.report(seq=4))
    (stick / f"{uuid(7)}.json").write_bytes(b"not json")
    forged = Host(known.uuid)
    (stick / "forged.json").write_bytes(forged.report(seq=50))
    (stick / "link.json").symlink_to(stick / f"{known.uuid}.json")
    seen = []
    result = collect_reports(
        store,
        tmp_path / "stick",
        audit_log=audit,
        who="tech",
        progress=lambda done, total: seen.append((done, total)),
    )
    outcomes = {f.name: f.outcome for f in result.files}
    assert outcomes == {
        f"{known.uuid}.json": "taken",
        f"{newcomer.uuid}.json": "registered",
        f"{stale.uuid}.json": "stale",
        f"{uuid(7)}.json": "refused",
        "forged.json": "refused",
        "link.json": "refused",
    }
    assert seen[-1] == (6, 6)
    messages = {f.name: f.message for f in result.files}
    assert "wrong-host" in messages["forged.json"]  # named after no host it reports on
    assert "not a regular file" in messages["link.json"]
    assert store.get(newcomer.uuid).registered_source == "usb"  # type: ignore[union-attr]
    events, total = audit.search(action="bundle.collect", limit=10)
    assert total == 6 and {e.role for e in events} == {"technician"}
    teacher_events, _ = audit.search(action="host.install")
    assert [(e.who, e.where, e.role) for e in teacher_events] == [("marie", known.uuid, "teacher")]
    with pytest.raises(HostStoreError, match="no reports/ directory"):
        collect_reports(store, tmp_path, audit_log=audit, who="tech")


def test_events_are_told_apart_by_the_agents_task_history(tmp_path: Path) -> None:
    """An agent whose task file was lost counts its tasks from 1 again, in a new epoch: the
    site takes those events as new, and still drops what it has of every epoch it keeps."""
    store = HostStore(tmp_path)
    host = Host(uuid(1))
    store.register(host.uuid, host.public, host.name)

    def event(task_id: int, package: str) -> ReportEvent:
        return ReportEvent(task_id, "2026-11-21T07:31:00Z", "marie", "install", package)

    first = (event(1, "tis-a"), event(2, "tis-b"))
    taken = store.ingest(host.report(epoch="history-1", events=first))
    assert [e.package for e in taken.events] == ["tis-a", "tis-b"]
    assert store.ingest(host.report(epoch="history-1", events=first)).events == ()
    # The task file is lost: ids restart at 1 in a new history; these are new events.
    restarted = (event(1, "tis-c"), event(2, "tis-d"))
    taken = store.ingest(host.report(epoch="history-2", events=restarted))
    assert [e.package for e in taken.events] == ["tis-c", "tis-d"]
    assert store.ingest(host.report(epoch="history-2", events=restarted)).events == ()
    # A stick brings back an old report of the first history late: nothing new in it.
    late = (*first, event(3, "tis-e"))
    taken = store.ingest(host.report(epoch="history-1", events=late))
    assert [e.package for e in taken.events] == ["tis-e"]
    # Only a few histories are kept per host, the newest.
    for n in range(3, 3 + EPOCHS_KEPT):
        assert len(store.ingest(host.report(epoch=f"history-{n}", events=first)).events) == 2
    assert len(store.ingest(host.report(epoch="history-1", events=first)).events) == 2


def test_records_without_epochs_keep_their_event_ids(tmp_path: Path) -> None:
    """Host records written before epochs (one `event_ids` list) still drop what they have,
    for agents that send no epoch; an agent's first epoch is new."""
    store = HostStore(tmp_path)
    host = Host(uuid(1))
    store.register(host.uuid, host.public, host.name)
    old = ReportEvent(7, "2026-11-21T07:31:00Z", "marie", "install", "tis-a")
    store.ingest(host.report(events=(old,)))
    [shard] = [p for p in (tmp_path / "hosts").glob("shard-*.json")]
    data = orjson.loads(shard.read_bytes())
    [doc] = data["hosts"].values()
    assert doc["event_epochs"] == {"": [7]}
    del doc["event_epochs"]
    doc["event_ids"] = [7]  # as an older site wrote it
    shard.write_bytes(orjson.dumps(data))
    store = HostStore(tmp_path)
    assert store.ingest(host.report(events=(old,))).events == ()
    assert [e.id for e in store.ingest(host.report(epoch="e1", events=(old,))).events] == [7]
    for bad in ("not an epoch!", "x" * 65, 12):
        with pytest.raises(ReportError, match=r"report\.epoch: expected 1 to 64"):
            host.report(epoch=bad)
