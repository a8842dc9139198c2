"""Stabilize's event tables in an SQLite file: finding them, and what of them ours hold.

Stabilize 0.33's `SqliteEventStore` keeps its history in ``events`` (sequence
``INTEGER PRIMARY KEY AUTOINCREMENT``, payload as JSON text), with
``snapshots`` and ``event_subscriptions`` beside it. This module only reads;
it imports nothing of the store, so `SqliteEventStore` can run
`refuse_unupgraded` before it opens a file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from stabilize_events._core import sqlite_database_path
from stabilize_events.defaults import SQLITE_BUSY_TIMEOUT_MS
from stabilize_events.errors import InvalidArgumentError, SchemaError, StoreOpenError

#: Stabilize's tables.
EVENTS = "events"
SNAPSHOTS = "snapshots"
SUBSCRIPTIONS = "event_subscriptions"

#: Ours (see ``src/store/sqlite/schema.rs``).
EVENT_LOG = "event_log"
EVENT_SNAPSHOT = "event_snapshot"
EVENT_SUBSCRIPTION = "event_subscription"

#: Columns that make a table named ``events`` Stabilize's (an application may
#: have an unrelated table of that name; it is never touched).
STABILIZE_EVENT_COLUMNS = frozenset(
    {
        "sequence",
        "event_id",
        "event_type",
        "timestamp",
        "entity_type",
        "entity_id",
        "workflow_id",
        "version",
        "data",
        "correlation_id",
        "causation_id",
        "actor",
        "source_handler",
    }
)
STABILIZE_SNAPSHOT_COLUMNS = frozenset(
    {"entity_type", "entity_id", "workflow_id", "version", "sequence", "state", "state_hash"}
)
STABILIZE_SUBSCRIPTION_COLUMNS = frozenset(
    {"id", "event_types", "entity_filter", "last_sequence", "webhook_url"}
)

_URL_PREFIX = "sqlite:///"


def database_path(url: str) -> Path | None:
    """The absolute file ``url`` names (a URL or plain path, read as `SqliteEventStore`
    reads it); None for an in-memory database.

    Raises `InvalidArgumentError` for anything else.
    """
    return sqlite_database_path(url)


def url_of(path: Path) -> str:
    """The ``sqlite:///`` URL of an absolute path, usable from any directory."""
    return f"{_URL_PREFIX}{path}"


def connect(
    path: Path, *, write: bool, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000
) -> sqlite3.Connection:
    """An autocommit connection on an existing SQLite file (never creates one).

    Read-only unless ``write``. Raises `StoreOpenError` if ``path`` is missing
    or is not an SQLite database.
    """
    if not path.is_file():
        raise StoreOpenError(
            f"no database file at {path}; check the URL (sqlite:///relative.db is relative to the "
            f"current directory, sqlite:////absolute.db is absolute)"
        )
    mode = "rw" if write else "ro"
    try:
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode={mode}",
            uri=True,
            timeout=timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        # Reading the schema is the first access that fails on a file that is not SQLite.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StoreOpenError(f"{path} cannot be opened as an SQLite database: {exc}") from None
    return conn


def columns(conn: sqlite3.Connection, table: str) -> frozenset[str]:
    """The column names of ``table`` (empty if there is no such table)."""
    return frozenset(str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")'))


def has_stabilize_events(conn: sqlite3.Connection) -> bool:
    """Whether the database holds Stabilize's ``events`` table."""
    return STABILIZE_EVENT_COLUMNS <= columns(conn, EVENTS)


def has_stabilize_snapshots(conn: sqlite3.Connection) -> bool:
    """Whether the database holds Stabilize's ``snapshots`` table."""
    return STABILIZE_SNAPSHOT_COLUMNS <= columns(conn, SNAPSHOTS)


def has_stabilize_subscriptions(conn: sqlite3.Connection) -> bool:
    """Whether the database holds Stabilize's ``event_subscriptions`` table."""
    return STABILIZE_SUBSCRIPTION_COLUMNS <= columns(conn, SUBSCRIPTIONS)


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` exists."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return found.fetchone() is not None


@dataclass(frozen=True)
class Pending:
    """Stabilize events that ``event_log`` does not hold: how many, and their sequence range."""

    count: int
    first_sequence: int
    last_sequence: int


def upgraded(conn: sqlite3.Connection) -> bool:
    """Whether ``event_log`` holds every event of Stabilize's ``events`` table (true
    when there is no such table, or it is empty).

    Cheap enough to run on every open: the upgrade copies in sequence order, so
    once ``event_log`` holds Stabilize's last event (same sequence, same id) it
    holds them all.
    """
    if not has_stabilize_events(conn):
        return True
    last = conn.execute(f"SELECT sequence, event_id FROM {EVENTS} ORDER BY sequence DESC LIMIT 1").fetchone()
    if last is None:
        return True
    if not has_table(conn, EVENT_LOG):
        return False
    ours = conn.execute(f"SELECT event_id FROM {EVENT_LOG} WHERE sequence = ?", (last[0],)).fetchone()
    return ours is not None and ours[0] == last[1]


def pending(conn: sqlite3.Connection) -> Pending | None:
    """The Stabilize events ``event_log`` does not hold (by sequence), or None if there are none."""
    if not has_stabilize_events(conn):
        return None
    if has_table(conn, EVENT_LOG):
        sql = (
            f"SELECT count(*), min(sequence), max(sequence) FROM {EVENTS} e "
            f"WHERE NOT EXISTS (SELECT 1 FROM {EVENT_LOG} l WHERE l.sequence = e.sequence)"
        )
    else:
        sql = f"SELECT count(*), min(sequence), max(sequence) FROM {EVENTS}"
    count, first, last = conn.execute(sql).fetchone()
    if not count:
        return None
    return Pending(int(count), int(first), int(last))


def refuse_unupgraded(url: str, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """Raise `SchemaError` if ``url`` names a file whose Stabilize ``events`` table
    holds events that ``event_log`` does not: opening it would show a history
    without them. The message names the command that copies them.

    Does nothing for ``:memory:``, a missing file or a file that cannot be read
    as SQLite (opening the store reports those). It reads through a read-only
    ``sqlite3`` connection (the same SQLite library as the store's, so stores of
    this process may have the file open meanwhile).
    """
    if not isinstance(url, str):
        return
    try:
        path = database_path(url)
    except InvalidArgumentError:
        return
    if path is None or not path.is_file():
        return
    try:
        # Read-only: closing it then never checkpoints or removes the WAL.
        conn = connect(path, write=False, timeout_s=timeout_s)
    except StoreOpenError:
        return
    try:
        if upgraded(conn):
            return
        missing = pending(conn)
    except sqlite3.Error:
        return  # unreadable here: the store's own open reports what is wrong
    finally:
        conn.close()
    if missing is None:  # an event_log row at Stabilize's last sequence, another event: a conflict
        detail = f"its table {EVENT_LOG} holds other events at the sequences of Stabilize's table {EVENTS}"
    else:
        detail = (
            f"Stabilize's table {EVENTS} holds {missing.count:,} events (sequences "
            f"{missing.first_sequence:,} to {missing.last_sequence:,}) that the stabilize-events "
            f"table {EVENT_LOG} does not hold yet"
        )
    raise SchemaError(
        f"{path} is a Stabilize events database that has not been upgraded: {detail}, so this store "
        f"would show an incomplete history; nothing was changed. Copy the events over first with: "
        f"stabilize-events upgrade {url_of(path)} (a dry run that reports what it would do; add "
        f"--apply to upgrade)"
    )


__all__ = [
    "EVENTS",
    "EVENT_LOG",
    "EVENT_SNAPSHOT",
    "EVENT_SUBSCRIPTION",
    "SNAPSHOTS",
    "STABILIZE_EVENT_COLUMNS",
    "STABILIZE_SNAPSHOT_COLUMNS",
    "STABILIZE_SUBSCRIPTION_COLUMNS",
    "SUBSCRIPTIONS",
    "Pending",
    "columns",
    "connect",
    "database_path",
    "has_stabilize_events",
    "has_stabilize_snapshots",
    "has_stabilize_subscriptions",
    "has_table",
    "pending",
    "refuse_unupgraded",
    "upgraded",
    "url_of",
]
