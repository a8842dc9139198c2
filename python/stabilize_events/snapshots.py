"""Snapshots: checkpoints of folded workflow state that shorten replay.

A snapshot records the state after event ``sequence`` together with a SHA-256
hash; a snapshot whose state no longer matches its hash is never used.
Snapshots live in the event store's own database.

The stored hash is ``sha256-msgpack:<hex>``, the SHA-256 of the very bytes
stored as the state: the core checks it, loads the state and seeds the fold
from those bytes without building the state in Python. Snapshots saved by
earlier versions carry the bare hex SHA-256 of the state's canonical JSON
(`stabilize_events.canonical`); they are checked that way before use, and a
replayer with a snapshot policy replaces one it used by a snapshot of the new
kind.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stabilize_events import _core
from stabilize_events.canonical import legacy_hash_intact, snapshot_row_intact, state_hash
from stabilize_events.defaults import SNAPSHOT_LOOK_UP_AT_EVENTS, SNAPSHOT_MIN_EVENTS
from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError
from stabilize_events.store.capabilities import KeepsSnapshots, ServesStoredSnapshots
from stabilize_events.store.interface import EventStore
from stabilize_events.types import EntityType

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_to_datetime(micros: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch (exact)."""
    return _EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC (exact)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass
class Snapshot:
    """An entity's state as of event ``sequence``."""

    entity_type: EntityType
    entity_id: str
    workflow_id: str
    version: int
    sequence: int
    state: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The latest event timestamp folded into ``state``, if known.
    max_event_time: datetime | None = None
    #: Read from a store with a legacy hash (canonical JSON, see the module doc): a replayer
    #: with a snapshot policy that starts from it saves one with a hash of the new kind.
    legacy: bool = field(default=False, compare=False)

    @property
    def state_hash(self) -> str:
        """SHA-256 (hex) of the canonical state (what the reference stores; the
        store itself keeps the SHA-256 of the stored bytes, see the module doc)."""
        return state_hash(self.state)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain values (enum value, ISO times, hash)."""
        return {
            "entity_type": self.entity_type.value,
            "entity_id": self.entity_id,
            "workflow_id": self.workflow_id,
            "version": self.version,
            "sequence": self.sequence,
            "state": self.state,
            "state_hash": self.state_hash,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """A snapshot from `to_dict` output or a stored snapshot row."""
        created = data.get("created_at")
        if isinstance(created, str):
            created = datetime.fromisoformat(created.replace("Z", "+00:00"))
        max_us = data.get("max_event_time_us")
        return cls(
            entity_type=EntityType(data["entity_type"]),
            entity_id=data["entity_id"],
            workflow_id=data.get("workflow_id", ""),
            version=data.get("version", 0),
            sequence=data.get("sequence", 0),
            state=data.get("state") or {},
            created_at=created or datetime.now(UTC),
            max_event_time=None if max_us is None else micros_to_datetime(max_us),
        )


class SnapshotPolicy:
    """When to take a snapshot: after ``every_n_events`` replayed past the last
    one, or ``time_interval_seconds`` after it (``event_interval`` is the
    reference's name for ``every_n_events``), of a workflow of at least
    ``min_events`` events: a smaller one is not snapshotted, as taking a snapshot
    of it costs its rebuild more than it saves (``min_events=1`` snapshots every
    workflow, as the reference does)."""

    def __init__(
        self,
        every_n_events: int = 100,
        time_interval_seconds: float = 3600,
        *,
        event_interval: int | None = None,
        min_events: int = SNAPSHOT_MIN_EVENTS,
    ) -> None:
        name = "every_n_events"
        if event_interval is not None:
            every_n_events, name = event_interval, "event_interval"
        if isinstance(every_n_events, bool) or not isinstance(every_n_events, int):
            raise ArgumentTypeError(f"{name} must be an int, not {type(every_n_events).__name__}")
        if every_n_events < 1:
            raise InvalidArgumentError(
                f"{name} must be >= 1, not {every_n_events} (it counts the events replayed between snapshots)"
            )
        if isinstance(min_events, bool) or not isinstance(min_events, int):
            raise ArgumentTypeError(f"min_events must be an int, not {type(min_events).__name__}")
        if min_events < 1:
            raise InvalidArgumentError(
                f"min_events must be >= 1, not {min_events} (it is the size, in events, of the smallest "
                "workflow worth a snapshot; 1 snapshots every workflow)"
            )
        if isinstance(time_interval_seconds, bool) or not isinstance(time_interval_seconds, (int, float)):
            kind = type(time_interval_seconds).__name__
            raise ArgumentTypeError(f"time_interval_seconds must be a number of seconds, not {kind}")
        if not time_interval_seconds > 0:  # NaN too: no time would ever call for a snapshot
            raise InvalidArgumentError(
                f"time_interval_seconds must be > 0, not {time_interval_seconds} (the seconds after a "
                "snapshot that call for the next one)"
            )
        self.every_n_events = every_n_events
        self.time_interval_seconds = time_interval_seconds
        self.min_events = min_events
        self._lock = threading.Lock()
        self._events_since: dict[str, int] = {}
        self._last_snapshot: dict[str, float] = {}

    @property
    def event_interval(self) -> int:
        """The reference's name for `every_n_events`."""
        return self.every_n_events

    @property
    def look_up_at(self) -> int:
        """How many events a rebuild folds before it looks for a snapshot:
        `SNAPSHOT_LOOK_UP_AT_EVENTS`, or `min_events` if fewer. A workflow that ends before
        that point is folded with no look-up and not snapshotted (it is below `min_events`)."""
        at = self.min_events
        return at if at < SNAPSHOT_LOOK_UP_AT_EVENTS else SNAPSHOT_LOOK_UP_AT_EVENTS

    def worth_snapshotting(self, workflow_events: int) -> bool:
        """Whether a workflow of ``workflow_events`` events (all those folded into its state)
        is large enough for a snapshot (`min_events`)."""
        return workflow_events >= self.min_events

    def should_snapshot(self, entity_id: str, events_since: int) -> bool:
        """Whether ``events_since`` events (or the time passed) call for a new snapshot."""
        if events_since >= self.every_n_events:
            return True
        with self._lock:
            last = self._last_snapshot.get(entity_id)
        return events_since > 0 and last is not None and time.monotonic() - last >= self.time_interval_seconds

    def events_due(self, entity_id: str) -> int:
        """The fewest events replayed past the last snapshot that call for a new one now:
        ``should_snapshot(entity_id, n)`` holds exactly for ``n >= events_due(entity_id)``."""
        # One read of one key needs no lock (every rebuild with a policy asks this).
        last = self._last_snapshot.get(entity_id)
        if last is not None and time.monotonic() - last >= self.time_interval_seconds:
            return 1
        return self.every_n_events

    def record_snapshot(self, entity_id: str) -> None:
        """Note that a snapshot of ``entity_id`` was just taken."""
        with self._lock:
            self._events_since[entity_id] = 0
            self._last_snapshot[entity_id] = time.monotonic()

    def record_event(self, entity_id: str) -> None:
        """Note one more event for ``entity_id`` (starts its clock on first sight)."""
        with self._lock:
            self._events_since[entity_id] = self._events_since.get(entity_id, 0) + 1
            self._last_snapshot.setdefault(entity_id, time.monotonic())


class SnapshotStore:
    """Snapshots kept in an event store's database, checked before use."""

    def __init__(self, event_store: EventStore, policy: SnapshotPolicy | None = None) -> None:
        if not isinstance(event_store, KeepsSnapshots):
            raise ArgumentTypeError(
                f"{_type_path(event_store)} cannot store snapshots (it is not a KeepsSnapshots store); use a "
                "store of stabilize_events (SqliteEventStore, PostgresEventStore, InMemoryEventStore)"
            )
        if policy is not None and not isinstance(policy, SnapshotPolicy):
            hint = "import SnapshotPolicy from stabilize_events, as SnapshotStore is"
            raise ArgumentTypeError(not_ours("policy", policy, SnapshotPolicy, hint))
        self._event_store: KeepsSnapshots = event_store
        self.policy = policy

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist ``snapshot`` with the hash of its state."""
        max_us = None if snapshot.max_event_time is None else datetime_to_micros(snapshot.max_event_time)
        self._event_store.save_snapshot(
            snapshot.entity_type,
            snapshot.entity_id,
            snapshot.workflow_id,
            snapshot.version,
            snapshot.sequence,
            snapshot.state,
            max_event_time_us=max_us,
        )
        if self.policy is not None:
            self.policy.record_snapshot(snapshot.entity_id)

    def get_latest_snapshot(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        max_event_time: datetime | None = None,
    ) -> Snapshot | None:
        """The newest intact snapshot at or before ``max_sequence`` (and, if
        given, folding only events up to ``max_event_time``), or None.

        A snapshot that cannot be decoded or whose state does not match its
        hash is skipped with a warning naming it; an older one is tried.
        """
        found = self.latest_usable(entity_type, entity_id, max_sequence, max_event_time)
        if found is None or isinstance(found, Snapshot):
            return found
        return _from_stored(found)

    def latest_usable(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        max_event_time: datetime | None = None,
    ) -> _core.StoredSnapshot | Snapshot | None:
        """`get_latest_snapshot`, but from a store that `ServesStoredSnapshots` the snapshot comes
        back as the core's `StoredSnapshot`, its state left as the stored bytes (a fold seeds
        from them)."""
        max_us = None if max_event_time is None else datetime_to_micros(max_event_time)
        store = self._event_store
        if not isinstance(store, ServesStoredSnapshots):
            return self._latest_from_rows(entity_type, entity_id, max_sequence, max_us)
        bound, budget = max_sequence, _MAX_SNAPSHOTS_TRIED
        while budget > 0:
            found, skipped = store.latest_stored_snapshot(entity_type, entity_id, bound, max_us, budget)
            for why in skipped:
                logger.warning("%s", why)
            if found is None:
                return None
            if not found.legacy or legacy_hash_intact(found.state, found.state_hash):
                return found
            logger.warning(
                "ignoring snapshot of %s %s at sequence %d: its state does not match its SHA-256 hash",
                entity_type.value,
                entity_id,
                found.sequence,
            )
            budget -= len(skipped) + 1
            bound = found.sequence - 1
        return None

    def _latest_from_rows(
        self, entity_type: EntityType, entity_id: str, max_sequence: int | None, max_us: int | None
    ) -> Snapshot | None:
        """`latest_usable` over any store's ``get_snapshots`` rows."""
        rows = self._event_store.get_snapshots(entity_type, entity_id, max_sequence, _MAX_SNAPSHOTS_TRIED)
        for row in rows:
            where = f"snapshot of {entity_type.value} {entity_id} at sequence {row['sequence']}"
            if row.get("state_error"):
                logger.warning("ignoring %s: its state cannot be decoded (%s)", where, row["state_error"])
                continue
            if not snapshot_row_intact(row):
                logger.warning("ignoring %s: its state does not match its SHA-256 hash", where)
                continue
            snapshot = Snapshot.from_dict(row)
            snapshot.legacy = row.get("hash_ok") is None
            if max_us is not None and (
                snapshot.max_event_time is None or datetime_to_micros(snapshot.max_event_time) > max_us
            ):
                continue
            return snapshot
        return None

    def create_workflow_snapshot(
        self, workflow_state: dict[str, Any], workflow_id: str, version: int, sequence: int
    ) -> Snapshot:
        """Save and return a snapshot of a workflow's state after ``sequence``."""
        snapshot = Snapshot(
            entity_type=EntityType.WORKFLOW,
            entity_id=workflow_id,
            workflow_id=workflow_id,
            version=version,
            sequence=sequence,
            state=workflow_state,
        )
        self.save_snapshot(snapshot)
        return snapshot

    def should_snapshot(self, entity_id: str, events_since_snapshot: int) -> bool:
        """Whether the policy (if any) calls for a snapshot now."""
        return self.policy is not None and self.policy.should_snapshot(entity_id, events_since_snapshot)

    def flush(self) -> None:
        """Wait until every snapshot the event store is still writing after a rebuild is
        written and durable (`KeepsSnapshots.flush_snapshots`; closing the store waits too)."""
        self._event_store.flush_snapshots()

    def record_saved(self, entity_id: str) -> None:
        """Note that a snapshot of ``entity_id`` was saved (or taken over by the store, as it
        folded)."""
        if self.policy is not None:
            self.policy.record_snapshot(entity_id)

    def record_event(self, entity_id: str) -> None:
        """Count one event towards the policy."""
        if self.policy is not None:
            self.policy.record_event(entity_id)


def not_ours(name: str, given: object, ours: type, import_hint: str) -> str:
    """Why ``given`` is refused as ``name``, which takes our ``ours`` or None; where it is
    Stabilize's class of the same name (a half-migrated import, whose policy and look-ups
    are not ours), ``import_hint`` says what to import instead."""
    message = f"{name} must be a stabilize_events.{ours.__name__} or None, not {_type_path(given)}"
    if type(given).__name__ == ours.__name__:
        return f"{message}; {import_hint}"
    return message


def _type_path(given: object) -> str:
    """``given``'s type as module and qualified name, so Stabilize's classes read apart from ours."""
    return f"{type(given).__module__}.{type(given).__qualname__}"


#: How many snapshots of an entity a replay looks at, newest first, before replaying from the start.
_MAX_SNAPSHOTS_TRIED = 50


def _from_stored(stored: _core.StoredSnapshot) -> Snapshot:
    """A `Snapshot` (state decoded) from the core's `StoredSnapshot`."""
    max_us = stored.max_event_time_us
    return Snapshot(
        entity_type=EntityType(stored.entity_type),
        entity_id=stored.entity_id,
        workflow_id=stored.workflow_id,
        version=stored.version,
        sequence=stored.sequence,
        state=stored.state,
        created_at=stored.created_at,
        max_event_time=None if max_us is None else micros_to_datetime(max_us),
    )
