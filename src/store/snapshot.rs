//! Snapshot integrity and the choice of a snapshot to start a replay from.
//!
//! A snapshot's stored hash is the SHA-256 of the very bytes stored as its state
//! (msgpack), written `sha256-msgpack:<hex>`: checking it reads the stored bytes
//! once, with no decoding or re-serialization. Snapshots saved before that
//! carry the bare hex SHA-256 of the state's canonical JSON (see
//! `stabilize_events.canonical`); those are handed back marked `legacy`, and the
//! Python side checks them the old way before use (or replaces them).

use std::sync::Arc;

use pyo3::prelude::*;
use sha2::{Digest, Sha256};

use super::{Backend, SnapshotRead, SnapshotRecord};
use crate::codec;
use crate::errors::CoreResult;
use crate::time;

/// The prefix of a hash over the stored bytes; a hash without it is a legacy one.
pub const HASH_PREFIX: &str = "sha256-msgpack:";

/// `sha256-msgpack:<hex>` of `state`, the bytes stored as a snapshot's state.
pub fn bytes_hash(state: &[u8]) -> String {
    let digest = Sha256::digest(state);
    let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
    out.push_str(HASH_PREFIX);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// What checking a stored snapshot found.
#[derive(Debug, PartialEq, Eq)]
pub enum Integrity {
    /// Its stored bytes hash to its stored hash.
    Intact,
    /// Its hash is of the legacy format (canonical JSON), to be checked in Python.
    Legacy,
    /// It must not be used; why.
    Damaged(String),
}

impl SnapshotRecord {
    /// Check the snapshot against its stored hash (only the stored bytes are read).
    pub fn integrity(&self) -> Integrity {
        if let Some(problem) = &self.problem {
            return Integrity::Damaged(format!("its state cannot be decoded ({problem})"));
        }
        match self.state_hash.strip_prefix(HASH_PREFIX) {
            Some(_) if bytes_hash(&self.state) == self.state_hash => Integrity::Intact,
            Some(_) => Integrity::Damaged("its state does not match its SHA-256 hash".into()),
            None => Integrity::Legacy,
        }
    }
}

/// The newest snapshot of an entity usable for a replay up to `max_sequence`
/// (and `max_event_us`, the instant of a time-travel query), reading at most
/// `limit` snapshots one at a time, newest first. Intact or legacy snapshots
/// are returned (a legacy one is still to be checked); damaged ones are passed
/// over, each with a line saying why in the returned list.
pub fn latest_usable(
    backend: &dyn Backend,
    entity_type: &str,
    entity_id: &str,
    max_sequence: Option<i64>,
    max_event_us: Option<i64>,
    limit: usize,
) -> CoreResult<(Option<SnapshotRecord>, Vec<String>)> {
    let mut read = |t: &str, id: &str, max: Option<i64>, n: usize| backend.snapshots(t, id, max, n);
    latest_usable_from(&mut read, entity_type, entity_id, max_sequence, max_event_us, limit)
}

/// `latest_usable`, the snapshots read through `read` (see `Backend::scan_pausing`).
pub fn latest_usable_from(
    read: &mut SnapshotRead<'_>,
    entity_type: &str,
    entity_id: &str,
    max_sequence: Option<i64>,
    max_event_us: Option<i64>,
    limit: usize,
) -> CoreResult<(Option<SnapshotRecord>, Vec<String>)> {
    let mut skipped = Vec::new();
    let mut bound = max_sequence;
    for _ in 0..limit {
        let Some(record) = read(entity_type, entity_id, bound, 1)?.into_iter().next() else {
            break;
        };
        bound = Some(record.sequence - 1);
        let too_late = |newest: Option<i64>, limit: i64| newest.is_none_or(|t| t > limit);
        if max_event_us.is_some_and(|limit| too_late(record.max_event_us, limit)) {
            continue;
        }
        match record.integrity() {
            Integrity::Intact | Integrity::Legacy => return Ok((Some(record), skipped)),
            Integrity::Damaged(why) => skipped.push(format!(
                "ignoring snapshot of {} {} at sequence {}: {why}",
                record.entity_type, record.entity_id, record.sequence
            )),
        }
        if record.sequence <= 0 {
            break;
        }
    }
    Ok((None, skipped))
}

/// A stored snapshot chosen for a replay, its state kept as the stored bytes:
/// a fold seeded from it reads them directly.
#[pyclass(frozen, module = "stabilize_events._core")]
pub struct StoredSnapshot {
    pub record: Arc<SnapshotRecord>,
}

#[pymethods]
impl StoredSnapshot {
    #[getter]
    fn entity_type(&self) -> &str {
        &self.record.entity_type
    }
    #[getter]
    fn entity_id(&self) -> &str {
        &self.record.entity_id
    }
    #[getter]
    fn workflow_id(&self) -> &str {
        &self.record.workflow_id
    }
    #[getter]
    fn version(&self) -> i64 {
        self.record.version
    }
    #[getter]
    fn sequence(&self) -> i64 {
        self.record.sequence
    }
    #[getter]
    fn state_hash(&self) -> &str {
        &self.record.state_hash
    }
    /// Whether the hash is of the legacy format (canonical JSON), not yet checked.
    #[getter]
    fn legacy(&self) -> bool {
        !self.record.state_hash.starts_with(HASH_PREFIX)
    }
    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        time::utc_datetime(py, self.record.created_at_us)
    }
    #[getter]
    fn max_event_time_us(&self) -> Option<i64> {
        self.record.max_event_us
    }
    /// The state, decoded (a new dict each time).
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        codec::decode::decode(py, &self.record.state)
            .map_err(|e| crate::errors::CoreError::new(crate::errors::Kind::CorruptEvent, e.0).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: &[u8], hash: String) -> SnapshotRecord {
        SnapshotRecord { state: state.to_vec(), state_hash: hash, ..SnapshotRecord::default() }
    }

    #[test]
    fn hash_is_sha256_of_the_stored_bytes() {
        // SHA-256 of the empty input.
        assert_eq!(
            bytes_hash(b""),
            "sha256-msgpack:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn integrity_of_intact_tampered_and_legacy_records() {
        assert_eq!(record(b"\x80", bytes_hash(b"\x80")).integrity(), Integrity::Intact);
        assert!(matches!(record(b"\x81", bytes_hash(b"\x80")).integrity(), Integrity::Damaged(_)));
        assert!(matches!(
            record(b"\x80", format!("{HASH_PREFIX}{}", "0".repeat(64))).integrity(),
            Integrity::Damaged(_)
        ));
        assert_eq!(record(b"\x80", "0".repeat(64)).integrity(), Integrity::Legacy);
        let broken =
            SnapshotRecord { problem: Some("bad row".into()), ..record(b"\x80", bytes_hash(b"\x80")) };
        assert!(matches!(broken.integrity(), Integrity::Damaged(_)));
    }
}
