"""Appending through a caller's own SQLite connection, inside the caller's transaction.

Stabilize's workflow store binds a transaction per handler and passes its
``sqlite3.Connection`` to ``append(event, connection=...)``, so that an event
commits or rolls back with the workflow state it describes. The Rust core
encodes the row (`NativeStore.sqlite_row`) and the caller's connection runs
the insert (`_core.SQLITE_INSERT_ROW`): the event is then part of whatever
that connection commits or rolls back, and its sequence is the table's next
rowid, as for every other append. The upgrade from Stabilize's tables
(`stabilize_events.upgrade`) writes through the same path with the sequences
the events already had.

Only a connection on this store's own database file can be joined: any other
(another file, an in-memory database, a non-SQLite connection) is refused
before anything is written.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stabilize_events._core import SQLITE_INSERT_ROW, Event, NativeStore
from stabilize_events.errors import ArgumentTypeError, DuplicateEventError, InvalidArgumentError

#: The savepoint that makes a batch written through a caller's connection all or nothing.
_SAVEPOINT = "stabilize_events_append"


def _file_identity(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class CallerConnections:
    """Writes a store's events through connections its callers pass in.

    ``database_file`` is the store's file (None for an in-memory database,
    which no other connection can reach).
    """

    def __init__(self, core: NativeStore, database_file: Path | None) -> None:
        self._core = core
        self._file = database_file
        self._identity = _file_identity(database_file) if database_file is not None else None
        # Connections already found to be on this store's file. Held strongly: a
        # held object's id cannot be reused, and sqlite3 connections take no weak refs.
        self._known: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def shares_database(self, connection: Any) -> bool:
        """Whether ``connection`` is an ``sqlite3.Connection`` on this store's database file."""
        if not isinstance(connection, sqlite3.Connection) or self._identity is None:
            return False
        if self._known.get(id(connection)) is connection:
            return True
        if _file_identity(self._main_file(connection) or "") != self._identity:
            return False
        with self._lock:
            if len(self._known) >= 256:  # connections come and go: keep the recent ones
                self._known.clear()
            self._known[id(connection)] = connection
        return True

    @staticmethod
    def _main_file(connection: sqlite3.Connection) -> str | None:
        for _seq, name, file in connection.execute("PRAGMA database_list"):
            if name == "main":
                return str(file) or None
        return None

    def _check(self, connection: Any) -> None:
        if not isinstance(connection, sqlite3.Connection):
            raise ArgumentTypeError(
                f"connection must be an sqlite3.Connection on this store's database, not "
                f"{type(connection).__qualname__}; nothing was written (pass connection=None to append "
                f"in the store's own transaction)"
            )
        if self.shares_database(connection):
            return
        if self._file is None:
            raise InvalidArgumentError(
                "an in-memory SQLite event store cannot write through a caller's connection (its database "
                "exists only inside the store); nothing was written. Open the store on the caller's "
                "database file, or pass connection=None"
            )
        theirs = self._main_file(connection) or "an in-memory database"
        raise InvalidArgumentError(
            f"connection is on {theirs}, not on this store's database {self._file}; nothing was written. "
            f"Open the event store on the connection's database to record inside its transactions, "
            f"or pass connection=None to append in the store's own transaction"
        )

    def append(
        self, connection: Any, events: Sequence[Any], sequences: Sequence[int] | None = None
    ) -> list[Event]:
        """Insert ``events`` through ``connection``, all or nothing; return them stored.

        Nothing is committed here: the rows become durable when the caller
        commits, and vanish if it rolls back. Encoding errors are raised before
        any row is written.

        ``sequences``, one per event, stores each event at that sequence instead
        of the next free one (used to carry events over from another table with
        their sequences); a sequence already taken is refused with
        `DuplicateEventError` and nothing of the append is written.
        """
        self._check(connection)
        if sequences is not None and len(sequences) != len(events):
            raise InvalidArgumentError(
                f"got {len(sequences)} sequences for {len(events)} events; nothing was written "
                f"(give one sequence per event, or none)"
            )
        rows = [self._core.sqlite_row(e) for e in events]
        batch = len(rows) > 1
        if batch and sequences is not None:
            # Known sequences: one executemany; on a collision, undone and redone row by row
            # below, which names the row.
            connection.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                connection.executemany(
                    SQLITE_INSERT_ROW,
                    [(at, *params) for at, (_e, params) in zip(sequences, rows, strict=True)],
                )
            except sqlite3.IntegrityError:
                self._undo(connection, batch)
            except BaseException:
                self._undo(connection, batch)
                raise
            else:
                connection.execute(f"RELEASE {_SAVEPOINT}")
                return [
                    self._core.stored_at(event, at) for at, (event, _p) in zip(sequences, rows, strict=True)
                ]
        stored: list[Event] = []
        try:
            if batch:
                connection.execute(f"SAVEPOINT {_SAVEPOINT}")
            for i, (event, params) in enumerate(rows):
                wanted = None if sequences is None else sequences[i]
                cursor = connection.execute(SQLITE_INSERT_ROW, (wanted, *params))
                at = wanted if wanted is not None else int(cursor.lastrowid or 0)
                stored.append(self._core.stored_at(event, at))
            if batch:
                connection.execute(f"RELEASE {_SAVEPOINT}")
        except sqlite3.IntegrityError as error:
            self._undo(connection, batch)
            if "event_id" in str(error):
                raise DuplicateEventError(
                    f"an event with event_id {rows[len(stored)][0].event_id} is already stored "
                    f"(in {self._file}); nothing of this append was written"
                ) from None
            if sequences is not None and "sequence" in str(error):
                raise DuplicateEventError(
                    f"sequence {sequences[len(stored)]} is already taken by another event "
                    f"(in {self._file}); nothing of this append was written"
                ) from None
            raise
        except BaseException:
            self._undo(connection, batch)
            raise
        return stored

    @staticmethod
    def _undo(connection: sqlite3.Connection, batch: bool) -> None:
        if batch:
            connection.execute(f"ROLLBACK TO {_SAVEPOINT}")
            connection.execute(f"RELEASE {_SAVEPOINT}")


__all__ = ["CallerConnections"]
