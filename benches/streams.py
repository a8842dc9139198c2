"""Event streams for the benches, built exactly as /work/shared/spec/workloads.md describes.

The same builders serve both implementations: each takes an `EventApi` (the
``Event``, ``EventMetadata``, ``EventType`` and ``EntityType`` of one package), so
our store and the reference receive equal streams of their own event objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: Events per batch in W2, W3's store and W9.
BATCH = 1_000
#: Workflows in W2's and W3's store.
WORKFLOWS = 10


def env_int(name: str, default: int) -> int:
    """An integer from the environment (``_`` allowed as in ``1_000_000``), or ``default``."""
    value = os.environ.get(name)
    return int(value.replace("_", "")) if value else default


@dataclass(frozen=True)
class EventApi:
    """The event classes of one implementation."""

    Event: Any
    EventMetadata: Any
    EventType: Any
    EntityType: Any


def ours_api() -> EventApi:
    """`stabilize_events`' classes."""
    import stabilize_events as se

    return EventApi(se.Event, se.EventMetadata, se.EventType, se.EntityType)


def reference_api() -> EventApi:
    """The reference's classes (``stabilize.events``); ImportError if it is not installed."""
    from stabilize.events import EntityType, Event, EventMetadata, EventType

    return EventApi(Event, EventMetadata, EventType, EntityType)


# (event_type member, entity kind) for i % 4 of the standard cycle.
_CYCLE = (
    ("STAGE_STARTED", "STAGE"),
    ("TASK_STARTED", "TASK"),
    ("TASK_COMPLETED", "TASK"),
    ("STAGE_COMPLETED", "STAGE"),
)


def standard_stream(api: EventApi, k: int, n: int, finished: bool = False) -> list[Any]:
    """The standard stream of workflow ``wf-K``: exactly ``n`` events.

    ``workflow.created`` and ``workflow.started``, then the four-event cycle for
    ``i = 0, 1, ...`` (step ``i // 4``), then ``workflow.completed`` if
    ``finished``. Cycle events have ``version = i`` and the data the spec gives;
    every event has ``correlation_id = "wf-K"``, ``source_handler = "Bench"``.
    """
    wf = f"wf-{k}"
    Event, EventType, EntityType = api.Event, api.EventType, api.EntityType
    meta = api.EventMetadata(correlation_id=wf, source_handler="Bench")
    cycle = [(EventType[t], EntityType[e], e.lower()) for t, e in _CYCLE]
    tail = 1 if finished else 0
    body = n - 2 - tail
    if body < 0:
        raise ValueError(f"a stream needs at least {2 + tail} events, got n={n}")

    events = [
        Event(
            event_type=EventType.WORKFLOW_CREATED,
            entity_type=EntityType.WORKFLOW,
            entity_id=wf,
            workflow_id=wf,
            version=1,
            data={"application": "bench", "name": wf, "type": "PIPELINE"},
            metadata=meta,
        ),
        Event(
            event_type=EventType.WORKFLOW_STARTED,
            entity_type=EntityType.WORKFLOW,
            entity_id=wf,
            workflow_id=wf,
            version=2,
            data={"initial_stage_ids": [f"{wf}-stage-0"], "context": {}},
            metadata=meta,
        ),
    ]
    append = events.append
    for i in range(body):
        step = i // 4
        event_type, entity_type, kind = cycle[i % 4]
        append(
            Event(
                event_type=event_type,
                entity_type=entity_type,
                entity_id=f"{wf}-{kind}-{step}",
                workflow_id=wf,
                version=i,
                data={
                    "name": f"step-{step}",
                    "type": "python",
                    "status": "SUCCEEDED",
                    "stage_id": f"{wf}-stage-{step}",
                    "outputs": {"x": i, "msg": "hello world"},
                },
                metadata=meta,
            )
        )
    if finished:
        append(
            Event(
                event_type=EventType.WORKFLOW_COMPLETED,
                entity_type=EntityType.WORKFLOW,
                entity_id=wf,
                workflow_id=wf,
                version=3,
                data={"status": "SUCCEEDED"},
                metadata=meta,
            )
        )
    return events


def interleaved_batches(streams: list[list[Any]], batch: int = BATCH) -> list[list[Any]]:
    """The streams cut into batches of ``batch`` events, taken from each workflow in turn.

    Batch ``j`` holds consecutive events of one workflow; workflows alternate
    batch by batch, as when several run at once, so one workflow's events are
    spread through the file rather than stored contiguously.
    """
    out: list[list[Any]] = []
    longest = max((len(s) for s in streams), default=0)
    for start in range(0, longest, batch):
        for stream in streams:
            chunk = stream[start : start + batch]
            if chunk:
                out.append(chunk)
    return out


def store_batches(api: EventApi, total: int, first_workflow: int = 0) -> list[list[Any]]:
    """``total`` events as `WORKFLOWS` standard streams, interleaved in batches of `BATCH`.

    Workflows are numbered from ``first_workflow``; each has ``total // WORKFLOWS`` events.
    """
    per_workflow = total // WORKFLOWS
    streams = [standard_stream(api, first_workflow + k, per_workflow) for k in range(WORKFLOWS)]
    return interleaved_batches(streams)


def count(batches: list[list[Any]]) -> int:
    """Events in ``batches``."""
    return sum(len(b) for b in batches)
