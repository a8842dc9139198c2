//! Writing imported events into an SQLite event store's file with the
//! sequences they had, one transaction per call, through a connection of its own
//! (the store's own writer assigns sequences; an import keeps them) and the
//! store's own insert statements (`store::sqlite::insert`).
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
use crate::store::sqlite::insert::{InsertStatement, Sequence, ROWS};
use crate::store::sqlite::wal_vfs;

/// How long a write waits for another writer of the file before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const FIX: &str = "Import into an empty store, or into the store this file came from";

pub struct SqliteTarget {
    // Declared before `conn`: their statements are finalized before the connection closes.
    insert: InsertStatement,
    /// The store's appends, for rows whose sequences are the next free ones anyway: SQLite
    /// then takes each from the end of the table instead of looking it up.
    append: InsertStatement,
    conn: Connection,
    /// Told of the WAL's size after each commit on `conn` (see `write`).
    checkpointer: Arc<Checkpointer>,
    path: PathBuf,
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
        // The store's own inserts, given each event's sequence.
        let insert = InsertStatement::prepare(&conn, Sequence::Kept).map_err(failed)?;
        let append = InsertStatement::prepare(&conn, Sequence::Assigned).map_err(failed)?;
        Ok(SqliteTarget { insert, append, conn, checkpointer, path: path.to_path_buf() })
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

    fn write_in_transaction(&mut self, events: &[(EventRecord, usize)]) -> CoreResult<usize> {
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
        // Sequences rising through the chunk (as an export writes them) cannot repeat in it:
        // then only those already stored need looking up.
        let rising = events.windows(2).all(|w| w[0].0.sequence < w[1].0.sequence);
        let mut seen: FxHashMap<i64, &str> = FxHashMap::default();
        let mut fresh: Vec<&EventRecord> = Vec::with_capacity(events.len());
        let mut lines: Vec<usize> = Vec::with_capacity(events.len());
        for (r, line) in events {
            let holder = match held.get(&r.sequence) {
                Some(id) => Some(id.as_str()),
                None if rising => None,
                None => seen.get(&r.sequence).copied(),
            };
            match holder {
                Some(id) if id == r.event_id.as_str() => continue,
                Some(id) => {
                    return Err(CoreError::new(
                        Kind::DuplicateEvent,
                        format!(
                            "line {line}: sequence {} is held by another event ({id}, not {}); nothing of \
                             this chunk was imported. {FIX}",
                            r.sequence, r.event_id
                        ),
                    ))
                }
                None => {}
            }
            if !rising {
                seen.insert(r.sequence, r.event_id.as_str());
            }
            fresh.push(r);
            lines.push(*line);
        }
        // The largest sequence stored (the transaction keeps other writers out while it runs).
        let mut top: i64 = self
            .conn
            .query_row("SELECT coalesce(max(sequence), 0) FROM event_log", [], |row| row.get(0))
            .map_err(|e| self.error(e, "reading the last sequence"))?;
        let mut at = 0;
        while at < fresh.len() {
            // Whole groups of `ROWS` in one step each, the rest one by one.
            let n = if fresh.len() - at >= ROWS { ROWS } else { 1 };
            let group = &fresh[at..at + n];
            // Rows whose sequences follow the largest stored, one by one, get the same ones
            // when SQLite assigns them (each gets one more than the largest in the table).
            let follows = group.iter().zip(1..).all(|(r, i)| top.checked_add(i) == Some(r.sequence));
            let statement = if follows { &mut self.append } else { &mut self.insert };
            match statement.execute(group) {
                Ok(_) => {
                    top = group.iter().map(|r| r.sequence).fold(top, i64::max);
                    at += n;
                }
                Err((e, written_last)) => {
                    // The step kept the rows before the one that failed (`OR FAIL`); the
                    // transaction is rolled back by the caller.
                    let failed = at
                        + written_last
                            .and_then(|s| group.iter().position(|r| r.sequence == s))
                            .map_or(0, |i| i + 1);
                    let failed = failed.min(at + n - 1);
                    return Err(self.insert_error(e, fresh[failed], lines[failed]));
                }
            }
        }
        Ok(fresh.len())
    }

    /// The error of storing the event `r` of line `line` alone; a constraint broken names the line.
    fn insert_error(&self, e: rusqlite::Error, r: &EventRecord, line: usize) -> CoreError {
        match e {
            rusqlite::Error::SqliteFailure(e, message)
                if e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                let message = message.unwrap_or_default();
                let why = if message.contains("event_id") {
                    format!("an event with event_id {} is already stored at another sequence", r.event_id)
                } else {
                    format!("sequence {} appears twice in the file", r.sequence)
                };
                CoreError::new(
                    Kind::DuplicateEvent,
                    format!(
                        "line {line}: {why} (in {}); nothing of this chunk was imported. {FIX}",
                        self.path.display()
                    ),
                )
            }
            e => self.error(e, &format!("storing line {line}")),
        }
    }
}

impl Drop for SqliteTarget {
    fn drop(&mut self) {
        // The thread's connection goes before ours, which then checkpoints the rest.
        self.checkpointer.stop();
    }
}
