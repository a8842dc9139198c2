"""``export`` and ``import``: every field of every event as JSON Lines, and back.

One event per line, in sequence order::

    {"sequence": 7, "event_id": "01J...", "event_type": "stage.started",
     "timestamp": "2026-12-04T17:28:23.265123+00:00", "entity_type": "stage", "entity_id": "...",
     "workflow_id": "...", "version": 1, "data": {...},
     "metadata": {"correlation_id": "...", "causation_id": null, "actor": "system",
                  "source_handler": "StartStageHandler"},
     "schema_version": 1}

``data`` is the payload as JSON when JSON holds it exactly (str keys; str, int, finite float,
bool, None, lists, dicts); any other payload (bytes, datetimes, NaN, non-str keys...) is written
as ``"data_msgpack"``: base64 of the store's own encoding, so it reads back exactly. Text is
UTF-8; U+2028 and U+2029 are written escaped, since some tools break lines on them.

Importing into an SQLite file keeps every event's sequence, id and timestamp: rows are written
by the same path as the upgrade (`CallerConnections.append` with the sequences). Each chunk is
one transaction, so an interrupted import (Ctrl-C, a crash) keeps whole chunks and running it
again carries on: an event already present (same sequence, same id) is skipped, so importing a
file twice adds nothing. An event whose sequence or id is held by a different event is a
conflict and stops the import. Into an in-memory store (``memory://``, ``sqlite:///:memory:``)
events are appended with `append_batch`, which assigns new sequences (order kept).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from stabilize_events import EventStore, SqliteEventStore
from stabilize_events._core import Event, EventMetadata, decode_payload, encode_payload
from stabilize_events.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    add_store_option,
    all_events,
    close,
    database_file,
    error,
    open_store,
    positive_int,
    store_url,
)
from stabilize_events.errors import StabilizeEventsError
from stabilize_events.store.caller_connection import CallerConnections
from stabilize_events.types import EntityType, parse_event_type

#: Events per export page and per import transaction.
CHUNK = 5000


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
        scalars = _SCALARS
        for k, v in value.items():
            if type(k) is not str or (type(v) not in scalars and not _plain(v)):
                return False
        return True
    return False


def _line_encoder() -> Any:
    """A compact JSON encoder for one record, made once (``json.dumps`` sets one up per call)."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # no C accelerator: the plain encoder
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def refuse(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON")

    encode = c_make_encoder(None, refuse, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda record: "".join(encode(record, 0))


def event_record(event: Event) -> dict[str, Any]:
    """``event`` as one JSON Lines record (see the module doc)."""
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


class BadLine(Exception):
    """A line of an import file that is not an event record; the message says why."""


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "sequence": int,
    "event_id": str,
    "event_type": str,
    "timestamp": str,
    "entity_type": str,
    "entity_id": str,
    "workflow_id": str,
    "version": int,
    "metadata": dict,
    "schema_version": int,
}


def event_from_record(line: str) -> Event:
    """The event one export line holds; `BadLine` naming the problem if it holds none."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(
            f"not JSON ({exc.msg} at column {exc.colno}); a truncated or hand-edited line?"
        ) from None
    if not isinstance(record, dict):
        raise BadLine(f"a JSON {type(record).__name__}, not an event object")
    for key, kind in _REQUIRED.items():
        if key not in record:
            raise BadLine(f"no {key!r} field")
        value = record[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadLine(f"{key!r} is {value!r}, not {'a whole number' if kind is int else 'text'}")
    if record["sequence"] < 1:
        raise BadLine(f"'sequence' is {record['sequence']}, must be 1 or more")
    if ("data" in record) == ("data_msgpack" in record):
        raise BadLine("needs exactly one of 'data' and 'data_msgpack'")
    try:
        if "data" in record:
            data = record["data"]
        else:
            data = decode_payload(base64.b64decode(record["data_msgpack"], validate=True))
        if not isinstance(data, dict):
            raise BadLine(f"the payload is a {type(data).__name__}, not an object")
        timestamp = datetime.fromisoformat(record["timestamp"])
        if timestamp.tzinfo is None:
            raise BadLine(f"'timestamp' {record['timestamp']!r} has no UTC offset")
        meta = record["metadata"]
        return Event(
            event_id=record["event_id"],
            event_type=parse_event_type(record["event_type"]),
            timestamp=timestamp,
            sequence=record["sequence"],
            entity_type=EntityType(record["entity_type"]),
            entity_id=record["entity_id"],
            workflow_id=record["workflow_id"],
            version=record["version"],
            data=data,
            metadata=EventMetadata(
                correlation_id=meta["correlation_id"],
                causation_id=meta.get("causation_id"),
                actor=meta.get("actor", "system"),
                source_handler=meta.get("source_handler"),
            ),
            schema_version=record["schema_version"],
        )
    except BadLine:
        raise
    except (ValueError, TypeError, KeyError, StabilizeEventsError) as exc:
        raise BadLine(" ".join(str(exc).split()) or type(exc).__name__) from None


# -- Ctrl-C between whole units of work ---------------------------------------------------------


class _Interrupt:
    """Turns Ctrl-C into a flag checked between chunks, so no line or chunk is cut in half."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.asked:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.asked = True


@contextmanager
def _deferred_interrupt() -> Iterator[_Interrupt]:
    flag = _Interrupt()
    try:
        previous = signal.signal(signal.SIGINT, flag)
    except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self._bar: Any = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn(description),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- export ------------------------------------------------------------------------------------------


def export_events(
    store: EventStore,
    out: IO[str],
    after: int = 0,
    stop: _Interrupt | None = None,
    progress: _Progress | None = None,
) -> int:
    """Write the events after sequence ``after`` to ``out`` as JSON Lines; return how many.

    Stops between pages when ``stop.asked`` is set; every line written is whole.
    """
    dumps = _line_encoder()
    written = 0
    for page in all_events(store, after, CHUNK):
        text = "".join([dumps(event_record(e)) + "\n" for e in page])
        if "\u2028" in text or "\u2029" in text:  # line breaks to other tools: keep them escaped
            text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        out.write(text)
        written += len(page)
        if progress is not None:
            progress.advance(len(page))
        if stop is not None and stop.asked:
            break
    out.flush()
    return written


def cmd_export(args: argparse.Namespace) -> int:
    """Export the store to FILE (or stdout) as JSON Lines."""
    store = open_store(store_url(args), must_exist=True)
    to_stdout = args.file in (None, "-")
    try:
        total = store.count_events()
        with _deferred_interrupt() as stop:
            out: IO[str] = sys.stdout if to_stdout else open(args.file, "w", encoding="utf-8")
            progress = _Progress("exporting", total) if not to_stdout else None
            try:
                written = export_events(store, out, args.after_seq, stop, progress)
            finally:
                if progress is not None:
                    progress.stop()
                if not to_stdout:
                    out.close()
    finally:
        close(store)
    where = "stdout" if to_stdout else args.file
    if stop.asked:
        error(
            f"interrupted after exporting {written:,} of {total:,} events "
            f"to {where}; every line written is whole. Run again, or export the rest with --after-seq "
            f"(the last sequence written) into another file"
        )
        return EXIT_INTERRUPTED
    print(f"exported {written:,} events to {where}", file=sys.stderr)
    return EXIT_OK


# -- import ------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did."""

    imported: int = 0
    already_present: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    interrupted: bool = False


class ImportConflict(Exception):
    """An event of the file collides with a different stored event (sequence or id)."""


class _SqliteTarget:
    """Writes into an SQLite file with the events' own sequences (the upgrade's write path)."""

    def __init__(self, store: SqliteEventStore, path: Path) -> None:
        self._callers = CallerConnections(store._core, path)
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30)

    def write(self, events: list[Event], lines: list[int]) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            held = dict(
                conn.execute(
                    f"SELECT sequence, event_id FROM event_log WHERE sequence IN "
                    f"({','.join('?' * len(events))})",
                    [e.sequence for e in events],
                ).fetchall()
            )
            fresh: list[Event] = []
            for event, line in zip(events, lines, strict=True):
                there = held.get(event.sequence)
                if there is None:
                    fresh.append(event)
                elif there != event.event_id:
                    raise ImportConflict(
                        f"line {line}: sequence {event.sequence} is held by another event ({there}, not "
                        f"{event.event_id}); nothing of this chunk was imported. Import into an empty "
                        f"store, or into the store this file came from"
                    )
            if fresh:
                try:
                    self._callers.append(conn, fresh, [e.sequence for e in fresh])
                except StabilizeEventsError as exc:
                    raise ImportConflict(
                        f"{exc}. Import into an empty store, or into the store this file came from"
                    ) from None
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(fresh)

    def close(self) -> None:
        self._conn.close()


class _BatchTarget:
    """Appends into a store without a file: new sequences, order kept; ids already there skipped."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def write(self, events: list[Event], lines: list[int]) -> int:
        fresh = [e for e in events if self._store.get_event_by_id(e.event_id) is None]
        if fresh:
            self._store.append_batch(fresh)
        return len(fresh)

    def close(self) -> None:
        pass


def import_lines(
    source: IO[str],
    target: _SqliteTarget | _BatchTarget,
    skip_bad: bool,
    stop: _Interrupt | None = None,
    progress: _Progress | None = None,
) -> ImportResult:
    """Import JSON Lines from ``source``; stops at the first bad line unless ``skip_bad``."""
    result = ImportResult()
    events: list[Event] = []
    lines: list[int] = []

    def flush() -> None:
        if events:
            added = target.write(events, lines)
            result.imported += added
            result.already_present += len(events) - added
            if progress is not None:
                progress.advance(len(events))
            events.clear()
            lines.clear()

    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            event = event_from_record(line)
        except BadLine as exc:
            result.bad_lines.append((number, str(exc)))
            if not skip_bad:
                flush()
                return result
            continue
        events.append(event)
        lines.append(number)
        if len(events) >= CHUNK:
            flush()
            if stop is not None and stop.asked:
                result.interrupted = True
                return result
    flush()
    return result


def cmd_import(args: argparse.Namespace) -> int:
    """Import a JSON Lines export into the store."""
    url = store_url(args)
    path = database_file(url)
    from_stdin = args.file == "-"
    if not from_stdin and not Path(args.file).is_file():
        raise UsageError(
            f"no such file {args.file!r} to import (give the path of a `stabilize-events export`)"
        )
    store = open_store(url)
    target: _SqliteTarget | _BatchTarget
    target = (
        _SqliteTarget(store, path) if isinstance(store, SqliteEventStore) and path else _BatchTarget(store)
    )
    total = None if from_stdin else sum(1 for _ in open(args.file, "rb"))
    progress = _Progress("importing", total)
    try:
        with _deferred_interrupt() as stop:
            source: IO[str] = sys.stdin if from_stdin else open(args.file, encoding="utf-8")
            try:
                result = import_lines(source, target, args.skip_bad, stop, progress)
            except ImportConflict as exc:
                progress.stop()
                error(exc)
                return EXIT_FAILED
            finally:
                if not from_stdin:
                    source.close()
    finally:
        progress.stop()
        target.close()
        close(store)
    note = "" if path is not None else " (an in-memory store: new sequences, gone when this command ends)"
    print(
        f"imported {result.imported:,} events into {url}{note}; "
        f"{result.already_present:,} were already there",
        file=sys.stderr,
    )
    for number, why in result.bad_lines:
        print(f"{args.file}: line {number}: {why}", file=sys.stderr)
    if result.interrupted:
        error("interrupted; whole chunks were imported: run the same command again to carry on")
        return EXIT_INTERRUPTED
    if result.bad_lines and not args.skip_bad:
        number, _why = result.bad_lines[0]
        error(
            f"stopped at line {number} of {args.file}, a bad line (nothing of it was imported; the lines "
            f"before it were). Fix or remove the line and run again (what is imported is skipped), or "
            f"pass --skip-bad to import every good line"
        )
        return EXIT_FAILED
    if result.bad_lines:
        print(f"skipped {len(result.bad_lines):,} bad lines (--skip-bad)", file=sys.stderr)
    return EXIT_OK


def register(commands: Any) -> None:
    """Add ``export`` and ``import`` to ``commands`` (argparse subparsers)."""
    p = commands.add_parser(
        "export",
        help="write every event as JSON Lines (every field, exactly)",
        description=(
            __doc__.split("\n\n", 1)[1].split("Importing")[0].strip().replace("::", ":").replace("``", "")
            if __doc__
            else None
        ),
        epilog="example:\n  stabilize-events export backup.jsonl --store sqlite:////var/lib/app/events.db\n"
        "  stabilize-events export | gzip > events.jsonl.gz\n\n"
        "Ctrl-C stops at a whole line (exit code 130).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(p)
    p.add_argument("file", nargs="?", metavar="FILE", help="where to write (default: stdout)")
    p.add_argument("--after-seq", type=int, default=0, metavar="N", help="only events after sequence N")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "import",
        help="read a JSON Lines export into the store, keeping ids, sequences and timestamps",
        description=(
            "Import an export into the store. Into an SQLite file every event keeps its sequence, "
            "id and timestamp; events already there are skipped, so importing twice adds nothing and "
            "an interrupted import carries on when run again. A bad line (not JSON, a missing or "
            "mistyped field) is reported with its line number and nothing of it is imported: the "
            "import stops there (the lines before it are kept), or with --skip-bad goes on and lists "
            "every bad line. Into memory:// or sqlite:///:memory: events get new sequences."
        ),
        epilog="example:\n  stabilize-events import backup.jsonl --store sqlite:///restored.db\n\n"
        "exit codes: 0 imported (with --skip-bad: bad lines listed); 1 stopped at a bad line or a "
        "conflicting event; 2 bad arguments; 130 interrupted (run again to carry on)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(p)
    p.add_argument("file", metavar="FILE", help="the JSON Lines file ('-': stdin)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad lines (each listed) instead of stopping")
    p.set_defaults(func=cmd_import)


__all__ = ["event_from_record", "event_record", "export_events", "import_lines", "positive_int"]
