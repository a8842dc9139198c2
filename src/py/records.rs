//! Snapshots and subscriptions between Python dicts and their stored records.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::codec;
use crate::errors::{raise, CoreError, Kind};
use crate::store::snapshot::Integrity;
use crate::store::{SnapshotRecord, SubscriptionRecord};
use crate::time;

pub fn encode_dict(value: &Bound<'_, PyAny>, root: &str) -> PyResult<Vec<u8>> {
    if !value.is_instance_of::<PyDict>() {
        return raise(Kind::ArgumentType, format!("{root} must be a dict"));
    }
    let mut out = Vec::with_capacity(256);
    codec::encode::encode(value, &mut out).map_err(|e| CoreError::new(Kind::Payload, e.describe(root)))?;
    Ok(out)
}

/// Decode a stored blob, or describe why it cannot be (the caller decides whether to skip it).
pub fn decode_or_reason<'py>(py: Python<'py>, bytes: &[u8]) -> (Option<Bound<'py, PyAny>>, Option<String>) {
    match codec::decode::decode(py, bytes) {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e.0)),
    }
}

pub fn snapshot_dict<'py>(py: Python<'py>, s: &SnapshotRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let (state, error) = match &s.problem {
        Some(problem) => (None, Some(problem.clone())),
        None => decode_or_reason(py, &s.state),
    };
    d.set_item("entity_type", &s.entity_type)?;
    d.set_item("entity_id", &s.entity_id)?;
    d.set_item("workflow_id", &s.workflow_id)?;
    d.set_item("version", s.version)?;
    d.set_item("sequence", s.sequence)?;
    d.set_item("state", state)?;
    d.set_item("state_error", error)?;
    d.set_item("state_hash", &s.state_hash)?;
    // Checked here over the stored bytes; None for a legacy hash (canonical JSON, checked in Python).
    let hash_ok = match s.integrity() {
        Integrity::Intact => Some(true),
        Integrity::Legacy => None,
        Integrity::Damaged(_) => Some(false),
    };
    d.set_item("hash_ok", hash_ok)?;
    d.set_item("created_at", time::utc_datetime(py, s.created_at_us)?)?;
    d.set_item("max_event_time_us", s.max_event_us)?;
    Ok(d)
}

pub fn subscription_dict<'py>(py: Python<'py>, s: &SubscriptionRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let (config, error) = decode_or_reason(py, &s.config);
    d.set_item("id", &s.id)?;
    d.set_item("config", config)?;
    d.set_item("config_error", error)?;
    d.set_item("last_sequence", s.last_sequence)?;
    d.set_item("updated_at", time::utc_datetime(py, s.updated_at_us)?)?;
    Ok(d)
}
