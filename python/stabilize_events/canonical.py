"""Canonical form of folded state, and its SHA-256 integrity hash.

Snapshots carry the hash of their state; a snapshot whose stored state no
longer hashes to it is never used. The canonical form is JSON with sorted keys
and no whitespace; values JSON cannot hold are written as their ``str``, and
keys that are not strings (int, float, bool, None, which payloads may hold) as
JSON writes them (``1`` as ``"1"``, None as ``"null"``). Where one dict mixes
key types that do not sort together (``1`` and ``"a"``), its keys are ordered
by that text, then by type (str, int, float, bool, None), so such a state
hashes too, and the same way each time.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_SEPARATORS = (",", ":")


def canonical_json(state: Any) -> str:
    """``state`` as canonical JSON: sorted keys, compact separators."""
    try:
        return json.dumps(state, sort_keys=True, separators=_SEPARATORS, default=str, ensure_ascii=False)
    except TypeError:
        # A dict whose keys json cannot sort (mixed types); rare, so the slow walk is kept apart.
        return _mixed(state)


def state_hash(state: Any) -> str:
    """The hex SHA-256 of the canonical JSON of ``state``."""
    return hashlib.sha256(canonical_json(state).encode("utf-8", "surrogatepass")).hexdigest()


def stabilize_state_hash(state: Any) -> str:
    """The hash Stabilize's own ``Snapshot`` computes of ``state`` and checks a loaded
    snapshot against (hex SHA-256 of ``json.dumps(state, sort_keys=True, default=str)``);
    TypeError where that ``json.dumps`` fails (keys of types that do not sort together)."""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def snapshot_row_intact(row: dict[str, Any]) -> bool:
    """Whether a ``get_snapshots`` row matches its hash: checked by the store over the
    stored bytes (``hash_ok``), or for a legacy hash over the canonical JSON of its state."""
    ok = row.get("hash_ok")
    if ok is not None:
        return bool(ok)
    return legacy_hash_intact(row.get("state"), row.get("state_hash"))


def legacy_hash_intact(state: Any, stored_hash: Any) -> bool:
    """Whether a snapshot with a legacy hash (SHA-256 of canonical JSON) matches it."""
    return isinstance(state, dict) and isinstance(stored_hash, str) and state_hash(state) == stored_hash


def _key_text(key: Any) -> str:
    """A key as ``json.dumps`` writes it (TypeError for a type JSON refuses as a key)."""
    if isinstance(key, str):
        return str(key)
    written: dict[str, Any] = json.loads(json.dumps({key: None}))
    return next(iter(written))


def _key_rank(key: Any) -> int:
    """Orders keys whose text is the same (``1`` and ``"1"``): str, int, float, bool, None."""
    if isinstance(key, str):
        return 0
    if isinstance(key, bool):
        return 3
    if isinstance(key, int):
        return 1
    if isinstance(key, float):
        return 2
    return 4


def _mixed(value: Any) -> str:
    """`canonical_json` of a value holding a dict whose keys json cannot sort."""
    if isinstance(value, dict):
        keyed = [(_key_text(k), _key_rank(k), v) for k, v in value.items()]
        keyed.sort(key=lambda item: item[:2])  # never the values: they need not compare
        inner = ",".join(f"{json.dumps(text, ensure_ascii=False)}:{_mixed(v)}" for text, _, v in keyed)
        return "{" + inner + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_mixed(v) for v in value) + "]"
    return json.dumps(value, separators=_SEPARATORS, default=str, ensure_ascii=False)
