"""In-process publish/subscribe for events.

`EventBus` hands every published event to the subscriptions whose filters
match it: SYNC subscriptions run in the publishing thread, ASYNC ones on a
shared thread pool. A handler that raises never disturbs the other handlers
or the publisher; the failure is counted, logged and passed to the bus's
error handler.

ASYNC delivery keeps each subscriber's order: every subscription with work
pending owns a FIFO lane, and exactly one pool task drains a lane at a time,
so a subscriber never sees ``task.completed`` before ``task.started`` because
two pool threads raced.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from stabilize_events import stabilize_bridge
from stabilize_events.errors import ArgumentTypeError
from stabilize_events.types import EntityType, EventType, type_filter

if TYPE_CHECKING:
    from stabilize_events._core import Event

logger = logging.getLogger(__name__)

#: Signature of an error handler: ``(subscription_id, event, error)``.
ErrorHandler = Callable[[str, "Event", Exception], None]


class SubscriptionMode(Enum):
    """Where a subscription's handler runs."""

    #: In the publishing thread; ``publish`` returns after the handler does.
    SYNC = "sync"
    #: On the bus's thread pool; ``publish`` returns at once.
    ASYNC = "async"


@dataclass
class Subscription:
    """A handler together with the filters that choose which events reach it.

    A filter left as None lets every event through; ``enabled`` switches the
    whole subscription off without removing it.
    """

    id: str
    handler: Callable[[Event], Any]
    event_types: AbstractSet[EventType] | None = None
    entity_types: AbstractSet[EntityType] | None = None
    workflow_filter: str | None = None
    mode: SubscriptionMode = SubscriptionMode.SYNC
    enabled: bool = True

    def matches(self, event: Event) -> bool:
        """Whether this subscription is enabled and every filter accepts ``event``."""
        return (
            self.enabled
            and (self.event_types is None or event.event_type in self.event_types)
            and (self.entity_types is None or event.entity_type in self.entity_types)
            and (self.workflow_filter is None or event.workflow_id == self.workflow_filter)
        )


@dataclass
class EventBusStats:
    """Counters of an `EventBus`; `EventBus.stats` returns a copy of them."""

    events_published: int = 0
    events_delivered: int = 0
    errors: int = 0
    subscriptions_active: int = 0
    #: ASYNC deliveries run in the publisher's thread because the pool was shut down.
    async_fallbacks: int = 0


class _Lane:
    """Events waiting for one ASYNC subscription, drained by a single pool task."""

    __slots__ = ("pending", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.pending: deque[Event] = deque()


class EventBus:
    """Thread-safe in-process event bus with filtered SYNC and ASYNC subscriptions."""

    def __init__(self, max_workers: int = 4, error_handler: ErrorHandler | None = None) -> None:
        """Create a bus whose ASYNC handlers share a pool of ``max_workers`` threads.

        ``error_handler`` is called as ``(subscription_id, event, error)`` whenever a
        handler raises.
        """
        self._max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="event-bus")
        self._error_handler = error_handler
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        # Immutable copy of the subscriptions, replaced on every change, so that
        # publish iterates without copying or holding the lock (copy-on-write:
        # subscribing is rare, publishing is the hot path).
        self._snapshot: tuple[Subscription, ...] = ()
        # A lane exists exactly while a drain task for it is queued or running;
        # keyed by the Subscription object's id() because the lane keeps it alive.
        self._lanes: dict[int, _Lane] = {}
        self._stats = EventBusStats()
        self._shutdown = False

    # -- subscriptions -------------------------------------------------------

    def subscribe(
        self,
        subscription_id: str,
        handler: Callable[[Event], Any],
        event_types: Iterable[EventType | str] | EventType | str | None = None,
        entity_types: Iterable[EntityType | str] | EntityType | str | None = None,
        workflow_filter: str | None = None,
        mode: SubscriptionMode = SubscriptionMode.SYNC,
    ) -> None:
        """Register ``handler`` under ``subscription_id``, replacing any subscription of that id.

        Only events whose type is in ``event_types``, whose entity type is in
        ``entity_types`` and whose workflow id equals ``workflow_filter`` reach it
        (a None filter accepts everything). Each type filter takes members, their values
        (``"task.failed"``) or one type alone. A ``handler`` that is not callable, or a
        type that is none, is refused here (`ArgumentTypeError`, `InvalidArgumentError`),
        not at the first publish.
        """
        if not callable(handler):
            raise ArgumentTypeError(
                f"handler must be callable, not {type(handler).__name__} {handler!r} "
                f"(subscription {subscription_id!r}): pass the function that takes each Event, "
                "e.g. bus.subscribe('my-id', on_event)"
            )
        wanted_events = type_filter(event_types, EventType, "event_types")
        wanted_entities = type_filter(entity_types, EntityType, "entity_types")
        subscription = Subscription(
            id=subscription_id,
            handler=handler,
            event_types=frozenset(wanted_events) if wanted_events is not None else None,
            entity_types=frozenset(wanted_entities) if wanted_entities is not None else None,
            workflow_filter=workflow_filter,
            mode=mode,
        )
        with self._lock:
            self._subscriptions[subscription_id] = subscription
            self._subscriptions_changed()

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a subscription; return whether it existed.

        Events already queued for an ASYNC subscription are still delivered.
        """
        with self._lock:
            if self._subscriptions.pop(subscription_id, None) is None:
                return False
            self._subscriptions_changed()
            return True

    def enable_subscription(self, subscription_id: str) -> None:
        """Let a disabled subscription receive events again (unknown ids are ignored)."""
        self._set_enabled(subscription_id, True)

    def disable_subscription(self, subscription_id: str) -> None:
        """Stop a subscription receiving events without removing it (unknown ids are ignored)."""
        self._set_enabled(subscription_id, False)

    def get_subscriptions(self) -> list[str]:
        """The ids of all subscriptions, enabled or not, in subscription order."""
        with self._lock:
            return list(self._subscriptions)

    def _set_enabled(self, subscription_id: str, enabled: bool) -> None:
        with self._lock:
            subscription = self._subscriptions.get(subscription_id)
            if subscription is not None:
                subscription.enabled = enabled

    def _subscriptions_changed(self) -> None:
        # Caller holds the lock.
        self._snapshot = tuple(self._subscriptions.values())
        self._stats.subscriptions_active = len(self._subscriptions)

    # -- publishing ----------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching subscription.

        SYNC handlers have run when this returns; ASYNC handlers are queued.
        After `shutdown` the event is dropped with a warning.
        """
        if self._shutdown:
            logger.warning("event bus is shut down; dropping event %s", event.event_id)
            return
        with self._lock:
            self._stats.events_published += 1
        # Read the snapshot once: a concurrent subscribe swaps in a new tuple
        # and cannot disturb this iteration.
        for subscription in self._snapshot:
            if subscription.matches(event):
                if subscription.mode is SubscriptionMode.SYNC:
                    self._call(subscription, event)
                else:
                    self._enqueue(subscription, event)

    def publish_batch(self, events: Sequence[Event]) -> None:
        """Publish ``events`` one after another, in order."""
        for event in events:
            self.publish(event)

    def _call(self, subscription: Subscription, event: Event) -> None:
        """Run one handler, counting its success or isolating its failure."""
        try:
            subscription.handler(event)
        except Exception as error:
            self._handle_error(subscription.id, event, error)
        else:
            with self._lock:
                self._stats.events_delivered += 1

    def _enqueue(self, subscription: Subscription, event: Event) -> None:
        """Queue an event on the subscription's lane, starting a drain if none is active."""
        key = id(subscription)
        with self._lock:
            lane = self._lanes.get(key)
            if lane is not None:
                # The active drain task picks it up, after the earlier ones.
                lane.pending.append(event)
                return
            lane = _Lane(subscription)
            lane.pending.append(event)
            self._lanes[key] = lane
        try:
            self._executor.submit(self._drain, key, lane)
        except RuntimeError:
            # The pool was shut down between the check in publish and now:
            # deliver here rather than lose the event.
            logger.warning("event bus pool unavailable; delivering to %s synchronously", subscription.id)
            with self._lock:
                self._stats.async_fallbacks += 1
            self._drain(key, lane)

    def _drain(self, key: int, lane: _Lane) -> None:
        """Deliver a lane's events in order until it is empty, then retire the lane."""
        while True:
            with self._lock:
                if not lane.pending:
                    # Removing the lane under the lock that guards appends means
                    # the next event for this subscription starts a new drain.
                    del self._lanes[key]
                    return
                event = lane.pending.popleft()
            self._call(lane.subscription, event)

    # -- errors --------------------------------------------------------------

    def _handle_error(self, subscription_id: str, event: Event, error: Exception) -> None:
        with self._lock:
            self._stats.errors += 1
        logger.exception("event handler %s failed on event %s: %s", subscription_id, event.event_id, error)
        error_handler = self._error_handler
        if error_handler is not None:
            try:
                error_handler(subscription_id, event, error)
            except Exception:
                logger.exception("event bus error handler failed while reporting %s", subscription_id)

    def on_error(self, handler: ErrorHandler) -> ErrorHandler:
        """Set (or replace) the error handler; returns it, so it can be used as a decorator."""
        self._error_handler = handler
        return handler

    # -- state ---------------------------------------------------------------

    @property
    def stats(self) -> EventBusStats:
        """A copy of the counters, consistent at one instant."""
        with self._lock:
            s = self._stats
            return EventBusStats(
                events_published=s.events_published,
                events_delivered=s.events_delivered,
                errors=s.errors,
                subscriptions_active=s.subscriptions_active,
                async_fallbacks=s.async_fallbacks,
            )

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting events; with ``wait``, first let queued ASYNC deliveries finish."""
        self._shutdown = True
        self._executor.shutdown(wait=wait)

    def reset(self) -> None:
        """Drop all subscriptions, zero the counters and accept events again (for tests)."""
        with self._lock:
            self._subscriptions.clear()
            self._subscriptions_changed()
            self._stats = EventBusStats()
            if self._shutdown:
                # A shut-down pool cannot be restarted; give ASYNC delivery a new one.
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_workers, thread_name_prefix="event-bus"
                )
                self._shutdown = False


_event_bus: EventBus | None = None
_bus_lock = threading.Lock()


def get_event_bus() -> EventBus:
    """The process-wide bus, created with default settings on first use."""
    bus = _event_bus
    if bus is not None:
        return bus
    return _install_bus(None)


def configure_event_bus(max_workers: int = 4, error_handler: ErrorHandler | None = None) -> EventBus:
    """Replace the process-wide bus with a new one; the old one is shut down without waiting."""
    return _install_bus(EventBus(max_workers=max_workers, error_handler=error_handler))


def reset_event_bus() -> None:
    """Shut down and forget the process-wide bus; the next `get_event_bus` makes a fresh one.

    If `configure_event_sourcing` gave Stabilize's handlers this bus, they are unhooked from it too.
    """
    global _event_bus
    with _bus_lock:
        previous, _event_bus = _event_bus, None
    if previous is not None:
        previous.shutdown(wait=False)
        hooks = stabilize_bridge.loaded_hooks()
        if hooks is not None:
            hooks.detach(bus=previous)


def _install_bus(replacement: EventBus | None) -> EventBus:
    """Install ``replacement`` as the global bus, or create the default one if none exists yet."""
    global _event_bus
    with _bus_lock:
        if replacement is None:
            # Another thread may have created it while we waited for the lock.
            if _event_bus is None:
                _event_bus = EventBus()
            return _event_bus
        if _event_bus is not None:
            _event_bus.shutdown(wait=False)
        _event_bus = replacement
        return replacement


__all__ = [
    "ErrorHandler",
    "EventBus",
    "EventBusStats",
    "Subscription",
    "SubscriptionMode",
    "configure_event_bus",
    "get_event_bus",
    "reset_event_bus",
]
