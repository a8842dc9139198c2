"""The errors durable subscriptions raise (all `StabilizeEventsError`)."""

from __future__ import annotations

from stabilize_events.errors import StabilizeEventsError


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


__all__ = ["HandlerTimeoutError", "SubscriptionError", "SubscriptionNotFoundError", "WebhookDeliveryError"]
