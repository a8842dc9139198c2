"""Event stores: the `EventStore` contract and its SQLite and in-memory implementations."""

from stabilize_events.store.interface import AppendResult, EventQuery, EventStore
from stabilize_events.store.memory import InMemoryEventStore
from stabilize_events.store.native import NativeEventStore
from stabilize_events.store.sqlite import SqliteEventStore

__all__ = [
    "AppendResult",
    "EventQuery",
    "EventStore",
    "InMemoryEventStore",
    "NativeEventStore",
    "SqliteEventStore",
]
