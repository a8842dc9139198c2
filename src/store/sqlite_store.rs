//! The SQLite backend (rusqlite, on the system SQLite: see `sqlite_library`).
//!
//! One writer connection appends inside `BEGIN IMMEDIATE` transactions, so
//! sequences (the table's rowid) are assigned under SQLite's write lock and
//! stay unique across threads and processes; under contention a writer waits
//! up to the busy timeout. Readers take connections from a small pool and, in
//! WAL mode, never block the writer. All of it runs without the GIL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::checkpoint::Checkpointer;
use super::filter::OrderBy;
use super::index_key::index_key;
use super::sqlite_scan::{Row, ScanStatements};
use super::sqlite_write::{commit_group, Request, WriteQueue, Writer};
use super::{Backend, Expectation, Filter, SnapshotRecord, SubscriptionRecord, Take, Visitor};
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::EventRecord;
use crate::fold::EventView;

/// The on-disk schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
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
const COLUMNS: &str = "sequence, event_id, event_type, timestamp_us, entity_type, entity_id, data, \
     schema_version, workflow_id, version, correlation_id, causation_id, actor, source_handler";

/// How much a commit survives (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// WAL is synced at checkpoints only: survives a process crash; a power
    /// loss or OS crash may lose the last commits (never corrupts).
    Normal,
    /// Every commit is synced before it returns: survives power loss.
    Full,
}

impl Synchronous {
    pub fn parse(text: &str) -> CoreResult<Self> {
        match text.to_ascii_uppercase().as_str() {
            "NORMAL" => Ok(Synchronous::Normal),
            "FULL" => Ok(Synchronous::Full),
            _ => Err(CoreError::new(
                Kind::InvalidArgument,
                format!("synchronous must be 'NORMAL' or 'FULL', not {text:?}"),
            )),
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Memory,
}

impl Location {
    /// Where `text` says the database is, read as the reference reads it:
    /// `sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite://relative.db`
    /// (what follows `sqlite:///` or `sqlite://` is the path), `:memory:` in
    /// either form, or a plain path (relative to the current directory or
    /// absolute). This is the one place the rule lives; the Python store only
    /// turns a `pathlib.Path` into its string first.
    pub fn parse(text: &str) -> CoreResult<Self> {
        Self::parse_with_access(text).map(|(location, _)| location)
    }

    /// `parse`, and whether the URL asks for read-only access (`?mode=ro`, the only
    /// query string a URL may have; a plain path has none, a `?` there is part of the name).
    pub fn parse_with_access(text: &str) -> CoreResult<(Self, Access)> {
        let invalid = |why: String| Err(CoreError::new(Kind::InvalidArgument, why));
        let url_path = text.strip_prefix("sqlite:///").or_else(|| text.strip_prefix("sqlite://"));
        let mut access = Access::ReadWrite;
        let url_path = match url_path.map(|rest| rest.split_once('?').unwrap_or((rest, ""))) {
            Some((rest, "")) => Some(rest),
            Some((rest, "mode=ro")) => {
                access = Access::ReadOnly;
                Some(rest)
            }
            Some((_, query)) => {
                return invalid(format!(
                    "SQLite URL {text:?} has the query string {query:?}, which is not supported: the only \
                     option is ?mode=ro (open read-only, for inspection); a file name cannot hold '?' in a URL"
                ));
            }
            None => None,
        };
        let (path, is_url) = match url_path {
            Some(rest) => (rest, true),
            None if looks_like_url(text) => {
                // The reference would take it as a file name and fail to open it
                // (its directory `scheme:` rarely exists): say what is wrong instead.
                return invalid(format!(
                    "not an SQLite URL or path: {text:?} looks like a URL of another kind; pass \
                     sqlite:///relative.db, sqlite:////absolute/path.db, sqlite:///:memory: or a plain file path"
                ));
            }
            None => (text, false),
        };
        if path == ":memory:" {
            if access == Access::ReadOnly {
                return invalid(format!(
                    "{text:?}: a read-only in-memory database would always be empty; drop ?mode=ro"
                ));
            }
            return Ok((Location::Memory, access));
        }
        let what = if is_url { "SQLite URL" } else { "path" };
        // A `?` in a URL would be a query string (`?mode=ro`) that the reference
        // silently makes part of the file name; a plain path may hold one.
        if path.is_empty() || path.ends_with('/') || path.contains('\0') {
            return invalid(format!(
                "{what} {text:?} does not name a database file; name a file, such as \
                 sqlite:///events.db or events.db"
            ));
        }
        // Resolved once: connections opened later must not follow a chdir.
        let path = std::path::absolute(path).map_err(|e| {
            CoreError::new(Kind::InvalidArgument, format!("{what} {text:?} names no usable path: {e}"))
        })?;
        Ok((Location::File(path), access))
    }
}

/// Whether a store may write its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    #[default]
    ReadWrite,
    /// Opened with `?mode=ro`: every write is refused; nothing is created or converted.
    ReadOnly,
}

/// Whether `text` starts with a URL scheme and `:/` (`postgresql://`,
/// `file:///`, `SQLITE:///`, `sqlite:/x`). A one-letter scheme is a Windows
/// drive (`C:/x`), not a URL.
fn looks_like_url(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(":/") else { return false };
    scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Connection settings shared by the writer and the readers.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub location: Location,
    pub create_tables: bool,
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    /// Page size of a new database file (ignored for an existing one).
    pub page_size: u32,
    /// Set, with SQLite's first report, once SQLite reports the file damaged
    /// (`SQLITE_CORRUPT`): the store then refuses every write.
    pub damaged: Arc<OnceLock<String>>,
    /// `?mode=ro`: connections open read-only and every write is refused.
    pub access: Access,
}

/// Default page size of new files. Every commit writes each page it dirtied
/// (the table's last leaf and one leaf per index) to the WAL, so smaller pages
/// make single-event commits cheaper; 2 KiB keeps reads and batches efficient.
pub const DEFAULT_PAGE_SIZE: u32 = 2048;

/// WAL pages written before SQLite's automatic checkpoint (8 MiB at the
/// default page size): fewer, larger checkpoints copy hot index pages once,
/// not often. It runs inline at FULL; at NORMAL `checkpoint.rs` takes over.
const WAL_CHECKPOINT_PAGES: u32 = 4096;

/// A pooled read connection with its prepared event queries.
struct Reader {
    // Declared before `conn`: statements are finalized before the connection closes.
    scans: ScanStatements,
    conn: Connection,
}

/// The writer's page cache, in KiB. Kept small on purpose: when SQLite
/// rebalances a b-tree it renumbers a page through the pending-byte page
/// number (page 524289 at 2 KiB), and the commit after that walks the cache's
/// whole hash table, which grows with the pages cached. At 64 MiB that walk
/// cost W2 a tenth of its time (366k against 401k ev/s at 4 MiB); the hot
/// index pages of an append fit in 4 MiB, and the OS keeps the rest of the file.
const WRITER_CACHE_KIB: i64 = 4096;

pub struct SqliteBackend {
    config: SqliteConfig,
    writer: Mutex<Option<Writer>>,
    /// Idle read connections (file databases only; `:memory:` reads through the writer).
    readers: Mutex<Vec<Reader>>,
    /// Appends waiting for the writer (group commit).
    queue: WriteQueue,
    closed: std::sync::atomic::AtomicBool,
    /// Declared after `writer`, whose connection's WAL hook points at it.
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
    }
}

pub(super) fn sql_error(err: rusqlite::Error, doing: &str, config: &SqliteConfig) -> CoreError {
    let place = match &config.location {
        Location::File(p) => p.display().to_string(),
        Location::Memory => ":memory:".to_owned(),
    };
    if err.sqlite_error_code() == Some(ErrorCode::DatabaseCorrupt) {
        let first = config.damaged.get_or_init(|| format!("{err}, found while {doing}"));
        return damaged_error(&place, first, "this store refuses every write to it");
    }
    let kind = match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::CannotOpen) => Kind::StoreOpen,
        _ => Kind::Store,
    };
    let extra = match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) => {
            format!(" (still locked after the busy timeout of {} ms)", config.busy_timeout.as_millis())
        }
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen)
            if matches!(config.location, Location::File(_)) =>
        {
            format!(
                "; the file or its directory is not writable by this process (SQLite writes the file \
                 and creates {place}-wal and {place}-shm beside it): make both writable, or open it \
                 read-only for inspection with sqlite:///{place}?mode=ro"
            )
        }
        _ => String::new(),
    };
    CoreError::new(kind, format!("{doing} in {place} failed: {err}{extra}"))
}

/// The database file at `place` is damaged (SQLite said `report`): reason first, then
/// what the store does about it, then how to check the file and get the data out.
fn damaged_error(place: &str, report: &str, consequence: &str) -> CoreError {
    CoreError::new(
        Kind::DatabaseDamaged,
        format!(
            "the database file {place} is damaged (SQLite: {report}); {consequence}. Reads of its \
             undamaged parts still work. Check it with `sqlite3 '{place}' 'PRAGMA integrity_check'`; \
             to recover, close every store on it, copy it aside, then either restore a backup or \
             salvage what is readable with `sqlite3 '{place}' .recover | sqlite3 recovered.db` \
             and open the store on the recovered file"
        ),
    )
}

impl SqliteBackend {
    /// Open (and, if asked, create) the event store at `config.location`.
    /// On failure nothing is left behind: a file this call created is removed.
    pub fn open(config: SqliteConfig) -> CoreResult<SqliteBackend> {
        let created_file = match &config.location {
            Location::File(path) => {
                check_path(path, config.create_tables, config.access)?;
                !path.exists()
            }
            Location::Memory => false,
        };
        let result = Self::open_writer(&config).map(|writer| {
            // At FULL every commit syncs anyway, and a checkpoint syncing the
            // same files beside it stalled those commits (W6 fell from 21k to
            // 16k ev/s): there SQLite checkpoints inline, as it would.
            let checkpointer = match &config.location {
                Location::File(path)
                    if config.synchronous == Synchronous::Normal && config.access == Access::ReadWrite =>
                {
                    let c = Checkpointer::new(path.clone());
                    c.attach(&writer);
                    Some(c)
                }
                _ => None,
            };
            SqliteBackend {
                config: config.clone(),
                writer: Mutex::new(Some(Writer::new(writer))),
                readers: Mutex::new(Vec::new()),
                queue: WriteQueue::default(),
                closed: std::sync::atomic::AtomicBool::new(false),
                checkpointer,
            }
        });
        if result.is_err() && created_file {
            if let Location::File(path) = &config.location {
                // Another process may have created the same file meanwhile and be using it.
                if !abandoned(path) {
                    return result;
                }
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
            }
        }
        result
    }

    fn connect(config: &SqliteConfig, create: bool) -> CoreResult<Connection> {
        let flags = match config.access {
            Access::ReadWrite => connection_flags(create),
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        };
        let conn = match &config.location {
            Location::File(path) => super::wal_vfs::open(path, flags),
            Location::Memory => Connection::open_in_memory_with_flags(flags),
        }
        .map_err(|e| sql_error(e, "opening the database", config))?;
        conn.busy_timeout(config.busy_timeout)
            .map_err(|e| sql_error(e, "setting the busy timeout", config))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn open_writer(config: &SqliteConfig) -> CoreResult<Connection> {
        let read_only = config.access == Access::ReadOnly;
        let conn = Self::connect(config, config.create_tables && !read_only)?;
        // The first real read tells a non-database file apart.
        let has_log =
            table_exists(&conn, "event_log").map_err(|e| sql_error(e, "reading the schema", config))?;
        if read_only {
            if !has_log {
                return Err(CoreError::new(
                    Kind::Schema,
                    format!(
                        "{} is an SQLite database but not an event store (no event_log table); \
                         opened read-only (?mode=ro), nothing can be added to it",
                        location_text(config)
                    ),
                ));
            }
            conn.execute_batch("PRAGMA query_only=1;")
                .map_err(|e| sql_error(e, "configuring the connection", config))?;
            check_schema_version(&conn, config)?;
            return Ok(conn);
        }
        if !config.create_tables && !has_log {
            return Err(CoreError::new(
                Kind::Schema,
                format!(
                    "{} is an SQLite database but not an event store (no event_log table); \
                     open it with create_tables=True to add one",
                    location_text(config)
                ),
            ));
        }
        if let Location::File(_) = config.location {
            // Takes effect only while the file is still empty.
            conn.execute_batch(&format!("PRAGMA page_size={}", config.page_size))
                .map_err(|e| sql_error(e, "setting the page size", config))?;
            // The switch needs the file to itself. While another connection
            // writes it (creating the tables, say), SQLite answers busy at once
            // without calling its busy handler (both waiting could deadlock):
            // wait here instead, as the busy timeout promises.
            let mode: String = retry_while_busy(config.busy_timeout, || {
                conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            })
            .map_err(|e| sql_error(e, "switching to WAL", config))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(CoreError::new(
                    Kind::StoreOpen,
                    format!("{} cannot use WAL journaling (got {mode})", location_text(config)),
                ));
            }
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous={}; PRAGMA cache_size={}; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint={};",
            config.synchronous.pragma(),
            -WRITER_CACHE_KIB,
            WAL_CHECKPOINT_PAGES
        ))
        .map_err(|e| sql_error(e, "configuring the connection", config))?;
        if config.create_tables {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;")).map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                sql_error(e, "creating the event tables", config)
            })?;
        }
        check_schema_version(&conn, config)?;
        Ok(conn)
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut Connection) -> CoreResult<T>) -> CoreResult<T> {
        self.with_writer_state(|w| f(&mut w.conn))
    }

    fn with_writer_state<T>(&self, f: impl FnOnce(&mut Writer) -> CoreResult<T>) -> CoreResult<T> {
        if self.config.access == Access::ReadOnly {
            return Err(CoreError::new(
                Kind::Store,
                format!(
                    "writing refused: the event store {} was opened read-only (?mode=ro); open it \
                     without ?mode=ro to write",
                    location_text(&self.config)
                ),
            ));
        }
        if let (Some(report), Location::File(path)) = (self.config.damaged.get(), &self.config.location) {
            let place = path.display().to_string();
            return Err(damaged_error(&place, report, "this store refuses every write to it"));
        }
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(writer) => f(writer),
            None => Err(self.closed_error()),
        }
    }

    /// Run `f` on a read connection (the writer for `:memory:`).
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> CoreResult<T>) -> CoreResult<T> {
        self.with_scans(|conn, _| f(conn))
    }

    /// Run `f` on a read connection and its prepared event queries.
    fn with_scans<T>(
        &self,
        f: impl FnOnce(&Connection, &mut ScanStatements) -> CoreResult<T>,
    ) -> CoreResult<T> {
        if self.config.location == Location::Memory {
            return self.with_writer_state(|w| f(&w.conn, &mut w.scans));
        }
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut reader = match pooled {
            Some(r) => r,
            None => {
                let conn = Self::connect(&self.config, false)?;
                conn.execute_batch("PRAGMA cache_size=-32768; PRAGMA query_only=1;")
                    .map_err(|e| sql_error(e, "configuring a reader", &self.config))?;
                Reader { scans: ScanStatements::default(), conn }
            }
        };
        let result = f(&reader.conn, &mut reader.scans);
        if !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            self.readers.lock().unwrap_or_else(|p| p.into_inner()).push(reader);
        }
        result
    }

    fn closed_error(&self) -> CoreError {
        CoreError::new(
            Kind::StoreClosed,
            format!("the event store {} is closed", location_text(&self.config)),
        )
    }

    fn read_records(&self, sql: &str, params: &[Value]) -> CoreResult<Vec<Arc<EventRecord>>> {
        let mut out = Vec::new();
        self.read_each(sql, params, &mut |record| {
            out.push(record);
            Ok(())
        })?;
        Ok(out)
    }

    fn read_each(&self, sql: &str, params: &[Value], take: &mut Take<'_>) -> CoreResult<()> {
        self.with_scans(|conn, scans| {
            let mut rows =
                scans.query(conn, sql, params).map_err(|e| sql_error(e, "querying events", &self.config))?;
            while let Some(row) = rows.next().map_err(|e| sql_error(e, "reading events", &self.config))? {
                take(Arc::new(row_to_view(&row, true)?.to_record()))?;
            }
            Ok(())
        })
    }
}

impl SqliteBackend {
    fn read_subscriptions(&self, id: Option<&str>) -> CoreResult<Vec<SubscriptionRecord>> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, config, last_sequence, updated_at_us FROM event_subscription \
                     WHERE ?1 IS NULL OR id = ?1 ORDER BY id",
                )
                .map_err(|e| sql_error(e, "preparing a subscription query", &self.config))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok(SubscriptionRecord {
                        id: r.get(0)?,
                        config: r.get(1)?,
                        last_sequence: r.get(2)?,
                        updated_at_us: r.get(3)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
            rows.map_err(|e| sql_error(e, "reading subscriptions", &self.config))
        })
    }
}

fn location_text(config: &SqliteConfig) -> String {
    match &config.location {
        Location::File(p) => p.display().to_string(),
        Location::Memory => ":memory:".to_owned(),
    }
}

fn check_path(path: &Path, create: bool, access: Access) -> CoreResult<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // A file where a directory of the path should be (`file.py/x.db`): say so, not "does not exist".
    if let Some(file) = parent.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
        return Err(CoreError::new(
            Kind::StoreOpen,
            format!(
                "cannot open {}: {} is a file, not a directory; name a database file in an existing \
                 directory",
                path.display(),
                file.display(),
            ),
        ));
    }
    if !parent.is_dir() {
        return Err(CoreError::new(
            Kind::StoreOpen,
            format!("cannot open {}: directory {} does not exist", path.display(), parent.display()),
        ));
    }
    if path.is_dir() {
        return Err(CoreError::new(
            Kind::StoreOpen,
            format!("cannot open {}: it is a directory", path.display()),
        ));
    }
    if access == Access::ReadOnly && !path.exists() {
        return Err(CoreError::new(
            Kind::StoreOpen,
            format!("{} does not exist (opened read-only with ?mode=ro, nothing is created)", path.display()),
        ));
    }
    if !create && !path.exists() {
        return Err(CoreError::new(
            Kind::StoreOpen,
            format!("{} does not exist (pass create_tables=True to create it)", path.display()),
        ));
    }
    Ok(())
}

/// `attempt()` again while it fails with `SQLITE_BUSY`, for up to `timeout`:
/// for the steps SQLite fails at once rather than call its busy handler.
fn retry_while_busy<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match attempt() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// How every connection of a store opens its database: read-write, without
/// SQLite's own mutex (each connection is used by one thread at a time).
pub(super) fn connection_flags(create: bool) -> OpenFlags {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        flags
    }
}

/// Whether the database file at `path` holds nothing and nobody is writing
/// it: only then may an open that failed on a file it created remove it.
fn abandoned(path: &Path) -> bool {
    let Ok(conn) = super::wal_vfs::open(path, connection_flags(false)) else { return false };
    // No busy timeout (rusqlite sets 5 s): a writer holding the lock means the file is in use.
    if conn.busy_timeout(std::time::Duration::ZERO).is_err() || conn.execute_batch("BEGIN IMMEDIATE").is_err()
    {
        return false;
    }
    let empty = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|n| n == 0);
    let _ = conn.execute_batch("ROLLBACK");
    empty
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}

fn check_schema_version(conn: &Connection, config: &SqliteConfig) -> CoreResult<()> {
    let version: Option<String> = if table_exists(conn, "event_store_meta").unwrap_or(false) {
        conn.query_row("SELECT value FROM event_store_meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .ok()
    } else {
        None
    };
    match version.as_deref().map(str::parse::<i64>) {
        Some(Ok(v)) if v == SCHEMA_VERSION => Ok(()),
        Some(Ok(v)) if v < SCHEMA_VERSION => Err(CoreError::new(
            Kind::Schema,
            format!(
                "{} holds event store schema v{v}, written by an early development build; \
                 this build reads v{SCHEMA_VERSION} only (re-record the events into a new file)",
                location_text(config)
            ),
        )),
        Some(Ok(v)) => Err(CoreError::new(
            Kind::Schema,
            format!(
                "{} holds event store schema v{v}, newer than this build's v{SCHEMA_VERSION}; upgrade stabilize-events",
                location_text(config)
            ),
        )),
        _ => Err(CoreError::new(
            Kind::Schema,
            format!("{} has an event_log table but no readable event_store_meta schema version", location_text(config)),
        )),
    }
}

fn corrupt(sequence: i64, what: &str) -> CoreError {
    CoreError::new(Kind::CorruptEvent, format!("stored event at sequence {sequence} is corrupt: {what}"))
}

/// Columns a replay scan reads: the leading columns of `COLUMNS`.
const FOLD_COLUMNS: &str =
    "sequence, event_id, event_type, timestamp_us, entity_type, entity_id, data, schema_version";

/// A borrowed view of a row selected with `COLUMNS` (`full`) or `FOLD_COLUMNS`.
fn row_to_view<'r>(row: &Row<'r>, full: bool) -> CoreResult<EventView<'r>> {
    let Some(sequence) = row.int(0) else {
        return Err(corrupt(0, "sequence is not an integer"));
    };
    let text = |i: i32, name: &str| -> CoreResult<&'r str> {
        match row.text(i) {
            Some(t) => crate::codec::utf8(t).map_err(|_| corrupt(sequence, &format!("{name} is not UTF-8"))),
            None => Err(corrupt(sequence, &format!("{name} is not text"))),
        }
    };
    let opt_text = |i: i32, name: &str| -> CoreResult<Option<&'r str>> {
        if row.is_null(i) {
            Ok(None)
        } else {
            text(i, name).map(Some)
        }
    };
    let int = |i: i32, name: &str| -> CoreResult<i64> {
        row.int(i).ok_or_else(|| corrupt(sequence, &format!("{name} is not an integer")))
    };
    let lean = EventView {
        sequence,
        event_id: text(1, "event_id")?,
        event_type: text(2, "event_type")?,
        timestamp_us: match int(3, "timestamp_us")? {
            // No datetime holds it: reading or replaying the event could only fail later.
            t if !crate::time::DATETIME_MICROS.contains(&t) => {
                return Err(corrupt(sequence, &format!("timestamp_us {t} is outside datetime's range")))
            }
            t => t,
        },
        entity_type: text(4, "entity_type")?,
        entity_id: text(5, "entity_id")?,
        data: row.blob(6).ok_or_else(|| corrupt(sequence, "data is not a blob"))?,
        schema_version: int(7, "schema_version")?,
        ..EventView::default()
    };
    if !full {
        return Ok(lean);
    }
    Ok(EventView {
        workflow_id: text(8, "workflow_id")?,
        version: int(9, "version")?,
        correlation_id: text(10, "correlation_id")?,
        causation_id: opt_text(11, "causation_id")?,
        actor: text(12, "actor")?,
        source_handler: opt_text(13, "source_handler")?,
        ..lean
    })
}

/// The query of `Backend::query`: every column, filtered, ordered and paged as `filter` says.
fn query_sql(filter: &Filter) -> (String, Vec<Value>) {
    let (mut sql, mut params) = where_clause(filter);
    let dir = if filter.ascending { "ASC" } else { "DESC" };
    match filter.order_by {
        OrderBy::Sequence => sql.push_str(&format!(" ORDER BY sequence {dir}")),
        OrderBy::Timestamp => sql.push_str(&format!(" ORDER BY timestamp_us {dir}, sequence {dir}")),
    }
    if filter.limit.is_some() || filter.offset > 0 {
        sql.push_str(" LIMIT ? OFFSET ?");
        params.push(Value::Integer(filter.limit.unwrap_or(-1)));
        params.push(Value::Integer(filter.offset));
    }
    (format!("SELECT {COLUMNS} FROM event_log{sql}"), params)
}

/// `WHERE ...` for a filter, with its parameters.
fn where_clause(filter: &Filter) -> (String, Vec<Value>) {
    let mut sql = String::from(" WHERE 1=1");
    let mut params: Vec<Value> = Vec::new();
    let eq = |col: &str, v: &Option<String>, sql: &mut String, params: &mut Vec<Value>| {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            params.push(Value::Text(v.clone()));
        }
    };
    // Workflow ids are found through their integer index key, then compared in full.
    let keyed = |id: &str, v: &Option<String>, sql: &mut String, params: &mut Vec<Value>| {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {id}_key = ? AND {id}_id = ?"));
            params.push(Value::Integer(index_key(v)));
            params.push(Value::Text(v.clone()));
        }
    };
    keyed("workflow", &filter.workflow_id, &mut sql, &mut params);
    eq("entity_id", &filter.entity_id, &mut sql, &mut params);
    eq("entity_type", &filter.entity_type, &mut sql, &mut params);
    if let Some(types) = &filter.event_types {
        sql.push_str(&format!(" AND event_type IN ({})", vec!["?"; types.len()].join(",")));
        params.extend(types.iter().map(|t| Value::Text(t.clone())));
    }
    // A row whose column is not an integer (corrupt) still matches, so that
    // reading it reports the corruption instead of silently leaving it out.
    let bounds: [(&str, &str, Option<i64>); 5] = [
        ("sequence", ">", filter.from_sequence),
        ("sequence", "<=", filter.to_sequence),
        ("timestamp_us", ">=", filter.from_timestamp),
        ("timestamp_us", "<=", filter.to_timestamp),
        ("version", ">", filter.from_version),
    ];
    for (column, cmp, value) in bounds {
        if let Some(v) = value {
            if column == "sequence" {
                sql.push_str(&format!(" AND {column} {cmp} ?"));
            } else {
                sql.push_str(&format!(" AND ({column} {cmp} ? OR typeof({column}) <> 'integer')"));
            }
            params.push(Value::Integer(v));
        }
    }
    (sql, params)
}

impl Backend for SqliteBackend {
    fn append(&self, records: Vec<EventRecord>, expect: Vec<Expectation>) -> CoreResult<Vec<EventRecord>> {
        if records.is_empty() {
            return Ok(records);
        }
        let request = Request::new(records, expect);
        self.queue.run(&request, |group| {
            match self.with_writer_state(|writer| Ok(commit_group(writer, group, &self.config))) {
                Ok(stored) => stored,
                Err(e) => {
                    group.iter().for_each(|r| r.finish(Err(e.clone())));
                    0
                }
            }
        });
        request.take_result()
    }

    fn query(&self, filter: &Filter) -> CoreResult<Vec<Arc<EventRecord>>> {
        let (sql, params) = query_sql(filter);
        self.read_records(&sql, &params)
    }

    fn query_each(&self, filter: &Filter, take: &mut Take<'_>) -> CoreResult<()> {
        let (sql, params) = query_sql(filter);
        self.read_each(&sql, &params, take)
    }

    fn scan(&self, filter: &Filter, full: bool, visit: &mut Visitor<'_>) -> CoreResult<()> {
        let (sql, params) = where_clause(filter);
        let columns = if full { COLUMNS } else { FOLD_COLUMNS };
        let full_sql = format!("SELECT {columns} FROM event_log{sql} ORDER BY sequence ASC");
        self.with_scans(|conn, scans| {
            let mut rows = scans
                .query(conn, &full_sql, &params)
                .map_err(|e| sql_error(e, "scanning events", &self.config))?;
            while let Some(row) = rows.next().map_err(|e| sql_error(e, "scanning events", &self.config))? {
                visit(row_to_view(&row, full))?;
            }
            Ok(())
        })
    }

    fn count(&self, filter: &Filter) -> CoreResult<i64> {
        let (sql, params) = where_clause(filter);
        let full = format!("SELECT count(*) FROM event_log{sql}");
        self.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached(&full).map_err(|e| sql_error(e, "preparing a count", &self.config))?;
            stmt.query_row(rusqlite::params_from_iter(params.iter()), |r| r.get(0))
                .map_err(|e| sql_error(e, "counting events", &self.config))
        })
    }

    fn by_id(&self, event_id: &str) -> CoreResult<Option<Arc<EventRecord>>> {
        let sql = format!("SELECT {COLUMNS} FROM event_log WHERE event_id = ?");
        Ok(self.read_records(&sql, &[Value::Text(event_id.to_owned())])?.into_iter().next())
    }

    fn current_sequence(&self) -> CoreResult<i64> {
        self.with_reader(|conn| {
            conn.query_row("SELECT coalesce(max(sequence), 0) FROM event_log", [], |r| r.get(0))
                .map_err(|e| sql_error(e, "reading the current sequence", &self.config))
        })
    }

    fn save_snapshot(&self, snap: &SnapshotRecord) -> CoreResult<()> {
        self.with_writer(|conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO event_snapshot (entity_type, entity_id, sequence, workflow_id, version, \
                 state, state_hash, created_at_us, max_event_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    snap.entity_type,
                    snap.entity_id,
                    snap.sequence,
                    snap.workflow_id,
                    snap.version,
                    snap.state,
                    snap.state_hash,
                    snap.created_at_us,
                    snap.max_event_us,
                ])
            })
            .map(|_| ())
            .map_err(|e| sql_error(e, "saving a snapshot", &self.config))
        })
    }

    fn snapshots(
        &self,
        entity_type: &str,
        entity_id: &str,
        max_sequence: Option<i64>,
        limit: usize,
    ) -> CoreResult<Vec<SnapshotRecord>> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entity_type, entity_id, sequence, workflow_id, version, state, state_hash, created_at_us, \
                     max_event_us \
                     FROM event_snapshot WHERE entity_type = ?1 AND entity_id = ?2 AND sequence <= ?3 \
                     ORDER BY sequence DESC LIMIT ?4",
                )
                .map_err(|e| sql_error(e, "preparing a snapshot query", &self.config))?;
            let rows = stmt
                .query_map(
                    rusqlite::params![entity_type, entity_id, max_sequence.unwrap_or(i64::MAX), limit as i64],
                    |r| {
                        // A row of the wrong shape is reported on the record (and then
                        // skipped with a warning), never allowed to block a rebuild.
                        let read = || -> rusqlite::Result<SnapshotRecord> {
                            Ok(SnapshotRecord {
                                entity_type: r.get(0)?,
                                entity_id: r.get(1)?,
                                sequence: r.get(2)?,
                                workflow_id: r.get(3)?,
                                version: r.get(4)?,
                                state: r.get(5)?,
                                state_hash: r.get(6)?,
                                created_at_us: r.get(7)?,
                                max_event_us: r.get(8)?,
                                problem: None,
                            })
                        };
                        Ok(read().unwrap_or_else(|e| SnapshotRecord {
                            entity_type: entity_type.to_owned(),
                            entity_id: entity_id.to_owned(),
                            sequence: r.get(2).unwrap_or(0),
                            problem: Some(format!("the stored row is malformed: {e}")),
                            ..SnapshotRecord::default()
                        }))
                    },
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
            rows.map_err(|e| sql_error(e, "reading snapshots", &self.config))
        })
    }

    fn put_subscription(&self, sub: &SubscriptionRecord) -> CoreResult<()> {
        self.with_writer(|conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO event_subscription (id, config, last_sequence, updated_at_us) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![sub.id, sub.config, sub.last_sequence, sub.updated_at_us])
            })
            .map(|_| ())
            .map_err(|e| sql_error(e, "saving a subscription", &self.config))
        })
    }

    fn subscription(&self, id: &str) -> CoreResult<Option<SubscriptionRecord>> {
        Ok(self.read_subscriptions(Some(id))?.into_iter().next())
    }

    fn advance_subscription(&self, id: &str, last_sequence: i64, updated_at_us: i64) -> CoreResult<bool> {
        self.with_writer(|conn| {
            conn.prepare_cached(
                "UPDATE event_subscription SET last_sequence = ?2, updated_at_us = ?3 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(rusqlite::params![id, last_sequence, updated_at_us]))
            .map(|n| n > 0)
            .map_err(|e| sql_error(e, "moving a subscription position", &self.config))
        })
    }

    fn delete_subscription(&self, id: &str) -> CoreResult<bool> {
        self.with_writer(|conn| {
            conn.prepare_cached("DELETE FROM event_subscription WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute([id]))
                .map(|n| n > 0)
                .map_err(|e| sql_error(e, "deleting a subscription", &self.config))
        })
    }

    fn subscriptions(&self) -> CoreResult<Vec<SubscriptionRecord>> {
        self.read_subscriptions(None)
    }

    fn commit_stats(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        Some((self.queue.commits.load(Relaxed), self.queue.appends_stored.load(Relaxed)))
    }

    fn database_file(&self) -> Option<&std::path::Path> {
        match &self.config.location {
            Location::File(path) => Some(path),
            Location::Memory => None,
        }
    }

    fn parallel_reads_pay(&self) -> bool {
        // `:memory:` has one connection, which the halves would take in turn.
        matches!(self.config.location, Location::File(_))
    }

    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        // Its connection goes before the writer's, which then checkpoints the rest and removes the WAL.
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::{abandoned, looks_like_url, sql_error, Access, Location, SqliteConfig, Synchronous};
    use crate::errors::Kind;
    use rusqlite::{ffi, Connection};

    fn file_config() -> SqliteConfig {
        SqliteConfig {
            location: Location::File("/data/events.db".into()),
            create_tables: true,
            synchronous: Synchronous::Normal,
            busy_timeout: std::time::Duration::from_secs(1),
            page_size: super::DEFAULT_PAGE_SIZE,
            damaged: Default::default(),
            access: Access::ReadWrite,
        }
    }

    fn failure(code: i32, message: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message.to_owned()))
    }

    #[test]
    fn read_only_file_errors_say_what_to_do() {
        let err = sql_error(
            failure(ffi::SQLITE_READONLY, "attempt to write a readonly database"),
            "appending",
            &file_config(),
        );
        assert!(err.message.contains("not writable by this process"), "{}", err.message);
        assert!(err.message.contains("sqlite:////data/events.db?mode=ro"), "{}", err.message);
    }

    #[test]
    fn a_damaged_file_is_reported_first_and_remembered() {
        let config = file_config();
        let err =
            sql_error(failure(ffi::SQLITE_CORRUPT, "database disk image is malformed"), "appending", &config);
        assert_eq!(err.kind, Kind::DatabaseDamaged);
        assert!(err.message.starts_with("the database file /data/events.db is damaged"), "{}", err.message);
        assert!(config.damaged.get().is_some_and(|r| r.contains("malformed")));
        // Any other error leaves the flag as it was.
        let other = file_config();
        let _ = sql_error(failure(ffi::SQLITE_BUSY, "database is locked"), "appending", &other);
        assert!(other.damaged.get().is_none());
    }

    #[test]
    fn urls_and_plain_paths() {
        let here = std::env::current_dir().unwrap();
        for (text, file) in [
            ("sqlite:///rel.db", here.join("rel.db")),
            ("sqlite://rel.db", here.join("rel.db")),
            ("sqlite:////abs/x.db", "/abs/x.db".into()),
            ("rel.db", here.join("rel.db")),
            ("sub/x?.db", here.join("sub/x?.db")),
            ("/abs/x.db", "/abs/x.db".into()),
            ("C:/x.db", here.join("C:/x.db")),
        ] {
            assert_eq!(Location::parse(text).unwrap(), Location::File(file), "{text}");
        }
        for memory in ["sqlite:///:memory:", "sqlite://:memory:", ":memory:"] {
            assert_eq!(Location::parse(memory).unwrap(), Location::Memory, "{memory}");
        }
        for bad in ["", "sqlite:///", "sqlite://", "dir/", "sqlite:///x.db?mode=rw", "a\0b", "file:///x.db"] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Location::parse("sqlite:///:memory:?mode=ro").is_err());
        assert_eq!(
            Location::parse_with_access("sqlite:///x.db?mode=ro").unwrap(),
            (Location::File(here.join("x.db")), Access::ReadOnly)
        );
        assert_eq!(Location::parse_with_access("x.db?mode=ro").unwrap().1, Access::ReadWrite);
        assert!(
            looks_like_url("postgresql://u@h/db")
                && looks_like_url("SQLITE:///x")
                && looks_like_url("sqlite:/x")
        );
        assert!(!looks_like_url("C:/x") && !looks_like_url("a:b") && !looks_like_url("my:dir/x.db"));
    }

    #[test]
    fn only_an_empty_unlocked_file_is_abandoned() {
        let dir = std::env::temp_dir().join(format!("se-test-abandoned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.db");
        std::fs::File::create(&empty).unwrap();
        assert!(abandoned(&empty), "an empty file nobody uses");

        let used = dir.join("used.db");
        Connection::open(&used).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(!abandoned(&used), "a file holding a table");

        // Another process between its open and its first commit holds the write lock.
        let locked = dir.join("locked.db");
        let other = Connection::open(&locked).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; CREATE TABLE t (x);").unwrap();
        assert!(!abandoned(&locked), "a file another connection is writing");
        other.execute_batch("ROLLBACK").unwrap();
        assert!(abandoned(&locked));

        assert!(!abandoned(&dir.join("missing.db")), "no file to remove");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
