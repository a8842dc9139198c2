//! Event stores: one `Backend` trait (`backend`), two backends (`sqlite/`,
//! `memory_store`), and what they share: the records they keep, `Filter`,
//! snapshot checks and split reads.
//!
//! Backends work on plain `EventRecord`s without the GIL; everything Python
//! (encoding payloads, building `Event`s, raising errors) happens in
//! `crate::py::native_store`.

mod backend;
pub mod filter;
pub mod memory_store;
pub mod snapshot;
pub mod split_read;
pub mod sqlite;

pub use backend::{Backend, Pause, SnapshotRead, Take, Visitor};
pub use filter::Filter;

/// Optimistic concurrency: the entity's latest stored event must have `version`
/// (0 when it has none) for the append to go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// None matches the entity id under any entity type.
    pub entity_type: Option<crate::event::Text>,
    pub entity_id: crate::event::Text,
    pub version: i64,
}

impl Expectation {
    /// The error for a mismatch, naming the entity and both versions.
    pub fn conflict(&self, actual: i64) -> crate::errors::CoreError {
        let kind = self.entity_type.as_deref().unwrap_or("entity");
        crate::errors::CoreError::new(
            crate::errors::Kind::Concurrency,
            format!(
                "{kind} {} is at version {actual}, not the expected {}: another writer appended first; \
                 nothing of this batch was written (reload the entity and retry)",
                self.entity_id, self.version
            ),
        )
    }
}

/// A checkpoint of an entity's folded state (payload msgpack-encoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotRecord {
    pub entity_type: String,
    pub entity_id: String,
    pub workflow_id: String,
    pub version: i64,
    /// The last event sequence folded into `state`.
    pub sequence: i64,
    pub state: Vec<u8>,
    /// `sha256-msgpack:<hex>` of `state` (or, for a legacy snapshot, the bare hex
    /// SHA-256 of its canonical JSON), checked before a snapshot is used.
    pub state_hash: String,
    pub created_at_us: i64,
    /// The latest event timestamp folded into `state` (UTC microseconds): a
    /// time-travel query to an earlier instant cannot start from this snapshot.
    pub max_event_us: Option<i64>,
    /// Why this snapshot cannot be used, when its row is malformed.
    pub problem: Option<String>,
}

/// A durable subscription's persisted position and settings (settings msgpack-encoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscriptionRecord {
    pub id: String,
    pub config: Vec<u8>,
    pub last_sequence: i64,
    pub updated_at_us: i64,
}

#[cfg(test)]
mod tests {
    //! The backend contract in Rust terms, run against both backends (the
    //! Python conformance suite covers the same ground through `NativeStore`).
    use super::memory_store::MemoryBackend;
    use super::sqlite::{Location, SqliteBackend, SqliteConfig, Synchronous};
    use super::*;
    use crate::errors::Kind;
    use crate::event::EventRecord;

    fn record(id: &str, workflow: &str, entity: &str, ts: i64) -> EventRecord {
        EventRecord {
            event_id: id.into(),
            event_type: "task.started".into(),
            timestamp_us: ts,
            entity_type: "task".into(),
            entity_id: entity.into(),
            workflow_id: workflow.into(),
            version: 1,
            data: vec![0x80],
            actor: "system".into(),
            schema_version: 1,
            ..Default::default()
        }
    }

    fn backends(dir: &std::path::Path) -> Vec<Box<dyn Backend>> {
        let sqlite = |location| {
            SqliteBackend::open(SqliteConfig {
                busy_timeout: std::time::Duration::from_secs(1),
                ..SqliteConfig::new(location)
            })
            .expect("open sqlite")
        };
        vec![
            Box::new(MemoryBackend::new()),
            Box::new(sqlite(Location::Memory)),
            Box::new(sqlite(Location::File(dir.join("events.db")))),
        ]
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("se-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Bytes of the main database file and of its WAL.
    fn file_sizes(path: &std::path::Path) -> (u64, u64) {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        (size(path), size(&path.with_extension("db-wal")))
    }

    /// Threads of this process named as the checkpointer (Linux: /proc).
    fn checkpoint_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.starts_with("stabilize-even"))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn normal_stores_checkpoint_in_the_background() {
        let dir = temp_dir("checkpoint");
        let path = dir.join("events.db");
        let open = |synchronous| {
            SqliteBackend::open(SqliteConfig {
                synchronous,
                busy_timeout: std::time::Duration::from_secs(1),
                ..SqliteConfig::new(Location::File(path.clone()))
            })
            .expect("open sqlite")
        };
        let b = open(Synchronous::Normal);
        // Single appends of big payloads: well past the checkpoint threshold of WAL pages.
        let mut payload = vec![0xc6, 0, 0, 0x10, 0];
        payload.resize(5 + 0x1000, 7);
        for i in 0..3000 {
            let r = EventRecord { data: payload.clone(), ..record(&format!("e{i}"), "w", "t", i) };
            b.append(vec![r], vec![]).expect("append");
        }
        // The writer never checkpoints at NORMAL: pages reach the main file only
        // through the store's thread, while the store stays open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file_sizes(&path).0 < 4 << 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(file_sizes(&path).0 >= 4 << 20, "main file {:?} (file, WAL)", file_sizes(&path));
        assert_eq!(b.count(&Filter::all()).expect("count"), 3000);
        assert_eq!(checkpoint_threads(), 1);
        b.close();
        assert_eq!(checkpoint_threads(), 0, "close stops the thread");
        drop(b);
        // Closed: the last connection checkpointed the rest and removed the WAL.
        assert_eq!(file_sizes(&path).1, 0);
        let again = open(Synchronous::Full);
        assert_eq!(again.count(&Filter::all()).expect("count"), 3000);
    }

    #[test]
    fn sequences_are_consecutive_and_batches_atomic() {
        let dir = temp_dir("atomic");
        for b in backends(&dir) {
            let batch = vec![record("a", "w1", "t1", 10), record("b", "w2", "t2", 20)];
            let batch = b.append(batch, vec![]).expect("append");
            assert_eq!((batch[0].sequence, batch[1].sequence), (1, 2));
            // "a" again in the middle of a batch: nothing of it is stored.
            let dup = vec![record("c", "w1", "t1", 30), record("a", "w1", "t1", 40)];
            let err = b.append(dup, vec![]).expect_err("duplicate");
            assert_eq!(err.kind, Kind::DuplicateEvent);
            assert!(err.message.contains("event a"), "{}", err.message);
            assert_eq!(b.count(&Filter::all()).expect("count"), 2);
            assert_eq!(b.current_sequence().expect("seq"), 2);
            let more = b.append(vec![record("c", "w1", "t3", 30)], vec![]).expect("append after failure");
            assert_eq!(more[0].sequence, 3);
        }
    }

    #[test]
    fn filters_order_and_paging() {
        let dir = temp_dir("filters");
        for b in backends(&dir) {
            let batch: Vec<EventRecord> = (0..10)
                .map(|i| record(&format!("e{i}"), if i % 2 == 0 { "even" } else { "odd" }, "t", 100 - i))
                .collect();
            b.append(batch, vec![]).expect("append");
            let seqs = |f: &Filter| b.query(f).expect("query").iter().map(|r| r.sequence).collect::<Vec<_>>();
            let even = Filter { workflow_id: Some("even".into()), from_sequence: Some(3), ..Filter::all() };
            assert_eq!(seqs(&even), vec![5, 7, 9]);
            let by_time = Filter { order_by: filter::OrderBy::Timestamp, limit: Some(3), ..Filter::all() };
            assert_eq!(seqs(&by_time), vec![10, 9, 8]);
            let desc = Filter { ascending: false, limit: Some(2), offset: 1, ..Filter::all() };
            assert_eq!(seqs(&desc), vec![9, 8]);
            let window = Filter { from_timestamp: Some(93), to_timestamp: Some(95), ..Filter::all() };
            assert_eq!(seqs(&window), vec![6, 7, 8]);
            assert_eq!(b.count(&window).expect("count"), 3);
            assert_eq!(b.by_id("e4").expect("by id").map(|r| r.sequence), Some(5));
            assert!(b.by_id("nope").expect("by id").is_none());
            let stored = b.by_id("e0").expect("by id").expect("found");
            assert_eq!(*stored, EventRecord { sequence: 1, ..record("e0", "even", "t", 100) });
        }
    }

    #[test]
    fn expectations_guard_appends() {
        let dir = temp_dir("expect");
        for b in backends(&dir) {
            let expect = |version| {
                vec![Expectation { entity_type: Some("task".into()), entity_id: "t1".into(), version }]
            };
            let mut first = record("a", "w", "t1", 1);
            first.version = 1;
            b.append(vec![first], expect(0)).expect("fresh entity is at version 0");
            let err = b.append(vec![record("b", "w", "t1", 2)], expect(0)).expect_err("stale");
            assert_eq!(err.kind, Kind::Concurrency);
            assert!(err.message.contains("task t1 is at version 1, not the expected 0"), "{}", err.message);
            assert_eq!(b.count(&Filter::all()).expect("count"), 1);
            b.append(vec![record("b", "w", "t1", 2)], expect(1)).expect("current version");
        }
    }

    #[test]
    fn closed_backends_refuse_work() {
        let dir = temp_dir("closed");
        for b in backends(&dir) {
            b.close();
            assert_eq!(b.count(&Filter::all()).expect_err("closed").kind, Kind::StoreClosed);
            assert_eq!(
                b.append(vec![record("x", "w", "t", 1)], vec![]).expect_err("closed").kind,
                Kind::StoreClosed
            );
        }
    }
}
