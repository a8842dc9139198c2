//! `SnapshotSaver`: snapshots of folded states written after the rebuild that
//! folded them has returned.
//!
//! A snapshot is a cache: a rebuild hands its folded state over and returns at
//! once. One worker thread per store encodes the states it holds
//! (`to_msgpack`), hashes the bytes and writes them in one transaction once no
//! new save has come for `QUIET`, or as soon as someone waits for one of them
//! (or too much is held). A burst of rebuilds thus runs with no saving beside
//! it (no core taken from it, no commit between its reads: a commit makes
//! every reader of the database drop its page cache), and its snapshots take
//! one commit instead of one each.
//!
//! What that guarantees:
//!
//! - Reads of an entity's snapshots (`wait_for`) and `wait_all` (a store's
//!   `flush_snapshots` and `close`) wait for its pending saves, so a process
//!   that reads or closes sees every snapshot it handed over.
//! - A crash before the write commits loses those snapshots and nothing else:
//!   the events are already stored, the rows are written in one transaction,
//!   and a row whose bytes do not match its hash is never used anyway.
//! - A save that fails is reported, not raised: `take_failures` hands its
//!   message back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::WorkflowState;
use crate::store::snapshot::bytes_hash;
use crate::store::{Backend, SnapshotRecord};

/// How much the states held for a quiet moment may weigh in all (each one plus its stages
/// and tasks, some 200 bytes each once encoded): past that they are saved at once.
const MAX_HELD_WEIGHT: usize = 500_000;
/// How long no save must come before the held ones are written.
const QUIET: Duration = Duration::from_millis(50);
/// How long the worker waits with nothing to do before it ends (a later save starts another).
const IDLE: Duration = Duration::from_secs(2);
/// Failure messages kept until taken; later ones are only counted.
const MAX_FAILURES: usize = 16;

/// One state to save: the folded state and its row, still without bytes and hash.
struct Job {
    state: WorkflowState,
    record: SnapshotRecord,
}

#[derive(Default)]
struct Queue {
    /// The process the state below belongs to: a child made by `fork` has no worker, and its
    /// parent saves what was pending (see `Shared::lock`).
    pid: u32,
    /// States to save, in order, and their weight in all (see `MAX_HELD_WEIGHT`).
    jobs: VecDeque<Job>,
    held_weight: usize,
    /// Saves handed over and not finished, by entity id (none in flight when empty).
    pending: HashMap<String, usize>,
    /// Threads waiting for saves to finish: the held ones are written at once then.
    waiters: usize,
    last_arrival: Option<Instant>,
    worker_running: bool,
    failures: Vec<String>,
    failures_dropped: usize,
}

impl Queue {
    /// Whether the held states are to be saved now.
    fn save_now(&self) -> bool {
        !self.jobs.is_empty()
            && (self.waiters > 0
                || self.held_weight >= MAX_HELD_WEIGHT
                || self.last_arrival.is_none_or(|t| t.elapsed() >= QUIET))
    }

    /// Count a save as finished, keeping the message of a failed one.
    fn finish(&mut self, record: &SnapshotRecord, outcome: &Result<(), String>) {
        if let Some(n) = self.pending.get_mut(&record.entity_id) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&record.entity_id);
            }
        }
        if let Err(why) = outcome {
            if self.failures.len() < MAX_FAILURES {
                self.failures.push(format!(
                    "snapshot of {} {} at sequence {} was not saved: {why}",
                    record.entity_type, record.entity_id, record.sequence
                ));
            } else {
                self.failures_dropped += 1;
            }
        }
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled whenever saves finish.
    finished: Condvar,
    /// Signalled whenever a save is handed over or someone starts waiting.
    wake: Condvar,
    /// Whether a save is in flight or a failure is held (see `settle`): while it is not,
    /// `wait_for` and `take_failures` return without the lock, as most rebuilds find.
    busy: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        if queue.pid != pid {
            // A new process (first use, or a forked child): nothing of another's is waited for.
            *queue = Queue { pid, ..Queue::default() };
            self.settle(&queue);
        }
        queue
    }

    /// Set `busy` from `queue`; called under the lock after every change it depends on.
    fn settle(&self, queue: &Queue) {
        let busy = !queue.pending.is_empty() || !queue.failures.is_empty() || queue.failures_dropped > 0;
        self.busy.store(busy, Ordering::Release);
    }

    /// Wait (as a waiter: held snapshots are written at once) until `done` holds.
    fn wait_until(&self, done: impl Fn(&Queue) -> bool) {
        let mut queue = self.lock();
        if done(&queue) {
            return;
        }
        queue.waiters += 1;
        self.wake.notify_all();
        while !done(&queue) {
            queue = self.finished.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        queue.waiters -= 1;
    }
}

/// Writes the snapshots of one store's rebuilds on a worker thread (see the module doc).
pub struct SnapshotSaver {
    shared: Arc<Shared>,
    /// The store's backend, which the worker writes to.
    backend: Arc<dyn Backend>,
}

impl Drop for SnapshotSaver {
    /// A store let go without `close` still writes what its rebuilds handed over.
    fn drop(&mut self) {
        self.wait_all();
    }
}

impl SnapshotSaver {
    /// A saver writing to `backend` (its worker starts with the first save).
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        SnapshotSaver { shared: Arc::default(), backend }
    }

    /// Hand `state` over to be saved as `record` (its `state` and `state_hash` are filled
    /// in by the worker). Never waits for a save; call it without the GIL all the same (it
    /// takes a lock the worker holds briefly).
    pub fn submit(&self, state: WorkflowState, record: SnapshotRecord) {
        let mut queue = self.shared.lock();
        *queue.pending.entry(record.entity_id.clone()).or_default() += 1;
        queue.last_arrival = Some(Instant::now());
        queue.held_weight += 1 + state.entity_count();
        let was_empty = queue.jobs.is_empty();
        queue.jobs.push_back(Job { state, record });
        self.shared.settle(&queue);
        if queue.save_now() || was_empty {
            // The worker waits for a quiet moment from the first state on; a later one only
            // moves that moment, which the worker sees when it wakes.
            self.shared.wake.notify_all();
        }
        if queue.worker_running {
            return;
        }
        queue.worker_running = true;
        let (shared, backend) = (Arc::clone(&self.shared), Arc::clone(&self.backend));
        let spawned =
            std::thread::Builder::new().name("snapshot-saver".into()).spawn(move || work(&shared, &*backend));
        if let Err(e) = spawned {
            // No thread to be had: the saves are dropped (a snapshot is a cache), and said so.
            queue.worker_running = false;
            let why = Err(format!("no thread to save it on: {e}"));
            let dropped: Vec<Job> = queue.jobs.drain(..).collect();
            for job in dropped {
                queue.finish(&job.record, &why);
            }
            self.shared.settle(&queue);
            self.shared.finished.notify_all();
        }
    }

    /// Wait until no save of `entity_id` is pending. Call it without the GIL.
    pub fn wait_for(&self, entity_id: &str) {
        if !self.shared.busy.load(Ordering::Acquire) {
            return;
        }
        self.shared.wait_until(|q| !q.pending.contains_key(entity_id));
    }

    /// Wait until every save handed over is written. Call it without the GIL.
    pub fn wait_all(&self) {
        self.shared.wait_until(|q| q.pending.is_empty());
    }

    /// Why the saves that failed since the last call failed, one line each.
    pub fn take_failures(&self) -> Vec<String> {
        if !self.shared.busy.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut queue = self.shared.lock();
        let mut out = std::mem::take(&mut queue.failures);
        if queue.failures_dropped > 0 {
            out.push(format!("{} more snapshots were not saved", queue.failures_dropped));
            queue.failures_dropped = 0;
        }
        self.shared.settle(&queue);
        out
    }
}

/// The worker: saves the held states when `save_now` says, and ends once idle for `IDLE`.
fn work(shared: &Shared, backend: &dyn Backend) {
    loop {
        let jobs = {
            let mut queue = shared.lock();
            loop {
                if queue.save_now() {
                    queue.held_weight = 0;
                    break std::mem::take(&mut queue.jobs);
                }
                let timeout = match (queue.jobs.is_empty(), queue.last_arrival) {
                    (false, Some(t)) => QUIET.saturating_sub(t.elapsed()),
                    _ => IDLE,
                };
                let (next, waited) =
                    shared.wake.wait_timeout(queue, timeout).unwrap_or_else(|p| p.into_inner());
                queue = next;
                if waited.timed_out() && queue.jobs.is_empty() {
                    queue.worker_running = false;
                    return;
                }
            }
        };
        save(shared, backend, jobs);
    }
}

/// Encode, hash and write `jobs` (in one transaction), and count them as finished.
fn save(shared: &Shared, backend: &dyn Backend, jobs: VecDeque<Job>) {
    let mut records = Vec::with_capacity(jobs.len());
    let mut outcomes = Vec::new();
    for Job { state, mut record } in jobs {
        // A panic must still count the save as finished, or its waiters would wait for ever.
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.to_msgpack().map(|bytes| (bytes_hash(&bytes), bytes))
        }));
        match encoded {
            Ok(Some((hash, bytes))) => {
                record.state_hash = hash;
                record.state = bytes;
                records.push(record);
            }
            // `submit`'s callers check `encodes_without_python` first.
            Ok(None) => outcomes.push((record, Err("its state can only be encoded from Python".into()))),
            Err(_) => outcomes.push((record, Err("encoding it panicked".into()))),
        }
    }
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if records.is_empty() {
            return Ok(());
        }
        backend.save_snapshots(&records).map_err(|e| e.message)
    }));
    let written = written.unwrap_or_else(|_| Err("writing it panicked".into()));
    let mut queue = shared.lock();
    for record in &records {
        queue.finish(record, &written);
    }
    for (record, outcome) in &outcomes {
        queue.finish(record, outcome);
    }
    shared.settle(&queue);
    shared.finished.notify_all();
}
