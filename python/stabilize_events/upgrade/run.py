"""The upgrade itself: survey (the dry run), copy, verify, and optionally drop the old tables.

The copy works in chunks of events, one transaction each, always taking the
Stabilize events (in sequence order) that ``event_log`` does not hold yet: a
run killed at any point leaves whole chunks behind, and the next run carries
on from them, writing nothing twice. Events are written through
`CallerConnections` (the path `SqliteEventStore.append(event, connection=...)`
takes) with the sequences they had; snapshots and subscription positions
through the store's own ``save_snapshot`` and ``save_subscription``.

Snapshot hashes are recomputed (see `stabilize_events.upgrade.carry`).
Snapshots get the upgrade time as ``created_at``, and as the newest event time
folded into them the newest of their workflow's events up to their sequence
(Stabilize does not record it; a replay bounded by a time uses a snapshot only
when it knows it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stabilize_events._core import NativeStore
from stabilize_events.errors import (
    InvalidArgumentError,
    SchemaError,
    StoreError,
)
from stabilize_events.snapshots import datetime_to_micros
from stabilize_events.store.caller_connection import CallerConnections
from stabilize_events.store.native import NativeEventStore
from stabilize_events.upgrade import convert
from stabilize_events.upgrade.carry import (
    CHANGED_DURING_UPGRADE,
    SNAPSHOT_COLUMNS,
    carry_out,
    compare_snapshot,
    compare_subscriptions,
    copy_event_chunks,
    copy_snapshot_batches,
    copy_subscriptions,
    shared_sequence_error,
    stored_events,
    subscription_record,
    verify_event_batches,
)
from stabilize_events.upgrade.outcome import ProgressSink, Result, Silent, Survey, counted_survey
from stabilize_events.upgrade.postgres_source import is_postgres_url
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
        raise shared_sequence_error(str(path), tuple(clash), "files")
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
    """What the database at ``url`` (an SQLite file, or a PostgreSQL database written by
    Stabilize's `PostgresEventStore`: see `postgres_run`) holds and what the upgrade would
    copy; writes nothing.

    Raises `InvalidArgumentError` (not an SQLite file URL), `StoreOpenError`
    (missing, or not SQLite) or `SchemaError` (no Stabilize events table, or
    ``event_log`` holds other events at Stabilize's sequences).
    """
    if is_postgres_url(url):
        from stabilize_events.upgrade import postgres_run

        return postgres_run.survey(url)
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
    return counted_survey(
        path,
        (events, first, last),
        snapshots,
        subscriptions,
        (ours_created, ours_events, ours_snapshots, ours_subscriptions),
        already,
        other_offsets,
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


class _Upgrade:
    """One run. The file is open through Python's ``sqlite3`` (reading Stabilize's tables,
    writing the copied rows) or through our store (creating its tables, verifying), in turn."""

    def __init__(self, url: str, chunk_size: int, progress: ProgressSink) -> None:
        self.survey = survey(url)
        assert isinstance(self.survey.path, Path)
        self.path = self.survey.path
        self.url = url_of(self.path)
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
        self.callers = CallerConnections(self.encoder, self.path)

    @contextmanager
    def source(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The file through ``sqlite3`` (our store is closed meanwhile)."""
        conn = connect(self.path, write=write)
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

            def copy_chunk(after: int) -> list[convert.SourceRow]:
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
                return rows

            copy_event_chunks(self.result, self.progress, pending, copy_chunk)
            last = conn.execute(f"SELECT max(sequence) FROM {EVENTS}").fetchone()[0]
        return int(last or 0)

    def _insert(self, conn: sqlite3.Connection, rows: list[convert.SourceRow]) -> None:
        sequences = [r.sequence for r in rows]
        stored_events(rows, self.encoder, lambda events: self.callers.append(conn, events, sequences))

    # -- snapshots -------------------------------------------------------------------

    def _snapshot_batches(self, with_newest: bool) -> Iterator[list[tuple[tuple[Any, ...], int | None]]]:
        """Stabilize's snapshot rows in batches, each with its newest event time if asked."""
        if not self.has_snapshots:
            return
        after = -1
        while True:
            with self.source() as conn:
                rows = conn.execute(
                    f"SELECT {SNAPSHOT_COLUMNS} FROM {SNAPSHOTS} WHERE id > ? ORDER BY id LIMIT ?",
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
        """Copy the Stabilize snapshots our table lacks (each checked first, see `carry`)."""
        batches = self._snapshot_batches(with_newest=True)
        copy_snapshot_batches(self.result, self.progress, self.survey.snapshots, batches, self.ours)

    # -- subscriptions -----------------------------------------------------------------

    def _subscriptions(self) -> list[dict[str, Any]]:
        if not self.has_subscriptions:
            return []
        with self.source() as conn:
            return [
                subscription_record(*row)
                for row in conn.execute(
                    f"SELECT id, event_types, entity_filter, last_sequence, webhook_url "
                    f"FROM {SUBSCRIPTIONS} ORDER BY id"
                )
            ]

    def copy_subscriptions(self) -> None:
        """Copy the subscription positions our table lacks."""
        subs = self._subscriptions()
        with self.ours() as store:
            copy_subscriptions(self.result, store, subs)

    # -- verification ------------------------------------------------------------------

    def verify_events(self, last_sequence: int) -> int:
        """Compare every Stabilize event up to ``last_sequence`` with ours, field by field,
        decoded; return how many Stabilize holds up to there."""
        with self.source() as conn:
            total = _count(conn, f"SELECT count(*) FROM {EVENTS} WHERE sequence <= ?", (last_sequence,))

        def fetch(after: int) -> list[convert.SourceRow]:
            with self.source() as conn:
                return [
                    convert.SourceRow(*r)
                    for r in conn.execute(
                        f"SELECT {self.source_columns} FROM {EVENTS} "
                        f"WHERE sequence > ? AND sequence <= ? ORDER BY sequence LIMIT ?",
                        (after, last_sequence, self.batch),
                    )
                ]

        verify_event_batches(self.result, self.progress, total, last_sequence, fetch, self.ours)
        return total

    def verify_snapshots(self) -> None:
        """Each copied snapshot is in our table with the same fields and state, and passes our hash check."""
        for batch in self._snapshot_batches(with_newest=False):
            with self.ours() as store:
                for row, _ in batch:
                    compare_snapshot(self.result, store, row)

    def verify_subscriptions(self) -> None:
        """Each subscription is ours with the same filters, at Stabilize's position or further on."""
        subs = self._subscriptions()
        with self.ours() as store:
            compare_subscriptions(self.result, store, subs)

    # -- dropping -------------------------------------------------------------------

    def drop_old(self, last_sequence: int, events: int) -> None:
        """Drop Stabilize's tables, unless events arrived in them since the verification."""
        with self.source(write=True) as conn, _transaction(conn):
            now = conn.execute(f"SELECT coalesce(max(sequence), 0), count(*) FROM {EVENTS}").fetchone()
            if tuple(now) != (last_sequence, events):
                self.result.not_dropped = CHANGED_DURING_UPGRADE
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
    if is_postgres_url(url):
        from stabilize_events.upgrade import postgres_run

        return postgres_run.upgrade(url, chunk_size=chunk_size, drop_old=drop_old, progress=progress)
    run = _Upgrade(url, chunk_size, progress or Silent())
    try:
        carry_out(run, drop_old=drop_old)
    except sqlite3.Error as exc:
        raise StoreError(
            f"the upgrade of {run.survey.path} failed: {exc}. What was copied so far is kept; "
            f"run the upgrade again to resume"
        ) from None
    return run.result


__all__ = ["DEFAULT_CHUNK_SIZE", "ProgressSink", "Result", "Survey", "survey", "upgrade"]
