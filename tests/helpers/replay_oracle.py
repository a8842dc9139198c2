"""A deliberately plain, pure-Python fold of workflow events: the test oracle for replay.

It restates, independently of the Rust core, the rules by which Stabilize's
``EventReplayer`` turns a workflow's events into a state dict:

- the state has the keys ``workflow_id``, ``status``, ``application``, ``name``,
  ``start_time``, ``end_time`` (ISO strings or None), ``context``, ``stages`` and
  ``tasks``, in that order;
- workflow events set the workflow's fields (``context`` is merged, key by key);
- the first event of a stage or task creates its entry (``id`` plus a few fields
  read from that first event's payload); each later event of the entity updates it;
- an event type that does not belong to its entity type changes nothing, except
  that a stage or task event still creates the entity's entry;
- an event whose schema is newer than ``current_schema_version`` is skipped.

Only `Event` objects are read (``event_type``, ``entity_type``, ``entity_id``,
``timestamp``, ``data``, ``schema_version``). Nothing here is fast, on purpose.

`ListStore` is the other half of the test support: a plain Python `EventStore`
over a list, so that replay over a store that is not one of ours (the
``fold_events`` path) is exercised too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from stabilize_events import EntityType, Event, EventQuery, EventStore, EventType
from stabilize_events.types import CURRENT_SCHEMA_VERSION

#: The payload keys copied into a new stage / task entry, after its ``id``.
STAGE_INTRO_KEYS = ("ref_id", "type", "name")
TASK_INTRO_KEYS = ("name", "stage_id")

_MISSING = object()


def empty_state(workflow_id: str) -> dict[str, Any]:
    """The state of a workflow before any of its events."""
    return {
        "workflow_id": workflow_id,
        "status": None,
        "application": None,
        "name": None,
        "start_time": None,
        "end_time": None,
        "context": {},
        "stages": {},
        "tasks": {},
    }


def _when(event: Event) -> str:
    return event.timestamp.isoformat()


def _merge_context(state: dict[str, Any], data: dict[str, Any]) -> None:
    if "context" in data:
        for key, value in data["context"].items():
            state["context"][key] = value


def _workflow_event(state: dict[str, Any], event: Event) -> None:
    kind, data = event.event_type, event.data
    if kind is EventType.WORKFLOW_CREATED:
        state["application"] = data.get("application")
        state["name"] = data.get("name")
    elif kind is EventType.WORKFLOW_STARTED:
        state["start_time"] = _when(event)
        state["status"] = "RUNNING"
        _merge_context(state, data)
    elif kind in (EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_FAILED):
        state["end_time"] = _when(event)
        fallback = "SUCCEEDED" if kind is EventType.WORKFLOW_COMPLETED else "TERMINAL"
        state["status"] = data.get("status", fallback)
    elif kind is EventType.WORKFLOW_CANCELED:
        state["end_time"] = _when(event)
        state["status"] = "CANCELED"
    elif kind is EventType.WORKFLOW_PAUSED:
        state["status"] = "PAUSED"
    elif kind is EventType.WORKFLOW_RESUMED:
        state["status"] = "RUNNING"
    elif kind is EventType.CONTEXT_UPDATED:
        _merge_context(state, data)


def _entry(table: dict[str, dict[str, Any]], event: Event, intro: tuple[str, ...]) -> dict[str, Any]:
    """The entity's entry in ``table``, made from this event's payload if it is the first."""
    if event.entity_id not in table:
        entry: dict[str, Any] = {"id": event.entity_id}
        for key in intro:
            entry[key] = event.data.get(key)
        table[event.entity_id] = entry
    return table[event.entity_id]


def _finish(entry: dict[str, Any], event: Event, fallback: str) -> None:
    """What completing or failing a stage or task writes."""
    entry["status"] = event.data.get("status", fallback)
    entry["end_time"] = _when(event)


def _stage_event(state: dict[str, Any], event: Event) -> None:
    stage = _entry(state["stages"], event, STAGE_INTRO_KEYS)
    kind, data = event.event_type, event.data
    if kind is EventType.STAGE_STARTED:
        stage["status"] = "RUNNING"
        stage["start_time"] = _when(event)
    elif kind is EventType.STAGE_COMPLETED:
        _finish(stage, event, "SUCCEEDED")
        if "outputs" in data:
            stage["outputs"] = data["outputs"]
    elif kind is EventType.STAGE_FAILED:
        _finish(stage, event, "TERMINAL")
        stage["error"] = data.get("error")
    elif kind is EventType.STAGE_SKIPPED:
        stage["status"] = "SKIPPED"
        stage["skip_reason"] = data.get("reason")
    elif kind is EventType.STAGE_SUSPENDED:
        stage["status"] = "SUSPENDED"
    elif kind is EventType.STAGE_RESUMED:
        stage["status"] = "RUNNING"
    elif kind is EventType.STAGE_CANCELED:
        stage["status"] = "CANCELED"


def _task_event(state: dict[str, Any], event: Event) -> None:
    task = _entry(state["tasks"], event, TASK_INTRO_KEYS)
    kind, data = event.event_type, event.data
    if kind is EventType.TASK_STARTED:
        task["status"] = "RUNNING"
        task["start_time"] = _when(event)
    elif kind is EventType.TASK_COMPLETED:
        _finish(task, event, "SUCCEEDED")
        if "outputs" in data:
            task["outputs"] = data["outputs"]
    elif kind is EventType.TASK_FAILED:
        _finish(task, event, "TERMINAL")
        task["error"] = data.get("error")
    elif kind is EventType.TASK_RETRIED:
        given = data.get("retry_count", _MISSING)
        # Without a count, a retry is one more than the count so far (0 if none).
        task["retry_count"] = task.get("retry_count", 0) + 1 if given is _MISSING else given


def apply(state: dict[str, Any], event: Event) -> None:
    """Fold one event into ``state`` (in place)."""
    if event.entity_type is EntityType.WORKFLOW:
        _workflow_event(state, event)
    elif event.entity_type is EntityType.STAGE:
        _stage_event(state, event)
    elif event.entity_type is EntityType.TASK:
        _task_event(state, event)


def fold(
    workflow_id: str, events: Iterable[Event], current_schema_version: int = CURRENT_SCHEMA_VERSION
) -> dict[str, Any]:
    """The state of ``workflow_id`` after ``events`` (taken in the order given).

    Events of other workflows are the caller's business: every event given is applied,
    except those whose schema is newer than ``current_schema_version``.
    """
    state = empty_state(workflow_id)
    for event in events:
        if event.schema_version <= current_schema_version:
            apply(state, event)
    return state


def typed(value: Any) -> Any:
    """``value`` with every type and every dict's key order made explicit.

    Plain ``==`` says ``1 == 1.0 == True`` and ignores key order; comparing
    ``typed(a) == typed(b)`` does neither, so "exactly the same dict" is checked,
    keys' types included.
    """
    if isinstance(value, dict):
        return ("dict", [(typed(key), typed(item)) for key, item in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    if isinstance(value, float):
        return ("float", repr(value))  # tells 0.0 from -0.0, and nan equals nan
    return (type(value).__name__, value)


class ListStore(EventStore):
    """A minimal event store kept in a Python list (no snapshots, no Rust backend)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, event: Event, connection: Any | None = None) -> Event:
        stored = event.with_sequence(len(self.events) + 1)
        self.events.append(stored)
        return stored

    def append_batch(self, events: list[Event], connection: Any | None = None) -> list[Event]:
        return [self.append(e) for e in events]

    def _matching(self, query: EventQuery) -> list[Event]:
        def keep(e: Event) -> bool:
            return (
                (query.entity_type is None or e.entity_type is query.entity_type)
                and (query.entity_id is None or e.entity_id == query.entity_id)
                and (query.workflow_id is None or e.workflow_id == query.workflow_id)
                and (not query.event_types or e.event_type in query.event_types)
                and (query.from_sequence is None or e.sequence > query.from_sequence)
                and (query.to_sequence is None or e.sequence <= query.to_sequence)
                and (query.from_timestamp is None or e.timestamp >= query.from_timestamp)
                and (query.to_timestamp is None or e.timestamp <= query.to_timestamp)
            )

        return [e for e in self.events if keep(e)]

    def get_events(self, query: EventQuery) -> Iterator[Event]:
        hits = self._matching(query)
        if query.order_by == "timestamp":
            hits.sort(key=lambda e: e.timestamp)
        if not query.ascending:
            hits.reverse()
        return iter(hits[query.offset : query.offset + query.limit])

    def get_events_for_entity(
        self, entity_type: EntityType, entity_id: str, from_version: int = 0
    ) -> list[Event]:
        return [
            e
            for e in self.events
            if e.entity_type is entity_type and e.entity_id == entity_id and e.version > from_version
        ]

    def get_events_for_workflow(self, workflow_id: str, from_sequence: int = 0) -> list[Event]:
        return [e for e in self.events if e.workflow_id == workflow_id and e.sequence > from_sequence]

    def get_current_sequence(self) -> int:
        return len(self.events)

    def get_events_since(self, sequence: int, limit: int = 1000) -> list[Event]:
        return self.events[sequence : sequence + limit]

    def get_event_by_id(self, event_id: str) -> Event | None:
        return next((e for e in self.events if e.event_id == event_id), None)

    def count_events(self, query: EventQuery | None = None) -> int:
        return len(self.events) if query is None else len(self._matching(query))
