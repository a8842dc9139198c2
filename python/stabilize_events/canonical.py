"""Canonical form of folded state, and its SHA-256 integrity hash.

Snapshots carry the hash of their state; a snapshot whose stored state no
longer hashes to it is never used. The canonical form is JSON with sorted keys
and no whitespace; values JSON cannot hold are written as their ``str``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(state: Any) -> str:
    """``state`` as canonical JSON: sorted keys, compact separators."""
    return json.dumps(state, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def state_hash(state: Any) -> str:
    """The hex SHA-256 of the canonical JSON of ``state``."""
    return hashlib.sha256(canonical_json(state).encode("utf-8", "surrogatepass")).hexdigest()
