"""Stabilize's event tables in a PostgreSQL database: finding them, and what of them ours hold.

Stabilize 0.33's `PostgresEventStore` keeps its history in ``events`` (sequence
``BIGSERIAL``, payload as ``jsonb``, timestamps as ``timestamptz``), with
``snapshots`` and ``event_subscriptions`` beside it. The upgrade puts our tables
(`stabilize_events.store.postgres`) in the schema that holds Stabilize's
``events``. This module only reads; `PostgresEventStore` runs
`refuse_unupgraded` on its probe connection before it creates or opens anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stabilize_events.errors import SchemaError
from stabilize_events.upgrade.source import (
    EVENT_LOG,
    EVENTS,
    STABILIZE_EVENT_COLUMNS,
    STABILIZE_SNAPSHOT_COLUMNS,
    STABILIZE_SUBSCRIPTION_COLUMNS,
)

#: URL schemes that name a PostgreSQL server (the others name SQLite files).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: object) -> bool:
    """Whether ``url`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(url, str) and url.startswith(POSTGRES_SCHEMES)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_schema(conn: Any, table: str, schema: str | None) -> str | None:
    """The schema ``table`` resolves to (in ``schema``, else on the connection's search_path),
    or None if there is no such table."""
    name = f"{_quote(schema)}.{_quote(table)}" if schema else _quote(table)
    row = conn.execute(
        "SELECT (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s))",
        (name,),
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def table_columns(conn: Any, schema: str, table: str) -> frozenset[str]:
    """The column names of ``schema.table`` (empty if there is no such table)."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (f"{_quote(schema)}.{_quote(table)}",),
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


@dataclass(frozen=True)
class StabilizeTables:
    """Where Stabilize's tables are: the schema holding its ``events`` and which of the others exist."""

    schema: str
    has_schema_version: bool
    has_snapshots: bool
    has_subscriptions: bool

    def qualified(self, table: str) -> str:
        """``table`` in this schema, quoted for SQL."""
        return f"{_quote(self.schema)}.{_quote(table)}"


def find_stabilize_tables(conn: Any, schema: str | None) -> StabilizeTables | None:
    """Stabilize's tables in ``schema`` (else where ``events`` resolves on the search_path),
    or None when there is no Stabilize ``events`` table (an unrelated table of that name included)."""
    where = table_schema(conn, EVENTS, schema)
    if where is None:
        return None
    event_columns = table_columns(conn, where, EVENTS)
    if not STABILIZE_EVENT_COLUMNS <= event_columns:
        return None
    return StabilizeTables(
        schema=where,
        has_schema_version="schema_version" in event_columns,
        has_snapshots=STABILIZE_SNAPSHOT_COLUMNS <= table_columns(conn, where, "snapshots"),
        has_subscriptions=STABILIZE_SUBSCRIPTION_COLUMNS <= table_columns(conn, where, "event_subscriptions"),
    )


def has_event_log(conn: Any, tables: StabilizeTables) -> bool:
    """Whether our ``event_log`` exists beside Stabilize's ``events``."""
    return table_schema(conn, EVENT_LOG, tables.schema) is not None


def pending_range(conn: Any, tables: StabilizeTables) -> tuple[int, int, int] | None:
    """Count, first and last sequence of the Stabilize events ``event_log`` lacks, or None."""
    if has_event_log(conn, tables):
        text = (
            f"SELECT count(*), min(sequence), max(sequence) FROM {tables.qualified(EVENTS)} e "
            f"WHERE NOT EXISTS (SELECT 1 FROM {tables.qualified(EVENT_LOG)} l WHERE l.sequence = e.sequence)"
        )
    else:
        text = f"SELECT count(*), min(sequence), max(sequence) FROM {tables.qualified(EVENTS)}"
    count, first, last = conn.execute(text).fetchone()
    return (int(count), int(first), int(last)) if count else None


def upgraded(conn: Any, tables: StabilizeTables) -> bool:
    """Whether ``event_log`` holds Stabilize's last event (same sequence and id): the upgrade
    copies in sequence order, so then it holds them all. True for an empty ``events``."""
    last = conn.execute(
        f"SELECT sequence, event_id FROM {tables.qualified(EVENTS)} ORDER BY sequence DESC LIMIT 1"
    ).fetchone()
    if last is None:
        return True
    if not has_event_log(conn, tables):
        return False
    ours = conn.execute(
        f"SELECT event_id FROM {tables.qualified(EVENT_LOG)} WHERE sequence = %s", (last[0],)
    ).fetchone()
    return ours is not None and ours[0] == last[1]


def refuse_unupgraded(conn: Any, schema: str | None, where: str) -> None:
    """Raise `SchemaError` if Stabilize's ``events`` (in ``schema``, else on the search_path)
    holds events our ``event_log`` beside it does not: a store opened there would show a
    history without them. ``where`` is the database as shown to the user (no password).

    Reads only; leaves ``conn`` (autocommit or not) without an open transaction of its own.
    """
    tables = find_stabilize_tables(conn, schema)
    if tables is None or upgraded(conn, tables):
        return
    missing = pending_range(conn, tables)
    if missing is None:
        detail = f"its table {EVENT_LOG} holds other events at the sequences of Stabilize's table {EVENTS}"
    else:
        count, first, last = missing
        detail = (
            f"Stabilize's table {tables.schema}.{EVENTS} holds {count:,} events (sequences {first:,} to "
            f"{last:,}) that the stabilize-events table {EVENT_LOG} does not hold yet"
        )
    raise SchemaError(
        f"{where} is a Stabilize events database that has not been upgraded: {detail}, so this store "
        f"would show an incomplete history; nothing was changed. Copy the events over first with: "
        f"stabilize-events upgrade 'postgresql://USER:PASSWORD@{where.split('@', 1)[-1]}' (a dry run that "
        f"reports what it would do; add --apply to upgrade; the tables are looked up on the URL's "
        f"search_path, e.g. ?options=-csearch_path%3D{tables.schema})"
    )


__all__ = [
    "POSTGRES_SCHEMES",
    "StabilizeTables",
    "find_stabilize_tables",
    "has_event_log",
    "is_postgres_url",
    "pending_range",
    "refuse_unupgraded",
    "table_columns",
    "table_schema",
    "upgraded",
]
