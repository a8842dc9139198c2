//! The Rust core of `stabilize_events`, loaded as `stabilize_events._core`.
//!
//! - `event/`: the event model (`EventRecord`, and the Python `Event`/`EventMetadata`).
//! - `codec/`: payload msgpack encoding and decoding.
//! - `jsonl/`: events as JSON Lines (`export` and `import`).
//! - `store/`: the `Backend` trait and its SQLite and in-memory backends.
//! - `py/`: `NativeStore`, the stores' Python face over a backend.
//! - `gc_pause`: Python's garbage collector paused while a store builds objects by the thousand.
//! - `allocator`: mimalloc, and its settings; `tuning`: switching those and the string cache off.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod allocator;
pub mod args;
pub mod codec;
pub mod errors;
pub mod event;
pub mod fold;
mod gc_pause;
pub mod jsonl;
pub mod py;
pub mod pyrefs;
pub mod store;
pub mod time;
mod tuning;

use errors::{CoreError, Kind};

/// Encode a payload as the stores do (msgpack with extension types).
#[pyfunction]
fn encode_payload<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(128);
    codec::encode::encode(value, &mut out).map_err(|e| CoreError::new(Kind::Payload, e.describe("data")))?;
    Ok(PyBytes::new(py, &out))
}

/// Decode bytes made by `encode_payload`.
#[pyfunction]
fn decode_payload<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    codec::decode::decode(py, args::bytes_arg(data, "data")?)
        .map_err(|e| CoreError::new(Kind::CorruptEvent, format!("payload cannot be decoded: {}", e.0)).into())
}

/// Fold events given as objects (from a store not backed by this core) into
/// the state of `workflow_id`; same result shape as `NativeStore.fold_workflow`.
/// With `snapshot_after_events`, when at least that many events were applied (none skipped)
/// onto nothing or a `StoredSnapshot`, the result also holds `"snapshot_row"`: the snapshot
/// to store, `{"version", "sequence", "state", "state_hash", "max_event_time_us"}`, its state
/// the msgpack of the answer (encoded from the folded state while the answer is built) and
/// its hash over those bytes, for the caller to write; with `snapshot_min_events`, only when
/// the state folds at least that many events in all (the snapshot's version plus those applied).
#[pyfunction]
#[pyo3(signature = (
    workflow_id, events, initial_state=None, upcast=None, current_schema_version=1, skip_corrupt=false,
    snapshot_after_events=None, snapshot_min_events=None
))]
#[allow(clippy::too_many_arguments)]
fn fold_events<'py>(
    py: Python<'py>,
    workflow_id: &str,
    events: &Bound<'py, PyAny>,
    initial_state: Option<&Bound<'py, PyAny>>,
    upcast: Option<&Bound<'py, PyAny>>,
    current_schema_version: i64,
    skip_corrupt: bool,
    snapshot_after_events: Option<i64>,
    snapshot_min_events: Option<i64>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let mut folder =
        fold::Folder::from_py(workflow_id, 0, initial_state, upcast, current_schema_version, skip_corrupt)?;
    for (i, item) in events.try_iter()?.enumerate() {
        let event = event::coerce_event(&item?, Some(i))?;
        let record = event.get().to_record(py)?;
        let visited = folder.visit(Ok(fold::EventView::of(&record)));
        if let Some(err) = folder.py_error.take() {
            return Err(err);
        }
        visited?;
    }
    match folder.snapshot_due(workflow_id, snapshot_after_events, snapshot_min_events) {
        Some(snapshot) => folder.into_py_with_snapshot_row(py, snapshot),
        None => folder.into_py(py),
    }
}

/// The database file `url` names (a URL or plain path, read as `SqliteEventStore` reads it,
/// made absolute against the current directory), or None for an in-memory database.
#[pyfunction]
fn sqlite_database_path(url: &str) -> PyResult<Option<std::path::PathBuf>> {
    Ok(match store::sqlite::Location::parse(url)? {
        store::sqlite::Location::File(path) => Some(path),
        store::sqlite::Location::Memory => None,
    })
}

/// The path of the shared object holding the SQLite this core calls, as the
/// dynamic loader names it (see `store::sqlite::library`).
#[pyfunction]
fn sqlite_library() -> PyResult<String> {
    let path = store::sqlite::library::library_path().ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("no loaded object holds this core's sqlite3_libversion")
    })?;
    Ok(path.to_string_lossy().into_owned())
}

/// The version of the SQLite library this core calls (`sqlite3_libversion()`).
#[pyfunction]
fn sqlite_version() -> &'static str {
    store::sqlite::library::version()
}

/// Whether `state` (a snapshot's stored bytes) matches `state_hash`; None for a legacy hash,
/// which is over the canonical JSON of the decoded state and checked in Python.
#[pyfunction]
fn snapshot_bytes_intact(state: &[u8], state_hash: &str) -> Option<bool> {
    state_hash
        .starts_with(store::snapshot::HASH_PREFIX)
        .then(|| store::snapshot::bytes_hash(state) == state_hash)
}

/// `sha256-msgpack:<hex>`, the hash a snapshot whose state is stored as `state` (bytes made by
/// `encode_payload`) carries: stores that keep their own rows (PostgreSQL) hash with it.
#[pyfunction]
fn snapshot_hash(state: &[u8]) -> String {
    store::snapshot::bytes_hash(state)
}

/// `Event`s for rows a store read itself (PostgreSQL): tuples of sequence, event_id,
/// event_type, timestamp_us, entity_type, entity_id, workflow_id, version, data (msgpack
/// bytes, decoded when first used), correlation_id, causation_id, actor, source_handler,
/// schema_version.
#[pyfunction]
fn events_from_rows<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    event::events_from_rows(py, rows)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    allocator::configure();
    m.add_class::<event::Event>()?;
    m.add_class::<event::EventMetadata>()?;
    m.add_class::<py::native_store::NativeStore>()?;
    m.add_class::<store::snapshot::StoredSnapshot>()?;
    m.add_function(wrap_pyfunction!(encode_payload, m)?)?;
    m.add_function(wrap_pyfunction!(decode_payload, m)?)?;
    m.add_function(wrap_pyfunction!(fold_events, m)?)?;
    m.add_function(wrap_pyfunction!(sqlite_database_path, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot_bytes_intact, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot_hash, m)?)?;
    m.add_function(wrap_pyfunction!(events_from_rows, m)?)?;
    m.add_function(wrap_pyfunction!(event::stored_event_type, m)?)?;
    m.add("EVENT_FIELDS", event::FIELDS)?;
    m.add_function(wrap_pyfunction!(sqlite_library, m)?)?;
    m.add_function(wrap_pyfunction!(sqlite_version, m)?)?;
    m.add("SQLITE_SCHEMA_VERSION", store::sqlite::SCHEMA_VERSION)?;
    m.add("SQLITE_INSERT_ROW", store::sqlite::insert::row_insert_sql())?;
    jsonl::python::register(m)?;
    py::add_defaults(m)?;
    Ok(())
}
