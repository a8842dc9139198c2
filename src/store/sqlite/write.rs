//! Appending to SQLite, with group commit.
//!
//! Every append queues a request. If no commit is under way, its caller
//! becomes the leader: it takes *all* queued requests and commits them in one
//! transaction (one WAL sync). Callers arriving meanwhile wait; when the commit
//! ends they are woken, those whose request was committed return, and one of
//! the rest leads the next group. Under concurrency many appends share one
//! sync, yet each call returns only after its own events are committed. Requests in a group
//! are isolated by savepoints: one failing (a duplicate id, a version conflict)
//! writes nothing of its own and leaves the others alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, ErrorCode};

use super::config::{sql_error, SqliteConfig};
use super::insert::{InsertStatement, Sequence, ROWS};
use super::scan::ScanStatements;
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::EventRecord;
use crate::store::Expectation;

const LATEST_VERSION: &str = "SELECT version FROM event_log WHERE entity_id = ?1 \
     AND (?2 IS NULL OR entity_type = ?2) ORDER BY sequence DESC LIMIT 1";

type Work = (Vec<EventRecord>, Vec<Expectation>);

/// The writer connection with its raw insert statements.
pub struct Writer {
    // Declared before `conn`: statements are finalized before the connection closes.
    insert: Option<InsertStatement>,
    /// Event queries of a `:memory:` store, which reads through its writer.
    pub scans: ScanStatements,
    pub conn: Connection,
}

impl Writer {
    pub fn new(conn: Connection) -> Writer {
        Writer { insert: None, scans: ScanStatements::default(), conn }
    }
}

/// One caller's append, waiting to be committed by whoever holds the writer.
pub struct Request {
    work: Mutex<Option<Work>>,
    slot: Mutex<Slot>,
    /// Signalled when `slot` gets a result or the lead: each caller sleeps on
    /// its own, so a commit wakes only the callers it finished and the next leader.
    wake: Condvar,
}

#[derive(Default)]
struct Slot {
    result: Option<CoreResult<Vec<EventRecord>>>,
    /// Handed over by the previous leader: commit the pending requests.
    lead: bool,
    /// The caller sleeps on `wake`: only then is a wake-up (a system call) sent.
    sleeping: bool,
}

impl Request {
    pub fn new(records: Vec<EventRecord>, expect: Vec<Expectation>) -> Arc<Request> {
        Arc::new(Request {
            work: Mutex::new(Some((records, expect))),
            slot: Mutex::new(Slot::default()),
            wake: Condvar::new(),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn take_result(&self) -> CoreResult<Vec<EventRecord>> {
        self.slot()
            .result
            .take()
            .unwrap_or_else(|| Err(CoreError::new(Kind::Store, "append was never committed")))
    }

    pub fn finish(&self, result: CoreResult<Vec<EventRecord>>) {
        let mut slot = self.slot();
        slot.result = Some(result);
        if slot.sleeping {
            self.wake.notify_one();
        }
    }

    fn promote(&self) {
        let mut slot = self.slot();
        slot.lead = true;
        if slot.sleeping {
            self.wake.notify_one();
        }
    }

    /// Sleep until this request has its result (true) or the lead (false).
    fn wait(&self) -> bool {
        let mut slot = self.slot();
        while slot.result.is_none() && !slot.lead {
            slot.sleeping = true;
            slot = self.wake.wait(slot).unwrap_or_else(|p| p.into_inner());
            slot.sleeping = false;
        }
        slot.lead = false;
        slot.result.is_some()
    }

    fn take_work(&self) -> Work {
        self.work.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default()
    }
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Arc<Request>>,
    leading: bool,
    /// Requests the last commit carried: as many callers are likely on their way.
    last_group: usize,
    /// A leader is waiting on `arrivals` for its group to fill.
    gathering: bool,
}

/// Longest a leader waits for its group to fill before committing. A commit
/// at full durability costs an fsync (0.1 ms on fast SSDs, milliseconds on
/// disks), while callers that just got their results back queue their next
/// append within microseconds. With 8 threads appending at FULL, 30-60 us
/// filled every commit (8 appends, from 4.2 without waiting); 100-400 us only
/// delayed the commit.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(50);

/// Requests waiting for a commit, and who is committing.
#[derive(Default)]
pub struct WriteQueue {
    state: Mutex<QueueState>,
    arrivals: Condvar,
    /// Transactions that committed appends, and the appends they stored (their
    /// ratio is the mean group size); failed appends and transactions count in neither.
    pub commits: AtomicU64,
    pub appends_stored: AtomicU64,
}

/// Clears the leader flag and hands the lead to the oldest waiting request,
/// even if the commit panicked (then its unfinished requests fail, rather
/// than wait forever).
struct Leadership<'a>(&'a WriteQueue, &'a [Arc<Request>]);

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for r in self.1.iter().filter(|r| r.slot().result.is_none()) {
                r.finish(Err(CoreError::new(Kind::Store, "the commit carrying this append panicked")));
            }
        }
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.leading = false;
        if let Some(next) = state.pending.first() {
            next.promote();
        }
    }
}

impl WriteQueue {
    /// Queue `request` and return once it is committed (or failed), leading
    /// group commits with `commit` whenever no one else is; `commit` returns
    /// how many of the group's requests it stored.
    pub fn run(&self, request: &Arc<Request>, commit: impl Fn(&[Arc<Request>]) -> usize) {
        let mut queued = false;
        loop {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !queued {
                state.pending.push(request.clone());
                queued = true;
                if state.gathering && state.pending.len() >= state.last_group {
                    self.arrivals.notify_one();
                }
            }
            if !state.leading && !state.pending.is_empty() {
                state.leading = true;
                state = self.gather(state);
                state.last_group = state.pending.len();
                let group = std::mem::take(&mut state.pending);
                drop(state);
                let _leading = Leadership(self, &group);
                let stored = commit(&group);
                if stored > 0 {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.appends_stored.fetch_add(stored as u64, Ordering::Relaxed);
                }
            } else {
                drop(state);
            }
            // Our request went into this or an earlier group, or waits for the next.
            if request.wait() {
                return;
            }
        }
    }

    /// As the new leader, wait (at most `GATHER_WAIT`) until as many requests
    /// are pending as the last commit carried: under concurrent appends that
    /// fills each commit instead of syncing the disk for the first few alone.
    /// A lone writer never waits (its last group was itself).
    fn gather<'a>(&self, mut state: MutexGuard<'a, QueueState>) -> MutexGuard<'a, QueueState> {
        if state.pending.len() >= state.last_group {
            return state;
        }
        let deadline = std::time::Instant::now() + GATHER_WAIT;
        state.gathering = true;
        while state.pending.len() < state.last_group {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            state = self.arrivals.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        state.gathering = false;
        state
    }
}

/// Commit `group` in one transaction, finishing every request with its
/// outcome; how many requests it stored.
pub fn commit_group(writer: &mut Writer, group: &[Arc<Request>], config: &SqliteConfig) -> usize {
    let mut works = group.iter().map(|r| r.take_work()).peekable();
    if let ([request], Some((records, expect))) = (group, works.peek_mut()) {
        if records.len() == 1 && expect.is_empty() {
            // One event, nothing to check first: its insert is its own transaction
            // (it takes the write lock as it starts, waiting as BEGIN IMMEDIATE
            // would), which spares running BEGIN and COMMIT statements.
            let outcome = insert(writer, std::mem::take(records), &[], config);
            let stored = usize::from(outcome.is_ok());
            request.finish(outcome);
            return stored;
        }
    }
    if let Err(e) = run(&writer.conn, "BEGIN IMMEDIATE") {
        let err = sql_error(e, "starting a write transaction", config);
        group.iter().for_each(|r| r.finish(Err(err.clone())));
        return 0;
    }
    // A lone request needs no savepoint: on failure the whole transaction goes.
    let isolate = group.len() > 1;
    let mut outcomes = Vec::with_capacity(group.len());
    for (records, expect) in works {
        if isolate {
            if let Err(e) = run(&writer.conn, "SAVEPOINT request") {
                outcomes.push(Err(sql_error(e, "opening a savepoint", config)));
                continue;
            }
        }
        let outcome = insert(writer, records, &expect, config);
        let closed = if !isolate {
            Ok(())
        } else if outcome.is_ok() {
            run(&writer.conn, "RELEASE request")
        } else {
            run(&writer.conn, "ROLLBACK TO request").and_then(|_| run(&writer.conn, "RELEASE request"))
        };
        outcomes.push(match closed {
            Ok(()) => outcome,
            Err(e) => Err(sql_error(e, "closing a savepoint", config)),
        });
    }
    let failed_alone = !isolate && outcomes.first().is_some_and(|o| o.is_err());
    let ended = if failed_alone { run(&writer.conn, "ROLLBACK") } else { run(&writer.conn, "COMMIT") };
    match ended {
        Ok(()) => {
            // (A lone failed request was rolled back: then nothing counts as stored.)
            let stored = outcomes.iter().filter(|o| o.is_ok()).count();
            group.iter().zip(outcomes).for_each(|(r, o)| r.finish(o));
            stored
        }
        Err(e) => {
            // SQLite may leave the transaction open after a failed COMMIT: end it.
            if !writer.conn.is_autocommit() {
                let _ = run(&writer.conn, "ROLLBACK");
            }
            let err = sql_error(e, "committing appended events", config);
            for (r, o) in group.iter().zip(outcomes) {
                r.finish(o.and(Err(err.clone())));
            }
            0
        }
    }
}

/// Run a statement from the connection's cache: transaction control is issued
/// for every append, and re-parsing it each time would cost more than the insert.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Check `expect`, then insert `records`, assigning their sequences.
fn insert(
    writer: &mut Writer,
    mut records: Vec<EventRecord>,
    expect: &[Expectation],
    config: &SqliteConfig,
) -> CoreResult<Vec<EventRecord>> {
    let conn = &writer.conn;
    for e in expect {
        let actual: Option<i64> = conn
            .prepare_cached(LATEST_VERSION)
            .and_then(|mut s| {
                let mut rows = s.query(rusqlite::params![e.entity_id.as_str(), e.entity_type.as_deref()])?;
                rows.next()?.map(|r| r.get(0)).transpose()
            })
            .map_err(|err| sql_error(err, "reading an entity's version", config))?;
        if actual.unwrap_or(0) != e.version {
            return Err(e.conflict(actual.unwrap_or(0)));
        }
    }
    let stmt = match &mut writer.insert {
        Some(stmt) => stmt,
        slot => slot.insert(
            InsertStatement::prepare(&writer.conn, Sequence::Assigned)
                .map_err(|e| sql_error(e, "preparing the insert", config))?,
        ),
    };
    let mut at = 0;
    while at < records.len() {
        // Whole chunks of `ROWS` in one step each, the rest one by one.
        let n = if records.len() - at >= ROWS { ROWS } else { 1 };
        let chunk = &mut records[at..at + n];
        let last = match stmt.execute(chunk) {
            Ok(last) => last,
            Err((e, _)) if e.sqlite_error_code() != Some(ErrorCode::ConstraintViolation) => {
                return Err(sql_error(e, "appending events", config));
            }
            Err((_, written_last)) => {
                let failed = &chunk[first_unwritten(&writer.conn, chunk, written_last).min(n - 1)];
                return Err(CoreError::new(
                    Kind::DuplicateEvent,
                    format!("event {} is already stored; nothing of this batch was written", failed.event_id),
                ));
            }
        };
        for (r, sequence) in chunk.iter_mut().zip(last + 1 - n as i64..) {
            r.sequence = sequence;
        }
        at += n;
    }
    Ok(records)
}

/// Which record of `chunk` a failed step stopped at, given the sequence of the
/// last record it wrote (`OR FAIL` keeps the rows before the failing one).
/// Those rows have distinct ids, or the step would have stopped sooner, so
/// the first record with the last written row's id is the last one written.
fn first_unwritten(conn: &Connection, chunk: &[EventRecord], written_last: Option<i64>) -> usize {
    let Some(sequence) = written_last else { return 0 };
    let id: Option<String> = conn
        .query_row("SELECT event_id FROM event_log WHERE sequence = ?1", [sequence], |row| row.get(0))
        .ok();
    id.and_then(|id| chunk.iter().position(|r| r.event_id == id.as_str())).map_or(0, |last| last + 1)
}
