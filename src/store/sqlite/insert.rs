//! The event inserts as raw SQLite statements, their text bound in place.
//!
//! rusqlite binds every text and blob as `SQLITE_TRANSIENT`, copying each of
//! the fourteen parameters of every appended event: that binding alone was an
//! eighth of a batch append. These statements bind them `SQLITE_STATIC` from
//! the records, which outlive the step, and are reused for the writer's life.
//! A batch goes in `ROWS` rows per step, its last few one row per step.
//! The same statements, given each row's sequence, store an import's events
//! with the sequences they had (`jsonl::sqlite_target`).

use std::borrow::Borrow;
use std::ffi::{c_char, c_int};
use std::ptr::NonNull;

use rusqlite::{ffi, Connection};

use super::index_key::index_key;
use super::scan::{last_error, prepare};
use crate::event::EventRecord;

const COLUMNS: &str =
    "event_id, event_type, timestamp_us, entity_type, entity_id, workflow_id, version, data, \
     correlation_id, causation_id, actor, source_handler, schema_version, workflow_key";
/// Parameters of one row, in `COLUMNS` order.
const PARAMS: usize = 14;
/// Rows inserted by one step of the multi-row statement. Each step of a
/// statement opens and closes a cursor on the table and on each index and
/// resets every parameter: a fifth of an append of one row at a time.
pub const ROWS: usize = 32;
/// Columns (as bits of their parameter numbers in a row) a multi-row step may
/// take from its first row: workflow id (6), correlation id (9), actor (11),
/// source handler (12), schema version (13) and workflow key (14).
const SHARED: u16 = 1 << 6 | 1 << 9 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 14;

fn is_shared(param: usize) -> bool {
    SHARED >> param & 1 == 1
}

/// Whether every record has the first one's `SHARED` columns (the workflow key
/// follows from the workflow id).
fn share_first<R: Borrow<EventRecord>>(records: &[R]) -> bool {
    let first = records[0].borrow();
    records[1..].iter().map(Borrow::borrow).all(|r: &EventRecord| {
        r.workflow_id == first.workflow_id
            && r.correlation_id == first.correlation_id
            && r.actor == first.actor
            && r.source_handler == first.source_handler
            && r.schema_version == first.schema_version
    })
}

/// `OR FAIL`: a row that breaks a constraint stops the step, keeping the rows
/// before it (they go with the transaction or savepoint the caller rolls
/// back). With the default `OR ABORT`, SQLite would keep a statement journal
/// to undo a multi-row step's earlier rows, copying each page it touches.
///
/// With `shared`, every row takes the `SHARED` columns from the first row's
/// parameters: the rows of a batch mostly share their workflow and metadata,
/// and each parameter bound costs about a hundred instructions.
///
/// With `sequence`, each row's first parameter is its sequence, before the `COLUMNS`.
fn insert_sql(rows: usize, shared: bool, sequence: Sequence) -> String {
    let lead = sequence.lead();
    let width = PARAMS + lead;
    let row = |r: usize| {
        let params: Vec<String> = (1..=width)
            .map(|c| if shared && r > 0 && c > lead && is_shared(c - lead) { c } else { r * width + c })
            .map(|n| format!("?{n}"))
            .collect();
        format!("({})", params.join(", "))
    };
    let values: Vec<String> = (0..rows).map(row).collect();
    let first = if lead == 1 { "sequence, " } else { "" };
    format!("INSERT OR FAIL INTO event_log ({first}{COLUMNS}) VALUES {}", values.join(", "))
}

/// Where the inserted rows' sequences come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// The next free ones, in order (an append).
    Assigned,
    /// Each record's own `sequence` (an import, keeping them).
    Kept,
}

impl Sequence {
    /// Parameters of a row before its `COLUMNS`.
    fn lead(self) -> usize {
        match self {
            Sequence::Assigned => 0,
            Sequence::Kept => 1,
        }
    }
}

/// One row of `event_log`, its sequence first (NULL: the next free one), then the
/// `COLUMNS`: the statement a caller's own connection runs to store an event
/// inside its own transaction (`NativeStore.sqlite_row` gives the parameters).
pub fn row_insert_sql() -> String {
    let params = vec!["?"; PARAMS + 1].join(", ");
    format!("INSERT INTO event_log (sequence, {COLUMNS}) VALUES ({params})")
}

/// Prepared inserts into `event_log` (of one row, and of `ROWS` rows with
/// and without `SHARED` columns), owned by the connection's writer (or an import's).
///
/// They must be dropped before their connection is closed (`Writer` orders
/// its fields so).
pub struct InsertStatement {
    one: NonNull<ffi::sqlite3_stmt>,
    many: NonNull<ffi::sqlite3_stmt>,
    many_shared: NonNull<ffi::sqlite3_stmt>,
    db: *mut ffi::sqlite3,
    /// Parameters of a row before its `COLUMNS` (`Sequence::lead`).
    lead: c_int,
}

// The statements are only used under the writer's mutex, like their connection.
unsafe impl Send for InsertStatement {}

impl InsertStatement {
    pub fn prepare(conn: &Connection, sequence: Sequence) -> rusqlite::Result<InsertStatement> {
        // SAFETY: the handle is valid while `conn` is open; the statements are
        // finalized (in Drop) before the owning `Writer` closes `conn`.
        let db = unsafe { conn.handle() };
        let mut made = Vec::with_capacity(3);
        for (rows, shared) in [(1, false), (ROWS, false), (ROWS, true)] {
            match prepare(db, &insert_sql(rows, shared, sequence)) {
                Ok(stmt) => made.push(stmt),
                Err(e) => {
                    // SAFETY: prepared above and not kept.
                    made.iter().for_each(|stmt| unsafe {
                        ffi::sqlite3_finalize(stmt.as_ptr());
                    });
                    return Err(e);
                }
            }
        }
        Ok(InsertStatement {
            one: made[0],
            many: made[1],
            many_shared: made[2],
            db,
            lead: sequence.lead() as c_int,
        })
    }

    /// Insert `records` (one, or `ROWS` of them) in one step, returning the
    /// sequence (rowid) the last was given; with `Sequence::Assigned` the others
    /// were given the ones before it, in order (each row of an insert without a
    /// rowid gets one more than the largest in the table). On failure, also the
    /// sequence of the last record the step wrote before the one that failed, if any.
    pub fn execute<R: Borrow<EventRecord>>(
        &mut self,
        records: &[R],
    ) -> Result<i64, (rusqlite::Error, Option<i64>)> {
        let shared = records.len() > 1 && share_first(records);
        let s = match records.len() {
            1 => self.one.as_ptr(),
            ROWS if shared => self.many_shared.as_ptr(),
            ROWS => self.many.as_ptr(),
            n => unreachable!("an insert of {n} rows"),
        };
        // SAFETY: every pointer bound below borrows `records`, which outlive
        // the step; the statement is reset before this returns, and every
        // parameter is bound again before the next step.
        unsafe {
            // No event has rowid 0: still 0 after a failed step, the step wrote nothing.
            ffi::sqlite3_set_last_insert_rowid(self.db, 0);
            let mut rc = ffi::SQLITE_OK;
            let lead = self.lead;
            for (row, r) in records.iter().map(Borrow::borrow).enumerate() {
                let base = row as c_int * (PARAMS as c_int + lead);
                if lead == 1 && rc == ffi::SQLITE_OK {
                    rc = ffi::sqlite3_bind_int64(s, base + 1, r.sequence);
                }
                // Column `i` of `COLUMNS` (from 1) is parameter `at + i`.
                let at = base + lead;
                // The statement reads these from the first row's parameters.
                let skip = |i: c_int| shared && row > 0 && is_shared(i as usize);
                let mut text = |i: c_int, v: Option<&str>| {
                    if rc == ffi::SQLITE_OK && !skip(i) {
                        rc = match v {
                            Some(v) => ffi::sqlite3_bind_text64(
                                s,
                                at + i,
                                v.as_ptr().cast::<c_char>(),
                                v.len() as u64,
                                ffi::SQLITE_STATIC(),
                                ffi::SQLITE_UTF8 as u8,
                            ),
                            None => ffi::sqlite3_bind_null(s, at + i),
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
                let key = if skip(14) { 0 } else { index_key(&r.workflow_id) };
                let ints = [(3, r.timestamp_us), (7, r.version), (13, r.schema_version), (14, key)];
                for (i, v) in ints {
                    if rc == ffi::SQLITE_OK && !skip(i) {
                        rc = ffi::sqlite3_bind_int64(s, at + i, v);
                    }
                }
                if rc == ffi::SQLITE_OK {
                    rc = ffi::sqlite3_bind_blob64(
                        s,
                        at + 8,
                        r.data.as_ptr().cast(),
                        r.data.len() as u64,
                        ffi::SQLITE_STATIC(),
                    );
                }
            }
            if rc == ffi::SQLITE_OK {
                rc = ffi::sqlite3_step(s);
            }
            let result = if rc == ffi::SQLITE_DONE {
                Ok(ffi::sqlite3_last_insert_rowid(self.db))
            } else {
                let last = ffi::sqlite3_last_insert_rowid(self.db);
                Err((last_error(self.db, rc), (last != 0).then_some(last)))
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
            ffi::sqlite3_finalize(self.one.as_ptr());
            ffi::sqlite3_finalize(self.many.as_ptr());
            ffi::sqlite3_finalize(self.many_shared.as_ptr());
        }
    }
}
