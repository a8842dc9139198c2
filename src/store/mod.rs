//! Event stores: one `Backend` trait, two backends (SQLite, in-memory), and
//! the Python-facing `NativeStore` that converts between Python and records.
//!
//! Backends work on plain `EventRecord`s without the GIL; everything Python
//! (encoding payloads, building `Event`s, raising errors) happens in `native`.

pub mod filter;
pub mod memory_store;
pub mod native;
pub mod sqlite_store;

use std::sync::Arc;

use crate::errors::CoreResult;
use crate::event::EventRecord;
pub use filter::Filter;

/// What every backend provides. Implementations are shared between threads.
pub trait Backend: Send + Sync {
    /// Store `records` atomically in order, assigning each its sequence in place.
    /// On error nothing of the batch is stored.
    fn append(&self, records: &mut [EventRecord]) -> CoreResult<()>;
    /// Records matching `filter`, ordered and paged as it says.
    fn query(&self, filter: &Filter) -> CoreResult<Vec<Arc<EventRecord>>>;
    /// How many records match `filter` (paging ignored).
    fn count(&self, filter: &Filter) -> CoreResult<i64>;
    fn by_id(&self, event_id: &str) -> CoreResult<Option<Arc<EventRecord>>>;
    /// The highest sequence stored, 0 when empty.
    fn current_sequence(&self) -> CoreResult<i64>;
    /// Release resources; later calls fail with `StoreClosedError`.
    fn close(&self);
}
