"""The defaults of every option on the Python side, in one place.

Signatures name these constants, so ``help()`` shows the values and a change here
changes every place that uses one. The store defaults (payload limit, busy
timeout, page size, durability and how large reads are done) are the Rust core's,
written once there and read here from ``_core.DEFAULT_*``: ``NativeStore.sqlite``
and ``NativeStore.memory`` use the same values when called without them.
"""

from __future__ import annotations

from stabilize_events import _core

# -- stores ----------------------------------------------------------------------------

#: The largest encoded payload a store accepts (bytes); a larger one is refused with `PayloadError`.
MAX_PAYLOAD_BYTES: int = _core.DEFAULT_MAX_PAYLOAD_BYTES

#: How long an SQLite writer waits for a database another connection has locked (ms).
SQLITE_BUSY_TIMEOUT_MS: int = _core.DEFAULT_BUSY_TIMEOUT_MS

#: The page size of a new SQLite file (bytes): a single-event commit writes one page per index.
SQLITE_PAGE_SIZE: int = _core.DEFAULT_PAGE_SIZE

#: SQLite durability: ``"NORMAL"`` (a commit survives a process crash) or ``"FULL"`` (power loss too).
SQLITE_SYNCHRONOUS: str = _core.DEFAULT_SYNCHRONOUS

#: Whether a large SQLite read decodes its payloads while its later rows are still being read
#: on a second thread (off: each payload is decoded when its ``data`` is first read).
SQLITE_DECODE_AHEAD: bool = _core.DEFAULT_DECODE_AHEAD

#: Whether a large SQLite read reads its rows on two threads.
SQLITE_SPLIT_READS: bool = _core.DEFAULT_SPLIT_READS

#: Whether each SQLite commit writes its WAL frames with one system call.
SQLITE_COALESCE_WAL_WRITES: bool = _core.DEFAULT_COALESCE_WAL_WRITES

#: Whether SQLite read connections map the database file into memory (``PRAGMA mmap_size``).
SQLITE_MMAP_READS: bool = _core.DEFAULT_MMAP_READS

#: The PostgreSQL store's pool: fewest and most connections.
POSTGRES_MIN_POOL_SIZE = 1
POSTGRES_MAX_POOL_SIZE = 8

#: Seconds to reach the PostgreSQL server, and to wait for a free pooled connection.
POSTGRES_CONNECT_TIMEOUT = 10.0
POSTGRES_POOL_TIMEOUT = 30.0

#: How many events one read returns when it is not told (``get_events_since``, `EventQuery`).
READ_LIMIT = 1000

# -- durable subscriptions ---------------------------------------------------------------

#: Seconds the polling thread waits when every subscription is up to date.
SUBSCRIPTION_POLL_INTERVAL = 1.0

#: Events per read (and so at most this many delivered again after a crash).
SUBSCRIPTION_BATCH_SIZE = 100

#: Consecutive failed deliveries after which a subscription is disabled.
SUBSCRIPTION_MAX_ERRORS = 10

#: Seconds `SubscriptionManager.stop` waits for the batch in progress.
SUBSCRIPTION_STOP_TIMEOUT = 5.0

#: Webhooks: seconds to wait for an answer, attempts in all, the first wait between attempts
#: (doubled after each) and the longest.
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF = 0.5
WEBHOOK_MAX_BACKOFF = 30.0

# -- projections -------------------------------------------------------------------------

#: Events per store read while a `ProjectionRunner` catches up.
PROJECTION_BATCH_SIZE = 1000

# -- snapshots -------------------------------------------------------------------------

#: A rebuild with a snapshot policy looks for a snapshot once it has folded this many events
#: (or the policy's ``min_events``, if fewer): a look-up costs about as much as folding one or
#: two events, so a smaller workflow is folded with no look-up, and a workflow rebuilt from a
#: snapshot folds at most this many events before it looks.
SNAPSHOT_LOOK_UP_AT_EVENTS = 64

#: `SnapshotPolicy`'s ``min_events``: a workflow of fewer events is not snapshotted. Below it,
#: handing a snapshot over costs the rebuild that takes it more than the saving it defers
#: (see docs/usage.md, "Snapshots").
SNAPSHOT_MIN_EVENTS = 10_000

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "POSTGRES_CONNECT_TIMEOUT",
    "POSTGRES_MAX_POOL_SIZE",
    "POSTGRES_MIN_POOL_SIZE",
    "POSTGRES_POOL_TIMEOUT",
    "PROJECTION_BATCH_SIZE",
    "READ_LIMIT",
    "SNAPSHOT_LOOK_UP_AT_EVENTS",
    "SNAPSHOT_MIN_EVENTS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_COALESCE_WAL_WRITES",
    "SQLITE_DECODE_AHEAD",
    "SQLITE_MMAP_READS",
    "SQLITE_PAGE_SIZE",
    "SQLITE_SPLIT_READS",
    "SQLITE_SYNCHRONOUS",
    "SUBSCRIPTION_BATCH_SIZE",
    "SUBSCRIPTION_MAX_ERRORS",
    "SUBSCRIPTION_POLL_INTERVAL",
    "SUBSCRIPTION_STOP_TIMEOUT",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_BACKOFF",
    "WEBHOOK_MAX_BACKOFF",
    "WEBHOOK_TIMEOUT",
]
