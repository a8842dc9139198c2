"""Corrupt rows in an SQLite event store, written behind the store's back with the stdlib ``sqlite3``.

Extends tests/test_sqlite_store.py::test_corrupt_payload_row_names_its_sequence (one garbage
payload) to every kind of corruption a row can carry: garbage, truncated or over-deep msgpack,
a payload that is not a map, a payload or timestamp of the wrong SQLite type, text that is
not UTF-8, NULL where the schema says NOT NULL. For each:

- every read path that returns the row (``get_events``, ``get_events_for_workflow``,
  ``get_event_by_id``, ``get_events_since``) raises `CorruptEventError` naming its sequence,
  either when reading or when the payload is first used, and intact rows still read back;
- ``EventReplayer.replay`` raises `CorruptEventError` naming the sequence, and with
  ``skip_corrupt=True`` (the documented option; ``rebuild_workflow_state`` has none) it
  lists the row in ``skipped_corrupt`` and returns the state of the intact events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import close_store, new_event, read_options, sqlite_url
from stabilize_events import (
    EntityType,
    Event,
    EventQuery,
    EventReplayer,
    EventType,
    InMemoryEventStore,
    SqliteEventStore,
    errors,
)
from stabilize_events._core import encode_payload

WF = "wf-corrupt"


def workflow_events() -> list[Event]:
    """A small workflow: created, started, two stages with a task each, completed."""
    spec: list[tuple[EventType, EntityType, str, dict[str, Any]]] = [
        (EventType.WORKFLOW_CREATED, EntityType.WORKFLOW, WF, {"application": "app", "name": "deploy"}),
        (EventType.WORKFLOW_STARTED, EntityType.WORKFLOW, WF, {}),
        (EventType.STAGE_STARTED, EntityType.STAGE, "stage-1", {"name": "build", "type": "docker"}),
        (EventType.TASK_STARTED, EntityType.TASK, "task-1", {"name": "compile", "stage_id": "stage-1"}),
        (EventType.TASK_COMPLETED, EntityType.TASK, "task-1", {"status": "SUCCEEDED", "outputs": {"n": 1}}),
        (
            EventType.STAGE_COMPLETED,
            EntityType.STAGE,
            "stage-1",
            {"status": "SUCCEEDED", "outputs": {"a": 1}},
        ),
        (EventType.STAGE_STARTED, EntityType.STAGE, "stage-2", {"name": "test", "type": "pytest"}),
        (EventType.STAGE_FAILED, EntityType.STAGE, "stage-2", {"status": "TERMINAL", "error": "boom"}),
        (EventType.WORKFLOW_FAILED, EntityType.WORKFLOW, WF, {"status": "TERMINAL"}),
    ]
    versions: dict[str, int] = {}
    out = []
    for event_type, entity_type, entity_id, data in spec:
        versions[entity_id] = versions.get(entity_id, 0) + 1
        out.append(
            new_event(
                event_type=event_type,
                entity_type=entity_type,
                entity_id=entity_id,
                workflow_id=WF,
                version=versions[entity_id],
                data=data,
            )
        )
    return out


@dataclass
class Corruption:
    """How to damage one row: an SQL assignment (with its parameter), or a raw payload."""

    name: str
    sql: str  # "SET ..." clause, one "?" bound to `value`
    value: Any
    #: Whether the replay fold reads the damage: it reads the columns sequence, event_id,
    #: event_type, timestamp_us, entity_type, entity_id, data, schema_version (not version,
    #: actor...), and of the payload only the keys its event type needs.
    fold_sees_it: bool = True
    #: When the fold does not see the damage in ``data``: the payload it folds instead.
    folded_data: dict[str, Any] | None = None


def valid(data: dict[str, Any]) -> bytes:
    return encode_payload(data)


CORRUPTIONS = [
    Corruption("garbage_msgpack", "data = ?", b"\xc1\xc1\xc1"),
    Corruption("random_bytes", "data = ?", bytes(range(255, 0, -7))),
    Corruption("empty_blob", "data = ?", b""),
    Corruption("truncated_blob", "data = ?", valid({"status": "SUCCEEDED", "outputs": {"a": 1}})[:-3]),
    Corruption("truncated_in_key", "data = ?", valid({"status": "SUCCEEDED"})[:4]),
    Corruption("trailing_bytes", "data = ?", valid({"status": "SUCCEEDED"}) + b"\x00"),
    Corruption("not_a_map", "data = ?", encode_payload([1, 2, 3])),
    Corruption("nil_payload", "data = ?", b"\xc0"),
    Corruption("map_longer_than_blob", "data = ?", b"\xdf\xff\xff\xff\xff"),
    Corruption("array_longer_than_blob", "data = ?", b"\x81\xa1x\xdd\x7f\xff\xff\xff"),
    # Too deep for the decoder, under a key the fold never reads: reads refuse it, the fold
    # skips over the value (without recursion) and folds the event as if it had no payload;
    # with skip_corrupt the whole payload is checked, and the event is skipped.
    Corruption("too_deep", "data = ?", b"\x81\xa1x" + b"\x91" * 300 + b"\xc0", False, {}),
    Corruption("very_deep", "data = ?", b"\x81\xa1x" + b"\x91" * 200_000 + b"\xc0", False, {}),
    Corruption("invalid_utf8_unread_value", "data = ?", b"\x81\xa1x\xa1\xff", False, {}),
    Corruption("invalid_utf8_key", "data = ?", b"\x81\xa2\xff\xfe\x01"),
    Corruption("text_payload", "data = ?", '{"status": "SUCCEEDED"}'),
    Corruption("integer_payload", "data = ?", 42),
    Corruption("real_payload", "data = ?", 1.5),
    Corruption("text_timestamp", "timestamp_us = ?", "2024-01-01T00:00:00"),
    Corruption("real_timestamp", "timestamp_us = ?", 1.5),
    Corruption("blob_timestamp", "timestamp_us = ?", b"\x00\x01"),
    Corruption("timestamp_beyond_datetime", "timestamp_us = ?", 10**18),
    Corruption("text_schema_version", "schema_version = ?", "one"),
    Corruption("blob_entity_id", "entity_id = ?", b"stage-1"),
    Corruption("invalid_utf8_event_id", "event_id = CAST(? AS TEXT)", b"\xff\xfe"),
    Corruption("text_version", "version = ?", "v2", fold_sees_it=False),
    Corruption("blob_actor", "actor = ?", b"\xff", fold_sees_it=False),
    Corruption("invalid_utf8_correlation_id", "correlation_id = CAST(? AS TEXT)", b"\xc3\x28", False),
]


def corrupt_row(path: Path, sequence: int, sql: str, value: Any) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"UPDATE event_log SET {sql} WHERE sequence = ?", (value, sequence))
        assert conn.total_changes == 1
        conn.commit()
    finally:
        conn.close()


@dataclass
class Damaged:
    store: SqliteEventStore
    events: list[Event]  # as stored, with sequences
    bad: Event  # the damaged one

    @property
    def intact(self) -> list[Event]:
        return [e for e in self.events if e.event_id != self.bad.event_id]


def damage(tmp_path: Path, sql: str, value: Any, index: int = 5) -> Damaged:
    path = tmp_path / "events.db"
    s = SqliteEventStore(sqlite_url(path))
    stored = s.append_batch(workflow_events())
    s.append(new_event(workflow_id="wf-other"))  # a row of another workflow, after ours
    close_store(s)
    corrupt_row(path, stored[index].sequence, sql, value)
    return Damaged(SqliteEventStore(sqlite_url(path)), stored, stored[index])


def expected_state(events: list[Event]) -> dict[str, Any]:
    """The state replay must give for ``events`` (replayed from an in-memory store)."""
    mem = InMemoryEventStore()
    mem.append_batch(events)
    return EventReplayer(mem).rebuild_workflow_state(WF)


def reads_corrupt(fn: Callable[[], Any], sequence: int) -> str:
    """``fn`` (a read, with every payload touched) raises CorruptEventError naming ``sequence``."""
    with pytest.raises(errors.CorruptEventError) as info:
        fn()
    message = str(info.value)
    assert f"sequence {sequence}" in message, message
    return message


def touch(events: Any) -> list[Any]:
    return [(e.event_id, e.timestamp, e.data, e.metadata, e.version) for e in events]


READS: dict[str, Callable[[SqliteEventStore, Event], Any]] = {
    "get_events": lambda s, bad: touch(s.get_events(EventQuery())),
    "get_events_filtered": lambda s, bad: touch(s.get_events(EventQuery(workflow_id=WF, from_sequence=0))),
    "get_events_by_timestamp": lambda s, bad: touch(s.get_events(EventQuery(order_by="timestamp"))),
    "get_events_for_workflow": lambda s, bad: touch(s.get_events_for_workflow(WF)),
    "get_event_by_id": lambda s, bad: touch([s.get_event_by_id(bad.event_id)]),
    "get_events_since": lambda s, bad: touch(s.get_events_since(bad.sequence - 1)),
    "get_events_since_zero": lambda s, bad: touch(s.get_events_since(0)),
}


#: Every corruption under every read path, but looking a row up by an event id that was
#: itself damaged: that no longer finds the row at all.
CORRUPT_READS = [
    pytest.param(c, read, id=f"{c.name}-{read}")
    for c in CORRUPTIONS
    for read in READS
    if not (read == "get_event_by_id" and "event_id" in c.name)
]


@pytest.mark.parametrize(("c", "read"), CORRUPT_READS)
def test_reading_a_corrupt_row_names_its_sequence(
    tmp_path: Path, opened: list[SqliteEventStore], c: Corruption, read: str
) -> None:
    d = damage(tmp_path, c.sql, c.value)
    opened.append(d.store)
    reads_corrupt(lambda: READS[read](d.store, d.bad), d.bad.sequence)
    # the intact rows still read back, whole
    for e in d.intact:
        got = d.store.get_event_by_id(e.event_id)
        assert got == e and got is not None and got.data == e.data
    assert d.store.count_events() == len(d.events) + 1
    assert d.store.get_current_sequence() == d.events[-1].sequence + 1


@pytest.mark.parametrize("c", CORRUPTIONS, ids=lambda c: c.name)
def test_replay_reports_or_skips_a_corrupt_row(
    tmp_path: Path, opened: list[SqliteEventStore], c: Corruption
) -> None:
    d = damage(tmp_path, c.sql, c.value)
    opened.append(d.store)
    replayer = EventReplayer(d.store)
    if not c.fold_sees_it:
        # Damage the fold does not read: replay folds every event, the damaged one as it reads it.
        events = d.events
        if c.folded_data is not None:
            events = [
                Event.from_dict({**e.to_dict(), "data": c.folded_data}) if e is d.bad else e for e in events
            ]
        assert replayer.rebuild_workflow_state(WF) == expected_state(events)
        result = replayer.replay(WF, skip_corrupt=True)
        if c.folded_data is None:
            assert (result.skipped_corrupt, result.events_replayed) == ([], len(d.events))
        else:
            assert [f"sequence {d.bad.sequence}" in m for m in result.skipped_corrupt] == [True]
            assert result.final_state == expected_state(d.intact)
        return
    reads_corrupt(lambda: replayer.rebuild_workflow_state(WF), d.bad.sequence)
    reads_corrupt(lambda: replayer.replay(WF), d.bad.sequence)
    if c.name.endswith("_timestamp"):
        # a timestamp of the wrong type still matches a time bound, so time travel reports it too
        # (one beyond datetime's range is simply later than any bound)
        reads_corrupt(
            lambda: replayer.time_travel_query(WF, datetime(9999, 1, 1, tzinfo=UTC)), d.bad.sequence
        )

    result = replayer.replay(WF, skip_corrupt=True)
    assert len(result.skipped_corrupt) == 1, result.skipped_corrupt
    assert f"sequence {d.bad.sequence}" in result.skipped_corrupt[0]
    assert result.events_replayed == len(d.intact)
    assert result.final_state == expected_state(d.intact)
    assert result.last_sequence == d.events[-1].sequence


@pytest.mark.parametrize("index", [0, 2, 3, 4, 5, 6, 7])
def test_skip_corrupt_state_equals_intact_events_wherever_the_row_is(
    tmp_path: Path, opened: list[SqliteEventStore], index: int
) -> None:
    d = damage(tmp_path, "data = ?", b"\xc1", index=index)
    opened.append(d.store)
    result = EventReplayer(d.store).replay(WF, skip_corrupt=True)
    assert result.final_state == expected_state(d.intact)
    assert [f"sequence {d.bad.sequence}" in m for m in result.skipped_corrupt] == [True]
    # as_of_sequence before the damaged row: nothing to skip, no error either way
    if index > 0:
        before = d.events[index - 1].sequence
        assert EventReplayer(d.store).rebuild_workflow_state(WF, as_of_sequence=before) == expected_state(
            d.events[:index]
        )


@pytest.mark.parametrize("index", [1, 8], ids=["workflow.started", "workflow.failed"])
@pytest.mark.parametrize("payload", [b"\xc1", encode_payload([1]), b"\x81\xa6status"], ids=repr)
def test_skipped_workflow_event_leaves_no_trace_in_the_state(
    tmp_path: Path, opened: list[SqliteEventStore], index: int, payload: bytes
) -> None:
    d = damage(tmp_path, "data = ?", payload, index=index)
    opened.append(d.store)
    result = EventReplayer(d.store).replay(WF, skip_corrupt=True)
    assert [f"sequence {d.bad.sequence}" in m for m in result.skipped_corrupt] == [True]
    assert result.final_state == expected_state(d.intact)


def test_several_corrupt_rows_are_all_listed(tmp_path: Path, opened: list[SqliteEventStore]) -> None:
    d = damage(tmp_path, "data = ?", b"\xc1")
    opened.append(d.store)
    close_store(d.store)
    path = tmp_path / "events.db"
    others = [d.events[2], d.events[7]]
    corrupt_row(path, others[0].sequence, "timestamp_us = ?", "noon")
    corrupt_row(path, others[1].sequence, "data = ?", encode_payload(["not", "a", "map"]))
    store = SqliteEventStore(sqlite_url(path))
    opened.append(store)
    bad = {d.bad.sequence, others[0].sequence, others[1].sequence}
    # the first damaged row in sequence order is the one reported
    reads_corrupt(lambda: touch(store.get_events_for_workflow(WF)), min(bad))
    result = EventReplayer(store).replay(WF, skip_corrupt=True)
    assert len(result.skipped_corrupt) == 3
    for seq, message in zip(sorted(bad), result.skipped_corrupt, strict=True):
        assert f"sequence {seq}" in message
    assert result.final_state == expected_state([e for e in d.events if e.sequence not in bad])


def test_null_payload_when_the_schema_lost_not_null(tmp_path: Path, opened: list[SqliteEventStore]) -> None:
    """NULL cannot go into ``data`` (NOT NULL), but a file whose schema lost the constraint can hold it."""
    d = damage(tmp_path, "data = ?", valid({"status": "SUCCEEDED"}))  # an undamaged copy to start from
    close_store(d.store)
    path = tmp_path / "events.db"
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE event_log SET data = NULL WHERE sequence = ?", (d.bad.sequence,))
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'data BLOB NOT NULL', 'data BLOB') "
        "WHERE name = 'event_log'"
    )
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE event_log SET data = NULL, timestamp_us = timestamp_us WHERE sequence = ?", (d.bad.sequence,)
    )
    conn.commit()
    conn.close()
    try:
        store = SqliteEventStore(sqlite_url(path))
    except errors.SchemaError:
        pytest.skip("the store refuses a file whose schema was edited (also a fine answer)")
    opened.append(store)
    for read in READS.values():
        reads_corrupt(lambda read=read: read(store, d.bad), d.bad.sequence)  # type: ignore[misc]
    result = EventReplayer(store).replay(WF, skip_corrupt=True)
    assert result.final_state == expected_state(d.intact)


# --- payloads the fold copies into the state ---------------------------------------------------------

# Structurally valid msgpack maps whose value under a key the fold copies into the state
# (stage.completed: "status", "outputs") holds something the decoder refuses.
BAD_FOLDED_VALUES = {
    "status_invalid_utf8": b"\x81\xa6status\xa2\xff\xfe",
    "outputs_date_out_of_range": b"\x81\xa7outputs\x81\xa1d\xd6\x02\x7f\xff\xff\xff",
    "outputs_unknown_extension": b"\x81\xa7outputs\xd4\x63\x00",
    "outputs_too_deep": b"\x81\xa7outputs" + b"\x91" * 300 + b"\xc0",
}


@pytest.mark.parametrize("payload", list(BAD_FOLDED_VALUES.values()), ids=list(BAD_FOLDED_VALUES))
def test_corrupt_value_under_a_folded_key_is_corrupt_on_read(
    tmp_path: Path, opened: list[SqliteEventStore], payload: bytes
) -> None:
    d = damage(tmp_path, "data = ?", payload)  # index 5: stage.completed
    opened.append(d.store)
    for read in READS.values():
        reads_corrupt(lambda read=read: read(d.store, d.bad), d.bad.sequence)  # type: ignore[misc]
    with pytest.raises(errors.CorruptEventError):
        EventReplayer(d.store).replay(WF)


@pytest.mark.parametrize("payload", list(BAD_FOLDED_VALUES.values()), ids=list(BAD_FOLDED_VALUES))
def test_replay_corrupt_folded_value_names_sequence_and_is_skipped(
    tmp_path: Path, opened: list[SqliteEventStore], payload: bytes
) -> None:
    d = damage(tmp_path, "data = ?", payload)
    opened.append(d.store)
    replayer = EventReplayer(d.store)
    reads_corrupt(lambda: replayer.replay(WF), d.bad.sequence)
    result = replayer.replay(WF, skip_corrupt=True)
    assert [f"sequence {d.bad.sequence}" in m for m in result.skipped_corrupt] == [True]
    assert result.final_state == expected_state(d.intact)


#: Damage found while the rows are read (not when the payload is first used), and damage to
#: the payload, for the large-read test below.
LARGE_READ_CORRUPTIONS = [
    c for c in CORRUPTIONS if c.name in ("text_timestamp", "blob_entity_id", "garbage_msgpack")
]


def damage_large(
    tmp_path: Path, opened: list[SqliteEventStore], damages: list[tuple[int, str, Any]], read_mode: str
) -> tuple[SqliteEventStore, list[Event]]:
    """12,000 events of one workflow, with the rows at the given indexes damaged (as
    `corrupt_row` does), reopened; returns the store and the events as stored."""
    path = tmp_path / "events.db"
    s = SqliteEventStore(sqlite_url(path))
    stored = s.append_batch([new_event(workflow_id=WF, entity_id=f"task-{i}") for i in range(12_000)])
    close_store(s)
    for index, sql, value in damages:
        corrupt_row(path, stored[index].sequence, sql, value)
    s = SqliteEventStore(sqlite_url(path), **read_options(read_mode))
    opened.append(s)
    return s, stored


@pytest.mark.parametrize(
    "index", [100, 600, 4_000, 10_000], ids=["first-part", "first-chunk", "lower-half", "upper-half"]
)
@pytest.mark.parametrize("c", LARGE_READ_CORRUPTIONS, ids=lambda c: c.name)
def test_a_corrupt_row_in_a_large_read_names_its_sequence(
    tmp_path: Path, opened: list[SqliteEventStore], c: Corruption, index: int, read_mode: str
) -> None:
    # A file store reads a large result in parts on two threads (split_read.rs), and may
    # decode its payloads as they come in: wherever the bad row falls, the read reports it
    # as a small read does (a bad payload when it is used).
    s, stored = damage_large(tmp_path, opened, [(index, c.sql, c.value)], read_mode)
    bad = stored[index]
    reads = [
        lambda: touch(s.get_events_for_workflow(WF)),
        lambda: touch(s.get_events(EventQuery(limit=10**6))),
        lambda: touch(s.get_events_since(0, limit=10**6)),
    ]
    for read in reads:
        reads_corrupt(read, bad.sequence)
    # The rows after it still read back, whole.
    after = s.get_events_since(bad.sequence, limit=10**6)
    assert after == stored[index + 1 :]
    assert [e.data for e in after] == [e.data for e in stored[index + 1 :]]


def test_of_two_corrupt_rows_a_large_read_names_the_first(
    tmp_path: Path, opened: list[SqliteEventStore], read_mode: str
) -> None:
    # As a read in one go does: here the second bad row is the newest, which a large read
    # looks up before reading its halves.
    bad_timestamp = ("timestamp_us = ?", "not a time")
    s, stored = damage_large(tmp_path, opened, [(4_000, *bad_timestamp), (-1, *bad_timestamp)], read_mode)
    message = reads_corrupt(lambda: touch(s.get_events_for_workflow(WF)), stored[4_000].sequence)
    assert f"sequence {stored[-1].sequence}" not in message, message
