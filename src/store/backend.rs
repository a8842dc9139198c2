//! `Backend`: what every event store backend provides, on plain records and
//! without the GIL.

use std::sync::Arc;

use super::{Expectation, Filter, SnapshotRecord, SubscriptionRecord};
use crate::errors::CoreResult;
use crate::event::EventRecord;
use crate::fold::EventView;

/// Receives each scanned event (or why a row could not be read) in sequence order.
pub type Visitor<'v> = dyn FnMut(CoreResult<EventView<'_>>) -> CoreResult<()> + 'v;
/// Receives each record of `Backend::query_each`.
pub type Take<'t> = dyn FnMut(Arc<EventRecord>) -> CoreResult<()> + Send + 't;
/// Reads one entity's snapshots as `Backend::snapshots` does (entity type, entity id, max
/// sequence, limit).
pub type SnapshotRead<'r> = dyn FnMut(&str, &str, Option<i64>, usize) -> CoreResult<Vec<SnapshotRecord>> + 'r;
/// Called where `Backend::scan_pausing` pauses, with the snapshots as the scan sees them;
/// returns whether the scan goes on.
pub type Pause<'p> = dyn FnMut(&mut SnapshotRead<'_>) -> CoreResult<bool> + 'p;
/// What every backend provides. Implementations are shared between threads.
pub trait Backend: Send + Sync {
    /// Store `records` atomically in order if every expectation holds; return
    /// them with their sequences. On error nothing of the batch is stored.
    fn append(&self, records: Vec<EventRecord>, expect: Vec<Expectation>) -> CoreResult<Vec<EventRecord>>;
    /// Records matching `filter`, ordered and paged as it says.
    fn query(&self, filter: &Filter) -> CoreResult<Vec<Arc<EventRecord>>>;
    /// `query`, handing each record to `take` as soon as it is read. An error
    /// returned by `take` stops the read and is returned.
    fn query_each(&self, filter: &Filter, take: &mut Take<'_>) -> CoreResult<()> {
        self.query(filter)?.into_iter().try_for_each(take)
    }
    /// Stream the records matching `filter`, by ascending sequence, to `visit`
    /// without materialising them. With `full` unset only the fields replay
    /// reads are filled (sequence, ids, types, timestamp, data, schema version).
    /// An error returned by `visit` stops the scan and is returned.
    fn scan(&self, filter: &Filter, full: bool, visit: &mut Visitor<'_>) -> CoreResult<()>;
    /// `scan`, pausing once `pause_after` rows were visited, before the next one (not at all
    /// when no row comes after them): `pause` reads snapshots as the scan sees the store (on
    /// SQLite within the scan's own read transaction), and the scan stops there (`Ok`) when
    /// it returns false.
    fn scan_pausing(
        &self,
        filter: &Filter,
        full: bool,
        visit: &mut Visitor<'_>,
        pause_after: u64,
        pause: &mut Pause<'_>,
    ) -> CoreResult<()>;
    /// How many records match `filter` (paging ignored).
    fn count(&self, filter: &Filter) -> CoreResult<i64>;
    fn by_id(&self, event_id: &str) -> CoreResult<Option<Arc<EventRecord>>>;
    /// The highest sequence stored, 0 when empty.
    fn current_sequence(&self) -> CoreResult<i64>;
    /// The database file, for a backend that keeps one.
    fn database_file(&self) -> Option<&std::path::Path> {
        None
    }
    /// Store a snapshot, replacing one at the same (entity, sequence).
    fn save_snapshot(&self, snapshot: &SnapshotRecord) -> CoreResult<()>;
    /// Store several snapshots, all or none where the backend has transactions.
    fn save_snapshots(&self, snapshots: &[SnapshotRecord]) -> CoreResult<()> {
        snapshots.iter().try_for_each(|s| self.save_snapshot(s))
    }
    /// Snapshots of one entity at or before `max_sequence`, newest first.
    fn snapshots(
        &self,
        entity_type: &str,
        entity_id: &str,
        max_sequence: Option<i64>,
        limit: usize,
    ) -> CoreResult<Vec<SnapshotRecord>>;
    /// Create or replace a subscription.
    fn put_subscription(&self, subscription: &SubscriptionRecord) -> CoreResult<()>;
    fn subscription(&self, id: &str) -> CoreResult<Option<SubscriptionRecord>>;
    /// Move a subscription's position; false when it does not exist.
    fn advance_subscription(&self, id: &str, last_sequence: i64, updated_at_us: i64) -> CoreResult<bool>;
    /// Remove a subscription; false when it did not exist.
    fn delete_subscription(&self, id: &str) -> CoreResult<bool>;
    /// Every subscription, by id.
    fn subscriptions(&self) -> CoreResult<Vec<SubscriptionRecord>>;
    /// (commits, appends they stored) since opening, where appends are group-committed.
    fn commit_stats(&self) -> Option<(u64, u64)> {
        None
    }
    /// Whether a large query reads faster as two halves on two threads (see `split_read`).
    fn parallel_reads_pay(&self) -> bool {
        false
    }
    /// Release resources; later calls fail with `StoreClosedError`.
    fn close(&self);
}
