"""`SubscriptionRecords`: where a manager's subscriptions persist, and reading from their positions.

The store keeps each subscription (`KeepsSubscriptions`). Every built-in store
declares that capability. A store of Stabilize's own has the same methods
without declaring them, and keeps only the filters, webhook and position (its
``save_subscription`` takes no settings): it is recognised by the structural
`StabilizeSubscriptionStore` protocol and adapted. Any other store is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stabilize_events.defaults import READ_LIMIT
from stabilize_events.errors import ArgumentTypeError
from stabilize_events.store.capabilities import KeepsSubscriptions
from stabilize_events.types import EventType

if TYPE_CHECKING:
    from stabilize_events._core import Event
    from stabilize_events.store.interface import EventStore
    from stabilize_events.subscriptions.subscription import DurableSubscription


@runtime_checkable
class StabilizeSubscriptionStore(Protocol):
    """The subscription methods of Stabilize's own stores (``stabilize.events``), which keep
    a subscription's filters, webhook and position but none of its settings."""

    def save_subscription(
        self,
        subscription_id: str,
        event_types: list[EventType] | None,
        entity_filter: dict[str, Any] | None,
        last_sequence: int,
        webhook_url: str | None = None,
    ) -> None:
        """Create or replace a subscription."""
        ...

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The stored subscription, or None."""
        ...

    def update_subscription_cursor(
        self, subscription_id: str, last_sequence: int, last_commit_cursor: str
    ) -> None:
        """Persist a subscription's position."""
        ...

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription."""
        ...

    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription's id and position."""
        ...

    def get_events_since_committed(self, cursor: str, limit: int = READ_LIMIT) -> tuple[list[Event], str]:
        """Committed events after ``cursor`` and the cursor to resume from."""
        ...

    def supports_commit_cursor(self) -> bool:
        """Whether the commit cursor can be relied on."""
        ...


class _StabilizeStore(KeepsSubscriptions):
    """A Stabilize store seen as `KeepsSubscriptions`: settings are not kept."""

    def __init__(self, store: StabilizeSubscriptionStore) -> None:
        self._store = store

    def save_subscription(
        self,
        subscription_id: str,
        event_types: list[EventType] | None,
        entity_filter: dict[str, Any] | None,
        last_sequence: int,
        webhook_url: str | None = None,
        **settings: Any,
    ) -> None:
        """Save the filters, webhook and position (Stabilize's store has no room for settings)."""
        self._store.save_subscription(
            subscription_id=subscription_id,
            event_types=event_types,
            entity_filter=entity_filter,
            last_sequence=last_sequence,
            webhook_url=webhook_url,
        )

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The stored subscription, or None."""
        return self._store.get_subscription(subscription_id)

    def update_subscription_cursor(
        self, subscription_id: str, last_sequence: int, last_commit_cursor: str
    ) -> None:
        """Persist a subscription's position."""
        self._store.update_subscription_cursor(subscription_id, last_sequence, last_commit_cursor)

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription."""
        self._store.delete_subscription(subscription_id)

    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription's id and position."""
        return self._store.list_subscriptions()

    def get_events_since_committed(self, cursor: str, limit: int = READ_LIMIT) -> tuple[list[Event], str]:
        """Committed events after ``cursor`` and the cursor to resume from."""
        return self._store.get_events_since_committed(cursor, limit=limit)

    def supports_commit_cursor(self) -> bool:
        """Whether the commit cursor can be relied on."""
        return self._store.supports_commit_cursor()


def _keeper(store: object) -> KeepsSubscriptions:
    if isinstance(store, KeepsSubscriptions):
        return store
    if isinstance(store, StabilizeSubscriptionStore):
        return _StabilizeStore(store)
    raise ArgumentTypeError(
        f"{type(store).__name__} cannot persist subscriptions: it is not a KeepsSubscriptions store "
        "(every built-in store is) and lacks the subscription methods of Stabilize's stores "
        "(save_subscription, get_subscription, update_subscription_cursor, delete_subscription, "
        "list_subscriptions, get_events_since_committed, supports_commit_cursor)"
    )


class SubscriptionRecords:
    """A manager's subscriptions as ``event_store`` keeps them, and batches read from their
    positions. Writes of positions and status are serialised with deletion, so a batch
    finishing after `delete` cannot write the row back.

    `ArgumentTypeError` if ``event_store`` cannot keep subscriptions (see the module doc).
    """

    def __init__(self, event_store: EventStore) -> None:
        """Records kept in ``event_store``."""
        self._keeper = _keeper(event_store)
        self._events = event_store
        # Asked once: Stabilize's PostgreSQL store answers from how it was opened.
        self._commit_ordered = self._keeper.supports_commit_cursor()
        self._lock = threading.Lock()

    def load(self, subscription_id: str) -> dict[str, Any] | None:
        """The stored subscription (as `KeepsSubscriptions.get_subscription` returns it), or None."""
        return self._keeper.get_subscription(subscription_id)

    def save(self, subscription: DurableSubscription) -> None:
        """Save all of ``subscription`` (settings, status, position) unless it was deleted."""
        with self._lock:
            self._save(subscription)

    @contextmanager
    def changing(self, subscription: DurableSubscription) -> Iterator[None]:
        """Change ``subscription`` inside the block, then save all of it (settings, status,
        position) unless it was deleted meanwhile. Not saved if the block raises."""
        with self._lock:
            yield
            self._save(subscription)

    def _save(self, subscription: DurableSubscription) -> None:
        if subscription._deleted:
            return
        self._keeper.save_subscription(
            subscription_id=subscription.id,
            event_types=subscription.event_types,
            entity_filter=subscription.entity_filter,
            last_sequence=subscription.last_sequence,
            webhook_url=subscription.webhook_url,
            **subscription.settings(),
        )

    def save_position(self, subscription: DurableSubscription) -> None:
        """Persist how far ``subscription`` has delivered, unless it was deleted."""
        with self._lock:
            if not subscription._deleted:
                self._keeper.update_subscription_cursor(
                    subscription.id, subscription.last_sequence, subscription.last_commit_cursor
                )

    def delete(self, subscription_id: str, held: DurableSubscription | None) -> bool:
        """Remove the stored subscription (``held``, the manager's copy, stops saving);
        return whether one was stored."""
        with self._lock:
            if held is not None:
                held._deleted = True
            stored = self._keeper.get_subscription(subscription_id) is not None
            self._keeper.delete_subscription(subscription_id)
        return stored

    def read(self, subscription: DurableSubscription, limit: int) -> tuple[list[Event], str]:
        """At most ``limit`` events after the subscription's position and the cursor after them:
        in commit order when the store supports it, else by sequence."""
        if self._commit_ordered:
            events, cursor = self._keeper.get_events_since_committed(subscription.last_commit_cursor, limit)
            return events, str(cursor)
        events = self._events.get_events_since(subscription.last_sequence, limit=limit)
        return events, str(events[-1].sequence) if events else subscription.last_commit_cursor


__all__ = ["StabilizeSubscriptionStore", "SubscriptionRecords"]
