"""``demo``: record a few realistic workflows and print what was stored.

Without ``--store`` it writes a fresh SQLite file (``demo-YYYYmmdd-HHMMSS.db`` in the current
directory), never ``events.db``; with ``--store`` it refuses a store that already holds
events unless ``--append`` is given.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stabilize_events.cli.common import (
    EXIT_OK,
    MEMORY_URL,
    PROG,
    UsageError,
    close,
    database_file,
    open_store,
    shown_url,
)


def fresh_demo_url(directory: Path) -> str:
    """An ``sqlite:///`` URL of a file in ``directory`` that does not exist yet."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"demo-{stamp}.db"
    n = 1
    while (directory / name).exists():
        n += 1
        name = f"demo-{stamp}-{n}.db"
    return f"sqlite:///{name}"


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo on ``--store`` (or a fresh file)."""
    from stabilize_events.demo import run_demo

    url: str = args.store or fresh_demo_url(Path.cwd())
    database_file(url)  # refuses an unsupported URL before anything is created
    store = open_store(url)
    try:
        held = store.get_current_sequence()
        if held and not args.append:
            raise UsageError(
                f"store {shown_url(url)!r} already holds events (up to sequence {held:,}); the demo adds "
                f"fake workflows only to a store without events. Pass --append to add them anyway, or run "
                f"`{PROG} demo` without --store to write a fresh file"
            )
        run_demo(store, shown_url(url))
    finally:
        close(store)
    if args.store is None:
        print(f"\nBrowse it: {PROG} workflows --store {url}")
    return EXIT_OK


def register(commands: Any) -> None:
    """Add ``demo`` to ``commands`` (argparse subparsers)."""
    demo = commands.add_parser(
        "demo",
        help="record a few realistic workflows into a fresh store and print what was stored",
        description=(
            "Simulate workflows (parallel stages, a retried task, a skipped stage, a failed and a "
            "canceled workflow) through the event recorder, then print every stored event per "
            "workflow and the totals. Without --store the events go to a fresh file "
            "demo-YYYYmmdd-HHMMSS.db in the current directory; a store that already holds events "
            "is refused unless --append is given. $STABILIZE_EVENTS_URL is not used here."
        ),
        epilog=(
            "example:\n"
            f"  {PROG} demo\n"
            f"  {PROG} demo --store sqlite:///try.db && {PROG} workflows --store sqlite:///try.db"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help=f"event store: sqlite:///PATH, sqlite:///:memory:, {MEMORY_URL} or postgresql://USER@HOST/DB"
        "[?schema=NAME] (default: a fresh file)",
    )
    demo.add_argument(
        "--append", action="store_true", help="add the demo's workflows to a store that already holds events"
    )
    demo.set_defaults(func=cmd_demo)
