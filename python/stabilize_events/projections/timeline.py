"""`WorkflowTimelineProjection`: a readable, ordered timeline of one workflow.

Every event of the workflow becomes a `TimelineEntry` (except the internal
``status.changed``, ``context.updated`` and ``outputs.updated``), carrying the
entity's name, status, duration and a few event-specific details. The
workflow's own start, end, final status and total duration are kept on the
`WorkflowTimeline`. Results equal those of ``stabilize.events``' projection for
the same events.

What each event type does is decided once, in a table built at import
(`_RULES`), so that ``apply`` does one lookup per event instead of testing
the type against several sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

from stabilize_events.projections.base import Projection
from stabilize_events.types import EntityType, EventType

if TYPE_CHECKING:
    from stabilize_events._core import Event


class _Details:
    """The ``details`` field of `TimelineEntry`: a dict made on first access when none was given.

    Most entries have no details; not allocating an empty dict for each of them
    halves the objects a timeline keeps alive for the garbage collector to scan.
    The dict lives in the entry's ``_details`` attribute.
    """

    @overload
    def __get__(self, entry: None, owner: type) -> None: ...
    @overload
    def __get__(self, entry: object, owner: type | None = None) -> dict[str, Any]: ...
    def __get__(self, entry: Any, owner: type | None = None) -> dict[str, Any] | None:
        if entry is None:
            return None  # the field's default, as the dataclass machinery reads it
        details: dict[str, Any] | None = entry._details
        if details is None:
            details = entry._details = {}
        return details

    def __set__(self, entry: Any, value: dict[str, Any] | None) -> None:
        entry._details = value


@dataclass
class TimelineEntry:
    """One line of a timeline: what happened to which entity, and when."""

    timestamp: datetime
    event_type: str
    entity_type: str
    entity_id: str
    entity_name: str | None = None
    status: str | None = None
    duration_ms: int | None = None
    details: _Details = _Details()

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready values (the timestamp in ISO 8601)."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "event_type": self.event_type,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "entity_name": self.entity_name,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "details": self.details,
        }


@dataclass(slots=True)
class WorkflowTimeline:
    """The timeline of one workflow run, with its overall status and duration."""

    workflow_id: str
    entries: list[TimelineEntry] = field(default_factory=list)
    total_duration_ms: int | None = None
    status: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The timeline as JSON-ready values (times in ISO 8601)."""
        return {
            "workflow_id": self.workflow_id,
            "entries": [entry.to_dict() for entry in self.entries],
            "total_duration_ms": self.total_duration_ms,
            "status": self.status,
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "end_time": self.end_time.isoformat() if self.end_time else None,
        }


# What the workflow-level state does with an event of the workflow entity.
_WF_NONE, _WF_START, _WF_END = 0, 1, 2


# How the timeline treats one event type, as a plain tuple so ``apply`` can
# unpack it in one step:
# (type value, records a start?, computes a duration?, detail keys, has an entry?, workflow action)
_Rule = tuple[str, bool, bool, tuple[str, ...], bool, int]


_STARTS = {EventType.WORKFLOW_STARTED, EventType.STAGE_STARTED, EventType.TASK_STARTED}
_ENDS = {
    EventType.WORKFLOW_COMPLETED,
    EventType.WORKFLOW_FAILED,
    EventType.STAGE_COMPLETED,
    EventType.STAGE_FAILED,
    EventType.TASK_COMPLETED,
    EventType.TASK_FAILED,
}
_DETAILS: dict[EventType, tuple[str, ...]] = {
    EventType.WORKFLOW_CREATED: ("application", "type", "stage_count"),
    EventType.STAGE_STARTED: ("type", "is_synthetic", "task_count"),
    EventType.STAGE_FAILED: ("error",),
    EventType.TASK_FAILED: ("error",),
    EventType.STAGE_SKIPPED: ("reason",),
}
#: Internal bookkeeping events that would only clutter a human-readable timeline.
_NO_ENTRY = {EventType.STATUS_CHANGED, EventType.CONTEXT_UPDATED, EventType.OUTPUTS_UPDATED}
_WORKFLOW_ACTIONS = {
    EventType.WORKFLOW_STARTED: _WF_START,
    EventType.WORKFLOW_COMPLETED: _WF_END,
    EventType.WORKFLOW_FAILED: _WF_END,
    EventType.WORKFLOW_CANCELED: _WF_END,
}

# Keyed by the type's string value: an enum member hashes through a
# Python-level ``__hash__``, a str through its cached hash.
_RULES: dict[str, _Rule] = {
    t.value: (
        t.value,
        t in _STARTS,
        t in _ENDS,
        _DETAILS.get(t, ()),
        t not in _NO_ENTRY,
        _WORKFLOW_ACTIONS.get(t, _WF_NONE),
    )
    for t in EventType
}
_WORKFLOW_ENTITY = EntityType.WORKFLOW.value

_STAGE = EntityType.STAGE.value
_TASK = EntityType.TASK.value
_FAILURE_TYPES = frozenset({"stage.failed", "task.failed", "workflow.failed", "workflow.canceled"})


def _elapsed_ms(start: datetime, end: datetime) -> int:
    # Float seconds times 1000, truncated: the reference's arithmetic, kept so
    # durations agree with it to the millisecond.
    return int((end - start).total_seconds() * 1000)


class WorkflowTimelineProjection(Projection):
    """Builds the `WorkflowTimeline` of one workflow from its events.

    Events of other workflows are ignored. An event whose stored sequence was
    already applied is ignored too, so the projection can be fed by both a
    catch-up read and the live bus. Events without a sequence (0: never stored)
    are always applied.
    """

    def __init__(self, workflow_id: str) -> None:
        """A timeline for the workflow ``workflow_id``."""
        self._workflow_id = workflow_id
        self._timeline = WorkflowTimeline(workflow_id=workflow_id)
        self._start_times: dict[str, datetime] = {}
        self._applied: set[int] = set()

    @property
    def name(self) -> str:
        """``workflow-timeline-<workflow id>``."""
        return f"workflow-timeline-{self._workflow_id}"

    @property
    def workflow_id(self) -> str:
        """The workflow this timeline follows."""
        return self._workflow_id

    def handles_event_type(self, event: Event) -> bool:
        """Only events of this projection's workflow."""
        return event.workflow_id == self._workflow_id

    def apply(self, event: Event) -> None:
        """Add ``event`` to the timeline (no-op for another workflow or a repeated sequence)."""
        if event.workflow_id != self._workflow_id:
            return
        sequence = event.sequence
        if sequence > 0:
            # One hash operation instead of a lookup then an insert.
            applied = self._applied
            before = len(applied)
            applied.add(sequence)
            if len(applied) == before:
                return

        type_value, is_start, is_end, detail_keys, has_entry, workflow_action = _RULES[
            event.event_type._value_
        ]
        data = event.data
        timestamp = event.timestamp
        entity_id = event.entity_id

        if is_start:
            self._start_times[entity_id] = timestamp
        if has_entry:
            get = data.get
            duration_ms = get("duration_ms")
            if is_end and duration_ms is None:
                started = self._start_times.get(entity_id)
                if started is not None:
                    # Inlined `_elapsed_ms`: this runs for every completion without a duration.
                    duration_ms = int((timestamp - started).total_seconds() * 1000)
            self._timeline.entries.append(
                TimelineEntry(
                    timestamp,
                    type_value,
                    event.entity_type._value_,
                    entity_id,
                    get("name") or get("ref_id"),
                    get("status"),
                    duration_ms,
                    {key: get(key) for key in detail_keys} if detail_keys else None,
                )
            )
        if workflow_action and event.entity_type._value_ == _WORKFLOW_ENTITY:
            self._update_workflow(workflow_action, timestamp, data)

    def _update_workflow(self, action: int, timestamp: datetime, data: dict[str, Any]) -> None:
        """Record the workflow's start, or its end, final status and total duration."""
        timeline = self._timeline
        if action == _WF_START:
            timeline.start_time = timestamp
            return
        timeline.end_time = timestamp
        timeline.status = data.get("status")
        if timeline.start_time is not None:
            timeline.total_duration_ms = _elapsed_ms(timeline.start_time, timestamp)

    def get_state(self) -> WorkflowTimeline:
        """The timeline (the live object: it keeps growing as events are applied)."""
        return self._timeline

    def reset(self) -> None:
        """Start again from an empty timeline."""
        self._timeline = WorkflowTimeline(workflow_id=self._workflow_id)
        self._start_times.clear()
        self._applied.clear()

    def get_stages(self) -> list[TimelineEntry]:
        """The entries about stages, in timeline order."""
        return [e for e in self._timeline.entries if e.entity_type == _STAGE]

    def get_tasks(self) -> list[TimelineEntry]:
        """The entries about tasks, in timeline order."""
        return [e for e in self._timeline.entries if e.entity_type == _TASK]

    def get_failures(self) -> list[TimelineEntry]:
        """Failed stages, tasks and workflows, and the workflow's cancellation."""
        return [e for e in self._timeline.entries if e.event_type in _FAILURE_TYPES]
