"""The upgrade itself: survey (the dry run), copy, verify, and optionally drop the old tables.

The copy works in chunks of events, one transaction each, always taking the
Stabilize events (in sequence order) that ``event_log`` does not hold yet: a
run killed at any point leaves whole chunks behind, and the next run carries
on from them, writing nothing twice. Events are written through
`CallerConnections` (the path `SqliteEventStore.append(event, connection=...)`
takes) with the sequences they had; snapshots and subscription positions
through the store's own ``save_snapshot`` and ``save_subscription``.

Snapshot hashes cannot be carried over: Stabilize hashes ``json.dumps(state,
sort_keys=True)`` (spaces after separators, non-ASCII escaped), our store
hashes the bytes it stores (`stabilize_events.snapshots`), so it would
reject every copied snapshot as corrupt. Each snapshot's Stabilize hash is
checked against its state first (one that fails is skipped and reported, as
Stabilize would not use it either), then its hash is recomputed in our form.
Snapshots get the upgrade time as ``created_at``, and as the newest event time
folded into them the newest of their workflow's events up to their sequence
(Stabilize does not record it; a replay bounded by a time uses a snapshot only
when it knows it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stabilize_events._core import Event, NativeStore
from stabilize_events.errors import (
    InvalidArgumentError,
    PayloadError,
    SchemaError,
    StoreError,
)
from stabilize_events.snapshots import datetime_to_micros, snapshot_row_intact
from stabilize_events.store.caller_connection import CallerConnections
from stabilize_events.store.interface import EventQuery
from stabilize_events.store.native import NativeEventStore
from stabilize_events.types import EntityType, EventType, parse_event_type
from stabilize_events.upgrade import convert
from stabilize_events.upgrade.source import (
    EVENT_LOG,
    EVENT_SNAPSHOT,
    EVENT_SUBSCRIPTION,
    EVENTS,
    SNAPSHOTS,
    SUBSCRIPTIONS,
    columns,
    connect,
    database_path,
    has_stabilize_events,
    has_stabilize_snapshots,
    has_stabilize_subscriptions,
    has_table,
    url_of,
)

#: Events per transaction.
DEFAULT_CHUNK_SIZE = 5000
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


class _Silent:
    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, done: int, note: str) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class Survey:
    """What a database holds, and what the upgrade would do (found without writing)."""

    path: Path
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

    @property
    def url(self) -> str:
        """The database's ``sqlite:///`` URL (absolute)."""
        return url_of(self.path)


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


def _count(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> int:
    return int(conn.execute(sql, params).fetchone()[0] or 0)


def _open_source(url: str) -> sqlite3.Connection:
    path = database_path(url)
    if path is None:
        raise InvalidArgumentError(
            f"{url!r} is an in-memory database, which holds no Stabilize tables to upgrade; "
            f"give the URL of the database file"
        )
    conn = connect(path, write=False)
    try:
        if not has_stabilize_events(conn):
            raise SchemaError(
                f"{path} holds no Stabilize events table ({EVENTS}), so there is nothing to upgrade; "
                f"check the URL (a database upgraded with --drop-old no longer has it)"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _check_no_conflict(conn: sqlite3.Connection, path: Path, last_sequence: int) -> None:
    """Raise `SchemaError` if ``event_log`` holds events the upgrade would collide with."""
    clash = conn.execute(
        f"SELECT l.sequence, l.event_id, e.event_id FROM {EVENT_LOG} l "
        f"LEFT JOIN {EVENTS} e ON e.sequence = l.sequence "
        f"WHERE l.sequence <= ? AND (e.event_id IS NULL OR e.event_id <> l.event_id) LIMIT 1",
        (last_sequence,),
    ).fetchone()
    if clash is not None:
        seq, ours, theirs = clash
        what = f"Stabilize's event there is {theirs}" if theirs is not None else "Stabilize has none there"
        raise SchemaError(
            f"{path}: {EVENT_LOG} already holds an event at sequence {seq} (event_id {ours}) that is not "
            f"Stabilize's ({what}): the two histories share sequences and cannot be merged; nothing was "
            f"written. Upgrade a copy of the database made before stabilize-events wrote to it, or keep "
            f"the two histories in separate files"
        )
    moved = conn.execute(
        f"SELECT e.sequence, e.event_id, l.sequence FROM {EVENTS} e "
        f"JOIN {EVENT_LOG} l ON l.event_id = e.event_id WHERE l.sequence <> e.sequence LIMIT 1"
    ).fetchone()
    if moved is not None:
        raise SchemaError(
            f"{path}: Stabilize's event {moved[1]} (sequence {moved[0]}) is already in {EVENT_LOG} at "
            f"another sequence ({moved[2]}), so it cannot keep its sequence; nothing was written. "
            f"Upgrade a copy of the database made before stabilize-events wrote to it"
        )


def survey(url: str) -> Survey:
    """What the database at ``url`` holds and what the upgrade would copy; writes nothing.

    Raises `InvalidArgumentError` (not an SQLite file URL), `StoreOpenError`
    (missing, or not SQLite) or `SchemaError` (no Stabilize events table, or
    ``event_log`` holds other events at Stabilize's sequences).
    """
    conn = _open_source(url)
    try:
        return _survey(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"reading {url} failed: {exc}; nothing was written") from None
    finally:
        conn.close()


def _survey(conn: sqlite3.Connection) -> Survey:
    path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    events, first, last = conn.execute(
        f"SELECT count(*), min(sequence), max(sequence) FROM {EVENTS}"
    ).fetchone()
    snapshots = _count(conn, f"SELECT count(*) FROM {SNAPSHOTS}") if has_stabilize_snapshots(conn) else 0
    subscriptions = (
        _count(conn, f"SELECT count(*) FROM {SUBSCRIPTIONS}") if has_stabilize_subscriptions(conn) else 0
    )
    other_offsets = _count(
        conn,
        f"SELECT count(*) FROM {EVENTS} "
        f"WHERE substr(timestamp, -6) <> '+00:00' AND substr(timestamp, -1) <> 'Z'",
    )
    ours_created = has_table(conn, EVENT_LOG)
    ours_events = ours_snapshots = ours_subscriptions = already = 0
    if ours_created:
        if last is not None:
            _check_no_conflict(conn, path, int(last))
        ours_events = _count(conn, f"SELECT count(*) FROM {EVENT_LOG}")
        already = _count(
            conn,
            f"SELECT count(*) FROM {EVENTS} e JOIN {EVENT_LOG} l "
            f"ON l.sequence = e.sequence AND l.event_id = e.event_id",
        )
        if has_table(conn, EVENT_SNAPSHOT):
            ours_snapshots = _count(conn, f"SELECT count(*) FROM {EVENT_SNAPSHOT}")
        if has_table(conn, EVENT_SUBSCRIPTION):
            ours_subscriptions = _count(conn, f"SELECT count(*) FROM {EVENT_SUBSCRIPTION}")
    return Survey(
        path=path,
        events=int(events),
        first_sequence=None if first is None else int(first),
        last_sequence=None if last is None else int(last),
        snapshots=snapshots,
        subscriptions=subscriptions,
        ours_created=ours_created,
        ours_events=ours_events,
        ours_snapshots=ours_snapshots,
        ours_subscriptions=ours_subscriptions,
        already_copied=already,
        to_copy=int(events) - already,
        other_offsets=other_offsets,
    )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")  # take the write lock now: the chunk's reads stay valid
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


#: A Stabilize snapshot row: its id, then the columns `_SNAPSHOT_COLUMNS` names.
_SNAPSHOT_COLUMNS = "id, entity_type, entity_id, workflow_id, version, sequence, state, state_hash"


class _Upgrade:
    """One run. The file is open through Python's ``sqlite3`` (reading Stabilize's tables,
    writing the copied rows) or through our store (creating its tables, verifying), in turn."""

    def __init__(self, url: str, chunk_size: int, progress: ProgressSink) -> None:
        self.survey = survey(url)
        self.url = self.survey.url
        self.result = Result(self.survey)
        self.chunk = chunk_size
        # Verification opens our store once per batch: not per tiny copy chunk.
        self.batch = max(chunk_size, DEFAULT_CHUNK_SIZE)
        self.progress = progress
        with self.source() as conn:
            self.source_columns = convert.source_columns("schema_version" in columns(conn, EVENTS))
            self.has_snapshots = has_stabilize_snapshots(conn)
            self.has_subscriptions = has_stabilize_subscriptions(conn)
        # Rows are encoded by the core (payload codec, checks, index keys) and written
        # through sqlite3 by the same path as `append(event, connection=...)`; an
        # in-memory core encodes exactly as the file's would, without opening the file.
        self.encoder = NativeStore.memory()
        self.callers = CallerConnections(self.encoder, self.survey.path)

    @contextmanager
    def source(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The file through ``sqlite3`` (our store is closed meanwhile)."""
        conn = connect(self.survey.path, write=write)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def ours(self) -> Iterator[NativeEventStore]:
        """The file through our store, creating its tables if missing (``sqlite3`` is
        closed meanwhile). Opened directly: `SqliteEventStore` refuses a database
        whose upgrade is not finished."""
        store = NativeEventStore(NativeStore.sqlite(self.url, create_tables=True))
        try:
            yield store
        finally:
            store.close()

    # -- events ------------------------------------------------------------------

    def copy_events(self) -> int:
        """Copy the Stabilize events ``event_log`` lacks; return Stabilize's highest sequence."""
        with self.ours():
            pass  # our tables, before the first chunk goes into them
        with self.source(write=True) as conn:
            pending = _count(
                conn,
                f"SELECT count(*) FROM {EVENTS} e WHERE NOT EXISTS "
                f"(SELECT 1 FROM {EVENT_LOG} l WHERE l.sequence = e.sequence)",
            )
            self.progress.start("copying events", pending)
            after = 0
            while True:
                with _transaction(conn):
                    rows = [
                        convert.SourceRow(*r)
                        for r in conn.execute(
                            f"SELECT {self.source_columns} FROM {EVENTS} e WHERE e.sequence > ? "
                            f"AND NOT EXISTS (SELECT 1 FROM {EVENT_LOG} l WHERE l.sequence = e.sequence) "
                            f"ORDER BY e.sequence LIMIT ?",
                            (after, self.chunk),
                        )
                    ]
                    if rows:
                        self._insert(conn, rows)
                if not rows:
                    break
                after = rows[-1].sequence
                self.result.copied_events += len(rows)
                self.progress.advance(len(rows), f"up to sequence {after:,}")
            self.progress.finish()
            last = conn.execute(f"SELECT max(sequence) FROM {EVENTS}").fetchone()[0]
        return int(last or 0)

    def _insert(self, conn: sqlite3.Connection, rows: list[convert.SourceRow]) -> None:
        events = [convert.event_from_row(r) for r in rows]
        try:
            self.callers.append(conn, events, [r.sequence for r in rows])
        except PayloadError as exc:
            # Name the row: the batch error only names the key path.
            for row, event in zip(rows, events, strict=True):
                try:
                    self.encoder.sqlite_row(event)
                except PayloadError:
                    raise convert.bad_row(row, f"its data cannot be stored ({exc})") from None
            raise

    # -- snapshots -------------------------------------------------------------------

    def _snapshot_batches(self, with_newest: bool) -> Iterator[list[tuple[tuple[Any, ...], int | None]]]:
        """Stabilize's snapshot rows in batches, each with its newest event time if asked."""
        if not self.has_snapshots:
            return
        after = -1
        while True:
            with self.source() as conn:
                rows = conn.execute(
                    f"SELECT {_SNAPSHOT_COLUMNS} FROM {SNAPSHOTS} WHERE id > ? ORDER BY id LIMIT ?",
                    (after, self.batch),
                ).fetchall()
                batch = [
                    (row, _newest_event_us(conn, row[3], row[5]) if with_newest else None) for row in rows
                ]
            if not batch:
                return
            after = rows[-1][0]
            yield batch

    def copy_snapshots(self) -> None:
        """Copy the Stabilize snapshots our table lacks (each checked first, see the module doc)."""
        self.progress.start("copying snapshots", self.survey.snapshots)
        for batch in self._snapshot_batches(with_newest=True):
            with self.ours() as store:
                for row, newest in batch:
                    _, entity_type, entity_id, workflow_id, version, sequence, text, their_hash = row
                    state, why = _snapshot_state(entity_type, text, their_hash)
                    if why is not None:
                        self.result.snapshots_skipped.append(
                            f"snapshot of {entity_type} {entity_id} at sequence {sequence} "
                            f"(version {version}): {why}"
                        )
                    elif _our_snapshot(store, entity_type, entity_id, sequence) is not None:
                        self.result.snapshots_present += 1
                    else:
                        store.save_snapshot(
                            EntityType(entity_type),
                            entity_id,
                            workflow_id,
                            version,
                            sequence,
                            state,
                            max_event_time_us=newest,
                        )
                        self.result.snapshots_copied += 1
            self.progress.advance(len(batch), "")
        self.progress.finish()

    # -- subscriptions -----------------------------------------------------------------

    def _subscriptions(self) -> list[dict[str, Any]]:
        if not self.has_subscriptions:
            return []
        with self.source() as conn:
            return [
                _subscription(*row)
                for row in conn.execute(
                    f"SELECT id, event_types, entity_filter, last_sequence, webhook_url "
                    f"FROM {SUBSCRIPTIONS} ORDER BY id"
                )
            ]

    def copy_subscriptions(self) -> None:
        """Copy the subscription positions our table lacks."""
        subs = self._subscriptions()
        with self.ours() as store:
            for sub in subs:
                # One of ours under the same id was copied by an earlier run or has moved on
                # since: setting it back would deliver events twice.
                if store.get_subscription(sub["id"]) is not None:
                    self.result.subscriptions_present += 1
                    continue
                store.save_subscription(
                    sub["id"],
                    sub["event_types"],
                    sub["entity_filter"],
                    sub["last_sequence"],
                    sub["webhook_url"],
                )
                self.result.subscriptions_copied += 1

    # -- verification ------------------------------------------------------------------

    def verify_events(self, last_sequence: int) -> int:
        """Compare every Stabilize event up to ``last_sequence`` with ours, field by field,
        decoded; return how many Stabilize holds up to there."""
        with self.source() as conn:
            total = _count(conn, f"SELECT count(*) FROM {EVENTS} WHERE sequence <= ?", (last_sequence,))
        self.progress.start("verifying events", total)
        after = 0
        while True:
            with self.source() as conn:
                rows = [
                    convert.SourceRow(*r)
                    for r in conn.execute(
                        f"SELECT {self.source_columns} FROM {EVENTS} "
                        f"WHERE sequence > ? AND sequence <= ? ORDER BY sequence LIMIT ?",
                        (after, last_sequence, self.batch),
                    )
                ]
            if not rows:
                break
            upto = rows[-1].sequence
            with self.ours() as store:
                query = EventQuery(from_sequence=after, to_sequence=upto, limit=len(rows) + 1)
                self._compare_events(rows, {e.sequence: e for e in store.get_events(query)})
            self.result.verified_events += len(rows)
            self.progress.advance(len(rows), f"up to sequence {upto:,}")
            after = upto
        self.progress.finish()
        with self.ours() as store:
            ours_in_range = store.count_events(EventQuery(to_sequence=last_sequence))
        if ours_in_range != total:
            self.result.mismatch(
                f"counts differ: Stabilize's {EVENTS} holds {total:,} events up to sequence "
                f"{last_sequence:,}, {EVENT_LOG} {ours_in_range:,}"
            )
        return total

    def _compare_events(self, rows: list[convert.SourceRow], ours: dict[int, Event]) -> None:
        for row in rows:
            event = ours.pop(row.sequence, None)
            if event is None:
                self.result.mismatch(f"sequence {row.sequence} (event_id {row.event_id}): not in {EVENT_LOG}")
                continue
            diffs = convert.differences(convert.expected_fields(row), convert.event_fields(event))
            if diffs:
                self.result.mismatch(f"sequence {row.sequence} (event_id {row.event_id}): {'; '.join(diffs)}")
        for seq, event in sorted(ours.items()):
            self.result.mismatch(
                f"sequence {seq} (event_id {event.event_id}): in {EVENT_LOG} but not in Stabilize's {EVENTS}"
            )

    def verify_snapshots(self) -> None:
        """Each copied snapshot is in our table with the same fields and state, and passes our hash check."""
        for batch in self._snapshot_batches(with_newest=False):
            with self.ours() as store:
                for row, _ in batch:
                    _, entity_type, entity_id, workflow_id, version, sequence, text, their_hash = row
                    if _snapshot_state(entity_type, text, their_hash)[1] is not None:
                        continue  # skipped by the copy, and reported there
                    where = f"snapshot of {entity_type} {entity_id} at sequence {sequence}"
                    ours = _our_snapshot(store, entity_type, entity_id, sequence)
                    if ours is None:
                        self.result.mismatch(f"{where}: not in {EVENT_SNAPSHOT}")
                        continue
                    expected = {
                        "workflow_id": workflow_id,
                        "version": version,
                        "state": json.loads(text) if text else {},
                        "state_error": None,
                    }
                    diffs = convert.differences(expected, ours)
                    if not snapshot_row_intact(ours):
                        diffs.append("its stored state does not match its state_hash")
                    if diffs:
                        self.result.mismatch(f"{where}: {'; '.join(diffs)}")
                    self.result.verified_snapshots += 1

    def verify_subscriptions(self) -> None:
        """Each subscription is ours with the same filters, at Stabilize's position or further on."""
        subs = self._subscriptions()
        with self.ours() as store:
            for sub in subs:
                ours = store.get_subscription(sub["id"])
                where = f"subscription {sub['id']!r}"
                if ours is None:
                    self.result.mismatch(f"{where}: not in {EVENT_SUBSCRIPTION}")
                    continue
                diffs = convert.differences(
                    {k: sub[k] for k in ("event_types", "entity_filter", "webhook_url")}, ours
                )
                if ours["last_sequence"] < sub["last_sequence"]:
                    diffs.append(
                        f"last_sequence: expected {sub['last_sequence']} or more, got {ours['last_sequence']}"
                    )
                if diffs:
                    self.result.mismatch(f"{where}: {'; '.join(diffs)}")
                self.result.verified_subscriptions += 1

    # -- dropping -------------------------------------------------------------------

    def drop_old(self, last_sequence: int, events: int) -> None:
        """Drop Stabilize's tables, unless events arrived in them since the verification."""
        with self.source(write=True) as conn, _transaction(conn):
            now = conn.execute(f"SELECT coalesce(max(sequence), 0), count(*) FROM {EVENTS}").fetchone()
            if tuple(now) != (last_sequence, events):
                self.result.not_dropped = (
                    f"Stabilize's {EVENTS} table changed during the upgrade (something still writes to "
                    f"it); stop it and run the upgrade again"
                )
                return
            for table in (EVENTS, SNAPSHOTS, SUBSCRIPTIONS):
                if has_table(conn, table):
                    conn.execute(f"DROP TABLE {table}")
        self.result.dropped = True


def _newest_event_us(conn: sqlite3.Connection, workflow_id: str, sequence: int) -> int | None:
    """The newest event time of a workflow up to ``sequence``: what a snapshot of it (or of
    one of its entities) can have folded, at most. Stabilize does not record it; without
    it, a replay bounded by a time would never use the snapshot."""
    newest: int | None = None
    for (text,) in conn.execute(
        f"SELECT timestamp FROM {EVENTS} WHERE workflow_id = ? AND sequence <= ?", (workflow_id, sequence)
    ):
        try:
            micros = datetime_to_micros(convert.parse_timestamp(text))
        except (ValueError, TypeError):
            continue  # the copy refuses such a row
        newest = micros if newest is None else max(newest, micros)
    return newest


def _our_snapshot(
    store: NativeEventStore, entity_type: str, entity_id: str, sequence: int
) -> dict[str, Any] | None:
    found = store.get_snapshots(EntityType(entity_type), entity_id, sequence, 1)
    return found[0] if found and found[0]["sequence"] == sequence else None


def _snapshot_state(entity_type: str, text: str | None, their_hash: str | None) -> tuple[Any, str | None]:
    """A Stabilize snapshot's state, or why it is not copied."""
    try:
        EntityType(entity_type)
    except ValueError:
        return None, f"unknown entity type {entity_type!r}"
    try:
        state = json.loads(text) if text else {}
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"its state is not JSON ({exc})"
    if not isinstance(state, dict):
        return None, f"its state is a JSON {type(state).__name__}, not an object"
    # Stabilize's own hash (see the module doc): it refuses a snapshot that fails it.
    if their_hash is not None:
        digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()
        if digest != their_hash:
            return None, "its state does not match its state_hash (Stabilize would refuse it too)"
    return state, None


def _subscription(
    sub_id: str,
    types_text: str | None,
    filter_text: str | None,
    last_sequence: int | None,
    webhook: str | None,
) -> dict[str, Any]:
    where = f"Stabilize subscription {sub_id!r}"
    try:
        names = json.loads(types_text) if types_text else None
        entity_filter = json.loads(filter_text) if filter_text else None
    except (json.JSONDecodeError, TypeError) as exc:
        raise StoreError(
            f"{where} cannot be carried over: its filters are not JSON ({exc}); fix the row in "
            f"{SUBSCRIPTIONS}, then run the upgrade again (it resumes)"
        ) from None
    types: list[EventType] | None = None
    if names:
        types = [parse_event_type(str(n)) for n in names]
        if EventType.UNKNOWN in types:
            raise StoreError(
                f"{where} cannot be carried over: it filters on event types this build does not know "
                f"({', '.join(map(str, names))}); fix the row in {SUBSCRIPTIONS}, then run the upgrade again"
            )
    return {
        "id": sub_id,
        "event_types": types,
        "entity_filter": entity_filter,
        "last_sequence": int(last_sequence or 0),
        "webhook_url": webhook,
    }


def upgrade(
    url: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    drop_old: bool = False,
    progress: ProgressSink | None = None,
) -> Result:
    """Copy Stabilize's events, snapshots and subscription positions at ``url`` into
    our tables, verify them, and with ``drop_old`` drop Stabilize's tables if the
    verification found no difference.

    Resumable: a run that stopped (killed, or failed on a row) keeps the chunks it
    committed, and the next run carries on. Raises what `survey` raises before
    writing anything; `StoreError` (or a subclass naming the row) if the copy fails.

    Run it where no event store of this process has the file open (the command
    line does): it opens the file through Python's ``sqlite3`` as well.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be a positive int, not {chunk_size!r}")
    run = _Upgrade(url, chunk_size, progress or _Silent())
    try:
        last = run.copy_events()
        run.copy_snapshots()
        run.copy_subscriptions()
        events = run.verify_events(last)
        run.verify_snapshots()
        run.verify_subscriptions()
        if drop_old:
            if run.result.verified:
                run.drop_old(last, events)
            else:
                run.result.not_dropped = "the verification found differences"
    except sqlite3.Error as exc:
        raise StoreError(
            f"the upgrade of {run.survey.path} failed: {exc}. What was copied so far is kept; "
            f"run the upgrade again to resume"
        ) from None
    return run.result


__all__ = ["DEFAULT_CHUNK_SIZE", "ProgressSink", "Result", "Survey", "survey", "upgrade"]
