"""`SubscriptionRecords`: where a manager's subscriptions persist, and reading from their positions.

The store keeps each subscription (`KeepsSubscriptions`). Every built-in store
declares that capability. A store of Stabilize's own (a ``stabilize.events``
``EventStore``) has the same methods without declaring them, and keeps only the
filters, webhook and position (its ``save_subscription`` takes no settings): it
is adapted. Any other store is refused.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from stabilize_events.errors import ArgumentTypeError
from stabilize_events.store.capabilities import KeepsSubscriptions

if TYPE_CHECKING:
    from stabilize_events._core import Event
    from stabilize_events.store.interface import EventStore
    from stabilize_events.subscriptions.subscription import DurableSubscription


class _StabilizeStore(KeepsSubscriptions):
    """A store of Stabilize's own seen as `KeepsSubscriptions`. Its subscription methods take
    the same arguments as ours, but ``save_subscription`` has no room for settings."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def save_subscription(self, *args: Any, **settings: Any) -> None:
        """Save the filters, webhook and position; the settings are dropped."""
        kept = {name: settings[name] for name in _STABILIZE_SAVE_ARGUMENTS if name in settings}
        self._store.save_subscription(*args, **kept)

    def get_subscription(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """The stored subscription, or None."""
        found: dict[str, Any] | None = self._store.get_subscription(*args, **kwargs)
        return found

    def update_subscription_cursor(self, *args: Any, **kwargs: Any) -> None:
        """Persist a subscription's position."""
        self._store.update_subscription_cursor(*args, **kwargs)

    def delete_subscription(self, *args: Any, **kwargs: Any) -> None:
        """Remove a subscription."""
        self._store.delete_subscription(*args, **kwargs)

    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription's id and position."""
        listed: list[dict[str, Any]] = self._store.list_subscriptions()
        return listed

    def get_events_since_committed(self, *args: Any, **kwargs: Any) -> tuple[list[Event], str]:
        """Committed events after a cursor and the cursor to resume from."""
        read: tuple[list[Event], str] = self._store.get_events_since_committed(*args, **kwargs)
        return read

    def supports_commit_cursor(self) -> bool:
        """Whether the commit cursor can be relied on."""
        return bool(self._store.supports_commit_cursor())


#: The keyword arguments Stabilize's ``save_subscription`` takes.
_STABILIZE_SAVE_ARGUMENTS = (
    "subscription_id",
    "event_types",
    "entity_filter",
    "last_sequence",
    "webhook_url",
)


def _is_stabilize_store(store: object) -> bool:
    """Whether ``store`` is one of Stabilize's own (its module is loaded if such a store exists)."""
    interface = sys.modules.get("stabilize.events.store.interface")
    return interface is not None and isinstance(store, interface.EventStore)


def _keeper(store: object) -> KeepsSubscriptions:
    if isinstance(store, KeepsSubscriptions):
        return store
    if _is_stabilize_store(store):
        return _StabilizeStore(store)
    raise ArgumentTypeError(
        f"{type(store).__name__} cannot persist subscriptions: it is neither a KeepsSubscriptions "
        "store (every built-in store is) nor one of Stabilize's stores"
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


__all__ = ["SubscriptionRecords"]
