//! Writing imported events into an SQLite event store's file with the
//! sequences they had, one transaction per call, through a connection of its own
//! (the store's own writer assigns sequences; an import keeps them).
//!
//! An event already there (same sequence, same id) is skipped, so importing
//! a file twice adds nothing and an interrupted import carries on. An event
//! whose sequence or id is held by a different event is a conflict: nothing of
//! that call's events is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{ffi, Connection, OpenFlags};
use rustc_hash::FxHashMap;

use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::EventRecord;
use crate::store::sqlite::checkpoint::{Checkpointer, Committing};
use crate::store::sqlite::index_key::index_key;
use crate::store::sqlite::insert::row_insert_sql;
use crate::store::sqlite::wal_vfs;

/// How long a write waits for another writer of the file before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const FIX: &str = "Import into an empty store, or into the store this file came from";

/// Rows inserted by one statement (each statement step opens cursors on the table and
/// every index: fewer, larger steps).
const ROWS: usize = 32;
/// Parameters of one row: the sequence, then the columns of `row_insert_sql`.
const PARAMS: usize = 15;

pub struct SqliteTarget {
    conn: Connection,
    /// Told of the WAL's size after each commit on `conn` (see `write`).
    checkpointer: Arc<Checkpointer>,
    path: PathBuf,
    one_sql: String,
    many_sql: String,
}

/// The insert of `rows` rows, each with its sequence.
fn insert_sql(rows: usize) -> String {
    let one = row_insert_sql();
    let (head, values) = one.split_once(" VALUES ").unwrap_or((&one, "()"));
    format!("{head} VALUES {}", vec![values; rows].join(", "))
}

impl SqliteTarget {
    /// A connection on the event store in the file `path` (its tables already made).
    pub fn open(path: &Path) -> CoreResult<SqliteTarget> {
        let failed = |e: rusqlite::Error| {
            CoreError::new(Kind::StoreOpen, format!("cannot open {} to import into it: {e}", path.display()))
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = wal_vfs::open(path, flags, true).map_err(failed)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        // As the store's own writer (`store::sqlite`): NORMAL sync in WAL (a crash loses at most
        // the last chunks, which a second run writes again), a cache that holds the hot index
        // pages, WAL frames written together (`wal_vfs`) and checkpoints on a thread of their
        // own (`checkpoint`).
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA cache_size=-4096").map_err(failed)?;
        let checkpointer = Checkpointer::new(path.to_path_buf(), true);
        Checkpointer::attach(&conn);
        Ok(SqliteTarget {
            conn,
            checkpointer,
            path: path.to_path_buf(),
            one_sql: insert_sql(1),
            many_sql: insert_sql(ROWS),
        })
    }

    fn error(&self, e: rusqlite::Error, doing: &str) -> CoreError {
        CoreError::new(Kind::Store, format!("{doing} in {} failed: {e}", self.path.display()))
    }

    /// Stores `events` (each with its line number) in one transaction; returns how
    /// many were new. On a conflict nothing of them is written.
    pub fn write(&mut self, events: &[(EventRecord, usize)]) -> CoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        // The commit's WAL hook finds this import's checkpointer through this guard.
        let _committing = Committing::enter(Some(&self.checkpointer));
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| self.error(e, "starting a transaction"))?;
        let written = self.write_in_transaction(events);
        let end = if written.is_ok() { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = self.conn.execute_batch(end) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(written.err().unwrap_or_else(|| self.error(e, "committing the import")));
        }
        written
    }

    fn write_in_transaction(&self, events: &[(EventRecord, usize)]) -> CoreResult<usize> {
        let low = events.iter().map(|(r, _)| r.sequence).min().unwrap_or(0);
        let high = events.iter().map(|(r, _)| r.sequence).max().unwrap_or(0);
        let mut held: FxHashMap<i64, String> = FxHashMap::default();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT sequence, event_id FROM event_log WHERE sequence BETWEEN ?1 AND ?2")
                .map_err(|e| self.error(e, "reading the sequences held"))?;
            let rows = stmt
                .query_map([low, high], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
                .map_err(|e| self.error(e, "reading the sequences held"))?;
            for row in rows {
                let (sequence, id) = row.map_err(|e| self.error(e, "reading the sequences held"))?;
                held.insert(sequence, id);
            }
        }
        let mut fresh: Vec<&(EventRecord, usize)> = Vec::with_capacity(events.len());
        for event in events {
            let (r, line) = event;
            match held.get(&r.sequence) {
                Some(id) if id.as_str() == r.event_id.as_str() => continue,
                Some(id) => {
                    return Err(CoreError::new(
                        Kind::DuplicateEvent,
                        format!(
                        "line {line}: sequence {} is held by another event ({id}, not {}); nothing of this \
                             chunk was imported. {FIX}",
                        r.sequence, r.event_id
                    ),
                    ))
                }
                None => {}
            }
            held.insert(r.sequence, r.event_id.to_string());
            fresh.push(event);
        }
        let mut rows = fresh.chunks_exact(ROWS);
        for group in rows.by_ref() {
            if self.insert(group).is_err() {
                // Which row broke a constraint: row by row, the batch undone by the caller anyway.
                for event in group {
                    self.insert(std::slice::from_ref(event))?;
                }
            }
        }
        for event in rows.remainder() {
            self.insert(std::slice::from_ref(event))?;
        }
        Ok(fresh.len())
    }

    /// Inserts `rows` with one statement; a constraint broken names the line.
    fn insert(&self, rows: &[&(EventRecord, usize)]) -> CoreResult<()> {
        let sql = if rows.len() == ROWS { &self.many_sql } else { &self.one_sql };
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.error(e, "preparing the insert"))?;
        let bound = rows.iter().enumerate().try_for_each(|(i, (r, _))| -> rusqlite::Result<()> {
            let at = i * PARAMS;
            stmt.raw_bind_parameter(at + 1, r.sequence)?;
            stmt.raw_bind_parameter(at + 2, r.event_id.as_str())?;
            stmt.raw_bind_parameter(at + 3, r.event_type.as_str())?;
            stmt.raw_bind_parameter(at + 4, r.timestamp_us)?;
            stmt.raw_bind_parameter(at + 5, r.entity_type.as_str())?;
            stmt.raw_bind_parameter(at + 6, r.entity_id.as_str())?;
            stmt.raw_bind_parameter(at + 7, r.workflow_id.as_str())?;
            stmt.raw_bind_parameter(at + 8, r.version)?;
            stmt.raw_bind_parameter(at + 9, r.data.as_slice())?;
            stmt.raw_bind_parameter(at + 10, r.correlation_id.as_str())?;
            stmt.raw_bind_parameter(at + 11, r.causation_id.as_deref())?;
            stmt.raw_bind_parameter(at + 12, r.actor.as_str())?;
            stmt.raw_bind_parameter(at + 13, r.source_handler.as_deref())?;
            stmt.raw_bind_parameter(at + 14, r.schema_version)?;
            stmt.raw_bind_parameter(at + 15, index_key(&r.workflow_id))
        });
        match bound.and_then(|()| stmt.raw_execute()) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, message))
                if rows.len() == 1
                    && (e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                        || e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
            {
                let (r, line) = rows[0];
                let message = message.unwrap_or_default();
                let why = if message.contains("event_id") {
                    format!("an event with event_id {} is already stored at another sequence", r.event_id)
                } else {
                    format!("sequence {} appears twice in the file", r.sequence)
                };
                Err(CoreError::new(
                    Kind::DuplicateEvent,
                    format!(
                        "line {line}: {why} (in {}); nothing of this chunk was imported. {FIX}",
                        self.path.display()
                    ),
                ))
            }
            Err(e) => Err(self.error(e, &format!("storing line {}", rows[0].1))),
        }
    }
}

impl Drop for SqliteTarget {
    fn drop(&mut self) {
        // The thread's connection goes before ours, which then checkpoints the rest.
        self.checkpointer.stop();
    }
}
