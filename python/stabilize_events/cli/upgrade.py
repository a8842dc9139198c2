"""``stabilize-events upgrade``: carry a Stabilize events database over to this package's tables.

See `stabilize_events.upgrade`; without ``--apply`` it only reports what it would do. Its exit
codes are in `UPGRADE_EPILOG`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stabilize_events.cli.common import PROG, UsageError, error, positive_int
from stabilize_events.errors import StabilizeEventsError
from stabilize_events.upgrade import run as upgrade_run

UPGRADE_DESCRIPTION = """\
Carry a Stabilize events database (tables events, snapshots, event_subscriptions, written by
stabilize.events.SqliteEventStore or PostgresEventStore) over to the stabilize-events tables in
the same file or PostgreSQL schema (the one on the URL's search_path): events
keep their sequences, event ids and timestamps; snapshots and durable subscription positions
come along. Without --apply this is a dry run that reports what it would copy and writes
nothing.

The copy works in chunks, one transaction each, and is resumable: if it is stopped (killed,
Ctrl-C, a crash) run the same command again and it carries on where it stopped, copying
nothing twice. At the end every event is read back and compared field by field with its
Stabilize row. Stabilize's tables are kept unless --drop-old is given, and then dropped only
after a verification that found no difference. Stop the programs writing to the database
first."""

UPGRADE_EPILOG = """\
exit codes:
  0    dry run reported; or upgrade finished and verified (old tables dropped with --drop-old)
  1    the upgrade stopped on an error after it began writing (what it copied is kept: fix the
       cause and run it again to resume); or --drop-old found the old tables still being written
  2    bad input, nothing written: bad arguments, no such file, not an SQLite database, no
       Stabilize events table, or stabilize-events tables holding other events at the same
       sequences
  3    the verification found differences (listed on stderr); Stabilize's tables are kept
  130  interrupted; run again to resume

example:
  stabilize-events upgrade sqlite:///app.db                    # dry run: what would be copied
  stabilize-events upgrade sqlite:///app.db --apply            # copy and verify
  stabilize-events upgrade sqlite:///app.db --apply --drop-old # then drop Stabilize's tables
  stabilize-events upgrade postgresql://app:secret@db/app --apply  # the same on PostgreSQL"""


class _Lines:
    """Progress as one line per step of work on stderr (when it is not a terminal: logs, CI)."""

    def __init__(self) -> None:
        self._task = ""
        self._total = 0
        self._done = 0

    def start(self, task: str, total: int) -> None:
        self._task, self._total, self._done = task, total, 0

    def advance(self, done: int, note: str) -> None:
        if done == 0:
            return
        self._done += done
        where = f" ({note})" if note else ""
        print(f"{self._task}: {self._done:,}/{self._total:,}{where}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        pass


class _Bar:
    """Progress as rich bars on a terminal."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: Any = None

    def start(self, task: str, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(task, total=total, note="")

    def advance(self, done: int, note: str) -> None:
        self._progress.update(self._task, advance=done, note=note)

    def finish(self) -> None:
        self._progress.update(self._task, completed=self._progress.tasks[-1].total)

    def stop(self) -> None:
        self._progress.stop()


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _print_survey(s: upgrade_run.Survey, args: argparse.Namespace) -> None:
    span = f" (sequences {s.first_sequence:,} to {s.last_sequence:,})" if s.events else ""
    print(f"Stabilize events database {s.path}")
    print(
        f"  Stabilize tables:        {_plural(s.events, 'event')}{span}, "
        f"{_plural(s.snapshots, 'snapshot')}, {_plural(s.subscriptions, 'subscription')}"
    )
    if s.ours_created:
        print(
            f"  stabilize-events tables: {_plural(s.ours_events, 'event')} "
            f"({s.already_copied:,} of them Stabilize's, copied before), "
            f"{_plural(s.ours_snapshots, 'snapshot')}, {_plural(s.ours_subscriptions, 'subscription')}"
        )
    else:
        print("  stabilize-events tables: not created yet")
    if s.other_offsets:
        print(
            f"  note: {_plural(s.other_offsets, 'event')} {'has' if s.other_offsets == 1 else 'have'} "
            f"a timestamp with an offset other than UTC (or none): the instant is kept exactly and "
            f"reads back in UTC"
        )
    resume = f", resuming after the {s.already_copied:,} already copied" if s.already_copied else ""
    print(
        f"Would copy {_plural(s.to_copy, 'event')}{resume}, the snapshots and subscription positions "
        f"not copied yet, then verify every event."
    )
    if args.drop_old:
        print("Would then drop Stabilize's tables, if the verification finds no difference.")
    else:
        print("Would keep Stabilize's tables (--drop-old drops them after a successful verification).")
    print("Dry run: nothing was written. Run again with --apply to upgrade.")


def _print_result(r: upgrade_run.Result) -> None:
    again = f" ({r.survey.already_copied:,} were copied before)" if r.survey.already_copied else ""
    print(f"Copied {_plural(r.copied_events, 'event')}{again}.")
    print(
        f"Copied {_plural(r.snapshots_copied, 'snapshot')} (their hashes recomputed in stabilize-events' "
        f"canonical form), {_plural(r.subscriptions_copied, 'subscription position')}; "
        f"{r.snapshots_present + r.subscriptions_present:,} already there were left as they are."
    )
    for skipped in r.snapshots_skipped:
        print(f"Skipped {skipped}.")
    print(
        f"Verified {_plural(r.verified_events, 'event')}, {_plural(r.verified_snapshots, 'snapshot')} "
        f"and {_plural(r.verified_subscriptions, 'subscription')}: "
        + ("all match." if r.verified else f"{_plural(r.mismatch_count, 'difference')}.")
    )
    if r.dropped:
        print("Dropped Stabilize's tables (events, snapshots, event_subscriptions).")
    elif r.verified and r.not_dropped is None:
        print("Stabilize's tables are kept (--drop-old drops them).")


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Survey (dry run) or upgrade the database at ``args.url``; see `UPGRADE_EPILOG` for exit codes."""
    try:
        found = upgrade_run.survey(args.url)
    except StabilizeEventsError as exc:
        raise UsageError(str(exc)) from None
    if not args.apply:
        _print_survey(found, args)
        return 0
    from rich.console import Console

    console = Console(stderr=True)
    bar = _Bar(console) if console.is_terminal else None
    try:
        result = upgrade_run.upgrade(
            args.url, chunk_size=args.chunk_size, drop_old=args.drop_old, progress=bar or _Lines()
        )
    except KeyboardInterrupt:
        error("interrupted; what was copied so far is kept: run the same command again to resume")
        return 130
    finally:
        if bar is not None:
            bar.stop()
    _print_result(result)
    if not result.verified:
        print(
            f"{PROG}: error: the verification found {_plural(result.mismatch_count, 'difference')} "
            f"between Stabilize's tables and ours; Stabilize's tables are kept:",
            file=sys.stderr,
        )
        for text in result.mismatches:
            print(f"  {text}", file=sys.stderr)
        if result.mismatch_count > len(result.mismatches):
            print(f"  ... and {result.mismatch_count - len(result.mismatches):,} more", file=sys.stderr)
        return 3
    if args.drop_old and not result.dropped:
        error(f"Stabilize's tables were not dropped: {result.not_dropped}")
        return 1
    return 0


def register(commands: Any) -> None:
    """Add the ``upgrade`` subcommand to ``commands`` (argparse subparsers)."""
    upgrade = commands.add_parser(
        "upgrade",
        help="carry a Stabilize events database over to stabilize-events (dry run without --apply)",
        description=UPGRADE_DESCRIPTION,
        epilog=UPGRADE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upgrade.add_argument(
        "url",
        metavar="URL",
        help="the database: sqlite:///relative/path.db, sqlite:////absolute/path.db or "
        "postgresql://user:password@host/dbname[?options=-csearch_path%%3Dschema]",
    )
    upgrade.add_argument(
        "--apply",
        action="store_true",
        help="do the upgrade (without it: a dry run that writes nothing)",
    )
    upgrade.add_argument(
        "--drop-old",
        action="store_true",
        help="after a verification that found no difference, drop Stabilize's tables",
    )
    upgrade.add_argument(
        "--chunk-size",
        type=positive_int,
        default=upgrade_run.DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"events copied per transaction (default: {upgrade_run.DEFAULT_CHUNK_SIZE})",
    )
    upgrade.set_defaults(func=cmd_upgrade)
