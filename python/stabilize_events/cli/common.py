"""What every command shares: the store option, opening stores, time parsing, output and exit codes.

Exit codes (every command):

- 0: success;
- 1: the command failed after starting (a store error, a bad line in an import);
- 2: bad input, nothing done: bad arguments, a malformed time, a store that
  cannot be opened or does not exist;
- 3: not found: no such workflow or event;
- 130: interrupted (Ctrl-C).

``check`` has its own codes for what it found, see `stabilize_events.cli.check`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stabilize_events import EventStore, InMemoryEventStore, SqliteEventStore
from stabilize_events._core import Event, sqlite_database_path
from stabilize_events.errors import StabilizeEventsError

PROG = "stabilize-events"
DEFAULT_STORE = "sqlite:///events.db"
MEMORY_URL = "memory://"
#: URL schemes of a PostgreSQL store (a libpq URL; ``?schema=NAME`` picks the tables' schema).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: The environment variable naming the store when ``--store`` is not given.
STORE_ENV = "STABILIZE_EVENTS_URL"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


class NotFoundError(Exception):
    """No such workflow or event: reported in one line, exit code 3."""


def error(exc: BaseException | str) -> None:
    """Report ``exc`` on one line of stderr, without a traceback."""
    print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)


def store_url(args: argparse.Namespace) -> str:
    """The store URL: ``--store``, else ``$STABILIZE_EVENTS_URL``, else `DEFAULT_STORE`."""
    given: str | None = getattr(args, "store", None)
    return given or os.environ.get(STORE_ENV) or DEFAULT_STORE


def postgres_target(url: str) -> tuple[str, str | None] | None:
    """The connection string and schema of a PostgreSQL store URL (the schema from its
    ``schema`` query parameter, which libpq does not know and is taken out), or None for
    another kind of URL."""
    if not url.startswith(POSTGRES_SCHEMES):
        return None
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), (schemas[-1] or None) if schemas else None


def shown_url(url: str) -> str:
    """``url`` as printed: a password in it replaced by ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def database_file(url: str) -> Path | None:
    """The SQLite file ``url`` names (None for an in-memory or PostgreSQL store); `UsageError` if
    ``url`` is no store URL."""
    if url == MEMORY_URL or postgres_target(url) is not None:
        return None
    if not url.startswith("sqlite://"):
        raise UsageError(
            f"unsupported store URL {url!r}: use sqlite:///PATH, sqlite:///:memory:, {MEMORY_URL} or "
            f"postgresql://USER@HOST/DB[?schema=NAME]"
        )
    try:
        return sqlite_database_path(url)
    except (StabilizeEventsError, ValueError) as exc:
        raise UsageError(f"cannot open store {url!r}: {exc}") from exc


def open_store(url: str, *, must_exist: bool = False) -> EventStore:
    """Open the event store named by ``url``.

    ``sqlite:///PATH`` (relative), ``sqlite:////PATH`` (absolute) and
    ``sqlite:///:memory:`` open a `SqliteEventStore`, creating its tables;
    ``memory://`` an `InMemoryEventStore`; ``postgresql://...[?schema=NAME]`` a
    `PostgresEventStore`. With ``must_exist`` (the read commands) a missing SQLite
    file, or PostgreSQL tables not made yet, are refused instead of created. Raises
    `UsageError` naming the URL and the reason if the store cannot be opened.
    """
    path = database_file(url)
    if url == MEMORY_URL:
        return InMemoryEventStore()
    postgres = postgres_target(url)
    if postgres is not None:
        try:
            from stabilize_events import PostgresEventStore

            return PostgresEventStore(postgres[0], create_tables=not must_exist, schema=postgres[1])
        except ImportError as exc:
            raise UsageError(
                f"cannot open store {shown_url(url)!r}: {exc} "
                f"(install the extra: pip install 'stabilize-events[postgres]')"
            ) from exc
        except (StabilizeEventsError, ValueError, OSError) as exc:
            raise UsageError(f"cannot open store {shown_url(url)!r}: {exc}") from exc
    if must_exist and path is not None:
        if not path.exists():
            raise UsageError(
                f"no event store at {url!r}: {path} does not exist (give the store with --store URL "
                f"or {STORE_ENV}; `{PROG} demo` makes one to try)"
            )
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read store {url!r}: permission denied on {path}")
    try:
        return SqliteEventStore(url, create_tables=True)
    except (StabilizeEventsError, ValueError, OSError) as exc:
        raise UsageError(f"cannot open store {url!r}: {exc}") from exc


def close(store: EventStore) -> None:
    """Close ``store`` if it can be closed."""
    closer: Callable[[], None] | None = getattr(store, "close", None)
    if closer is not None:
        closer()


#: Seconds per unit of an age (``-30m``).
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: An age: a minus sign, a whole number, a unit.
AGE = re.compile(r"-[0-9]+[smhd]")


def parse_time(text: str) -> datetime:
    """An instant from the command line: ISO 8601 (naive means UTC) or ``-N[smhd]`` (ago).

    Raises `UsageError` with the accepted forms when ``text`` is neither.
    """
    value = text.strip()
    if AGE.fullmatch(value):
        return datetime.now(UTC) - timedelta(seconds=int(value[1:-1]) * AGE_UNITS[value[-1]])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"malformed time {text!r}: give ISO 8601 like 2026-12-04T17:28:23 or 2026-12-04T17:28:23+01:00 "
            f"(no offset means UTC), or an age like -30m, -2h, -1d"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


#: The options that take a `parse_time` value.
TIME_OPTIONS = ("--since", "--until", "--as-of-time")


def attach_ages(argv: Sequence[str]) -> list[str]:
    """``argv`` with an age after a time option joined to it (``--since -1d`` becomes
    ``--since=-1d``): argparse takes a value starting with ``-`` for an option of its own."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] in TIME_OPTIONS and AGE.fullmatch(arg):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def time_arg(text: str) -> datetime:
    """`parse_time` as an argparse type (the message becomes argparse's one-line error)."""
    try:
        return parse_time(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """A whole number of at least 1, as an argparse type."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def sequence_arg(text: str) -> int:
    """A sequence number (0 or more), as an argparse type."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a sequence number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def iso(moment: datetime | None) -> str | None:
    """``moment`` in ISO 8601, or None."""
    return moment.isoformat() if moment is not None else None


def short_time(moment: datetime) -> str:
    """``moment`` for a table: UTC date and time to the millisecond."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def duration_text(ms: float | None) -> str:
    """A duration for people: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``; empty for None."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def jsonable(value: Any) -> Any:
    """``value`` made JSON-ready for ``--json`` output (datetimes in ISO 8601, enums as values)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    enum_value = getattr(value, "value", None)
    if enum_value is not None and not isinstance(value, str | int | float | bool):
        return enum_value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout."""
    print(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def console() -> Any:
    """A rich console on stdout (plain text when stdout is not a terminal)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


STATUS_STYLES = {
    "SUCCEEDED": "green",
    "RUNNING": "blue",
    "TERMINAL": "red",
    "FAILED_CONTINUE": "red",
    "CANCELED": "yellow",
    "SKIPPED": "bright_black",
    "STOPPED": "yellow",
    "PAUSED": "magenta",
    "NOT_STARTED": "white",
}


def styled_status(status: str | None) -> str:
    """``status`` as rich markup, coloured by what it means."""
    if not status:
        return ""
    style = STATUS_STYLES.get(status, "white")
    return f"[{style}]{status}[/{style}]"


def event_row(event: Event) -> dict[str, Any]:
    """The fields of ``event`` for ``--json`` output (the payload decoded): `Event.to_dict`."""
    return event.to_dict()


def all_events(store: EventStore, after: int = 0, page: int = 10_000) -> Iterator[list[Event]]:
    """Every event after sequence ``after``, in pages, in sequence order."""
    while True:
        events = store.get_events_since(after, page)
        if not events:
            return
        yield events
        after = events[-1].sequence


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store URL`` (default: ``$STABILIZE_EVENTS_URL``, else `DEFAULT_STORE`)."""
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"event store: sqlite:///PATH, sqlite:////ABS/PATH, sqlite:///:memory:, {MEMORY_URL} or "
        f"postgresql://USER@HOST/DB[?schema=NAME] "
        f"(default: ${STORE_ENV}, else {DEFAULT_STORE})",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output on stdout."""
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
