"""What a store can do beyond the `EventStore` contract, one typed interface per capability.

A store declares a capability by deriving from its class, as the ``eventsourcing``
library's recorders declare theirs (an ``ApplicationRecorder`` is an
``AggregateRecorder`` that can also list notifications). Consumers check with
``isinstance`` against these classes and call the methods they name; they never
look for a method by name or reach into a store's private attributes.

=======================  =========  ======  ==========
capability               in-memory  SQLite  PostgreSQL
=======================  =========  ======  ==========
`FoldsWorkflows`         yes        yes     yes
`KeepsSnapshots`         yes        yes     yes
`ServesStoredSnapshots`  yes        yes     no
`KeepsSubscriptions`     yes        yes     yes
`WaitsForEvents`         no         no      yes
=======================  =========  ======  ==========

A store without a capability still works where the capability only makes things
faster: `EventReplayer` folds the events it reads through `EventStore` instead,
`SnapshotStore` checks snapshot rows in Python. Where the capability is the
feature itself (a `SnapshotStore` needs `KeepsSnapshots`), `ArgumentTypeError`
names the class that is missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from stabilize_events.canonical import snapshot_row_intact, stabilize_state_hash
from stabilize_events.defaults import READ_LIMIT
from stabilize_events.types import CURRENT_SCHEMA_VERSION

if TYPE_CHECKING:
    from stabilize_events._core import Event, StoredSnapshot
    from stabilize_events.types import EntityType, EventType


class FoldsWorkflows(ABC):
    """A store that folds a workflow's events into its state itself, from its own rows."""

    @abstractmethod
    def fold_workflow(
        self,
        workflow_id: str,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        to_timestamp: datetime | None = None,
        initial_state: dict[str, Any] | StoredSnapshot | None = None,
        upcast: Callable[[Event], Event] | None = None,
        current_schema_version: int = CURRENT_SCHEMA_VERSION,
        skip_corrupt: bool = False,
        snapshot_after_events: int | None = None,
        look_up_snapshot_at: int | None = None,
        snapshot_min_events: int | None = None,
    ) -> dict[str, Any]:
        """Fold the events of ``workflow_id`` after ``from_sequence`` (up to ``to_sequence`` and
        ``to_timestamp``, both inclusive, when given) onto ``initial_state``.

        ``upcast`` is applied to each event first; an event whose schema version is newer than
        ``current_schema_version`` is left out and listed. A row that cannot be decoded raises
        `CorruptEventError`, or with ``skip_corrupt`` is left out and listed. Returns a dict:
        ``state``, ``events_replayed``, ``last_sequence`` (at least ``from_sequence``),
        ``skipped_newer`` (``(event_id, schema_version)`` pairs), ``skipped_corrupt`` (event ids)
        and ``max_event_time_us`` (the newest event time folded, or None).

        With ``snapshot_after_events``, a store may also take over saving a snapshot of the
        workflow's state when at least that many events were folded (none skipped, no
        ``to_timestamp``); it then adds ``snapshot_queued: True`` to the result. Without that key
        the caller saves one itself if it wants one. With ``snapshot_min_events``, none is taken
        over of a state folding fewer events in all (the version of the snapshot the fold started
        from plus the events folded). A snapshot taken over may still be written
        after this returns: it is there for every later read of that workflow's snapshots, and
        durable once `KeepsSnapshots.flush_snapshots` or the store's ``close()`` returns. A crash
        before then loses the snapshot only (never an event), and a snapshot whose bytes do not
        match its hash is never used.

        ``look_up_snapshot_at`` (only for a store that also `ServesStoredSnapshots`; others raise
        `InvalidArgumentError`; it takes no ``from_sequence``, ``initial_state``, ``upcast`` or
        ``skip_corrupt``): the fold looks for the newest usable snapshot itself once it has
        reached that many events, and goes on from it if it is further on; a smaller workflow is
        folded with no look-up, and no snapshot of it is taken over. The result then also holds
        ``snapshot`` (the `StoredSnapshot` started from, or None) and ``snapshot_skipped`` (why
        newer snapshots were passed over).
        When the snapshot found has a legacy hash (checked by the caller), the result holds only
        ``legacy_snapshot`` and ``snapshot_skipped``, and nothing is folded.
        """


class KeepsSnapshots(ABC):
    """A store that keeps snapshots of entity state beside its events."""

    @abstractmethod
    def save_snapshot(
        self,
        entity_type: EntityType,
        entity_id: str,
        workflow_id: str,
        version: int,
        sequence: int,
        state: dict[str, Any],
        state_hash_hex: str | None = None,
        max_event_time_us: int | None = None,
    ) -> None:
        """Save ``state`` as the entity's state after event ``sequence``, with its hash."""

    @abstractmethod
    def get_snapshots(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Snapshots of an entity at or before ``max_sequence``, newest first, as dicts (with
        ``state_error`` and ``hash_ok`` saying whether each can be trusted)."""

    def get_latest_snapshot(self, entity_type: EntityType, entity_id: str) -> dict[str, Any] | None:
        """The newest snapshot of an entity, as a `get_snapshots` dict, or None.

        This is the reference's call, the one Stabilize's own ``SnapshotStore`` makes, which
        then checks ``state_hash`` against its own hash of ``state``: an intact snapshot
        carries its hash in that form (`canonical.stabilize_state_hash`), and one that fails
        this store's check keeps its stored hash, so it fails Stabilize's check too."""
        found = self.get_snapshots(entity_type, entity_id, None, 1)
        if not found:
            return None
        row = found[0]
        if snapshot_row_intact(row):
            try:
                row["state_hash"] = stabilize_state_hash(row["state"])
            except TypeError:
                pass  # Stabilize cannot hash such a state either
        return row

    @abstractmethod
    def flush_snapshots(self) -> None:
        """Wait until every snapshot the store took over from a fold is written and durable
        (nothing to wait for in a store that writes each before its fold returns)."""


class ServesStoredSnapshots(ABC):
    """A store that picks the newest intact snapshot itself and hands over its state as stored,
    so a fold seeds from the bytes without building the state in Python first."""

    @abstractmethod
    def latest_stored_snapshot(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        max_event_time_us: int | None = None,
        limit: int = 50,
    ) -> tuple[StoredSnapshot | None, list[str]]:
        """The newest of at most ``limit`` snapshots at or before ``max_sequence`` (folding no
        event after ``max_event_time_us``) that decodes and matches its hash, and why each newer
        one was passed over. A snapshot with a legacy hash is returned unchecked (its
        ``legacy`` is set): that hash is over the canonical JSON, checked by the caller."""


class KeepsSubscriptions(ABC):
    """A store that persists durable subscriptions (`SubscriptionManager`) and reads in commit
    order: its settings, position and a commit cursor that never steps over a late commit."""

    @abstractmethod
    def save_subscription(
        self,
        subscription_id: str,
        event_types: list[EventType] | None,
        entity_filter: dict[str, Any] | None,
        last_sequence: int,
        webhook_url: str | None = None,
        **settings: Any,
    ) -> None:
        """Create or replace a subscription: its filters, webhook, position and ``settings``."""

    @abstractmethod
    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """A subscription as `save_subscription` stored it (``id``, ``event_types``,
        ``entity_filter``, ``webhook_url``, ``last_sequence``, ``last_commit_cursor`` and its
        settings), or None."""

    @abstractmethod
    def update_subscription_cursor(
        self, subscription_id: str, last_sequence: int, last_commit_cursor: str
    ) -> None:
        """Persist how far a subscription has delivered."""

    @abstractmethod
    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription (no error if it does not exist)."""

    @abstractmethod
    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription's ``id`` and ``last_sequence``, by id."""

    @abstractmethod
    def get_events_since_committed(self, cursor: str, limit: int = READ_LIMIT) -> tuple[list[Event], str]:
        """Committed events after ``cursor``, in commit order, and the cursor to resume from."""

    @abstractmethod
    def supports_commit_cursor(self) -> bool:
        """Whether `get_events_since_committed` can be relied on (never skips a late commit)."""


class NotificationWaiter(Protocol):
    """Waits for a store's signal that events were committed (`WaitsForEvents`)."""

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True as soon as an append commits (or committed
        since the last call), False otherwise."""
        ...

    def close(self) -> None:
        """Release what the waiter holds (its connection)."""
        ...


class WaitsForEvents(ABC):
    """A store that can signal new events (PostgreSQL's LISTEN/NOTIFY), so a reader following
    it wakes when another process commits instead of polling on a timer."""

    @abstractmethod
    def wait_for_events(self, after: int, timeout: float) -> bool:
        """Block until an event after sequence ``after`` is readable or ``timeout`` seconds
        pass; True if one is."""

    @abstractmethod
    def open_notification_waiter(self) -> NotificationWaiter:
        """A waiter of its own (its own connection) for a loop that waits over and over."""


__all__ = [
    "FoldsWorkflows",
    "KeepsSnapshots",
    "KeepsSubscriptions",
    "NotificationWaiter",
    "ServesStoredSnapshots",
    "WaitsForEvents",
]
