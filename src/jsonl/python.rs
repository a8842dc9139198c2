//! What Python calls: `jsonl_export_page` (a page of a native store as lines),
//! `jsonl_encode_events` (events of any store as lines), `jsonl_parse` (lines
//! read, as `JsonlLines`) and `SqliteJsonlImport` (read lines written into an
//! SQLite file with their sequences). The work runs with the GIL released.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::decode::{self, ReadLines};
use super::encode::LineWriter;
use super::reader::{ChunkReader, Next};
use super::sqlite_target::SqliteTarget;
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::{coerce_event, Event};
use crate::fold::EventView;
use crate::py::native_store::NativeStore;
use crate::store::{Backend, Filter};

/// Lines of the events with sequences in `(after, up_to]`, appended to `out`;
/// returns how many and the last sequence written.
fn export_range(
    backend: &dyn Backend,
    after: i64,
    up_to: i64,
    writer: &mut LineWriter,
    out: &mut Vec<u8>,
) -> CoreResult<(usize, i64)> {
    let filter = Filter { from_sequence: Some(after), to_sequence: Some(up_to), ..Filter::all() };
    let mut count = 0;
    let mut last = after;
    backend.scan(&filter, true, &mut |row| {
        let event = row?;
        writer.push(&event, out)?;
        count += 1;
        last = event.sequence;
        Ok(())
    })?;
    Ok((count, last))
}

/// The events of `store` after sequence `after`, up to `span` sequences of them (more
/// when the next event lies further on), as JSON Lines: `(lines, count, last sequence)`,
/// count 0 when no event follows `after`.
#[pyfunction]
pub fn jsonl_export_page<'py>(
    py: Python<'py>,
    store: &Bound<'py, NativeStore>,
    after: i64,
    span: i64,
) -> PyResult<(Bound<'py, PyBytes>, usize, i64)> {
    if span < 1 {
        return Err(
            CoreError::new(Kind::InvalidArgument, format!("span must be 1 or more, not {span}")).into()
        );
    }
    let backend = store.get().backend();
    let (out, count, last) = py.detach(|| -> CoreResult<(Vec<u8>, usize, i64)> {
        let mut out = Vec::with_capacity(1 << 19);
        let mut writer = LineWriter::default();
        let (mut count, mut last) =
            export_range(backend, after, after.saturating_add(span), &mut writer, &mut out)?;
        if count == 0 {
            // A gap of more than `span` sequences: go on from the next event, if any.
            let next = Filter { from_sequence: Some(after), limit: Some(1), ..Filter::all() };
            if let Some(r) = backend.query(&next)?.first() {
                (count, last) =
                    export_range(backend, after, r.sequence.saturating_add(span - 1), &mut writer, &mut out)?;
            }
        }
        Ok((out, count, last))
    })?;
    Ok((PyBytes::new(py, &out), count, last))
}

/// `events` (`Event`s of any store) as JSON Lines.
#[pyfunction]
pub fn jsonl_encode_events<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(1 << 16);
    let mut writer = LineWriter::default();
    for (i, item) in events.try_iter()?.enumerate() {
        let event = coerce_event(&item?, Some(i))?;
        let record = event.get().to_record(py)?;
        writer.push(&EventView::of(&record), &mut out)?;
    }
    Ok(PyBytes::new(py, &out))
}

/// The lines of a block of JSON Lines, read: the events with their line numbers, and the
/// bad lines.
#[pyclass(frozen, module = "stabilize_events._core")]
pub struct JsonlLines {
    read: ReadLines,
    /// Bytes of the file the lines took.
    bytes: usize,
}

#[pymethods]
impl JsonlLines {
    /// The bad lines as `(line number, why)`.
    #[getter]
    fn bad(&self) -> Vec<(usize, String)> {
        self.read.bad.clone()
    }

    /// The events read, as `Event`s (with the sequences the lines give).
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self
            .read
            .events
            .iter()
            .map(|(r, _)| Event::read(py, Arc::new(r.clone())))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, events)
    }

    /// Bytes of the file (or block) the lines took.
    #[getter]
    fn size(&self) -> usize {
        self.bytes
    }

    fn __len__(&self) -> usize {
        self.read.events.len()
    }
}

/// Reads the JSON Lines in `block` (its first line numbered `first_line`); without `skip_bad`
/// reading stops at the first bad line. Runs with the GIL released, so the next block can be
/// read while the last one is written.
#[pyfunction]
pub fn jsonl_parse(py: Python<'_>, block: &[u8], first_line: usize, skip_bad: bool) -> JsonlLines {
    JsonlLines { read: py.detach(|| decode::lines(block, first_line, skip_bad)), bytes: block.len() }
}

/// How often a wait for the next chunk lets Python's signal handlers run.
const SIGNAL_CHECKS: std::time::Duration = std::time::Duration::from_millis(100);

/// The lines of an open file, from where it stands, read a chunk at a time on a thread of its
/// own (a few chunks ahead at most) as `JsonlLines`; without `skip_bad` the last chunk ends at
/// the first bad line.
#[pyclass(frozen, module = "stabilize_events._core")]
pub struct JsonlReader {
    chunks: Mutex<ChunkReader>,
    /// The last chunk was given.
    finished: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl JsonlReader {
    /// Read the file open as the descriptor `fd` (a copy of it: the caller still closes its
    /// own), `chunk` lines at a time.
    #[new]
    fn new(fd: i32, chunk: usize, skip_bad: bool) -> PyResult<Self> {
        // SAFETY: `dup` makes a descriptor that the `File` alone owns and closes.
        let own = unsafe { libc::dup(fd) };
        if own < 0 {
            let e = std::io::Error::last_os_error();
            return Err(
                CoreError::new(Kind::InvalidArgument, format!("cannot read descriptor {fd}: {e}")).into()
            );
        }
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(own) };
        let chunks = ChunkReader::start(file, chunk, skip_bad, 1)?;
        Ok(JsonlReader { chunks: Mutex::new(chunks), finished: Default::default() })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next chunk's lines, waiting for them without the GIL; Python's signal handlers run
    /// while it waits (a second Ctrl-C stops an import waiting on an idle pipe).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<JsonlLines>> {
        let next = loop {
            let wait = || self.chunks.lock().unwrap_or_else(PoisonError::into_inner).next(SIGNAL_CHECKS);
            match py.detach(wait) {
                Next::Ready(next) => break next,
                Next::NotYet => py.check_signals()?,
            }
        };
        match next {
            None => Ok(None),
            Some(chunk) => {
                let chunk = chunk?;
                if chunk.last {
                    self.finished.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Some(JsonlLines { read: chunk.read, bytes: chunk.bytes }))
            }
        }
    }

    /// Whether the last chunk was given (the end of the file, or a bad line without `skip_bad`).
    #[getter]
    fn finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Imports JSON Lines into the SQLite event store in a file, keeping every event's
/// sequence; each `write` is one transaction.
#[pyclass(frozen, module = "stabilize_events._core")]
pub struct SqliteJsonlImport {
    target: Mutex<Option<SqliteTarget>>,
}

#[pymethods]
impl SqliteJsonlImport {
    /// Open the store's file `path` (its tables made already, by opening the store).
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let target = py.detach(|| SqliteTarget::open(&path))?;
        Ok(SqliteJsonlImport { target: Mutex::new(Some(target)) })
    }

    /// Write the events of `lines` in one transaction: `(imported, already present)`. A
    /// conflict (a sequence or id held by another event) raises `DuplicateEventError`, and
    /// nothing of them is written.
    fn write(&self, py: Python<'_>, lines: &Bound<'_, JsonlLines>) -> PyResult<(usize, usize)> {
        let events = &lines.get().read.events;
        let result = py.detach(|| -> CoreResult<(usize, usize)> {
            let mut target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
            let target = target
                .as_mut()
                .ok_or_else(|| CoreError::new(Kind::StoreClosed, "this import was closed; open another"))?;
            let fresh = target.write(events)?;
            Ok((fresh, events.len() - fresh))
        })?;
        Ok(result)
    }

    /// Close the connection; later writes raise `StoreClosedError`.
    fn close(&self) {
        self.target.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Adds the functions and class of this module to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(jsonl_export_page, m)?)?;
    m.add_function(wrap_pyfunction!(jsonl_encode_events, m)?)?;
    m.add_function(wrap_pyfunction!(jsonl_parse, m)?)?;
    m.add_class::<JsonlLines>()?;
    m.add_class::<JsonlReader>()?;
    m.add_class::<SqliteJsonlImport>()?;
    Ok(())
}
