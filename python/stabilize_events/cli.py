"""The ``stabilize-events`` command line.

::

    stabilize-events demo [--store URL]

``demo`` records a few realistic workflows (parallel stages, a retried task, a
skipped stage, a failed and a canceled workflow) into an event store and prints
what was stored. The store defaults to the SQLite file ``./events.db``.

Exit codes: 0 on success, 2 for bad arguments (including a store that cannot be
opened), 1 if the command failed after starting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from stabilize_events import EventStore, InMemoryEventStore, SqliteEventStore
from stabilize_events.errors import StabilizeEventsError

PROG = "stabilize-events"
DEFAULT_STORE = "sqlite:///events.db"
MEMORY_URL = "memory://"


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


def open_store(url: str) -> EventStore:
    """Open the event store named by ``url``.

    ``sqlite:///PATH`` (relative), ``sqlite:////PATH`` (absolute) and
    ``sqlite:///:memory:`` open a `SqliteEventStore`, creating its tables;
    ``memory://`` an `InMemoryEventStore`. Raises `UsageError` naming the URL and
    the reason if the store cannot be opened.
    """
    if url == MEMORY_URL:
        return InMemoryEventStore()
    if not url.startswith("sqlite://"):
        raise UsageError(
            f"unsupported store URL {url!r}: use sqlite:///PATH, sqlite:///:memory: or {MEMORY_URL}"
        )
    try:
        return SqliteEventStore(url, create_tables=True)
    except (StabilizeEventsError, ValueError, OSError) as exc:
        raise UsageError(f"cannot open store {url!r}: {exc}") from exc


def _close(store: EventStore) -> None:
    close: Callable[[], None] | None = getattr(store, "close", None)
    if close is not None:
        close()


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo on the store named by ``--store``."""
    from stabilize_events.demo import run_demo

    store = open_store(args.store)
    try:
        run_demo(store, args.store)
    finally:
        _close(store)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Event sourcing for the Stabilize workflow engine, with its hot path in Rust.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="record a few realistic workflows and print what was stored",
        description=(
            "Simulate workflows (parallel stages, a retried task, a skipped stage, a failed and a "
            "canceled workflow) through the event recorder, then print every stored event per "
            "workflow and the totals."
        ),
    )
    demo.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="URL",
        help=f"event store: sqlite:///PATH, sqlite:///:memory: or {MEMORY_URL} (default: {DEFAULT_STORE})",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def _error(exc: BaseException) -> None:
    """Report ``exc`` on one line of stderr, without a traceback."""
    print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        _error(exc)
        return 2
    except StabilizeEventsError as exc:
        _error(exc)
        return 1
    except BrokenPipeError:
        return 1
    return code
