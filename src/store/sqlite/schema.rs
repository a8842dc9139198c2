//! The tables of an SQLite event store, and the columns its queries read.

/// The on-disk schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO event_store_meta (key, value) VALUES ('schema_version', '2');
CREATE TABLE IF NOT EXISTS event_log (
    sequence INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    timestamp_us INTEGER NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    data BLOB NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT,
    actor TEXT NOT NULL,
    source_handler TEXT,
    schema_version INTEGER NOT NULL,
    -- index_key(workflow_id): see index_key.rs.
    workflow_key INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS event_log_event_id ON event_log (event_id);
-- The rowid (sequence) is implicitly the last index column: these serve
-- 'workflow_key = ? AND workflow_id = ? AND sequence > ? ORDER BY sequence' without a sort.
CREATE INDEX IF NOT EXISTS event_log_workflow ON event_log (workflow_key);
-- Entity ids stay text: they are mostly ULIDs, so new entities insert at the
-- index's right edge, where a hash key would scatter them over every page.
CREATE INDEX IF NOT EXISTS event_log_entity ON event_log (entity_id);
CREATE TABLE IF NOT EXISTS event_snapshot (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    workflow_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,
    state_hash TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    max_event_us INTEGER,
    PRIMARY KEY (entity_type, entity_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_subscription (
    id TEXT PRIMARY KEY,
    config BLOB NOT NULL,
    last_sequence INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Every column, in `row_to_view` order: `FOLD_COLUMNS` first, then the rest.
pub const COLUMNS: &str = "sequence, event_id, event_type, timestamp_us, entity_type, entity_id, data, \
     schema_version, workflow_id, version, correlation_id, causation_id, actor, source_handler";

/// Columns a replay scan reads: the leading columns of `COLUMNS`.
pub const FOLD_COLUMNS: &str =
    "sequence, event_id, event_type, timestamp_us, entity_type, entity_id, data, schema_version";
