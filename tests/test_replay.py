"""Replay: the Rust fold against a pure-Python oracle (tests/helpers/replay_oracle.py), time travel,
`compare_states`, entity history, checkpoint replay, unknown workflows and bad arguments.

The property tests generate random valid streams (every event type, on its own or on a
mismatched entity, payload keys present or absent, statuses, outputs, contexts, retries,
events of another workflow interleaved, timestamps out of order and in several zones, a
few events of a newer schema) and fold them through each store kind: SQLite on a file,
SQLite in memory, `InMemoryEventStore` (the streaming scans in Rust) and `ListStore` (a
Python `EventStore`, folded by ``_core.fold_events``). Every state is compared to the
oracle's with types and key order made explicit (`typed`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    KINDS_WITH_LIST_STORE,
    POSTGRES_URL_VAR,
    STORE_KINDS,
    new_store,
    open_unique,
)
from helpers.replay_oracle import ListStore, empty_state, fold, typed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventStore,
    EventType,
    errors,
)
from stabilize_events.replay import EventReplayer, ReplayResult, WorkflowState
from stabilize_events.store.native import NativeEventStore

WF = "wf-main"
OTHER = "wf-other"
STAGES = ("s0", "s1", "s2")
TASKS = ("t0", "t1", "t2")
STATUSES = ("RUNNING", "SUCCEEDED", "TERMINAL", "FAILED_CONTINUE", "CANCELED", "SKIPPED", None)
EVENT_TYPES = [t for t in EventType if t is not EventType.UNKNOWN]
BASE = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
#: Stream start times: an ordinary one, one just before the epoch (negative microseconds),
#: one close to the end of `datetime`'s range.
BASES = (BASE, datetime(1969, 12, 31, 23, 59, 30, 5, tzinfo=UTC), datetime(9999, 12, 31, 23, 58, tzinfo=UTC))
ZONES = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)))
META = EventMetadata(correlation_id=WF, source_handler="ReplayTest")


def same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal values, equal types, equal key order."""
    assert typed(actual) == typed(expected), f"\nactual:   {actual}\nexpected: {expected}"


def natural_entity(event_type: EventType) -> EntityType:
    prefix = event_type.value.split(".")[0]
    return {"stage": EntityType.STAGE, "task": EntityType.TASK}.get(prefix, EntityType.WORKFLOW)


# --- strategies ----------------------------------------------------------------------------

json_keys = st.text(max_size=4) | st.integers() | st.none() | st.booleans() | st.floats(allow_nan=False)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=4)
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_keys, inner, max_size=3),
    max_leaves=6,
)
# Keys that are not strings too (json.dumps takes them; payloads keep their type), which the
# fold keeps in a context apart from its string keys; 1, 1.0 and True are one key, as in Python.
context_keys = (
    st.sampled_from(["a", "b", "progress", "ü", 1, 0, None, True, 1.0, -2.5])
    | st.text(max_size=4)
    | st.integers(-3, 3)
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "application": st.text(max_size=6),
        "name": st.text(max_size=6) | st.none(),
        "type": st.sampled_from(["python", "shell"]),
        "ref_id": st.text(max_size=4) | st.none(),
        "stage_id": st.sampled_from(STAGES),
        "status": st.sampled_from(STATUSES),
        "outputs": values,
        "error": values,
        "reason": values,
        # Any number: a retry without a count adds one to it (None or text would not be valid).
        "retry_count": st.integers(0, 1000) | st.integers() | st.floats(allow_nan=False) | st.booleans(),
        "context": st.dictionaries(context_keys, values, max_size=3),
        "extra": values,
    },
)


@st.composite
def event_kwargs(draw: st.DrawFn, base: datetime) -> dict[str, Any]:
    """Keyword arguments of one `Event` of a random stream starting at ``base``."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    natural = natural_entity(event_type)
    entity_type = draw(st.sampled_from([natural] * 4 + list(EntityType)))
    workflow_id = draw(st.sampled_from([WF, WF, WF, OTHER]))
    entity_id = {
        EntityType.WORKFLOW: workflow_id,
        EntityType.STAGE: draw(st.sampled_from(STAGES)),
        EntityType.TASK: draw(st.sampled_from(TASKS)),
    }[entity_type]
    offset = draw(st.integers(0, 50_000_000))
    if draw(st.booleans()):
        offset -= (base.microsecond + offset) % 1_000_000  # a whole second: no fraction in the ISO form
    moment = base + timedelta(microseconds=offset)
    if base is BASE:
        moment = moment.astimezone(draw(st.sampled_from(ZONES)))
    return {
        "event_type": event_type,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "workflow_id": workflow_id,
        "timestamp": moment,
        "version": draw(st.integers(0, 3)),
        "data": draw(payloads),
        "metadata": META,
        "schema_version": draw(st.sampled_from([1] * 12 + [2])),
    }


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40) -> list[Event]:
    base = draw(st.sampled_from(BASES))
    return [Event(**kw) for kw in draw(st.lists(event_kwargs(base), max_size=max_size))]


def stocked(kind: str, tmp_path: Path, events: list[Event], opened: list[EventStore]) -> list[Event]:
    store = new_store(kind, tmp_path, opened)
    return store.append_batch(events) if events else []


def instants(stored: list[Event]) -> list[datetime]:
    """Instants worth asking about: each event's time and a microsecond either side of it,
    one before the first event and one after the last."""
    if not stored:
        return [BASE]
    times = sorted({e.timestamp for e in stored})
    one = timedelta(microseconds=1)
    around = [t + d for t in times for d in (-one, timedelta(0), one)]
    return [times[0] - timedelta(seconds=1), *around, times[-1] + timedelta(seconds=1)]


def in_zone(moment: datetime, data: st.DataObject) -> datetime:
    """The same instant in a random zone (kept in UTC where that zone's wall clock would overflow)."""
    try:
        return moment.astimezone(data.draw(st.sampled_from(ZONES), label="zone"))
    except OverflowError:
        return moment


#: A key missing from one side of a comparison.
ABSENT = object()


def leaf_changes(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, old, new) of every leaf that differs between two states (dicts walked by key);
    a key on one side only gives `ABSENT` on the other."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in dict.fromkeys([*before, *after]):
            child = f"{path}.{key}" if path else str(key)
            out += leaf_changes(before.get(key, ABSENT), after.get(key, ABSENT), child)
        return out
    if before is ABSENT or after is ABSENT:
        return [] if before is after else [(path, before, after)]
    return [] if before == after else [(path, before, after)]


# --- the fold, now and in the past ---------------------------------------------------------

PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
@PROPERTY
@given(events=streams(), data=st.data())
def test_fold_equals_oracle(
    kind: str, tmp_path: Path, opened: list[EventStore], events: list[Event], data: st.DataObject
) -> None:
    stored = stocked(kind, tmp_path, events, opened)
    store = opened[-1]
    mine = [e for e in stored if e.workflow_id == WF]
    replayer = EventReplayer(store)

    same_state(replayer.rebuild_workflow_state(WF), fold(WF, mine))

    result = replayer.replay(WF)
    newer = [(e.event_id, e.schema_version) for e in mine if e.schema_version > 1]
    assert result.events_replayed == len(mine) - len(newer)
    assert result.skipped_newer == newer
    assert result.skipped_corrupt == []
    assert not result.from_snapshot
    assert result.last_sequence == max((e.sequence for e in mine), default=0)
    assert (result.entity_type, result.entity_id) == (EntityType.WORKFLOW, WF)

    last = max((e.sequence for e in stored), default=0)
    seq = data.draw(st.integers(0, last + 2), label="as_of_sequence")
    same_state(
        replayer.rebuild_workflow_state(WF, as_of_sequence=seq),
        fold(WF, [e for e in mine if e.sequence <= seq]),
    )

    moments = instants(stored)
    moment = in_zone(data.draw(st.sampled_from(moments), label="as_of_time"), data)
    expected = fold(WF, [e for e in mine if e.timestamp <= moment])
    same_state(replayer.time_travel_query(WF, moment), expected)
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    same_state(replayer.time_travel_query(WF, naive), expected)
    # Before the first event: the empty state; after the last: the current state.
    same_state(replayer.time_travel_query(WF, moments[0]), empty_state(WF))
    same_state(replayer.time_travel_query(WF, moments[-1]), fold(WF, mine))


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
@PROPERTY
@given(events=streams(max_size=25), data=st.data())
def test_compare_history_checkpoint(
    kind: str, tmp_path: Path, opened: list[EventStore], events: list[Event], data: st.DataObject
) -> None:
    stored = stocked(kind, tmp_path, events, opened)
    store = opened[-1]
    mine = [e for e in stored if e.workflow_id == WF]
    replayer = EventReplayer(store)
    last = max((e.sequence for e in stored), default=0)

    s1 = data.draw(st.integers(0, last + 1), label="sequence1")
    s2 = data.draw(st.integers(0, last + 1), label="sequence2")
    compared = replayer.compare_states(WF, s1, s2)
    before = fold(WF, [e for e in mine if e.sequence <= s1])
    after = fold(WF, [e for e in mine if e.sequence <= s2])
    same_state(compared["before"], before)
    same_state(compared["after"], after)
    assert compared["sequence_range"] == {"from": s1, "to": s2}
    changes: list[str] = compared["changes"]
    differing = leaf_changes(before, after)
    # Every change listed is a real one, and every real one is listed (a key present on one
    # side only counts, even when its value is None).
    assert len(changes) == len(differing), (changes, differing)
    for path, _old, _new in differing:
        assert any(line.startswith(f"{path}: ") for line in changes), (path, changes)

    # Entity history: every event of the entity (any workflow) with version > 0, as dicts, in order.
    entity_type = data.draw(st.sampled_from(list(EntityType)), label="entity_type")
    entity_id = data.draw(st.sampled_from([WF, OTHER, *STAGES, *TASKS]), label="entity_id")
    history = replayer.get_entity_history(entity_type, entity_id)
    assert history == [
        e.to_dict()
        for e in stored
        if e.entity_type is entity_type and e.entity_id == entity_id and e.version > 0
    ]

    # Checkpoint replay: each later event of the workflow, in order, to the handler.
    checkpoint = data.draw(st.integers(0, last + 1), label="checkpoint")
    seen: list[Event] = []
    replayer.replay_workflow_from_checkpoint(WF, checkpoint, seen.append)
    assert [(e.event_id, e.sequence) for e in seen] == [
        (e.event_id, e.sequence) for e in mine if e.sequence > checkpoint
    ]
    assert [e.data for e in seen] == [e.data for e in mine if e.sequence > checkpoint]


# --- fixed examples ------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def ev(event_type: EventType, entity_id: str = WF, t: float = 0, **data: Any) -> Event:
    return Event(
        event_type=event_type,
        entity_type=natural_entity(event_type),
        entity_id=entity_id,
        workflow_id=WF,
        timestamp=at(t),
        version=1,
        data=data,
        metadata=META,
    )


STORY = [
    ev(EventType.WORKFLOW_CREATED, application="app", name="deploy"),
    ev(EventType.WORKFLOW_STARTED, t=1, context={"env": "prod"}),
    ev(EventType.STAGE_STARTED, "s1", t=2, ref_id="r1", type="python", name="build"),
    ev(EventType.TASK_STARTED, "t1", t=3, name="compile", stage_id="s1"),
    ev(EventType.TASK_RETRIED, "t1", t=4),
    ev(EventType.TASK_RETRIED, "t1", t=5),
    ev(EventType.TASK_COMPLETED, "t1", t=6.5, outputs={"artifact": "a.whl"}),
    ev(EventType.CONTEXT_UPDATED, t=7, context={"env": "staging", "n": 1}),
    ev(EventType.STAGE_COMPLETED, "s1", t=8, status="SUCCEEDED", outputs={"ok": True}),
    ev(EventType.WORKFLOW_COMPLETED, t=9),
]

STORY_FINAL = {
    "workflow_id": WF,
    "status": "SUCCEEDED",
    "application": "app",
    "name": "deploy",
    "start_time": "2024-03-01T12:00:01.123456+00:00",
    "end_time": "2024-03-01T12:00:09.123456+00:00",
    "context": {"env": "staging", "n": 1},
    "stages": {
        "s1": {
            "id": "s1",
            "ref_id": "r1",
            "type": "python",
            "name": "build",
            "status": "SUCCEEDED",
            "start_time": "2024-03-01T12:00:02.123456+00:00",
            "end_time": "2024-03-01T12:00:08.123456+00:00",
            "outputs": {"ok": True},
        }
    },
    "tasks": {
        "t1": {
            "id": "t1",
            "name": "compile",
            "stage_id": "s1",
            "status": "SUCCEEDED",
            "start_time": "2024-03-01T12:00:03.123456+00:00",
            "retry_count": 2,
            "end_time": "2024-03-01T12:00:06.623456+00:00",
            "outputs": {"artifact": "a.whl"},
        }
    },
}


@pytest.fixture(params=KINDS_WITH_LIST_STORE)
def story_store(request: pytest.FixtureRequest, tmp_path: Path, opened: list[EventStore]) -> EventStore:
    store = open_unique(str(request.param), tmp_path)
    opened.append(store)
    store.append_batch(STORY)
    return store


def test_story_exact_state(story_store: EventStore) -> None:
    replayer = EventReplayer(story_store)
    state = replayer.rebuild_workflow_state(WF)
    same_state(state, STORY_FINAL)
    same_state(state, fold(WF, STORY))
    # A whole-second instant has no fractional part, as datetime.isoformat() writes it.
    store = story_store
    store.append(
        Event(
            event_type=EventType.STAGE_STARTED,
            entity_type=EntityType.STAGE,
            entity_id="s2",
            workflow_id=WF,
            timestamp=datetime(2024, 3, 1, 13, 0, 0, tzinfo=UTC),
            data={},
        )
    )
    assert replayer.rebuild_workflow_state(WF)["stages"]["s2"]["start_time"] == "2024-03-01T13:00:00+00:00"


def test_story_time_travel(story_store: EventStore) -> None:
    replayer = EventReplayer(story_store)
    same_state(replayer.time_travel_query(WF, at(-1)), empty_state(WF))
    same_state(replayer.time_travel_query(WF, at(100)), STORY_FINAL)
    mid = replayer.time_travel_query(WF, at(6.5))  # inclusive: the task's completion counts
    assert mid["tasks"]["t1"]["status"] == "SUCCEEDED"
    assert mid["stages"]["s1"]["status"] == "RUNNING"
    assert mid["context"] == {"env": "prod"}
    just_before = replayer.time_travel_query(WF, at(6.5) - timedelta(microseconds=1))
    assert just_before["tasks"]["t1"]["status"] == "RUNNING"
    same_state(replayer.rebuild_workflow_state(WF, as_of_sequence=0), empty_state(WF))
    same_state(replayer.rebuild_workflow_state(WF, as_of_sequence=10**12), STORY_FINAL)


def test_story_compare_states(story_store: EventStore) -> None:
    seqs = {e.event_type: e.sequence for e in story_store.get_events_for_workflow(WF)}
    compared = EventReplayer(story_store).compare_states(
        WF, seqs[EventType.CONTEXT_UPDATED], seqs[EventType.STAGE_COMPLETED]
    )
    changes = sorted(compared["changes"])
    assert [c.split(": ", 1)[0] for c in changes] == [
        "stages.s1.end_time",
        "stages.s1.outputs",
        "stages.s1.status",
    ]
    status_line = changes[-1]
    assert status_line.replace("'", "") == "stages.s1.status: RUNNING -> SUCCEEDED"
    assert compared["sequence_range"] == {
        "from": seqs[EventType.CONTEXT_UPDATED],
        "to": seqs[EventType.STAGE_COMPLETED],
    }
    same = EventReplayer(story_store).compare_states(WF, 3, 3)
    assert same["changes"] == [] and same["before"] == same["after"]


def test_compare_states_key_added_as_none() -> None:
    store = ListStore()
    store.append_batch(
        [ev(EventType.WORKFLOW_STARTED), ev(EventType.CONTEXT_UPDATED, t=1, context={"k": None})]
    )
    compared = EventReplayer(store).compare_states(WF, 1, 2)
    assert compared["before"] != compared["after"]
    assert [line.split(": ", 1)[0] for line in compared["changes"]] == ["context.k"]
    assert "<absent>" in compared["changes"][0]


@pytest.mark.parametrize("first", [1.5, True, 2**63 - 1, 2**70])
def test_retry_without_count_adds_one_to_any_number(first: Any) -> None:
    store = ListStore()
    store.append_batch(
        [ev(EventType.TASK_RETRIED, "t1", retry_count=first), ev(EventType.TASK_RETRIED, "t1")]
    )
    events = store.get_events_for_workflow(WF)
    state = EventReplayer(store).rebuild_workflow_state(WF)
    same_state(state, fold(WF, events))
    assert state["tasks"]["t1"]["retry_count"] == first + 1


def test_other_workflows_do_not_leak(story_store: EventStore) -> None:
    # Another workflow whose ids collide with ours must not leak into our state.
    story_store.append_batch(
        [
            Event(
                event_type=e.event_type,
                entity_type=e.entity_type,
                entity_id=e.entity_id,
                workflow_id=OTHER,
                timestamp=e.timestamp,
                data={"status": "TERMINAL", "name": "intruder"},
            )
            for e in STORY
        ]
    )
    same_state(EventReplayer(story_store).rebuild_workflow_state(WF), STORY_FINAL)


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_unknown_workflow_is_empty(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(STORY)
    replayer = EventReplayer(store)
    same_state(replayer.rebuild_workflow_state("nope"), empty_state("nope"))
    same_state(replayer.rebuild_workflow_state("nope", as_of_sequence=5), empty_state("nope"))
    same_state(replayer.time_travel_query("nope", at(100)), empty_state("nope"))
    assert replayer.compare_states("nope", 1, 5)["changes"] == []
    assert replayer.get_entity_history(EntityType.STAGE, "nope") == []
    seen: list[Event] = []
    replayer.replay_workflow_from_checkpoint("nope", 0, seen.append)
    assert seen == []
    result = replayer.replay("nope")
    assert (result.events_replayed, result.last_sequence, result.from_snapshot) == (0, 0, False)


def test_native_stores_fold_without_event_objects(tmp_path: Path, opened: list[EventStore]) -> None:
    """The built-in stores fold their rows directly: their Event-returning reads are not used."""
    for kind in STORE_KINDS:
        if kind == "postgres" and not os.environ.get(POSTGRES_URL_VAR):
            continue  # tests/test_postgres.py and the conformance suite skip, naming the variable
        store = new_store(kind, tmp_path, opened)
        store.append_batch(STORY)
        # PostgreSQL streams its rows into the Rust fold itself (fold_workflow).
        assert isinstance(store, NativeEventStore) or kind == "postgres"

        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("replay built Event objects")

        for name in ("get_events_for_workflow", "get_events", "get_events_since"):
            setattr(store, name, refuse)
        replayer = EventReplayer(store)
        same_state(replayer.rebuild_workflow_state(WF), STORY_FINAL)
        same_state(replayer.time_travel_query(WF, at(100)), STORY_FINAL)


def test_result_and_state_types() -> None:
    assert WorkflowState("w").to_dict() == empty_state("w")
    start = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert WorkflowState("w", start_time=start).to_dict()["start_time"] == "2024-01-02T03:04:05+00:00"
    result = ReplayResult(EntityType.WORKFLOW, "w")
    assert (result.events_replayed, result.from_snapshot, result.snapshot_sequence) == (0, False, 0)
    assert result.final_state == {}


# --- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_bad_sequences(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(STORY)
    replayer = EventReplayer(store)
    for bad in (-1, -(2**70)):
        with pytest.raises(errors.InvalidArgumentError, match="as_of_sequence"):
            replayer.rebuild_workflow_state(WF, as_of_sequence=bad)
        with pytest.raises(errors.InvalidArgumentError):
            replayer.compare_states(WF, bad, 3)
        with pytest.raises(errors.InvalidArgumentError, match="checkpoint_sequence"):
            replayer.replay_workflow_from_checkpoint(WF, bad, print)
    wrongs: tuple[Any, ...] = (True, False, "3", 2.0, [1])
    for wrong in wrongs:
        with pytest.raises(errors.ArgumentTypeError, match="as_of_sequence"):
            replayer.rebuild_workflow_state(WF, as_of_sequence=wrong)
        with pytest.raises(errors.ArgumentTypeError):
            replayer.compare_states(WF, 1, wrong)
        with pytest.raises(errors.ArgumentTypeError, match="checkpoint_sequence"):
            replayer.replay_workflow_from_checkpoint(WF, wrong, print)
    for wrong_time in ("2024-03-01T12:00:00Z", 1709294400, None):
        with pytest.raises(errors.ArgumentTypeError, match="as_of_time"):
            replayer.time_travel_query(WF, wrong_time)  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError, match="workflow_id"):
        replayer.rebuild_workflow_state(42)  # type: ignore[arg-type]
    # The errors are also the builtin exceptions callers expect.
    with pytest.raises(ValueError):
        replayer.rebuild_workflow_state(WF, as_of_sequence=-1)
    with pytest.raises(TypeError):
        replayer.rebuild_workflow_state(WF, as_of_sequence="1")  # type: ignore[arg-type]


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with a local time zone far from UTC, so 'naive means local' would show."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available")
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_naive_as_of_time_is_utc(
    kind: str, tmp_path: Path, opened: list[EventStore], local_zone_not_utc: None
) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(STORY)
    replayer = EventReplayer(store)
    for seconds in (-1, 1, 2.5, 6.5, 100):
        aware = at(seconds)
        naive = aware.replace(tzinfo=None)
        expected = fold(WF, [e for e in STORY if e.timestamp <= aware])
        same_state(replayer.time_travel_query(WF, naive), expected)
        same_state(replayer.replay(WF, as_of_time=naive).final_state, expected)
