"""The export's JSON Lines record of an event, written in Python: the oracle the core's
encoder (`_core.jsonl_encode_events`) is checked against, byte for byte."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from stabilize_events import Event
from stabilize_events._core import encode_payload

_SCALARS = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> bool:
    """Whether JSON gives ``value`` back exactly (types included)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def event_record(event: Event) -> dict[str, Any]:
    """``event`` as one JSON Lines record, as a dict."""
    metadata = event.metadata
    record: dict[str, Any] = {
        "sequence": event.sequence,
        "event_id": event.event_id,
        "event_type": event.event_type.value,
        "timestamp": event.timestamp.isoformat(),
        "entity_type": event.entity_type.value,
        "entity_id": event.entity_id,
        "workflow_id": event.workflow_id,
        "version": event.version,
    }
    data = event.data
    if _plain(data):
        record["data"] = data
    else:
        record["data_msgpack"] = base64.b64encode(encode_payload(data)).decode("ascii")
    record["metadata"] = {
        "correlation_id": metadata.correlation_id,
        "causation_id": metadata.causation_id,
        "actor": metadata.actor,
        "source_handler": metadata.source_handler,
    }
    record["schema_version"] = event.schema_version
    return record


def event_line(event: Event) -> bytes:
    """``event``'s line of an export (newline included)."""
    text = json.dumps(event_record(event), ensure_ascii=False, separators=(",", ":"))
    return (text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n").encode()
