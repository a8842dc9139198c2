"""The payload codec (`data`): unit tests and property tests.

Every supported value must round-trip exactly through ``_core.encode_payload`` /
``_core.decode_payload`` and through every store; every unsupported value must
raise `PayloadError` naming its key path.
"""

from __future__ import annotations

import enum
import math
import re
import struct
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import STORE_KINDS, close_store, new_event, open_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stabilize_events import EntityType, EventStore, EventType, errors
from stabilize_events._core import decode_payload, encode_payload

# --- exact comparison -------------------------------------------------------------------------


def canon(x: Any, *, decoded: bool) -> Any:
    """A type-tagged form of ``x`` for exact comparison.

    Original values: tuples count as lists and enums as their value (that is how they are
    stored). Decoded values must use only the types the codec produces, so a tuple or enum
    coming back is an error.
    """
    if x is None:
        return ("none",)
    if isinstance(x, enum.Enum):
        assert not decoded, f"decoded an enum {x!r}"
        return canon(x.value, decoded=False)
    if type(x) is bool:
        return ("bool", x)
    if type(x) is int:
        return ("int", x)
    if type(x) is float:
        return ("float", "nan") if math.isnan(x) else ("float", struct.pack(">d", x))
    if type(x) is str:
        return ("str", x)
    if type(x) is bytes:
        return ("bytes", x)
    if type(x) is list or (type(x) is tuple and not decoded):
        return ("list", [canon(v, decoded=decoded) for v in x])
    if type(x) is dict:
        # Keys are tagged too: an int key must not come back as a str (nor 1 as True).
        return ("dict", {canon(k, decoded=decoded): canon(v, decoded=decoded) for k, v in x.items()})
    if type(x) is datetime:
        if x.tzinfo is None:
            return ("naive-datetime", x)
        return ("aware-datetime", x.astimezone(UTC))
    if type(x) is date:
        return ("date", x)
    if type(x) is uuid.UUID:
        return ("uuid", x)
    if type(x) is Decimal:
        return ("decimal", str(x))
    raise AssertionError(f"unexpected type {type(x).__name__}: {x!r}")


def assert_round_trips(value: Any, got: Any) -> None:
    assert canon(got, decoded=True) == canon(value, decoded=False)


def rt(value: Any) -> Any:
    b = encode_payload(value)
    assert type(b) is bytes
    return decode_payload(b)


# --- units ------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        127,
        128,
        255,
        256,
        -32,
        -33,
        2**31 - 1,
        -(2**31),
        2**32,
        2**63 - 1,
        -(2**63),
        2**63,
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        10**40,
        -(10**40),
        0.0,
        -0.0,
        1.5,
        1e308,
        5e-324,
        float("inf"),
        float("-inf"),
        "",
        "hello",
        "ünïcödé \u4e2d\u6587 \U0001f600",
        "x" * 100_000,
        b"",
        b"\x00\x01\xff",
        bytes(range(256)) * 300,
        [],
        [1, "a", None],
        (),
        (1, (2, 3)),
        {},
        {"a": 1, "b": [1, {"c": None}]},
        {"": "empty key"},
        date(2024, 2, 29),
        date(1, 1, 1),
        date(9999, 12, 31),
        datetime(2024, 1, 2, 3, 4, 5, 678901),
        datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        uuid.UUID(int=0),
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("1E+30"),
        Decimal("3.141592653589793238462643383279502884197"),
        Decimal("Infinity"),
        Decimal("NaN"),
        Color.RED,
        Color.BLUE,
        EventType.TASK_FAILED,
        EntityType.STAGE,
        Level.LOW,
        {"s": {"t": [EventType.STAGE_STARTED, (1, 2)]}},
    ],
    ids=repr,
)
def test_value_round_trips(value: Any) -> None:
    assert_round_trips(value, rt(value))


def test_nan_round_trips() -> None:
    got = rt(float("nan"))
    assert type(got) is float and math.isnan(got)


def test_keys_read_back_whatever_the_payload_before_had_in_their_place() -> None:
    """Keys are remembered by position between payloads; a different key there still reads right."""
    payloads = [
        {"ab": 1, "cd": {"ef": 2}},
        {"ba": 1, "cd": {"fe": 2}},
        {"ab": 1, "dc": {"ef": 2}, "x": 3},
        {"cd": {"ef": 2}, "ab": 1},
        {"a" * 24: 1, "b" * 25: 2},
        {"a" * 23 + "b": 1, "b" * 25: 2},
        {"é": 1, "e": 2},
        {},
        {"ab": 1, "cd": {"ef": 2}},
    ]
    blobs = [encode_payload(p) for p in payloads]
    for _ in range(3):
        decoded = [decode_payload(b) for b in blobs]
        assert decoded == payloads
        assert [list(d) for d in decoded] == [list(p) for p in payloads]


def test_bool_is_not_int_and_int_is_not_bool() -> None:
    assert rt([True, 1, False, 0]) == [True, 1, False, 0]
    assert [type(v) for v in rt([True, 1, False, 0])] == [bool, int, bool, int]


def test_date_is_not_datetime() -> None:
    assert type(rt(date(2020, 1, 1))) is date
    assert type(rt(datetime(2020, 1, 1))) is datetime


def test_enum_stored_as_value() -> None:
    assert rt({"t": EventType.WORKFLOW_FAILED}) == {"t": "workflow.failed"}
    assert rt(Color.BLUE) == 2
    assert type(rt(Level.LOW)) is int


def test_tuple_comes_back_as_list() -> None:
    got = rt({"t": (1, (2,))})
    assert got == {"t": [1, [2]]}
    assert type(got["t"]) is list and type(got["t"][1]) is list


def test_dict_order_preserved() -> None:
    d = {k: i for i, k in enumerate("zyxwvutsrqponm")}
    assert list(rt(d)) == list(d)


def test_aware_datetime_equal_instant() -> None:
    t = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3)))
    got = rt(t)
    assert type(got) is datetime
    assert got.tzinfo is not None
    assert got == t


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"\xc0"),
        (True, b"\xc3"),
        (False, b"\xc2"),
        (1, b"\x01"),
        (-1, b"\xff"),
        (2**64 - 1, b"\xcf" + b"\xff" * 8),
        (-(2**63), b"\xd3\x80" + b"\x00" * 7),
        ("a", b"\xa1a"),
        (b"\x01", b"\xc4\x01\x01"),
        ([1, 2], b"\x92\x01\x02"),
        ({"a": 1}, b"\x81\xa1a\x01"),
    ],
)
def test_encoding_is_msgpack(value: Any, encoded: bytes) -> None:
    assert encode_payload(value) == encoded
    assert decode_payload(encoded) == value


def test_decode_accepts_standard_msgpack() -> None:
    # float32 and the other int widths, as another msgpack writer might produce them
    assert decode_payload(b"\xca" + struct.pack(">f", 1.5)) == 1.5
    assert decode_payload(b"\xcc\xff") == 255
    assert decode_payload(b"\xd0\x80") == -128
    assert decode_payload(b"\xd9\x03abc") == "abc"
    assert decode_payload(b"\xdc\x00\x02\xc0\xc3") == [None, True]


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xc1", b"\x92\x01", b"\xa5ab", b"\x81\xa1a", b"\xd9", b"\xc7\x05\x7f\x00", b"\x01\x02"],
    ids=repr,
)
def test_decode_garbage_raises_not_crashes(garbage: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any ordinary error, but no panic / crash
        decode_payload(garbage)


#: Byte strings that are not UTF-8: a stray continuation byte, an overlong form, a UTF-16
#: surrogate, a sequence cut short, a code point past U+10FFFF.
NOT_UTF8 = [b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"]


def msgpack_str(raw: bytes) -> bytes:
    assert len(raw) < 256
    return (bytes([0xA0 | len(raw)]) if len(raw) < 32 else b"\xd9" + bytes([len(raw)])) + raw


@pytest.mark.parametrize("bad", NOT_UTF8, ids=repr)
@pytest.mark.parametrize("pad", [0, 30, 100], ids=["short", "cached-length", "uncached-length"])
def test_strings_that_are_not_utf8_are_refused_and_never_cached(bad: bytes, pad: int) -> None:
    # Decoded strings are checked by CPython as it makes them; short ones are then kept in a
    # cache that later payloads hit by their bytes alone, so a refused string must never be
    # kept, and a valid one with the same start must still decode.
    raw = b"k" * pad + bad
    for payload in (b"\x81\xa1x" + msgpack_str(raw), b"\x81" + msgpack_str(raw) + b"\x01"):
        for _ in range(2):
            with pytest.raises(errors.CorruptEventError, match="invalid UTF-8 in string"):
                decode_payload(payload)
    good = b"k" * pad + "é".encode()
    assert decode_payload(b"\x81\xa1x" + msgpack_str(good)) == {"x": good.decode()}
    assert decode_payload(b"\x81" + msgpack_str(good) + b"\x01") == {good.decode(): 1}
    assert decode_payload(msgpack_str(good)) == good.decode()
    with pytest.raises(errors.CorruptEventError, match="invalid UTF-8 in string"):
        decode_payload(msgpack_str(raw))


def test_deep_nesting_does_not_crash() -> None:
    v: Any = "leaf"
    for _ in range(100):
        v = {"k": [v]}
    assert rt(v) == v
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    try:
        encode_payload(deep)
    except (errors.PayloadError, RecursionError, ValueError):
        pass  # refusing is fine; crashing the interpreter is not


def test_lone_surrogate_string() -> None:
    s = "bad \ud800 surrogate"
    try:
        got = rt(s)
    except (errors.PayloadError, UnicodeError, ValueError):
        return
    assert got == s


class Thing:
    pass


UNSUPPORTED = [
    {1, 2},
    frozenset({1}),
    object(),
    Thing(),
    complex(1, 2),
    lambda: None,
    range(3),
    Ellipsis,
    type,
]


@pytest.mark.parametrize("bad", UNSUPPORTED, ids=lambda v: type(v).__name__)
def test_unsupported_values_raise_payload_error(bad: Any) -> None:
    with pytest.raises(errors.PayloadError) as info:
        encode_payload({"outputs": {"x": bad}})
    assert isinstance(info.value, TypeError)
    assert '["outputs"]["x"]' in str(info.value)
    with pytest.raises(errors.PayloadError) as info2:
        encode_payload({"items": [0, 1, bad]})
    assert '["items"][2]' in str(info2.value)


def test_unsupported_in_tuple_names_index() -> None:
    with pytest.raises(errors.PayloadError) as info:
        encode_payload({"a": [0, (1, 2, {3})]})
    assert '["a"][1][2]' in str(info.value)


class Tag(str):
    pass


class Shade(enum.StrEnum):
    DARK = "dark"


class Count(int):
    pass


class Ratio(float):
    pass


@pytest.mark.parametrize(
    ("key", "back"),
    [
        (1, 1),
        (-7, -7),
        (0, 0),
        (2**64, 2**64),
        (-(10**30), -(10**30)),
        (1.5, 1.5),
        (float("inf"), float("inf")),
        (-0.0, -0.0),
        (True, True),
        (False, False),
        (None, None),
        (Level.LOW, 1),  # an IntEnum key as its int, as a value would be (JSON writes "1")
        (Count(3), 3),
        (Ratio(0.25), 0.25),
        (Tag("k"), "k"),
        (Shade.DARK, "dark"),  # a str Enum is a str: its text, as in JSON
    ],
    ids=repr,
)
def test_json_key_types_read_back_with_their_type(key: Any, back: Any) -> None:
    # The reference's json.dumps turns these keys into text ({1: ...} -> {"1": ...});
    # msgpack keeps the key's type, so it reads back as it was given.
    got = rt({"outer": {key: "v", "s": [key]}})
    (k,) = [k for k in got["outer"] if k != "s"]
    assert type(k) is type(back) and canon(k, decoded=True) == canon(back, decoded=False)
    assert got["outer"]["s"] == [back]


def test_nan_key_reads_back_as_a_nan_key() -> None:
    (k,) = rt({float("nan"): 1})
    assert type(k) is float and math.isnan(k)


def test_keys_of_every_type_side_by_side() -> None:
    value = {"a": 1, 1: "int", 1.5: "float", None: "none", False: "bool", "1": "text one"}
    got = rt(value)
    assert list(got.items()) == list(value.items())
    assert [type(k) for k in got] == [str, int, float, type(None), bool, str]


@pytest.mark.parametrize(
    "key",
    [("t",), b"k", frozenset({1}), Color.RED, EventType.TASK_FAILED, Decimal(1), date(2024, 1, 1), Thing()],
    ids=repr,
)
def test_key_json_refuses_is_refused_saying_why_where_and_how(key: Any) -> None:
    with pytest.raises(errors.PayloadError) as info:
        encode_payload({"outer": {"ok": 1, key: "v"}})
    message = str(info.value)
    assert isinstance(info.value, TypeError)
    why, where, fix = (
        message.index("dict keys must be"),
        message.index('at data["outer"]'),
        message.index("str(key)"),
    )
    assert why == 0 and why < where < fix, message
    assert type(key).__name__ in message and repr(key) in message


def test_unsupported_value_message_says_why_then_where_then_how() -> None:
    with pytest.raises(errors.PayloadError) as info:
        encode_payload({"outputs": {"x": {1}}})
    message = str(info.value)
    assert message.startswith("values of type set cannot be stored"), message
    assert message.index('at data["outputs"]["x"]') < message.index("convert it to"), message


@pytest.mark.parametrize(
    ("value", "back"),
    [
        # Everything the reference's json.dumps takes by default, and what reads back.
        ((1, (2, "x")), [1, [2, "x"]]),
        ([[1, [2, [3, []]]], []], [[1, [2, [3, []]]], []]),
        (float("inf"), float("inf")),
        (float("-inf"), float("-inf")),
        (10**30, 10**30),
        (-(10**4000), -(10**4000)),  # JSON's reach: up to 4300 digits by default
        (Tag("text"), "text"),
        (Count(5), 5),
        (Ratio(2.5), 2.5),
        (Level.LOW, 1),
        (True, True),
        ({"k": (None, False)}, {"k": [None, False]}),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_everything_json_takes_reads_back_as_stated(value: Any, back: Any) -> None:
    got = rt({"v": value})["v"]
    assert canon(got, decoded=True) == canon(back, decoded=False)
    assert type(got) is type(back)


def test_nan_value_reads_back_as_nan() -> None:
    got = rt({"v": float("nan")})["v"]
    assert type(got) is float and math.isnan(got)


def test_unsupported_enum_value_raises() -> None:
    class Weird(enum.Enum):
        X = frozenset({1})

    with pytest.raises(errors.PayloadError):
        encode_payload({"w": Weird.X})


def test_subclass_of_supported_type() -> None:
    class MyStr(str):
        pass

    class MyDict(dict):  # type: ignore[type-arg]
        pass

    for v in (MyStr("x"), MyDict(a=1)):
        try:
            got = rt(v)
        except errors.PayloadError:
            continue
        assert got == v


# --- hypothesis strategies --------------------------------------------------------------------

offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m))
)
naive_datetimes = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))
aware_datetimes = st.builds(lambda d, tz: d.replace(tzinfo=tz), naive_datetimes, offsets | st.just(UTC))

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | naive_datetimes
    | aware_datetimes
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.sampled_from(list(EventType) + list(EntityType) + list(Color) + list(Level))
)

#: Every key type json.dumps takes (NaN left out: it never equals itself, so tagging it hides nothing).
json_keys = (
    st.text(max_size=10)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.sampled_from(list(Level))
)

payload_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=25,
)
payloads = st.dictionaries(st.text(max_size=12), payload_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(payload_values)
def test_property_codec_round_trip(value: Any) -> None:
    assert_round_trips(value, rt(value))


@settings(max_examples=100, deadline=None)
@given(payload_values)
def test_property_encoding_is_deterministic(value: Any) -> None:
    assert encode_payload(value) == encode_payload(value)


# --- through every store ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_stores(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("codec-stores")
    stores = {kind: open_store(kind, tmp) for kind in STORE_KINDS}
    yield stores
    for s in stores.values():
        close_store(s)


@pytest.mark.parametrize("kind", STORE_KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=payloads)
def test_property_store_round_trip(
    module_stores: dict[str, EventStore], kind: str, data: dict[str, Any]
) -> None:
    store = module_stores[kind]
    e = new_event(data=data)
    stored = store.append(e)
    got = store.get_event_by_id(e.event_id)
    assert got is not None
    assert got.sequence == stored.sequence
    assert_round_trips(data, got.data)
    # append returns the appended event itself (with its sequence), payload as given
    assert canon(stored.data, decoded=False) == canon(data, decoded=False)


# --- unsupported values at a random path ---------------------------------------------------------

simple_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)
unsupported = st.sampled_from([{1}, frozenset(), object(), complex(0, 1), Thing(), range(1)])


@st.composite
def payload_with_bad_value(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A payload holding exactly one unsupported value, and the path that names it."""
    depth = draw(st.integers(min_value=1, max_value=4))
    bad = draw(unsupported)
    root_key = draw(simple_keys)
    path = f'data["{root_key}"]'
    # Build from the inside out: a list of (container kind, key or index) steps.
    steps: list[tuple[str, Any, Any]] = []
    for _ in range(depth - 1):
        if draw(st.booleans()):
            key = draw(simple_keys)
            siblings = draw(
                st.dictionaries(simple_keys.filter(lambda k, key=key: k != key), leaves, max_size=3)
            )
            steps.append(("dict", key, siblings))
        else:
            before = draw(st.lists(leaves, max_size=3))
            after = draw(st.lists(leaves, max_size=2))
            as_tuple = draw(st.booleans())
            steps.append(("list", (before, after, as_tuple), None))
    value: Any = bad
    suffix = ""
    for kind, a, b in reversed(steps):
        if kind == "dict":
            value = {**b, a: value}
            suffix = f'["{a}"]' + suffix
        else:
            before, after, as_tuple = a
            items = [*before, value, *after]
            value = tuple(items) if as_tuple else items
            suffix = f"[{len(before)}]" + suffix
    siblings = draw(st.dictionaries(simple_keys.filter(lambda k: k != root_key), leaves, max_size=3))
    return {**siblings, root_key: value}, path + suffix


def _names_exact_path(message: str, path: str) -> bool:
    # The path must appear and not be merely a prefix of a longer path.
    return re.search(re.escape(path) + r"(?!\[)", message) is not None


@settings(max_examples=200, deadline=None)
@given(payload_with_bad_value())
def test_property_unsupported_names_path(case: tuple[dict[str, Any], str]) -> None:
    payload, path = case
    with pytest.raises(errors.PayloadError) as info:
        encode_payload(payload)
    # encode_payload is given the payload itself; the message names the path below it
    inner = path[len("data") :]
    assert inner in str(info.value), (str(info.value), path)
    assert re.search(re.escape(inner) + r"(?!\[)", str(info.value)), (str(info.value), path)


@pytest.mark.parametrize("kind", STORE_KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=payload_with_bad_value())
def test_property_store_rejects_unsupported(
    module_stores: dict[str, EventStore], kind: str, case: tuple[dict[str, Any], str]
) -> None:
    store = module_stores[kind]
    payload, path = case
    good = new_event(data={"ok": 1})
    bad = new_event(data=payload)
    before = store.count_events()
    with pytest.raises(errors.PayloadError) as info:
        store.append_batch([good, bad])
    assert _names_exact_path(str(info.value), path), (str(info.value), path)
    assert store.count_events() == before
    assert store.get_event_by_id(good.event_id) is None


def test_store_payload_error_message_paths(tmp_path: Path) -> None:
    for kind in STORE_KINDS:
        store = open_store(kind, tmp_path, name=f"{kind}.db")
        try:
            with pytest.raises(errors.PayloadError) as info:
                store.append(new_event(data={"outputs": {"x": {1}}}))
            assert _names_exact_path(str(info.value), 'data["outputs"]["x"]'), str(info.value)
            with pytest.raises(errors.PayloadError) as info:
                store.append(new_event(data={"items": [0, 1, object()]}))
            assert _names_exact_path(str(info.value), 'data["items"][2]'), str(info.value)
            with pytest.raises(errors.PayloadError) as info:
                store.append(new_event(data={"a": {7: {(1, 2): "x"}}}))
            assert _names_exact_path(str(info.value), 'data["a"][7]'), str(info.value)
            assert store.count_events() == 0
        finally:
            close_store(store)


@pytest.mark.parametrize("not_bytes", ["text", bytearray(b"\x80"), memoryview(b"\x80"), None, 1])
def test_decode_payload_takes_only_bytes(not_bytes: Any) -> None:
    with pytest.raises(errors.ArgumentTypeError, match=f"data must be bytes, not {type(not_bytes).__name__}"):
        decode_payload(not_bytes)


DECODING_THREADS = """
import sys, threading, time, uuid
from stabilize_events._core import decode_payload, encode_payload

value = {"ids": [uuid.UUID(int=i) for i in range(50)], "name": "step-1", "status": "SUCCEEDED"}
blob = encode_payload(value)
sys.setswitchinterval(1e-6)
end = time.monotonic() + 1.5
wrong = []

def work():
    while time.monotonic() < end:
        if decode_payload(blob) != value:
            wrong.append(1)

threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("wrong", len(wrong))
"""


def test_threads_decoding_values_that_run_python_code_never_deadlock() -> None:
    # Decoding a UUID calls its Python class, which may let the GIL go mid-payload, with
    # the string cache held: a thread taking the GIL then must decode without the cache
    # rather than wait for it (a first form waited, holding the GIL, forever).
    done = subprocess.run(
        [sys.executable, "-c", DECODING_THREADS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["wrong", "0"]
