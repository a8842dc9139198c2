"""Durable subscriptions: consumers that resume where they stopped.

A `DurableSubscription` reads the store in sequence order from its own
position and hands matching events to a handler, a webhook, or both. Its
position, filters and settings live in the event store's own database (the
stores' ``save_subscription`` / ``update_subscription_cursor`` methods), so a
`SubscriptionManager` created after a restart or a crash picks it up with
`SubscriptionManager.load_subscription`.

Delivery guarantees
-------------------

- **In order, at least once.** Events are delivered one at a time in sequence
  order. The position is persisted after every batch (every delivery path:
  the polling thread, `SubscriptionManager.process_once` and
  `SubscriptionManager.catch_up`), and after a failure it is persisted up to
  the last event delivered. It never moves past an event that was not
  delivered; after a crash, the events delivered since the last persisted
  position (at most one batch) are delivered again.
- **Failures are retried, not skipped.** When the handler raises (or the
  webhook fails, or the handler times out), delivery stops at that event, the
  subscription's ``error_count`` goes up and the same event is tried again on
  the next poll (or the next `process_once` / `catch_up`). A successful batch
  resets the count. After ``max_errors`` consecutive failures the subscription
  is disabled: its status says why (``disabled_reason``, ``last_error``), and
  `SubscriptionManager.enable_subscription` turns it back on.
- **Events that can never be delivered: skip them into a dead-letter list.**
  A delivery that keeps failing (a payload that cannot be decoded, say) stops
  the subscription at that event; after ``max_errors`` failures it is disabled,
  as above. `SubscriptionManager.skip_event` moves it past that one event:
  the event is recorded in the subscription's dead-letter list (sequence,
  event id, the last error; persisted with the subscription, see
  `SubscriptionManager.get_dead_letters`), a warning naming its sequence is
  logged, the error count is reset and a subscription disabled by those
  failures is enabled again. With ``dead_letter_undecodable=True`` (at
  `SubscriptionManager.create_subscription`) an event whose stored payload
  cannot be decoded (`CorruptEventError`) is parked that way at once, without
  counting towards ``max_errors``; every other failure is retried as above.
- **Hanging handlers.** With ``handler_timeout`` (seconds) set, each delivery
  runs on a worker thread; one that has not returned in time counts as a
  failure (`HandlerTimeoutError`) and the event is delivered again later. A
  Python thread cannot be killed: the hung call is abandoned, its thread left
  running (as a daemon); if it returns later its result is ignored. The
  timeout covers the whole delivery of one event: the handler and, if set,
  the webhook with its retries. Without ``handler_timeout`` (the default)
  handlers run on the delivering thread, with no per-event overhead, and a
  hanging handler blocks that thread: the polling thread, and with it every
  subscription of the manager, or the caller of `process_once` / `catch_up`.
- **Webhooks.** With ``webhook_url`` each matching event is POSTed as JSON
  (``Event.to_dict()``, ``Content-Type: application/json``). A 2xx answer is
  success; any other answer, a connection error or no answer within
  ``webhook_timeout`` seconds is retried up to ``webhook_attempts`` times in
  all, waiting ``webhook_backoff`` seconds, doubled after each attempt (at most
  ``webhook_max_backoff``). If every attempt fails the delivery fails as above
  (`WebhookDeliveryError`) and is retried on the next poll.

One manager should own a subscription at a time: two managers delivering the
same subscription id would each deliver every event.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from stabilize_events.errors import (
    ArgumentTypeError,
    CorruptEventError,
    InvalidArgumentError,
    StabilizeEventsError,
)
from stabilize_events.types import EntityType, EventType

if TYPE_CHECKING:
    from stabilize_events._core import Event
    from stabilize_events.store.interface import EventStore

logger = logging.getLogger(__name__)

Handler = Callable[["Event"], object]

#: Keys an ``entity_filter`` may hold.
FILTER_KEYS = frozenset({"entity_type", "workflow_id", "entity_id"})

#: Store methods a `SubscriptionManager` needs to persist subscriptions.
_REQUIRED_STORE_METHODS = ("save_subscription", "get_subscription", "delete_subscription")


class SubscriptionError(StabilizeEventsError):
    """Base of the errors raised by durable subscriptions."""


class SubscriptionNotFoundError(SubscriptionError, KeyError):
    """No subscription with this id is known to the manager (or stored)."""

    def __str__(self) -> str:
        # KeyError's str() would show the message in quotes.
        return str(self.args[0]) if self.args else ""


class HandlerTimeoutError(SubscriptionError, TimeoutError):
    """A handler did not return within the subscription's ``handler_timeout``."""


class WebhookDeliveryError(SubscriptionError):
    """Every attempt to POST an event to the subscription's webhook failed."""


@dataclass
class DurableSubscription:
    """A subscription whose position survives restarts.

    ``last_sequence`` is the sequence of the last event handled (delivered or
    filtered out); delivery resumes after it. ``entity_filter`` may hold
    ``entity_type`` (an `EntityType` or its value), ``workflow_id`` and
    ``entity_id``; an event must match all of them.
    """

    id: str
    handler: Handler | None
    event_types: list[EventType] | None = None
    entity_filter: dict[str, Any] | None = None
    last_sequence: int = 0
    webhook_url: str | None = None
    enabled: bool = True
    error_count: int = 0
    max_errors: int = 10
    last_commit_cursor: str = "0"
    handler_timeout: float | None = None
    #: Why the last delivery failed (the error, the event id and sequence), or None.
    last_error: str | None = None
    #: Why the subscription was disabled, or None while it is enabled.
    disabled_reason: str | None = None
    #: Events delivered by this process (not persisted).
    events_delivered: int = 0
    #: Park events whose payload cannot be decoded in ``dead_letters`` at once.
    dead_letter_undecodable: bool = False
    #: Events skipped (`SubscriptionManager.skip_event`), oldest first: ``sequence``,
    #: ``event_id``, ``error`` (why), ``skipped_at`` (ISO time).
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    #: Held while a batch is delivered, so two threads never deliver one subscription.
    _delivery_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _deleted: bool = field(default=False, repr=False, compare=False)

    def matches(self, event: Event) -> bool:
        """Whether this subscription is enabled and its filters accept ``event``."""
        if not self.enabled:
            return False
        matcher = _compile_matcher(self.event_types, self.entity_filter)
        return matcher is None or matcher(event)


def _entity_type_value(value: Any) -> str:
    # Any Enum: Stabilize's EntityType members filter like ours.
    return str(value.value) if isinstance(value, Enum) else str(value)


#: The members an ``event_types`` filter may hold: ours, and Stabilize's, which equal them.
_EVENT_TYPES = frozenset(EventType)


def _compile_matcher(
    event_types: list[EventType] | None, entity_filter: Mapping[str, Any] | None
) -> Callable[[Event], bool] | None:
    """A predicate for the filters, or None when they accept every event."""
    checks: list[Callable[[Event], bool]] = []
    if event_types is not None:
        wanted = frozenset(event_types)
        checks.append(lambda e: e.event_type in wanted)
    if entity_filter:
        if "entity_type" in entity_filter:
            entity_type = EntityType(_entity_type_value(entity_filter["entity_type"]))
            checks.append(lambda e: e.entity_type == entity_type)
        if "workflow_id" in entity_filter:
            workflow_id = entity_filter["workflow_id"]
            checks.append(lambda e: e.workflow_id == workflow_id)
        if "entity_id" in entity_filter:
            entity_id = entity_filter["entity_id"]
            checks.append(lambda e: e.entity_id == entity_id)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda e: all(check(e) for check in checks)


def _validate_filters(event_types: list[EventType] | None, entity_filter: Mapping[str, Any] | None) -> None:
    if event_types is not None:
        # Stabilize's members equal ours (same hash): they filter alike.
        bad = [t for t in event_types if not (isinstance(t, Enum) and t in _EVENT_TYPES)]
        if bad:
            raise ArgumentTypeError(f"event_types must hold EventType members, not {bad!r}")
    if entity_filter:
        unknown = sorted(set(entity_filter) - FILTER_KEYS)
        if unknown:
            raise InvalidArgumentError(
                f"entity_filter keys {unknown} are not supported (use {sorted(FILTER_KEYS)})"
            )
        if "entity_type" in entity_filter:
            value = _entity_type_value(entity_filter["entity_type"])
            if value not in {t.value for t in EntityType}:
                raise InvalidArgumentError(f"entity_filter entity_type {value!r} is not an entity type")


def _keeps_settings(store: Any) -> bool:
    """Whether ``store.save_subscription`` takes our settings (``**settings``, as our stores do);
    Stabilize's stores take only the filters, webhook and position."""
    try:
        parameters = inspect.signature(store.save_subscription).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume one of ours
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD or p.name == "enabled" for p in parameters)


def _validate_webhook_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    # urllib would also open file:// and ftp:// URLs: a webhook must be HTTP.
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgumentError(f"webhook_url must be an http:// or https:// URL, not {url!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _describe(error: BaseException, event: Event) -> str:
    return f"{error!r} on event {event.event_id} (sequence {event.sequence})"


class _Watch:
    """Progress of a batch delivered on a worker thread, shared with the thread that waits on it."""

    __slots__ = ("abandoned", "error", "finished", "lock", "processed", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.processed = 0
        #: monotonic() when the delivery in progress began, None between deliveries.
        self.started: float | None = None
        self.abandoned = False
        self.error: Exception | None = None


@dataclass
class _Outcome:
    """What delivering one batch did: events handled, events delivered, and the failure if any."""

    processed: int = 0
    delivered: int = 0
    error: Exception | None = None


class SubscriptionManager:
    """Creates, persists and delivers durable subscriptions over one event store.

    ``poll_interval`` is how long the polling thread (`start`) waits when every
    subscription is up to date; a subscription that is behind is read again at
    once. ``batch_size`` is how many events one read returns, and so how many
    may be delivered again after a crash. Webhook settings are described in
    the module docstring.

    The store must provide the subscription methods of the built-in stores
    (``save_subscription``, ``get_subscription``, ``delete_subscription`` and
    ``update_subscription_cursor`` or ``update_subscription_sequence``);
    `ArgumentTypeError` is raised otherwise.
    """

    def __init__(
        self,
        event_store: EventStore,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        *,
        webhook_timeout: float = 10.0,
        webhook_attempts: int = 3,
        webhook_backoff: float = 0.5,
        webhook_max_backoff: float = 30.0,
    ) -> None:
        """A manager over ``event_store``; no thread runs until `start`."""
        missing = [m for m in _REQUIRED_STORE_METHODS if not callable(getattr(event_store, m, None))]
        if missing:
            raise ArgumentTypeError(
                f"{type(event_store).__name__} cannot persist subscriptions (missing {', '.join(missing)})"
            )
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, not {batch_size}")
        if poll_interval < 0:
            raise InvalidArgumentError(f"poll_interval must be >= 0, not {poll_interval}")
        if webhook_attempts < 1:
            raise InvalidArgumentError(f"webhook_attempts must be >= 1, not {webhook_attempts}")
        self._event_store = event_store
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._webhook_timeout = webhook_timeout
        self._webhook_attempts = webhook_attempts
        self._webhook_backoff = webhook_backoff
        self._webhook_max_backoff = webhook_max_backoff
        self._subscriptions: dict[str, DurableSubscription] = {}
        self._lock = threading.Lock()
        # Serialises writes of positions and status with deletion, so a batch
        # finishing after delete_subscription cannot write the row back.
        self._persist_lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None
        self._running = False
        self._commit_ordered = self._store_has_commit_cursor()
        self._store_keeps_settings = _keeps_settings(event_store)
        self._opener = urllib.request.build_opener()
        #: The last error of the polling loop itself (a store read failing), or None.
        self.last_poll_error: str | None = None

    # -- lifecycle of subscriptions ------------------------------------------

    def create_subscription(
        self,
        subscription_id: str,
        handler: Handler | None,
        event_types: list[EventType] | None = None,
        entity_filter: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        start_from: str | int = "latest",
        *,
        max_errors: int = 10,
        handler_timeout: float | None = None,
        dead_letter_undecodable: bool = False,
    ) -> DurableSubscription:
        """Create (or replace) a subscription and persist it; return it.

        ``start_from`` is ``"latest"`` (only events stored after now),
        ``"beginning"`` (every stored event) or a sequence number (as a string or
        an int: delivery starts after it). Replacing an existing id resets its
        position to ``start_from``; use `load_subscription` to resume instead.
        ``handler`` may be None when ``webhook_url`` is given. With
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
            _validate_webhook_url(webhook_url)
        if max_errors < 1:
            raise InvalidArgumentError(f"max_errors must be >= 1, not {max_errors}")
        if handler_timeout is not None and handler_timeout <= 0:
            raise InvalidArgumentError(f"handler_timeout must be > 0 seconds, not {handler_timeout}")
        _validate_filters(event_types, entity_filter)
        last_sequence = self._start_position(start_from)

        subscription = DurableSubscription(
            id=subscription_id,
            handler=handler,
            event_types=list(event_types) if event_types is not None else None,
            entity_filter=dict(entity_filter) if entity_filter else None,
            last_sequence=last_sequence,
            webhook_url=webhook_url,
            max_errors=max_errors,
            last_commit_cursor=str(last_sequence),
            handler_timeout=handler_timeout,
            dead_letter_undecodable=bool(dead_letter_undecodable),
        )
        self._register(subscription)
        with self._persist_lock:
            self._save(subscription)
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
        with self._persist_lock:
            if subscription is not None:
                subscription._deleted = True
            stored = self._get_stored(subscription_id) is not None
            self._call_store("delete_subscription", subscription_id)
        logger.info("deleted subscription %s", subscription_id)
        return subscription is not None or stored

    def load_subscription(self, subscription_id: str, handler: Handler | None) -> bool:
        """Load a persisted subscription with ``handler``; return False if none is stored.

        Its position, filters, webhook, settings, and disabled state (with the
        reason) are restored as they were saved.
        """
        data = self._get_stored(subscription_id)
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
            max_errors=int(data.get("max_errors") or 10),
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
        with self._persist_lock:
            subscription.enabled = True
            subscription.error_count = 0
            subscription.disabled_reason = None
            self._save(subscription)

    def disable_subscription(self, subscription_id: str, reason: str = "disabled by request") -> None:
        """Stop delivering to a subscription (its position is kept); persisted."""
        subscription = self._require(subscription_id)
        with self._persist_lock:
            subscription.enabled = False
            subscription.disabled_reason = reason
            self._save(subscription)

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
            return self._park(subscription, event, reason or subscription.last_error or "skipped by request")

    def get_dead_letters(self, subscription_id: str) -> list[dict[str, Any]]:
        """The events skipped for a subscription, oldest first (copies of its entries)."""
        return [dict(entry) for entry in self._require(subscription_id).dead_letters]

    def _park(self, subscription: DurableSubscription, event: Event, why: str) -> dict[str, Any]:
        """Record ``event`` as a dead letter and move the position past it. Caller holds the delivery lock."""
        entry = {
            "sequence": event.sequence,
            "event_id": event.event_id,
            "error": why,
            "skipped_at": datetime.now(UTC).isoformat(),
        }
        with self._persist_lock:
            subscription.dead_letters.append(entry)
            subscription.last_sequence = event.sequence
            subscription.last_commit_cursor = str(event.sequence)
            if subscription.error_count >= subscription.max_errors and not subscription.enabled:
                subscription.enabled = True
                subscription.disabled_reason = None
            subscription.error_count = 0
            subscription.last_error = None
            self._save(subscription)
        logger.warning(
            "subscription %s: event %s (sequence %d) skipped into the dead-letter list: %s",
            subscription.id,
            event.event_id,
            event.sequence,
            why,
        )
        return dict(entry)

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
        if self._running:
            return
        self._running = True
        self._stop.clear()
        self._poll_thread = threading.Thread(target=self._poll_loop, name="subscription-manager", daemon=True)
        self._poll_thread.start()
        logger.info("subscription manager started")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; wait up to ``timeout`` seconds for the batch in progress to finish."""
        self._running = False
        self._stop.set()
        thread = self._poll_thread
        if thread is not None:
            thread.join(timeout=timeout)
            if thread.is_alive():
                logger.warning("subscription manager thread still delivering after %.1fs", timeout)
            self._poll_thread = None
        logger.info("subscription manager stopped")

    @property
    def running(self) -> bool:
        """Whether the polling thread runs."""
        return self._running

    def _open_waiter(self) -> Any:
        """The store's notification waiter (PostgreSQL: LISTEN), or None to poll only."""
        opener = getattr(self._event_store, "open_notification_waiter", None)
        if not callable(opener):
            return None
        try:
            return opener()
        except Exception as error:
            logger.warning("subscription manager polls only: cannot listen for new events (%r)", error)
            return None

    def _idle(self, waiter: Any) -> None:
        """Wait ``poll_interval`` seconds, or less when the store signals a new event or stop() runs."""
        if waiter is None:
            self._stop.wait(self._poll_interval)
            return
        deadline = time.monotonic() + self._poll_interval
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or waiter.wait(min(left, 0.1)):
                return

    def _poll_loop(self) -> None:
        waiter = self._open_waiter()
        try:
            self._poll_until_stopped(waiter)
        finally:
            if waiter is not None:
                waiter.close()

    def _poll_until_stopped(self, waiter: Any) -> None:
        while not self._stop.is_set():
            behind = False
            try:
                for subscription in self._snapshot():
                    if self._stop.is_set():
                        return
                    outcome = self._process(subscription)
                    behind = behind or (outcome.error is None and outcome.processed == self._batch_size)
                self.last_poll_error = None
            except Exception as error:
                # A store failure, not a handler's: nothing was delivered past
                # the saved position, so waiting and reading again is safe.
                self.last_poll_error = repr(error)
                logger.exception("subscription poll failed")
                behind = False
            if not behind:
                self._idle(waiter)

    def _snapshot(self) -> list[DurableSubscription]:
        with self._lock:
            return list(self._subscriptions.values())

    def process_once(self) -> int:
        """Deliver one batch to each enabled subscription; return how many events reached handlers.

        Positions are persisted as during polling. A handler that fails is
        recorded in the subscription's status (and counts toward ``max_errors``)
        rather than raised.
        """
        return sum(self._process(s).delivered for s in self._snapshot())

    def catch_up(self, subscription_id: str | None = None) -> int:
        """Deliver batches until the subscription (or every one) is up to date or fails.

        Returns how many events reached handlers. `SubscriptionNotFoundError`
        for an unknown id.
        """
        targets = [self._require(subscription_id)] if subscription_id is not None else self._snapshot()
        total = 0
        for subscription in targets:
            while True:
                outcome = self._process(subscription)
                total += outcome.delivered
                if outcome.error is not None or outcome.processed < self._batch_size:
                    break
        return total

    # -- delivery --------------------------------------------------------------

    def _process(self, subscription: DurableSubscription) -> _Outcome:
        """Read and deliver one batch of ``subscription``, then persist how far it got."""
        with subscription._delivery_lock:
            if not subscription.enabled or subscription._deleted:
                return _Outcome()
            events, cursor = self._read(subscription)
            if not events:
                if cursor != subscription.last_commit_cursor:
                    # Nothing to deliver but the commit frontier moved: saving
                    # it avoids rescanning the same empty range.
                    subscription.last_commit_cursor = cursor
                    self._persist_position(subscription)
                return _Outcome()
            outcome = _Outcome()
            try:
                self._deliver(subscription, events, outcome)
            finally:
                # Also on BaseException (KeyboardInterrupt in a handler): what
                # was delivered must not be delivered again.
                self._advance(subscription, events, cursor, outcome.processed)
            subscription.events_delivered += outcome.delivered
            if (
                outcome.error is not None
                and subscription.dead_letter_undecodable
                and isinstance(outcome.error, CorruptEventError)
            ):
                event = events[outcome.processed]
                self._park(subscription, event, _describe(outcome.error, event))
            elif outcome.error is not None:
                self._record_failure(subscription, outcome.error, events[outcome.processed])
            elif subscription.error_count:
                with self._persist_lock:
                    subscription.error_count = 0
                    self._save(subscription)
            return outcome

    def _read(self, subscription: DurableSubscription) -> tuple[list[Event], str]:
        if self._commit_ordered:
            read_committed = getattr(self._event_store, "get_events_since_committed")  # noqa: B009
            events, cursor = read_committed(subscription.last_commit_cursor, limit=self._batch_size)
            return events, str(cursor)
        events = self._event_store.get_events_since(subscription.last_sequence, limit=self._batch_size)
        return events, str(events[-1].sequence) if events else subscription.last_commit_cursor

    def _advance(
        self, subscription: DurableSubscription, events: list[Event], cursor: str, processed: int
    ) -> None:
        """Move the position past the first ``processed`` events of the batch and persist it."""
        if processed == 0:
            return
        last = events[processed - 1]
        if processed == len(events):
            subscription.last_commit_cursor = cursor
        elif cursor == str(events[-1].sequence):
            # The store's cursor is the sequence, so a partial batch has a cursor too.
            subscription.last_commit_cursor = str(last.sequence)
        else:
            # An opaque commit cursor cannot point inside a batch: keep the
            # batch start, and the delivered part will be delivered again.
            return
        subscription.last_sequence = last.sequence
        self._persist_position(subscription)

    def _deliver(self, subscription: DurableSubscription, events: list[Event], outcome: _Outcome) -> None:
        """Deliver ``events`` in order, stopping at the first failure; fills ``outcome``."""
        deliver = self._delivery_function(subscription)
        matcher = _compile_matcher(subscription.event_types, subscription.entity_filter)
        if subscription.handler_timeout is None:
            _deliver_inline(events, deliver, matcher, outcome)
        else:
            _deliver_watched(subscription, events, deliver, matcher, outcome)

    def _delivery_function(self, subscription: DurableSubscription) -> Callable[[Event], object]:
        handler, url = subscription.handler, subscription.webhook_url
        if url is None:
            assert handler is not None  # create/load refuse a subscription with neither
            return handler
        post = self._post_webhook
        sub_id = subscription.id
        if handler is None:
            return lambda event: post(url, sub_id, event)

        def both(event: Event) -> None:
            handler(event)
            post(url, sub_id, event)

        return both

    def _post_webhook(self, url: str, subscription_id: str, event: Event) -> None:
        """POST ``event`` as JSON to ``url``, retrying with back-off; raise if every attempt fails."""
        body = json.dumps(event.to_dict(), default=_json_default).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stabilize-events",
            "X-Subscription-Id": subscription_id,
            "X-Event-Id": event.event_id,
            "X-Event-Sequence": str(event.sequence),
        }
        delay = self._webhook_backoff
        failure = ""
        for attempt in range(1, self._webhook_attempts + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self._webhook_timeout) as response:
                    response.read()
                    if 200 <= response.status < 300:
                        return
                    failure = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                failure = f"HTTP {error.code}"
                error.close()
            except (OSError, ValueError) as error:  # URLError, timeouts, refused connections
                failure = repr(error)
            logger.warning(
                "webhook %s attempt %d/%d for event %s failed: %s",
                url,
                attempt,
                self._webhook_attempts,
                event.event_id,
                failure,
            )
            if attempt < self._webhook_attempts:
                if self._stop.wait(delay):
                    break  # stopping: give up now, the event is delivered again later
                delay = min(delay * 2, self._webhook_max_backoff)
        raise WebhookDeliveryError(f"POST {url} failed after {attempt} attempt(s): {failure}")

    def _record_failure(self, subscription: DurableSubscription, error: Exception, event: Event) -> None:
        description = _describe(error, event)
        with self._persist_lock:
            subscription.error_count += 1
            subscription.last_error = description
            if subscription.error_count >= subscription.max_errors:
                subscription.enabled = False
                subscription.disabled_reason = (
                    f"disabled after {subscription.error_count} consecutive failed deliveries; "
                    f"last: {description}"
                )
            self._save(subscription)
        if subscription.enabled:
            logger.warning(
                "subscription %s: delivery failed (%d/%d), will retry: %s",
                subscription.id,
                subscription.error_count,
                subscription.max_errors,
                description,
            )
        else:
            logger.error("subscription %s %s", subscription.id, subscription.disabled_reason)

    # -- persistence -------------------------------------------------------------

    def _store_has_commit_cursor(self) -> bool:
        store = self._event_store
        if not callable(getattr(store, "get_events_since_committed", None)):
            return False
        supports = getattr(store, "supports_commit_cursor", None)
        return bool(supports()) if callable(supports) else True

    def _call_store(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._event_store, method)(*args, **kwargs)

    def _get_stored(self, subscription_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call_store("get_subscription", subscription_id)
        return found

    def _save(self, subscription: DurableSubscription) -> None:
        """Write the whole subscription (settings, status, position). Caller holds _persist_lock."""
        if subscription._deleted:
            return
        self._call_store(
            "save_subscription",
            subscription_id=subscription.id,
            event_types=subscription.event_types,
            entity_filter=subscription.entity_filter,
            last_sequence=subscription.last_sequence,
            webhook_url=subscription.webhook_url,
            **(self._settings(subscription) if self._store_keeps_settings else {}),
        )

    @staticmethod
    def _settings(subscription: DurableSubscription) -> dict[str, Any]:
        return {
            "enabled": subscription.enabled,
            "error_count": subscription.error_count,
            "max_errors": subscription.max_errors,
            "handler_timeout": subscription.handler_timeout,
            "last_error": subscription.last_error,
            "disabled_reason": subscription.disabled_reason,
            "dead_letter_undecodable": subscription.dead_letter_undecodable,
            "dead_letters": [dict(entry) for entry in subscription.dead_letters],
        }

    def _persist_position(self, subscription: DurableSubscription) -> None:
        store = self._event_store
        with self._persist_lock:
            if subscription._deleted:
                return
            update_cursor = getattr(store, "update_subscription_cursor", None)
            if callable(update_cursor):
                update_cursor(subscription.id, subscription.last_sequence, subscription.last_commit_cursor)
                return
            update_sequence = getattr(store, "update_subscription_sequence", None)
            if callable(update_sequence):
                update_sequence(subscription.id, subscription.last_sequence)
            else:
                self._save(subscription)

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


def _deliver_inline(
    events: list[Event],
    deliver: Callable[[Event], object],
    matcher: Callable[[Event], bool] | None,
    outcome: _Outcome,
) -> None:
    """Deliver on this thread until the batch ends or a delivery raises."""
    processed = delivered = 0
    try:
        if matcher is None:
            for event in events:
                deliver(event)
                processed += 1
        else:
            for event in events:
                if matcher(event):
                    deliver(event)
                    delivered += 1
                processed += 1
    except Exception as error:
        outcome.error = error
    finally:
        # Filled even when a BaseException escapes, so the caller can still
        # save the position of what was delivered.
        outcome.processed = processed
        outcome.delivered = processed if matcher is None else delivered


def _deliver_watched(
    subscription: DurableSubscription,
    events: list[Event],
    deliver: Callable[[Event], object],
    matcher: Callable[[Event], bool] | None,
    outcome: _Outcome,
) -> None:
    """Deliver on a worker thread, giving up on a delivery that outlasts ``handler_timeout``."""
    timeout = subscription.handler_timeout
    assert timeout is not None
    watch = _Watch()

    def work() -> None:
        try:
            for event in events:
                wanted = matcher is None or matcher(event)
                if wanted:
                    watch.started = time.monotonic()
                    deliver(event)
                with watch.lock:
                    if watch.abandoned:
                        return  # too late: the event counts as undelivered
                    watch.started = None
                    watch.processed += 1
                    outcome.delivered += 1 if wanted else 0
        except Exception as error:
            with watch.lock:
                if not watch.abandoned:
                    watch.error = error
        finally:
            watch.finished.set()

    worker = threading.Thread(target=work, name=f"subscription-{subscription.id}", daemon=True)
    worker.start()
    while not watch.finished.is_set():
        started = watch.started
        remaining = timeout if started is None else started + timeout - time.monotonic()
        if remaining > 0:
            watch.finished.wait(remaining)
            continue
        with watch.lock:
            # Re-checked under the lock: the delivery may have just returned,
            # or the next one just begun.
            started = watch.started
            if started is not None and time.monotonic() - started >= timeout:
                watch.abandoned = True
                watch.error = HandlerTimeoutError(
                    f"handler of subscription {subscription.id!r} did not return within {timeout}s"
                )
                break
    with watch.lock:
        outcome.processed = watch.processed
        outcome.error = watch.error
