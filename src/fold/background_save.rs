//! `SnapshotSaver`: snapshots of folded states written after the rebuild that
//! folded them has returned.
//!
//! A snapshot is a cache: a rebuild hands its folded state over and returns at
//! once, and one worker thread per store encodes it (`to_msgpack`), hashes the
//! bytes and writes the row in its own transaction. What that guarantees:
//!
//! - Reads of an entity's snapshots (`wait_for`) and `wait_all` (a store's
//!   `flush_snapshots` and `close`) wait for its pending saves, so a process
//!   that reads or closes sees every snapshot it handed over.
//! - A crash before the row commits loses the snapshot and nothing else: the
//!   events are already stored, the row is written in one transaction, and a
//!   row whose bytes do not match its hash is never used anyway.
//! - A save that fails is reported, not raised: `take_failures` hands its
//!   message back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::WorkflowState;
use crate::store::snapshot::bytes_hash;
use crate::store::{Backend, SnapshotRecord};

/// Saves handed over and not yet written, past which a new one waits for room:
/// each holds a whole folded state in memory.
const MAX_PENDING: usize = 32;
/// Failure messages kept until someone waits; later ones are only counted.
const MAX_FAILURES: usize = 16;

/// One state to save: the folded state and its row, still without bytes and hash.
struct Job {
    state: WorkflowState,
    record: SnapshotRecord,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Saves handed over and not finished, by entity id.
    pending: HashMap<String, usize>,
    /// All saves handed over and not finished (queued or being written).
    in_flight: usize,
    worker_running: bool,
    failures: Vec<String>,
    failures_dropped: usize,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled whenever a save finishes.
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.finished.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes the snapshots of one store's rebuilds on a worker thread (see the module doc).
#[derive(Default)]
pub struct SnapshotSaver {
    shared: Arc<Shared>,
}

impl SnapshotSaver {
    /// Hand `state` over to be saved as `record` (its `state` and `state_hash` are filled
    /// in by the worker). Waits only when `MAX_PENDING` saves are still pending. Call it
    /// without the GIL.
    pub fn submit(&self, backend: &Arc<dyn Backend>, state: WorkflowState, record: SnapshotRecord) {
        let mut queue = self.shared.lock();
        while queue.in_flight >= MAX_PENDING {
            queue = self.shared.wait(queue);
        }
        *queue.pending.entry(record.entity_id.clone()).or_default() += 1;
        queue.in_flight += 1;
        queue.jobs.push_back(Job { state, record });
        if !queue.worker_running {
            queue.worker_running = true;
            let (shared, backend) = (Arc::clone(&self.shared), Arc::clone(backend));
            let spawned = std::thread::Builder::new()
                .name("snapshot-saver".into())
                .spawn(move || work(&shared, &*backend));
            if let Err(e) = spawned {
                // No thread to be had: the saves are dropped (a snapshot is a cache), and said so.
                queue.worker_running = false;
                let dropped: Vec<Job> = queue.jobs.drain(..).collect();
                for job in dropped {
                    finish(&mut queue, &job.record, Err(format!("no thread to save it on: {e}")));
                }
                self.shared.finished.notify_all();
            }
        }
    }

    /// Wait until no save of `entity_id` is pending. Call it without the GIL.
    pub fn wait_for(&self, entity_id: &str) {
        let mut queue = self.shared.lock();
        while queue.pending.contains_key(entity_id) {
            queue = self.shared.wait(queue);
        }
    }

    /// Wait until every save handed over is written. Call it without the GIL.
    pub fn wait_all(&self) {
        let mut queue = self.shared.lock();
        while queue.in_flight > 0 {
            queue = self.shared.wait(queue);
        }
    }

    /// Why the saves that failed since the last call failed, one line each.
    pub fn take_failures(&self) -> Vec<String> {
        let mut queue = self.shared.lock();
        let mut out = std::mem::take(&mut queue.failures);
        if queue.failures_dropped > 0 {
            out.push(format!("{} more snapshots were not saved", queue.failures_dropped));
            queue.failures_dropped = 0;
        }
        out
    }
}

/// Count a save as finished, keeping the message of a failed one.
fn finish(queue: &mut Queue, record: &SnapshotRecord, outcome: Result<(), String>) {
    if let Some(n) = queue.pending.get_mut(&record.entity_id) {
        *n -= 1;
        if *n == 0 {
            queue.pending.remove(&record.entity_id);
        }
    }
    queue.in_flight -= 1;
    if let Err(why) = outcome {
        if queue.failures.len() < MAX_FAILURES {
            queue.failures.push(format!(
                "snapshot of {} {} at sequence {} was not saved: {why}",
                record.entity_type, record.entity_id, record.sequence
            ));
        } else {
            queue.failures_dropped += 1;
        }
    }
}

/// The worker: saves jobs in order until none is left, then ends (a later submit starts another).
fn work(shared: &Shared, backend: &dyn Backend) {
    loop {
        let job = {
            let mut queue = shared.lock();
            match queue.jobs.pop_front() {
                Some(job) => job,
                None => {
                    queue.worker_running = false;
                    return;
                }
            }
        };
        let Job { state, mut record } = job;
        // A panic must still count the save as finished, or its waiters would wait for ever.
        let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match state.to_msgpack() {
            Some(bytes) => {
                drop(state);
                record.state_hash = bytes_hash(&bytes);
                record.state = bytes;
                backend.save_snapshot(&record).map_err(|e| e.message)
            }
            // `submit`'s callers check `encodes_without_python` first.
            None => Err("its state can only be encoded from Python".into()),
        }));
        let outcome = saved.unwrap_or_else(|_| Err("saving it panicked".into()));
        let mut queue = shared.lock();
        finish(&mut queue, &record, outcome);
        shared.finished.notify_all();
    }
}
