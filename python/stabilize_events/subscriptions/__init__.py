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

Modules, one idea each: `manager` (`SubscriptionManager`), `subscription`
(`DurableSubscription`), `filters`, `delivery` (a batch delivered and its
position saved), `webhook` (HTTP with back-off), `records` (persistence over the
store's `KeepsSubscriptions`), `polling` (the thread) and `errors`.
"""

from stabilize_events.subscriptions.errors import (
    HandlerTimeoutError,
    SubscriptionError,
    SubscriptionNotFoundError,
    WebhookDeliveryError,
)
from stabilize_events.subscriptions.filters import FILTER_KEYS
from stabilize_events.subscriptions.manager import SubscriptionManager
from stabilize_events.subscriptions.subscription import DurableSubscription, Handler

__all__ = [
    "FILTER_KEYS",
    "DurableSubscription",
    "Handler",
    "HandlerTimeoutError",
    "SubscriptionError",
    "SubscriptionManager",
    "SubscriptionNotFoundError",
    "WebhookDeliveryError",
]
