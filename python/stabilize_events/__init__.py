"""stabilize_events: event sourcing for the Stabilize workflow engine, hot path in Rust.

Every workflow, stage and task transition becomes an immutable `Event`,
appended to an `EventStore` (SQLite or in memory) and published on an
in-process `EventBus`::

    from stabilize_events import SqliteEventStore, configure_event_sourcing

    store = SqliteEventStore("sqlite:///events.db", create_tables=True)
    recorder = configure_event_sourcing(store)

The names and behaviour follow ``stabilize.events`` (Stabilize 0.33).
"""

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabilize_events import errors

try:
    # Every module below needs the compiled core; say so here rather than as a circular import.
    import stabilize_events._core  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"stabilize_events' compiled core (stabilize_events._core) could not be loaded: {exc}. "
        "Install the package from a wheel (`pip install stabilize-events`), or build it from a "
        "source checkout with `pip install .` or `maturin develop --release`."
    ) from exc
from stabilize_events.bus import (
    EventBus,
    EventBusStats,
    Subscription,
    SubscriptionMode,
    configure_event_bus,
    get_event_bus,
    reset_event_bus,
)
from stabilize_events.event import (
    Event,
    EventMetadata,
    create_stage_event,
    create_task_event,
    create_workflow_event,
)
from stabilize_events.migration import EventMigrator, get_event_migrator, reset_event_migrator
from stabilize_events.projections import (
    Projection,
    ProjectionRunner,
    StageMetrics,
    StageMetricsProjection,
    TaskMetrics,
    TimelineEntry,
    WorkflowTimeline,
    WorkflowTimelineProjection,
)
from stabilize_events.recorder import (
    EventRecorder,
    configure_event_recorder,
    get_event_metadata,
    get_event_recorder,
    reset_event_recorder,
    set_event_context,
)
from stabilize_events.replay import EventReplayer, ReplayResult, WorkflowState
from stabilize_events.snapshots import Snapshot, SnapshotPolicy, SnapshotStore
from stabilize_events.sourcing import configure_event_sourcing
from stabilize_events.store import (
    AppendResult,
    EventQuery,
    EventStore,
    InMemoryEventStore,
    SqliteEventStore,
)
from stabilize_events.subscriptions import DurableSubscription, SubscriptionManager
from stabilize_events.types import CURRENT_SCHEMA_VERSION, EntityType, EventType, parse_event_type

if TYPE_CHECKING:
    from stabilize_events.store.postgres import PostgresEventStore


def _installed_version() -> str:
    """The version of the installed distribution this code came from (its wheel's or sdist's).

    Code imported from a source tree (``PYTHONPATH=python``) is not what any installed
    distribution holds, even when one is installed elsewhere, so it reports no version.
    """
    try:
        dist = metadata.distribution("stabilize-events")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"
    if Path(str(dist.locate_file("stabilize_events/__init__.py"))).resolve() != Path(__file__).resolve():
        return "unknown (run from a source tree)"
    return dist.version


#: The installed version, e.g. ``0.1.0``; ``stabilize-events --version`` prints the same.
__version__ = _installed_version()


def __getattr__(name: str) -> Any:
    """`PostgresEventStore` is imported on first use: it needs the ``postgres`` extra (psycopg)."""
    if name == "PostgresEventStore":
        from stabilize_events.store.postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(f"module 'stabilize_events' has no attribute {name!r}")


__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "AppendResult",
    "DurableSubscription",
    "EntityType",
    "Event",
    "EventBus",
    "EventBusStats",
    "EventMetadata",
    "EventMigrator",
    "EventQuery",
    "EventRecorder",
    "EventReplayer",
    "EventStore",
    "EventType",
    "InMemoryEventStore",
    "PostgresEventStore",
    "Projection",
    "ProjectionRunner",
    "ReplayResult",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotStore",
    "SqliteEventStore",
    "StageMetrics",
    "StageMetricsProjection",
    "Subscription",
    "SubscriptionManager",
    "SubscriptionMode",
    "TaskMetrics",
    "TimelineEntry",
    "WorkflowState",
    "WorkflowTimeline",
    "WorkflowTimelineProjection",
    "configure_event_bus",
    "configure_event_recorder",
    "configure_event_sourcing",
    "create_stage_event",
    "create_task_event",
    "create_workflow_event",
    "errors",
    "get_event_bus",
    "get_event_metadata",
    "get_event_migrator",
    "get_event_recorder",
    "parse_event_type",
    "reset_event_bus",
    "reset_event_migrator",
    "reset_event_recorder",
    "set_event_context",
]
