"""`SqliteEventStore`: events in an SQLite file (or in SQLite's memory).

Durability (``synchronous``):

- ``"NORMAL"`` (default): WAL mode, synced at checkpoints. A committed append
  survives a crash of the process; an OS crash or power loss may lose the last
  commits, never corrupting the file.
- ``"FULL"``: every commit is synced to disk before ``append`` returns, so it
  survives power loss too; slower.

Transactions: ``append(event, connection=conn)`` with an ``sqlite3.Connection``
on the same database file writes the event inside ``conn``'s transaction, so
it commits or rolls back with the caller's own writes (Stabilize's workflow
store passes its connection this way).

Concurrency: threads share one store; several processes may append to one
file. A writer that finds the file locked waits up to ``busy_timeout_ms``
(`defaults.SQLITE_BUSY_TIMEOUT_MS`, 5 s) and then raises `StoreError`.

Defaults of the keyword options are `stabilize_events.defaults`, which reads them
from the Rust core (``_core.DEFAULT_*``), so each is written in one place.
"""

from __future__ import annotations

import os
from typing import Any

from stabilize_events import stabilize_bridge
from stabilize_events._core import Event, NativeStore
from stabilize_events.defaults import (
    MAX_PAYLOAD_BYTES,
    SQLITE_BUSY_TIMEOUT_MS,
    SQLITE_COALESCE_WAL_WRITES,
    SQLITE_DECODE_AHEAD,
    SQLITE_MMAP_READS,
    SQLITE_PAGE_SIZE,
    SQLITE_SPLIT_READS,
    SQLITE_SYNCHRONOUS,
)
from stabilize_events.store.caller_connection import CallerConnections
from stabilize_events.store.native import NativeEventStore
from stabilize_events.upgrade.source import refuse_unupgraded


def _check_upgraded(url: Any, busy_timeout_ms: Any) -> None:
    """Refuse a Stabilize events database not upgraded yet (`refuse_unupgraded`)."""
    ok = isinstance(busy_timeout_ms, int) and not isinstance(busy_timeout_ms, bool) and busy_timeout_ms >= 0
    refuse_unupgraded(url, (busy_timeout_ms if ok else SQLITE_BUSY_TIMEOUT_MS) / 1000)


class SqliteEventStore(NativeEventStore):
    """An event store in an SQLite database.

    ``connection_string`` is what the reference takes: a URL
    (``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:``), a plain path (``events.db``, relative to the current
    directory, or ``/abs/dir/events.db``; a `pathlib.Path` too) or ``:memory:``.
    A relative path is resolved once, when the store opens. With ``create_tables``
    (the default) missing tables are created; without it the database must
    already hold an event store.
    ``page_size`` applies when the file is created: each single-event commit
    writes one page per index, so small pages keep `append` fast. A payload
    that encodes to more than ``max_payload_bytes`` is refused with `PayloadError`.

    How a large read (hundreds of events or more) is done:

    - ``decode_ahead`` (default on): its payloads are decoded while its later rows are
      still being read on a second thread, which hides most of the decoding when the
      caller uses the payloads. Turn it off to read many events without their payloads:
      each is then decoded when its ``data`` is first read.
    - ``split_reads`` (default on): the rows of a large read are read on two threads.
      Off, every read runs on the calling thread alone.
    - ``mmap_reads`` (default off): read connections map the first GiB of the file into
      memory, so a process's first large read runs about a tenth faster, nearly as fast as
      its later ones (without the map, each connection first copies every page it reads
      into a cache of its own, bounded to 32 MB). The price: an I/O error while reading
      the file (a failing disk, a file truncated by another program) stops the process
      with ``SIGBUS`` instead of raising `StoreError`, and the pages a read touches count
      in the process's resident memory (a rebuild of a workflow spread over a 200 MB file
      grows it by about 200 MB rather than 34 MB).

    ``coalesce_wal_writes`` (default on) writes each commit's WAL frames with one system
    call instead of two per page (see ``src/store/sqlite/wal_vfs.rs``); off, SQLite's own
    file layer writes them.

    A file whose Stabilize ``events`` table holds events our tables do not is
    refused with `SchemaError`, naming the command that copies them over
    (``stabilize-events upgrade URL``); an empty Stabilize table is no reason.
    """

    def __init__(
        self,
        connection_string: str | os.PathLike[str],
        create_tables: bool = True,
        *,
        synchronous: str = SQLITE_SYNCHRONOUS,
        busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        page_size: int = SQLITE_PAGE_SIZE,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        decode_ahead: bool = SQLITE_DECODE_AHEAD,
        split_reads: bool = SQLITE_SPLIT_READS,
        coalesce_wal_writes: bool = SQLITE_COALESCE_WAL_WRITES,
        mmap_reads: bool = SQLITE_MMAP_READS,
    ) -> None:
        # A Path becomes its text; how the text is read is decided in one place (Location::parse).
        if isinstance(connection_string, os.PathLike):
            connection_string = os.fspath(connection_string)
        # Before opening, which creates our tables: Stabilize's events not copied
        # over yet would read as a missing (empty or partial) history.
        _check_upgraded(connection_string, busy_timeout_ms)
        super().__init__(
            NativeStore.sqlite(
                connection_string,
                create_tables=create_tables,
                synchronous=synchronous,
                busy_timeout_ms=busy_timeout_ms,
                page_size=page_size,
                max_payload_bytes=max_payload_bytes,
                decode_ahead=decode_ahead,
                split_reads=split_reads,
                coalesce_wal_writes=coalesce_wal_writes,
                mmap_reads=mmap_reads,
            )
        )
        #: As given (a Path as its text): the recorder compares it with the workflow store's URL.
        self._connection_string: str = connection_string
        self._callers = CallerConnections(self._core, self._core.database_file)
        if self._core.database_file is not None:
            stabilize_bridge.share_files_with_stabilize()

    @property
    def decode_ahead(self) -> bool:
        """Whether a large read decodes its payloads as its rows arrive (the ``decode_ahead`` option)."""
        return self._core.decode_ahead

    def can_join(self, connection: Any) -> bool:
        """Whether ``connection`` is an ``sqlite3.Connection`` on this store's database file,
        so that ``append(..., connection=connection)`` writes inside its transaction."""
        return self._callers.shares_database(connection)

    def _append_through(self, connection: Any, events: list[Any]) -> list[Event]:
        return self._callers.append(connection, events)

    def __repr__(self) -> str:
        return f"SqliteEventStore({self._connection_string!r})"
