"""The upgrade of a PostgreSQL database written by Stabilize's `PostgresEventStore`: survey
(the dry run), copy, verify, and optionally drop Stabilize's tables.

Stabilize's tables (``events``, ``snapshots``, ``event_subscriptions``) are looked up on
the URL's search_path (``?options=-csearch_path%3Dmyschema`` names another schema); ours
are created in the schema that holds Stabilize's ``events``. As for SQLite
(`stabilize_events.upgrade.run`), the copy goes in chunks of events, one transaction each,
always taking the Stabilize events (in sequence order) that ``event_log`` lacks, with
the sequences they had: a run killed at any point leaves whole chunks behind and the
next run carries on. Each chunk holds the store's allocation lock until it commits, so an
append or a read of a running `PostgresEventStore` waits for it rather than seeing the
sequence moved past rows not committed yet.

Payloads are read as JSON text (``data::text``) and timestamps as UTC text, then go
through the same conversion and field-by-field verification as on SQLite. Snapshots and
subscription positions are carried by `stabilize_events.upgrade.carry`, through
`PostgresEventStore` once every event is copied (until then the store refuses to open).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import psycopg

from stabilize_events._core import NativeStore
from stabilize_events.errors import SchemaError, StoreError
from stabilize_events.snapshots import datetime_to_micros
from stabilize_events.store.postgres import (
    PostgresEventStore,
    encode_rows,
    open_error,
    redact,
    setup_ddl,
    write_at_sequences,
)
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
from stabilize_events.upgrade.postgres_source import (
    StabilizeTables,
    find_stabilize_tables,
    has_event_log,
)
from stabilize_events.upgrade.source import (
    EVENT_LOG,
    EVENT_SNAPSHOT,
    EVENT_SUBSCRIPTION,
    EVENTS,
    SNAPSHOTS,
    SUBSCRIPTIONS,
)

#: Stabilize's timestamp as the ISO text `convert.parse_timestamp` reads (the instant, in UTC).
_UTC_TEXT = "to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'"


def _source_columns(tables: StabilizeTables) -> str:
    """The SELECT list giving `convert.SourceRow` from Stabilize's PostgreSQL ``events``."""
    last = "schema_version" if tables.has_schema_version else "1"
    return (
        f"sequence, event_id, event_type, {_UTC_TEXT}, entity_type, entity_id, workflow_id, version, "
        f"data::text, correlation_id, causation_id, actor, source_handler, {last}"
    )


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as error:
        raise open_error(url, error) from None


def _count(conn: psycopg.Connection[Any], text: str, params: Any = None) -> int:
    row = conn.execute(text, params).fetchone()
    return int(row[0] or 0) if row is not None else 0


def _find(conn: psycopg.Connection[Any], url: str) -> StabilizeTables:
    tables = find_stabilize_tables(conn, None)
    if tables is None:
        raise SchemaError(
            f"{redact(url)} holds no Stabilize events table ({EVENTS}) on the connection's search_path, "
            f"so there is nothing to upgrade; check the URL (name the schema with "
            f"?options=-csearch_path%3Dmyschema; a database upgraded with --drop-old no longer has it)"
        )
    return tables


def _check_no_conflict(conn: psycopg.Connection[Any], where: str, tables: StabilizeTables) -> None:
    """Raise `SchemaError` if ``event_log`` holds events the upgrade would collide with."""
    theirs, ours = tables.qualified(EVENTS), tables.qualified(EVENT_LOG)
    clash = conn.execute(
        f"SELECT l.sequence, l.event_id, e.event_id FROM {ours} l LEFT JOIN {theirs} e "
        f"ON e.sequence = l.sequence WHERE l.sequence <= (SELECT max(sequence) FROM {theirs}) "
        f"AND (e.event_id IS NULL OR e.event_id <> l.event_id) LIMIT 1"
    ).fetchone()
    if clash is not None:
        raise shared_sequence_error(str(where), tuple(clash), "schemas")


def _survey(conn: psycopg.Connection[Any], url: str) -> Survey:
    tables = _find(conn, url)
    where = f"{redact(url)} schema {tables.schema}"
    theirs = tables.qualified(EVENTS)
    span = conn.execute(f"SELECT count(*), min(sequence), max(sequence) FROM {theirs}").fetchone()
    assert span is not None  # an aggregate always has its row
    events, first, last = span
    snapshots = (
        _count(conn, f"SELECT count(*) FROM {tables.qualified(SNAPSHOTS)}") if tables.has_snapshots else 0
    )
    subscriptions = (
        _count(conn, f"SELECT count(*) FROM {tables.qualified(SUBSCRIPTIONS)}")
        if tables.has_subscriptions
        else 0
    )
    ours_created = has_event_log(conn, tables)
    ours_events = ours_snapshots = ours_subscriptions = already = 0
    if ours_created:
        _check_no_conflict(conn, where, tables)
        ours_events = _count(conn, f"SELECT count(*) FROM {tables.qualified(EVENT_LOG)}")
        already = _count(
            conn,
            f"SELECT count(*) FROM {theirs} e JOIN {tables.qualified(EVENT_LOG)} l "
            f"ON l.sequence = e.sequence AND l.event_id = e.event_id",
        )
        ours_snapshots = _count(conn, f"SELECT count(*) FROM {tables.qualified(EVENT_SNAPSHOT)}")
        ours_subscriptions = _count(conn, f"SELECT count(*) FROM {tables.qualified(EVENT_SUBSCRIPTION)}")
    return counted_survey(
        where,
        (events, first, last),
        snapshots,
        subscriptions,
        (ours_created, ours_events, ours_snapshots, ours_subscriptions),
        already,
        0,  # timestamptz holds instants: no offsets to note
    )


def survey(url: str) -> Survey:
    """What the PostgreSQL database at ``url`` holds and what the upgrade would copy; writes nothing.

    Raises `StoreOpenError` (server unreachable, refused) or `SchemaError` (no Stabilize
    events table on the search_path, or ``event_log`` holds other events at its sequences).
    """
    with _connect(url) as conn:
        try:
            return _survey(conn, url)
        except psycopg.Error as error:
            raise StoreError(f"reading {redact(url)} failed: {error}; nothing was written") from None


class _Upgrade:
    """One run over one connection (Stabilize's tables, the copy) and, once every event is
    copied, our store (snapshots, subscriptions, verification)."""

    def __init__(self, url: str, chunk_size: int, progress: ProgressSink) -> None:
        self.url = url
        self.conn = _connect(url)
        self.survey = _survey(self.conn, url)
        self.tables = _find(self.conn, url)
        self.result = Result(self.survey)
        self.chunk = chunk_size
        self.batch = max(chunk_size, 5000)
        self.progress = progress
        self.codec = NativeStore.memory()
        self._store: PostgresEventStore | None = None

    def close(self) -> None:
        """Close the connection and the store."""
        if self._store is not None:
            self._store.close()
        self.conn.close()

    @property
    def store(self) -> PostgresEventStore:
        """Our store on the schema of Stabilize's tables (opens once every event is copied)."""
        if self._store is None:
            self._store = PostgresEventStore(
                self.url, schema=self.tables.schema, min_pool_size=1, max_pool_size=2
            )
        return self._store

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    # -- events ------------------------------------------------------------------

    def copy_events(self) -> int:
        """Copy the Stabilize events ``event_log`` lacks; return Stabilize's highest sequence."""
        theirs, ours = self.tables.qualified(EVENTS), self.tables.qualified(EVENT_LOG)
        with self._transaction():
            # Several processes may upgrade (or open the store) at once: as create_tables does.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x5E5E_0000_0001,))
            self.conn.execute(setup_ddl(self.tables.schema).encode())
        pending = _count(
            self.conn,
            f"SELECT count(*) FROM {theirs} e WHERE NOT EXISTS "
            f"(SELECT 1 FROM {ours} l WHERE l.sequence = e.sequence)",
        )
        columns = _source_columns(self.tables)

        def copy_chunk(after: int) -> list[convert.SourceRow]:
            with self._transaction():
                rows = [
                    convert.SourceRow(*r)
                    for r in self.conn.execute(
                        f"SELECT {columns} FROM {theirs} e WHERE e.sequence > %s AND NOT EXISTS "
                        f"(SELECT 1 FROM {ours} l WHERE l.sequence = e.sequence) "
                        f"ORDER BY e.sequence LIMIT %s",
                        (after, self.chunk),
                    )
                ]
                if rows:
                    self._insert(rows)
            return rows

        copy_event_chunks(self.result, self.progress, pending, copy_chunk)
        return _count(self.conn, f"SELECT coalesce(max(sequence), 0) FROM {theirs}")

    def _insert(self, rows: list[convert.SourceRow]) -> None:
        sequences = [r.sequence for r in rows]
        stored_events(
            rows,
            self.codec,
            lambda events: write_at_sequences(
                self.conn, self.tables.schema, encode_rows(self.codec, events), sequences
            ),
        )

    # -- snapshots and subscriptions -----------------------------------------------

    def _snapshot_rows(self) -> Iterator[list[tuple[Any, ...]]]:
        if not self.tables.has_snapshots:
            return
        columns = SNAPSHOT_COLUMNS.replace("state,", "state::text,")
        after = -1
        while True:
            rows = self.conn.execute(
                f"SELECT {columns} FROM {self.tables.qualified(SNAPSHOTS)} WHERE id > %s "
                f"ORDER BY id LIMIT %s",
                (after, self.batch),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [tuple(r) for r in rows]

    def _newest_event_us(self, workflow_id: str, sequence: int) -> int | None:
        row = self.conn.execute(
            f"SELECT max(timestamp) FROM {self.tables.qualified(EVENTS)} WHERE workflow_id = %s "
            f"AND sequence <= %s",
            (workflow_id, sequence),
        ).fetchone()
        return None if row is None or row[0] is None else datetime_to_micros(row[0])

    def copy_snapshots(self) -> None:
        """Copy the Stabilize snapshots our table lacks (each checked first, see `carry`)."""
        batches = (
            [(row, self._newest_event_us(row[3], row[5])) for row in batch] for batch in self._snapshot_rows()
        )
        copy_snapshot_batches(self.result, self.progress, self.survey.snapshots, batches, self._ours)

    def _ours(self) -> AbstractContextManager[PostgresEventStore]:
        return nullcontext(self.store)

    def _subscriptions(self) -> list[dict[str, Any]]:
        if not self.tables.has_subscriptions:
            return []
        rows = self.conn.execute(
            f"SELECT id, array_to_json(event_types)::text, entity_filter::text, last_sequence, webhook_url "
            f"FROM {self.tables.qualified(SUBSCRIPTIONS)} ORDER BY id"
        ).fetchall()
        return [subscription_record(*row) for row in rows]

    def copy_subscriptions(self) -> None:
        """Copy the subscription positions our table lacks."""
        copy_subscriptions(self.result, self.store, self._subscriptions())

    # -- verification ------------------------------------------------------------------

    def verify_events(self, last_sequence: int) -> int:
        """Compare every Stabilize event up to ``last_sequence`` with ours, field by field."""
        theirs = self.tables.qualified(EVENTS)
        total = _count(self.conn, f"SELECT count(*) FROM {theirs} WHERE sequence <= %s", (last_sequence,))
        columns = _source_columns(self.tables)

        def fetch(after: int) -> list[convert.SourceRow]:
            return [
                convert.SourceRow(*r)
                for r in self.conn.execute(
                    f"SELECT {columns} FROM {theirs} WHERE sequence > %s AND sequence <= %s "
                    f"ORDER BY sequence LIMIT %s",
                    (after, last_sequence, self.batch),
                )
            ]

        verify_event_batches(self.result, self.progress, total, last_sequence, fetch, self._ours)
        return total

    def verify_snapshots(self) -> None:
        """Each copied snapshot is in our table with the same fields and state, and passes our hash check."""
        for batch in self._snapshot_rows():
            for row in batch:
                compare_snapshot(self.result, self.store, row)

    def verify_subscriptions(self) -> None:
        """Each subscription is ours with the same filters, at Stabilize's position or further on."""
        compare_subscriptions(self.result, self.store, self._subscriptions())

    # -- dropping -------------------------------------------------------------------

    def drop_old(self, last_sequence: int, events: int) -> None:
        """Drop Stabilize's tables, unless events arrived in them since the verification."""
        theirs = self.tables.qualified(EVENTS)
        with self._transaction():
            self.conn.execute(f"LOCK TABLE {theirs} IN ACCESS EXCLUSIVE MODE")
            now = self.conn.execute(f"SELECT coalesce(max(sequence), 0), count(*) FROM {theirs}").fetchone()
            if now is None or tuple(now) != (last_sequence, events):
                self.result.not_dropped = CHANGED_DURING_UPGRADE
                return
            for table in (EVENTS, SNAPSHOTS, SUBSCRIPTIONS):
                self.conn.execute(f"DROP TABLE IF EXISTS {self.tables.qualified(table)}")
        self.result.dropped = True


def upgrade(
    url: str,
    *,
    chunk_size: int,
    drop_old: bool = False,
    progress: ProgressSink | None = None,
) -> Result:
    """Copy Stabilize's events, snapshots and subscription positions in the PostgreSQL
    database at ``url`` into our tables beside them, verify them, and with ``drop_old``
    drop Stabilize's tables if the verification found no difference. Resumable, as
    `stabilize_events.upgrade.run.upgrade`."""
    run = _Upgrade(url, chunk_size, progress or Silent())
    try:
        carry_out(run, drop_old=drop_old)
    except psycopg.Error as exc:
        raise StoreError(
            f"the upgrade of {run.survey.path} failed: {' '.join(str(exc).split())}. What was copied so "
            f"far is kept; run the upgrade again to resume"
        ) from None
    finally:
        run.close()
    return run.result


__all__ = ["survey", "upgrade"]
