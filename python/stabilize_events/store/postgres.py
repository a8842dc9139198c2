"""`PostgresEventStore`: events in a PostgreSQL database, through psycopg 3 and its pool.

Install with ``pip install 'stabilize-events[postgres]'``.

Rows: payloads are encoded by the Rust core (the codec the SQLite store uses)
and stored as ``bytea``; timestamps as UTC microseconds. The tables are ours
(``event_log``, ``event_snapshot``, ``event_subscription``, ``event_store_meta``
and the sequence ``event_log_sequence``), beside Stabilize's ``events``.

Sequences: every append reserves its block of sequences from
``event_log_sequence`` under a short session advisory lock, so a batch gets
consecutive sequences and sequences are unique and increasing across
processes and machines. Before releasing that lock the appending transaction
takes a transaction-level advisory lock *tagging* its first sequence; the tag
disappears only once the transaction has committed (or rolled back).

Commit-safe reads: ``get_events_since`` (used by catch-up reads,
`ProjectionRunner` and durable subscriptions) returns only events below the
*horizon*: the lowest sequence still tagged by an open transaction (or the
next sequence to be reserved). An event whose transaction commits after a
higher sequence became visible is therefore never stepped over: readers wait
for it. Only transactions that appended events hold the horizon back (unlike
``pg_snapshot_xmin``, which any open transaction on the server holds back).
The commit cursor of `get_events_since_committed` is thus the sequence itself.

Live delivery: each append notifies the channel `notify_channel` when it
commits; `wait_for_events` blocks on it (LISTEN) until then.

Caller transactions: ``append(event, connection=conn)`` with a psycopg 3
connection on this store's database writes inside ``conn``'s transaction
(see `can_join`); it commits or rolls back with it.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import itemgetter
from typing import Any

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import tuple_row
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "PostgresEventStore needs psycopg 3 and psycopg_pool, which are not installed "
        f"({_missing}); install them with: pip install 'stabilize-events[postgres]'"
    ) from _missing

from stabilize_events import _core
from stabilize_events._core import Event, EventMetadata, NativeStore
from stabilize_events.defaults import (
    MAX_PAYLOAD_BYTES,
    POSTGRES_CONNECT_TIMEOUT,
    POSTGRES_MAX_POOL_SIZE,
    POSTGRES_MIN_POOL_SIZE,
    POSTGRES_POOL_TIMEOUT,
    READ_LIMIT,
)
from stabilize_events.errors import (
    ArgumentTypeError,
    ConcurrencyError,
    CorruptEventError,
    DuplicateEventError,
    InvalidArgumentError,
    SchemaError,
    StoreClosedError,
    StoreError,
    StoreOpenError,
)
from stabilize_events.store.capabilities import (
    FoldsWorkflows,
    KeepsSnapshots,
    KeepsSubscriptions,
    WaitsForEvents,
)
from stabilize_events.store.interface import EventQuery, EventStore, require_event_list
from stabilize_events.store.subscription_records import subscription_config, subscription_from_row
from stabilize_events.types import CURRENT_SCHEMA_VERSION, EntityType, EventType, parse_event_type
from stabilize_events.upgrade.postgres_source import refuse_unupgraded

#: The version of the table layout this build reads and writes (in ``event_store_meta``).
POSTGRES_SCHEMA_VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

#: The savepoint that makes an append through a caller's connection all or nothing.
_SAVEPOINT = "stabilize_events_append"

#: An append whose rows carry more bytes than this is sent statement by statement rather than
#: pipelined: libpq's pipeline can stop with part of a large message still in its buffer while
#: it waits for the server's answer, and the server waits for the rest of the message (a hang).
#: Above this size the round trips saved are nothing beside the transfer.
_PIPELINE_MAX_BYTES = 256 * 1024

#: Appends of at least this many events send their rows by binary COPY (two more round trips,
#: a faster way in for the server); shorter ones are one pipelined round trip.
_COPY_MIN_ROWS = 64

#: Where the payload (bytes) is in a row as `encode_rows` gives it.
_DATA_FIELD = 7

#: Advisory lock keys are ``(namespace << 40) | sequence``: 2**40 sequences per store.
_SEQUENCE_BITS = 40

#: The commit horizon set by `PostgresEventStore._fetch` before its query: below it every
#: reserved sequence is committed or rolled back.
_HORIZON = "current_setting('stabilize_events.horizon')::bigint"

_COLUMNS = (
    "sequence, event_id, event_type, timestamp_us, entity_type, entity_id, workflow_id, version, "
    "data, correlation_id, causation_id, actor, source_handler, schema_version"
)

_DDL = """
CREATE SEQUENCE IF NOT EXISTS {s}event_log_sequence AS BIGINT;
CREATE TABLE IF NOT EXISTS {s}event_log (
    sequence BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    timestamp_us BIGINT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    data BYTEA NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT,
    actor TEXT NOT NULL,
    source_handler TEXT,
    schema_version BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_log_workflow ON {s}event_log (workflow_id, sequence);
CREATE INDEX IF NOT EXISTS event_log_entity ON {s}event_log (entity_id, sequence);
CREATE INDEX IF NOT EXISTS event_log_timestamp ON {s}event_log (timestamp_us);
CREATE TABLE IF NOT EXISTS {s}event_snapshot (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    workflow_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    state BYTEA NOT NULL,
    state_hash TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    max_event_us BIGINT,
    PRIMARY KEY (entity_type, entity_id, sequence)
);
CREATE TABLE IF NOT EXISTS {s}event_subscription (
    id TEXT PRIMARY KEY,
    config BYTEA NOT NULL,
    last_sequence BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}event_store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO {s}event_store_meta (key, value) VALUES ('schema_version', '{version}')
    ON CONFLICT (key) DO NOTHING;
"""

_TABLES = ("event_log", "event_snapshot", "event_subscription", "event_store_meta", "event_log_sequence")


def setup_ddl(schema: str | None = None) -> str:
    """The DDL that creates this store's tables (what ``create_tables=True`` runs), for an
    operator who applies migrations separately; in ``schema`` when given."""
    prefix = f"{_quote_ident(schema)}." if schema else ""
    return _DDL.format(s=prefix, version=POSTGRES_SCHEMA_VERSION).strip()


def allocation_key(schema: str) -> int:
    """The advisory lock key under which appends to the event log in ``schema`` reserve their
    sequences (and above which they tag them, see the module doc); also names the channel."""
    namespace = zlib.crc32(f"{schema}.event_log".encode()) & 0x7FFFFF
    return namespace << _SEQUENCE_BITS


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def _now_us() -> int:
    return _micros(datetime.now(UTC))


def open_error(connection_string: str, error: BaseException) -> StoreOpenError:
    """A `StoreOpenError` naming why the server refused or could not be reached."""
    text = " ".join(str(error).split())
    where = redact(connection_string)
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        hint = "check the user and password in the connection string (or PGPASSWORD / ~/.pgpass)"
    elif "does not exist" in low and "database" in low:
        hint = "create the database (createdb NAME) or name an existing one in the connection string"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low:
        hint = "start the server, or fix the host and port in the connection string"
    elif "could not translate host name" in low or "name or service not known" in low:
        hint = "fix the host name in the connection string"
    else:
        hint = "check the connection string and that the server accepts this user"
    return StoreOpenError(f"cannot connect to PostgreSQL at {where}: {text} ({hint})")


def redact(connection_string: str) -> str:
    """The connection string without its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(connection_string)
    except Exception:
        return "<unparsable connection string>"
    if "password" in params:
        params["password"] = "***"
    host = str(params.get("host", "localhost"))
    port = str(params.get("port", "5432"))
    user = str(params.get("user", ""))
    db = str(params.get("dbname", user))
    return f"{user + '@' if user else ''}{host}:{port}/{db}"


class PostgresEventStore(EventStore, FoldsWorkflows, KeepsSnapshots, KeepsSubscriptions, WaitsForEvents):
    """An event store in a PostgreSQL database (psycopg 3, pooled connections).

    Besides the contract it folds workflows, keeps snapshots and durable subscriptions, and
    wakes waiting readers on commits; see `stabilize_events.store.capabilities`.

    ``connection_string`` is a libpq URL or key=value string
    (``postgresql://user:password@host:5432/dbname``). With ``create_tables``
    the store creates its tables (in ``schema`` when given, creating the schema
    too); without it (the default, as in the reference) they must exist, or
    `SchemaError` names the DDL to apply (`setup_ddl`). ``schema`` is where the
    tables live; without it they are looked up on the connection's search_path
    and `resolved_schema` tells where they were found.

    Pool: between ``min_pool_size`` and ``max_pool_size`` connections (each
    thread uses one at a time); ``connect_timeout`` seconds to reach the server
    and ``pool_timeout`` seconds to wait for a free connection. A payload that
    encodes to more than ``max_payload_bytes`` is refused with `PayloadError`.

    Unreachable server, wrong password, missing database: `StoreOpenError`
    naming the cause. After a server restart the pool reconnects by itself.
    """

    def __init__(
        self,
        connection_string: str,
        create_tables: bool = False,
        schema: str | None = None,
        *,
        min_pool_size: int = POSTGRES_MIN_POOL_SIZE,
        max_pool_size: int = POSTGRES_MAX_POOL_SIZE,
        connect_timeout: float = POSTGRES_CONNECT_TIMEOUT,
        pool_timeout: float = POSTGRES_POOL_TIMEOUT,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if not isinstance(connection_string, str):
            raise ArgumentTypeError(
                f"connection_string must be a str (postgresql://user:password@host/dbname), not "
                f"{type(connection_string).__qualname__}"
            )
        if schema is not None and (not isinstance(schema, str) or not schema):
            raise InvalidArgumentError(f"schema must be a non-empty str or None, not {schema!r}")
        if not 1 <= min_pool_size <= max_pool_size:
            raise InvalidArgumentError(
                f"pool sizes must satisfy 1 <= min_pool_size <= max_pool_size, got {min_pool_size} and "
                f"{max_pool_size}"
            )
        #: As given: compared by integrations with their own connection strings.
        self._connection_string = connection_string
        self._schema = schema
        self._codec = NativeStore.memory(max_payload_bytes)
        self._closed = False
        self._lock = threading.Lock()
        self._known_connections: dict[int, Any] = {}
        # Reach the server once directly: its refusal names the cause (a pool would retry it away).
        try:
            probe = psycopg.connect(connection_string, connect_timeout=max(1, round(connect_timeout)))
        except psycopg.Error as error:
            raise open_error(connection_string, error) from None
        try:
            with probe:
                # Before anything is created: a Stabilize history not carried over would look empty.
                refuse_unupgraded(probe, schema, redact(connection_string))
                if create_tables:
                    self._create_tables(probe)
                self._resolved_schema = self._verify_schema(probe)
                prefix = f"{_quote_ident(self._resolved_schema)}."
                self._identity = self._identity_of(probe, prefix)
        except psycopg.Error as error:
            raise StoreOpenError(
                f"cannot open the event store at {redact(connection_string)}: {error} "
                f"(check that this user may read and write the event tables)"
            ) from None
        self._prefix = prefix
        self._alloc_key = allocation_key(self._resolved_schema)
        self._channel = f"stabilize_events_{self._alloc_key >> _SEQUENCE_BITS}"
        self._sql = Statements(prefix, self._alloc_key)
        self._pool: ConnectionPool[Any] = ConnectionPool(
            connection_string,
            min_size=min_pool_size,
            max_size=max_pool_size,
            timeout=pool_timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            open=True,
            name=f"stabilize-events {redact(connection_string)}",
        )

    # -- opening -----------------------------------------------------------------

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Several processes may open the store at once: CREATE ... IF NOT EXISTS races otherwise.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x5E5E_0000_0001,))
            if self._schema:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)))
            conn.execute(setup_ddl(self._schema).encode())

    def _verify_schema(self, conn: psycopg.Connection[Any]) -> str:
        """The schema holding every table of this store; `SchemaError` naming what is missing."""
        if self._schema:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)).fetchone()
            if found is None:
                raise SchemaError(
                    f"schema {self._schema!r} does not exist in database {conn.info.dbname!r}; "
                    f"create it and the event tables (PostgresEventStore(..., create_tables=True), or "
                    f"apply setup_ddl({self._schema!r}) as the migration operator)"
                )
        namespaces: dict[str, str | None] = {}
        for table in _TABLES:
            name = f"{_quote_ident(self._schema)}.{table}" if self._schema else table
            row = conn.execute(
                "SELECT (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s))",
                (name,),
            ).fetchone()
            namespaces[table] = None if row is None else row[0]
        missing = [t for t, nsp in namespaces.items() if nsp is None]
        if missing:
            where = f"schema {self._schema!r}" if self._schema else "the connection's search_path"
            raise SchemaError(
                f"the event store tables are missing in {where} of database {conn.info.dbname!r}: "
                f"{', '.join(missing)}; create them with PostgresEventStore(..., create_tables=True) or "
                f"apply this DDL as the migration operator:\n\n{setup_ddl(self._schema)}"
            )
        distinct = sorted({nsp for nsp in namespaces.values() if nsp is not None})
        if len(distinct) > 1:
            split = ", ".join(f"{t} in {nsp}" for t, nsp in namespaces.items())
            raise SchemaError(
                f"the event store tables resolve to more than one schema on this connection ({split}); "
                f"a table earlier on the search_path shadows another. Pass schema= or fix the search_path"
            )
        resolved = distinct[0]
        row = conn.execute(
            sql.SQL("SELECT value FROM {}.event_store_meta WHERE key = 'schema_version'").format(
                sql.Identifier(resolved)
            )
        ).fetchone()
        version = None if row is None else row[0]
        if version != str(POSTGRES_SCHEMA_VERSION):
            raise SchemaError(
                f"the event store in schema {resolved!r} has layout version {version!r}, this build reads "
                f"version {POSTGRES_SCHEMA_VERSION}; open it with the stabilize-events release that wrote "
                f"it, or upgrade this package"
            )
        return resolved

    @staticmethod
    def _identity_of(conn: psycopg.Connection[Any], prefix: str) -> tuple[Any, ...]:
        # Plain tuples whatever row factory the connection has (Stabilize's pools use dict rows).
        row = (
            conn.cursor(row_factory=tuple_row)
            .execute(
                f"SELECT (SELECT system_identifier FROM pg_control_system()), current_database(), "
                f"'{prefix}event_log'::regclass::oid"
            )
            .fetchone()
        )
        assert row is not None
        return tuple(row)

    # -- reference API: schema and capabilities -------------------------------------

    def resolved_schema(self) -> str | None:
        """The schema the event tables resolved to when the store opened (compare it with what
        you expect when no ``schema=`` was given: a complete shadow copy of every table earlier
        on the search_path resolves consistently and cannot be refused here)."""
        return self._resolved_schema

    def supports_commit_cursor(self) -> bool:
        """True: `get_events_since_committed` never skips an event committed late."""
        return True

    @property
    def notify_channel(self) -> str:
        """The LISTEN/NOTIFY channel each committed append notifies (payload: its last sequence)."""
        return self._channel

    # -- appends -------------------------------------------------------------------

    def _rows(self, events: Iterable[Any]) -> list[tuple[Event, tuple[Any, ...]]]:
        return encode_rows(self._codec, events)

    def append(
        self, event: Event, connection: Any | None = None, *, expected_version: int | None = None
    ) -> Event:
        """Store one event (one round trip to the server) and return it with its sequence.

        With ``connection`` (a psycopg 3 connection on this store's database) the event is
        written inside that connection's transaction; see `can_join`. ``expected_version``:
        stored only if the entity's latest event has that version (0: none yet), otherwise
        `ConcurrencyError`. An event of another class (Stabilize's) comes back as its own class.
        """
        expected = None
        if expected_version is not None:
            expected = {"__single__": expected_version}
        stored = self._append([event], connection, expected)
        return _as_given(event, stored[0])

    def append_batch(
        self,
        events: list[Event],
        connection: Any | None = None,
        *,
        expected_versions: dict[str, int] | None = None,
    ) -> list[Event]:
        """Store events in one transaction (consecutive sequences), all or nothing.

        ``connection`` and ``expected_versions`` (entity id -> version) as for `append`.
        """
        require_event_list(events)
        given = list(events)
        stored = self._append(given, connection, expected_versions)
        if given and type(given[0]) is not Event:
            return [_as_given(g, s) for g, s in zip(given, stored, strict=True)]
        return stored

    def _append(self, events: Any, connection: Any | None, expected: dict[str, int] | None) -> list[Event]:
        self._check_open()
        rows = self._rows(events)
        if not rows:
            return []
        checks = self._expectations(rows, expected)
        if connection is not None:
            if checks:
                raise InvalidArgumentError(
                    "expected versions cannot be checked inside a caller's transaction; nothing was "
                    "written (pass connection=None to append with expected versions)"
                )
            return self._append_through(connection, rows)
        try:
            with self._pool.connection() as conn:
                try:
                    if len(rows) >= _COPY_MIN_ROWS:
                        first = self._write_copy(conn, rows, checks)
                    else:
                        first = self._write(conn, rows, checks)
                except BaseException:
                    self._recover(conn)
                    raise
        except psycopg.errors.UniqueViolation as error:
            raise _duplicate(error) from None
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise StoreError(
                f"the append did not complete: {error}; nothing of it is stored unless the server "
                f"committed it before the connection broke (look it up with get_event_by_id)"
            ) from None
        return [self._codec.stored_at(e, first + i) for i, (e, _) in enumerate(rows)]

    def _expectations(
        self, rows: list[tuple[Event, tuple[Any, ...]]], expected: dict[str, int] | None
    ) -> list[tuple[str | None, str, int]]:
        if expected is None:
            return []
        if not isinstance(expected, dict):
            raise ArgumentTypeError(
                f"expected_versions must be a dict of entity id to version, not {type(expected).__name__}"
            )
        if "__single__" in expected and len(expected) == 1 and len(rows) == 1:
            event = rows[0][0]
            return [(event.entity_type.value, event.entity_id, _version(expected["__single__"]))]
        return [(None, str(k), _version(v)) for k, v in expected.items()]

    def _write(
        self,
        conn: psycopg.Connection[Any],
        rows: list[tuple[Event, tuple[Any, ...]]],
        checks: list[tuple[str | None, str, int]],
    ) -> int:
        """A short append: every statement in one pipeline (one round trip); the first sequence."""
        n = len(rows)
        st = self._sql
        columns = [list(c) for c in zip(*(row for _, row in rows), strict=True)]
        reserve = None
        try:
            with _round_trips(conn, rows) as pipe:
                reserve = self._begin_and_reserve(conn, n, checks)
                conn.execute(st.insert, {"n": n, **dict(zip(st.names, columns, strict=True))})
                conn.execute(st.notify, {"channel": self._channel})
                conn.execute("COMMIT")
                pipe.sync()
                row = reserve.fetchone()
        except psycopg.errors.UniqueViolation:
            first = _first_reserved(reserve)
            self._recover(conn)
            if first is not None:
                self._give_back(conn, first, n)
            raise
        assert row is not None
        return int(row[0])

    def _begin_and_reserve(
        self, conn: psycopg.Connection[Any], n: int, checks: list[tuple[str | None, str, int]]
    ) -> psycopg.Cursor[Any]:
        """Queue the start of an append: BEGIN, the version checks, and the reservation of
        ``n`` sequences (the returned cursor gives the first once the pipeline is synced)."""
        st = self._sql
        conn.execute("BEGIN")
        if checks:
            self._check_versions(conn, checks)
        conn.execute(st.lock_alloc)
        reserve = conn.execute(st.reserve, {"n": n})
        conn.execute(st.unlock_alloc)
        return reserve

    def _write_copy(
        self,
        conn: psycopg.Connection[Any],
        rows: list[tuple[Event, tuple[Any, ...]]],
        checks: list[tuple[str | None, str, int]],
    ) -> int:
        """A batch append: sequences reserved (one round trip), the rows sent by binary COPY,
        then NOTIFY and COMMIT (one round trip); the first sequence. COPY is the server's
        fastest way in, and streams however large the rows."""
        n = len(rows)
        st = self._sql
        first = None
        try:
            with conn.pipeline():
                reserve = self._begin_and_reserve(conn, n, checks)
            row = reserve.fetchone()
            assert row is not None
            first = int(row[0])
            with conn.cursor().copy(st.copy) as copy:
                copy.set_types(st.copy_types)
                write = copy.write_row
                for i, (_, values) in enumerate(rows, first):
                    write((i, *values))
            with conn.pipeline():
                conn.execute(st.notify, {"channel": self._channel})
                conn.execute("COMMIT")
        except psycopg.errors.UniqueViolation:
            self._recover(conn)
            if first is not None:
                self._give_back(conn, first, n)
            raise
        return first

    def _give_back(self, conn: psycopg.Connection[Any], first: int, n: int) -> None:
        """Return the sequences of a failed append when no append reserved any after them, so
        that sequences go on without a gap (as in the other stores)."""
        st = self._sql
        try:
            with conn.transaction():
                conn.execute(st.lock_alloc)
                try:
                    conn.execute(st.give_back, {"first": first, "last": first + n - 1})
                finally:
                    conn.execute(st.unlock_alloc)
        except psycopg.Error:
            pass  # a gap then: sequences stay unique and increasing

    def _check_versions(
        self, conn: psycopg.Connection[Any], checks: list[tuple[str | None, str, int]]
    ) -> None:
        """Lock the entities (until commit) and refuse when one is not at its expected version."""
        with conn.pipeline() as pipe:
            for _, entity_id, _ in sorted(checks, key=lambda c: c[1]):
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (entity_id,))
            results = [
                conn.execute(self._sql.latest_version, {"entity_type": t, "entity_id": _esc(i)})
                for t, i, _ in checks
            ]
            pipe.sync()
        for (entity_type, entity_id, wanted), cur in zip(checks, results, strict=True):
            row = cur.fetchone()
            actual = int(row[0]) if row is not None and row[0] is not None else 0
            if actual != wanted:
                raise ConcurrencyError(
                    f"{entity_type or 'entity'} {entity_id} is at version {actual}, not the expected "
                    f"{wanted}: another writer appended first; nothing of this batch was written "
                    f"(reload the entity and retry)"
                )

    def _recover(self, conn: psycopg.Connection[Any]) -> None:
        """After a failed append: roll back and make sure the allocation lock is not kept."""
        if conn.closed or conn.broken:
            return
        try:
            conn.rollback()
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                conn.execute("ROLLBACK")
            conn.execute(self._sql.unlock_alloc_if_held)
        except psycopg.Error:
            conn.close()  # the pool replaces it

    # -- appending through a caller's connection ----------------------------------

    def can_join(self, connection: Any) -> bool:
        """Whether ``connection`` is an open psycopg 3 connection to this store's database (same
        server, database and event table), so that ``append(..., connection=connection)``
        writes inside its transaction."""
        if not isinstance(connection, psycopg.Connection) or connection.closed:
            return False
        if self._known_connections.get(id(connection)) is connection:
            return True
        status = connection.info.transaction_status
        if status == psycopg.pq.TransactionStatus.INERROR:
            return False
        try:
            identity = self._identity_of(connection, self._prefix)
        except psycopg.Error:
            if status == psycopg.pq.TransactionStatus.IDLE and not connection.autocommit:
                connection.rollback()
            return False
        if status == psycopg.pq.TransactionStatus.IDLE and not connection.autocommit:
            connection.rollback()  # the identity check must not leave a transaction open
        if identity != self._identity:
            return False
        with self._lock:
            if len(self._known_connections) >= 256:
                self._known_connections.clear()
            self._known_connections[id(connection)] = connection
        return True

    def _append_through(self, connection: Any, rows: list[tuple[Event, tuple[Any, ...]]]) -> list[Event]:
        if not isinstance(connection, psycopg.Connection):
            raise ArgumentTypeError(
                f"connection must be a psycopg 3 connection on this store's database, not "
                f"{type(connection).__qualname__}; nothing was written (pass connection=None to append "
                f"in the store's own transaction)"
            )
        if not self.can_join(connection):
            raise InvalidArgumentError(
                f"connection is not on this store's database ({redact(self._connection_string)}, schema "
                f"{self._resolved_schema!r}); nothing was written. Open the event store on the "
                f"connection's database, or pass connection=None"
            )
        n = len(rows)
        columns = [list(c) for c in zip(*(row for _, row in rows), strict=True)]
        st = self._sql
        # A savepoint inside the caller's transaction (a transaction of its own on an idle
        # autocommit connection): the batch is all or nothing either way. One round trip.
        own = (
            connection.autocommit and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        reserve = None
        try:
            with _round_trips(connection, rows) as pipe:
                if own:
                    connection.execute("BEGIN")
                connection.execute(f"SAVEPOINT {_SAVEPOINT}")
                connection.execute(st.lock_alloc)
                reserve = connection.cursor(row_factory=tuple_row)  # the caller's may make dicts
                reserve.execute(st.reserve, {"n": n})
                connection.execute(st.unlock_alloc)
                connection.execute(st.insert, {"n": n, **dict(zip(st.names, columns, strict=True))})
                connection.execute(st.notify, {"channel": self._channel})
                connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
                if own:
                    connection.execute("COMMIT")
                pipe.sync()
                row = reserve.fetchone()
        except BaseException as error:
            first = _first_reserved(reserve)
            self._undo_through(connection, own)
            if isinstance(error, psycopg.errors.UniqueViolation):
                if first is not None:
                    self._give_back(connection, first, n)
                raise _duplicate(error) from None
            if isinstance(error, psycopg.OperationalError):
                fate = (
                    "nothing of it is stored unless the server committed it before the connection "
                    "broke (look it up with get_event_by_id)"
                    if own
                    else "the caller's transaction is gone with its connection (the server rolled it "
                    "back, this append included): open a new connection and redo the transaction"
                )
                raise StoreError(
                    f"the append through the caller's connection did not complete: "
                    f"{' '.join(str(error).split())}; {fate}"
                ) from None
            raise
        assert row is not None
        first = int(row[0])
        return [self._codec.stored_at(e, first + i) for i, (e, _) in enumerate(rows)]

    def _undo_through(self, connection: psycopg.Connection[Any], own: bool) -> None:
        """After a failed append through a caller's connection: back to the savepoint (the
        caller's transaction goes on), and the allocation lock not kept."""
        if connection.closed or connection.broken:
            return
        try:
            if own:
                connection.execute("ROLLBACK")
            else:
                connection.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            connection.execute(self._sql.unlock_alloc_if_held)
        except psycopg.Error:
            pass  # the caller's transaction is beyond repair; its rollback ends it

    # -- reads -----------------------------------------------------------------------

    def _fetch(self, query: str, params: Any = None) -> list[Any]:
        """Rows of ``query`` run after the horizon is set (``_HORIZON`` in it reads it): rows
        below it are all committed, so a read below it is a gapless prefix of the log."""
        self._check_open()
        st = self._sql
        with self._connection() as conn:
            with conn.pipeline():
                conn.execute(st.lock_alloc_shared)
                conn.execute(st.horizon)
                conn.execute(st.unlock_alloc_shared)
                cur = conn.cursor(binary=True)
                cur.execute(query, params)
            rows: list[Any] = cur.fetchall()
            return rows

    def _read(self, query: str, params: Any = None) -> list[Event]:
        return _events(self._fetch(query, params))

    def _scalar(self, query: str, params: Any = None) -> Any:
        rows = self._fetch(query, params)
        return rows[0][0] if rows else None

    def get_events(self, query: EventQuery) -> Iterator[Event]:
        """Events matching ``query``, ordered and paged as it asks (read whole before yielding)."""
        if not isinstance(query, EventQuery):
            raise ArgumentTypeError(f"query must be an EventQuery, not {type(query).__qualname__}")
        if query.order_by not in ("sequence", "timestamp"):
            raise InvalidArgumentError(f"order_by must be 'sequence' or 'timestamp', not {query.order_by!r}")
        limit, offset = _count_arg("limit", query.limit), _count_arg("offset", query.offset)
        where, params = self._where(query)
        direction = "ASC" if query.ascending else "DESC"
        order = (
            f"sequence {direction}"
            if query.order_by == "sequence"
            else f"timestamp_us {direction}, sequence ASC"
        )
        text = (
            f"SELECT {_COLUMNS} FROM {self._prefix}event_log WHERE {where} "
            f"ORDER BY {order} LIMIT %s OFFSET %s"
        )
        return iter(self._read(text, [*params, limit, offset]))

    def _where(self, query: EventQuery, *, time_filters: bool = True) -> tuple[str, list[Any]]:
        parts = [f"sequence < {_HORIZON}"]
        params: list[Any] = []
        if query.entity_type is not None:
            parts.append("entity_type = %s")
            params.append(_value(query.entity_type))
        if query.entity_id is not None:
            parts.append("entity_id = %s")
            params.append(_esc(query.entity_id))
        if query.workflow_id is not None:
            parts.append("workflow_id = %s")
            params.append(_esc(query.workflow_id))
        # The core checks the query as the other stores do (unknown type names, wrong types),
        # over its empty in-memory store: the same errors, word for word.
        self._codec.count(query)
        if query.event_types:
            given = query.event_types
            listed = [given] if isinstance(given, (str, EventType)) else list(given)
            types = [parse_event_type(_value(t)) for t in listed]
            values = [t.value for t in types if t is not EventType.UNKNOWN]
            if EventType.UNKNOWN in types:
                known = [t.value for t in EventType if t is not EventType.UNKNOWN]
                parts.append("(event_type = ANY(%s) OR NOT event_type = ANY(%s))")
                params += [values, known]
            else:
                parts.append("event_type = ANY(%s)")
                params.append(values)
        if query.from_sequence is not None:
            parts.append("sequence > %s")
            params.append(_int("from_sequence", query.from_sequence))
        if query.to_sequence is not None:
            parts.append("sequence <= %s")
            params.append(_int("to_sequence", query.to_sequence))
        if time_filters and query.from_timestamp is not None:
            parts.append("timestamp_us >= %s")
            params.append(_micros(_moment("from_timestamp", query.from_timestamp)))
        if time_filters and query.to_timestamp is not None:
            parts.append("timestamp_us <= %s")
            params.append(_micros(_moment("to_timestamp", query.to_timestamp)))
        return " AND ".join(parts), params

    def get_events_for_entity(
        self, entity_type: EntityType, entity_id: str, from_version: int = 0
    ) -> list[Event]:
        """Events of one entity with version above ``from_version``, by sequence."""
        return self._read(
            f"SELECT {_COLUMNS} FROM {self._prefix}event_log WHERE entity_id = %s AND entity_type = %s "
            f"AND version > %s AND sequence < {_HORIZON} ORDER BY sequence",
            (_esc(entity_id), _value(entity_type), _int("from_version", from_version)),
        )

    def get_events_for_workflow(self, workflow_id: str, from_sequence: int = 0) -> list[Event]:
        """Events of one workflow after ``from_sequence``, by sequence."""
        return self._read(
            f"SELECT {_COLUMNS} FROM {self._prefix}event_log WHERE workflow_id = %s AND sequence > %s "
            f"AND sequence < {_HORIZON} ORDER BY sequence",
            (_esc(workflow_id), _int("from_sequence", from_sequence)),
        )

    def get_current_sequence(self) -> int:
        """The highest sequence committed, or 0."""
        return int(
            self._scalar(
                f"SELECT coalesce(max(sequence), 0) FROM {self._prefix}event_log WHERE sequence < {_HORIZON}"
            )
            or 0
        )

    def get_events_since(self, sequence: int, limit: int = READ_LIMIT) -> list[Event]:
        """At most ``limit`` events after ``sequence``, by sequence, stopping before the first
        sequence whose transaction is still open: an event committed late is never stepped over
        (a reader polling from its last sequence sees every event, in order)."""
        after = _int("sequence", sequence)
        count = _count_arg("limit", limit)
        return self._read(self._sql.since, (after, count))

    def get_events_since_committed(self, cursor: str, limit: int = READ_LIMIT) -> tuple[list[Event], str]:
        """Committed events after ``cursor`` in commit-safe order, and the cursor to resume from.

        The cursor is a sequence (as text): `get_events_since` never returns an event while
        a lower sequence's transaction is open, so the sequence is a gap-free frontier. The
        reference's xid8 cursors (``"0"`` included) read as sequences; start from ``"0"``.
        """
        try:
            start = int(cursor or 0)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"commit cursor must be a sequence number, not {cursor!r}") from None
        events = self.get_events_since(start, limit)
        return events, str(events[-1].sequence if events else start)

    def get_event_by_id(self, event_id: str) -> Event | None:
        """The event with this id, or None."""
        if not isinstance(event_id, str):
            raise ArgumentTypeError(f"event_id must be a str, not {type(event_id).__qualname__}")
        found = self._read(
            f"SELECT {_COLUMNS} FROM {self._prefix}event_log WHERE event_id = %s", (_esc(event_id),)
        )
        return found[0] if found else None

    def count_events(self, query: EventQuery | None = None) -> int:
        """How many events match ``query`` (every filter; limit and offset ignored)."""
        if query is None:
            return int(
                self._scalar(f"SELECT count(*) FROM {self._prefix}event_log WHERE sequence < {_HORIZON}") or 0
            )
        if not isinstance(query, EventQuery):
            raise ArgumentTypeError(f"query must be an EventQuery or None, not {type(query).__qualname__}")
        where, params = self._where(query)
        return int(self._scalar(f"SELECT count(*) FROM {self._prefix}event_log WHERE {where}", params) or 0)

    # -- replay --------------------------------------------------------------------

    def fold_workflow(
        self,
        workflow_id: str,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        to_timestamp: datetime | None = None,
        initial_state: dict[str, Any] | _core.StoredSnapshot | None = None,
        upcast: Callable[[Event], Event] | None = None,
        current_schema_version: int = CURRENT_SCHEMA_VERSION,
        skip_corrupt: bool = False,
        snapshot_after_events: int | None = None,
        look_up_snapshot_at: int | None = None,
        snapshot_min_events: int | None = None,
    ) -> dict[str, Any]:
        """Fold a workflow's events into its state in Rust (`_core.fold_events`), the rows
        streamed from a server-side cursor (memory bounded however long the workflow).
        With ``snapshot_after_events`` due (folding from the first event), the snapshot is
        encoded from the folded state in Rust as the answer is built and written before this
        returns (``snapshot_queued`` in the result), if the state folds ``snapshot_min_events`` or
        more; from a given ``initial_state`` the replayer saves it. ``look_up_snapshot_at`` is
        refused (this store does not serve stored snapshots)."""
        self._check_open()
        if look_up_snapshot_at is not None:
            raise InvalidArgumentError(
                "look_up_snapshot_at: the PostgreSQL store does not look snapshots up as it folds; "
                "look the snapshot up first (SnapshotStore.latest_usable) and pass it as initial_state"
            )
        text = (
            f"SELECT {_COLUMNS} FROM {self._prefix}event_log WHERE workflow_id = %s AND sequence > %s "
            f"AND sequence < {_HORIZON}"
        )
        params: list[Any] = [_esc(workflow_id), _int("from_sequence", from_sequence)]
        if to_sequence is not None:
            text += " AND sequence <= %s"
            params.append(_int("to_sequence", to_sequence))
        if to_timestamp is not None:
            text += " AND timestamp_us <= %s"
            params.append(_micros(_moment("to_timestamp", to_timestamp)))
        text += " ORDER BY sequence"
        st = self._sql
        with self._connection() as conn:
            with conn.pipeline():
                conn.execute(st.lock_alloc_shared)
                conn.execute(st.horizon)
                conn.execute(st.unlock_alloc_shared)
            with conn.transaction():
                with conn.cursor(name="stabilize_events_fold", binary=True) as cur:
                    cur.itersize = 2000
                    cur.execute(text, params)
                    folded = _core.fold_events(
                        workflow_id,
                        _streamed(cur),
                        initial_state,
                        upcast,
                        current_schema_version,
                        skip_corrupt,
                        None if to_timestamp is not None else snapshot_after_events,
                        snapshot_min_events,
                    )
        folded["last_sequence"] = max(folded["last_sequence"], from_sequence)
        row = folded.pop("snapshot_row", None)
        if row is not None:
            self._write_snapshot(
                EntityType.WORKFLOW.value,
                workflow_id,
                workflow_id,
                row["version"],
                row["sequence"],
                row["state"],
                row["state_hash"],
                row["max_event_time_us"],
            )
            folded["snapshot_queued"] = True
        return folded

    # -- live delivery ---------------------------------------------------------------

    def wait_for_events(self, after: int, timeout: float) -> bool:
        """Block until an event after sequence ``after`` is readable or ``timeout`` seconds pass;
        True if one is. Wakes on the store's NOTIFY (another process's commit) within
        milliseconds; uses its own connection, not the pool's."""
        self._check_open()
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        with psycopg.connect(self._connection_string, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            while True:
                if self.get_events_since(after, 1):
                    return True
                left = (deadline - datetime.now(UTC)).total_seconds()
                if left <= 0:
                    return False
                for _ in conn.notifies(timeout=min(left, 1.0), stop_after=1):
                    break

    def open_notification_waiter(self) -> NotificationWaiter:
        """A `NotificationWaiter` on this store's channel, with a connection of its own (not the
        pool's). `SubscriptionManager` uses one to wake on other processes' commits."""
        self._check_open()
        return NotificationWaiter(self._connection_string, self._channel)

    # -- snapshots -------------------------------------------------------------------

    def save_snapshot(
        self,
        entity_type: EntityType,
        entity_id: str,
        workflow_id: str,
        version: int,
        sequence: int,
        state: dict[str, Any],
        state_hash_hex: str | None = None,
        max_event_time_us: int | None = None,
    ) -> None:
        """Save ``state`` as the entity's state after event ``sequence`` (replacing one saved at
        the same sequence), with the hash of the stored bytes (``sha256-msgpack:<hex>``, as the
        SQLite store; computed unless given: a given legacy hash, the SHA-256 of the canonical
        JSON, is kept and checked that way when read)."""
        if not isinstance(state, dict):
            raise ArgumentTypeError("state must be a dict")
        encoded = _core.encode_payload(state)
        digest = state_hash_hex if state_hash_hex is not None else _core.snapshot_hash(encoded)
        self._write_snapshot(
            _value(entity_type), entity_id, workflow_id, version, sequence, encoded, digest, max_event_time_us
        )

    def _write_snapshot(
        self,
        entity_type: str,
        entity_id: str,
        workflow_id: str,
        version: int,
        sequence: int,
        encoded: bytes,
        digest: str,
        max_event_time_us: int | None,
    ) -> None:
        """Store one snapshot row: its state as encoded, with its hash."""
        self._check_open()
        with self._connection() as conn:
            conn.execute(
                f"INSERT INTO {self._prefix}event_snapshot (entity_type, entity_id, sequence, workflow_id, "
                f"version, state, state_hash, created_at_us, max_event_us) "
                f"VALUES (%s, %s, %s, %s, %s, %b, %s, %s, %s) "
                f"ON CONFLICT (entity_type, entity_id, sequence) DO UPDATE SET workflow_id = "
                f"EXCLUDED.workflow_id, version = EXCLUDED.version, state = EXCLUDED.state, state_hash = "
                f"EXCLUDED.state_hash, created_at_us = EXCLUDED.created_at_us, max_event_us = "
                f"EXCLUDED.max_event_us",
                (
                    entity_type,
                    entity_id,
                    _int("sequence", sequence),
                    workflow_id,
                    _int("version", version),
                    encoded,
                    digest,
                    _now_us(),
                    max_event_time_us,
                ),
            )

    def get_snapshots(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Snapshots of an entity at or before ``max_sequence``, newest first, as dicts (the
        SQLite store's keys: ``state``, ``state_hash``, ``state_error``, ``created_at``, and
        ``hash_ok``: whether the stored bytes match the hash, checked by the core; None for a
        legacy hash, which `stabilize_events.snapshots` checks against the decoded state)."""
        self._check_open()
        with self._connection() as conn:
            with conn.cursor(binary=True) as cur:
                cur.execute(
                    f"SELECT entity_type, entity_id, workflow_id, version, sequence, state, state_hash, "
                    f"created_at_us, max_event_us FROM {self._prefix}event_snapshot WHERE entity_type = %s "
                    f"AND entity_id = %s AND sequence <= %s ORDER BY sequence DESC LIMIT %s",
                    (
                        _value(entity_type),
                        entity_id,
                        (1 << 63) - 1 if max_sequence is None else _int("max_sequence", max_sequence),
                        _count_arg("limit", limit),
                    ),
                )
                rows = cur.fetchall()
        out = []
        for et, eid, wf, version, seq, blob, digest, created, max_event in rows:
            state: Any = None
            error = None
            stored = bytes(blob)
            try:
                state = _core.decode_payload(stored)
            except Exception as problem:
                error = str(problem)
            hash_ok = False if error is not None else _core.snapshot_bytes_intact(stored, digest)
            out.append(
                {
                    "entity_type": et,
                    "entity_id": eid,
                    "workflow_id": wf,
                    "version": version,
                    "sequence": seq,
                    "state": state,
                    "state_error": error,
                    "state_hash": digest,
                    "hash_ok": hash_ok,
                    "created_at": _EPOCH + timedelta(microseconds=created),
                    "max_event_time_us": max_event,
                }
            )
        return out

    def flush_snapshots(self) -> None:
        """Nothing to wait for: this store writes every snapshot before the call that saves it returns."""

    # -- durable subscription positions ---------------------------------------------

    def save_subscription(
        self,
        subscription_id: str,
        event_types: list[EventType] | None,
        entity_filter: dict[str, Any] | None,
        last_sequence: int,
        webhook_url: str | None = None,
        **settings: Any,
    ) -> None:
        """Create or replace a durable subscription and its position."""
        for t in event_types or ():
            _value(t)  # a clear error for a member of no enum, before anything is written
        config = subscription_config(event_types, entity_filter, webhook_url, settings)
        self._check_open()
        with self._connection() as conn:
            conn.execute(
                f"INSERT INTO {self._prefix}event_subscription (id, config, last_sequence, updated_at_us) "
                f"VALUES (%s, %b, %s, %s) ON CONFLICT (id) DO UPDATE SET config = EXCLUDED.config, "
                f"last_sequence = EXCLUDED.last_sequence, updated_at_us = EXCLUDED.updated_at_us",
                (
                    subscription_id,
                    _core.encode_payload(config),
                    _int("last_sequence", last_sequence),
                    _now_us(),
                ),
            )

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """A subscription as a dict (``id``, ``event_types``, ``entity_filter``, ``last_sequence``,
        ``webhook_url``, ``last_commit_cursor``, ``updated_at`` and any extra settings), or None."""
        self._check_open()
        with self._connection() as conn:
            with conn.cursor(binary=True) as cur:
                cur.execute(
                    f"SELECT config, last_sequence, updated_at_us FROM {self._prefix}event_subscription "
                    f"WHERE id = %s",
                    (subscription_id,),
                )
                row = cur.fetchone()
        if row is None:
            return None
        return subscription_from_row(
            subscription_id,
            _core.decode_payload(bytes(row[0])),
            row[1],
            _EPOCH + timedelta(microseconds=row[2]),
        )

    def update_subscription_sequence(self, subscription_id: str, last_sequence: int) -> None:
        """Persist how far a subscription has delivered."""
        self._check_open()
        with self._connection() as conn:
            conn.execute(
                f"UPDATE {self._prefix}event_subscription SET last_sequence = %s, updated_at_us = %s "
                f"WHERE id = %s",
                (_int("last_sequence", last_sequence), _now_us(), subscription_id),
            )

    def update_subscription_cursor(
        self, subscription_id: str, last_sequence: int, last_commit_cursor: str
    ) -> None:
        """Persist a subscription's position (the commit cursor is the sequence in this store)."""
        self.update_subscription_sequence(subscription_id, last_sequence)

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription (no error if it does not exist)."""
        self._check_open()
        with self._connection() as conn:
            conn.execute(f"DELETE FROM {self._prefix}event_subscription WHERE id = %s", (subscription_id,))

    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription's ``id`` and ``last_sequence``, by id."""
        self._check_open()
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT id, last_sequence FROM {self._prefix}event_subscription ORDER BY id"
            ).fetchall()
        return [{"id": r[0], "last_sequence": r[1]} for r in rows]

    # -- lifetime ----------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; losing the server is a `StoreError` naming it."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise StoreError(
                f"PostgreSQL at {redact(self._connection_string)} did not answer: "
                f"{' '.join(str(error).split())} (the pool reconnects once the server is back; retry then)"
            ) from None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed; open a new PostgresEventStore")

    def close(self) -> None:
        """Close the pool's connections. Later calls raise `StoreClosedError`."""
        if not self._closed:
            self._closed = True
            self._pool.close()

    def __enter__(self) -> PostgresEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        schema = getattr(self, "_resolved_schema", self._schema)
        return f"PostgresEventStore({redact(self._connection_string)!r}, schema={schema!r})"


class NotificationWaiter:
    """Waits for the NOTIFY each committed append sends on a store's channel (LISTEN on a
    connection of its own). A broken connection is reopened on the next `wait`."""

    def __init__(self, connection_string: str, channel: str) -> None:
        self._connection_string = connection_string
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> None:
        conn = psycopg.connect(self._connection_string, autocommit=True)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True as soon as an append commits (or committed
        since the last call), False on timeout or while the server cannot be reached."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._connect()
            conn = self._conn
            assert conn is not None
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except psycopg.Error:
            self.close()
            threading.Event().wait(min(timeout, 1.0))
            return False

    def close(self) -> None:
        """Close the listening connection."""
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None


def encode_rows(codec: NativeStore, events: Iterable[Any]) -> list[tuple[Event, tuple[Any, ...]]]:
    """Each event checked and encoded by the core (``codec``), with the values of its
    ``event_log`` row in `Statements.names` order (text escaped, see `_esc`)."""
    require_event_list(events)
    encoded = [codec.sqlite_row(event) for event in events]
    rows = [(stored, row[:13]) for stored, row in encoded]
    # One scan of every text value of the batch (C loops): escaping is rare.
    if _NEEDS_ESCAPE.search("".join(filter(None, chain.from_iterable(map(_text_of, (r for _, r in rows)))))):
        rows = [
            (stored, tuple(_esc(v) if i in _TEXT_FIELDS else v for i, v in enumerate(values)))
            for stored, values in rows
        ]
    return rows


def write_at_sequences(
    conn: psycopg.Connection[Any],
    schema: str,
    rows: list[tuple[Event, tuple[Any, ...]]],
    sequences: list[int],
) -> None:
    """Insert encoded ``rows`` (`encode_rows`) with the given sequences, inside ``conn``'s open
    transaction, and move the store's sequence past them. Holds the allocation lock until that
    transaction ends: appends and readers wait, so none sees the moved sequence before the
    rows are committed (or rolled back)."""
    st = Statements(f"{_quote_ident(schema)}.", allocation_key(schema))
    columns = [list(c) for c in zip(*(row for _, row in rows), strict=True)]
    conn.execute(st.lock_alloc_xact)
    conn.execute(st.insert_at, {"sequence": sequences, **dict(zip(st.names, columns, strict=True))})
    conn.execute(st.advance_to, {"last": max(sequences)})


class Statements:
    """The SQL text of the hot paths, built once per store."""

    names = (
        "event_id",
        "event_type",
        "timestamp_us",
        "entity_type",
        "entity_id",
        "workflow_id",
        "version",
        "data",
        "correlation_id",
        "causation_id",
        "actor",
        "source_handler",
        "schema_version",
    )
    _types = (
        "text",
        "text",
        "int8",
        "text",
        "text",
        "text",
        "int8",
        "bytea",
        "text",
        "text",
        "text",
        "text",
        "int8",
    )

    def __init__(self, prefix: str, alloc_key: int) -> None:
        seq = f"'{prefix}event_log_sequence'"
        self.lock_alloc = f"SELECT pg_advisory_lock({alloc_key})".encode()
        self.unlock_alloc = f"SELECT pg_advisory_unlock({alloc_key})".encode()
        self.unlock_alloc_if_held = (
            f"SELECT pg_advisory_unlock({alloc_key}) FROM pg_locks WHERE locktype = 'advisory' "
            f"AND pid = pg_backend_pid() AND objsubid = 1 AND mode = 'ExclusiveLock' "
            f"AND ((classid::bigint << 32) | objid::bigint) = {alloc_key}"
        ).encode()
        self.lock_alloc_xact = f"SELECT pg_advisory_xact_lock({alloc_key})".encode()
        self.lock_alloc_shared = f"SELECT pg_advisory_lock_shared({alloc_key})".encode()
        self.unlock_alloc_shared = f"SELECT pg_advisory_unlock_shared({alloc_key})".encode()
        # Reserve n consecutive sequences and tag the first until this transaction ends.
        self.reserve = (
            f"SELECT r.first, pg_advisory_xact_lock_shared({alloc_key} + r.first) FROM "
            f"(SELECT setval({seq}, nextval({seq}) + %(n)s - 1) - %(n)s + 1 AS first) r"
        ).encode()
        arrays = ", ".join(f"%({n})b::{t}[]" for n, t in zip(self.names, self._types, strict=True))
        self.insert = (
            f"INSERT INTO {prefix}event_log (sequence, {', '.join(self.names)}) "
            f"SELECT currval({seq}) - %(n)s + u.ord, {', '.join('u.' + n for n in self.names)} "
            f"FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(self.names)}, ord)"
        ).encode()
        self.copy = f"COPY {prefix}event_log (sequence, {', '.join(self.names)}) FROM STDIN (FORMAT BINARY)"
        self.copy_types = ["int8", *self._types]
        self.insert_at = (
            f"INSERT INTO {prefix}event_log (sequence, {', '.join(self.names)}) "
            f"SELECT * FROM unnest(%(sequence)b::int8[], {arrays})"
        ).encode()
        self.advance_to = (
            f"SELECT setval({seq}, greatest(%(last)s, (SELECT CASE WHEN is_called THEN last_value "
            f"ELSE 0 END FROM {prefix}event_log_sequence)))"
        ).encode()
        self.give_back = (
            f"SELECT setval({seq}, %(first)s, false) FROM {prefix}event_log_sequence "
            f"WHERE last_value = %(last)s AND is_called"
        ).encode()
        self.notify = f"SELECT pg_notify(%(channel)s, currval({seq})::text)".encode()
        tag = "((l.classid::bigint << 32) | l.objid::bigint)"
        self.horizon = (
            f"SELECT set_config('stabilize_events.horizon', least("
            f"(SELECT min({tag}) - {alloc_key} FROM pg_locks l WHERE l.locktype = 'advisory' "
            f"AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = "
            f"current_database()) AND {tag} > {alloc_key} AND {tag} < {alloc_key + (1 << _SEQUENCE_BITS)}), "
            f"(SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
            f"FROM {prefix}event_log_sequence))::text, false)"
        ).encode()
        self.since = (
            f"SELECT {_COLUMNS} FROM {prefix}event_log WHERE sequence > %s AND sequence < {_HORIZON} "
            f"ORDER BY sequence LIMIT %s"
        )
        self.latest_version = (
            f"SELECT version FROM {prefix}event_log WHERE entity_id = %(entity_id)s AND "
            f"(%(entity_type)s::text IS NULL OR entity_type = %(entity_type)s) ORDER BY sequence DESC LIMIT 1"
        ).encode()


#: Text fields of a row (as `_rows` builds it) that may hold any str. PostgreSQL text cannot
#: hold NUL, so a str holding NUL (or the escape character) is stored escaped (`_esc`).
_TEXT_FIELDS = frozenset((0, 1, 3, 4, 5, 8, 9, 10, 11))
_text_of = itemgetter(*sorted(_TEXT_FIELDS))
_ESCAPE = "\ue000"
_NEEDS_ESCAPE = re.compile("[\x00\ue000]")


def _esc(value: Any) -> Any:
    """``value`` with NUL and the escape character replaced (reversibly) by `_unesc`'s pairs."""
    if not isinstance(value, str) or not _NEEDS_ESCAPE.search(value):
        return value
    return value.replace(_ESCAPE, _ESCAPE + "1").replace("\x00", _ESCAPE + "0")


def _unesc(value: Any) -> Any:
    if value is None or _ESCAPE not in value:
        return value
    return value.replace(_ESCAPE + "0", "\x00").replace(_ESCAPE + "1", _ESCAPE)


#: The text columns of a row as `_COLUMNS` selects it.
_row_text = itemgetter(1, 2, 4, 5, 6, 9, 10, 11, 12)


def _events(rows: list[Any]) -> list[Event]:
    """Events for rows as `_COLUMNS` selects them, built by the core (payloads decoded when
    first used); rows holding escaped text (`_esc`, rare) are unescaped here first."""
    if _ESCAPE in "".join(filter(None, chain.from_iterable(map(_row_text, rows)))):
        return [_event(row) for row in rows]
    return _core.events_from_rows(rows)


def _streamed(cur: Any) -> Iterator[Event]:
    """The events of a (server-side) cursor's rows, fetched a chunk at a time."""
    while rows := cur.fetchmany(cur.itersize):
        yield from _events(rows)


def _event(row: Sequence[Any]) -> Event:
    (
        seq,
        event_id,
        event_type,
        ts,
        entity_type,
        entity_id,
        workflow_id,
        version,
        blob,
        corr,
        cause,
        actor,
        src,
        sv,
    ) = row
    if any(
        v is not None and _ESCAPE in v
        for v in (event_id, event_type, entity_id, workflow_id, corr, cause, actor, src)
    ):
        event_id, event_type, entity_id, workflow_id = (
            _unesc(event_id),
            _unesc(event_type),
            _unesc(entity_id),
            _unesc(workflow_id),
        )
        corr, cause, actor, src = _unesc(corr), _unesc(cause), _unesc(actor), _unesc(src)
    try:
        data = _core.decode_payload(bytes(blob))
    except Exception as error:
        raise CorruptEventError(
            f"the event at sequence {seq} ({event_id}) cannot be decoded: {error}"
        ) from None
    return Event(
        event_id=event_id,
        event_type=_core.stored_event_type(event_type, data) if isinstance(data, dict) else event_type,
        timestamp=_EPOCH + timedelta(microseconds=ts),
        sequence=seq,
        entity_type=entity_type,
        entity_id=entity_id,
        workflow_id=workflow_id,
        version=version,
        data=data,
        metadata=EventMetadata(corr, cause, actor, src),
        schema_version=sv,
    )


class _Unpipelined:
    """Stands in for ``conn.pipeline()`` when statements go one round trip each."""

    def __enter__(self) -> _Unpipelined:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def sync(self) -> None:
        """Nothing to send: each statement already had its answer."""


def _round_trips(conn: psycopg.Connection[Any], rows: list[tuple[Event, tuple[Any, ...]]]) -> Any:
    """A pipeline for an ordinary append, one statement at a time for one carrying large payloads
    (see `_PIPELINE_MAX_BYTES`)."""
    size = sum(len(row[_DATA_FIELD]) for _, row in rows)
    return conn.pipeline() if size <= _PIPELINE_MAX_BYTES else _Unpipelined()


def _first_reserved(reserve: Any) -> int | None:
    """The first sequence an append reserved before it failed, if it got that far."""
    if reserve is None:
        return None
    try:
        row = reserve.fetchone()
    except psycopg.Error:
        return None
    return None if row is None else int(row[0])


def _as_given(given: Any, stored: Event) -> Event:
    if type(given) is Event:
        return stored
    with_sequence = getattr(given, "with_sequence", None)
    return with_sequence(stored.sequence) if with_sequence is not None else stored


def _duplicate(error: psycopg.errors.UniqueViolation) -> DuplicateEventError:
    detail = error.diag.message_detail or ""
    event_id = detail.split("=(", 1)[1].split(")", 1)[0] if "=(" in detail else "(unknown id)"
    return DuplicateEventError(f"event {event_id} is already stored; nothing of this batch was written")


def _value(member: Any) -> str:
    value = getattr(member, "value", member)
    if not isinstance(value, str):
        raise ArgumentTypeError(f"expected an enum member or str, not {type(member).__qualname__}")
    return value


def _int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__qualname__}")
    if not -(1 << 63) <= value < (1 << 63):
        raise InvalidArgumentError(f"{name} must fit in 64 bits, got {value}")
    return value


def _version(value: Any) -> int:
    number = _int("expected version", value)
    if number < 0:
        raise InvalidArgumentError(f"expected version must be >= 0, got {number}")
    return number


def _count_arg(name: str, value: Any) -> int:
    number = _int(name, value)
    if number < 0:
        raise InvalidArgumentError(f"{name} must be >= 0, got {number}")
    return number


def _moment(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise ArgumentTypeError(f"{name} must be a datetime, not {type(value).__qualname__}")
    return value


__all__ = [
    "POSTGRES_SCHEMA_VERSION",
    "NotificationWaiter",
    "PostgresEventStore",
    "Statements",
    "allocation_key",
    "encode_rows",
    "setup_ddl",
    "write_at_sequences",
]
