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

Both ways the work is done by the Rust core (`_core.jsonl_*`): an export streams rows from
the store to these bytes a page at a time, and an import reads the file's lines into rows
(`_core.JsonlReader`, a chunk at a time on a thread of its own).

Importing into an SQLite file keeps every event's sequence, id and timestamp: each chunk of
`CHUNK` lines is one transaction written by `_core.SqliteJsonlImport`, so an interrupted import
(Ctrl-C, a crash) keeps whole chunks and running it again carries on: an event already present
(same sequence, same id) is skipped, so importing a file twice adds nothing. An event whose
sequence or id is held by a different event is a conflict and stops the import, nothing of its
chunk written. A bad line (not JSON, a missing or mistyped field) is reported with its number;
the lines before it are imported and the import stops, or with ``--skip-bad`` every good line
is. Into any other store (``memory://``, ``sqlite:///:memory:``, PostgreSQL) events are appended
with `append_batch`, which assigns new sequences (order kept).
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from stabilize_events import EventStore
from stabilize_events._core import (
    JsonlLines,
    JsonlReader,
    NativeStore,
    SqliteJsonlImport,
    jsonl_encode_events,
    jsonl_export_page,
)
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
    postgres_target,
    shown_url,
    store_url,
)
from stabilize_events.errors import DuplicateEventError, StabilizeEventsError

#: Lines per import transaction.
CHUNK = 5000
#: Sequences per export page (a page's bytes stay small enough to be reused, not mapped anew).
EXPORT_PAGE = 1000


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
    """A rich progress bar on stderr when it is a terminal; nothing otherwise.

    ``in_bytes`` counts bytes of the file read (import) instead of events (export).
    """

    def __init__(self, description: str, total: int | None, in_bytes: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self._bar: Any = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn(description),
                BarColumn(),
                DownloadColumn() if in_bytes else MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
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


def _pages(store: EventStore, after: int) -> Iterator[tuple[bytes, int, int]]:
    """The store's events after ``after`` as JSON Lines, a page at a time: (lines, count, last sequence).

    A store over the Rust core is read and written out there, row by row; any other
    store's events are read a page at a time and written out by the core.
    """
    core = getattr(store, "_core", None)
    if isinstance(core, NativeStore):
        while True:
            page = jsonl_export_page(core, after, EXPORT_PAGE)
            if page[1] == 0:
                return
            yield page
            after = page[2]
    else:
        for events in all_events(store, after, EXPORT_PAGE):
            yield jsonl_encode_events(events), len(events), events[-1].sequence


class _TextSink(io.RawIOBase):
    """Bytes written to a text stream without a binary buffer (``sys.stdout`` replaced by a
    ``StringIO``, say), decoded as UTF-8."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._text.write(bytes(data).decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


def _stdout_bytes() -> IO[bytes]:
    """Standard output as a binary stream."""
    buffer = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else _TextSink(sys.stdout)  # type: ignore[return-value]


def export_events(
    store: EventStore,
    out: IO[bytes],
    after: int = 0,
    stop: _Interrupt | None = None,
    progress: _Progress | None = None,
) -> int:
    """Write the events after sequence ``after`` to ``out`` as JSON Lines; return how many.

    Stops between pages when ``stop.asked`` is set; every line written is whole.
    """
    written = 0
    for lines, count, _last in _pages(store, after):
        out.write(lines)
        written += count
        if progress is not None:
            progress.advance(count)
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
            out: IO[bytes] = _stdout_bytes() if to_stdout else open(args.file, "wb")
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


class _SqliteTarget:
    """Writes into an SQLite file with the events' own sequences, one transaction per chunk."""

    def __init__(self, path: Path) -> None:
        self._import = SqliteJsonlImport(path)

    def write(self, lines: JsonlLines) -> tuple[int, int]:
        return self._import.write(lines)

    def close(self) -> None:
        self._import.close()


class _BatchTarget:
    """Appends into any other store: new sequences, order kept; ids already there skipped."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def write(self, lines: JsonlLines) -> tuple[int, int]:
        events = lines.events()
        if not events:
            return 0, 0
        try:  # one round trip when none is there yet (a first import)
            self._store.append_batch(events)
            return len(events), 0
        except DuplicateEventError:  # some are there (nothing of the batch was written)
            pass
        fresh = [e for e in events if self._store.get_event_by_id(e.event_id) is None]
        if fresh:
            self._store.append_batch(fresh)
        return len(fresh), len(events) - len(fresh)

    def close(self) -> None:
        pass


def import_lines(
    source: IO[bytes],
    target: _SqliteTarget | _BatchTarget,
    skip_bad: bool,
    stop: _Interrupt | None = None,
    progress: _Progress | None = None,
) -> ImportResult:
    """Import JSON Lines from ``source`` (a file with a descriptor, read from where it stands),
    a transaction per `CHUNK` lines; stops at the first bad line (the lines before it imported)
    unless ``skip_bad``.

    The core reads the next chunks on a thread of its own while one is written.
    """
    result = ImportResult()
    reader = JsonlReader(source.fileno(), CHUNK, skip_bad)
    for lines in reader:
        imported, present = target.write(lines)
        result.imported += imported
        result.already_present += present
        result.bad_lines.extend(lines.bad)
        if progress is not None:
            progress.advance(lines.size)
        if lines.bad and not skip_bad:
            break
        if stop is not None and stop.asked:
            result.interrupted = not reader.finished
            break
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
    target = _SqliteTarget(path) if path is not None else _BatchTarget(store)
    total = None if from_stdin else Path(args.file).stat().st_size
    progress = _Progress("importing", total, in_bytes=True)
    try:
        with _deferred_interrupt() as stop:
            source: IO[bytes] = sys.stdin.buffer if from_stdin else open(args.file, "rb")
            try:
                result = import_lines(source, target, args.skip_bad, stop, progress)
            except StabilizeEventsError as exc:
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
    if path is not None:
        note = ""
    elif postgres_target(url) is not None:
        note = " (new sequences, order kept)"
    else:
        note = " (an in-memory store: new sequences, gone when this command ends)"
    print(
        f"imported {result.imported:,} events into {shown_url(url)}{note}; "
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
            "every bad line. Into memory://, sqlite:///:memory: or PostgreSQL events get new "
            "sequences (order kept)."
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


__all__ = ["export_events", "import_lines"]
