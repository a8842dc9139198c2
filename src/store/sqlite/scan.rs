//! Reading event rows with SQLite's own column calls.
//!
//! rusqlite reads a column through four calls (a bounds check, the type, the
//! pointer, the length) behind a `Result`; a replay reads eight columns of a
//! million rows, and that wrapping was a quarter of its time. Event rows are
//! read here instead: statements prepared once per connection and kept, and
//! each column read with just the calls SQLite needs.

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

use rusqlite::types::Value;
use rusqlite::{ffi, Connection};

/// Statements kept per connection; event queries differ only by their filters.
const CAPACITY: usize = 24;

struct Prepared {
    sql: String,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

/// A connection's prepared event queries. Declared before the connection in
/// the struct that owns both, so the statements are finalized before it closes.
#[derive(Default)]
pub struct ScanStatements {
    /// Most recently used last.
    prepared: Vec<Prepared>,
}

// Used only under the mutex (or by the one thread) that owns its connection.
unsafe impl Send for ScanStatements {}

impl Drop for ScanStatements {
    fn drop(&mut self) {
        for p in self.prepared.drain(..) {
            // SAFETY: each statement is live and its connection still open (see above).
            unsafe { ffi::sqlite3_finalize(p.stmt.as_ptr()) };
        }
    }
}

impl ScanStatements {
    /// Run `sql` with `params` on `conn` (which must be the connection these
    /// statements belong to), returning a cursor over its rows.
    pub fn query<'s>(
        &'s mut self,
        conn: &'s Connection,
        sql: &str,
        params: &[Value],
    ) -> rusqlite::Result<Cursor<'s>> {
        // SAFETY: the handle is valid while `conn` is borrowed.
        let db = unsafe { conn.handle() };
        let stmt = match self.prepared.iter().position(|p| p.sql == sql) {
            Some(i) => {
                let p = self.prepared.remove(i);
                let stmt = p.stmt;
                self.prepared.push(p);
                stmt
            }
            None => {
                let stmt = prepare(db, sql)?;
                if self.prepared.len() == CAPACITY {
                    let old = self.prepared.remove(0);
                    // SAFETY: not in use (every cursor resets its statement when dropped).
                    unsafe { ffi::sqlite3_finalize(old.stmt.as_ptr()) };
                }
                self.prepared.push(Prepared { sql: sql.to_owned(), stmt });
                stmt
            }
        };
        let cursor = Cursor { stmt: stmt.as_ptr(), db, done: false, _owner: PhantomData };
        for (i, value) in params.iter().enumerate() {
            let index = i as c_int + 1;
            // SAFETY: a live statement; text is copied by SQLite (TRANSIENT).
            let rc = unsafe {
                match value {
                    Value::Integer(v) => ffi::sqlite3_bind_int64(stmt.as_ptr(), index, *v),
                    Value::Text(t) => ffi::sqlite3_bind_text64(
                        stmt.as_ptr(),
                        index,
                        t.as_ptr().cast::<c_char>(),
                        t.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    Value::Null => ffi::sqlite3_bind_null(stmt.as_ptr(), index),
                    other => panic!("event queries bind integers and text, not {other:?}"),
                }
            };
            if rc != ffi::SQLITE_OK {
                // SAFETY: as above; `cursor` resets the statement when dropped.
                return Err(unsafe { last_error(db, rc) });
            }
        }
        Ok(cursor)
    }
}

/// Prepare `sql` on `db` to be kept and reused.
pub(super) fn prepare(db: *mut ffi::sqlite3, sql: &str) -> rusqlite::Result<NonNull<ffi::sqlite3_stmt>> {
    let mut stmt = std::ptr::null_mut();
    // SAFETY: `db` is a live connection handle; SQLite copies nothing it does not own.
    unsafe {
        let rc = ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast::<c_char>(),
            sql.len() as c_int,
            ffi::SQLITE_PREPARE_PERSISTENT as _,
            &mut stmt,
            std::ptr::null_mut(),
        );
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(stmt),
            _ => {
                if !stmt.is_null() {
                    ffi::sqlite3_finalize(stmt);
                }
                Err(last_error(db, rc))
            }
        }
    }
}

/// The rows of one query; the statement is reset (and its bindings cleared)
/// when the cursor is dropped, however the reading ended.
pub struct Cursor<'s> {
    stmt: *mut ffi::sqlite3_stmt,
    db: *mut ffi::sqlite3,
    done: bool,
    _owner: PhantomData<&'s mut ScanStatements>,
}

impl Cursor<'_> {
    /// The next row, or None after the last.
    pub fn next(&mut self) -> rusqlite::Result<Option<Row<'_>>> {
        if self.done {
            return Ok(None);
        }
        // SAFETY: a live statement, bound, and stepped only here.
        match unsafe { ffi::sqlite3_step(self.stmt) } {
            ffi::SQLITE_ROW => Ok(Some(Row { stmt: self.stmt, _row: PhantomData })),
            ffi::SQLITE_DONE => {
                self.done = true;
                Ok(None)
            }
            rc => {
                self.done = true;
                // SAFETY: the connection is live while the cursor is.
                Err(unsafe { last_error(self.db, rc) })
            }
        }
    }
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        // SAFETY: a live statement; resetting ends its read transaction.
        unsafe {
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
        }
    }
}

/// The current row of a cursor; its slices live until the next step.
pub struct Row<'r> {
    stmt: *mut ffi::sqlite3_stmt,
    _row: PhantomData<&'r ()>,
}

impl<'r> Row<'r> {
    /// The column's value. The connection runs without a mutex (`SQLITE_OPEN_NO_MUTEX`),
    /// where SQLite makes no difference between protected and unprotected values, so
    /// the `sqlite3_value_*` calls below may read it: one column lookup instead of one per call.
    fn value(&self, i: c_int) -> *mut ffi::sqlite3_value {
        // SAFETY: a row is current; SQLite answers NULL for an index out of range.
        unsafe { ffi::sqlite3_column_value(self.stmt, i) }
    }

    /// The column as an integer, or None when it holds anything else.
    pub fn int(&self, i: c_int) -> Option<i64> {
        let v = self.value(i);
        // SAFETY: a live value of the current row; an integer is read without conversion.
        unsafe { (ffi::sqlite3_value_type(v) == ffi::SQLITE_INTEGER).then(|| ffi::sqlite3_value_int64(v)) }
    }

    /// The column's bytes when it holds text, else None.
    pub fn text(&self, i: c_int) -> Option<&'r [u8]> {
        let v = self.value(i);
        // SAFETY: text is returned as stored (no conversion) and lives until the next step.
        unsafe {
            (ffi::sqlite3_value_type(v) == ffi::SQLITE_TEXT).then(|| bytes(ffi::sqlite3_value_text(v), v))
        }
    }

    /// The column's bytes when it holds a blob, else None.
    pub fn blob(&self, i: c_int) -> Option<&'r [u8]> {
        let v = self.value(i);
        // SAFETY: as for `text`.
        unsafe {
            (ffi::sqlite3_value_type(v) == ffi::SQLITE_BLOB)
                .then(|| bytes(ffi::sqlite3_value_blob(v).cast(), v))
        }
    }

    /// Whether the column is NULL.
    pub fn is_null(&self, i: c_int) -> bool {
        // SAFETY: as in `int`.
        unsafe { ffi::sqlite3_value_type(self.value(i)) == ffi::SQLITE_NULL }
    }
}

/// The bytes of `v`, whose data SQLite gave as `ptr` (null for an empty value).
unsafe fn bytes<'r>(ptr: *const u8, v: *mut ffi::sqlite3_value) -> &'r [u8] {
    let len = ffi::sqlite3_value_bytes(v);
    if ptr.is_null() || len <= 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len as usize)
    }
}

/// The connection's error for a failed call that returned `rc`.
pub(super) unsafe fn last_error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    let code = ffi::sqlite3_extended_errcode(db);
    let code = if code == ffi::SQLITE_OK { rc } else { code };
    let msg = CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy().into_owned();
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_kept_evicted_and_rebound() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB); INSERT INTO t VALUES (1, 'one', x'01'), (2, NULL, x'');")
            .unwrap();
        let mut scans = ScanStatements::default();
        // More distinct queries than are kept: the oldest are finalized, later ones still run.
        for round in 0..2 {
            for k in 0..(CAPACITY as i64 + 6) {
                let sql = format!("SELECT i, s, b FROM t WHERE i >= ?1 AND {k} = {k} ORDER BY i");
                let mut rows = scans.query(&conn, &sql, &[Value::Integer(round + 1)]).unwrap();
                let mut seen = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    seen.push((row.int(0), row.text(1).map(<[u8]>::to_vec), row.blob(2).map(<[u8]>::to_vec)));
                    assert_eq!(row.int(1), None, "text or NULL is not an integer");
                    assert!(row.text(0).is_none(), "an integer is not text");
                }
                let want_first = (Some(1), Some(b"one".to_vec()), Some(vec![1u8]));
                let want_second = (Some(2), None, Some(Vec::new()));
                if round == 0 {
                    assert_eq!(seen, vec![want_first, want_second]);
                } else {
                    assert_eq!(seen, vec![want_second]);
                }
            }
            assert_eq!(scans.prepared.len(), CAPACITY);
        }
        // A cursor dropped half-way leaves its statement ready for the next run.
        let sql = "SELECT i FROM t ORDER BY i";
        let mut rows = scans.query(&conn, sql, &[]).unwrap();
        assert_eq!(rows.next().unwrap().unwrap().int(0), Some(1));
        drop(rows);
        let mut rows = scans.query(&conn, sql, &[]).unwrap();
        assert_eq!(rows.next().unwrap().unwrap().int(0), Some(1));
    }

    #[test]
    fn a_bad_query_is_an_error_not_a_kept_statement() {
        let conn = Connection::open_in_memory().unwrap();
        let mut scans = ScanStatements::default();
        assert!(scans.query(&conn, "SELECT nope FROM missing", &[]).is_err());
        assert!(scans.prepared.is_empty());
    }
}
