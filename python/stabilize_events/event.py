"""The event model: `Event`, `EventMetadata` (both implemented in Rust) and factories.

`Event` is immutable and compares, hashes, pickles and copies like a frozen
dataclass. Its payload (`data`) is decoded from the stored bytes only when first
read, so reading many events and touching few payloads stays cheap.
"""

from __future__ import annotations

from typing import Any

from stabilize_events._core import Event, EventMetadata
from stabilize_events.types import EntityType, EventType


def create_workflow_event(
    event_type: EventType,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    """An event about the workflow itself (its entity id is the workflow id)."""
    return Event(
        event_type=event_type,
        entity_type=EntityType.WORKFLOW,
        entity_id=workflow_id,
        workflow_id=workflow_id,
        version=version,
        data=data,
        metadata=metadata,
    )


def create_stage_event(
    event_type: EventType,
    stage_id: str,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    """An event about one stage of a workflow."""
    return Event(
        event_type=event_type,
        entity_type=EntityType.STAGE,
        entity_id=stage_id,
        workflow_id=workflow_id,
        version=version,
        data=data,
        metadata=metadata,
    )


def create_task_event(
    event_type: EventType,
    task_id: str,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    """An event about one task of a stage."""
    return Event(
        event_type=event_type,
        entity_type=EntityType.TASK,
        entity_id=task_id,
        workflow_id=workflow_id,
        version=version,
        data=data,
        metadata=metadata,
    )


__all__ = [
    "Event",
    "EventMetadata",
    "create_stage_event",
    "create_task_event",
    "create_workflow_event",
]
