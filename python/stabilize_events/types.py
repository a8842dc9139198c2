"""Enumerations of the event model: what happened (`EventType`) and to what (`EntityType`).

These are plain Python enums so that they compare, hash and pickle like the
reference's; the Rust core looks their members up once and caches them.

Each member also equals Stabilize's member of the same name
(``stabilize.events.EventType.TASK_FAILED == EventType.TASK_FAILED``, with
equal hashes), so Stabilize's replayer, projections and bus filters work on
events read from our stores, and ours on events from Stabilize's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import TypeVar

from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError

logger = logging.getLogger(__name__)

#: Schema version written by this build. Events with a newer schema are never
#: applied by replay (their field layout is unknown to us).
CURRENT_SCHEMA_VERSION = 1

#: Key under which an event of an unrecognised type keeps its original type string.
RAW_EVENT_TYPE = "_raw_event_type"


#: Where Stabilize defines the enums whose members ours equal.
STABILIZE_ENUM_MODULE = "stabilize.events.base"


class _SameAsStabilize(Enum):
    """A member equals itself and Stabilize's member of the same class name and value."""

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        kind = type(other)
        if kind.__module__ == STABILIZE_ENUM_MODULE and kind.__name__ == type(self).__name__:
            return bool(self._value_ == getattr(other, "_value_", None))
        return NotImplemented

    # Enum hashes a member by its name, as Stabilize's do: equal members hash alike.
    def __hash__(self) -> int:
        return hash(self._name_)


class EventType(_SameAsStabilize):
    """Every kind of event, grouped by the entity whose lifecycle it records."""

    # Workflow lifecycle
    WORKFLOW_CREATED = "workflow.created"
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_CANCELED = "workflow.canceled"
    WORKFLOW_PAUSED = "workflow.paused"
    WORKFLOW_RESUMED = "workflow.resumed"

    # Stage lifecycle
    STAGE_STARTED = "stage.started"
    STAGE_COMPLETED = "stage.completed"
    STAGE_FAILED = "stage.failed"
    STAGE_SKIPPED = "stage.skipped"
    STAGE_CANCELED = "stage.canceled"
    STAGE_SUSPENDED = "stage.suspended"
    STAGE_RESUMED = "stage.resumed"

    # Task lifecycle
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_RETRIED = "task.retried"
    TASK_SUSPENDED = "task.suspended"

    # State changes
    STATUS_CHANGED = "status.changed"
    CONTEXT_UPDATED = "context.updated"
    OUTPUTS_UPDATED = "outputs.updated"
    JUMP_EXECUTED = "jump.executed"

    # Free-form progress emitted by tasks (token chunks, step narration).
    CUSTOM = "custom.progress"

    # A type this build does not know (written by a newer version). The stored
    # string is kept in ``event.data[RAW_EVENT_TYPE]``.
    UNKNOWN = "unknown.event"


class EntityType(_SameAsStabilize):
    """The kinds of entity that emit events."""

    WORKFLOW = "workflow"
    STAGE = "stage"
    TASK = "task"


def parse_event_type(value: str) -> EventType:
    """Return the `EventType` spelled `value`, or `EventType.UNKNOWN` if none is.

    Reading must not fail because a newer writer used a type we do not know.
    """
    try:
        return EventType(value)
    except ValueError:
        logger.debug("unrecognised event_type %r read as UNKNOWN", value)
        return EventType.UNKNOWN


_Kind = TypeVar("_Kind", bound=Enum)

_LABELS = {"EventType": "event type", "EntityType": "entity type"}


def type_filter(given: object, kind: type[_Kind], name: str) -> list[_Kind] | None:
    """A filter argument (``event_types``, ``entity_types``) as a list of ``kind`` members:
    None stays None, one type (a member, Stabilize's equal member, or its value such as
    ``"task.failed"``) is a list of one, values are taken as their members.

    Raises `InvalidArgumentError` for a name that is no such type (a filter that could only
    match nothing) and `ArgumentTypeError` for anything else, naming ``name``.
    """
    if given is None:
        return None
    label = _LABELS.get(kind.__name__, kind.__name__)
    items: Iterable[object]
    if isinstance(given, (str, Enum)):
        items = [given]
    elif isinstance(given, Iterable) and not isinstance(given, (bytes, dict)):
        items = given
    else:
        raise ArgumentTypeError(
            f"{name} must be a list of {label}s (or one {label}), not {type(given).__name__}"
        )
    wanted: list[_Kind] = []
    for item in items:
        value = item.value if isinstance(item, Enum) else item
        if not isinstance(value, str):
            raise ArgumentTypeError(
                f"{name} must hold {kind.__name__} members, not {type(item).__name__} {item!r}"
            )
        try:
            wanted.append(kind(value))
        except ValueError:
            members = list(kind)
            example = (
                ", ".join(repr(m.value) for m in members)
                if len(members) <= 5
                else f"{kind.__name__}.{members[0].name} or {members[0].value!r}"
            )
            raise InvalidArgumentError(
                f"{name}: {value!r} is not an {label}, so the filter could only match nothing; use "
                f"{kind.__name__} members or their values ({example})"
            ) from None
    return wanted
