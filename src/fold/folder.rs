//! `Folder`: drives a fold over a scan — skips events of a newer schema,
//! upcasts older ones through a Python migrator, skips or rejects corrupt rows,
//! and counts what it did.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::background_save::SnapshotSaver;
use super::{EventView, WorkflowState};
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::{coerce_event, Event, EventRecord};
use crate::store::snapshot::{bytes_hash, StoredSnapshot};
use crate::store::SnapshotRecord;

/// How a fold treats events it cannot simply apply.
pub struct FoldOptions {
    /// Events with a newer schema are skipped (and reported), never applied.
    pub current_schema_version: i64,
    /// Report undecodable rows and go on, instead of failing with `CorruptEventError`.
    pub skip_corrupt: bool,
    /// `callable(Event) -> Event` applied to events with an older schema.
    pub upcast: Option<Py<PyAny>>,
}

pub struct Folder {
    pub state: WorkflowState,
    pub events_replayed: u64,
    pub last_sequence: i64,
    pub max_event_us: Option<i64>,
    pub skipped_newer: Vec<(String, i64)>,
    pub skipped_corrupt: Vec<String>,
    options: FoldOptions,
    /// An exception raised by the upcaster; the scan stops and it is re-raised.
    pub py_error: Option<PyErr>,
    /// A stored snapshot the state is to start from, read only when the first event is
    /// applied: with no event after it, its stored bytes are decoded as the result directly.
    seed: Option<(String, Arc<SnapshotRecord>)>,
    /// What the fold started from, for a snapshot it saves: nothing, a stored snapshot's
    /// (version, newest event time), or a state given as a dict (no snapshot is saved then).
    start: Start,
}

#[derive(Clone, Copy)]
enum Start {
    Empty,
    Stored { version: i64, max_event_us: Option<i64> },
    Given,
}

/// The keys of a state, in the order `WorkflowState::to_py` writes them.
const STATE_KEYS: [&str; 9] =
    ["workflow_id", "status", "application", "name", "start_time", "end_time", "context", "stages", "tasks"];

fn seed_error(e: crate::codec::view::ViewError) -> CoreError {
    CoreError::new(Kind::CorruptEvent, format!("snapshot state cannot be read: {}", e.0))
}

impl Folder {
    pub fn new(state: WorkflowState, last_sequence: i64, options: FoldOptions) -> Self {
        Folder {
            state,
            events_replayed: 0,
            last_sequence,
            max_event_us: None,
            skipped_newer: Vec::new(),
            skipped_corrupt: Vec::new(),
            options,
            py_error: None,
            seed: None,
            start: Start::Empty,
        }
    }

    /// A folder starting from a stored snapshot (its hash checked when it was chosen),
    /// seeded from its bytes lazily; events after its sequence are to be folded.
    pub fn from_stored(workflow_id: &str, record: Arc<SnapshotRecord>, options: FoldOptions) -> Self {
        let mut folder = Folder::new(WorkflowState::new(workflow_id), record.sequence, options);
        folder.start = Start::Stored { version: record.version, max_event_us: record.max_event_us };
        folder.seed = Some((workflow_id.to_owned(), record));
        folder
    }

    /// A folder from the Python-facing arguments shared by every fold entry point.
    pub fn from_py(
        workflow_id: &str,
        from_sequence: i64,
        initial_state: Option<&Bound<'_, PyAny>>,
        upcast: Option<&Bound<'_, PyAny>>,
        current_schema_version: i64,
        skip_corrupt: bool,
    ) -> PyResult<Folder> {
        let options = FoldOptions {
            current_schema_version,
            skip_corrupt,
            upcast: upcast.filter(|u| !u.is_none()).map(|u| u.clone().unbind()),
        };
        let mut start = Start::Empty;
        let state = match initial_state.filter(|s| !s.is_none()) {
            Some(s) if s.is_instance_of::<StoredSnapshot>() => {
                let record = Arc::clone(&s.cast::<StoredSnapshot>()?.get().record);
                let mut folder = Folder::from_stored(workflow_id, record, options);
                folder.last_sequence = from_sequence;
                return Ok(folder);
            }
            Some(s) => {
                if !s.is_instance_of::<PyDict>() {
                    return Err(CoreError::new(Kind::ArgumentType, "initial_state must be a dict").into());
                }
                start = Start::Given;
                let mut raw = Vec::new();
                crate::codec::encode::encode(s, &mut raw)
                    .map_err(|e| CoreError::new(Kind::Payload, e.describe("initial_state")))?;
                WorkflowState::from_msgpack(workflow_id, &raw).map_err(|e| {
                    CoreError::new(Kind::CorruptEvent, format!("snapshot state cannot be read: {}", e.0))
                })?
            }
            None => WorkflowState::new(workflow_id),
        };
        let mut folder = Folder::new(state, from_sequence, options);
        folder.start = start;
        Ok(folder)
    }

    /// Read the stored snapshot into the state, if it has not been yet.
    fn seed_state(&mut self) -> CoreResult<()> {
        if let Some((workflow_id, record)) = self.seed.take() {
            self.state = WorkflowState::from_msgpack(&workflow_id, &record.state).map_err(seed_error)?;
        }
        Ok(())
    }

    /// The stored snapshot's state decoded as is, when it has the shape `to_py` gives
    /// (so it is the state a fold would build from it); None otherwise.
    fn decoded_seed<'py>(py: Python<'py>, workflow_id: &str, raw: &[u8]) -> Option<Bound<'py, PyDict>> {
        // Thousands of dicts are made here: a collection pass in the middle would walk them for nothing.
        let _pause = crate::gc_pause::GcPause::new(py);
        let decoded = crate::codec::decode::decode(py, raw).ok()?;
        let d = decoded.cast_into::<PyDict>().ok()?;
        let keys_match = d.len() == STATE_KEYS.len()
            && d.keys().iter().zip(STATE_KEYS).all(|(k, want)| k.extract::<&str>().is_ok_and(|k| k == want));
        let id_matches = d
            .get_item("workflow_id")
            .ok()
            .flatten()
            .is_some_and(|v| v.extract::<&str>().is_ok_and(|v| v == workflow_id));
        let nested_ok = ["context", "stages", "tasks"].iter().all(|key| {
            d.get_item(key).ok().flatten().is_some_and(|v| match v.cast::<PyDict>() {
                Ok(inner) if *key == "context" => {
                    inner.iter().all(|(k, _)| k.is_instance_of::<pyo3::types::PyString>())
                }
                Ok(inner) => inner.values().iter().all(|e| e.is_instance_of::<PyDict>()),
                Err(_) => false,
            })
        });
        (keys_match && id_matches && nested_ok).then_some(d)
    }

    /// Whether scans must fill every field (upcasting rebuilds whole events).
    pub fn needs_full_rows(&self) -> bool {
        self.options.upcast.is_some()
    }

    /// Fold one scanned row in.
    pub fn visit(&mut self, row: CoreResult<EventView<'_>>) -> CoreResult<()> {
        let view = match row {
            Ok(v) => v,
            Err(e) if self.options.skip_corrupt && e.kind == Kind::CorruptEvent => {
                self.skipped_corrupt.push(e.message);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.last_sequence = self.last_sequence.max(view.sequence);
        if view.schema_version > self.options.current_schema_version {
            self.skipped_newer.push((view.event_id.to_owned(), view.schema_version));
            return Ok(());
        }
        let upcasted = if view.schema_version < self.options.current_schema_version {
            self.upcast(&view)?
        } else {
            None
        };
        let effective = upcasted.as_ref().map_or(view, EventView::of);
        // A rule may change the state before it meets the bad part of a payload:
        // an event that is to be skipped is checked whole before it is applied.
        self.seed_state()?;
        let checked =
            if self.options.skip_corrupt { crate::codec::validate::validate(effective.data) } else { Ok(()) };
        match checked.and_then(|()| self.state.apply(&effective)) {
            Ok(()) => {
                self.events_replayed += 1;
                self.max_event_us =
                    Some(self.max_event_us.map_or(view.timestamp_us, |m| m.max(view.timestamp_us)));
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "payload of event {} (sequence {}) cannot be read: {}",
                    view.event_id, view.sequence, e.0
                );
                if self.options.skip_corrupt {
                    self.skipped_corrupt.push(message);
                    Ok(())
                } else {
                    Err(CoreError::new(Kind::CorruptEvent, message))
                }
            }
        }
    }

    fn upcast(&mut self, view: &EventView<'_>) -> CoreResult<Option<EventRecord>> {
        let Some(upcast) = &self.options.upcast else {
            return Ok(None);
        };
        let result = Python::attach(|py| -> PyResult<EventRecord> {
            let event = Bound::new(py, Event::from_record(Arc::new(view.to_record())))?;
            let migrated = upcast.bind(py).call1((event,))?;
            let migrated = coerce_event(&migrated, None)?;
            let mut record = migrated.get().to_record(py)?;
            record.sequence = view.sequence;
            Ok(record)
        });
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.py_error = Some(e);
                Err(CoreError::new(Kind::Store, "upcasting failed"))
            }
        }
    }

    /// The snapshot of the folded state to save when `min_events` or more events were
    /// applied (and none skipped, which a snapshot would hide from later rebuilds), with
    /// no state yet; None when no snapshot is due, the state folds fewer than
    /// `min_state_events` events in all (the version it started from plus those applied),
    /// or the fold started from a given dict.
    pub fn snapshot_due(
        &self,
        workflow_id: &str,
        min_events: Option<i64>,
        min_state_events: Option<i64>,
    ) -> Option<SnapshotRecord> {
        let min_events = u64::try_from(min_events?.max(1)).ok()?;
        if self.events_replayed < min_events
            || !self.skipped_newer.is_empty()
            || !self.skipped_corrupt.is_empty()
        {
            return None;
        }
        // The newest event time in the state; unknown if the snapshot it grew from did not say.
        let (version, max_event_us) = match self.start {
            Start::Empty => (0, self.max_event_us),
            Start::Stored { version, max_event_us: None } => (version, None),
            Start::Stored { version, max_event_us: Some(known) } => {
                (version, Some(self.max_event_us.map_or(known, |m| m.max(known))))
            }
            Start::Given => return None,
        };
        let version = version.saturating_add(i64::try_from(self.events_replayed).unwrap_or(i64::MAX));
        if min_state_events.is_some_and(|min| version < min) {
            return None;
        }
        Some(SnapshotRecord {
            entity_type: "workflow".into(),
            entity_id: workflow_id.to_owned(),
            workflow_id: workflow_id.to_owned(),
            version,
            sequence: self.last_sequence,
            created_at_us: crate::time::now_micros(),
            max_event_us,
            ..SnapshotRecord::default()
        })
    }

    /// The state as a Python dict.
    fn state_py<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Nothing applied after a stored snapshot: its bytes are the answer.
        if let Some((workflow_id, record)) = &self.seed {
            if let Some(state) = Folder::decoded_seed(py, workflow_id, &record.state) {
                return Ok(state);
            }
        }
        self.seed_state()?;
        self.state.to_py(py)
    }

    /// `{"state", "events_replayed", "last_sequence", "max_event_time_us", "skipped_newer", "skipped_corrupt"}`.
    pub fn into_py<'py>(mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.state_py(py)?;
        self.result_py(py, state)
    }

    /// `into_py`, with `snapshot` (from `snapshot_due`) of the state handed to `saver`, which
    /// writes it after this returns (see `background_save`); `"snapshot_queued": True` is
    /// added then. A state only Python can encode is not handed over (no key is added: the
    /// caller saves it from the dict if it wants it).
    pub fn into_py_queueing<'py>(
        mut self,
        py: Python<'py>,
        saver: &SnapshotSaver,
        snapshot: SnapshotRecord,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.seed_state()?;
        if !self.state.encodes_without_python() {
            return self.into_py(py);
        }
        let state = self.state.to_py(py)?;
        let folded = std::mem::replace(&mut self.state, WorkflowState::new(""));
        // Without the GIL: it takes a lock the saver's worker holds briefly.
        py.detach(|| saver.submit(folded, snapshot));
        let d = self.result_py(py, state)?;
        d.set_item("snapshot_queued", true)?;
        Ok(d)
    }

    /// `into_py`, with `"snapshot_row"` added: `snapshot` (from `snapshot_due`) with the
    /// state's msgpack and its hash, encoded on another thread while the dict is built, as a
    /// dict for the caller to store. A state only Python can encode gets no row.
    pub fn into_py_with_snapshot_row<'py>(
        mut self,
        py: Python<'py>,
        snapshot: SnapshotRecord,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.seed_state()?;
        if !self.state.encodes_without_python() {
            return self.into_py(py);
        }
        let folded = &self.state;
        let (state, encoded) = std::thread::scope(|scope| {
            let encoder = scope.spawn(|| folded.to_msgpack().map(|bytes| (bytes_hash(&bytes), bytes)));
            let state = folded.to_py(py);
            (state, py.detach(|| encoder.join()))
        });
        let state = state?;
        let Ok(Some((hash, bytes))) = encoded else {
            return Err(CoreError::new(Kind::Store, "encoding the snapshot failed").into());
        };
        let row = PyDict::new(py);
        row.set_item("version", snapshot.version)?;
        row.set_item("sequence", snapshot.sequence)?;
        row.set_item("state", pyo3::types::PyBytes::new(py, &bytes))?;
        row.set_item("state_hash", hash)?;
        row.set_item("max_event_time_us", snapshot.max_event_us)?;
        let d = self.result_py(py, state)?;
        d.set_item("snapshot_row", row)?;
        Ok(d)
    }

    fn result_py<'py>(self, py: Python<'py>, state: Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("state", state)?;
        d.set_item("events_replayed", self.events_replayed)?;
        d.set_item("last_sequence", self.last_sequence)?;
        d.set_item("max_event_time_us", self.max_event_us)?;
        d.set_item("skipped_newer", self.skipped_newer)?;
        d.set_item("skipped_corrupt", self.skipped_corrupt)?;
        Ok(d)
    }
}
