"""``export`` / ``import``: exact round trips, importing twice, bad lines, interruption."""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env, new_event
from helpers.jsonl_oracle import event_line, event_record
from stabilize_events import EntityType, Event, EventMetadata, EventType, SqliteEventStore
from stabilize_events._core import encode_payload
from stabilize_events.cli import main
from stabilize_events.cli.transfer import _Interrupt, export_events
from stabilize_events.demo import run_demo

BASE = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

#: Payloads JSON cannot carry as they are; the export keeps them exactly all the same.
AWKWARD: list[dict[str, Any]] = [
    {"blob": b"\x00\x01\xff", "when": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)},
    {"nan": math.nan, "inf": -math.inf, "big": 2**80, "tiny": 5e-324},
    {"nested": {"list": [1, "two", 3.5, None, True, {"deep": []}]}, "unicode": "é ✓ \u2028 \x00"},
    {1: "int key", "tuple": (1, 2)},
    {},
]


def _events() -> list[Event]:
    out = []
    for i, data in enumerate(AWKWARD * 3):
        out.append(
            Event(
                event_type=EventType.TASK_COMPLETED if i % 2 else EventType.STAGE_STARTED,
                entity_type=EntityType.TASK if i % 2 else EntityType.STAGE,
                entity_id=f"entity-{i}",
                workflow_id=f"wf-{i % 3}",
                version=i + 1,
                timestamp=BASE + timedelta(microseconds=7 * i, days=i),
                data=data,
                metadata=EventMetadata(
                    correlation_id=f"wf-{i % 3}",
                    causation_id=None if i % 2 else f"cause-{i}",
                    actor="alice" if i % 4 == 0 else "system",
                    source_handler=None if i % 3 == 0 else "SomeHandler",
                ),
                schema_version=1 + i % 2,
            )
        )
    return out


def _store(path: Path, events: list[Event] | None = None) -> str:
    url = f"sqlite:///{path}"
    store = SqliteEventStore(url)
    try:
        if events:
            store.append_batch(events[:5])
            for event in events[5:]:
                store.append(event)
    finally:
        store.close()
    return url


def _all(url: str) -> list[Event]:
    store = SqliteEventStore(url, create_tables=False)
    try:
        return store.get_events_since(0, 100_000)
    finally:
        store.close()


def _same(a: Event, b: Event) -> None:
    ra, rb = event_record(a), event_record(b)
    ra.pop("data", None), rb.pop("data", None)
    assert ra == rb
    assert encode_payload(a.data) == encode_payload(b.data)
    assert a.timestamp == b.timestamp and a.sequence == b.sequence


def test_round_trip_keeps_every_field_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _store(tmp_path / "a.db", _events())
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    lines = dump.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(AWKWARD) * 3
    assert b"\xe2\x80\xa8" not in dump.read_bytes()  # U+2028 escaped: other tools split lines on it
    assert b"data_msgpack" in lines[0] and b'"data":' in lines[2]  # exotic as msgpack, plain as JSON
    target = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["import", str(dump), "--store", target]) == 0
    before, after = _all(source), _all(target)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        _same(a, b)
    # A second export of the copy is byte for byte the first.
    again = tmp_path / "again.jsonl"
    assert main(["export", str(again), "--store", target]) == 0
    assert again.read_bytes() == dump.read_bytes()


def test_importing_twice_adds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _store(tmp_path / "a.db", _events())
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    target = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["import", str(dump), "--store", target]) == 0
    capsys.readouterr()
    assert main(["import", str(dump), "--store", target]) == 0
    assert (
        f"imported 0 events into {target}; {len(AWKWARD) * 3} were already there" in capsys.readouterr().err
    )
    assert len(_all(target)) == len(AWKWARD) * 3


def test_import_into_a_store_with_other_events_at_those_sequences_is_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _store(tmp_path / "a.db", _events())
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    other = _store(tmp_path / "other.db", _events()[:2])  # different ids at sequences 1 and 2
    capsys.readouterr()
    assert main(["import", str(dump), "--store", other]) == 1
    err = capsys.readouterr().err
    assert "line 1: sequence 1 is held by another event" in err
    assert len(_all(other)) == 2  # nothing of the chunk written


def test_import_into_memory_gets_new_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", _store(tmp_path / "a.db", _events())]) == 0
    assert main(["import", str(dump), "--store", "memory://"]) == 0
    assert "new sequences" in capsys.readouterr().err


def _demo_dump(tmp_path: Path) -> tuple[Path, list[str]]:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    store = SqliteEventStore(url)
    try:
        run_demo(store, url, out=io.StringIO())
    finally:
        store.close()
    dump = tmp_path / "demo.jsonl"
    assert main(["export", str(dump), "--store", url]) == 0
    return dump, dump.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ('{"sequence": 9, "event_id": "x", "event_t\n', "not JSON"),  # truncated
        ("[1, 2, 3]\n", "not an event object"),
        (None, "no 'workflow_id' field"),  # hand-edited: a field removed
        (None, "'version' is '2', not a whole number"),  # hand-edited: a field retyped
    ],
)
def test_a_bad_line_is_reported_by_number_and_not_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str | None, why: str
) -> None:
    dump, lines = _demo_dump(tmp_path)
    record = json.loads(lines[40])
    if "workflow_id" in why:
        del record["workflow_id"]
    elif "version" in why:
        record["version"] = "2"
    lines[40] = bad if bad is not None else json.dumps(record) + "\n"
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(lines))
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    capsys.readouterr()
    assert main(["import", str(broken), "--store", target]) == 1
    err = capsys.readouterr().err
    assert "line 41: " in err and why in err.split("line 41: ", 1)[1] and "--skip-bad" in err
    assert [e.sequence for e in _all(target)] == list(range(1, 41))  # the lines before it
    # --skip-bad: every good line, the bad one listed and left out.
    assert main(["import", str(broken), "--store", target, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "line 41:" in err and "skipped 1 bad lines" in err
    assert [e.sequence for e in _all(target)] == [s for s in range(1, 72) if s != 41]
    # Fixed, the same command carries on and adds only what is missing.
    broken.write_text("".join(dump.read_text().splitlines(keepends=True)))
    assert main(["import", str(broken), "--store", target]) == 0
    assert "imported 1 events" in capsys.readouterr().err
    assert len(_all(target)) == 71


def test_import_of_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path / "nope.jsonl"), "--store", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_export_stopped_between_pages_leaves_only_whole_lines(tmp_path: Path) -> None:
    url = _store(tmp_path / "a.db")
    store = SqliteEventStore(url)
    event = _events()[2]
    try:
        store.append_batch(
            [
                Event(
                    event_type=event.event_type,
                    entity_type=event.entity_type,
                    entity_id=f"e{i}",
                    workflow_id="wf",
                    version=1,
                    data={"i": i},
                    metadata=event.metadata,
                )
                for i in range(12_000)
            ]
        )
        stop = _Interrupt()
        stop.asked = True  # Ctrl-C before the first page is written
        out = io.BytesIO()
        written = export_events(store, out, 0, stop)
    finally:
        store.close()
    text = out.getvalue().decode()
    assert 0 < written < 12_000 and text.endswith("\n")
    assert [json.loads(line)["data"]["i"] for line in text.splitlines()] == list(range(written))


def test_ctrl_c_during_import_keeps_whole_chunks_and_resumes(tmp_path: Path) -> None:
    source = _store(tmp_path / "a.db")
    store = SqliteEventStore(source)
    try:
        store.append_batch(
            [
                Event(
                    event_type=EventType.TASK_STARTED,
                    entity_type=EntityType.TASK,
                    entity_id=f"e{i}",
                    workflow_id=f"wf{i % 50}",
                    version=1,
                    data={"i": i, "pad": "x" * 50},
                    metadata=EventMetadata(correlation_id="c"),
                )
                for i in range(60_000)
            ]
        )
    finally:
        store.close()
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    target = f"sqlite:///{tmp_path / 'b.db'}"
    env = child_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stabilize_events", "import", str(dump), "--store", target],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Interrupt once the import has begun writing (or finished: both must leave whole chunks).
    b = tmp_path / "b.db"
    while proc.poll() is None and not (b.exists() and b.stat().st_size > 200_000):
        pass
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    assert code in (0, 130), proc.stderr.read() if proc.stderr else ""
    kept = _all(target)
    assert len(kept) % 5000 == 0 or len(kept) == 60_000  # whole chunks only
    assert [e.sequence for e in kept] == list(range(1, len(kept) + 1))
    # Run again: it carries on, nothing twice.
    assert main(["import", str(dump), "--store", target]) == 0
    assert [e.sequence for e in _all(target)] == list(range(1, 60_001))


def _one_workflow(count: int) -> list[Event]:
    """`count` events of one workflow sharing their metadata (rows stored sharing columns)."""
    return [new_event() for _ in range(count)]


def test_many_events_of_one_workflow_round_trip(tmp_path: Path) -> None:
    source = _store(tmp_path / "a.db", _one_workflow(80))
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    assert main(["import", str(dump), "--store", copy]) == 0
    for a, b in zip(_all(source), _all(copy), strict=True):
        _same(a, b)


# Line 40 of 80 events of one workflow is inside the second group of rows stored together.
@pytest.mark.parametrize(("many", "line"), [(False, 3), (True, 40)])
def test_an_event_id_stored_at_another_sequence_is_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], many: bool, line: int
) -> None:
    source = _store(tmp_path / "a.db", _one_workflow(80) if many else _events())
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    lines = dump.read_text().splitlines(keepends=True)
    moved = json.loads(lines[line - 1])
    moved["sequence"] = 1000
    single = tmp_path / "moved.jsonl"
    single.write_text(json.dumps(moved) + "\n")
    target = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["import", str(single), "--store", target]) == 0
    capsys.readouterr()
    assert main(["import", str(dump), "--store", target]) == 1
    err = capsys.readouterr().err
    assert f"line {line}: an event with event_id {moved['event_id']} is already stored" in err
    assert [e.sequence for e in _all(target)] == [1000]  # nothing of the chunk written


# -- the core's encoder and parser, line by line ---------------------------------------------------

#: Payloads at the edges of what JSON holds exactly (or not), beside AWKWARD's.
EDGES: list[dict[str, Any]] = [
    {"floats": [0.0, -0.0, 1e16, 1e15, 1.5e-5, 0.0001, 123456.789, 1.7976931348623157e308, 0.1 + 0.2]},
    {"ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**64) - 1, -(2**200), 2**1000]},
    {"text": '"quoted" \\ back\nslash\t\x7f\x1f \u2029 𝄞 \U0010ffff', "": None, "k\u2028": True},
    {"float32": 1.5, "nested": [[[[]]], {"a": {"b": {}}}]},
    {"uuid-like": "0" * 64, "empty": "", "list": list(range(40)), "map": {str(i): i for i in range(40)}},
    {"set": [1, 2], "tuple": (1, "a"), "bytes in list": [b"x"]},
]


def test_the_core_writes_each_event_as_the_python_oracle_does(tmp_path: Path) -> None:
    from stabilize_events._core import jsonl_encode_events

    store = SqliteEventStore(f"sqlite:///{tmp_path / 'edges.db'}")
    try:
        events = [
            Event(
                event_type=EventType.TASK_COMPLETED,
                entity_type=EntityType.TASK,
                entity_id=f"e-{i}",
                workflow_id="wf \u2028 ✓",
                version=i,
                timestamp=datetime(1, 1, 1, tzinfo=UTC) if i == 0 else BASE + timedelta(microseconds=-i),
                data=data,
                metadata=EventMetadata(correlation_id='c"1', causation_id="\x00", source_handler="H"),
            )
            for i, data in enumerate(AWKWARD + EDGES)
        ]
        stored = store.append_batch(events)
        read = store.get_events_since(0, 1000)
    finally:
        store.close()
    assert jsonl_encode_events(stored) == jsonl_encode_events(read)
    for event in read:
        assert jsonl_encode_events([event]) == event_line(event), event.data


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"sequence": 1, "event_id": "a"', "not JSON (expected ',' or '}' at column 32, the line ends)"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'"just text"', "a JSON string, not an event object"),
        (b"{} {}", "not JSON (expected the end of the line at column 4"),
        (b'{"sequence": 1.0}', "'sequence' is 1.0, not a whole number"),
        (b'{"sequence": 99999999999999999999}', "'sequence' is 99999999999999999999, out of range"),
        (b'{"sequence": 0}', "'sequence' is 0, must be 1 or more"),
        (b'{"sequence": 1, "event_id": 5}', "'event_id' is 5, not text"),
        (b'{"x": "\\ud800"}', "lone surrogate"),
        (b'{"x": "a\tb"}', "no control character inside a string"),
        (b'{"x": [1, 2,]}', "expected a JSON value at column 13"),
        (b'{"x": 01}', "expected a JSON value"),
    ],
)
def test_a_bad_line_names_what_is_wrong(line: bytes, why: str) -> None:
    from stabilize_events._core import jsonl_parse

    read = jsonl_parse(b"\n\n" + line + b"\n", 7, False)
    bad = read.bad
    assert read.events() == [] and len(bad) == 1
    number, reason = bad[0]
    assert number == 9 and why in reason, reason


def test_a_hand_edited_field_names_itself(tmp_path: Path) -> None:
    from stabilize_events._core import jsonl_parse

    def jsonl_read_events(block: bytes, first_line: int, skip_bad: bool) -> tuple[list[Event], Any]:
        read = jsonl_parse(block, first_line, skip_bad)
        return read.events(), read.bad

    _dump, lines = _demo_dump(tmp_path)
    record = json.loads(lines[3])
    edits = [
        ("timestamp", "2024-03-01 12:00:00", "has no UTC offset"),
        ("timestamp", "2024-02-30T12:00:00+00:00", "not a valid date and time"),
        ("entity_type", "job", "'entity_type' is \"job\", not one of workflow, stage, task"),
        ("data", [1], "the payload ('data') is list, not an object"),
        ("data_msgpack", "gA==", "needs exactly one of 'data' and 'data_msgpack'"),
        ("metadata", {"actor": "x"}, "no 'correlation_id' in 'metadata'"),
        ("metadata", "m", "'metadata' is 'm', not an object"),
    ]
    for field_name, value, why in edits:
        edited = {**record, field_name: value}
        _events, bad = jsonl_read_events(json.dumps(edited).encode(), 1, False)
        assert len(bad) == 1 and why in bad[0][1], (field_name, bad)
    only_msgpack = {k: v for k, v in record.items() if k != "data"}
    for value, why in [("!!!!", "not base64"), ("kQE=", "is not a map"), ("wQ==", "not a stored payload")]:
        line = json.dumps({**only_msgpack, "data_msgpack": value}).encode()
        _events, bad = jsonl_read_events(line, 1, False)
        assert len(bad) == 1 and why in bad[0][1], (value, bad)
    # What the line says is what is read: every field, a newer writer's event type too.
    record["event_type"] = "workflow.teleported"
    record["extra"] = {"ignored": [1, 2]}
    (event,), bad = jsonl_read_events(json.dumps(record).encode() + b"\r\n", 1, False)
    assert bad == [] and event.event_id == record["event_id"] and event.sequence == record["sequence"]
    assert event.event_type == EventType.UNKNOWN  # read as an unknown type is, its name kept:
    assert event.data == {**record["data"], "_raw_event_type": "workflow.teleported"}
    assert event.timestamp.isoformat() == record["timestamp"]


def test_export_to_a_text_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import contextlib

    source = _store(tmp_path / "a.db", _events())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # a StringIO has no binary buffer
        assert main(["export", "--store", source]) == 0
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump), "--store", source]) == 0
    assert out.getvalue().encode() == dump.read_bytes()


def _read_in_chunks(path: Path, chunk: int, skip_bad: bool) -> list[Any]:
    from stabilize_events._core import JsonlReader

    with path.open("rb") as f:
        reader = JsonlReader(f.fileno(), chunk, skip_bad)
        chunks = list(reader)
        assert reader.finished
    return chunks


def test_the_reader_numbers_lines_across_chunks_and_reads(tmp_path: Path) -> None:
    """Blank and CRLF lines, a line longer than a read (1 MiB) and a last line with no newline:
    the reader gives the events of the whole file with their line numbers, `chunk` lines at
    a time, and counts every byte."""
    from stabilize_events._core import jsonl_parse

    _dump, lines = _demo_dump(tmp_path)
    record = json.loads(lines[30])
    record["data"]["long"] = "y" * 1_500_000
    lines[30] = json.dumps(record) + "\n"
    lines[10] = lines[10].replace("\n", "\r\n")
    lines[20:20] = ["\n", "  \n"]
    lines[-1] = lines[-1].rstrip("\n")
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(lines))
    data = path.read_bytes()

    chunks = _read_in_chunks(path, 7, False)
    assert [len(c) for c in chunks[:5]] == [7, 7, 6, 6, 7]  # lines 21 and 22 are blank
    assert sum(c.size for c in chunks) == len(data)
    assert all(not c.bad for c in chunks)
    read = [(e.sequence, e.data) for c in chunks for e in c.events()]
    whole = jsonl_parse(data, 1, False)
    assert read == [(e.sequence, e.data) for e in whole.events()]
    assert len(read) == len(lines) - 2 and read[-1][0] == 71
    assert [e.data.get("long") for c in chunks for e in c.events() if e.sequence == 31] == ["y" * 1_500_000]


def test_the_reader_stops_at_a_bad_line_unless_told_to_skip(tmp_path: Path) -> None:
    _dump, lines = _demo_dump(tmp_path)
    lines[12] = '{"sequence": 13, "event_id"\n'
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(lines))

    chunks = _read_in_chunks(path, 5, False)
    assert [len(c) for c in chunks] == [5, 5, 2]  # the last ends at line 13
    assert chunks[-1].bad[0][0] == 13 and "not JSON" in chunks[-1].bad[0][1]
    assert chunks[-1].size == sum(len(line.encode()) for line in lines[10:13])

    chunks = _read_in_chunks(path, 5, True)
    assert sum(len(c) for c in chunks) == len(lines) - 1
    assert [n for c in chunks for n, _why in c.bad] == [13]


def test_import_from_stdin_and_of_a_file_cut_short(tmp_path: Path) -> None:
    """`import -` reads a pipe; a last line cut short (no newline, not whole JSON) is a bad line
    named by its number, everything before it imported."""
    dump, lines = _demo_dump(tmp_path)
    cut = "".join(lines[:50]) + lines[50][:40]
    target = f"sqlite:///{tmp_path / 'piped.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "stabilize_events", "import", "-", "--store", target],
        input=cut,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "-: line 51: not JSON" in done.stderr
    assert [e.sequence for e in _all(target)] == list(range(1, 51))
    done = subprocess.run(
        [sys.executable, "-m", "stabilize_events", "import", "-", "--store", target],
        input=dump.read_text(),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "imported 21 events" in done.stderr and "50 were already there" in done.stderr
    assert len(_all(target)) == 71


def test_a_second_ctrl_c_stops_an_import_waiting_on_an_idle_pipe(tmp_path: Path) -> None:
    """The core's reader waits for the rest of a chunk that never comes: the first Ctrl-C asks
    to stop after the chunk, the second stops at once (exit 130), nothing written."""
    _dump, lines = _demo_dump(tmp_path)
    b = tmp_path / "b.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stabilize_events", "import", "-", "--store", f"sqlite:///{b}"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write("".join(lines[:10]))
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not b.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the wait for the rest of the chunk
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdin.close()
    assert code == 130, proc.stderr.read()
    assert "interrupted" in proc.stderr.read()
    assert _all(f"sqlite:///{b}") == []
