"""A subscription's filters: checking them when it is created, and matching events against them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from stabilize_events.errors import InvalidArgumentError
from stabilize_events.types import EntityType, EventType, type_filter

if TYPE_CHECKING:
    from stabilize_events._core import Event

#: Keys an ``entity_filter`` may hold.
FILTER_KEYS = frozenset({"entity_type", "workflow_id", "entity_id"})


def _entity_type_value(value: Any) -> str:
    # Any Enum: Stabilize's EntityType members filter like ours.
    return str(value.value) if isinstance(value, Enum) else str(value)


def compile_matcher(
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


def validate_filters(event_types: Any, entity_filter: Mapping[str, Any] | None) -> list[EventType] | None:
    """``event_types`` as a list of `EventType` members (see `type_filter`: one type or its
    value is a list of one; a name that is no event type is refused, never a filter that
    could only match nothing), once ``entity_filter`` is checked too; raises
    `ArgumentTypeError` / `InvalidArgumentError` naming what the filters hold wrong."""
    wanted = type_filter(event_types, EventType, "event_types")
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
    return wanted


__all__ = ["FILTER_KEYS", "compile_matcher", "validate_filters"]
