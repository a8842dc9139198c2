"""Fuzz the decoder of stored payloads: `_core.decode_payload` and the SQLite row-reading path.

Run with atheris (libFuzzer options pass through)::

    python fuzz/fuzz_decode.py -runs=1000000 /tmp/fuzz-work fuzz/corpus

Every input is fed to ``decode_payload``; the only accepted failure is
`CorruptEventError`. A value that does decode must re-encode stably
(``encode(decode(encode(v))) == encode(v)``), or be refused by the encoder with
`PayloadError` (the decoder accepts msgpack the encoder never writes, such as
int keys).

About one input in ``STORE_EVERY`` is also written, with the stdlib ``sqlite3``
module, as the ``data`` blob of a row of a persistent SQLite event store, and read
back through the store (``get_event_by_id``, ``get_events_for_workflow``,
``get_events_since`` and replay, with and without ``skip_corrupt``). The store
must agree with ``decode_payload``: a payload that decodes to a dict reads back as
that dict; anything else raises `CorruptEventError` naming the row's sequence.

Anything else (another exception, a disagreement, a crash of the interpreter) is a
finding: atheris reports it and exits non-zero.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import zlib
from typing import Any

import atheris

with atheris.instrument_imports():
    from stabilize_events import (
        EntityType,
        Event,
        EventMetadata,
        EventReplayer,
        EventType,
        ReplayResult,
        SqliteEventStore,
        errors,
    )
    from stabilize_events._core import decode_payload, encode_payload

#: One input in this many also goes through the SQLite store (it costs a write and a few reads).
STORE_EVERY = int(os.environ.get("FUZZ_STORE_EVERY", "16"))

WF = "wf-fuzz"
#: Event types whose payload the replay fold reads (different keys each), one row per type.
ROW_TYPES = [
    (EventType.WORKFLOW_CREATED, EntityType.WORKFLOW, WF),
    (EventType.WORKFLOW_COMPLETED, EntityType.WORKFLOW, WF),
    (EventType.STAGE_STARTED, EntityType.STAGE, "stage-1"),
    (EventType.STAGE_COMPLETED, EntityType.STAGE, "stage-1"),
    (EventType.STAGE_FAILED, EntityType.STAGE, "stage-1"),
    (EventType.TASK_STARTED, EntityType.TASK, "task-1"),
    (EventType.TASK_COMPLETED, EntityType.TASK, "task-1"),
    (EventType.CONTEXT_UPDATED, EntityType.WORKFLOW, WF),
]


# --- coverage proxy ---------------------------------------------------------------------------
# The Rust decoder is not instrumented, so libFuzzer would see almost no coverage. As a proxy,
# each outcome (the shape of the decoded value, or the template of the error message) is mapped
# to one branch of an instrumented if-chain: an input reaching a new outcome counts as new
# coverage and is kept in the corpus.

FEATURES = 1024


def _tree(lo: int, hi: int, indent: str) -> str:
    """A balanced if-tree over ``lo..hi-1``: each value ends in its own leaf (its own edge)."""
    if hi - lo == 1:
        return f"{indent}return {lo}\n"
    mid = (lo + hi) // 2
    inner = indent + "    "
    return f"{indent}if k < {mid}:\n{_tree(lo, mid, inner)}{indent}else:\n{_tree(mid, hi, inner)}"


_src = "def _feature(k):\n" + _tree(0, FEATURES, "    ")
_ns: dict[str, Any] = {}
exec(compile(_src, "<fuzz-features>", "exec"), _ns)
_feature = atheris.instrument_func(_ns["_feature"])


def _bucket(n: int) -> int:
    return min(n.bit_length(), 15)


def _shape(value: Any, depth: int, acc: list[int]) -> None:
    acc[0] = max(acc[0], depth)
    acc[1] += 1
    if acc[1] > 5000:
        return
    t = type(value)
    acc.append(zlib.crc32(t.__name__.encode()) % 64)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                acc.append(64 + zlib.crc32(type(k).__name__.encode()) % 32)
            _shape(v, depth + 1, acc)
    elif t is list:
        for v in value:
            _shape(v, depth + 1, acc)


def _report_success(value: Any) -> None:
    acc: list[int] = [0, 0]
    _shape(value, 0, acc)
    _feature(_bucket(acc[0]))  # 0..15: nesting depth
    _feature(16 + _bucket(acc[1]))  # 16..31: number of values
    for tag in set(acc[2:]):  # 32..127: kinds of values and keys present
        _feature(32 + tag)
    _feature(128 + zlib.crc32(repr(sorted(set(acc[2:]))).encode()) % 256)  # 128..383: combination


def _report_error(message: str) -> None:
    template = re.sub(r"\d+", "N", message)[:120]
    _feature(384 + zlib.crc32(template.encode()) % 640)  # 384..1023: error kind


class _Store:
    """A persistent SQLite event store with one row per `ROW_TYPES` entry, and a raw connection to it."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fuzz-decode-")
        atexit.register(shutil.rmtree, self.dir, True)
        path = os.path.join(self.dir, "events.db")
        self.store = SqliteEventStore(f"sqlite:///{path}")
        events = [
            Event(
                event_type=t,
                entity_type=et,
                entity_id=eid,
                workflow_id=WF,
                version=i + 1,
                data={"i": i},
                metadata=EventMetadata(correlation_id=WF),
            )
            for i, (t, et, eid) in enumerate(ROW_TYPES)
        ]
        self.rows = [(e.event_id, e.sequence) for e in self.store.append_batch(events)]
        self.intact = [encode_payload(e.data) for e in events]
        self.raw = sqlite3.connect(path, isolation_level=None)
        self.replayer = EventReplayer(self.store)


_store: _Store | None = None


def _stable_encoding(value: Any) -> None:
    """A decoded value re-encodes to bytes that decode to the same encoding again."""
    try:
        once = encode_payload(value)
    except errors.PayloadError:
        return  # msgpack the encoder never writes (e.g. non-str keys): refusing it is fine
    again = encode_payload(decode_payload(once))
    if again != once:
        raise AssertionError(f"unstable re-encoding: {once!r} -> {again!r}")


def _expect_corrupt(fn: Any, sequence: int, what: str) -> None:
    try:
        fn()
    except errors.CorruptEventError as e:
        if f"sequence {sequence}" not in str(e):
            raise AssertionError(f"{what}: CorruptEventError without its sequence {sequence}: {e}") from e
        return
    raise AssertionError(f"{what}: a payload decode_payload refuses was read without error")


def _through_store(data: bytes, decoded: Any, decode_ok: bool) -> None:
    global _store
    if _store is None:
        _store = _Store()
    s = _store
    row = zlib.crc32(data, 1) % len(s.rows)
    event_id, sequence = s.rows[row]
    s.raw.execute("UPDATE event_log SET data = ? WHERE sequence = ?", (data, sequence))
    try:
        _check_row(s, data, decoded, decode_ok, event_id, sequence)
    finally:
        s.raw.execute("UPDATE event_log SET data = ? WHERE sequence = ?", (s.intact[row], sequence))


def _check_row(s: _Store, data: bytes, decoded: Any, decode_ok: bool, event_id: str, sequence: int) -> None:

    readable = decode_ok and type(decoded) is dict
    if readable:
        want = encode_payload(decoded) if _encodable(decoded) else None
        got = s.store.get_event_by_id(event_id)
        assert got is not None
        if want is not None and encode_payload(got.data) != want:
            raise AssertionError("store read disagrees with decode_payload")
        for e in s.store.get_events_for_workflow(WF):
            _ = e.data
        for e in s.store.get_events_since(0):
            _ = e.data
    else:

        def by_id() -> None:
            got = s.store.get_event_by_id(event_id)
            assert got is not None
            _ = got.data

        def for_workflow() -> None:
            for e in s.store.get_events_for_workflow(WF):
                _ = e.data

        _expect_corrupt(by_id, sequence, "get_event_by_id")
        _expect_corrupt(for_workflow, sequence, "get_events_for_workflow")

    # The fold reads only the keys it needs: it may accept a payload the full decoder
    # refuses, but it raises nothing other than CorruptEventError naming the row, and
    # skip_corrupt turns every such error into a listed skip.
    _replay(s, sequence, skip_corrupt=False)
    result = _replay(s, sequence, skip_corrupt=True)
    if result is not None and result.events_replayed + len(result.skipped_corrupt) != len(s.rows):
        raise AssertionError(f"replay with skip_corrupt lost rows: {result}")


def _replay(s: _Store, sequence: int, *, skip_corrupt: bool) -> ReplayResult | None:
    try:
        return s.replayer.replay(WF, skip_corrupt=skip_corrupt)
    except errors.CorruptEventError as e:
        if skip_corrupt:
            raise AssertionError(f"replay(skip_corrupt=True) raised: {e}") from e
        if f"sequence {sequence}" not in str(e):
            raise AssertionError(f"replay: CorruptEventError without its sequence {sequence}: {e}") from e
        return None


def _encodable(value: Any) -> bool:
    try:
        encode_payload(value)
    except errors.PayloadError:
        return False
    return True


def test_one_input(data: bytes) -> None:
    decoded: Any = None
    try:
        decoded = decode_payload(data)
        decode_ok = True
    except errors.CorruptEventError as e:
        decode_ok = False
        _report_error(str(e))
    if decode_ok:
        _report_success(decoded)
        _stable_encoding(decoded)
    if STORE_EVERY > 0 and zlib.crc32(data) % STORE_EVERY == 0:
        _through_store(data, decoded, decode_ok)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
