"""The site server's TinyDB files (durable writes, reloads, locks) and its records."""

from __future__ import annotations

import errno
import multiprocessing
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portal.site.model import (
    Assignment,
    MachineGroup,
    ModelError,
    PublishedCatalog,
    check_name,
    parse_time,
    utc_text,
)
from portal.site.storage import StorageError, open_db, transaction


def _add_many(path: str, start: int, count: int) -> None:
    db = open_db(Path(path))
    for i in range(start, start + count):
        with transaction(Path(path)):
            db.insert({"n": i})


def test_a_write_is_on_disk_and_read_back_by_another_handle(tmp_path: Path) -> None:
    path = tmp_path / "state" / "groups.json"
    db = open_db(path)
    db.insert({"name": "salle-101"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert open_db(path).all() == [{"name": "salle-101"}]


def test_a_reader_sees_what_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    reader = open_db(path)
    reader.insert({"n": -1})
    assert len(reader) == 1
    child = multiprocessing.get_context("spawn").Process(target=_add_many, args=(str(path), 0, 3))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert sorted(d["n"] for d in reader.all()) == [-1, 0, 1, 2]


def test_two_processes_writing_under_the_lock_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_add_many, args=(str(path), k * 100, 25)) for k in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    numbers = sorted(d["n"] for d in open_db(path).all())
    assert numbers == [*range(25), *range(100, 125)]


def test_queries_see_what_another_process_wrote(tmp_path: Path) -> None:
    from tinydb import Query

    path = tmp_path / "t.json"
    reader = open_db(path)
    reader.insert({"n": -1})
    query = Query().n >= 0
    assert reader.search(query) == []
    _add_many(str(path), 0, 1)
    assert reader.search(query) == [{"n": 0}]


def test_transactions_nest_within_a_thread(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    db = open_db(path)
    with transaction(path), transaction(path):
        db.insert({"n": 1})
    assert db.all() == [{"n": 1}]


def test_a_full_disk_leaves_the_previous_file_and_no_stale_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.json"
    db = open_db(path)
    db.insert({"n": 1})
    before = path.read_bytes()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("portal.site.storage.write_atomic", full)
    with pytest.raises(StorageError, match="cannot write: No space left on device"):
        db.insert({"n": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert db.all() == [{"n": 1}]


def test_a_write_that_cannot_be_encoded_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    db = open_db(path)
    db.insert({"n": 1})
    before = path.read_bytes()
    with pytest.raises(StorageError, match="cannot write"):
        db.insert({"bad": object()})
    assert path.read_bytes() == before
    assert db.all() == [{"n": 1}]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"{not json", "not a JSON state file"), (b"[1, 2]", "not a TinyDB file")],
)
def test_a_damaged_file_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(StorageError, match=reason) as caught:
        open_db(path).all()
    assert str(path) in str(caught.value)


def test_records_round_trip_through_json() -> None:
    group = MachineGroup("salle-101", "Lycée Chateaubriand — salle 101", ("h1",), ("profs-maths",))
    assert MachineGroup.from_json(group.to_json()) == group
    deadline = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
    assignment = Assignment("a1", "geogebra", "at_shutdown", group="salle-101", deadline=deadline)
    assert Assignment.from_json(assignment.to_json()) == assignment
    catalog = PublishedCatalog("maths", "Mathématiques", "Logiciels de maths", ("geogebra",))
    assert PublishedCatalog.from_json(catalog.to_json()) == catalog


@pytest.mark.parametrize("name", ["", "Salle", "-a", "a-", "a_b", "a" * 65, "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ModelError, match="lower-case"):
        check_name(name, "group name")


def test_bad_records_are_refused() -> None:
    with pytest.raises(ModelError, match="intent"):
        Assignment("a", "x", "sometimes", group="g")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not both"):
        Assignment("a", "x", "required", group="g", host="h")
    with pytest.raises(ModelError, match="not both"):
        Assignment("a", "x", "required")
    with pytest.raises(ModelError, match="title"):
        MachineGroup("g", "  ")


def test_times_are_utc_text() -> None:
    assert utc_text(parse_time("2026-12-01T19:00:00+01:00")) == "2026-12-01T18:00:00Z"
    assert parse_time("2026-12-01T18:00:00").tzinfo is UTC
    with pytest.raises(ModelError, match="ISO 8601"):
        parse_time("demain")
