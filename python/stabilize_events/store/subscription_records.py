"""How every store keeps a durable subscription: its settings as one config mapping.

A store persists ``(id, config, last_sequence, updated_at)``; these two functions
build the config from `EventStore.save_subscription`'s arguments and turn a
stored row back into the dict `get_subscription` returns, the same in each store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stabilize_events.types import EventType, parse_event_type


def subscription_config(
    event_types: list[EventType] | None,
    entity_filter: dict[str, Any] | None,
    webhook_url: str | None,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The config a store saves for a subscription (event types as their strings)."""
    return {
        "event_types": [getattr(t, "value", t) for t in event_types] if event_types else None,
        "entity_filter": entity_filter,
        "webhook_url": webhook_url,
        **settings,
    }


def subscription_from_row(
    subscription_id: str, config: Mapping[str, Any] | None, last_sequence: int, updated_at: datetime
) -> dict[str, Any]:
    """The dict `get_subscription` returns for a stored subscription (the commit cursor is
    the sequence in every built-in store)."""
    settings: dict[str, Any] = dict(config or {})
    types = settings.pop("event_types", None)
    return {
        **settings,
        "id": subscription_id,
        "event_types": [parse_event_type(t) for t in types] if types else None,
        "entity_filter": settings.get("entity_filter"),
        "webhook_url": settings.get("webhook_url"),
        "last_sequence": last_sequence,
        "last_commit_cursor": str(last_sequence),
        "updated_at": updated_at,
    }


__all__ = ["subscription_config", "subscription_from_row"]
