//! Events from rows a store read itself (PostgreSQL, through psycopg): the columns in
//! `EventRecord` order, the payload as the stored msgpack bytes, left undecoded until
//! Python asks for it (as events read by the native stores).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::{Event, EventRecord, Text};

/// How many columns a row has: sequence, event_id, event_type, timestamp_us, entity_type,
/// entity_id, workflow_id, version, data, correlation_id, causation_id, actor, source_handler,
/// schema_version.
const COLUMNS: usize = 14;

fn text(row: &Bound<'_, PyTuple>, i: usize) -> PyResult<Text> {
    Ok(Text::from(row.get_item(i)?.extract::<&str>()?))
}

fn optional_text(row: &Bound<'_, PyTuple>, i: usize) -> PyResult<Option<Text>> {
    let item = row.get_item(i)?;
    if item.is_none() {
        return Ok(None);
    }
    Ok(Some(Text::from(item.extract::<&str>()?)))
}

/// One row as a record.
fn record(row: &Bound<'_, PyTuple>) -> PyResult<EventRecord> {
    if row.len() != COLUMNS {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "an event row has {COLUMNS} columns, not {}",
            row.len()
        )));
    }
    Ok(EventRecord {
        sequence: row.get_item(0)?.extract()?,
        event_id: text(row, 1)?,
        event_type: text(row, 2)?,
        timestamp_us: row.get_item(3)?.extract()?,
        entity_type: text(row, 4)?,
        entity_id: text(row, 5)?,
        workflow_id: text(row, 6)?,
        version: row.get_item(7)?.extract()?,
        data: row.get_item(8)?.extract::<&[u8]>()?.to_vec(),
        correlation_id: text(row, 9)?,
        causation_id: optional_text(row, 10)?,
        actor: text(row, 11)?,
        source_handler: optional_text(row, 12)?,
        schema_version: row.get_item(13)?.extract()?,
    })
}

/// `Event`s for `rows` (tuples of the columns above, in that order).
pub fn events_from_rows<'py>(py: Python<'py>, rows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let mut out = Vec::new();
    for row in rows.try_iter()? {
        let row = row?;
        let row = row.cast::<PyTuple>()?;
        out.push(Event::read(py, Arc::new(record(row)?))?);
    }
    PyList::new(py, out)
}
