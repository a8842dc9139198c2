//! Opening an SQLite event store: checking the path, the writer connection's
//! settings (WAL, page size, cache), creating the tables and checking the
//! schema version; on failure, removing a file the open created.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::checkpoint::Checkpointer;
use super::config::{
    connection_flags, location_text, sql_error, Access, Location, SqliteConfig, Synchronous,
};
use super::schema::{SCHEMA, SCHEMA_VERSION};
use super::write::{WriteQueue, Writer};
use super::SqliteBackend;
use crate::errors::{CoreError, CoreResult, Kind};

/// WAL pages written before SQLite's automatic checkpoint (8 MiB at the
/// default page size): fewer, larger checkpoints copy hot index pages once,
/// not often. It runs inline at FULL; at NORMAL `checkpoint` takes over.
const WAL_CHECKPOINT_PAGES: u32 = 4096;

/// The writer's page cache, in KiB. Kept small on purpose: when SQLite
/// rebalances a b-tree it renumbers a page through the pending-byte page
/// number (page 524289 at 2 KiB), and the commit after that walks the cache's
/// whole hash table, which grows with the pages cached. At 64 MiB that walk
/// cost batched appends a tenth of their time (against a 4 MiB cache); the hot
/// index pages of an append fit in 4 MiB, and the OS keeps the rest of the file.
const WRITER_CACHE_KIB: i64 = 4096;

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
            // same files beside it stalled those commits (concurrent durable appends
            // lost a quarter of their rate): there SQLite checkpoints inline, as it would.
            let checkpointer = match &config.location {
                Location::File(path)
                    if config.synchronous == Synchronous::Normal && config.access == Access::ReadWrite =>
                {
                    let c = Checkpointer::new(path.clone(), config.coalesce_wal_writes);
                    Checkpointer::attach(&writer);
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

    pub(super) fn connect(config: &SqliteConfig, create: bool) -> CoreResult<Connection> {
        let flags = match config.access {
            Access::ReadWrite => connection_flags(create),
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        };
        let conn = match &config.location {
            Location::File(path) => super::wal_vfs::open(path, flags, config.coalesce_wal_writes),
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

/// Whether the database file at `path` holds nothing and nobody is writing
/// it: only then may an open that failed on a file it created remove it.
fn abandoned(path: &Path) -> bool {
    let Ok(conn) = super::wal_vfs::open(path, connection_flags(false), true) else { return false };
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

#[cfg(test)]
mod tests {
    use super::abandoned;
    use rusqlite::Connection;

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
