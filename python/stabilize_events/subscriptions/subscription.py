"""`DurableSubscription`: one subscription's filters, settings, position and status."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize_events.subscriptions.filters import compile_matcher
from stabilize_events.types import EventType

if TYPE_CHECKING:
    from stabilize_events._core import Event

#: What a subscription hands each event to; its return value is ignored.
Handler = Callable[["Event"], object]


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
        matcher = compile_matcher(self.event_types, self.entity_filter)
        return matcher is None or matcher(event)

    def settings(self) -> dict[str, Any]:
        """What a store keeps of this subscription beside its filters, webhook and position."""
        return {
            "enabled": self.enabled,
            "error_count": self.error_count,
            "max_errors": self.max_errors,
            "handler_timeout": self.handler_timeout,
            "last_error": self.last_error,
            "disabled_reason": self.disabled_reason,
            "dead_letter_undecodable": self.dead_letter_undecodable,
            "dead_letters": [dict(entry) for entry in self.dead_letters],
        }


__all__ = ["DurableSubscription", "Handler"]
