//! The in-memory backend: a vector of records plus id, workflow and entity
//! indexes, behind one read-write lock. For tests and short-lived processes.

use std::sync::{Arc, RwLock};

// hashbrown's default hasher (foldhash, seeded per process): several times
// faster than SipHash on short ids and still not predictable by a caller.
use hashbrown::{HashMap, HashSet};

use super::filter::OrderBy;
use super::{Backend, Expectation, Filter, Pause, SnapshotRecord, SubscriptionRecord, Visitor};
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::{EventRecord, Text};
use crate::fold::EventView;

#[derive(Default)]
struct State {
    /// Record with sequence `n` sits at index `n - 1`.
    events: Vec<Arc<EventRecord>>,
    by_id: HashMap<Text, usize>,
    by_workflow: HashMap<Text, Vec<usize>>,
    by_entity: HashMap<Text, Vec<usize>>,
    /// (entity_type, entity_id) -> snapshots by ascending sequence.
    snapshots: HashMap<(String, String), Vec<SnapshotRecord>>,
    subscriptions: std::collections::BTreeMap<String, SubscriptionRecord>,
}

/// Events held in process memory; lost when the process ends.
pub struct MemoryBackend {
    state: RwLock<Option<State>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        MemoryBackend { state: RwLock::new(Some(State::default())) }
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> CoreResult<T> {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        guard.as_mut().map(f).ok_or_else(closed)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> CoreResult<T> {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(f).ok_or_else(closed)
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn closed() -> CoreError {
    CoreError::new(Kind::StoreClosed, "the in-memory event store is closed")
}

impl Backend for MemoryBackend {
    fn append(
        &self,
        mut records: Vec<EventRecord>,
        expect: Vec<Expectation>,
    ) -> CoreResult<Vec<EventRecord>> {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        let state = guard.as_mut().ok_or_else(closed)?;
        // Check the whole batch before touching anything: all or nothing.
        for e in &expect {
            let actual = state.by_entity.get(e.entity_id.as_str()).and_then(|idx| {
                idx.iter()
                    .rev()
                    .map(|&i| &state.events[i])
                    .find(|r| e.entity_type.as_deref().is_none_or(|t| t == r.entity_type))
                    .map(|r| r.version)
            });
            if actual.unwrap_or(0) != e.version {
                return Err(e.conflict(actual.unwrap_or(0)));
            }
        }
        // Scoped: the set borrows the records, which are numbered below.
        {
            let mut seen = HashSet::new();
            for r in records.iter() {
                if state.by_id.contains_key(r.event_id.as_str()) || !seen.insert(r.event_id.as_str()) {
                    return Err(CoreError::new(
                        Kind::DuplicateEvent,
                        format!("event {} is already stored; nothing of this batch was written", r.event_id),
                    ));
                }
            }
        }
        for r in records.iter_mut() {
            let index = state.events.len();
            r.sequence = index as i64 + 1;
            state.by_id.insert(r.event_id.clone(), index);
            state.by_workflow.entry(r.workflow_id.clone()).or_default().push(index);
            state.by_entity.entry(r.entity_id.clone()).or_default().push(index);
            state.events.push(Arc::new(r.clone()));
        }
        Ok(records)
    }

    fn query(&self, filter: &Filter) -> CoreResult<Vec<Arc<EventRecord>>> {
        self.read(|s| {
            let skip = filter.offset.max(0) as usize;
            let take = filter.limit.map_or(usize::MAX, |l| l.max(0) as usize);
            if filter.order_by == OrderBy::Sequence {
                // Walked in answer order: stop at the limit instead of copying every match
                // (a catch-up reading 100 events at a time would copy the whole tail each time).
                let walk = candidates(s, filter);
                let walk: Box<dyn Iterator<Item = _>> =
                    if filter.ascending { walk } else { Box::new(walk.rev()) };
                return walk.filter(|r| filter.matches(r)).skip(skip).take(take).cloned().collect();
            }
            // By timestamp: every match, sorted.
            let mut hits: Vec<Arc<EventRecord>> =
                candidates(s, filter).filter(|r| filter.matches(r)).cloned().collect();
            hits.sort_by_key(|r| (r.timestamp_us, r.sequence));
            if !filter.ascending {
                hits.reverse();
            }
            hits.into_iter().skip(skip).take(take).collect()
        })
    }

    fn scan(&self, filter: &Filter, _full: bool, visit: &mut Visitor<'_>) -> CoreResult<()> {
        // Take the records out of the lock first: a visitor may call back into Python.
        let hits =
            self.read(|s| candidates(s, filter).filter(|r| filter.matches(r)).cloned().collect::<Vec<_>>())?;
        for r in &hits {
            visit(Ok(EventView::of(r)))?;
        }
        Ok(())
    }

    fn scan_pausing(
        &self,
        filter: &Filter,
        _full: bool,
        visit: &mut Visitor<'_>,
        pause_after: u64,
        pause: &mut Pause<'_>,
    ) -> CoreResult<()> {
        let hits =
            self.read(|s| candidates(s, filter).filter(|r| filter.matches(r)).cloned().collect::<Vec<_>>())?;
        for (seen, r) in hits.iter().enumerate() {
            if seen as u64 == pause_after
                && !pause(&mut |entity_type, entity_id, max, limit| {
                    self.snapshots(entity_type, entity_id, max, limit)
                })?
            {
                return Ok(());
            }
            visit(Ok(EventView::of(r)))?;
        }
        Ok(())
    }

    fn count(&self, filter: &Filter) -> CoreResult<i64> {
        self.read(|s| candidates(s, filter).filter(|r| filter.matches(r)).count() as i64)
    }

    fn by_id(&self, event_id: &str) -> CoreResult<Option<Arc<EventRecord>>> {
        self.read(|s| s.by_id.get(event_id).map(|&i| s.events[i].clone()))
    }

    fn current_sequence(&self) -> CoreResult<i64> {
        self.read(|s| s.events.len() as i64)
    }

    fn save_snapshot(&self, snapshot: &SnapshotRecord) -> CoreResult<()> {
        self.write(|s| {
            let list =
                s.snapshots.entry((snapshot.entity_type.clone(), snapshot.entity_id.clone())).or_default();
            let at = list.partition_point(|x| x.sequence < snapshot.sequence);
            if list.get(at).is_some_and(|x| x.sequence == snapshot.sequence) {
                list[at] = snapshot.clone();
            } else {
                list.insert(at, snapshot.clone());
            }
        })
    }

    fn snapshots(
        &self,
        entity_type: &str,
        entity_id: &str,
        max_sequence: Option<i64>,
        limit: usize,
    ) -> CoreResult<Vec<SnapshotRecord>> {
        self.read(|s| {
            let key = (entity_type.to_owned(), entity_id.to_owned());
            s.snapshots.get(&key).map_or_else(Vec::new, |list| {
                list.iter()
                    .rev()
                    .filter(|x| max_sequence.is_none_or(|m| x.sequence <= m))
                    .take(limit)
                    .cloned()
                    .collect()
            })
        })
    }

    fn put_subscription(&self, subscription: &SubscriptionRecord) -> CoreResult<()> {
        self.write(|s| {
            s.subscriptions.insert(subscription.id.clone(), subscription.clone());
        })
    }

    fn subscription(&self, id: &str) -> CoreResult<Option<SubscriptionRecord>> {
        self.read(|s| s.subscriptions.get(id).cloned())
    }

    fn advance_subscription(&self, id: &str, last_sequence: i64, updated_at_us: i64) -> CoreResult<bool> {
        self.write(|s| match s.subscriptions.get_mut(id) {
            Some(sub) => {
                sub.last_sequence = last_sequence;
                sub.updated_at_us = updated_at_us;
                true
            }
            None => false,
        })
    }

    fn delete_subscription(&self, id: &str) -> CoreResult<bool> {
        self.write(|s| s.subscriptions.remove(id).is_some())
    }

    fn subscriptions(&self) -> CoreResult<Vec<SubscriptionRecord>> {
        self.read(|s| s.subscriptions.values().cloned().collect())
    }

    fn close(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The records worth testing against `filter`, in sequence order, using an index when one applies
/// and only those within its sequence range.
fn candidates<'a>(
    s: &'a State,
    filter: &Filter,
) -> Box<dyn DoubleEndedIterator<Item = &'a Arc<EventRecord>> + 'a> {
    let indexed = match (&filter.workflow_id, &filter.entity_id) {
        (Some(w), _) => Some(s.by_workflow.get(w.as_str())),
        (None, Some(e)) => Some(s.by_entity.get(e.as_str())),
        (None, None) => None,
    };
    match indexed {
        Some(Some(idx)) => {
            // Skip straight past from_sequence: indexes are in sequence order.
            let start =
                filter.from_sequence.map_or(0, |from| idx.partition_point(|&i| (i as i64 + 1) <= from));
            let end =
                filter.to_sequence.map_or(idx.len(), |to| idx.partition_point(|&i| (i as i64 + 1) <= to));
            Box::new(idx[start..end.max(start)].iter().map(move |&i| &s.events[i]))
        }
        Some(None) => Box::new(std::iter::empty()),
        None => {
            let len = s.events.len() as i64;
            let start = filter.from_sequence.map_or(0, |from| from.clamp(0, len) as usize);
            let end = filter.to_sequence.map_or(len, |to| to.clamp(0, len)) as usize;
            Box::new(s.events[start..end.max(start)].iter())
        }
    }
}
