"""Replay: rebuilding a workflow's state from its events, now or at any point in the past.

The fold runs in Rust: over the store's own rows when it `FoldsWorkflows`
(every built-in store; no `Event` objects are built), else over the events it
reads (a store of another package, Stabilize's own). This module chooses where
to start (the newest intact snapshot that fits the requested point), upcasts
older events through the global migrator, and takes new snapshots as the
snapshot policy asks.

Time travel by instant (`time_travel_query`) folds the events whose timestamp
is at or before ``as_of_time``, in sequence order; a naive ``as_of_time`` is
taken as UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from stabilize_events import _core
from stabilize_events._core import Event
from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError
from stabilize_events.migration import get_event_migrator
from stabilize_events.snapshots import (
    Snapshot,
    SnapshotPolicy,
    SnapshotStore,
    datetime_to_micros,
    micros_to_datetime,
    not_ours,
)
from stabilize_events.store.capabilities import FoldsWorkflows, ServesStoredSnapshots
from stabilize_events.store.interface import EventStore
from stabilize_events.types import CURRENT_SCHEMA_VERSION, EntityType

logger = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """What a replay produced and how: from a snapshot or not, and how many events it folded."""

    entity_type: EntityType
    entity_id: str
    final_state: dict[str, Any] = field(default_factory=dict)
    events_replayed: int = 0
    from_snapshot: bool = False
    snapshot_sequence: int = 0
    #: The last sequence folded into ``final_state`` (the snapshot's if none followed it).
    last_sequence: int = 0
    #: Events skipped because their schema is newer than this build: (event_id, schema_version).
    skipped_newer: list[tuple[str, int]] = field(default_factory=list)
    #: Rows that could not be decoded, when replay was asked to skip them.
    skipped_corrupt: list[str] = field(default_factory=list)


@dataclass
class WorkflowState:
    """The shape of a rebuilt workflow state (`EventReplayer` returns it as a dict)."""

    workflow_id: str
    status: str | None = None
    application: str | None = None
    name: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The state as `rebuild_workflow_state` returns it (ISO times)."""
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "application": self.application,
            "name": self.name,
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "context": self.context,
            "stages": self.stages,
            "tasks": self.tasks,
        }


def _check_sequence(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"{name} must be >= 0, not {value}")
    return value


def _upcaster() -> Callable[[Event], Event] | None:
    migrator = get_event_migrator()
    if not migrator.registered_migrations:
        return None
    return lambda event: migrator.migrate(event, strict=False)


class EventReplayer:
    """Rebuilds workflow state from an event store, optionally via snapshots."""

    def __init__(self, event_store: EventStore, snapshot_store: SnapshotStore | None = None) -> None:
        if snapshot_store is not None and not isinstance(snapshot_store, SnapshotStore):
            raise ArgumentTypeError(_not_our_snapshot_store(snapshot_store))
        self._event_store = event_store
        self._snapshot_store = snapshot_store
        # What the store can do, asked once (an ABC check costs a rebuild of a small workflow
        # a few percent): it folds its own rows, and it also looks snapshots up as it folds.
        self._folds = isinstance(event_store, FoldsWorkflows)
        self._folds_from_snapshots = self._folds and isinstance(event_store, ServesStoredSnapshots)
        #: The `ReplayResult` of the most recent rebuild (how it was done).
        self.last_result: ReplayResult | None = None

    def replay(
        self,
        workflow_id: str,
        *,
        as_of_sequence: int | None = None,
        as_of_time: datetime | None = None,
        skip_corrupt: bool = False,
    ) -> ReplayResult:
        """Fold ``workflow_id`` up to a sequence and/or instant and say how.

        Corrupt rows raise `CorruptEventError` naming their sequence, unless
        ``skip_corrupt`` is set: then they are left out and listed in the result.
        """
        if not isinstance(workflow_id, str):
            raise ArgumentTypeError(f"workflow_id must be a str, not {type(workflow_id).__name__}")
        if as_of_sequence is not None:
            _check_sequence(as_of_sequence, "as_of_sequence")
        if as_of_time is not None and not isinstance(as_of_time, datetime):
            raise ArgumentTypeError(f"as_of_time must be a datetime, not {type(as_of_time).__name__}")

        due = self._snapshot_after_events(workflow_id, None, as_of_time)
        folded = self._fold_looking_up(workflow_id, as_of_sequence, as_of_time, skip_corrupt, due)
        if folded is not None:
            snapshot: _core.StoredSnapshot | Snapshot | None = folded["snapshot"]
        else:
            snapshot = self._usable_snapshot(workflow_id, as_of_sequence, as_of_time)
            due = self._snapshot_after_events(workflow_id, snapshot, as_of_time)
            folded = self._fold(
                workflow_id,
                snapshot.sequence if snapshot else 0,
                as_of_sequence,
                as_of_time,
                _seed(snapshot),
                skip_corrupt,
                due,
            )
        start = snapshot.sequence if snapshot else 0
        for event_id, version in folded["skipped_newer"]:
            logger.warning(
                "replay of %s skipped event %s: schema v%d is newer than this build's v%d",
                workflow_id,
                event_id,
                version,
                CURRENT_SCHEMA_VERSION,
            )
        result = ReplayResult(
            entity_type=EntityType.WORKFLOW,
            entity_id=workflow_id,
            final_state=folded["state"],
            events_replayed=folded["events_replayed"],
            from_snapshot=snapshot is not None,
            snapshot_sequence=start,
            last_sequence=folded["last_sequence"],
            skipped_newer=list(folded["skipped_newer"]),
            skipped_corrupt=list(folded["skipped_corrupt"]),
        )
        if folded.get("snapshot_queued") and self._snapshot_store is not None:
            self._snapshot_store.record_saved(workflow_id)
        elif as_of_time is None and (due is None or result.events_replayed >= due):
            # Unless the fold was asked to save one and too few events were due for it.
            # A state folded up to a sequence is a valid checkpoint for it.
            self._maybe_snapshot(result, snapshot, folded["max_event_time_us"])
        self.last_result = result
        return result

    def rebuild_workflow_state(self, workflow_id: str, as_of_sequence: int | None = None) -> dict[str, Any]:
        """The workflow's state now, or after event ``as_of_sequence``.

        An unknown workflow gives the empty state, not an error.
        """
        return self.replay(workflow_id, as_of_sequence=as_of_sequence).final_state

    def time_travel_query(self, workflow_id: str, as_of_time: datetime) -> dict[str, Any]:
        """The workflow's state as of an instant (naive datetimes are UTC)."""
        if not isinstance(as_of_time, datetime):
            raise ArgumentTypeError(f"as_of_time must be a datetime, not {type(as_of_time).__name__}")
        return self.replay(workflow_id, as_of_time=as_of_time).final_state

    def replay_workflow_from_checkpoint(
        self, workflow_id: str, checkpoint_sequence: int, event_handler: Callable[[Event], None]
    ) -> None:
        """Pass each event after ``checkpoint_sequence`` (upcast) to ``event_handler``, in order."""
        _check_sequence(checkpoint_sequence, "checkpoint_sequence")
        migrator = get_event_migrator()
        for event in self._event_store.get_events_for_workflow(workflow_id, checkpoint_sequence):
            event_handler(migrator.migrate(event, strict=False))

    def get_entity_history(self, entity_type: EntityType, entity_id: str) -> list[dict[str, Any]]:
        """Every event of one entity, as dicts, in order."""
        return [e.to_dict() for e in self._event_store.get_events_for_entity(entity_type, entity_id)]

    def compare_states(self, workflow_id: str, sequence1: int, sequence2: int) -> dict[str, Any]:
        """The state after ``sequence1`` and after ``sequence2``, and the paths that differ.

        ``changes`` lists strings like ``stages.<id>.status: 'RUNNING' -> 'SUCCEEDED'``
        (``<absent>`` stands for a key one side does not have).
        """
        before = self.rebuild_workflow_state(workflow_id, as_of_sequence=sequence1)
        after = self.rebuild_workflow_state(workflow_id, as_of_sequence=sequence2)
        return {
            "before": before,
            "after": after,
            "sequence_range": {"from": sequence1, "to": sequence2},
            "changes": [f"{path}: {old!r} -> {new!r}" for path, old, new in _diff(before, after, "")],
        }

    # -- internals -----------------------------------------------------------

    def _usable_snapshot(
        self, workflow_id: str, as_of_sequence: int | None, as_of_time: datetime | None
    ) -> _core.StoredSnapshot | Snapshot | None:
        if self._snapshot_store is None:
            return None
        return self._snapshot_store.latest_usable(
            EntityType.WORKFLOW, workflow_id, max_sequence=as_of_sequence, max_event_time=as_of_time
        )

    def _fold_looking_up(
        self,
        workflow_id: str,
        as_of_sequence: int | None,
        as_of_time: datetime | None,
        skip_corrupt: bool,
        snapshot_after_events: int | None,
    ) -> dict[str, Any] | None:
        """The fold of a store that looks for the snapshot itself as it folds (see
        `FoldsWorkflows.fold_workflow`'s ``look_up_snapshot_at``), its result holding the
        ``snapshot`` it started from; None where that does not apply (no policy, a store that
        cannot, upcasting, skipping corrupt rows, or a snapshot with a legacy hash found).

        The look-up is made once the fold reaches `SnapshotPolicy.look_up_at` events: a
        smaller workflow is folded with no look-up (a snapshot of it is passed over), and none
        is saved of it.
        """
        snapshots, store = self._snapshot_store, self._event_store
        if (
            snapshots is None
            or snapshots.policy is None
            or skip_corrupt
            or not self._folds_from_snapshots
            or _upcaster() is not None
        ):
            return None
        folded = cast(FoldsWorkflows, store).fold_workflow(
            workflow_id,
            0,
            as_of_sequence,
            as_of_time,
            None,
            None,
            CURRENT_SCHEMA_VERSION,
            False,
            snapshot_after_events,
            snapshots.policy.look_up_at,
            snapshots.policy.min_events,
        )
        if "legacy_snapshot" in folded:
            # Checked in Python: the lookup is made again the slow way (which says what it skips).
            return None
        for why in folded["snapshot_skipped"]:
            logger.warning("%s", why)
        return folded

    def _snapshot_after_events(
        self, workflow_id: str, used: _core.StoredSnapshot | Snapshot | None, as_of_time: datetime | None
    ) -> int | None:
        """How many events the fold must apply to save a snapshot itself (as it builds the
        answer, see `FoldsWorkflows.fold_workflow`); None to leave it to `_maybe_snapshot`:
        no policy, a time-travel query, or a start from a snapshot with a legacy hash."""
        store = self._snapshot_store
        if store is None or store.policy is None or as_of_time is not None:
            return None
        if used is not None and (isinstance(used, Snapshot) or used.legacy):
            return None
        return store.policy.events_due(workflow_id)

    def _min_events(self) -> int | None:
        """The policy's ``min_events`` (a fold saves no snapshot of a smaller workflow); None
        without a policy."""
        snapshots = self._snapshot_store
        return None if snapshots is None or snapshots.policy is None else snapshots.policy.min_events

    def _fold(
        self,
        workflow_id: str,
        start: int,
        as_of_sequence: int | None,
        as_of_time: datetime | None,
        initial_state: dict[str, Any] | _core.StoredSnapshot | None,
        skip_corrupt: bool,
        snapshot_after_events: int | None,
    ) -> dict[str, Any]:
        upcast = _upcaster()
        if self._folds:
            return cast(FoldsWorkflows, self._event_store).fold_workflow(
                workflow_id,
                start,
                as_of_sequence,
                as_of_time,
                initial_state,
                upcast,
                CURRENT_SCHEMA_VERSION,
                skip_corrupt,
                snapshot_after_events,
                None,
                self._min_events(),
            )
        # Any other store (Stabilize's own): read its events, fold them in Rust all the same.
        events: Iterator[Event] = iter(self._event_store.get_events_for_workflow(workflow_id, start))
        if as_of_sequence is not None:
            events = (e for e in events if e.sequence <= as_of_sequence)
        if as_of_time is not None:
            bound = as_of_time
            events = (e for e in events if _not_after(e.timestamp, bound))
        folded = _core.fold_events(
            workflow_id, events, initial_state, upcast, CURRENT_SCHEMA_VERSION, skip_corrupt
        )
        folded["last_sequence"] = max(folded["last_sequence"], start)
        return folded

    def _maybe_snapshot(
        self, result: ReplayResult, used: _core.StoredSnapshot | Snapshot | None, max_event_us: int | None
    ) -> None:
        store = self._snapshot_store
        if store is None or store.policy is None:
            return
        if result.skipped_corrupt or result.skipped_newer:
            # A snapshot would bake the gaps in and hide them from every later rebuild.
            return
        # A snapshot with a legacy hash (checked the slow way) is replaced by one of the new kind.
        legacy = used is not None and used.legacy
        workflow_events = (used.version if used else 0) + result.events_replayed
        if not legacy and (
            result.events_replayed == 0
            or not store.policy.worth_snapshotting(workflow_events)
            or not store.should_snapshot(result.entity_id, result.events_replayed)
        ):
            return
        # The newest event time in the new snapshot's state; unknown if the snapshot it grew from did not say.
        newest: int | None = max_event_us
        if used is not None:
            known = _newest_us(used)
            if known is None:
                newest = None
            else:
                newest = known if max_event_us is None else max(known, max_event_us)
        store.save_snapshot(
            Snapshot(
                entity_type=EntityType.WORKFLOW,
                entity_id=result.entity_id,
                workflow_id=result.entity_id,
                version=workflow_events,
                sequence=result.last_sequence,
                state=result.final_state,
                max_event_time=None if newest is None else micros_to_datetime(newest),
            )
        )


def _not_our_snapshot_store(given: object) -> str:
    """Why ``given`` is refused as an `EventReplayer`'s ``snapshot_store``, and what to pass instead."""
    hint = "import SnapshotStore and SnapshotPolicy from stabilize_events"
    message = not_ours("snapshot_store", given, SnapshotStore, hint)
    if isinstance(given, SnapshotPolicy):
        return f"{message}; wrap the policy: SnapshotStore(event_store, policy=...)"
    return message


def _seed(snapshot: _core.StoredSnapshot | Snapshot | None) -> dict[str, Any] | _core.StoredSnapshot | None:
    """What a fold starts from: a stored snapshot as is (its bytes), a decoded one's state."""
    if isinstance(snapshot, Snapshot):
        return snapshot.state
    return snapshot


def _newest_us(snapshot: _core.StoredSnapshot | Snapshot) -> int | None:
    """The newest event time folded into a snapshot's state (µs), if known."""
    if isinstance(snapshot, Snapshot):
        return None if snapshot.max_event_time is None else datetime_to_micros(snapshot.max_event_time)
    return snapshot.max_event_time_us


def _not_after(moment: datetime, bound: datetime) -> bool:
    if (moment.tzinfo is None) != (bound.tzinfo is None):
        # Naive values are UTC throughout stabilize_events.
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        bound = bound if bound.tzinfo else bound.replace(tzinfo=UTC)
    return moment <= bound


class _Absent:
    """A key missing on one side of a comparison (distinct from a None value)."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _diff(before: Any, after: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, old, new) for every leaf that differs; dicts are walked key by key."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in list(before) + [k for k in after if k not in before]:
            child = f"{path}.{key}" if path else str(key)
            yield from _diff(before.get(key, _ABSENT), after.get(key, _ABSENT), child)
    elif isinstance(before, _Absent) or isinstance(after, _Absent) or before != after:
        yield path, before, after
