//! The options and arguments `NativeStore` takes from Python, checked, with their defaults.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::args::{int_arg, str_arg, type_name};
use crate::errors::{raise, Kind};
use crate::event::Event;
use crate::store::Expectation;

/// Default `max_payload_bytes`: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// Default `decode_ahead`: on. Decoding a large read's payloads while its later rows
/// are still being read (on a second thread) hides most of the decoding behind the
/// reading, for callers that use the payloads, as most do; a caller reading many
/// events without their payloads reads faster with it off.
pub const DEFAULT_DECODE_AHEAD: bool = true;

/// A bool option: `default` when not given (or None).
pub fn bool_option(value: Option<&Bound<'_, PyAny>>, name: &str, default: bool) -> PyResult<bool> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(default),
        Some(v) if v.is_instance_of::<pyo3::types::PyBool>() => v.is_truthy(),
        Some(v) => raise(Kind::ArgumentType, format!("{name} must be a bool, not {}", type_name(v))),
    }
}

pub fn payload_limit(value: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(DEFAULT_MAX_PAYLOAD_BYTES),
        Some(v) => match int_arg(v, "max_payload_bytes")? {
            n if n > 0 => Ok(n as usize),
            n => raise(Kind::InvalidArgument, format!("max_payload_bytes must be > 0, not {n}")),
        },
    }
}

/// Expectations from `expected_versions`: a mapping of entity id to version.
/// The entity type is taken from the batch's event for that entity, if any.
pub fn expectations(
    events: &[Bound<'_, Event>],
    expected: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Expectation>> {
    let Some(mapping) = expected.filter(|m| !m.is_none()) else {
        return Ok(Vec::new());
    };
    let Ok(mapping) = mapping.cast::<PyDict>() else {
        return raise(Kind::ArgumentType, "expected_versions must be a dict of entity id to version");
    };
    let mut out = Vec::with_capacity(mapping.len());
    for (key, value) in mapping.iter() {
        let entity_id = str_arg(&key, "expected_versions key")?;
        let version = int_arg(&value, &format!("expected_versions[{entity_id:?}]"))?;
        let entity_type = events
            .iter()
            .map(|e| e.get().record())
            .find(|r| r.entity_id == entity_id)
            .map(|r| r.entity_type.clone());
        out.push(Expectation { entity_type, entity_id: entity_id.into(), version });
    }
    Ok(out)
}
