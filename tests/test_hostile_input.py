"""Hostile input through every store (`store` fixture of conftest: SQLite file, SQLite memory, in memory).

What tests/test_codec.py already covers (codec round trips of ordinary values, unsupported
types naming their path) is not repeated; this file pushes on the edges a caller can reach
through `append` / `append_batch`:

- any unicode, NUL bytes included, round-trips exactly in every string of an event;
- a lone surrogate in a payload value or key is a `PayloadError` naming its path, and nothing
  of the batch is written;
- ints within 64 bits and far beyond round-trip exactly (beyond 64 bits they travel in the
  codec's BIGINT extension type, see ``src/codec/ext.rs``);
- nesting up to the codec's limit (256 levels of lists/dicts, counting ``data`` itself,
  ``MAX_DEPTH`` in ``src/codec/mod.rs``) round-trips; deeper, at any depth up to 100,000,
  is a `PayloadError` naming the path, never a crash or a RecursionError; a reference cycle
  is refused the same way;
- NaN, infinities, -0.0 and subnormals round-trip bit for bit;
- ``max_payload_bytes``: a payload encoding to exactly the limit is stored, one byte more is a
  `PayloadError` naming the event and the limit;
- one hostile event anywhere in a batch: nothing of the batch is written.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import close_store, new_event, open_postgres, sqlite_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventQuery,
    EventStore,
    InMemoryEventStore,
    SqliteEventStore,
    errors,
)
from stabilize_events._core import encode_payload

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Containers accepted around a value, ``data`` included (``MAX_DEPTH`` in src/codec/mod.rs).
MAX_DEPTH = 256


# --- helpers ----------------------------------------------------------------------------------


def exact(x: Any) -> Any:
    """A type-tagged form for exact comparison (bool is not int, -0.0 is not 0.0, NaN equals NaN)."""
    if type(x) is float:
        return ("float", "nan") if math.isnan(x) else ("float", struct.pack(">d", x))
    if type(x) is dict:
        assert all(type(k) is str for k in x)
        return ("dict", [(k, exact(v)) for k, v in x.items()])
    if type(x) in (list, tuple):
        return ("list", [exact(v) for v in x])
    return (type(x).__name__, x)


def assert_nothing_written(store: EventStore, count: int, sequence: int, batch: list[Event]) -> None:
    assert store.count_events() == count
    assert store.get_current_sequence() == sequence
    for e in batch:
        assert store.get_event_by_id(e.event_id) is None


def assert_store_still_works(store: EventStore, sequence: int) -> None:
    after = store.append(new_event(data={"after": True}))
    assert after.sequence > sequence
    got = store.get_event_by_id(after.event_id)
    assert got is not None and got.data == {"after": True}


def names_path(message: str, path: str) -> bool:
    """``path`` appears in ``message`` and not merely as the prefix of a longer path."""
    return re.search(re.escape(path) + r"(?!\[)", message) is not None


def read_back_everywhere(store: EventStore, stored: Event) -> list[Event]:
    """The stored event through every read path that can find it."""
    found = [
        store.get_event_by_id(stored.event_id),
        *[e for e in store.get_events_for_workflow(stored.workflow_id) if e.event_id == stored.event_id],
        *[
            e
            for e in store.get_events_for_entity(stored.entity_type, stored.entity_id, from_version=-(2**63))
            if e.event_id == stored.event_id
        ],
        *[e for e in store.get_events_since(stored.sequence - 1, limit=1)],
        *store.get_events(EventQuery(workflow_id=stored.workflow_id, entity_id=stored.entity_id)),
    ]
    found = [e for e in found if e is not None and e.event_id == stored.event_id]
    assert len(found) == 5, f"not every read path found {stored!r}"
    return [e for e in found if e is not None]


# --- any unicode and NUL bytes ------------------------------------------------------------------

# st.text() draws from every code point except surrogates; mix in NULs explicitly too.
any_text = st.text(max_size=30) | st.builds(lambda a, b: f"{a}\x00{b}\x00", st.text(max_size=10), st.text())
payload_values = st.recursive(
    st.none() | st.booleans() | any_text | st.binary(max_size=20).map(lambda b: b + b"\x00"),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=15,
)


@PROPERTY
@given(
    data=st.dictionaries(any_text, payload_values, max_size=5),
    entity_id=any_text,
    workflow_id=any_text,
    event_id=any_text,
    meta=st.tuples(any_text, st.none() | any_text, any_text, st.none() | any_text),
    batch=st.booleans(),
)
def test_any_unicode_and_nul_round_trip_in_every_string(
    store: EventStore,
    data: dict[str, Any],
    entity_id: str,
    workflow_id: str,
    event_id: str,
    meta: tuple[str, str | None, str, str | None],
    batch: bool,
) -> None:
    correlation_id, causation_id, actor, source_handler = meta
    e = new_event(
        # unique across examples (the store is shared by them), still hostile
        event_id=f"{event_id}\x00{store.get_current_sequence()}",
        entity_id=entity_id,
        workflow_id=workflow_id,
        data=data,
        metadata=EventMetadata(
            correlation_id=correlation_id,
            causation_id=causation_id,
            actor=actor,
            source_handler=source_handler,
        ),
    )
    stored = store.append_batch([e])[0] if batch else store.append(e)
    for got in read_back_everywhere(store, stored):
        assert got == stored
        assert (got.event_id, got.entity_id, got.workflow_id) == (e.event_id, entity_id, workflow_id)
        assert got.metadata == e.metadata
        assert (got.metadata.actor, got.metadata.source_handler) == (actor, source_handler)
        assert exact(got.data) == exact(data)


def test_nul_only_strings_are_distinct_from_empty(store: EventStore) -> None:
    # A C-string bug would truncate at the NUL and make these collide.
    a = store.append(new_event(workflow_id="\x00", entity_id="\x00", data={"\x00": "\x00", "": ""}))
    b = store.append(new_event(workflow_id="", entity_id="", data={"\x00\x00": "x\x00"}))
    assert [e.event_id for e in store.get_events_for_workflow("\x00")] == [a.event_id]
    assert [e.event_id for e in store.get_events_for_workflow("")] == [b.event_id]
    got = store.get_event_by_id(a.event_id)
    assert got is not None and list(got.data.items()) == [("\x00", "\x00"), ("", "")]


# --- lone surrogates ----------------------------------------------------------------------------

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
simple_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)


@st.composite
def payload_with_surrogate(draw: st.DrawFn) -> tuple[dict[str, Any], str, bool]:
    """A payload with one lone surrogate inside a value or a key, the path naming the value
    (or the dict holding the key), and whether it sits in a key."""
    bad = draw(st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), surrogates, st.text(max_size=3)))
    in_key = draw(st.booleans())
    value: Any
    steps = draw(st.lists(st.one_of(simple_keys, st.integers(0, 3)), min_size=0, max_size=4))
    if in_key:
        value = {"ok": 1, bad: "v"}
    else:
        value = bad
    suffix = ""
    for step in reversed(steps):
        if isinstance(step, str):
            value = {"sibling": 0, step: value}
            suffix = f'["{step}"]' + suffix
        else:
            value = [*range(step), value, "after"]
            suffix = f"[{step}]" + suffix
    root = draw(simple_keys)
    return (
        {"first": "fine", root: value} if root != "first" else {root: value},
        f'data["{root}"]{suffix}',
        in_key,
    )


@PROPERTY
@given(case=payload_with_surrogate(), position=st.integers(0, 3), single=st.booleans())
def test_lone_surrogate_is_payload_error_naming_path_and_writes_nothing(
    store: EventStore, case: tuple[dict[str, Any], str, bool], position: int, single: bool
) -> None:
    payload, path, in_key = case
    count, sequence = store.count_events(), store.get_current_sequence()
    hostile = new_event(data=payload)  # data is encoded on append, not on construction
    batch = [new_event() for _ in range(3)]
    batch.insert(position, hostile)
    with pytest.raises(errors.PayloadError) as info:
        if single:
            store.append(hostile)
        else:
            store.append_batch(batch)
    message = str(info.value)
    assert isinstance(info.value, TypeError)
    assert "surrogate" in message, message
    if in_key:
        # The key itself cannot be shown as text; the path up to its dict is named.
        assert path + "[" in message, (message, path)
    else:
        assert names_path(message, path), (message, path)
    assert_nothing_written(store, count, sequence, batch)
    assert_store_still_works(store, sequence)


@pytest.mark.parametrize("field", ["entity_id", "workflow_id", "event_id", "event_type"])
def test_lone_surrogate_in_event_field_is_refused_at_construction(store: EventStore, field: str) -> None:
    # Current behaviour: the Event constructor refuses it with a ValueError, so nothing can
    # reach a store.
    with pytest.raises(ValueError):
        new_event(**{field: "x\ud800y"})
    with pytest.raises(ValueError):
        EventMetadata(correlation_id="c", actor="a\udfff")
    assert store.count_events() == 0


@pytest.mark.parametrize("field", ["entity_id", "workflow_id", "event_id", "actor"])
def test_lone_surrogate_in_event_field_error_names_the_field(field: str) -> None:
    with pytest.raises(errors.StabilizeEventsError) as info:
        if field == "actor":
            EventMetadata(correlation_id="c", actor="x\ud800")
        else:
            new_event(**{field: "x\ud800"})
    assert isinstance(info.value, ValueError | TypeError)
    assert field in str(info.value)


# --- huge ints ----------------------------------------------------------------------------------

in_64_bits = st.integers(min_value=-(2**63), max_value=2**64 - 1)
beyond_64_bits = st.integers(min_value=2**64) | st.integers(max_value=-(2**63) - 1)
huge = st.integers(min_value=64, max_value=20_000).flatmap(
    lambda bits: st.sampled_from([2**bits, 2**bits - 1, -(2**bits), -(2**bits) + 1])
)


@PROPERTY
@given(ints=st.lists(in_64_bits | beyond_64_bits | huge, min_size=1, max_size=8), batch=st.booleans())
def test_ints_of_any_size_round_trip(store: EventStore, ints: list[int], batch: bool) -> None:
    data = {"ints": ints, "nested": {"first": ints[0], "as_key_sibling": [ints[-1], True, 1]}}
    e = new_event(data=data)
    stored = store.append_batch([e])[0] if batch else store.append(e)
    for got in read_back_everywhere(store, stored):
        assert exact(got.data) == exact(data)
        assert [type(v) for v in got.data["nested"]["as_key_sibling"]] == [int, bool, int]


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**64 - 1, -(2**63), 10**4000, -(10**4000)], ids=str)
def test_boundary_ints_round_trip(store: EventStore, value: int) -> None:
    e = store.append(new_event(data={"v": value}))
    for got in read_back_everywhere(store, e):
        assert got.data["v"] == value and type(got.data["v"]) is int


@pytest.mark.parametrize("field", ["version", "schema_version"])
@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**100])
def test_event_int_fields_beyond_64_bits_are_refused_clearly(field: str, value: int) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        new_event(**{field: value})
    assert field in str(info.value)


# --- deep nesting and cycles ----------------------------------------------------------------------


def nest(depth: int, kind: str) -> Any:
    """``depth`` containers around a leaf: lists, dicts, or alternating."""
    v: Any = "leaf"
    for i in range(depth):
        if kind == "list" or (kind == "mixed" and i % 2):
            v = [v]
        else:
            v = {"k": v}
    return v


@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
@pytest.mark.parametrize("depth", [10, 100, MAX_DEPTH - 1])
def test_nesting_within_the_limit_round_trips(store: EventStore, kind: str, depth: int) -> None:
    data = {"x": nest(depth, kind)}  # data itself is one more level
    e = store.append_batch([new_event(), new_event(data=data)])[1]
    for got in read_back_everywhere(store, e):
        assert got.data == data


@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 1000, 100_000])
def test_nesting_beyond_the_limit_is_payload_error_and_writes_nothing(
    store: EventStore, kind: str, depth: int
) -> None:
    first = store.append(new_event())
    batch = [new_event(), new_event(data={"x": nest(depth, kind)}), new_event()]
    with pytest.raises(errors.PayloadError) as info:
        store.append_batch(batch)
    message = str(info.value)
    # What is wrong, then where, then what to do.
    assert message.startswith(f"nesting deeper than {MAX_DEPTH} levels"), message[:100]
    assert ' at data["x"][' in message and "flatten the payload" in message, message[:100]
    assert_nothing_written(store, 1, first.sequence, batch)
    assert_store_still_works(store, first.sequence)


def _cycles() -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    def self_list() -> dict[str, Any]:
        a: list[Any] = [1]
        a.append(a)
        return {"a": a}

    def self_dict() -> dict[str, Any]:
        d: dict[str, Any] = {"n": 1}
        d["self"] = d
        return {"d": d}

    def data_contains_itself() -> dict[str, Any]:
        data: dict[str, Any] = {"ok": 1}
        data["again"] = [data]
        return data

    def through_tuple() -> dict[str, Any]:
        inner: list[Any] = []
        t = (1, inner)
        inner.append(t)
        return {"t": t}

    def mutual() -> dict[str, Any]:
        a: list[Any] = []
        b: dict[str, Any] = {"a": a}
        a.append(b)
        return {"b": b}

    yield from [
        ("self_list", self_list),
        ("self_dict", self_dict),
        ("data_contains_itself", data_contains_itself),
        ("through_tuple", through_tuple),
        ("mutual", mutual),
    ]


@pytest.mark.parametrize(("name", "make"), list(_cycles()), ids=[n for n, _ in _cycles()])
def test_reference_cycle_is_payload_error_and_writes_nothing(
    store: EventStore, name: str, make: Callable[[], dict[str, Any]]
) -> None:
    count, sequence = store.count_events(), store.get_current_sequence()
    hostile = new_event(data=make())
    with pytest.raises(errors.PayloadError) as info:
        store.append(hostile)
    assert str(info.value).startswith("nesting deeper than"), str(info.value)[:100]
    assert " at data[" in str(info.value) and "break the cycle" in str(info.value)
    batch = [new_event(), new_event(), hostile]
    with pytest.raises(errors.PayloadError):
        store.append_batch(batch)
    assert_nothing_written(store, count, sequence, batch)
    assert_store_still_works(store, sequence)


# --- floats ---------------------------------------------------------------------------------------

SPECIAL_FLOATS = [
    float("nan"),
    -float("nan"),
    float("inf"),
    float("-inf"),
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
]


def test_special_floats_round_trip_bit_for_bit(store: EventStore) -> None:
    data = {"list": SPECIAL_FLOATS, **{f"f{i}": f for i, f in enumerate(SPECIAL_FLOATS)}}
    stored = store.append_batch([new_event(), new_event(data=data)])[1]
    for got in read_back_everywhere(store, stored):
        assert exact(got.data) == exact(data)
        assert math.isnan(got.data["f0"]) and math.isnan(got.data["list"][1])
        assert math.copysign(1.0, got.data["f5"]) == -1.0


@PROPERTY
@given(floats=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=10))
def test_any_float_round_trips(store: EventStore, floats: list[float]) -> None:
    data = {"floats": floats, "by_key": {str(i): f for i, f in enumerate(floats)}}
    stored = store.append(new_event(data=data))
    got = store.get_event_by_id(stored.event_id)
    assert got is not None
    assert exact(got.data) == exact(data)


# --- size limit -----------------------------------------------------------------------------------


def limited(kind: str, tmp_path: Path, limit: int, name: str = "limited.db") -> EventStore:
    if kind == "sqlite-file":
        return SqliteEventStore(sqlite_url(tmp_path / name), max_payload_bytes=limit)
    if kind == "sqlite-memory":
        return SqliteEventStore("sqlite:///:memory:", max_payload_bytes=limit)
    if kind == "postgres":
        store: EventStore = open_postgres(tmp_path, name, max_payload_bytes=limit)
        return store
    return InMemoryEventStore(max_payload_bytes=limit)


def payload_of_size(size: int) -> dict[str, Any]:
    """A payload that encodes to exactly ``size`` bytes (``size`` >= 8)."""
    for pad in range(size, -1, -1):
        data = {"blob": b"\x07" * pad}
        n = len(encode_payload(data))
        if n == size:
            return data
        if n < size:
            break
    data = {"blob": b"", "s": "x" * (size - len(encode_payload({"blob": b"", "s": ""})))}
    # fixstr/str8 headers differ by one byte: shrink the string until it fits exactly
    while len(encode_payload(data)) > size:
        data["s"] = data["s"][:-1]
    assert len(encode_payload(data)) == size, (size, len(encode_payload(data)))
    return data


@pytest.fixture
def limited_store(store_kind: str, tmp_path: Path) -> Iterator[Callable[[int], EventStore]]:
    opened: list[EventStore] = []

    def make(limit: int) -> EventStore:
        s = limited(store_kind, tmp_path, limit, name=f"limited-{len(opened)}.db")
        opened.append(s)
        return s

    yield make
    for s in opened:
        close_store(s)


@pytest.mark.parametrize("limit", [64, 1000, 70_000, 1 << 20])
def test_payload_at_the_limit_is_stored_one_byte_over_is_refused(
    limited_store: Callable[[int], EventStore], limit: int
) -> None:
    store = limited_store(limit)
    at, under, over = payload_of_size(limit), payload_of_size(limit - 1), payload_of_size(limit + 1)
    stored = store.append_batch([new_event(data=under), new_event(data=at)])
    for e, data in zip(stored, (under, at), strict=True):
        got = store.get_event_by_id(e.event_id)
        assert got is not None and got.data == data
    count, sequence = store.count_events(), store.get_current_sequence()

    hostile = new_event(data=over)
    with pytest.raises(errors.PayloadError) as info:
        store.append(hostile)
    message = str(info.value)
    assert hostile.event_id in message
    assert f"max_payload_bytes of {limit}" in message
    assert f"{limit + 1} bytes" in message
    batch = [new_event(data=at), hostile, new_event(data=under)]
    with pytest.raises(errors.PayloadError) as info:
        store.append_batch(batch)
    assert hostile.event_id in str(info.value)
    assert_nothing_written(store, count, sequence, batch)
    assert_store_still_works(store, sequence)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(16, 5000), delta=st.integers(-3, 3), position=st.integers(0, 2))
def test_property_size_limit_boundary(
    limited_store: Callable[[int], EventStore], limit: int, delta: int, position: int
) -> None:
    store = limited_store(limit)
    e = new_event(data=payload_of_size(limit + delta))
    batch = [new_event(data={}), new_event(data={"a": 1})]
    batch.insert(position, e)
    if delta <= 0:
        stored = store.append_batch(batch)
        got = store.get_event_by_id(stored[position].event_id)
        assert got is not None and got.data == e.data
    else:
        with pytest.raises(errors.PayloadError) as info:
            store.append_batch(batch)
        assert e.event_id in str(info.value) and str(limit) in str(info.value)
        assert_nothing_written(store, 0, 0, batch)


@pytest.mark.parametrize("bad", [0, -1])
def test_non_positive_payload_limit_is_invalid_argument(store_kind: str, tmp_path: Path, bad: int) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        limited(store_kind, tmp_path, bad)
    assert "max_payload_bytes" in str(info.value)


def test_default_limit_is_16_mib(store: EventStore) -> None:
    limit = 16 << 20
    ok = store.append(new_event(data=payload_of_size(limit)))
    assert store.get_event_by_id(ok.event_id) is not None
    with pytest.raises(errors.PayloadError) as info:
        store.append(new_event(data=payload_of_size(limit + 1)))
    assert str(limit) in str(info.value)
    assert store.count_events() == 1


# --- one hostile event in the middle of a batch -------------------------------------------------------


def _hostile_payloads() -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    cycle: list[Any] = []
    cycle.append(cycle)
    return [
        ("surrogate_value", lambda: {"a": {"b": ["ok", "\ud83d"]}}),
        ("surrogate_key", lambda: {"a": {"\udc80": 1}}),
        ("too_deep", lambda: {"x": nest(5000, "mixed")}),
        ("cycle", lambda: {"c": cycle}),
        ("unsupported", lambda: {"s": {1, 2}}),
        ("non_str_key", lambda: {"m": {(1, 2): 3}}),
        ("over_limit", lambda: payload_of_size(4097)),
    ]


HOSTILE = _hostile_payloads()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(HOSTILE),
    before=st.integers(0, 5),
    after=st.integers(0, 5),
    good_payloads=st.lists(st.dictionaries(any_text, payload_values, max_size=3), min_size=10, max_size=10),
)
def test_property_one_hostile_event_anywhere_in_a_batch_writes_nothing(
    limited_store: Callable[[int], EventStore],
    which: tuple[str, Callable[[], dict[str, Any]]],
    before: int,
    after: int,
    good_payloads: list[dict[str, Any]],
) -> None:
    store = limited_store(4096)
    existing = store.append(new_event(data={"pre": 1}))
    _, make = which
    hostile = new_event(data=make())
    batch = [new_event(data=d) for d in good_payloads[:before]]
    batch.append(hostile)
    batch += [new_event(data=d) for d in good_payloads[before : before + after]]
    with pytest.raises(errors.PayloadError):
        store.append_batch(batch)
    assert_nothing_written(store, 1, existing.sequence, batch)
    # the same good events go in once the hostile one is taken out, with consecutive sequences
    good = [e for e in batch if e is not hostile]
    stored = store.append_batch(good)
    assert [e.sequence for e in stored] == list(
        range(existing.sequence + 1, existing.sequence + 1 + len(good))
    )
    for e, s in zip(good, stored, strict=True):
        got = store.get_event_by_id(e.event_id)
        assert got is not None and got == s
    assert store.get_events_for_entity(EntityType.TASK, hostile.entity_id) == []
