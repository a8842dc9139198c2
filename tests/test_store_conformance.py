"""The event store contract, stated once and checked on every store (see conftest.STORE_KINDS).

Query results are checked against a small pure-Python oracle (`expected`) that
implements the documented semantics over the events the test appended.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import BASE_TIME, new_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stabilize_events import (
    AppendResult,
    EntityType,
    Event,
    EventMetadata,
    EventQuery,
    EventStore,
    EventType,
    errors,
)
from stabilize_events.types import RAW_EVENT_TYPE

MakeEvent = Callable[..., Event]


# --- helpers --------------------------------------------------------------------------------


def matches(e: Event, q: EventQuery) -> bool:
    if q.entity_type is not None and e.entity_type is not q.entity_type:
        return False
    if q.entity_id is not None and e.entity_id != q.entity_id:
        return False
    if q.workflow_id is not None and e.workflow_id != q.workflow_id:
        return False
    if q.event_types and e.event_type not in q.event_types:
        return False
    if q.from_sequence is not None and not e.sequence > q.from_sequence:
        return False
    if q.to_sequence is not None and not e.sequence <= q.to_sequence:
        return False
    if q.from_timestamp is not None and not e.timestamp >= q.from_timestamp:
        return False
    if q.to_timestamp is not None and not e.timestamp <= q.to_timestamp:
        return False
    return True


def expected(events: list[Event], q: EventQuery) -> list[Event]:
    """What `get_events(q)` must return, computed from the appended events."""
    hits = [e for e in events if matches(e, q)]
    key = (lambda e: e.sequence) if q.order_by == "sequence" else (lambda e: e.timestamp)
    hits.sort(key=key, reverse=not q.ascending)
    return hits[q.offset : q.offset + q.limit]


def seqs(events: list[Event]) -> list[int]:
    return [e.sequence for e in events]


# A dataset with two workflows, all entity types, several event types, and timestamps whose
# order differs from sequence order (so ordering by timestamp is observable).
WF_A, WF_B = "wf-a", "wf-b"
SPECS: list[tuple[str, EntityType, str, EventType, int, int]] = [
    # workflow, entity_type, entity_id, event_type, version, timestamp offset (seconds)
    (WF_A, EntityType.WORKFLOW, WF_A, EventType.WORKFLOW_CREATED, 1, 50),
    (WF_A, EntityType.WORKFLOW, WF_A, EventType.WORKFLOW_STARTED, 2, 10),
    (WF_A, EntityType.STAGE, "st-1", EventType.STAGE_STARTED, 1, 30),
    (WF_A, EntityType.TASK, "tk-1", EventType.TASK_STARTED, 1, 20),
    (WF_A, EntityType.TASK, "tk-1", EventType.TASK_FAILED, 2, 70),
    (WF_A, EntityType.TASK, "tk-1", EventType.TASK_RETRIED, 3, 40),
    (WF_A, EntityType.TASK, "tk-1", EventType.TASK_COMPLETED, 4, 90),
    (WF_B, EntityType.WORKFLOW, WF_B, EventType.WORKFLOW_CREATED, 1, 0),
    (WF_B, EntityType.STAGE, "st-1", EventType.STAGE_STARTED, 1, 60),  # same id, other workflow
    (WF_B, EntityType.TASK, "st-1", EventType.TASK_STARTED, 1, 80),  # same id, other entity type
    (WF_A, EntityType.STAGE, "st-1", EventType.STAGE_COMPLETED, 2, 100),
    (WF_B, EntityType.STAGE, "st-1", EventType.STAGE_FAILED, 2, 5),
    (WF_A, EntityType.WORKFLOW, WF_A, EventType.WORKFLOW_COMPLETED, 3, 110),
    (WF_B, EntityType.WORKFLOW, WF_B, EventType.WORKFLOW_FAILED, 2, 120),
]


def ts(offset: int) -> datetime:
    return BASE_TIME + timedelta(seconds=offset)


def populate(store: EventStore) -> list[Event]:
    out = []
    for i, (wf, et, eid, typ, ver, off) in enumerate(SPECS):
        e = new_event(
            workflow_id=wf,
            entity_type=et,
            entity_id=eid,
            event_type=typ,
            version=ver,
            timestamp=ts(off),
            data={"i": i},
            metadata=EventMetadata(correlation_id=wf),
        )
        # Half one by one, half in batches, to cover both write paths.
        out.append(e)
    stored = [store.append(e) for e in out[:5]]
    stored += store.append_batch(out[5:9])
    stored += store.append_batch(out[9:])
    assert len(stored) == len(SPECS)
    return stored


# --- the store is an EventStore ----------------------------------------------------------------


def test_is_event_store(store: EventStore) -> None:
    assert isinstance(store, EventStore)


# --- empty store ------------------------------------------------------------------------------


def test_empty_store(store: EventStore) -> None:
    assert store.get_current_sequence() == 0
    assert store.count_events() == 0
    assert store.count_events(EventQuery()) == 0
    assert list(store.get_events(EventQuery())) == []
    assert store.get_events_since(0) == []
    assert store.get_events_for_workflow("wf") == []
    assert store.get_events_for_entity(EntityType.WORKFLOW, "wf") == []
    assert store.get_event_by_id("nope") is None


# --- append -----------------------------------------------------------------------------------


def test_append_assigns_sequence_and_returns_new_event(store: EventStore, make_event: MakeEvent) -> None:
    e = make_event()
    stored = store.append(e)
    assert stored.sequence >= 1
    assert e.sequence == 0, "the input event must not change"
    assert stored == e.with_sequence(stored.sequence)
    assert store.get_current_sequence() == stored.sequence
    assert store.count_events() == 1
    assert store.get_event_by_id(e.event_id) == stored


def test_append_ignores_input_sequence(store: EventStore, make_event: MakeEvent) -> None:
    first = store.append(make_event(sequence=1_000_000))
    assert first.sequence < 1_000_000
    second = store.append(make_event(sequence=1))
    assert second.sequence > first.sequence
    assert store.get_current_sequence() == second.sequence


def test_sequences_strictly_increase(store: EventStore, make_event: MakeEvent) -> None:
    got = [store.append(make_event()).sequence for _ in range(20)]
    assert all(a < b for a, b in itertools.pairwise(got))
    assert store.get_current_sequence() == got[-1]
    assert seqs(store.get_events_since(0)) == got


def test_append_accepts_connection_none(store: EventStore, make_event: MakeEvent) -> None:
    stored = store.append(make_event(), None)
    assert store.append_batch([make_event()], None)[0].sequence == stored.sequence + 1
    assert store.append(make_event(), connection=None).sequence == stored.sequence + 2


def test_append_batch_consecutive_sequences(store: EventStore, make_event: MakeEvent) -> None:
    store.append(make_event())
    batch = [make_event() for _ in range(10)]
    stored = store.append_batch(batch)
    assert isinstance(stored, list)
    assert len(stored) == 10
    first = stored[0].sequence
    assert seqs(stored) == list(range(first, first + 10))
    assert [e.event_id for e in stored] == [e.event_id for e in batch]
    for src, out in zip(batch, stored, strict=True):
        assert out == src.with_sequence(out.sequence)
        assert src.sequence == 0
    assert store.get_current_sequence() == first + 9
    assert list(store.get_events(EventQuery(from_sequence=first - 1))) == stored


def test_append_batch_empty(store: EventStore, make_event: MakeEvent) -> None:
    assert store.append_batch([]) == []
    assert store.count_events() == 0
    assert store.get_current_sequence() == 0


def test_append_batch_accepts_any_sequence_of_events(store: EventStore, make_event: MakeEvent) -> None:
    events = (make_event(), make_event())
    stored = store.append_batch(list(events))
    assert [e.event_id for e in stored] == [e.event_id for e in events]


@pytest.mark.parametrize("bad", [None, "event", 42, {"event_id": "x"}, EventMetadata("c")])
def test_append_non_event_raises_argument_type_error(store: EventStore, bad: Any) -> None:
    with pytest.raises(errors.ArgumentTypeError):
        store.append(bad)
    assert store.count_events() == 0


def test_append_batch_with_non_event_writes_nothing(store: EventStore, make_event: MakeEvent) -> None:
    good1, good2 = make_event(), make_event()
    with pytest.raises(errors.ArgumentTypeError):
        store.append_batch([good1, "not an event", good2])  # type: ignore[list-item]
    assert store.count_events() == 0
    assert store.get_event_by_id(good1.event_id) is None


# --- atomicity and duplicates ---------------------------------------------------------------------


def test_batch_with_bad_payload_in_middle_writes_nothing(store: EventStore, make_event: MakeEvent) -> None:
    before = store.append(make_event())
    batch = [make_event(), make_event(data={"outputs": {"x": {1, 2}}}), make_event()]
    with pytest.raises(errors.PayloadError) as info:
        store.append_batch(batch)
    assert isinstance(info.value, TypeError)
    assert 'data["outputs"]["x"]' in str(info.value)
    assert store.count_events() == 1
    assert store.get_current_sequence() == before.sequence
    for e in batch:
        assert store.get_event_by_id(e.event_id) is None
    # The store still works, and later sequences still increase.
    after = store.append(make_event())
    assert after.sequence > before.sequence
    assert store.count_events() == 2


def test_single_append_with_bad_payload(store: EventStore, make_event: MakeEvent) -> None:
    e = make_event(data={"items": [1, 2, object()]})
    with pytest.raises(errors.PayloadError) as info:
        store.append(e)
    assert 'data["items"][2]' in str(info.value)
    assert store.count_events() == 0
    assert store.get_event_by_id(e.event_id) is None


def test_duplicate_event_id_rejected(store: EventStore, make_event: MakeEvent) -> None:
    e = make_event()
    first = store.append(e)
    with pytest.raises(errors.DuplicateEventError) as info:
        store.append(e)
    assert e.event_id in str(info.value)
    # Same id, otherwise different event: still a duplicate.
    with pytest.raises(errors.DuplicateEventError):
        store.append(make_event(event_id=e.event_id, data={"other": True}))
    assert store.count_events() == 1
    assert store.get_event_by_id(e.event_id) == first
    assert store.get_current_sequence() == first.sequence


def test_batch_with_stored_duplicate_writes_nothing(store: EventStore, make_event: MakeEvent) -> None:
    existing = store.append(make_event())
    batch = [make_event(), make_event(event_id=existing.event_id), make_event()]
    with pytest.raises(errors.DuplicateEventError):
        store.append_batch(batch)
    assert store.count_events() == 1
    assert store.get_event_by_id(batch[0].event_id) is None
    assert store.get_event_by_id(batch[2].event_id) is None
    assert store.get_event_by_id(existing.event_id) == existing


def test_batch_with_internal_duplicate_writes_nothing(store: EventStore, make_event: MakeEvent) -> None:
    a = make_event()
    batch = [a, make_event(), make_event(event_id=a.event_id)]
    with pytest.raises(errors.DuplicateEventError):
        store.append_batch(batch)
    assert store.count_events() == 0
    assert store.get_current_sequence() == 0
    assert store.get_event_by_id(a.event_id) is None


@pytest.mark.parametrize("at", [0, 1, 30, 31, 32, 33, 63, 64, 70, 99])
@pytest.mark.parametrize("twin", ["stored", "in the batch"])
def test_long_batch_names_its_duplicate_and_writes_nothing(
    store: EventStore, make_event: MakeEvent, at: int, twin: str
) -> None:
    # Long enough for a store to write it in parts: the failing part may fall anywhere.
    existing = store.append(make_event())
    batch = [make_event() for _ in range(100)]
    # A twin in the batch sits 7 before (or, near the start, 7 after): in the same part or not.
    original = existing.event_id if twin == "stored" else batch[at - 7 if at >= 7 else at + 7].event_id
    batch[at] = make_event(event_id=original)
    with pytest.raises(errors.DuplicateEventError) as info:
        store.append_batch(batch)
    message = str(info.value)
    assert original in message
    assert all(e.event_id not in message for e in batch if e.event_id != original)
    assert store.count_events() == 1
    assert store.get_current_sequence() == existing.sequence
    assert all(store.get_event_by_id(e.event_id) is None for e in batch if e.event_id != existing.event_id)
    # The store still takes the batch once the duplicate is gone, numbering on from the last.
    batch[at] = make_event()
    stored = store.append_batch(batch)
    assert seqs(stored) == list(range(existing.sequence + 1, existing.sequence + 101))
    assert [e.event_id for e in stored] == [e.event_id for e in batch]
    assert list(store.get_events(EventQuery(limit=1000))) == [existing, *stored]


def test_long_batch_keeps_each_events_workflow_and_metadata(store: EventStore, make_event: MakeEvent) -> None:
    # A store may write rows sharing these fields together: each event must keep its own.
    def meta(correlation: str = "wf-1", actor: str = "system", handler: str | None = "H") -> EventMetadata:
        return EventMetadata(correlation_id=correlation, actor=actor, source_handler=handler)

    batch = [make_event(metadata=meta()) for _ in range(228)]
    # Far apart, so that no two fall among the same few dozen rows; one first of its run.
    odd: dict[int, dict[str, Any]] = {
        40: {"workflow_id": "wf-other"},
        75: {"metadata": meta(correlation="wf-2")},
        110: {"metadata": meta(actor="someone")},
        145: {"metadata": meta(handler=None)},
        180: {"schema_version": 2},
        192: {"metadata": meta(actor="first")},
        226: {"workflow_id": "wf-tail"},
    }
    for i, fields in odd.items():
        batch[i] = make_event(**{"metadata": meta(), **fields})
    stored = store.append_batch(batch)
    assert [(e.event_id, e.workflow_id, e.metadata, e.schema_version) for e in stored] == [
        (e.event_id, e.workflow_id, e.metadata, e.schema_version) for e in batch
    ]
    assert list(store.get_events(EventQuery(limit=1000))) == stored
    assert [e.event_id for e in store.get_events_for_workflow("wf-other")] == [batch[40].event_id]
    assert [e.event_id for e in store.get_events_for_workflow("wf-tail")] == [batch[226].event_id]


def test_expected_version_appends_when_the_entity_is_at_it(store: EventStore, make_event: MakeEvent) -> None:
    first = store.append(make_event(entity_id="stage-v", version=1), expected_version=0)
    second = store.append(make_event(entity_id="stage-v", version=2), expected_version=1)
    assert (first.sequence, second.sequence) == (1, 2)
    batch = store.append_batch(
        [make_event(entity_id="stage-v", version=3), make_event(entity_id="other", version=1)],
        expected_versions={"stage-v": 2, "other": 0},
    )
    assert [e.version for e in store.get_events_for_entity(EntityType.TASK, "stage-v")] == [1, 2, 3]
    assert len(batch) == 2


def test_expected_version_conflict_names_entity_and_versions(
    store: EventStore, make_event: MakeEvent
) -> None:
    store.append(make_event(entity_id="stage-c", version=1))
    store.append(make_event(entity_id="stage-c", version=2))
    with pytest.raises(errors.ConcurrencyError) as info:
        store.append(make_event(entity_id="stage-c", version=2), expected_version=1)
    message = str(info.value)
    assert "stage-c" in message and "version 2" in message and "expected 1" in message
    assert store.count_events() == 2


def test_expected_versions_conflict_writes_nothing_of_the_batch(
    store: EventStore, make_event: MakeEvent
) -> None:
    store.append(make_event(entity_id="a", version=1))
    batch = [make_event(entity_id="b", version=1), make_event(entity_id="a", version=2)]
    with pytest.raises(errors.ConcurrencyError, match="expected 0"):
        store.append_batch(batch, expected_versions={"b": 0, "a": 0})
    assert store.count_events() == 1
    assert store.get_current_sequence() == 1
    assert store.get_events_for_entity(EntityType.TASK, "b") == []


def test_errors_hierarchy() -> None:
    assert issubclass(errors.DuplicateEventError, errors.StoreError)
    assert issubclass(errors.PayloadError, TypeError)
    assert issubclass(errors.ArgumentTypeError, TypeError)
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.SchemaError, errors.StoreOpenError)


# --- round trip -------------------------------------------------------------------------------


def test_every_field_round_trips(store: EventStore) -> None:
    ts_ = datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    e = Event(
        event_id="01HABCDEFGHJKMNPQRSTVWXYZ0",
        event_type=EventType.JUMP_EXECUTED,
        timestamp=ts_,
        sequence=0,
        entity_type=EntityType.STAGE,
        entity_id="stage-ünïcode-'\"; DROP TABLE events; --",
        workflow_id="wf-\u4e2d\u6587",
        version=17,
        data={"target": "st-2", "n": [1, 2.5, None, True, "x"], "nested": {"deep": {"x": b"\x00\xff"}}},
        metadata=EventMetadata(
            correlation_id="corr-1",
            causation_id="cause-1",
            actor="alice@example",
            source_handler="JumpHandler",
        ),
        schema_version=3,
    )
    stored = store.append(e)
    assert stored == e.with_sequence(stored.sequence)
    readers: list[Event | None] = [
        store.get_event_by_id(e.event_id),
        *store.get_events(EventQuery()),
        *store.get_events_since(0),
        *store.get_events_for_workflow(e.workflow_id),
        *store.get_events_for_entity(EntityType.STAGE, e.entity_id),
    ]
    assert len(readers) == 5
    for got in readers:
        assert got is not None
        assert got == stored
        assert got.event_id == e.event_id
        assert got.event_type is EventType.JUMP_EXECUTED
        assert got.entity_type is EntityType.STAGE
        assert got.timestamp == ts_
        assert got.timestamp.microsecond == 999999
        assert got.timestamp.utcoffset() == timedelta(0)
        assert got.version == 17
        assert got.schema_version == 3
        assert got.metadata == EventMetadata("corr-1", "cause-1", "alice@example", "JumpHandler")
        assert got.data == e.data


def test_default_metadata_round_trips(store: EventStore) -> None:
    e = Event(event_id="plain")
    store.append(e)
    got = store.get_event_by_id("plain")
    assert got is not None
    assert got.metadata == EventMetadata(correlation_id="")
    assert got.metadata.causation_id is None
    assert got.metadata.source_handler is None
    assert got.metadata.actor == "system"
    assert got.data == {}
    assert got.entity_id == "" and got.workflow_id == ""


# --- what the reference accepts ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ForeignMetadata:
    """Shaped like `stabilize.events.EventMetadata`."""

    correlation_id: str
    causation_id: str | None = None
    actor: str = "system"
    source_handler: str | None = None


@dataclasses.dataclass(frozen=True)
class ForeignEvent:
    """Shaped like `stabilize.events.Event` (0.33.1), whose ``data`` may be None."""

    event_id: str = "foreign-1"
    event_type: EventType = EventType.TASK_STARTED
    timestamp: datetime = BASE_TIME
    sequence: int = 0
    entity_type: EntityType = EntityType.TASK
    entity_id: str = "task-f"
    workflow_id: str = "wf-f"
    version: int = 1
    data: Any = dataclasses.field(default_factory=dict)
    metadata: ForeignMetadata = dataclasses.field(default_factory=lambda: ForeignMetadata("wf-f"))
    schema_version: int = 1


def test_none_data_is_stored_and_reads_back_empty(store: EventStore) -> None:
    # The reference stores json.dumps(None) ("null") and reads back None; ours reads back {}.
    ours = store.append(Event(event_id="ours-none", data=None))
    assert ours.data == {}
    foreign = store.append(ForeignEvent(data=None))  # type: ignore[arg-type]
    assert foreign.data == {}
    both = store.append_batch([ForeignEvent(event_id="f2", data=None), Event(event_id="o2", data=None)])  # type: ignore[list-item]
    assert [e.data for e in both] == [{}, {}]
    for event_id in ("ours-none", "foreign-1", "f2", "o2"):
        got = store.get_event_by_id(event_id)
        assert got is not None and got.data == {} and type(got.data) is dict, event_id
    assert store.get_event_by_id("foreign-1").entity_id == "task-f"  # type: ignore[union-attr]


def test_foreign_event_payload_with_json_keys_round_trips(store: EventStore) -> None:
    store.append(ForeignEvent(data={1: "one", None: [1, 2], "s": {2.5: True}}))
    got = store.get_event_by_id("foreign-1")
    assert got is not None and got.data == {1: "one", None: [1, 2], "s": {2.5: True}}


class _Level(enum.IntEnum):
    LOW = 1


class _Text(str):
    pass


class _Count(int):
    pass


#: (payload, what reads back): every kind of value and key the reference's json.dumps takes.
JSON_PAYLOADS: list[tuple[str, dict[Any, Any], dict[Any, Any]]] = [
    ("tuple", {"t": (1, (2, "x"))}, {"t": [1, [2, "x"]]}),
    ("nested lists", {"l": [[1, [2, [3, []]]], []]}, {"l": [[1, [2, [3, []]]], []]}),
    ("infinities", {"i": float("inf"), "n": float("-inf")}, {"i": float("inf"), "n": float("-inf")}),
    ("big ints", {"b": 10**30, "n": -(2**64), "d": 10**4000}, {"b": 10**30, "n": -(2**64), "d": 10**4000}),
    ("str subclass", {"s": _Text("x"), _Text("k"): 1}, {"s": "x", "k": 1}),
    ("int subclasses", {"e": _Level.LOW, "c": _Count(4), "t": True}, {"e": 1, "c": 4, "t": True}),
    ("int keys", {1: "a", -2: "b", 2**70: "c"}, {1: "a", -2: "b", 2**70: "c"}),
    ("float keys", {1.5: "a", float("inf"): "b"}, {1.5: "a", float("inf"): "b"}),
    ("bool and None keys", {True: "t", False: "f", None: "n"}, {True: "t", False: "f", None: "n"}),
    ("IntEnum key", {_Level.LOW: "low"}, {1: "low"}),
    ("mixed keys", {"a": {1: [None], "1": {None: {2: 3}}}}, {"a": {1: [None], "1": {None: {2: 3}}}}),
]


def _typed(value: Any) -> Any:
    """``value`` with its types (keys' too) made explicit: 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


@pytest.mark.parametrize(("name", "data", "back"), JSON_PAYLOADS, ids=[c[0] for c in JSON_PAYLOADS])
def test_everything_json_takes_is_stored_and_reads_back_as_stated(
    store: EventStore, make_event: MakeEvent, name: str, data: dict[Any, Any], back: dict[Any, Any]
) -> None:
    # Non-str keys keep their type (the reference's JSON would give {"1": ...}); subclasses read
    # back as the plain type, tuples as lists.
    e = store.append(make_event(data=data))
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert _typed(got.data) == _typed(back)
    (listed,) = [x for x in store.get_events_since(e.sequence - 1, limit=1)]
    assert _typed(listed.data) == _typed(back)


def test_nan_is_stored_as_value_and_key(store: EventStore, make_event: MakeEvent) -> None:
    e = store.append(make_event(data={"v": float("nan"), "k": {float("nan"): 1}}))
    got = store.get_event_by_id(e.event_id)
    assert got is not None and math.isnan(got.data["v"])
    (key,) = got.data["k"]
    assert type(key) is float and math.isnan(key)


def test_key_json_refuses_is_refused_naming_its_place(store: EventStore, make_event: MakeEvent) -> None:
    bad = make_event(data={"outputs": {3: {(1, 2): "x"}}})
    with pytest.raises(errors.PayloadError) as info:
        store.append(bad)
    message = str(info.value)
    assert message.startswith("dict keys must be str, int, float, bool or None"), message
    assert 'at data["outputs"][3]; use str(key)' in message, message
    assert store.count_events() == 0


@pytest.mark.parametrize("micro", [0, 1, 500000, 999999])
def test_timestamp_microseconds_round_trip(store: EventStore, make_event: MakeEvent, micro: int) -> None:
    t = datetime(2024, 2, 29, 1, 2, 3, micro, tzinfo=UTC)
    e = store.append(make_event(timestamp=t))
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert got.timestamp == t
    assert got.timestamp.microsecond == micro
    assert got.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamp_reads_back_as_aware_utc(store: EventStore, make_event: MakeEvent) -> None:
    naive = datetime(2024, 6, 1, 8, 0, 0, 42)
    e = store.append(make_event(timestamp=naive))
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert got.timestamp == naive.replace(tzinfo=UTC)
    assert got.timestamp.utcoffset() == timedelta(0)


def test_offset_timestamp_reads_back_as_same_instant_in_utc(store: EventStore, make_event: MakeEvent) -> None:
    t = datetime(2024, 6, 1, 8, 0, 0, 7, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    e = store.append(make_event(timestamp=t))
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert got.timestamp == t
    assert got.timestamp.utcoffset() == timedelta(0)
    assert got.timestamp.replace(tzinfo=None) == datetime(2024, 6, 1, 13, 30, 0, 7)


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_round_trips(
    store: EventStore, make_event: MakeEvent, event_type: EventType
) -> None:
    data = {RAW_EVENT_TYPE: "x.y"} if event_type is EventType.UNKNOWN else {"k": 1}
    e = store.append(make_event(event_type=event_type, data=data))
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert got.event_type is event_type
    assert got == e


@pytest.mark.parametrize("entity_type", list(EntityType))
def test_every_entity_type_round_trips(
    store: EventStore, make_event: MakeEvent, entity_type: EntityType
) -> None:
    e = store.append(make_event(entity_type=entity_type))
    got = store.get_event_by_id(e.event_id)
    assert got is not None and got.entity_type is entity_type


def test_unknown_event_type_keeps_raw_type(store: EventStore, make_event: MakeEvent) -> None:
    e = make_event(event_type=EventType.UNKNOWN, data={RAW_EVENT_TYPE: "future.kind", "payload": [1]})
    store.append(e)
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert got.event_type is EventType.UNKNOWN
    assert got.data[RAW_EVENT_TYPE] == "future.kind"
    assert got.data["payload"] == [1]


def test_a_type_this_build_does_not_know_reads_back_as_unknown_with_its_name(
    store: EventStore, make_event: MakeEvent
) -> None:
    # Recorded by a newer writer (its own enum's member): read back as UNKNOWN, its name in the
    # payload, whether or not the read holds text a store keeps escaped (NUL, U+E000).
    class NewerEventType(enum.Enum):
        TELEPORTED = "stage.teleported"

    for entity_id in ("plain", "nul\x00in-id", "private\ue000use"):
        e = store.append(make_event(event_type=NewerEventType.TELEPORTED, entity_id=entity_id, data={"n": 1}))
        got = store.get_event_by_id(e.event_id)
        assert got is not None and got.entity_id == entity_id
        assert got.event_type is EventType.UNKNOWN
        assert got.data == {"n": 1, RAW_EVENT_TYPE: "stage.teleported"}


def test_large_payload_round_trips(store: EventStore, make_event: MakeEvent) -> None:
    data = {"blob": b"\x01" * 1_000_000, "rows": [{"i": i, "s": "x" * 50} for i in range(5000)]}
    e = store.append(make_event(data=data))
    got = store.get_event_by_id(e.event_id)
    assert got is not None and got.data == data


def test_read_events_are_independent_copies(store: EventStore, make_event: MakeEvent) -> None:
    e = store.append(make_event(data={"list": [1]}))
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    got.data["list"].append(2)
    again = store.get_event_by_id(e.event_id)
    assert again is not None and again.data == {"list": [1]}


# --- queries ----------------------------------------------------------------------------------


def _queries() -> list[tuple[str, dict[str, Any]]]:
    q: list[tuple[str, dict[str, Any]]] = [
        ("all", {}),
        ("entity_type", {"entity_type": EntityType.TASK}),
        ("entity_id", {"entity_id": "st-1"}),
        ("entity_type+id", {"entity_type": EntityType.STAGE, "entity_id": "st-1"}),
        ("workflow", {"workflow_id": WF_B}),
        ("workflow+entity", {"workflow_id": WF_A, "entity_type": EntityType.STAGE, "entity_id": "st-1"}),
        ("event_types-one", {"event_types": [EventType.TASK_STARTED]}),
        ("event_types-many", {"event_types": [EventType.WORKFLOW_CREATED, EventType.STAGE_FAILED]}),
        ("event_types-empty-means-all", {"event_types": []}),
        ("event_types-none-match", {"event_types": [EventType.JUMP_EXECUTED]}),
        ("from_sequence-exclusive", {"from_sequence": 3}),
        ("to_sequence-inclusive", {"to_sequence": 3}),
        ("sequence-range", {"from_sequence": 2, "to_sequence": 9}),
        ("sequence-range-empty", {"from_sequence": 5, "to_sequence": 5}),
        ("sequence-range-inverted", {"from_sequence": 9, "to_sequence": 2}),
        ("to_sequence-past-end", {"to_sequence": 1000}),
        ("workflow+sequence-range", {"workflow_id": WF_A, "from_sequence": 2, "to_sequence": 9}),
        ("entity+to_sequence", {"entity_id": "st-1", "to_sequence": 6}),
        ("sequence-range+page", {"from_sequence": 2, "to_sequence": 12, "limit": 3, "offset": 2}),
        ("from_sequence-0", {"from_sequence": 0}),
        ("from_timestamp-inclusive", {"from_timestamp": ts(50)}),
        ("to_timestamp-inclusive", {"to_timestamp": ts(50)}),
        ("timestamp-range", {"from_timestamp": ts(10), "to_timestamp": ts(70)}),
        ("timestamp-range-single", {"from_timestamp": ts(40), "to_timestamp": ts(40)}),
        ("timestamp-between-events", {"from_timestamp": ts(41), "to_timestamp": ts(49)}),
        ("descending", {"ascending": False}),
        ("by-timestamp", {"order_by": "timestamp"}),
        ("by-timestamp-desc", {"order_by": "timestamp", "ascending": False}),
        ("limit", {"limit": 3}),
        ("limit-0", {"limit": 0}),
        ("offset", {"offset": 4}),
        ("offset-past-end", {"offset": 100}),
        ("page", {"limit": 4, "offset": 4}),
        ("page-desc", {"limit": 4, "offset": 2, "ascending": False}),
        ("page-by-timestamp", {"order_by": "timestamp", "limit": 5, "offset": 3}),
        (
            "everything",
            {
                "workflow_id": WF_A,
                "event_types": [EventType.TASK_FAILED, EventType.TASK_RETRIED, EventType.TASK_COMPLETED],
                "from_sequence": 4,
                "to_timestamp": ts(90),
                "order_by": "timestamp",
                "ascending": False,
                "limit": 2,
            },
        ),
    ]
    return q


QUERIES = _queries()


@pytest.mark.parametrize(("name", "kwargs"), QUERIES, ids=[n for n, _ in QUERIES])
def test_get_events_query(store: EventStore, name: str, kwargs: dict[str, Any]) -> None:
    stored = populate(store)
    # Sequence bounds in the table are relative to the first stored sequence.
    base = stored[0].sequence - 1
    kw = dict(kwargs)
    for k in ("from_sequence", "to_sequence"):
        if k in kw:
            kw[k] += base
    q = EventQuery(**kw)
    want = expected(stored, q)
    got = list(store.get_events(q))
    assert seqs(got) == seqs(want), name
    assert got == want


@pytest.mark.parametrize(("name", "kwargs"), QUERIES, ids=[n for n, _ in QUERIES])
def test_count_events_query(store: EventStore, name: str, kwargs: dict[str, Any]) -> None:
    stored = populate(store)
    base = stored[0].sequence - 1
    kw = dict(kwargs)
    for k in ("from_sequence", "to_sequence"):
        if k in kw:
            kw[k] += base
    q = EventQuery(**kw)
    # count ignores limit, offset and ordering.
    unpaged = EventQuery(**{**kw, "limit": 10**9, "offset": 0})
    assert store.count_events(q) == len(expected(stored, unpaged)), name


# --- large reads -------------------------------------------------------------------------------
# A file store reads a large query in parts (split_read.rs). Lazily: its first 2,048 rows,
# then the rest in one go, or, when at least 8,192 more rows are expected, cut in two halves
# read at once. Ahead (the store's decode_ahead option, on by default): its first 512 rows, then
# the rest streamed from a second thread while the payloads are decoded. These results cross
# every boundary of those parts, and take every way of reading on, in both modes.

LARGE = 20_000
#: The workflows the large dataset deals its events to, unevenly (see `populate_large`).
LARGE_WORKFLOWS = ("wf-big", "wf-mid", "wf-small")


@functools.cache
def large_events() -> tuple[Event, ...]:
    """20,000 events: wf-big gets 6 in 10, wf-mid 3 in 10, wf-small 1 in 10 (made once)."""
    kinds = [
        EventType.STAGE_STARTED,
        EventType.TASK_STARTED,
        EventType.TASK_COMPLETED,
        EventType.STAGE_COMPLETED,
    ]
    events = []
    for i in range(LARGE):
        wf = LARGE_WORKFLOWS[0 if i % 10 < 6 else 1 if i % 10 < 9 else 2]
        events.append(
            new_event(
                workflow_id=wf,
                entity_type=EntityType.TASK,
                entity_id=f"task-{i % 7}",
                event_type=kinds[i % 4],
                version=i + 1,
                timestamp=ts(i),
                data={"i": i, "status": "SUCCEEDED"},
            )
        )
    return tuple(events)


def populate_large(store: EventStore) -> list[Event]:
    """`large_events` appended to ``store`` in batches; returns them as stored."""
    events = large_events()
    stored: list[Event] = []
    for start in range(0, LARGE, 4_000):
        stored += store.append_batch(events[start : start + 4_000])
    return stored


def _large_queries() -> list[tuple[str, dict[str, Any]]]:
    # Which way each takes on a file store read lazily: "one" (a single read), "rest" (the
    # first part, then the rest in one go) or "halves" (the first part, then two halves at
    # once). Read ahead, every result over 512 rows is streamed in chunks of 256; the first
    # five cross those boundaries.
    return [
        ("limit-511", {"limit": 511}),
        ("limit-512", {"limit": 512}),
        ("limit-513", {"limit": 513}),
        ("limit-768", {"limit": 768}),
        ("limit-1025", {"limit": 1025}),
        ("everything", {"limit": 10**6}),  # halves
        ("limit-2047", {"limit": 2047}),  # one
        ("limit-2048", {"limit": 2048}),  # one
        ("limit-2049", {"limit": 2049}),  # rest
        ("limit-10000", {"limit": 10_000}),  # rest: at most 7,952 more
        ("limit-10300", {"limit": 10_300}),  # halves, cut short by the limit
        ("limit-19999", {"limit": 19_999}),  # halves
        ("offset-and-limit", {"offset": 700, "limit": 15_000}),  # halves
        ("offset-past-first-part", {"offset": 17_000, "limit": 2_500}),  # rest
        ("workflow-big", {"workflow_id": "wf-big", "limit": 10**6}),  # halves: 0.6 of each span
        ("workflow-mid", {"workflow_id": "wf-mid", "limit": 10**6}),  # rest
        ("workflow-small", {"workflow_id": "wf-small", "limit": 10**6}),  # one: 2,000 events
        ("entity", {"entity_id": "task-3", "limit": 10**6}),  # rest
        # rest: half the rows match, so ~8,000 more are expected
        ("event-types", {"event_types": [EventType.TASK_STARTED, EventType.STAGE_COMPLETED], "limit": 10**6}),
        ("sequence-window", {"from_sequence": 100, "to_sequence": 17_100, "limit": 10**6}),  # halves
        ("to-sequence-inside-first-part", {"to_sequence": 400, "limit": 10**6}),  # one
        # halves
        ("timestamp-window", {"from_timestamp": ts(200), "to_timestamp": ts(19_600), "limit": 10**6}),
        ("descending", {"ascending": False, "limit": 12_000}),  # one
        ("by-timestamp", {"order_by": "timestamp", "limit": 12_000}),  # one
    ]


LARGE_QUERIES = _large_queries()


@pytest.mark.parametrize(("name", "kwargs"), LARGE_QUERIES, ids=[n for n, _ in LARGE_QUERIES])
def test_large_queries(store: EventStore, name: str, kwargs: dict[str, Any], read_mode: str) -> None:
    stored = populate_large(store)
    base = stored[0].sequence - 1
    kw = {k: v + base if k in ("from_sequence", "to_sequence") else v for k, v in kwargs.items()}
    q = EventQuery(**kw)
    want = expected(stored, q)
    got = list(store.get_events(q))
    assert seqs(got) == seqs(want), name
    assert got == want
    assert [e.data for e in got] == [e.data for e in want]


def test_large_reads_by_workflow_entity_and_since(store: EventStore, read_mode: str) -> None:
    stored = populate_large(store)
    for wf in LARGE_WORKFLOWS:
        mine = [e for e in stored if e.workflow_id == wf]
        assert store.get_events_for_workflow(wf) == mine
        cut = mine[len(mine) // 3].sequence
        assert store.get_events_for_workflow(wf, cut) == [e for e in mine if e.sequence > cut]
    task = [e for e in stored if e.entity_id == "task-2"]
    assert store.get_events_for_entity(EntityType.TASK, "task-2") == task
    assert store.get_events_for_entity(EntityType.TASK, "task-2", from_version=900) == [
        e for e in task if e.version > 900
    ]
    start = stored[10].sequence
    for limit in (2048, 2049, 10_000, 10_300, 10**6):
        assert store.get_events_since(start, limit=limit) == stored[11 : 11 + limit]


def test_get_events_returns_iterator(store: EventStore) -> None:
    populate(store)
    it = store.get_events(EventQuery(limit=2))
    assert iter(it) is it
    assert len(list(it)) == 2


def test_default_query_limit_is_1000(store: EventStore, make_event: MakeEvent) -> None:
    store.append_batch([make_event() for _ in range(1005)])
    assert len(list(store.get_events(EventQuery()))) == 1000
    assert store.count_events(EventQuery()) == 1005
    assert store.count_events() == 1005


def test_timestamp_filters_compare_instants(store: EventStore) -> None:
    stored = populate(store)
    plus3 = timezone(timedelta(hours=3))
    q = EventQuery(from_timestamp=ts(10).astimezone(plus3), to_timestamp=ts(70).astimezone(plus3))
    assert seqs(list(store.get_events(q))) == seqs(expected(stored, q))
    assert store.count_events(q) == len(
        expected(stored, EventQuery(from_timestamp=ts(10), to_timestamp=ts(70)))
    )


def test_timestamp_filter_microsecond_boundaries(store: EventStore, make_event: MakeEvent) -> None:
    t = datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    e = store.append(make_event(timestamp=t))
    one = timedelta(microseconds=1)
    assert seqs(list(store.get_events(EventQuery(from_timestamp=t)))) == [e.sequence]
    assert seqs(list(store.get_events(EventQuery(to_timestamp=t)))) == [e.sequence]
    assert list(store.get_events(EventQuery(from_timestamp=t + one))) == []
    assert list(store.get_events(EventQuery(to_timestamp=t - one))) == []


@pytest.mark.parametrize("order_by", ["version", "", "SEQUENCE", "sequence; DROP TABLE x", "random"])
def test_bad_order_by_raises(store: EventStore, make_event: MakeEvent, order_by: str) -> None:
    store.append(make_event())
    with pytest.raises(errors.InvalidArgumentError):
        list(store.get_events(EventQuery(order_by=order_by)))
    assert store.count_events() == 1


@pytest.mark.parametrize("entity_type", ["pipeline", "STAGE"])
def test_unknown_entity_type_in_a_query_is_refused(
    store: EventStore, make_event: MakeEvent, entity_type: str
) -> None:
    # Never silently empty: the name is refused with the ones there are.
    stored = store.append(make_event())
    for read in (lambda q: list(store.get_events(q)), store.count_events):
        with pytest.raises(
            errors.InvalidArgumentError, match=f"^EventQuery.entity_type: .{entity_type}. is not"
        ):
            read(EventQuery(entity_type=entity_type))  # type: ignore[arg-type]
    # Its value is taken as the member is.
    by_value = EventQuery(entity_type=stored.entity_type.value)  # type: ignore[arg-type]
    assert [e.event_id for e in store.get_events(by_value)] == [stored.event_id]


def test_append_batch_of_one_event_not_in_a_list_is_refused(store: EventStore, make_event: MakeEvent) -> None:
    for wrong, match in ((make_event(), "not one event.*append_batch\\(\\[event\\]\\)"), ("abc", "not str")):
        with pytest.raises(errors.ArgumentTypeError, match=f"^events must be a list of events, {match}"):
            store.append_batch(wrong)  # type: ignore[arg-type]
    assert store.count_events() == 0


def test_get_events_for_entity(store: EventStore) -> None:
    stored = populate(store)

    def want(et: EntityType, eid: str, from_version: int = 0) -> list[int]:
        return [
            e.sequence
            for e in stored
            if e.entity_type is et and e.entity_id == eid and e.version > from_version
        ]

    got = store.get_events_for_entity(EntityType.TASK, "tk-1")
    assert isinstance(got, list)
    assert seqs(got) == want(EntityType.TASK, "tk-1")
    assert len(got) == 4
    assert seqs(store.get_events_for_entity(EntityType.TASK, "tk-1", 2)) == want(EntityType.TASK, "tk-1", 2)
    assert [e.version for e in store.get_events_for_entity(EntityType.TASK, "tk-1", 2)] == [3, 4]
    assert store.get_events_for_entity(EntityType.TASK, "tk-1", from_version=4) == []
    # "st-1" exists as a STAGE in both workflows and as a TASK in wf-b: the type distinguishes.
    assert seqs(store.get_events_for_entity(EntityType.STAGE, "st-1")) == want(EntityType.STAGE, "st-1")
    assert len(store.get_events_for_entity(EntityType.STAGE, "st-1")) == 4
    assert seqs(store.get_events_for_entity(EntityType.TASK, "st-1")) == want(EntityType.TASK, "st-1")
    assert store.get_events_for_entity(EntityType.WORKFLOW, "st-1") == []
    assert store.get_events_for_entity(EntityType.TASK, "nope") == []


def test_get_events_for_entity_version_zero(store: EventStore, make_event: MakeEvent) -> None:
    # version > from_version: with the default 0, a version-0 event is not returned.
    store.append(make_event(entity_type=EntityType.TASK, entity_id="t", version=0))
    v1 = store.append(make_event(entity_type=EntityType.TASK, entity_id="t", version=1))
    assert store.get_events_for_entity(EntityType.TASK, "t") == [v1]
    assert len(store.get_events_for_entity(EntityType.TASK, "t", from_version=-1)) == 2


def test_get_events_for_workflow(store: EventStore) -> None:
    stored = populate(store)
    a = [e for e in stored if e.workflow_id == WF_A]
    got = store.get_events_for_workflow(WF_A)
    assert isinstance(got, list)
    assert got == a
    cut = a[3].sequence
    assert store.get_events_for_workflow(WF_A, cut) == [e for e in a if e.sequence > cut]
    assert store.get_events_for_workflow(WF_A, from_sequence=a[-1].sequence) == []
    assert store.get_events_for_workflow(WF_B) == [e for e in stored if e.workflow_id == WF_B]
    assert store.get_events_for_workflow("missing") == []


def test_get_events_since(store: EventStore) -> None:
    stored = populate(store)
    assert store.get_events_since(0) == stored
    s = stored[5].sequence
    assert store.get_events_since(s) == stored[6:]
    assert store.get_events_since(s, limit=3) == stored[6:9]
    assert store.get_events_since(s, 1) == stored[6:7]
    assert store.get_events_since(stored[-1].sequence) == []
    assert store.get_events_since(0, limit=0) == []


def test_get_events_since_default_limit(store: EventStore, make_event: MakeEvent) -> None:
    store.append_batch([make_event() for _ in range(1003)])
    assert len(store.get_events_since(0)) == 1000


def test_get_event_by_id(store: EventStore) -> None:
    stored = populate(store)
    for e in stored:
        assert store.get_event_by_id(e.event_id) == e
    assert store.get_event_by_id("") is None
    assert store.get_event_by_id(stored[0].event_id.lower() + "x") is None


def test_count_events_none(store: EventStore) -> None:
    stored = populate(store)
    assert store.count_events() == len(stored)
    assert store.count_events(None) == len(stored)


def test_get_current_sequence(store: EventStore, make_event: MakeEvent) -> None:
    stored = populate(store)
    assert store.get_current_sequence() == max(seqs(stored)) == stored[-1].sequence


def test_sequences_are_unique_across_write_paths(store: EventStore) -> None:
    stored = populate(store)
    s = seqs(stored)
    assert s == sorted(s)
    assert len(set(s)) == len(s)
    # single appends and batches are consecutive when nothing else writes
    assert s == list(range(s[0], s[0] + len(s)))


# --- AppendResult -----------------------------------------------------------------------------


def test_append_result_properties(make_event: MakeEvent) -> None:
    assert AppendResult().first_sequence == 0
    assert AppendResult().last_sequence == 0
    r = AppendResult(events=[make_event(), make_event()], sequences=[7, 8])
    assert (r.first_sequence, r.last_sequence) == (7, 8)


def test_event_query_defaults() -> None:
    q = EventQuery()
    assert (q.limit, q.offset, q.order_by, q.ascending) == (1000, 0, "sequence", True)
    assert q.entity_type is None and q.event_types is None and q.from_timestamp is None


# --- concurrency ------------------------------------------------------------------------------


def _run_threads(n: int, target: Callable[[int], None]) -> None:
    errors_seen: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrapped(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # surfaced below
            errors_seen.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    assert not errors_seen, errors_seen


def test_concurrent_appends_from_threads(store: EventStore) -> None:
    n_threads, per_thread = 8, 200
    results: dict[int, list[Event]] = {}

    def work(i: int) -> None:
        out = []
        for j in range(per_thread):
            out.append(store.append(new_event(workflow_id=f"wf-{i}", version=j + 1, data={"t": i, "j": j})))
        results[i] = out

    _run_threads(n_threads, work)
    all_events = [e for evs in results.values() for e in evs]
    all_seqs = seqs(all_events)
    assert len(all_seqs) == n_threads * per_thread
    assert len(set(all_seqs)) == len(all_seqs), "duplicate sequences"
    for evs in results.values():
        s = seqs(evs)
        assert s == sorted(s) and len(set(s)) == len(s), "a thread's own appends went backwards"
    assert store.count_events() == n_threads * per_thread
    assert store.get_current_sequence() == max(all_seqs)
    stored = store.get_events_since(0, limit=10_000)
    assert seqs(stored) == sorted(all_seqs)
    by_id = {e.event_id: e for e in stored}
    for e in all_events:
        assert by_id[e.event_id] == e
    for i in range(n_threads):
        assert [e.data["j"] for e in store.get_events_for_workflow(f"wf-{i}")] == list(range(per_thread))


def test_concurrent_batches_stay_consecutive(store: EventStore) -> None:
    n_threads, batches, size = 8, 40, 5
    results: list[list[Event]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for _ in range(batches):
            out = store.append_batch([new_event(workflow_id=f"wf-{i}") for _ in range(size)])
            with lock:
                results.append(out)

    _run_threads(n_threads, work)
    assert len(results) == n_threads * batches
    all_seqs: list[int] = []
    for batch in results:
        s = seqs(batch)
        assert s == list(range(s[0], s[0] + size)), f"batch not consecutive: {s}"
        all_seqs += s
    assert len(set(all_seqs)) == len(all_seqs)
    assert store.count_events() == n_threads * batches * size


def _read_while_writing(read: Callable[[], None], writers: int, write: Callable[[int], None]) -> None:
    """Call ``read`` over and over on two threads while ``writers`` threads each run ``write``."""
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            read()

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        _run_threads(writers, write)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)


def test_concurrent_readers_see_consistent_prefix(store: EventStore) -> None:
    problems: list[str] = []

    def read() -> None:
        evs = store.get_events_since(0, limit=100_000)
        s = seqs(evs)
        if s != sorted(s) or len(set(s)) != len(s):
            problems.append(f"unordered read {s[:10]}")
        cur = store.get_current_sequence()
        if s and cur < s[-1]:
            problems.append(f"current_sequence {cur} behind read {s[-1]}")

    def work(i: int) -> None:
        for _ in range(50):
            store.append_batch([new_event(), new_event()])

    _read_while_writing(read, 4, work)
    assert not problems, problems[:5]
    assert store.count_events() == 400


def test_large_reads_during_appends_return_a_gapless_prefix(store: EventStore, read_mode: str) -> None:
    # Each read must return the workflow's events up to some point, every one of them, in
    # order: a file store reads these in parts at different moments (split_read.rs), and
    # nothing of one part may be missing from, or doubled in, another.
    first = store.append_batch([new_event(workflow_id="wf-grow", entity_id=f"t-{i}") for i in range(12_000)])
    reads: list[list[str]] = []
    problems: list[str] = []

    def read() -> None:
        got = store.get_events_for_workflow("wf-grow")
        s = seqs(got)
        if s != sorted(set(s)):
            problems.append(f"unordered or doubled read of {len(s)} events")
        reads.append([e.event_id for e in got])

    def write(_: int) -> None:
        for _batch in range(40):
            store.append_batch([new_event(workflow_id="wf-grow" if k % 2 else "wf-other") for k in range(50)])

    _read_while_writing(read, 2, write)
    assert not problems, problems[:5]
    final = [e.event_id for e in store.get_events_for_workflow("wf-grow")]
    assert final[:12_000] == [e.event_id for e in first]
    assert len(final) == 12_000 + 2 * 40 * 25
    assert reads, "no read ran"
    for ids in reads:
        assert ids == final[: len(ids)], f"a read of {len(ids)} events is not a prefix of the workflow"


def test_threads_reading_fresh_events_share_each_decoded_field(store: EventStore) -> None:
    """Fields decoded on first access are made once per event as every thread sees it."""
    store.append_batch([new_event(data={"n": i, "tags": ["a", i]}) for i in range(300)])
    events = store.get_events_since(0, limit=1000)
    n_threads = 8
    seen: list[list[tuple[int, int, int]]] = [[] for _ in range(n_threads)]

    def work(i: int) -> None:
        # Half the threads walk the events backwards so that first accesses collide.
        order = events if i % 2 else list(reversed(events))
        seen[i] = [(id(e.data), id(e.metadata), id(e.timestamp)) for e in order]
        if i % 2 == 0:
            seen[i].reverse()

    _run_threads(n_threads, work)
    assert all(s == seen[0] for s in seen)
    assert [e.data["n"] for e in events] == list(range(300))


# --- extremes and properties ----------------------------------------------------------------------


EXTREME_TIMES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def test_extreme_timestamps_round_trip_and_order(store: EventStore, make_event: MakeEvent) -> None:
    shuffled = [EXTREME_TIMES[i] for i in (3, 6, 0, 5, 2, 1, 4)]
    stored = store.append_batch([make_event(timestamp=t) for t in shuffled])
    for e in stored:
        got = store.get_event_by_id(e.event_id)
        assert got is not None and got.timestamp == e.timestamp
    by_time = list(store.get_events(EventQuery(order_by="timestamp")))
    assert [e.timestamp for e in by_time] == EXTREME_TIMES
    q = EventQuery(from_timestamp=EXTREME_TIMES[2], to_timestamp=EXTREME_TIMES[4])
    assert [e.timestamp for e in store.get_events(q)] == sorted(EXTREME_TIMES[2:5], key=shuffled.index)
    assert store.count_events(q) == 3


def test_extreme_integers_round_trip(store: EventStore, make_event: MakeEvent) -> None:
    for v in (0, -1, 2**63 - 1, -(2**63)):
        e = store.append(make_event(version=v, schema_version=v))
        got = store.get_event_by_id(e.event_id)
        assert got is not None and (got.version, got.schema_version) == (v, v)


texts = st.text(max_size=40)
event_fields = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from([t for t in EventType if t is not EventType.UNKNOWN]),
        "timestamp": st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
        ),
        "entity_type": st.sampled_from(list(EntityType)),
        "entity_id": texts,
        "workflow_id": texts,
        "version": st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
        "data": st.dictionaries(
            texts,
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts | st.binary(),
                lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4),
                max_leaves=10,
            ),
            max_size=4,
        ),
        "metadata": st.builds(
            EventMetadata,
            correlation_id=texts,
            causation_id=st.none() | texts,
            actor=texts,
            source_handler=st.none() | texts,
        ),
        "schema_version": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=event_fields)
def test_property_any_event_round_trips(store: EventStore, fields: dict[str, Any]) -> None:
    e = Event(**fields)
    stored = store.append(e)
    assert stored == e.with_sequence(stored.sequence)
    got = store.get_event_by_id(e.event_id)
    assert got == stored
    assert got is not None and got.timestamp.utcoffset() == timedelta(0)
    assert store.get_events_for_entity(e.entity_type, e.entity_id, from_version=e.version - 1)[-1] == stored
    assert store.get_events_for_workflow(e.workflow_id)[-1] == stored
