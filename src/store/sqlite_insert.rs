//! The event insert as a raw SQLite statement, its text bound in place.
//!
//! rusqlite binds every text and blob as `SQLITE_TRANSIENT`, copying each of
//! the fourteen parameters of every appended event: that binding alone was an
//! eighth of a batch append. This statement binds them `SQLITE_STATIC` from
//! the record, which outlives the step, and is reused for the writer's life.

use std::ffi::{c_char, c_int};
use std::ptr::NonNull;

use rusqlite::{ffi, Connection};

use super::index_key::index_key;
use super::sqlite_scan::{last_error, prepare};
use crate::event::EventRecord;

const INSERT: &str = "INSERT INTO event_log (event_id, event_type, timestamp_us, entity_type, entity_id, \
     workflow_id, version, data, correlation_id, causation_id, actor, source_handler, schema_version, \
     workflow_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// A prepared insert into `event_log`, owned by the connection's writer.
///
/// It must be dropped before its connection is closed (`Writer` orders its
/// fields so).
pub struct InsertStatement {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: *mut ffi::sqlite3,
}

// The statement is only used under the writer's mutex, like its connection.
unsafe impl Send for InsertStatement {}

impl InsertStatement {
    pub fn prepare(conn: &Connection) -> rusqlite::Result<InsertStatement> {
        // SAFETY: the handle is valid while `conn` is open; the statement is
        // finalized (in Drop) before the owning `Writer` closes `conn`.
        let db = unsafe { conn.handle() };
        Ok(InsertStatement { stmt: prepare(db, INSERT)?, db })
    }

    /// Insert `r`, returning the sequence (rowid) it was given.
    pub fn execute(&mut self, r: &EventRecord) -> rusqlite::Result<i64> {
        let s = self.stmt.as_ptr();
        // SAFETY: every pointer bound below borrows `r`, which outlives the
        // step; the statement is reset before this returns, and every
        // parameter is bound again before the next step.
        unsafe {
            let mut rc = ffi::SQLITE_OK;
            let mut text = |i: c_int, v: Option<&str>| {
                if rc == ffi::SQLITE_OK {
                    rc = match v {
                        Some(v) => ffi::sqlite3_bind_text64(
                            s,
                            i,
                            v.as_ptr().cast::<c_char>(),
                            v.len() as u64,
                            ffi::SQLITE_STATIC(),
                            ffi::SQLITE_UTF8 as u8,
                        ),
                        None => ffi::sqlite3_bind_null(s, i),
                    };
                }
            };
            text(1, Some(&r.event_id));
            text(2, Some(&r.event_type));
            text(4, Some(&r.entity_type));
            text(5, Some(&r.entity_id));
            text(6, Some(&r.workflow_id));
            text(9, Some(&r.correlation_id));
            text(10, r.causation_id.as_deref());
            text(11, Some(&r.actor));
            text(12, r.source_handler.as_deref());
            let ints = [
                (3, r.timestamp_us),
                (7, r.version),
                (13, r.schema_version),
                (14, index_key(&r.workflow_id)),
            ];
            for (i, v) in ints {
                if rc == ffi::SQLITE_OK {
                    rc = ffi::sqlite3_bind_int64(s, i, v);
                }
            }
            if rc == ffi::SQLITE_OK {
                rc = ffi::sqlite3_bind_blob64(
                    s,
                    8,
                    r.data.as_ptr().cast(),
                    r.data.len() as u64,
                    ffi::SQLITE_STATIC(),
                );
            }
            if rc == ffi::SQLITE_OK {
                rc = ffi::sqlite3_step(s);
            }
            let result = if rc == ffi::SQLITE_DONE {
                Ok(ffi::sqlite3_last_insert_rowid(self.db))
            } else {
                Err(last_error(self.db, rc))
            };
            ffi::sqlite3_reset(s);
            result
        }
    }
}

impl Drop for InsertStatement {
    fn drop(&mut self) {
        // SAFETY: the statement is live and its connection still open.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}
