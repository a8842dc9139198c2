"""The event model: `Event`, `EventMetadata` (both implemented in Rust) and factories.

`Event` is immutable and compares, hashes, pickles and copies like a frozen
dataclass. Its payload (`data`) is decoded from the stored bytes only when first
read, so reading many events and touching few payloads stays cheap.
"""

from __future__ import annotations

from typing import Any

from stabilize_events._core import Event, EventMetadata
from stabilize_events.types import EntityType, EventType


def _entity_event(
    entity_type: EntityType,
    event_type: EventType,
    entity_id: str,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    return Event(
        event_type=event_type,
        entity_type=entity_type,
        entity_id=entity_id,
        workflow_id=workflow_id,
        version=version,
        data=data,
        metadata=metadata,
    )


def create_workflow_event(
    event_type: EventType,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    """An event about the workflow itself (its entity id is the workflow id)."""
    return _entity_event(EntityType.WORKFLOW, event_type, workflow_id, workflow_id, version, data, metadata)


def create_stage_event(
    event_type: EventType,
    stage_id: str,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    """An event about one stage of a workflow."""
    return _entity_event(EntityType.STAGE, event_type, stage_id, workflow_id, version, data, metadata)


def create_task_event(
    event_type: EventType,
    task_id: str,
    workflow_id: str,
    version: int,
    data: dict[str, Any],
    metadata: EventMetadata,
) -> Event:
    """An event about one task of a stage."""
    return _entity_event(EntityType.TASK, event_type, task_id, workflow_id, version, data, metadata)


__all__ = [
    "Event",
    "EventMetadata",
    "create_stage_event",
    "create_task_event",
    "create_workflow_event",
]
