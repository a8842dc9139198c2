"""`NativeEventStore`: the `EventStore` methods, delegated to a Rust backend.

Both built-in stores are this class over a different `_core.NativeStore`; only
their constructors differ. Argument checks, encoding and I/O happen in Rust.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from stabilize_events._core import Event, NativeStore, StoredSnapshot
from stabilize_events.defaults import READ_LIMIT
from stabilize_events.errors import InvalidArgumentError
from stabilize_events.store.capabilities import (
    FoldsWorkflows,
    KeepsSnapshots,
    KeepsSubscriptions,
    ServesStoredSnapshots,
)
from stabilize_events.store.interface import EventQuery, EventStore, require_event_list
from stabilize_events.store.subscription_records import subscription_config, subscription_from_row
from stabilize_events.types import EntityType, EventType

logger = logging.getLogger(__name__)


def _as_given(given: Any, stored: Event) -> Event:
    """``stored`` as the class the caller gave: a foreign event (Stabilize's) comes back as its
    own class with its sequence, as the reference store returns it."""
    if type(given) is Event:
        return stored
    with_sequence = getattr(given, "with_sequence", None)
    return with_sequence(stored.sequence) if with_sequence is not None else stored


class NativeEventStore(EventStore, FoldsWorkflows, KeepsSnapshots, ServesStoredSnapshots, KeepsSubscriptions):
    """An `EventStore` backed by the Rust core. Safe to share between threads.

    Besides the contract it folds workflows, keeps snapshots (and serves them as stored) and
    keeps durable subscriptions; see `stabilize_events.store.capabilities`.
    """

    _core: NativeStore

    def __init__(self, core: NativeStore) -> None:
        self._core = core

    def append(
        self, event: Event, connection: Any | None = None, *, expected_version: int | None = None
    ) -> Event:
        """Store one event and return it with its sequence.

        Without ``connection`` the event is stored in its own transaction. With
        one (an ``sqlite3.Connection`` on this store's database, as Stabilize's
        workflow store passes), it is written inside that connection's open
        transaction: committed or rolled back with it; see `can_join`.

        With ``expected_version``, the event is stored only if the latest stored
        event of its entity has that version (0: the entity has no events yet);
        otherwise `ConcurrencyError` names the entity and both versions. To
        retry, re-read the entity, decide again, and append with the new version.

        An event of another class with the same fields (Stabilize's ``Event``)
        is stored alike and returned as its own class, with its sequence.
        """
        if connection is not None:
            if expected_version is not None:
                raise InvalidArgumentError(
                    "expected_version cannot be checked inside a caller's transaction; nothing was "
                    "written (pass connection=None to append with expected_version)"
                )
            stored = self._append_through(connection, [event])[0]
        else:
            stored = self._core.append(event, expected_version)
        return _as_given(event, stored)

    def append_batch(
        self,
        events: list[Event],
        connection: Any | None = None,
        *,
        expected_versions: dict[str, int] | None = None,
    ) -> list[Event]:
        """Store events in one transaction, all or nothing; return them with their sequences.

        ``connection`` and foreign event classes are handled as by `append`.
        ``expected_versions`` maps entity ids to the version each must be at,
        as for `append`; one mismatch writes nothing of the batch.
        """
        require_event_list(events)
        if connection is not None:
            if expected_versions is not None:
                raise InvalidArgumentError(
                    "expected_versions cannot be checked inside a caller's transaction; nothing was "
                    "written (pass connection=None to append with expected_versions)"
                )
            events = list(events)
            stored = self._append_through(connection, events)
        else:
            stored = self._core.append_batch(events, expected_versions)
        if events and type(events[0]) is not Event:
            return [_as_given(given, s) for given, s in zip(events, stored, strict=True)]
        return stored

    def can_join(self, connection: Any) -> bool:
        """Whether ``append(..., connection=connection)`` writes inside that connection's
        transaction. False for every connection here; the SQLite store joins connections
        on its own database file."""
        return False

    def _append_through(self, connection: Any, events: list[Any]) -> list[Event]:
        raise InvalidArgumentError(
            f"{type(self).__name__} has no database a caller's connection could share; nothing was "
            f"written (pass connection=None)"
        )

    def get_events(self, query: EventQuery) -> Iterator[Event]:
        """Events matching ``query``; the whole page is read before the first is yielded."""
        return iter(self._core.query(query))

    def get_events_for_entity(
        self, entity_type: EntityType, entity_id: str, from_version: int = 0
    ) -> list[Event]:
        """Events of one entity with version above ``from_version``, by sequence."""
        return self._core.events_for_entity(entity_type, entity_id, from_version)

    def get_events_for_workflow(self, workflow_id: str, from_sequence: int = 0) -> list[Event]:
        """Events of one workflow after ``from_sequence``, by sequence."""
        return self._core.events_for_workflow(workflow_id, from_sequence)

    def get_current_sequence(self) -> int:
        """The highest sequence stored, or 0."""
        return self._core.current_sequence()

    def get_events_since(self, sequence: int, limit: int = READ_LIMIT) -> list[Event]:
        """At most ``limit`` events after ``sequence``, by sequence."""
        return self._core.events_since(sequence, limit)

    def get_event_by_id(self, event_id: str) -> Event | None:
        """The event with this id, or None."""
        return self._core.event_by_id(event_id)

    def count_events(self, query: EventQuery | None = None) -> int:
        """How many events match ``query`` (every filter; limit and offset ignored)."""
        return self._core.count(query)

    # -- replay ------------------------------------------------------------------

    def fold_workflow(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Fold a workflow's rows into its state in Rust, building no `Event` objects (only
        those an ``upcast`` is given); arguments and result as `FoldsWorkflows.fold_workflow`."""
        return self._core.fold_workflow(*args, **kwargs)

    # -- snapshots (kept in the same database as the events) -------------------

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
        """Save ``state`` as the entity's state after event ``sequence``.

        The SHA-256 of the stored (encoded) state is kept beside it, as
        ``sha256-msgpack:<hex>``, and checked before the snapshot is used; a
        ``state_hash_hex`` given is stored instead (a legacy hash, the bare hex
        SHA-256 of the canonical JSON, is checked that way). ``max_event_time_us``
        is the newest event time folded into ``state``, when known.
        """
        self._core.save_snapshot(
            entity_type, entity_id, workflow_id, version, sequence, state, state_hash_hex, max_event_time_us
        )

    def get_snapshots(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Snapshots of an entity at or before ``max_sequence``, newest first.

        Each is a dict with ``entity_type``, ``entity_id``, ``workflow_id``,
        ``version``, ``sequence``, ``state``, ``state_hash``, ``created_at`` and
        ``state_error`` (why ``state`` could not be decoded, else None) and
        ``hash_ok`` (whether the stored bytes match ``state_hash``; None for a
        legacy hash, which is over the canonical JSON of ``state``).
        """
        return self._core.snapshots(entity_type, entity_id, max_sequence, limit)

    def latest_stored_snapshot(self, *args: Any, **kwargs: Any) -> tuple[StoredSnapshot | None, list[str]]:
        """The newest intact snapshot, its state left as the stored bytes, and why newer ones
        were passed over; arguments as `ServesStoredSnapshots.latest_stored_snapshot`."""
        return self._core.latest_snapshot(*args, **kwargs)

    # -- durable subscription positions -----------------------------------------

    def save_subscription(
        self,
        subscription_id: str,
        event_types: list[EventType] | None,
        entity_filter: dict[str, Any] | None,
        last_sequence: int,
        webhook_url: str | None = None,
        **settings: Any,
    ) -> None:
        """Create or replace a durable subscription and its position."""
        config = subscription_config(event_types, entity_filter, webhook_url, settings)
        self._core.put_subscription(subscription_id, config, last_sequence)

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """A subscription as a dict (``id``, ``event_types``, ``entity_filter``,
        ``last_sequence``, ``webhook_url``, ``last_commit_cursor`` and any extra
        settings it was saved with), or None."""
        row = self._core.subscription(subscription_id)
        if row is None:
            return None
        return subscription_from_row(row["id"], row["config"], row["last_sequence"], row["updated_at"])

    def update_subscription_sequence(self, subscription_id: str, last_sequence: int) -> None:
        """Persist how far a subscription has delivered."""
        self._core.advance_subscription(subscription_id, last_sequence)

    def update_subscription_cursor(
        self, subscription_id: str, last_sequence: int, last_commit_cursor: str
    ) -> None:
        """Persist a subscription's position (the commit cursor is the sequence here)."""
        self._core.advance_subscription(subscription_id, last_sequence)

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription (no error if it does not exist)."""
        self._core.delete_subscription(subscription_id)

    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription's ``id`` and ``last_sequence``, by id."""
        return [{"id": r["id"], "last_sequence": r["last_sequence"]} for r in self._core.subscriptions()]

    def get_events_since_committed(self, cursor: str, limit: int = READ_LIMIT) -> tuple[list[Event], str]:
        """Committed events after ``cursor`` and the cursor to resume from.

        Sequences are assigned under the database's write lock, so commit order
        is sequence order and the sequence is a gap-free cursor.
        """
        try:
            start = int(cursor or 0)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"commit cursor must be a sequence number, not {cursor!r}") from None
        events = self.get_events_since(start, limit)
        return events, str(events[-1].sequence if events else start)

    def supports_commit_cursor(self) -> bool:
        """True: commit order equals sequence order in these stores."""
        return True

    def commit_stats(self) -> dict[str, int] | None:
        """``{"commits", "appends"}`` since opening: write transactions that committed
        appends and the append calls they stored (concurrent appends share commits;
        a failed append counts in neither), or None for a store without group commit."""
        return self._core.commit_stats()

    def flush_snapshots(self) -> None:
        """Wait until every snapshot a rebuild handed over is written (see
        `FoldsWorkflows.fold_workflow`); a save that failed is logged as a warning."""
        for why in self._core.flush_snapshots():
            logger.warning("%s", why)

    def close(self) -> None:
        """Write the snapshots still pending (`flush_snapshots`), then release the database.
        Later calls raise `StoreClosedError`."""
        for why in self._core.close():
            logger.warning("%s", why)

    def __enter__(self) -> NativeEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
