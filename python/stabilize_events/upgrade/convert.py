"""Rows of Stabilize's tables as our values, and the comparison the verification runs.

An event keeps its sequence, event id, type string, timestamp (to the
microsecond), entity, workflow, version, metadata and schema version; its
payload (JSON text in Stabilize's ``data`` column) is decoded and stored by our
codec. What the upgraded event reads back as is what Stabilize's own store
reads the row back as (`expected_fields`), with two deliberate differences:

- timestamps come back in UTC: our table stores the instant (microseconds since
  the epoch), so an offset other than +00:00 (Stabilize writes UTC) becomes the
  same instant in UTC, and a timestamp without an offset is taken as UTC;
- a row whose timestamp or payload Stabilize cannot parse (it substitutes
  "now" or ``{}`` when reading it) stops the upgrade with the sequence named,
  instead of rewriting that history.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, NamedTuple

from stabilize_events import _core
from stabilize_events._core import Event, EventMetadata
from stabilize_events.errors import CorruptEventError
from stabilize_events.types import RAW_EVENT_TYPE, EventType, parse_event_type


class SourceRow(NamedTuple):
    """One row of Stabilize's ``events`` table, columns in `SOURCE_COLUMNS` order."""

    sequence: int
    event_id: str
    event_type: str
    timestamp: str
    entity_type: str
    entity_id: str
    workflow_id: str
    version: int
    data: str | None
    correlation_id: str
    causation_id: str | None
    actor: str | None
    source_handler: str | None
    schema_version: int | None


def source_columns(has_schema_version: bool) -> str:
    """The SELECT list giving `SourceRow` (tables from before Stabilize added
    ``schema_version`` read as version 1, as Stabilize reads them)."""
    last = "schema_version" if has_schema_version else "1"
    return (
        "sequence, event_id, event_type, timestamp, entity_type, entity_id, workflow_id, version, data, "
        f"correlation_id, causation_id, actor, source_handler, {last}"
    )


def bad_row(row: SourceRow, what: str) -> CorruptEventError:
    """The error for a row that cannot be carried over: ``what`` is the reason."""
    return CorruptEventError(
        f"{what}, so Stabilize event at sequence {row.sequence} (event_id {row.event_id}) cannot be "
        f"carried over faithfully; nothing of its chunk was written. Fix or remove that row in "
        f"Stabilize's table events, then run the upgrade again (it resumes)"
    )


def parse_timestamp(text: str) -> datetime:
    """Stabilize's ISO timestamp text as an aware datetime; without an offset it is UTC.

    Raises ValueError if the text is not an ISO timestamp.
    """
    if text.endswith("Z"):  # as Stabilize's reader accepts it
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_data(row: SourceRow) -> dict[str, Any]:
    """The payload of ``row`` (empty text or NULL is ``{}``, as Stabilize reads it)."""
    if not row.data:
        return {}
    try:
        data = json.loads(row.data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise bad_row(row, f"its data is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise bad_row(row, f"its data is a JSON {type(data).__name__}, not an object")
    return data


def event_from_row(row: SourceRow) -> Event:
    """``row`` as our `Event`, with its sequence; the type string is kept as written
    (a type this build does not know stays that string in the table, and its payload
    carries it as a read of it would)."""
    try:
        timestamp = parse_timestamp(row.timestamp)
    except (ValueError, TypeError):
        raise bad_row(row, f"its timestamp {row.timestamp!r} is not an ISO timestamp") from None
    data = parse_data(row)
    try:
        return Event(
            event_id=row.event_id,
            event_type=_core.stored_event_type(row.event_type, data),
            timestamp=timestamp,
            sequence=row.sequence,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            workflow_id=row.workflow_id,
            version=row.version,
            data=data,
            metadata=EventMetadata(
                correlation_id=row.correlation_id,
                causation_id=row.causation_id,
                actor=row.actor or "system",
                source_handler=row.source_handler,
            ),
            schema_version=row.schema_version or 1,
        )
    except (ValueError, TypeError) as exc:
        raise bad_row(row, f"it is not a valid event ({exc})") from None


def expected_fields(row: SourceRow) -> dict[str, Any]:
    """The fields Stabilize's store reads ``row`` back as (timestamps in UTC, see the module doc)."""
    data = parse_data(row)
    event_type = parse_event_type(row.event_type)
    if event_type is EventType.UNKNOWN:
        data = {**data, RAW_EVENT_TYPE: row.event_type}
    return {
        "sequence": row.sequence,
        "event_id": row.event_id,
        "event_type": event_type.value,
        "timestamp": parse_timestamp(row.timestamp),
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "workflow_id": row.workflow_id,
        "version": row.version,
        "data": data,
        "correlation_id": row.correlation_id,
        "causation_id": row.causation_id,
        "actor": row.actor or "system",
        "source_handler": row.source_handler,
        "schema_version": row.schema_version or 1,
    }


def event_fields(event: Event) -> dict[str, Any]:
    """The fields of one of our events, decoded, keyed as `expected_fields`."""
    return {
        "sequence": event.sequence,
        "event_id": event.event_id,
        "event_type": event.event_type.value,
        "timestamp": event.timestamp,
        "entity_type": event.entity_type.value,
        "entity_id": event.entity_id,
        "workflow_id": event.workflow_id,
        "version": event.version,
        "data": event.data,
        "correlation_id": event.metadata.correlation_id,
        "causation_id": event.metadata.causation_id,
        "actor": event.metadata.actor,
        "source_handler": event.metadata.source_handler,
        "schema_version": event.schema_version,
    }


def same_value(a: Any, b: Any) -> bool:
    """Deep equality that tells ``1`` from ``1.0`` and ``True``, and holds for NaN."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        if len(a) != len(b):
            return False
        for key, value in a.items():
            # Same length and every key of ``a`` in ``b``: the same keys.
            if key not in b or not same_value(value, b[key]):
                return False
        return True
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if kind is float:
        if math.isnan(a):
            return math.isnan(b)
        return bool(a == b) and math.copysign(1.0, a) == math.copysign(1.0, b)
    # str, int, bool, None, and aware datetimes (compared as instants, to the microsecond).
    return bool(a == b)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """``field: expected X, got Y`` for each field that differs."""
    return [
        f"{name}: expected {_short(value)}, got {_short(actual.get(name))}"
        for name, value in expected.items()
        if not same_value(value, actual.get(name))
    ]


__all__ = [
    "SourceRow",
    "bad_row",
    "differences",
    "event_fields",
    "event_from_row",
    "expected_fields",
    "parse_data",
    "parse_timestamp",
    "same_value",
    "source_columns",
]
