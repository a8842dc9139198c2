"""`InMemoryEventStore`: events held in process memory, for tests and demos."""

from __future__ import annotations

from stabilize_events._core import NativeStore
from stabilize_events.defaults import MAX_PAYLOAD_BYTES
from stabilize_events.store.native import NativeEventStore


class InMemoryEventStore(NativeEventStore):
    """An event store in this process's memory; everything is lost when it exits.

    Same contract as the SQLite store (payloads are encoded on append, so an
    unstorable payload fails here too).
    """

    def __init__(self, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        super().__init__(NativeStore.memory(max_payload_bytes=max_payload_bytes))

    def __repr__(self) -> str:
        return "InMemoryEventStore()"
