//! The SQLite backend (rusqlite, on the system SQLite: see `library`).
//!
//! One writer connection appends inside `BEGIN IMMEDIATE` transactions, so
//! sequences (the table's rowid) are assigned under SQLite's write lock and
//! stay unique across threads and processes; under contention a writer waits
//! up to the busy timeout. Readers take connections from a small pool and, in
//! WAL mode, never block the writer. All of it runs without the GIL.
//!
//! - `config`: settings and error reporting (a leaf the rest imports).
//! - `open`: opening a store (path checks, connection settings, tables).
//! - `schema`: the tables and the columns queries read.
//! - `query`: the SQL of a `Filter`, and rows back as events.
//! - `scan`, `insert`: raw prepared statements for reading and appending rows.
//! - `write`: appending with group commit.
//! - `checkpoint`, `wal_vfs`: WAL checkpoints off the append path, and WAL writes coalesced.
//! - `library`, `index_key`: the SQLite library loaded, and the workflow index key.

pub(crate) mod checkpoint;
pub mod config;
pub mod index_key;
pub mod insert;
pub mod library;
mod open;
mod query;
mod scan;
pub mod schema;
pub(crate) mod wal_vfs;
mod write;

use std::sync::{Arc, Mutex};

use rusqlite::types::Value;
use rusqlite::Connection;

use checkpoint::Checkpointer;
use config::{damaged_error, location_text, sql_error};
pub use config::{Access, Location, SqliteConfig, Synchronous};
use query::{query_sql, row_to_view, where_clause};
use scan::ScanStatements;
pub use schema::SCHEMA_VERSION;
use schema::{COLUMNS, FOLD_COLUMNS};
use write::{commit_group, Request, WriteQueue, Writer};

use super::{Backend, Expectation, Filter, Pause, SnapshotRecord, SubscriptionRecord, Take, Visitor};
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::EventRecord;

/// A pooled read connection with its prepared event queries.
struct Reader {
    // Declared before `conn`: statements are finalized before the connection closes.
    scans: ScanStatements,
    conn: Connection,
}

pub struct SqliteBackend {
    config: SqliteConfig,
    writer: Mutex<Option<Writer>>,
    /// Idle read connections (file databases only; `:memory:` reads through the writer).
    readers: Mutex<Vec<Reader>>,
    /// Appends waiting for the writer (group commit).
    queue: WriteQueue,
    closed: std::sync::atomic::AtomicBool,
    /// WAL checkpoints off the append path (file stores at `synchronous=NORMAL`).
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
    }
}

impl SqliteBackend {
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
            Some(writer) => {
                let _committing = checkpoint::Committing::enter(self.checkpointer.as_ref());
                f(writer)
            }
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
                let mmap_bytes = if self.config.mmap_reads { config::READ_MMAP_BYTES } else { 0 };
                conn.execute_batch(&format!(
                    "PRAGMA cache_size=-32768; PRAGMA query_only=1; PRAGMA mmap_size={mmap_bytes};"
                ))
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

    /// `Backend::scan`, or with `pause` `Backend::scan_pausing`: the snapshots are read on the
    /// scan's connection while its statement is open, so within the same read transaction.
    fn scan_rows(
        &self,
        filter: &Filter,
        full: bool,
        visit: &mut Visitor<'_>,
        mut pause: Option<(u64, &mut Pause<'_>)>,
    ) -> CoreResult<()> {
        let (sql, params) = where_clause(filter);
        let columns = if full { COLUMNS } else { FOLD_COLUMNS };
        let full_sql = format!("SELECT {columns} FROM event_log{sql} ORDER BY sequence ASC");
        self.with_scans(|conn, scans| {
            let mut rows = scans
                .query(conn, &full_sql, &params)
                .map_err(|e| sql_error(e, "scanning events", &self.config))?;
            let mut seen = 0u64;
            while let Some(row) = rows.next().map_err(|e| sql_error(e, "scanning events", &self.config))? {
                if let Some((at, pause)) = pause.as_mut() {
                    if seen == *at {
                        let mut read =
                            |entity_type: &str, entity_id: &str, max: Option<i64>, limit: usize| {
                                read_snapshots(conn, &self.config, entity_type, entity_id, max, limit)
                            };
                        if !pause(&mut read)? {
                            return Ok(());
                        }
                    }
                    seen += 1;
                }
                visit(row_to_view(&row, full))?;
            }
            Ok(())
        })
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
        self.scan_rows(filter, full, visit, None)
    }

    fn scan_pausing(
        &self,
        filter: &Filter,
        full: bool,
        visit: &mut Visitor<'_>,
        pause_after: u64,
        pause: &mut Pause<'_>,
    ) -> CoreResult<()> {
        self.scan_rows(filter, full, visit, Some((pause_after, pause)))
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
        self.save_snapshots(std::slice::from_ref(snap))
    }

    fn save_snapshots(&self, snapshots: &[SnapshotRecord]) -> CoreResult<()> {
        // One transaction: one commit for a batch, and none of it stored if any fails.
        fn write(conn: &mut Connection, snapshots: &[SnapshotRecord]) -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO event_snapshot (entity_type, entity_id, sequence, workflow_id, \
                     version, state, state_hash, created_at_us, max_event_us) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for snap in snapshots {
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
                    ])?;
                }
            }
            tx.commit()
        }
        self.with_writer(|conn| {
            write(conn, snapshots).map_err(|e| sql_error(e, "saving snapshots", &self.config))
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
            read_snapshots(conn, &self.config, entity_type, entity_id, max_sequence, limit)
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
        self.config.split_reads && matches!(self.config.location, Location::File(_))
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

/// `Backend::snapshots` on `conn` (a reader, or the scan's connection mid-scan).
fn read_snapshots(
    conn: &Connection,
    config: &SqliteConfig,
    entity_type: &str,
    entity_id: &str,
    max_sequence: Option<i64>,
    limit: usize,
) -> CoreResult<Vec<SnapshotRecord>> {
    let mut stmt = conn
            .prepare_cached(
                "SELECT entity_type, entity_id, sequence, workflow_id, version, state, state_hash, created_at_us, \
                 max_event_us \
                 FROM event_snapshot WHERE entity_type = ?1 AND entity_id = ?2 AND sequence <= ?3 \
                 ORDER BY sequence DESC LIMIT ?4",
            )
            .map_err(|e| sql_error(e, "preparing a snapshot query", config))?;
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
    rows.map_err(|e| sql_error(e, "reading snapshots", config))
}
