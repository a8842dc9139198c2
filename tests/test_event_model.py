"""Event and EventMetadata: defaults, immutability, equality, repr, copying, dict form, factories."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from conftest import close_store, sqlite_url
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventType,
    InMemoryEventStore,
    SqliteEventStore,
    _core,
    create_stage_event,
    create_task_event,
    create_workflow_event,
)
from stabilize_events.errors import InvalidArgumentError
from stabilize_events.types import RAW_EVENT_TYPE

ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

TS = datetime(2024, 5, 6, 7, 8, 9, 654321, tzinfo=UTC)
MD = EventMetadata(correlation_id="corr", causation_id="cause", actor="alice", source_handler="H")

FIELDS = (
    "event_id",
    "event_type",
    "timestamp",
    "sequence",
    "entity_type",
    "entity_id",
    "workflow_id",
    "version",
    "data",
    "metadata",
    "schema_version",
)


def full_event(**overrides: Any) -> Event:
    kwargs: dict[str, Any] = {
        "event_id": "01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "event_type": EventType.STAGE_COMPLETED,
        "timestamp": TS,
        "sequence": 42,
        "entity_type": EntityType.STAGE,
        "entity_id": "stage-abcdefghij",
        "workflow_id": "wf-xyz",
        "version": 3,
        "data": {"status": "SUCCEEDED", "outputs": {"n": [1, 2.5, None, "x"]}},
        "metadata": MD,
        "schema_version": 2,
    }
    kwargs.update(overrides)
    return Event(**kwargs)


# --- EventMetadata -------------------------------------------------------------------------


def test_metadata_defaults() -> None:
    md = EventMetadata(correlation_id="c")
    assert md.correlation_id == "c"
    assert md.causation_id is None
    assert md.actor == "system"
    assert md.source_handler is None


def test_metadata_positional_in_field_order() -> None:
    md = EventMetadata("c", "cause", "bob", "Handler")
    assert (md.correlation_id, md.causation_id, md.actor, md.source_handler) == (
        "c",
        "cause",
        "bob",
        "Handler",
    )


def test_metadata_requires_correlation_id() -> None:
    with pytest.raises(TypeError):
        EventMetadata()  # type: ignore[call-arg]


def test_metadata_is_frozen() -> None:
    md = EventMetadata(correlation_id="c")
    with pytest.raises(AttributeError):
        md.actor = "mallory"  # type: ignore[misc]
    assert md.actor == "system"


def test_metadata_equality_and_hash() -> None:
    a = EventMetadata("c", "x", "u", "h")
    b = EventMetadata("c", "x", "u", "h")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    for other in (
        EventMetadata("d", "x", "u", "h"),
        EventMetadata("c", None, "u", "h"),
        EventMetadata("c", "x", "v", "h"),
        EventMetadata("c", "x", "u", None),
    ):
        assert a != other
    assert a != "c"


def test_metadata_to_dict() -> None:
    assert MD.to_dict() == {
        "correlation_id": "corr",
        "causation_id": "cause",
        "actor": "alice",
        "source_handler": "H",
    }
    assert EventMetadata("c").to_dict() == {
        "correlation_id": "c",
        "causation_id": None,
        "actor": "system",
        "source_handler": None,
    }


def test_metadata_from_dict() -> None:
    assert EventMetadata.from_dict(MD.to_dict()) == MD
    assert EventMetadata.from_dict({}) == EventMetadata(correlation_id="")
    assert EventMetadata.from_dict({"correlation_id": "c", "actor": "bob"}) == EventMetadata(
        "c", None, "bob", None
    )


def test_metadata_pickle_and_copy() -> None:
    assert pickle.loads(pickle.dumps(MD)) == MD
    assert copy.copy(MD) == MD
    assert copy.deepcopy(MD) == MD


# --- Event defaults and construction ------------------------------------------------------


def test_event_defaults() -> None:
    before = datetime.now(UTC)
    e = Event()
    after = datetime.now(UTC)
    assert ULID_RE.match(e.event_id), e.event_id
    assert e.event_type is EventType.STATUS_CHANGED
    assert e.timestamp.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= e.timestamp <= after + timedelta(milliseconds=1)
    assert e.sequence == 0
    assert e.entity_type is EntityType.WORKFLOW
    assert e.entity_id == ""
    assert e.workflow_id == ""
    assert e.version == 0
    assert e.data == {}
    assert e.metadata == EventMetadata(correlation_id="")
    assert e.schema_version == 1


def test_default_event_ids_are_unique_and_time_ordered() -> None:
    ids = [Event().event_id for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(ULID_RE.match(i) for i in ids)
    # ULIDs start with a 48-bit millisecond timestamp: later events never sort before earlier ones'
    # time prefix.
    prefixes = [i[:10] for i in ids]
    assert prefixes == sorted(prefixes)


def test_default_data_is_not_shared() -> None:
    a, b = Event(), Event()
    a.data["x"] = 1
    assert b.data == {} or "x" not in b.data


def test_event_keyword_fields_read_back() -> None:
    e = full_event()
    assert e.event_id == "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    assert e.event_type is EventType.STAGE_COMPLETED
    assert e.timestamp == TS
    assert e.timestamp.microsecond == 654321
    assert e.sequence == 42
    assert e.entity_type is EntityType.STAGE
    assert e.entity_id == "stage-abcdefghij"
    assert e.workflow_id == "wf-xyz"
    assert e.version == 3
    assert e.data == {"status": "SUCCEEDED", "outputs": {"n": [1, 2.5, None, "x"]}}
    assert e.metadata == MD
    assert e.schema_version == 2


def test_event_positional_constructor_in_field_order() -> None:
    data = {"a": 1}
    e = Event("id-1", EventType.TASK_STARTED, TS, 5, EntityType.TASK, "t1", "w1", 2, data, MD, 1)
    assert e == Event(
        event_id="id-1",
        event_type=EventType.TASK_STARTED,
        timestamp=TS,
        sequence=5,
        entity_type=EntityType.TASK,
        entity_id="t1",
        workflow_id="w1",
        version=2,
        data=data,
        metadata=MD,
        schema_version=1,
    )
    assert e.entity_id == "t1" and e.version == 2 and e.sequence == 5


def test_event_rejects_unknown_keyword() -> None:
    with pytest.raises(TypeError):
        Event(bogus=1)  # type: ignore[call-arg]


def test_naive_timestamp_is_taken_as_utc() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5, 678901)
    e = Event(timestamp=naive)
    assert e.timestamp.tzinfo is not None
    assert e.timestamp.utcoffset() == timedelta(0)
    assert e.timestamp == naive.replace(tzinfo=UTC)
    assert e.timestamp.microsecond == 678901


def test_aware_timestamp_keeps_its_instant() -> None:
    plus2 = timezone(timedelta(hours=2))
    ts = datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=plus2)
    e = Event(timestamp=ts)
    assert e.timestamp == ts  # same instant
    assert e.timestamp.utcoffset() is not None


# --- immutability ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIELDS)
def test_event_fields_cannot_be_set(name: str) -> None:
    e = full_event()
    before = getattr(e, name)
    with pytest.raises(AttributeError):
        setattr(e, name, before)
    with pytest.raises(AttributeError):
        setattr(e, name, None)
    assert getattr(e, name) == before


def test_event_new_attributes_cannot_be_added() -> None:
    e = full_event()
    with pytest.raises(AttributeError):
        e.extra = 1  # type: ignore[attr-defined]


def test_frozen_error_type() -> None:
    e = full_event()
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError)):
        e.sequence = 7  # type: ignore[misc]
    assert e.sequence == 42


# --- equality -------------------------------------------------------------------------------


def test_event_equality_compares_all_fields() -> None:
    a = full_event()
    assert a == full_event()
    assert not (a != full_event())
    changed: dict[str, Any] = {
        "event_id": "other",
        "event_type": EventType.STAGE_FAILED,
        "timestamp": TS + timedelta(microseconds=1),
        "sequence": 43,
        "entity_type": EntityType.TASK,
        "entity_id": "stage-other",
        "workflow_id": "wf-other",
        "version": 4,
        "data": {"status": "FAILED"},
        "metadata": EventMetadata("corr", "cause", "alice", "H2"),
        "schema_version": 3,
    }
    assert set(changed) == set(FIELDS)
    for name, value in changed.items():
        b = full_event(**{name: value})
        assert a != b, f"events differing in {name} compared equal"
        assert not (a == b)


def test_event_equality_with_other_types() -> None:
    e = full_event()
    assert e != "event"
    assert e != None  # noqa: E711
    assert e != e.to_dict()


def test_event_equality_of_data_is_by_value() -> None:
    assert full_event(data={"a": [1, 2]}) == full_event(data={"a": [1, 2]})
    assert full_event(data={"a": [1, 2]}) != full_event(data={"a": [2, 1]})


# --- repr -----------------------------------------------------------------------------------


def test_event_repr_like_reference() -> None:
    e = full_event()
    assert repr(e) == "Event(id=01HZZZZZ..., type=stage.completed, entity=stage/stage-ab..., seq=42)"


def test_event_repr_short_ids() -> None:
    e = Event(event_id="abc", event_type=EventType.TASK_FAILED, entity_type=EntityType.TASK, entity_id="t")
    assert repr(e) == "Event(id=abc..., type=task.failed, entity=task/t..., seq=0)"


# --- with_sequence --------------------------------------------------------------------------


def test_with_sequence_returns_new_event() -> None:
    e = full_event()
    f = e.with_sequence(1000)
    assert f.sequence == 1000
    assert e.sequence == 42
    assert f is not e
    for name in FIELDS:
        if name != "sequence":
            assert getattr(f, name) == getattr(e, name), name
    assert f == full_event(sequence=1000)


# --- pickle / copy --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_event_pickle_round_trip(protocol: int) -> None:
    e = full_event()
    back = pickle.loads(pickle.dumps(e, protocol=protocol))
    assert type(back) is type(e)
    assert back == e
    assert back.timestamp.microsecond == 654321


def test_event_copy_and_deepcopy() -> None:
    e = full_event()
    c = copy.copy(e)
    d = copy.deepcopy(e)
    assert c == e
    assert d == e
    assert type(c) is type(e) and type(d) is type(e)
    # A deep copy's payload is independent of the original's.
    d.data["outputs"]["n"].append("extra")
    assert e.data["outputs"]["n"] == [1, 2.5, None, "x"]


# --- to_dict / from_dict ----------------------------------------------------------------------


def test_event_to_dict() -> None:
    e = full_event()
    assert e.to_dict() == {
        "event_id": "01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "event_type": "stage.completed",
        "timestamp": "2024-05-06T07:08:09.654321+00:00",
        "sequence": 42,
        "entity_type": "stage",
        "entity_id": "stage-abcdefghij",
        "workflow_id": "wf-xyz",
        "version": 3,
        "data": {"status": "SUCCEEDED", "outputs": {"n": [1, 2.5, None, "x"]}},
        "metadata": {
            "correlation_id": "corr",
            "causation_id": "cause",
            "actor": "alice",
            "source_handler": "H",
        },
        "schema_version": 2,
    }


def test_event_dict_round_trip() -> None:
    e = full_event()
    assert Event.from_dict(e.to_dict()) == e


def test_from_dict_z_suffix_timestamp() -> None:
    e = Event.from_dict({"event_id": "x", "timestamp": "2024-05-06T07:08:09.654321Z"})
    assert e.timestamp == TS
    assert e.timestamp.utcoffset() == timedelta(0)


def test_from_dict_offset_timestamp() -> None:
    e = Event.from_dict({"event_id": "x", "timestamp": "2024-05-06T09:08:09.654321+02:00"})
    assert e.timestamp == TS


def test_from_dict_defaults() -> None:
    before = datetime.now(UTC)
    e = Event.from_dict({})
    assert ULID_RE.match(e.event_id)
    assert e.event_type is EventType.STATUS_CHANGED
    assert e.timestamp >= before - timedelta(milliseconds=1)
    assert e.sequence == 0
    assert e.entity_type is EntityType.WORKFLOW
    assert (e.entity_id, e.workflow_id, e.version) == ("", "", 0)
    assert e.data == {}
    assert e.metadata == EventMetadata(correlation_id="")
    assert e.schema_version == 1


def test_from_dict_accepts_datetime_timestamp() -> None:
    e = Event.from_dict({"event_id": "x", "timestamp": TS})
    assert e.timestamp == TS


def test_from_dict_unknown_event_type() -> None:
    e = Event.from_dict({"event_id": "x", "event_type": "future.thing", "data": {"a": 1}})
    assert e.event_type is EventType.UNKNOWN
    assert e.data == {"a": 1, RAW_EVENT_TYPE: "future.thing"}


def test_from_dict_unknown_entity_type_raises() -> None:
    with pytest.raises(ValueError):
        Event.from_dict({"event_id": "x", "entity_type": "galaxy"})


# --- factories ------------------------------------------------------------------------------


def test_create_workflow_event() -> None:
    e = create_workflow_event(EventType.WORKFLOW_STARTED, "wf-1", 2, {"k": "v"}, MD)
    assert e.event_type is EventType.WORKFLOW_STARTED
    assert e.entity_type is EntityType.WORKFLOW
    assert e.entity_id == "wf-1"
    assert e.workflow_id == "wf-1"
    assert e.version == 2
    assert e.data == {"k": "v"}
    assert e.metadata == MD
    assert e.sequence == 0
    assert ULID_RE.match(e.event_id)


def test_create_stage_event() -> None:
    e = create_stage_event(EventType.STAGE_STARTED, "st-1", "wf-1", 5, {"k": 1}, MD)
    assert e.event_type is EventType.STAGE_STARTED
    assert e.entity_type is EntityType.STAGE
    assert (e.entity_id, e.workflow_id, e.version) == ("st-1", "wf-1", 5)
    assert e.data == {"k": 1}
    assert e.metadata == MD


def test_create_task_event() -> None:
    e = create_task_event(EventType.TASK_RETRIED, "t-1", "wf-1", 7, {}, MD)
    assert e.event_type is EventType.TASK_RETRIED
    assert e.entity_type is EntityType.TASK
    assert (e.entity_id, e.workflow_id, e.version) == ("t-1", "wf-1", 7)
    assert e.data == {}


def test_factories_accept_keywords() -> None:
    e = create_task_event(
        event_type=EventType.TASK_STARTED,
        task_id="t",
        workflow_id="w",
        version=1,
        data={},
        metadata=MD,
    )
    assert e.entity_id == "t"
    s = create_stage_event(
        event_type=EventType.STAGE_STARTED, stage_id="s", workflow_id="w", version=1, data={}, metadata=MD
    )
    assert s.entity_id == "s"
    w = create_workflow_event(
        event_type=EventType.WORKFLOW_CREATED, workflow_id="w", version=1, data={}, metadata=MD
    )
    assert w.entity_id == "w"


# --- enums ----------------------------------------------------------------------------------


def test_event_type_values() -> None:
    assert len(EventType) == 25
    assert EventType("custom.progress") is EventType.CUSTOM
    assert EventType("unknown.event") is EventType.UNKNOWN
    assert {e.value for e in EntityType} == {"workflow", "stage", "task"}


def test_unknown_event_type_event_is_constructible() -> None:
    e = Event(event_type=EventType.UNKNOWN, data={RAW_EVENT_TYPE: "future.thing"})
    assert e.event_type is EventType.UNKNOWN
    assert e.data[RAW_EVENT_TYPE] == "future.thing"
    assert e.to_dict()["event_type"] == "unknown.event"


@pytest.mark.parametrize("typo", ["stage.startd", "STAGE_STARTED", "task-failed", ""])
def test_a_string_that_names_no_event_type_is_refused(typo: str) -> None:
    # A typo must not be stored as an event that reads back as EventType.UNKNOWN.
    with pytest.raises(InvalidArgumentError) as raised:
        Event(event_type=typo)
    assert str(raised.value) == (
        f'event_type "{typo}" is not an event type; pass an EventType member or its value, '
        'such as EventType.STAGE_STARTED or "stage.started"'
    )


def test_a_string_that_names_an_event_type_is_taken_as_its_member() -> None:
    assert Event(event_type="task.failed").event_type is EventType.TASK_FAILED
    unknown = Event(event_type="unknown.event", data={RAW_EVENT_TYPE: "future.thing"})
    assert unknown.event_type is EventType.UNKNOWN


def test_a_member_of_another_enum_is_recorded_and_read_back_as_unknown() -> None:
    # A newer Stabilize's EventType may hold types this build does not know: its events are
    # kept, read back as UNKNOWN with their type string.
    class NewerEventType(Enum):
        TELEPORTED = "stage.teleported"

    store = InMemoryEventStore()
    stored = store.append(Event(event_type=NewerEventType.TELEPORTED, workflow_id="wf", data={"a": 1}))
    got = store.get_event_by_id(stored.event_id)
    assert got is not None
    assert got.event_type is EventType.UNKNOWN
    assert got.data == {"a": 1, RAW_EVENT_TYPE: "stage.teleported"}


def test_stored_event_type_reads_a_rows_type_as_a_store_does(tmp_path: Path) -> None:
    known = {"a": 1}
    assert _core.stored_event_type("task.failed", known) is EventType.TASK_FAILED
    assert known == {"a": 1}
    unknown = {"a": 1}
    assert _core.stored_event_type("future.thing", unknown) is EventType.UNKNOWN
    assert unknown == {"a": 1, RAW_EVENT_TYPE: "future.thing"}
    carried = {RAW_EVENT_TYPE: "older.thing"}
    assert _core.stored_event_type("unknown.event", carried) is EventType.UNKNOWN
    assert carried == {RAW_EVENT_TYPE: "older.thing"}
    # An event built from it is stored under the row's own type string.
    store = SqliteEventStore(sqlite_url(tmp_path / "events.db"))
    data = {"a": 1}
    stored = store.append(Event(event_type=_core.stored_event_type("future.thing", data), data=data))
    got = store.get_event_by_id(stored.event_id)
    assert got is not None and got.event_type is EventType.UNKNOWN
    assert got.data == {"a": 1, RAW_EVENT_TYPE: "future.thing"}
    close_store(store)
    with closing(sqlite3.connect(tmp_path / "events.db")) as db:
        assert db.execute("SELECT event_type FROM event_log").fetchall() == [("future.thing",)]
