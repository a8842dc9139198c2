//! `NativeStore`: the Python face of a backend. It turns `Event`s into records
//! (encoding payloads while it holds the GIL), runs the backend with the GIL
//! released, and turns records back into lazily-decoded `Event`s.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::options::{bool_option, expectations, payload_limit, DEFAULT_DECODE_AHEAD};
use super::read_ahead::read_ahead;
use super::records::{encode_dict, snapshot_dict, subscription_dict};
use crate::args::{enum_value, int_arg, str_arg};
use crate::errors::{raise, CoreResult, Kind};
use crate::event::{coerce_event, Event, EventRecord};
use crate::fold::{FoldOptions, Folder, SnapshotSaver};
use crate::gc_pause::GcPause;
use crate::store::memory_store::MemoryBackend;
use crate::store::snapshot::{self, StoredSnapshot};
use crate::store::sqlite::config::{
    DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_COALESCE_WAL_WRITES, DEFAULT_MMAP_READS, DEFAULT_PAGE_SIZE,
    DEFAULT_SPLIT_READS, DEFAULT_SYNCHRONOUS,
};
use crate::store::sqlite::index_key::index_key;
use crate::store::sqlite::{Location, SqliteBackend, SqliteConfig, Synchronous};
use crate::store::{
    split_read, Backend, Expectation, Filter, SnapshotRead, SnapshotRecord, SubscriptionRecord,
};
use crate::time;

/// An event store backend callable from Python (wrapped by the public store classes).
#[pyclass(frozen, module = "stabilize_events._core")]
pub struct NativeStore {
    backend: Arc<dyn Backend>,
    /// Writes the snapshots rebuilds hand over, after they return.
    saver: SnapshotSaver,
    /// Largest encoded payload accepted by `append` (a guard against runaway events).
    max_payload_bytes: usize,
    /// Whether a large read decodes its payloads as its rows arrive (see `read_events`).
    decode_ahead: bool,
}

/// What a fold that looks for a snapshot as it goes found (see `fold_workflow`).
enum LookUp {
    /// The workflow has fewer events than the fold looks up at: nothing was looked for.
    NotReached,
    /// The snapshot the fold went on from, if any, and why newer ones were passed over.
    Done(Option<Arc<SnapshotRecord>>, Vec<String>),
    /// The newest usable snapshot has a legacy hash, to be checked in Python: nothing folded.
    Legacy(SnapshotRecord, Vec<String>),
}

impl NativeStore {
    /// The result of a finished fold, with its snapshot handed to the saver when one is due.
    fn fold_result<'py>(
        &self,
        py: Python<'py>,
        folder: Folder,
        entity_id: &str,
        snapshot_after_events: Option<i64>,
        snapshot_min_events: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        match folder.snapshot_due(entity_id, snapshot_after_events, snapshot_min_events) {
            Some(snapshot) => folder.into_py_queueing(py, &self.saver, snapshot),
            None => folder.into_py(py),
        }
    }

    /// The backend this store runs on (for the JSON Lines export, `jsonl::python`).
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    fn run<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&dyn Backend) -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        let backend: &dyn Backend = &*self.backend;
        Ok(py.detach(|| f(backend))?)
    }

    /// The events matching `filter`, as a list, read with the GIL released.
    ///
    /// With `decode_ahead`, a large read is streamed and its payloads decoded
    /// here as its rows come in; otherwise it is read in two halves and its
    /// payloads left to `data`.
    fn read_events<'py>(&self, py: Python<'py>, filter: Filter) -> PyResult<Bound<'py, PyList>> {
        // Its events and payloads are kept off the collector: no collection should run for them.
        let _pause = GcPause::new(py);
        let events = if self.decode_ahead {
            read_ahead(py, &*self.backend, filter)?
        } else {
            let records = self.run(py, move |b| split_read::query(b, &filter))?;
            records
                .into_iter()
                .map(|r| Event::read(py, r).map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()?
        };
        PyList::new(py, events)
    }

    /// The record to store for `event`, its payload encoded and checked against the limit.
    fn record_to_store(&self, py: Python<'_>, event: &Bound<'_, Event>) -> PyResult<EventRecord> {
        let record = event.get().to_record(py)?;
        if record.data.len() > self.max_payload_bytes {
            return raise(
                Kind::Payload,
                format!(
                    "data of event {} encodes to {} bytes, over this store's max_payload_bytes of {}; \
                     nothing of this batch was written",
                    record.event_id,
                    record.data.len(),
                    self.max_payload_bytes
                ),
            );
        }
        Ok(record)
    }

    fn append_events<'py>(
        &self,
        py: Python<'py>,
        events: Vec<Bound<'py, Event>>,
        expect: Vec<Expectation>,
    ) -> PyResult<Vec<Bound<'py, Event>>> {
        let mut records = Vec::with_capacity(events.len());
        for e in &events {
            records.push(self.record_to_store(py, e)?);
        }
        let mut records = self.run(py, move |b| b.append(records, expect))?;
        events
            .iter()
            .zip(records.drain(..))
            .map(|(e, r)| e.get().resequenced(py, Arc::new(r)).untracked(py))
            .collect()
    }
}

#[pymethods]
impl NativeStore {
    /// Open an SQLite event store at `url` (see `SqliteEventStore`).
    #[staticmethod]
    #[pyo3(signature = (
        url, create_tables=None, synchronous=None, busy_timeout_ms=None, page_size=None, max_payload_bytes=None,
        decode_ahead=None, split_reads=None, coalesce_wal_writes=None, mmap_reads=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn sqlite(
        py: Python<'_>,
        url: &Bound<'_, PyAny>,
        create_tables: Option<&Bound<'_, PyAny>>,
        synchronous: Option<&Bound<'_, PyAny>>,
        busy_timeout_ms: Option<&Bound<'_, PyAny>>,
        page_size: Option<&Bound<'_, PyAny>>,
        max_payload_bytes: Option<&Bound<'_, PyAny>>,
        decode_ahead: Option<&Bound<'_, PyAny>>,
        split_reads: Option<&Bound<'_, PyAny>>,
        coalesce_wal_writes: Option<&Bound<'_, PyAny>>,
        mmap_reads: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NativeStore> {
        let max_payload_bytes = payload_limit(max_payload_bytes)?;
        let page_size = match page_size {
            Some(p) => int_arg(p, "page_size")?,
            None => i64::from(DEFAULT_PAGE_SIZE),
        };
        if !(512..=65536).contains(&page_size) || page_size & (page_size - 1) != 0 {
            return raise(
                Kind::InvalidArgument,
                format!("page_size must be a power of two from 512 to 65536, not {page_size}"),
            );
        }
        let url = str_arg(url, "url")?;
        let synchronous = match synchronous {
            Some(s) => Synchronous::parse(&str_arg(s, "synchronous")?)?,
            None => DEFAULT_SYNCHRONOUS,
        };
        let busy_ms = match busy_timeout_ms {
            Some(b) => int_arg(b, "busy_timeout_ms")?,
            None => DEFAULT_BUSY_TIMEOUT_MS as i64,
        };
        if busy_ms < 0 {
            return raise(Kind::InvalidArgument, format!("busy_timeout_ms must be >= 0, not {busy_ms}"));
        }
        let create_tables = bool_option(create_tables, "create_tables", true)?;
        let decode_ahead = bool_option(decode_ahead, "decode_ahead", DEFAULT_DECODE_AHEAD)?;
        let (location, access) = Location::parse_with_access(&url)?;
        let config = SqliteConfig {
            location,
            access,
            create_tables,
            synchronous,
            busy_timeout: Duration::from_millis(busy_ms as u64),
            page_size: page_size as u32,
            damaged: Default::default(),
            split_reads: bool_option(split_reads, "split_reads", DEFAULT_SPLIT_READS)?,
            coalesce_wal_writes: bool_option(
                coalesce_wal_writes,
                "coalesce_wal_writes",
                DEFAULT_COALESCE_WAL_WRITES,
            )?,
            mmap_reads: bool_option(mmap_reads, "mmap_reads", DEFAULT_MMAP_READS)?,
        };
        let backend: Arc<dyn Backend> = Arc::new(py.detach(|| SqliteBackend::open(config))?);
        Ok(NativeStore {
            saver: SnapshotSaver::new(Arc::clone(&backend)),
            backend,
            max_payload_bytes,
            decode_ahead,
        })
    }

    /// A new, empty in-memory store.
    #[staticmethod]
    #[pyo3(signature = (max_payload_bytes=None))]
    fn memory(max_payload_bytes: Option<&Bound<'_, PyAny>>) -> PyResult<NativeStore> {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        Ok(NativeStore {
            saver: SnapshotSaver::new(Arc::clone(&backend)),
            backend,
            max_payload_bytes: payload_limit(max_payload_bytes)?,
            // Its reads are never large (see `Backend::parallel_reads_pay`): nothing to decode ahead.
            decode_ahead: false,
        })
    }

    /// Append one event; with `expected_version`, only if its entity is at that version.
    #[pyo3(signature = (event, expected_version=None))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        expected_version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Event>> {
        let event = coerce_event(event, None)?;
        let expect = match expected_version.filter(|v| !v.is_none()) {
            Some(v) => {
                let r = event.get().record();
                vec![Expectation {
                    entity_type: Some(r.entity_type.clone()),
                    entity_id: r.entity_id.clone(),
                    version: int_arg(v, "expected_version")?,
                }]
            }
            None => Vec::new(),
        };
        Ok(self.append_events(py, vec![event], expect)?.remove(0))
    }

    /// Append events atomically; with `expected_versions` ({entity_id: version}),
    /// only if every named entity is at its version.
    #[pyo3(signature = (events, expected_versions=None))]
    fn append_batch<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        expected_versions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut items = Vec::new();
        for (i, item) in events.try_iter()?.enumerate() {
            items.push(coerce_event(&item?, Some(i))?);
        }
        let expect = expectations(&items, expected_versions)?;
        PyList::new(py, self.append_events(py, items, expect)?)
    }

    /// `event` as an `Event` and the parameters of its `event_log` row after the sequence,
    /// in `SQLITE_INSERT_ROW` order: for writing it through a caller's own connection.
    fn sqlite_row<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, Event>, Bound<'py, PyTuple>)> {
        let event = coerce_event(event, None)?;
        let r = self.record_to_store(py, &event)?;
        let params = PyTuple::new(
            py,
            [
                r.event_id.as_str().into_pyobject(py)?.into_any(),
                r.event_type.as_str().into_pyobject(py)?.into_any(),
                r.timestamp_us.into_pyobject(py)?.into_any(),
                r.entity_type.as_str().into_pyobject(py)?.into_any(),
                r.entity_id.as_str().into_pyobject(py)?.into_any(),
                r.workflow_id.as_str().into_pyobject(py)?.into_any(),
                r.version.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &r.data).into_any(),
                r.correlation_id.as_str().into_pyobject(py)?.into_any(),
                r.causation_id.as_deref().into_pyobject(py)?.into_any(),
                r.actor.as_str().into_pyobject(py)?.into_any(),
                r.source_handler.as_deref().into_pyobject(py)?.into_any(),
                r.schema_version.into_pyobject(py)?.into_any(),
                index_key(&r.workflow_id).into_pyobject(py)?.into_any(),
            ],
        )?;
        Ok((event, params))
    }

    /// Whether a large read decodes its payloads as its rows arrive (the store's `decode_ahead`).
    #[getter]
    fn decode_ahead(&self) -> bool {
        self.decode_ahead
    }

    /// The database file this store keeps its events in, or None (memory).
    #[getter]
    fn database_file(&self) -> Option<std::path::PathBuf> {
        self.backend.database_file().map(std::path::Path::to_path_buf)
    }

    /// The event `event` stands for, stored at `sequence` (after a write through a caller's connection).
    fn stored_at<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, Event>,
        sequence: i64,
    ) -> PyResult<Bound<'py, Event>> {
        let e = event.get();
        e.resequenced(py, Arc::new(e.record().with_sequence(sequence))).untracked(py)
    }

    fn query<'py>(&self, py: Python<'py>, query: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let filter = Filter::from_query(query, true)?;
        self.read_events(py, filter)
    }

    #[pyo3(signature = (query=None))]
    fn count(&self, py: Python<'_>, query: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
        let filter = match query {
            Some(q) if !q.is_none() => Filter::from_query(q, false)?,
            _ => Filter::all(),
        };
        self.run(py, move |b| b.count(&filter))
    }

    fn events_for_entity<'py>(
        &self,
        py: Python<'py>,
        entity_type: &Bound<'py, PyAny>,
        entity_id: &Bound<'py, PyAny>,
        from_version: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let filter = Filter {
            entity_type: Some(enum_value(entity_type, "entity_type")?),
            entity_id: Some(str_arg(entity_id, "entity_id")?),
            from_version: Some(int_arg(from_version, "from_version")?),
            ..Filter::all()
        };
        self.read_events(py, filter)
    }

    fn events_for_workflow<'py>(
        &self,
        py: Python<'py>,
        workflow_id: &Bound<'py, PyAny>,
        from_sequence: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let filter = Filter {
            workflow_id: Some(str_arg(workflow_id, "workflow_id")?),
            from_sequence: Some(int_arg(from_sequence, "from_sequence")?),
            ..Filter::all()
        };
        self.read_events(py, filter)
    }

    fn events_since<'py>(
        &self,
        py: Python<'py>,
        sequence: &Bound<'py, PyAny>,
        limit: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let limit = int_arg(limit, "limit")?;
        if limit < 0 {
            return raise(Kind::InvalidArgument, format!("limit must be >= 0, not {limit}"));
        }
        let filter = Filter {
            from_sequence: Some(int_arg(sequence, "sequence")?),
            limit: Some(limit),
            ..Filter::all()
        };
        self.read_events(py, filter)
    }

    fn event_by_id<'py>(
        &self,
        py: Python<'py>,
        event_id: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, Event>>> {
        let id = str_arg(event_id, "event_id")?;
        self.run(py, move |b| b.by_id(&id))?.map(|r| Event::read(py, r)).transpose()
    }

    fn current_sequence(&self, py: Python<'_>) -> PyResult<i64> {
        self.run(py, |b| b.current_sequence())
    }

    /// Fold a workflow's events (after `from_sequence`, up to `to_sequence` and
    /// `to_timestamp`) into its state, starting from `initial_state` if given.
    /// Runs without the GIL except to upcast older events through `upcast`.
    /// With `snapshot_after_events`, a snapshot of the state is saved too when at least that
    /// many events were applied (none skipped, no `to_timestamp`): handed to a worker thread
    /// that writes it after this returns (`flush_snapshots` and `close` wait for it, and so
    /// do this entity's snapshot reads); the result then holds `"snapshot_queued": True`.
    /// With `snapshot_min_events`, only a state folding at least that many events in all (the
    /// version of the snapshot it started from plus those applied) is saved.
    /// With `look_up_snapshot_at` (from the first event, no `initial_state`, `upcast` or
    /// `skip_corrupt`), the fold looks for the newest usable snapshot itself once it reaches
    /// that many events, and goes on from it if it is further on: a smaller workflow is folded
    /// with no look-up, and no snapshot of it is saved. The result then holds `"snapshot"`
    /// (the `StoredSnapshot` it started from, or None) and `"snapshot_skipped"` (why snapshots
    /// were passed over); when the snapshot found has a legacy hash it holds only
    /// `"legacy_snapshot"` and `"snapshot_skipped"`, and nothing is folded.
    #[pyo3(signature = (
        workflow_id, from_sequence=None, to_sequence=None, to_timestamp=None, initial_state=None,
        upcast=None, current_schema_version=1, skip_corrupt=false, snapshot_after_events=None,
        look_up_snapshot_at=None, snapshot_min_events=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn fold_workflow<'py>(
        &self,
        py: Python<'py>,
        workflow_id: &Bound<'py, PyAny>,
        from_sequence: Option<&Bound<'py, PyAny>>,
        to_sequence: Option<&Bound<'py, PyAny>>,
        to_timestamp: Option<&Bound<'py, PyAny>>,
        initial_state: Option<&Bound<'py, PyAny>>,
        upcast: Option<&Bound<'py, PyAny>>,
        current_schema_version: i64,
        skip_corrupt: bool,
        snapshot_after_events: Option<i64>,
        look_up_snapshot_at: Option<i64>,
        snapshot_min_events: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let workflow_id = str_arg(workflow_id, "workflow_id")?;
        let given = |o: Option<&Bound<'py, PyAny>>| o.filter(|v| !v.is_none()).cloned();
        let from_sequence =
            given(from_sequence).map(|v| int_arg(&v, "from_sequence")).transpose()?.unwrap_or(0);
        let to_sequence = given(to_sequence).map(|v| int_arg(&v, "as_of_sequence")).transpose()?;
        let to_timestamp = match given(to_timestamp) {
            Some(ts) if ts.is_instance(crate::pyrefs::datetime_class(py)?)? => Some(time::utc_micros(&ts)?),
            Some(_) => return raise(Kind::ArgumentType, "as_of_time must be a datetime"),
            None => None,
        };
        let plain_start = from_sequence == 0 && given(initial_state).is_none() && given(upcast).is_none();
        if look_up_snapshot_at.is_some() && (!plain_start || skip_corrupt) {
            return raise(
                Kind::InvalidArgument,
                "look_up_snapshot_at folds from the first event: it takes no from_sequence, \
                 initial_state, upcast or skip_corrupt",
            );
        }
        let mut folder = Folder::from_py(
            &workflow_id,
            from_sequence,
            initial_state,
            upcast,
            current_schema_version,
            skip_corrupt,
        )?;
        // A state folded up to an instant is no checkpoint for a sequence: no snapshot then.
        let snapshot_after_events = snapshot_after_events.filter(|_| to_timestamp.is_none());
        let entity_id = workflow_id.clone();
        let mut filter = Filter {
            workflow_id: Some(workflow_id),
            from_sequence: Some(from_sequence),
            to_sequence,
            to_timestamp,
            ..Filter::all()
        };
        let full = folder.needs_full_rows();
        let backend: &dyn Backend = &*self.backend;
        let Some(at) = look_up_snapshot_at else {
            let scanned = py.detach(|| backend.scan(&filter, full, &mut |row| folder.visit(row)));
            if let Some(err) = folder.py_error.take() {
                return Err(err);
            }
            scanned?;
            return self.fold_result(py, folder, &entity_id, snapshot_after_events, snapshot_min_events);
        };
        let saver = &self.saver;
        let pause_after = u64::try_from(at.max(1) - 1).unwrap_or(0);
        let looked_up = py.detach(|| -> CoreResult<LookUp> {
            // Where the backend can, the snapshots are read within the scan's own read, and the
            // scan goes on when none is found. A pending save of this workflow is waited for
            // before that read starts, so that the read sees it.
            saver.wait_for(&entity_id);
            let mut paused: Option<(Option<SnapshotRecord>, Vec<String>)> = None;
            let mut pause = |read: &mut SnapshotRead<'_>| -> CoreResult<bool> {
                let (found, skipped) = snapshot::latest_usable_from(
                    read,
                    "workflow",
                    &entity_id,
                    to_sequence,
                    to_timestamp,
                    50,
                )?;
                let go_on = found.is_none();
                paused = Some((found, skipped));
                Ok(go_on)
            };
            backend.scan_pausing(&filter, false, &mut |row| folder.visit(row), pause_after, &mut pause)?;
            let (found, skipped) = match paused {
                None => return Ok(LookUp::NotReached),
                Some((None, skipped)) => return Ok(LookUp::Done(None, skipped)),
                Some(found_and_skipped) => found_and_skipped,
            };
            let found = match found {
                Some(record) if !record.state_hash.starts_with(snapshot::HASH_PREFIX) => {
                    return Ok(LookUp::Legacy(record, skipped));
                }
                Some(record) if record.sequence > folder.last_sequence => {
                    let record = Arc::new(record);
                    let options = FoldOptions { current_schema_version, skip_corrupt: false, upcast: None };
                    folder = Folder::from_stored(&entity_id, Arc::clone(&record), options);
                    Some(record)
                }
                _ => None,
            };
            filter.from_sequence = Some(folder.last_sequence);
            backend.scan(&filter, false, &mut |row| folder.visit(row))?;
            Ok(LookUp::Done(found, skipped))
        })?;
        // A workflow that ends before the look-up point is too small to be worth a snapshot:
        // none is saved of it either.
        let (found, mut skipped, snapshot_after_events) = match looked_up {
            LookUp::NotReached => (None, Vec::new(), None),
            LookUp::Done(found, skipped) => (found, skipped, snapshot_after_events),
            LookUp::Legacy(record, skipped) => {
                let d = PyDict::new(py);
                d.set_item("legacy_snapshot", StoredSnapshot { record: Arc::new(record) })?;
                d.set_item("snapshot_skipped", skipped)?;
                return Ok(d);
            }
        };
        skipped.extend(self.saver.take_failures());
        let d = self.fold_result(py, folder, &entity_id, snapshot_after_events, snapshot_min_events)?;
        d.set_item("snapshot", found.map(|record| StoredSnapshot { record }))?;
        d.set_item("snapshot_skipped", skipped)?;
        Ok(d)
    }

    /// Save a snapshot of an entity's state as of `sequence` (replacing one at the same sequence).
    /// Without `state_hash` the SHA-256 of the encoded state is stored (`sha256-msgpack:<hex>`);
    /// a given one is stored as given (a legacy hash, or a test's wrong one).
    #[pyo3(signature = (
        entity_type, entity_id, workflow_id, version, sequence, state, state_hash=None, max_event_time_us=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn save_snapshot(
        &self,
        py: Python<'_>,
        entity_type: &Bound<'_, PyAny>,
        entity_id: &Bound<'_, PyAny>,
        workflow_id: &Bound<'_, PyAny>,
        version: &Bound<'_, PyAny>,
        sequence: &Bound<'_, PyAny>,
        state: &Bound<'_, PyAny>,
        state_hash: Option<&Bound<'_, PyAny>>,
        max_event_time_us: Option<i64>,
    ) -> PyResult<()> {
        let state = encode_dict(state, "state")?;
        let state_hash = match state_hash.filter(|h| !h.is_none()) {
            Some(given) => str_arg(given, "state_hash")?,
            None => snapshot::bytes_hash(&state),
        };
        let record = SnapshotRecord {
            entity_type: enum_value(entity_type, "entity_type")?,
            entity_id: str_arg(entity_id, "entity_id")?,
            workflow_id: str_arg(workflow_id, "workflow_id")?,
            version: int_arg(version, "version")?,
            sequence: int_arg(sequence, "sequence")?,
            state,
            state_hash,
            created_at_us: time::now_micros(),
            max_event_us: max_event_time_us,
            problem: None,
        };
        self.run(py, move |b| b.save_snapshot(&record))
    }

    /// Snapshots of an entity at or before `max_sequence`, newest first, as dicts.
    #[pyo3(signature = (entity_type, entity_id, max_sequence=None, limit=10))]
    fn snapshots<'py>(
        &self,
        py: Python<'py>,
        entity_type: &Bound<'py, PyAny>,
        entity_id: &Bound<'py, PyAny>,
        max_sequence: Option<&Bound<'py, PyAny>>,
        limit: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let entity_type = enum_value(entity_type, "entity_type")?;
        let entity_id = str_arg(entity_id, "entity_id")?;
        let max_sequence =
            max_sequence.filter(|m| !m.is_none()).map(|m| int_arg(m, "max_sequence")).transpose()?;
        let saver = &self.saver;
        let rows = self.run(py, move |b| {
            saver.wait_for(&entity_id);
            b.snapshots(&entity_type, &entity_id, max_sequence, limit)
        })?;
        PyList::new(py, rows.iter().map(|r| snapshot_dict(py, r)).collect::<PyResult<Vec<_>>>()?)
    }

    /// The newest snapshot of an entity a replay up to `max_sequence` (and events up to
    /// `max_event_time_us`) may start from, checked over its stored bytes, with the reasons
    /// the newer ones passed over cannot be used. At most `limit` snapshots are read, one at
    /// a time. A legacy one (`legacy` set) is still to be checked against its canonical JSON.
    #[pyo3(signature = (entity_type, entity_id, max_sequence=None, max_event_time_us=None, limit=50))]
    fn latest_snapshot<'py>(
        &self,
        py: Python<'py>,
        entity_type: &Bound<'py, PyAny>,
        entity_id: &Bound<'py, PyAny>,
        max_sequence: Option<&Bound<'py, PyAny>>,
        max_event_time_us: Option<i64>,
        limit: usize,
    ) -> PyResult<(Option<StoredSnapshot>, Vec<String>)> {
        let entity_type = enum_value(entity_type, "entity_type")?;
        let entity_id = str_arg(entity_id, "entity_id")?;
        let max_sequence =
            max_sequence.filter(|m| !m.is_none()).map(|m| int_arg(m, "max_sequence")).transpose()?;
        let saver = &self.saver;
        let (found, mut skipped) = self.run(py, move |b| {
            saver.wait_for(&entity_id);
            snapshot::latest_usable(b, &entity_type, &entity_id, max_sequence, max_event_time_us, limit)
        })?;
        skipped.extend(self.saver.take_failures());
        Ok((found.map(|record| StoredSnapshot { record: Arc::new(record) }), skipped))
    }

    /// Create or replace a durable subscription with its settings and position.
    fn put_subscription(
        &self,
        py: Python<'_>,
        subscription_id: &Bound<'_, PyAny>,
        config: &Bound<'_, PyAny>,
        last_sequence: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let record = SubscriptionRecord {
            id: str_arg(subscription_id, "subscription_id")?,
            config: encode_dict(config, "config")?,
            last_sequence: int_arg(last_sequence, "last_sequence")?,
            updated_at_us: time::now_micros(),
        };
        self.run(py, move |b| b.put_subscription(&record))
    }

    fn subscription<'py>(
        &self,
        py: Python<'py>,
        subscription_id: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let id = str_arg(subscription_id, "subscription_id")?;
        let row = self.run(py, move |b| b.subscription(&id))?;
        row.map(|r| subscription_dict(py, &r)).transpose()
    }

    /// Persist a subscription's position; False when it does not exist.
    fn advance_subscription(
        &self,
        py: Python<'_>,
        subscription_id: &Bound<'_, PyAny>,
        last_sequence: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let id = str_arg(subscription_id, "subscription_id")?;
        let seq = int_arg(last_sequence, "last_sequence")?;
        self.run(py, move |b| b.advance_subscription(&id, seq, time::now_micros()))
    }

    fn delete_subscription(&self, py: Python<'_>, subscription_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = str_arg(subscription_id, "subscription_id")?;
        self.run(py, move |b| b.delete_subscription(&id))
    }

    fn subscriptions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.run(py, |b| b.subscriptions())?;
        PyList::new(py, rows.iter().map(|r| subscription_dict(py, r)).collect::<PyResult<Vec<_>>>()?)
    }

    /// `{"commits", "appends"}`: write transactions that committed appends and the
    /// append calls they stored (group commit makes the second larger under
    /// concurrency); failed appends count in neither. None for stores without group commit.
    fn commit_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.backend
            .commit_stats()
            .map(|(commits, appends)| {
                let d = PyDict::new(py);
                d.set_item("commits", commits)?;
                d.set_item("appends", appends)?;
                Ok(d)
            })
            .transpose()
    }

    /// Wait until every snapshot handed over by a rebuild is written; why any save failed
    /// (one line each), since the last call.
    fn flush_snapshots(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| self.saver.wait_all());
        self.saver.take_failures()
    }

    /// Write the pending snapshots (`flush_snapshots`, whose lines it returns), then release
    /// the database; later calls raise `StoreClosedError`.
    fn close(&self, py: Python<'_>) -> Vec<String> {
        let failures = self.flush_snapshots(py);
        py.detach(|| self.backend.close());
        failures
    }
}
