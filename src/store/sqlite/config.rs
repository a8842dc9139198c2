//! The SQLite backend's settings (`SqliteConfig`: where, how durable, how
//! patient) and how its errors are reported. A leaf: it imports nothing else of
//! the backend, so every other part of it may import this one.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rusqlite::{ErrorCode, OpenFlags};

use crate::errors::{CoreError, CoreResult, Kind};

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

    pub fn pragma(self) -> &'static str {
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
    /// Read a large query on two threads (see `store::split_read`).
    pub split_reads: bool,
    /// Write each transaction's WAL frames with one system call (see `wal_vfs`).
    pub coalesce_wal_writes: bool,
    /// Read connections map the file into memory (`PRAGMA mmap_size`, see `READ_MMAP_BYTES`).
    pub mmap_reads: bool,
}

impl SqliteConfig {
    /// The settings of a store at `location` with every option at its default.
    pub fn new(location: Location) -> SqliteConfig {
        SqliteConfig {
            location,
            create_tables: true,
            synchronous: DEFAULT_SYNCHRONOUS,
            busy_timeout: Duration::from_millis(DEFAULT_BUSY_TIMEOUT_MS),
            page_size: DEFAULT_PAGE_SIZE,
            damaged: Default::default(),
            access: Access::ReadWrite,
            split_reads: DEFAULT_SPLIT_READS,
            coalesce_wal_writes: DEFAULT_COALESCE_WAL_WRITES,
            mmap_reads: DEFAULT_MMAP_READS,
        }
    }
}

/// Default `busy_timeout`: how long a writer waits for a lock another connection holds.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5000;
/// Default `synchronous`.
pub const DEFAULT_SYNCHRONOUS: Synchronous = Synchronous::Normal;
/// Default `split_reads`: on. Reading the second part of a large result on a
/// second thread overlaps the two (the GIL is not held for either).
pub const DEFAULT_SPLIT_READS: bool = true;
/// Default `coalesce_wal_writes`: on. It saves most of an append's system calls.
pub const DEFAULT_COALESCE_WAL_WRITES: bool = true;
/// Default `mmap_reads`: off. A read connection's own page cache starts empty, so
/// without a map a process's first read of a large result copies every page in with
/// a `pread` into freshly allocated cache memory, which its later reads skip. Through
/// the map the first read touches the OS's cached pages directly, as later reads do:
/// it saves about a tenth of a process's first large read. Off by default all the same,
/// for two costs: an I/O error while reading the file is a `SIGBUS` instead of an error,
/// and every mapped page a read touches counts in the process's resident memory (a
/// long workflow's rebuild then grows it by the size of the file, not by the 32 MB
/// the connection's page cache is bounded to).
pub const DEFAULT_MMAP_READS: bool = false;
/// How much of the database file a read connection maps (`mmap_reads`): 1 GiB.
/// Pages past it are read into SQLite's cache as without the map.
pub const READ_MMAP_BYTES: i64 = 1 << 30;

/// Default page size of new files. Every commit writes each page it dirtied
/// (the table's last leaf and one leaf per index) to the WAL, so smaller pages
/// make single-event commits cheaper; 2 KiB keeps reads and batches efficient.
pub const DEFAULT_PAGE_SIZE: u32 = 2048;

pub fn sql_error(err: rusqlite::Error, doing: &str, config: &SqliteConfig) -> CoreError {
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
            if matches!(config.location, Location::File(_)) && config.access == Access::ReadOnly =>
        {
            // Pointing to ?mode=ro again would not help: even a read-only reader of a WAL
            // database needs the -shm file, which SQLite cannot create here.
            format!(
                "; opened read-only (?mode=ro), but reading a WAL database needs {place}-shm beside \
                 it, which this process can neither open nor create there: read it while a process \
                 that writes it has it open (the -shm file then exists), or copy {place} and \
                 {place}-wal to a writable directory"
            )
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
pub fn damaged_error(place: &str, report: &str, consequence: &str) -> CoreError {
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

pub fn location_text(config: &SqliteConfig) -> String {
    match &config.location {
        Location::File(p) => p.display().to_string(),
        Location::Memory => ":memory:".to_owned(),
    }
}

/// How every connection of a store opens its database: read-write, without
/// SQLite's own mutex (each connection is used by one thread at a time).
pub fn connection_flags(create: bool) -> OpenFlags {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::{looks_like_url, sql_error, Access, Location, SqliteConfig};
    use crate::errors::Kind;
    use rusqlite::ffi;

    fn file_config() -> SqliteConfig {
        SqliteConfig {
            busy_timeout: std::time::Duration::from_secs(1),
            ..SqliteConfig::new(Location::File("/data/events.db".into()))
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
        // Already read-only: what the reader lacks, not ?mode=ro again.
        let read_only = SqliteConfig { access: Access::ReadOnly, ..file_config() };
        let err = sql_error(
            failure(ffi::SQLITE_READONLY, "attempt to write a readonly database"),
            "reading the schema",
            &read_only,
        );
        assert!(err.message.contains("needs /data/events.db-shm"), "{}", err.message);
        assert!(!err.message.contains("open it read-only"), "{}", err.message);
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
}
