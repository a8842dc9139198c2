"""What an upgrade reports: the survey (what a database holds, found without writing), the
result of a run, and where progress goes. Shared by the SQLite and PostgreSQL upgrades."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: Mismatches described in full; more are only counted.
MAX_REPORTED = 20


class ProgressSink(Protocol):
    """Where the upgrade reports its progress (the CLI draws a bar or prints lines)."""

    def start(self, task: str, total: int) -> None:
        """A step of ``total`` units begins."""

    def advance(self, done: int, note: str) -> None:
        """``done`` more units are finished; ``note`` says where the step is."""

    def finish(self) -> None:
        """The step is over."""


class Silent:
    """Progress reported nowhere."""

    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, done: int, note: str) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class Survey:
    """What a database holds, and what the upgrade would do (found without writing)."""

    #: The SQLite file, or the PostgreSQL database as ``user@host:port/dbname schema S`` (no password).
    path: Path | str
    #: Rows in Stabilize's ``events`` and their sequence range (None when empty).
    events: int
    first_sequence: int | None
    last_sequence: int | None
    #: Rows in Stabilize's ``snapshots`` and ``event_subscriptions`` (0 without the table).
    snapshots: int
    subscriptions: int
    #: Whether our tables exist, and how many events ``event_log`` holds in all.
    ours_created: bool
    ours_events: int
    ours_snapshots: int
    ours_subscriptions: int
    #: Stabilize events ``event_log`` already holds (same sequence and id), and the rest.
    already_copied: int
    to_copy: int
    #: Stabilize timestamps with an offset other than UTC, or none (kept as instants, read in UTC).
    other_offsets: int


@dataclass
class Result:
    """What an upgrade did."""

    survey: Survey
    copied_events: int = 0
    snapshots_copied: int = 0
    #: Snapshots our table already held (from an earlier run), left as they are.
    snapshots_present: int = 0
    #: Stabilize snapshots not copied, each with the reason (Stabilize would not use them either).
    snapshots_skipped: list[str] = field(default_factory=list)
    subscriptions_copied: int = 0
    #: Subscriptions our table already held (copied before, or created since), left as they are.
    subscriptions_present: int = 0
    verified_events: int = 0
    verified_snapshots: int = 0
    verified_subscriptions: int = 0
    #: The first `MAX_REPORTED` differences found by the verification, and how many there were.
    mismatches: list[str] = field(default_factory=list)
    mismatch_count: int = 0
    dropped: bool = False
    #: Why ``--drop-old`` did not drop the old tables, when it did not.
    not_dropped: str | None = None

    @property
    def verified(self) -> bool:
        """Whether the verification found no difference."""
        return self.mismatch_count == 0

    def mismatch(self, text: str) -> None:
        """Record one difference."""
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_REPORTED:
            self.mismatches.append(text)


def counted_survey(
    path: Path | str,
    span: tuple[int, int | None, int | None],
    snapshots: int,
    subscriptions: int,
    ours: tuple[bool, int, int, int],
    already_copied: int,
    other_offsets: int,
) -> Survey:
    """A `Survey` from counts: ``span`` is Stabilize's event count, first and last sequence;
    ``ours`` whether our tables exist and the events, snapshots and subscriptions they hold."""
    events, first, last = span
    created, ours_events, ours_snapshots, ours_subscriptions = ours
    return Survey(
        path=path,
        events=int(events),
        first_sequence=None if first is None else int(first),
        last_sequence=None if last is None else int(last),
        snapshots=snapshots,
        subscriptions=subscriptions,
        ours_created=created,
        ours_events=ours_events,
        ours_snapshots=ours_snapshots,
        ours_subscriptions=ours_subscriptions,
        already_copied=already_copied,
        to_copy=int(events) - already_copied,
        other_offsets=other_offsets,
    )


__all__ = ["MAX_REPORTED", "ProgressSink", "Result", "Silent", "Survey", "counted_survey"]
