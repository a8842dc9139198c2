"""`SubscriptionManager`: creates, loads, persists and delivers durable subscriptions.

The pieces it composes, one idea each: `SubscriptionRecords` (where subscriptions
persist, over the store's `KeepsSubscriptions`), `BatchDelivery` (one batch read,
delivered, and its position saved), `WebhookSender` (HTTP with back-off) and
`Poller` (the polling thread). The guarantees are stated in the package doc.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from stabilize_events.defaults import (
    SUBSCRIPTION_BATCH_SIZE,
    SUBSCRIPTION_MAX_ERRORS,
    SUBSCRIPTION_POLL_INTERVAL,
    SUBSCRIPTION_STOP_TIMEOUT,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_BACKOFF,
    WEBHOOK_MAX_BACKOFF,
    WEBHOOK_TIMEOUT,
)
from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError
from stabilize_events.subscriptions.delivery import BatchDelivery
from stabilize_events.subscriptions.errors import SubscriptionNotFoundError
from stabilize_events.subscriptions.filters import validate_filters
from stabilize_events.subscriptions.polling import Poller
from stabilize_events.subscriptions.records import SubscriptionRecords
from stabilize_events.subscriptions.subscription import DurableSubscription, Handler
from stabilize_events.subscriptions.webhook import WebhookSender, validate_webhook_url
from stabilize_events.types import EventType

if TYPE_CHECKING:
    from stabilize_events.store.interface import EventStore

logger = logging.getLogger("stabilize_events.subscriptions")


class SubscriptionManager:
    """Creates, persists and delivers durable subscriptions over one event store.

    ``poll_interval`` is how long the polling thread (`start`) waits when every
    subscription is up to date; a subscription that is behind is read again at
    once. ``batch_size`` is how many events one read returns, and so how many
    may be delivered again after a crash. Webhook settings are described in
    the package docstring (`stabilize_events.subscriptions`).

    The store must keep subscriptions: every built-in store does
    (`KeepsSubscriptions`), and so do Stabilize's own stores (which keep the
    filters, webhook and position but not the settings); `ArgumentTypeError`
    is raised otherwise.
    """

    def __init__(
        self,
        event_store: EventStore,
        poll_interval: float = SUBSCRIPTION_POLL_INTERVAL,
        batch_size: int = SUBSCRIPTION_BATCH_SIZE,
        *,
        webhook_timeout: float = WEBHOOK_TIMEOUT,
        webhook_attempts: int = WEBHOOK_ATTEMPTS,
        webhook_backoff: float = WEBHOOK_BACKOFF,
        webhook_max_backoff: float = WEBHOOK_MAX_BACKOFF,
    ) -> None:
        """A manager over ``event_store``; no thread runs until `start`."""
        records = SubscriptionRecords(event_store)
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, not {batch_size}")
        if poll_interval < 0:
            raise InvalidArgumentError(f"poll_interval must be >= 0, not {poll_interval}")
        self._stop = threading.Event()
        webhooks = WebhookSender(
            timeout=webhook_timeout,
            attempts=webhook_attempts,
            backoff=webhook_backoff,
            max_backoff=webhook_max_backoff,
            stop=self._stop,
        )
        self._event_store = event_store
        self._records = records
        self._delivery = BatchDelivery(records, webhooks, batch_size)
        self._batch_size = batch_size
        self._poller = Poller(self._deliver_round, poll_interval, self._stop, event_store)
        self._subscriptions: dict[str, DurableSubscription] = {}
        self._lock = threading.Lock()

    # -- lifecycle of subscriptions ------------------------------------------

    def create_subscription(
        self,
        subscription_id: str,
        handler: Handler | None,
        event_types: list[EventType] | EventType | str | None = None,
        entity_filter: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        start_from: str | int = "latest",
        *,
        max_errors: int = SUBSCRIPTION_MAX_ERRORS,
        handler_timeout: float | None = None,
        dead_letter_undecodable: bool = False,
    ) -> DurableSubscription:
        """Create (or replace) a subscription and persist it; return it.

        ``start_from`` is ``"latest"`` (only events stored after now),
        ``"beginning"`` (every stored event) or a sequence number (as a string or
        an int: delivery starts after it). Replacing an existing id resets its
        position to ``start_from``; use `load_subscription` to resume instead.
        ``event_types`` is a list of types or one type (a member, or its value such as
        ``"task.failed"``). ``handler`` may be None when ``webhook_url`` is given. With
        ``dead_letter_undecodable`` an event whose payload cannot be decoded is
        parked in the dead-letter list at once instead of retried (see the module doc).
        """
        if not isinstance(subscription_id, str) or not subscription_id:
            raise InvalidArgumentError(f"subscription_id must be a non-empty string, not {subscription_id!r}")
        if handler is None and webhook_url is None:
            raise InvalidArgumentError("a subscription needs a handler, a webhook_url, or both")
        if handler is not None and not callable(handler):
            raise ArgumentTypeError(f"handler must be callable, not {type(handler).__name__}")
        if webhook_url is not None:
            validate_webhook_url(webhook_url)
        if max_errors < 1:
            raise InvalidArgumentError(f"max_errors must be >= 1, not {max_errors}")
        if handler_timeout is not None and handler_timeout <= 0:
            raise InvalidArgumentError(f"handler_timeout must be > 0 seconds, not {handler_timeout}")
        wanted = validate_filters(event_types, entity_filter)
        last_sequence = self._start_position(start_from)

        subscription = DurableSubscription(
            id=subscription_id,
            handler=handler,
            event_types=wanted,
            entity_filter=dict(entity_filter) if entity_filter else None,
            last_sequence=last_sequence,
            webhook_url=webhook_url,
            max_errors=max_errors,
            last_commit_cursor=str(last_sequence),
            handler_timeout=handler_timeout,
            dead_letter_undecodable=bool(dead_letter_undecodable),
        )
        self._register(subscription)
        self._records.save(subscription)
        logger.info("created subscription %s starting after sequence %d", subscription_id, last_sequence)
        return subscription

    def _register(self, subscription: DurableSubscription) -> None:
        """Hold ``subscription``; one it replaces stops saving its position."""
        with self._lock:
            previous = self._subscriptions.get(subscription.id)
            if previous is not None:
                previous._deleted = True
            self._subscriptions[subscription.id] = subscription

    def _start_position(self, start_from: str | int) -> int:
        if start_from == "latest":
            return self._event_store.get_current_sequence()
        if start_from == "beginning":
            return 0
        try:
            sequence = int(start_from)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"start_from must be 'latest', 'beginning' or a sequence number, not {start_from!r}"
            ) from None
        if sequence < 0:
            raise InvalidArgumentError(f"start_from must be a sequence >= 0, not {sequence}")
        return sequence

    def delete_subscription(self, subscription_id: str) -> bool:
        """Forget a subscription here and in the store; return whether it existed in either.

        A batch being delivered to it finishes, but its position is not saved.
        """
        with self._lock:
            subscription = self._subscriptions.pop(subscription_id, None)
        stored = self._records.delete(subscription_id, subscription)
        logger.info("deleted subscription %s", subscription_id)
        return subscription is not None or stored

    def load_subscription(self, subscription_id: str, handler: Handler | None) -> bool:
        """Load a persisted subscription with ``handler``; return False if none is stored.

        Its position, filters, webhook, settings, and disabled state (with the
        reason) are restored as they were saved.
        """
        data = self._records.load(subscription_id)
        if data is None:
            return False
        if handler is None and not data.get("webhook_url"):
            raise InvalidArgumentError(f"subscription {subscription_id!r} has no webhook_url: pass a handler")
        last_sequence = int(data.get("last_sequence") or 0)
        subscription = DurableSubscription(
            id=subscription_id,
            handler=handler,
            event_types=data.get("event_types"),
            entity_filter=data.get("entity_filter"),
            last_sequence=last_sequence,
            webhook_url=data.get("webhook_url"),
            enabled=bool(data.get("enabled", True)),
            error_count=int(data.get("error_count") or 0),
            max_errors=int(data.get("max_errors") or SUBSCRIPTION_MAX_ERRORS),
            last_commit_cursor=str(data.get("last_commit_cursor") or last_sequence),
            handler_timeout=data.get("handler_timeout"),
            last_error=data.get("last_error"),
            disabled_reason=data.get("disabled_reason"),
            dead_letter_undecodable=bool(data.get("dead_letter_undecodable", False)),
            dead_letters=list(data.get("dead_letters") or []),
        )
        self._register(subscription)
        logger.info("loaded subscription %s at sequence %d", subscription_id, last_sequence)
        return True

    def enable_subscription(self, subscription_id: str) -> None:
        """Re-enable a (disabled) subscription and clear its error count; persisted."""
        subscription = self._require(subscription_id)
        with self._records.changing(subscription):
            subscription.enabled = True
            subscription.error_count = 0
            subscription.disabled_reason = None

    def disable_subscription(self, subscription_id: str, reason: str = "disabled by request") -> None:
        """Stop delivering to a subscription (its position is kept); persisted."""
        subscription = self._require(subscription_id)
        with self._records.changing(subscription):
            subscription.enabled = False
            subscription.disabled_reason = reason

    def skip_event(
        self, subscription_id: str, sequence: int | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Move a subscription past the event it is stopped at, into its dead-letter list.

        The event is the next one after the subscription's position; ``sequence``,
        if given, must be its sequence (a guard against skipping another). It is
        recorded in the dead-letter list with ``reason`` (default: the last
        delivery error) and logged with its sequence; the error count is reset and a
        subscription disabled after failed deliveries is enabled again. Returns the
        dead-letter entry. `InvalidArgumentError` if there is no such event.
        """
        subscription = self._require(subscription_id)
        with subscription._delivery_lock:
            if subscription.last_commit_cursor != str(subscription.last_sequence):
                raise InvalidArgumentError(
                    f"cannot skip an event of subscription {subscription_id!r}: this store's commit "
                    "cursor does not name a sequence"
                )
            following = self._event_store.get_events_since(subscription.last_sequence, limit=1)
            if not following:
                raise InvalidArgumentError(
                    f"subscription {subscription_id!r} is up to date at sequence "
                    f"{subscription.last_sequence}: there is no event to skip"
                )
            event = following[0]
            if sequence is not None and sequence != event.sequence:
                raise InvalidArgumentError(
                    f"subscription {subscription_id!r} is stopped at sequence {event.sequence}, "
                    f"not {sequence}: only the next event can be skipped (pass sequence={event.sequence})"
                )
            return self._delivery.park(
                subscription, event, reason or subscription.last_error or "skipped by request"
            )

    def get_dead_letters(self, subscription_id: str) -> list[dict[str, Any]]:
        """The events skipped for a subscription, oldest first (copies of its entries)."""
        return [dict(entry) for entry in self._require(subscription_id).dead_letters]

    def get_subscription(self, subscription_id: str) -> DurableSubscription | None:
        """The subscription object this manager holds, or None."""
        with self._lock:
            return self._subscriptions.get(subscription_id)

    def _require(self, subscription_id: str) -> DurableSubscription:
        with self._lock:
            subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            raise SubscriptionNotFoundError(
                f"no subscription {subscription_id!r} in this manager "
                "(create it, or load it with load_subscription)"
            )
        return subscription

    # -- polling -----------------------------------------------------------------

    def start(self) -> None:
        """Start the polling thread (no-op if it runs)."""
        self._poller.start()

    def stop(self, timeout: float = SUBSCRIPTION_STOP_TIMEOUT) -> None:
        """Stop polling; wait up to ``timeout`` seconds for the batch in progress to finish."""
        self._poller.stop(timeout)

    @property
    def running(self) -> bool:
        """Whether the polling thread runs."""
        return self._poller.running

    @property
    def last_poll_error(self) -> str | None:
        """The last error of the polling loop itself (a store read failing), or None."""
        return self._poller.last_error

    def _deliver_round(self) -> bool:
        """One batch to each subscription; whether one of them is still behind."""
        behind = False
        for subscription in self._snapshot():
            if self._stop.is_set():
                return False
            outcome = self._delivery.process(subscription)
            behind = behind or (outcome.error is None and outcome.processed == self._batch_size)
        return behind

    def _snapshot(self) -> list[DurableSubscription]:
        with self._lock:
            return list(self._subscriptions.values())

    def process_once(self) -> int:
        """Deliver one batch to each enabled subscription; return how many events reached handlers.

        Positions are persisted as during polling. A handler that fails is
        recorded in the subscription's status (and counts toward ``max_errors``)
        rather than raised.
        """
        return sum(self._delivery.process(s).delivered for s in self._snapshot())

    def catch_up(self, subscription_id: str | None = None) -> int:
        """Deliver batches until the subscription (or every one) is up to date or fails.

        Returns how many events reached handlers. `SubscriptionNotFoundError`
        for an unknown id.
        """
        targets = [self._require(subscription_id)] if subscription_id is not None else self._snapshot()
        total = 0
        for subscription in targets:
            while True:
                outcome = self._delivery.process(subscription)
                total += outcome.delivered
                if outcome.error is not None or outcome.processed < self._batch_size:
                    break
        return total

    # -- status ------------------------------------------------------------------

    def get_subscription_status(self, subscription_id: str) -> dict[str, Any] | None:
        """Position, lag, errors and settings of a subscription, or None if this manager has none.

        Keys: ``id``, ``enabled``, ``last_sequence``, ``current_sequence``,
        ``lag``, ``error_count``, ``max_errors``, ``last_error``,
        ``disabled_reason``, ``event_types`` (values), ``entity_filter``,
        ``webhook_url``, ``handler_timeout``, ``events_delivered``, ``dead_letters``
        (how many events were skipped; `get_dead_letters` lists them).
        """
        with self._lock:
            subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            return None
        current = self._event_store.get_current_sequence()
        return {
            "id": subscription.id,
            "enabled": subscription.enabled,
            "last_sequence": subscription.last_sequence,
            "current_sequence": current,
            "lag": max(current - subscription.last_sequence, 0),
            "error_count": subscription.error_count,
            "max_errors": subscription.max_errors,
            "last_error": subscription.last_error,
            "disabled_reason": subscription.disabled_reason,
            "event_types": [t.value for t in subscription.event_types] if subscription.event_types else None,
            "entity_filter": subscription.entity_filter,
            "webhook_url": subscription.webhook_url,
            "handler_timeout": subscription.handler_timeout,
            "events_delivered": subscription.events_delivered,
            "dead_letters": len(subscription.dead_letters),
        }

    def get_all_subscription_status(self) -> list[dict[str, Any]]:
        """`get_subscription_status` of every subscription this manager holds."""
        return [
            status
            for subscription in self._snapshot()
            if (status := self.get_subscription_status(subscription.id)) is not None
        ]

    def __enter__(self) -> SubscriptionManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SubscriptionManager"]
