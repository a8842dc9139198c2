"""stabilize_events: event sourcing for the Stabilize workflow engine, hot path in Rust.

Every workflow, stage and task transition becomes an immutable `Event`,
appended to an `EventStore` (SQLite or in memory) and published on an
in-process `EventBus`::

    from stabilize_events import SqliteEventStore, configure_event_sourcing

    store = SqliteEventStore("sqlite:///events.db", create_tables=True)
    recorder = configure_event_sourcing(store)

The names and behaviour follow ``stabilize.events`` (Stabilize 0.33).
"""

from stabilize_events import errors
from stabilize_events.event import (
    Event,
    EventMetadata,
    create_stage_event,
    create_task_event,
    create_workflow_event,
)
from stabilize_events.store import (
    AppendResult,
    EventQuery,
    EventStore,
    InMemoryEventStore,
    SqliteEventStore,
)
from stabilize_events.types import CURRENT_SCHEMA_VERSION, EntityType, EventType, parse_event_type

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "AppendResult",
    "EntityType",
    "Event",
    "EventMetadata",
    "EventQuery",
    "EventStore",
    "EventType",
    "InMemoryEventStore",
    "SqliteEventStore",
    "create_stage_event",
    "create_task_event",
    "create_workflow_event",
    "errors",
    "parse_event_type",
]
