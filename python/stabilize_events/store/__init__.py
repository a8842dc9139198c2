"""Event stores: the `EventStore` contract, the capabilities a store may declare beyond it
(`stabilize_events.store.capabilities`), and the SQLite and in-memory implementations."""

from stabilize_events.store.capabilities import (
    FoldsWorkflows,
    KeepsSnapshots,
    KeepsSubscriptions,
    NotificationWaiter,
    ServesStoredSnapshots,
    WaitsForEvents,
)
from stabilize_events.store.interface import AppendResult, EventQuery, EventStore
from stabilize_events.store.memory import InMemoryEventStore
from stabilize_events.store.native import NativeEventStore
from stabilize_events.store.sqlite import SqliteEventStore

__all__ = [
    "AppendResult",
    "EventQuery",
    "EventStore",
    "FoldsWorkflows",
    "InMemoryEventStore",
    "KeepsSnapshots",
    "KeepsSubscriptions",
    "NativeEventStore",
    "NotificationWaiter",
    "ServesStoredSnapshots",
    "SqliteEventStore",
    "WaitsForEvents",
]
