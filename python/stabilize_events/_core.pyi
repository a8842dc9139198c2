"""Type stubs for the Rust core, `stabilize_events._core`."""

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, final

from stabilize_events.store.interface import EventQuery
from stabilize_events.types import EntityType, EventType

SQLITE_SCHEMA_VERSION: int
#: The fields of an `Event`, in constructor order (a foreign event object must have them all).
EVENT_FIELDS: tuple[str, ...]
#: Inserts one ``event_log`` row: its sequence (None: the next free one),
#: then the values `NativeStore.sqlite_row` gives.
SQLITE_INSERT_ROW: str

# The stores' option defaults (the Python signatures read them from here).
#: How long a writer waits for a lock another connection holds, in ms.
DEFAULT_BUSY_TIMEOUT_MS: int
#: Page size of a new SQLite file.
DEFAULT_PAGE_SIZE: int
#: SQLite durability: "NORMAL" or "FULL".
DEFAULT_SYNCHRONOUS: str
#: Whether a large SQLite read is read on two threads.
DEFAULT_SPLIT_READS: bool
#: Whether each commit's WAL frames are written with one system call.
DEFAULT_COALESCE_WAL_WRITES: bool
#: Whether SQLite read connections map the database file into memory.
DEFAULT_MMAP_READS: bool
#: Largest encoded payload a store accepts, in bytes.
DEFAULT_MAX_PAYLOAD_BYTES: int
#: Whether a large read decodes its payloads as its rows arrive.
DEFAULT_DECODE_AHEAD: bool
#: Rows a large read takes before reading on in halves on two threads (decode_ahead off).
SPLIT_READ_FIRST_PART: int
#: Rows a large read takes before streaming the rest from a second thread (decode_ahead on).
STREAM_READ_FIRST_PART: int

@final
class EventMetadata:
    """Tracing metadata carried by every event; immutable and hashable."""

    @property
    def correlation_id(self) -> str: ...
    @property
    def causation_id(self) -> str | None: ...
    @property
    def actor(self) -> str: ...
    @property
    def source_handler(self) -> str | None: ...
    def __init__(
        self,
        correlation_id: str,
        causation_id: str | None = None,
        actor: str = "system",
        source_handler: str | None = None,
    ) -> None: ...
    def to_dict(self) -> dict[str, Any]: ...
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventMetadata: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Event:
    """An immutable record of one state change; ``data`` is decoded on first access."""

    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> EventType: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def sequence(self) -> int: ...
    @property
    def entity_type(self) -> EntityType: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def data(self) -> dict[str, Any]:
        """The payload, decoded on first access.

        A decoded payload made only of plain values and dicts of plain values is
        kept off the cycle collector, as a flat dict is; putting the payload
        inside one of its own nested dicts makes a cycle Python will not free.
        """
    @property
    def metadata(self) -> EventMetadata: ...
    @property
    def schema_version(self) -> int: ...
    def __init__(
        self,
        event_id: str | None = None,
        event_type: EventType | str | None = None,
        timestamp: datetime | None = None,
        sequence: int = 0,
        entity_type: EntityType | str | None = None,
        entity_id: str = "",
        workflow_id: str = "",
        version: int = 0,
        data: dict[str, Any] | None = None,
        metadata: EventMetadata | None = None,
        schema_version: int = 1,
    ) -> None: ...
    def with_sequence(self, sequence: int) -> Event: ...
    def to_dict(self) -> dict[str, Any]: ...
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class NativeStore:
    """A Rust event store backend (SQLite or in-memory)."""

    @staticmethod
    def sqlite(
        url: str,
        create_tables: bool = True,
        synchronous: str = ...,
        busy_timeout_ms: int = ...,
        page_size: int = ...,
        max_payload_bytes: int = ...,
        decode_ahead: bool = ...,
        split_reads: bool = ...,
        coalesce_wal_writes: bool = ...,
        mmap_reads: bool = ...,
    ) -> NativeStore:
        """Open an SQLite store; an option not given takes its ``DEFAULT_*`` constant."""
    @staticmethod
    def memory(max_payload_bytes: int = ...) -> NativeStore: ...
    @property
    def decode_ahead(self) -> bool:
        """Whether a large read decodes its payloads as its rows arrive."""
    def append(self, event: Event, expected_version: int | None = None) -> Event: ...
    @property
    def database_file(self) -> Path | None:
        """The database file of an SQLite store; None in memory."""
    def sqlite_row(self, event: Any) -> tuple[Event, tuple[Any, ...]]:
        """``event`` as an `Event` and its ``event_log`` row values after the sequence (see
        `SQLITE_INSERT_ROW`), its payload encoded and checked against the store's limit."""
    def stored_at(self, event: Event, sequence: int) -> Event:
        """``event`` as stored at ``sequence`` by a write through a caller's connection."""
    def append_batch(
        self, events: Iterable[Event], expected_versions: dict[str, int] | None = None
    ) -> list[Event]: ...
    def query(self, query: EventQuery) -> list[Event]: ...
    def count(self, query: EventQuery | None = None) -> int: ...
    def events_for_entity(
        self, entity_type: EntityType, entity_id: str, from_version: int
    ) -> list[Event]: ...
    def events_for_workflow(self, workflow_id: str, from_sequence: int) -> list[Event]: ...
    def events_since(self, sequence: int, limit: int) -> list[Event]: ...
    def event_by_id(self, event_id: str) -> Event | None: ...
    def current_sequence(self) -> int: ...
    def save_snapshot(
        self,
        entity_type: EntityType,
        entity_id: str,
        workflow_id: str,
        version: int,
        sequence: int,
        state: dict[str, Any],
        state_hash: str | None = None,
        max_event_time_us: int | None = None,
    ) -> None: ...
    def fold_workflow(
        self,
        workflow_id: str,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        to_timestamp: datetime | None = None,
        initial_state: dict[str, Any] | StoredSnapshot | None = None,
        upcast: Callable[[Event], Event] | None = None,
        current_schema_version: int = 1,
        skip_corrupt: bool = False,
        snapshot_after_events: int | None = None,
        look_up_snapshot_at: int | None = None,
        snapshot_min_events: int | None = None,
    ) -> dict[str, Any]: ...
    def latest_snapshot(
        self,
        entity_type: EntityType,
        entity_id: str,
        max_sequence: int | None = None,
        max_event_time_us: int | None = None,
        limit: int = 50,
    ) -> tuple[StoredSnapshot | None, list[str]]: ...
    def snapshots(
        self, entity_type: EntityType, entity_id: str, max_sequence: int | None = None, limit: int = 10
    ) -> list[dict[str, Any]]: ...
    def put_subscription(self, subscription_id: str, config: dict[str, Any], last_sequence: int) -> None: ...
    def subscription(self, subscription_id: str) -> dict[str, Any] | None: ...
    def advance_subscription(self, subscription_id: str, last_sequence: int) -> bool: ...
    def delete_subscription(self, subscription_id: str) -> bool: ...
    def subscriptions(self) -> list[dict[str, Any]]: ...
    def commit_stats(self) -> dict[str, int] | None: ...
    def flush_snapshots(self) -> list[str]: ...
    def close(self) -> list[str]: ...

def fold_events(
    workflow_id: str,
    events: Iterable[Event],
    initial_state: dict[str, Any] | StoredSnapshot | None = None,
    upcast: Callable[[Event], Event] | None = None,
    current_schema_version: int = 1,
    skip_corrupt: bool = False,
    snapshot_after_events: int | None = None,
    snapshot_min_events: int | None = None,
) -> dict[str, Any]:
    """Fold events given as objects into the state of ``workflow_id`` (with
    ``snapshot_after_events``, a ``snapshot_row`` to store when one is due and the state folds
    ``snapshot_min_events`` events or more in all)."""

def sqlite_database_path(url: str) -> Path | None:
    """The absolute database file ``url`` (a URL or plain path) names; None for ``:memory:``.

    Raises `InvalidArgumentError` when it names neither."""

def snapshot_bytes_intact(state: bytes, state_hash: str) -> bool | None:
    """Whether a snapshot's stored ``state`` bytes match ``state_hash``; None for a legacy hash
    (over the canonical JSON of the decoded state: `snapshots.snapshot_row_intact` checks it)."""

def events_from_rows(rows: Iterable[tuple[Any, ...]]) -> list[Event]:
    """Events for rows a store read itself (PostgreSQL): tuples of sequence, event_id,
    event_type, timestamp_us, entity_type, entity_id, workflow_id, version, data (the stored
    msgpack bytes, decoded when first used), correlation_id, causation_id, actor,
    source_handler, schema_version."""

def stored_event_type(event_type: str, data: dict[str, Any]) -> EventType:
    """The `EventType` a stored row's type string reads as, for code building events from
    stored rows of its own: a type this build does not know is ``EventType.UNKNOWN``, the
    string kept in ``data`` (changed in place) under ``_raw_event_type``, as a store's read
    keeps it. Pass the member, not the string, to `Event` (which refuses unknown strings)."""

def snapshot_hash(state: bytes) -> str:
    """``sha256-msgpack:<hex>``: the hash of a snapshot whose state is stored as ``state``
    (bytes made by `encode_payload`), as `snapshot_bytes_intact` checks it."""

def encode_payload(value: Any) -> bytes:
    """Encode a payload as the stores do (msgpack with extension types)."""

def decode_payload(data: bytes) -> Any:
    """Decode bytes made by `encode_payload`."""

def sqlite_library() -> str:
    """The path of the shared object holding the SQLite library the core calls.

    The name the dynamic loader gives it (such as ``/lib/x86_64-linux-gnu/libsqlite3.so.0``),
    not resolved through symlinks: compare ``os.path.realpath`` of both sides. The core links
    the system ``libsqlite3``, the same one Python's ``sqlite3`` module loads, so a process
    has a single SQLite. Raises ``RuntimeError`` if the loader knows no such object.
    """

def sqlite_version() -> str:
    """The version of the SQLite library the core calls (``sqlite3_libversion()``), e.g. ``"3.40.1"``."""

@final
class StoredSnapshot:
    """A stored snapshot chosen for a replay, its state kept as the stored bytes."""

    @property
    def entity_type(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def state_hash(self) -> str: ...
    @property
    def legacy(self) -> bool: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def max_event_time_us(self) -> int | None: ...
    @property
    def state(self) -> dict[str, Any]: ...

# -- JSON Lines (``stabilize-events export`` / ``import``; see src/jsonl/) ---------------------

def jsonl_export_page(store: NativeStore, after: int, span: int) -> tuple[bytes, int, int]:
    """The events of ``store`` after sequence ``after``, up to ``span`` sequences of them (more
    when the next event lies further on), as JSON Lines: ``(lines, count, last sequence)``;
    count 0 when no event follows. `CorruptEventError` names an event that cannot be written."""

def jsonl_encode_events(events: Iterable[Event]) -> bytes:
    """``events`` (of any store) as JSON Lines, one line each."""

@final
class JsonlLines:
    """A block of JSON Lines, read: its events with their line numbers, and its bad lines."""

    @property
    def bad(self) -> list[tuple[int, str]]:
        """The bad lines as ``(line number, why)``."""
    def events(self) -> list[Event]:
        """The events read, with the sequences the lines give."""
    @property
    def size(self) -> int:
        """Bytes of the file (or block) the lines took."""
    def __len__(self) -> int: ...

@final
class JsonlReader:
    """The lines of the open file ``fd`` (a copy of the descriptor; the caller closes its own),
    from where it stands, read ``chunk`` lines at a time on a thread of the core's own, a few
    chunks ahead at most; without ``skip_bad`` the last chunk ends at the first bad line. A
    last line with no newline is a line too."""

    def __init__(self, fd: int, chunk: int, skip_bad: bool) -> None: ...
    def __iter__(self) -> JsonlReader: ...
    def __next__(self) -> JsonlLines: ...
    @property
    def finished(self) -> bool:
        """Whether the last chunk was given (the end of the file, or a bad line without
        ``skip_bad``)."""

def jsonl_parse(block: bytes, first_line: int, skip_bad: bool) -> JsonlLines:
    """Read the JSON Lines in ``block`` (its first line numbered ``first_line``); blank lines are
    passed over, and without ``skip_bad`` reading stops at the first bad line."""

@final
class SqliteJsonlImport:
    """Writes read JSON Lines into the SQLite event store in the file ``path`` (its tables made
    already) with their own sequences, one transaction per `write`."""

    def __init__(self, path: Path) -> None: ...
    def write(self, lines: JsonlLines) -> tuple[int, int]:
        """Store the events of ``lines`` in one transaction: ``(imported, already present)``.
        An event whose sequence or id another event holds raises `DuplicateEventError` naming
        its line, and nothing of ``lines`` is written."""
    def close(self) -> None:
        """Close the connection; a later `write` raises `StoreClosedError`."""
