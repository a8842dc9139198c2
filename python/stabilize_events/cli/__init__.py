"""The ``stabilize-events`` command line: one module per group of commands.

::

    stabilize-events workflows | events | show | state | diff | timeline | metrics | stats
    stabilize-events export | import | check | demo | upgrade
    stabilize-events --version

Every command but ``demo`` and ``upgrade`` takes ``--store URL`` (default:
``$STABILIZE_EVENTS_URL``, else ``sqlite:///events.db``); every read command
takes ``--json``. Exit codes are listed in `stabilize_events.cli.common`;
``check`` and ``upgrade`` have their own, in their ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import stabilize_events
from stabilize_events.cli import check, demo, read, timeline, transfer, upgrade
from stabilize_events.cli.common import (
    DEFAULT_STORE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    MEMORY_URL,
    PROG,
    STORE_ENV,
    NotFoundError,
    UsageError,
    attach_ages,
    error,
    open_store,
)
from stabilize_events.errors import StabilizeEventsError


def package_version() -> str:
    """The installed version of stabilize-events (``unknown`` when run from a source tree)."""
    return stabilize_events.__version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Event sourcing for the Stabilize workflow engine: look into an event store.",
        epilog=(
            f"The store is --store URL, else ${STORE_ENV}, else {DEFAULT_STORE}.\n"
            "exit codes: 0 ok, 1 failed after starting, 2 bad input (nothing done), 3 no such "
            "workflow or event, 130 interrupted; check and upgrade list their own.\n\n"
            "example:\n"
            f"  {PROG} demo                         # a fresh demo-*.db to try the commands on\n"
            f"  export {STORE_ENV}=sqlite:///demo-20261204-172806.db\n"
            f"  {PROG} workflows --status TERMINAL\n"
            f"  {PROG} timeline WORKFLOW_ID --html timeline.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    read.register(commands)
    timeline.register(commands)
    transfer.register(commands)
    check.register(commands)
    demo.register(commands)
    upgrade.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(attach_ages(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
    except UsageError as exc:
        error(exc)
        return EXIT_USAGE
    except NotFoundError as exc:
        error(exc)
        return EXIT_NOT_FOUND
    except StabilizeEventsError as exc:
        error(exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED
    return code


__all__ = ["DEFAULT_STORE", "MEMORY_URL", "PROG", "UsageError", "build_parser", "main", "open_store"]
