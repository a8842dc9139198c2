"""`BatchDelivery`: one batch of a subscription read, handed over in order, and its outcome kept.

A batch is read from the subscription's position, each matching event is given
to the handler and/or the webhook (on this thread, or on a watched worker thread
when the subscription has a ``handler_timeout``), and the position is persisted
up to the last event handled, also when a delivery fails or a `BaseException`
escapes. A failure counts towards ``max_errors``; an undecodable event may be
parked in the dead-letter list instead (``dead_letter_undecodable``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stabilize_events.errors import CorruptEventError
from stabilize_events.subscriptions.errors import HandlerTimeoutError
from stabilize_events.subscriptions.filters import compile_matcher

if TYPE_CHECKING:
    from stabilize_events._core import Event
    from stabilize_events.subscriptions.records import SubscriptionRecords
    from stabilize_events.subscriptions.subscription import DurableSubscription
    from stabilize_events.subscriptions.webhook import WebhookSender

logger = logging.getLogger("stabilize_events.subscriptions")


@dataclass
class Outcome:
    """What delivering one batch did: events handled, events delivered, and the failure if any."""

    processed: int = 0
    delivered: int = 0
    error: Exception | None = None


def describe(error: BaseException, event: Event) -> str:
    """A failure as status and logs show it: the error, the event id and its sequence."""
    return f"{error!r} on event {event.event_id} (sequence {event.sequence})"


class BatchDelivery:
    """Delivers batches of at most ``batch_size`` events, persisting positions and status in
    ``records`` and sending webhooks through ``webhooks``."""

    def __init__(self, records: SubscriptionRecords, webhooks: WebhookSender, batch_size: int) -> None:
        """Deliver with these collaborators; nothing is read until `process`."""
        self._records = records
        self._webhooks = webhooks
        self.batch_size = batch_size

    def process(self, subscription: DurableSubscription) -> Outcome:
        """Read and deliver one batch of ``subscription``, then persist how far it got."""
        with subscription._delivery_lock:
            if not subscription.enabled or subscription._deleted:
                return Outcome()
            events, cursor = self._records.read(subscription, self.batch_size)
            if not events:
                if cursor != subscription.last_commit_cursor:
                    # Nothing to deliver but the commit frontier moved: saving
                    # it avoids rescanning the same empty range.
                    subscription.last_commit_cursor = cursor
                    self._records.save_position(subscription)
                return Outcome()
            outcome = Outcome()
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
                self.park(subscription, event, describe(outcome.error, event))
            elif outcome.error is not None:
                self._record_failure(subscription, outcome.error, events[outcome.processed])
            elif subscription.error_count:
                with self._records.changing(subscription):
                    subscription.error_count = 0
            return outcome

    def park(self, subscription: DurableSubscription, event: Event, why: str) -> dict[str, Any]:
        """Record ``event`` as a dead letter and move the position past it; return the entry.
        Caller holds the subscription's delivery lock."""
        entry = {
            "sequence": event.sequence,
            "event_id": event.event_id,
            "error": why,
            "skipped_at": datetime.now(UTC).isoformat(),
        }
        with self._records.changing(subscription):
            subscription.dead_letters.append(entry)
            subscription.last_sequence = event.sequence
            subscription.last_commit_cursor = str(event.sequence)
            if subscription.error_count >= subscription.max_errors and not subscription.enabled:
                subscription.enabled = True
                subscription.disabled_reason = None
            subscription.error_count = 0
            subscription.last_error = None
        logger.warning(
            "subscription %s: event %s (sequence %d) skipped into the dead-letter list: %s",
            subscription.id,
            event.event_id,
            event.sequence,
            why,
        )
        return dict(entry)

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
        self._records.save_position(subscription)

    def _deliver(self, subscription: DurableSubscription, events: list[Event], outcome: Outcome) -> None:
        """Deliver ``events`` in order, stopping at the first failure; fills ``outcome``."""
        deliver = self._delivery_function(subscription)
        matcher = compile_matcher(subscription.event_types, subscription.entity_filter)
        if subscription.handler_timeout is None:
            _deliver_inline(events, deliver, matcher, outcome)
        else:
            _deliver_watched(subscription, events, deliver, matcher, outcome)

    def _delivery_function(self, subscription: DurableSubscription) -> Callable[[Event], object]:
        handler, url = subscription.handler, subscription.webhook_url
        if url is None:
            assert handler is not None  # create/load refuse a subscription with neither
            return handler
        post = self._webhooks.post
        sub_id = subscription.id
        if handler is None:
            return lambda event: post(url, sub_id, event)

        def both(event: Event) -> None:
            handler(event)
            post(url, sub_id, event)

        return both

    def _record_failure(self, subscription: DurableSubscription, error: Exception, event: Event) -> None:
        description = describe(error, event)
        if isinstance(error, CorruptEventError):
            # Retrying cannot help: say how to get past it.
            description += (
                f"; its stored payload cannot be decoded, so it can never be delivered: skip it into "
                f"the dead-letter list with manager.skip_event({subscription.id!r}, {event.sequence}), "
                "or create the subscription with dead_letter_undecodable=True"
            )
        with self._records.changing(subscription):
            subscription.error_count += 1
            subscription.last_error = description
            if subscription.error_count >= subscription.max_errors:
                subscription.enabled = False
                subscription.disabled_reason = (
                    f"disabled after {subscription.error_count} consecutive failed deliveries; "
                    f"last: {description}"
                )
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


def _deliver_inline(
    events: list[Event],
    deliver: Callable[[Event], object],
    matcher: Callable[[Event], bool] | None,
    outcome: Outcome,
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
    outcome: Outcome,
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


__all__ = ["BatchDelivery", "Outcome", "describe"]
