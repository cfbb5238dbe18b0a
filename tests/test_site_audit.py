"""The audit log on disk: appends, searches, torn lines, several processes, CSV export."""

from __future__ import annotations

import csv
import io
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portal.site.audit import AuditError, AuditEvent, AuditLog, csv_cell

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def event(minutes: float = 0, **fields: str) -> AuditEvent:
    values = {
        "who": "dave",
        "role": "admin",
        "action": "catalog.create",
        "target": "maths",
        "where": "127.0.0.1",
        "outcome": "ok",
        "details": "",
    }
    values.update(fields)
    return AuditEvent(when=T0 + timedelta(minutes=minutes), **values)  # type: ignore[arg-type]


def test_events_come_back_newest_first_with_their_total(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    for i in range(5):
        log.record(event(i, target=f"t{i}"))
    events, total = log.search(limit=2)
    assert total == 5 and [e.target for e in events] == ["t4", "t3"]
    events, total = log.search(limit=2, offset=4)
    assert total == 5 and [e.target for e in events] == ["t0"]
    assert log.search(limit=0) == ([], 5)


def test_one_file_per_day_and_date_ranges_read_only_their_days(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.record_many([event(0), event(24 * 60, target="next"), event(-24 * 60, target="before")])
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [
        "2026-11-19.jsonl",
        "2026-11-20.jsonl",
        "2026-11-21.jsonl",
    ]
    events, total = log.search(since=T0, until=T0 + timedelta(days=1))
    assert total == 1 and events[0].target == "maths"
    # an unreadable day: a search that starts after it never opens it
    (tmp_path / "2026-11-19.jsonl").unlink()
    (tmp_path / "2026-11-19.jsonl").mkdir()
    assert log.search(since=T0)[1] == 2
    with pytest.raises(AuditError, match=r"2026-11-19\.jsonl: cannot read the audit log"):
        log.search()


def test_filters(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.record_many(
        [
            event(0, who="Dave", action="admin.login"),
            event(1, who="alice", role="teacher", action="admin.denied", outcome="refused"),
            event(
                2, who="alice", role="teacher", action="install", where="uuid-1", details="GéoGebra"
            ),
            event(3, action="catalog.delete", details='quote " and \\ backslash'),
        ]
    )

    def actions(**filters: object) -> list[str]:
        return [e.action for e in log.search(**filters)[0]]  # type: ignore[arg-type]

    assert actions(who="dave") == ["catalog.delete", "admin.login"], "who is case-insensitive"
    assert actions(role="teacher") == ["install", "admin.denied"]
    assert actions(outcome="refused") == ["admin.denied"]
    assert actions(action="admin") == ["admin.denied", "admin.login"], "a prefix up to a dot"
    assert actions(action="admin.login") == ["admin.login"]
    assert actions(action="adm") == []
    assert actions(text="géogebra") == ["install"], "text is case-insensitive, accents too"
    assert actions(text="UUID-1") == ["install"]
    assert actions(text='quote "') == ["catalog.delete"]
    assert actions(text="\\ back") == ["catalog.delete"]
    assert actions(text="role") == [], "field names are not text"
    assert actions(text="alice", outcome="refused") == ["admin.denied"]


def test_a_torn_last_line_is_skipped_and_the_next_event_is_whole(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.record(event(0, target="first"))
    day = tmp_path / "2026-11-20.jsonl"
    with day.open("ab") as f:
        f.write(b'{"when":"2026-11-20T09:01:00Z","who":"da')  # a crash in the middle of an append
    assert [e.target for e in log.search()[0]] == ["first"]
    log.record(event(2, target="third"))
    assert [e.target for e in log.search()[0]] == ["third", "first"]
    lines = day.read_bytes().split(b"\n")
    assert lines[1].endswith(b'"who":"da') and lines[2].startswith(b'{"when"')


def test_a_corrupt_line_in_the_middle_is_skipped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.record(event(0, target="a"))
    with (tmp_path / "2026-11-20.jsonl").open("ab") as f:
        f.write(b"not json\n" + b'{"when": "yesterday"}\n' + b"[1, 2]\n")
    log.record(event(1, target="b"))
    assert [e.target for e in log.search()[0]] == ["b", "a"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"role": "student"}, "unknown role 'student'"),
        ({"outcome": "maybe"}, "unknown outcome 'maybe'"),
        ({"action": "Drop Table"}, "audit event action 'Drop Table'"),
        ({"action": ""}, "audit event action ''"),
        ({"who": "x" * 257}, "who is 257 characters, at most 256"),
        ({"details": "x" * 4097}, "details is 4097 characters"),
    ],
)
def test_bad_events_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(AuditError, match=message):
        event(0, **fields)


def test_times_need_a_zone_and_events_must_be_events(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no time zone"):
        AuditEvent(when=datetime(2026, 1, 1), who="x", role="admin", action="a")
    log = AuditLog(tmp_path)
    with pytest.raises(AuditError, match="not an audit event"):
        log.record_many([{"who": "x"}])  # type: ignore[list-item]
    with pytest.raises(AuditError, match="no time zone"):
        log.search(since=datetime(2026, 1, 1))


def test_an_unwritable_log_is_an_audit_error(tmp_path: Path) -> None:
    (tmp_path / "audit").write_text("a file where the directory should be")
    with pytest.raises(AuditError, match="cannot lock the audit log"):
        AuditLog(tmp_path / "audit").record(event())


def test_csv_export_is_safe_for_spreadsheets(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    hostile = ['=HYPERLINK("http://evil")', "+1+1", "-2", "@SUM(A1)", "\tx", "plain, with comma"]
    log.record_many(event(i, details=text, who=text[:5]) for i, text in enumerate(hostile))
    stream = io.StringIO()
    assert log.export_csv(stream, outcome="ok") == len(hostile)
    rows = list(csv.reader(io.StringIO(stream.getvalue())))
    assert rows[0] == ["when", "who", "role", "action", "target", "where", "outcome", "details"]
    details = [row[7] for row in rows[1:]]
    assert details == [
        "plain, with comma",
        "'\tx",
        "'@SUM(A1)",
        "'-2",
        "'+1+1",
        '\'=HYPERLINK("http://evil")',
    ]
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
    assert csv_cell("safe") == "safe" and csv_cell("") == ""
    assert log.export_csv(io.StringIO(), role="teacher") == 0


def _append_many(directory: str, tag: str, count: int) -> None:
    log = AuditLog(Path(directory))
    for i in range(count):
        log.record(event(i / 100, who=tag, details="x" * 300))


def test_processes_appending_together_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_many, args=(str(tmp_path), f"p{n}", 150)) for n in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    events, total = AuditLog(tmp_path).search(limit=1000)
    assert total == 450
    assert {e.who: 0 for e in events}.keys() == {"p0", "p1", "p2"}
    lines = (tmp_path / "2026-11-20.jsonl").read_bytes().split(b"\n")
    assert len(lines) == 451 and lines[-1] == b""
