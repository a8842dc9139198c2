//! The Python face of the stores: `NativeStore` turns Python arguments into
//! records and filters, runs a backend (`crate::store`) with the GIL released,
//! and turns what it returns back into Python objects.
//!
//! - `native_store`: the `NativeStore` class.
//! - `options`: its options and arguments, checked, with their defaults.
//! - `read_ahead`: large reads whose payloads are decoded as their rows arrive.
//! - `records`: snapshots and subscriptions to and from Python dicts.

pub mod native_store;
mod options;
mod read_ahead;
mod records;

use pyo3::prelude::*;

use crate::store::split_read;
use crate::store::sqlite::config;

/// The stores' option defaults and read thresholds, as `_core` constants: the
/// Python signatures and documentation read them from here, so each is written once.
pub fn add_defaults(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DEFAULT_BUSY_TIMEOUT_MS", config::DEFAULT_BUSY_TIMEOUT_MS)?;
    m.add("DEFAULT_PAGE_SIZE", config::DEFAULT_PAGE_SIZE)?;
    m.add("DEFAULT_SYNCHRONOUS", config::DEFAULT_SYNCHRONOUS.pragma())?;
    m.add("DEFAULT_SPLIT_READS", config::DEFAULT_SPLIT_READS)?;
    m.add("DEFAULT_COALESCE_WAL_WRITES", config::DEFAULT_COALESCE_WAL_WRITES)?;
    m.add("DEFAULT_MMAP_READS", config::DEFAULT_MMAP_READS)?;
    m.add("DEFAULT_MAX_PAYLOAD_BYTES", options::DEFAULT_MAX_PAYLOAD_BYTES)?;
    m.add("DEFAULT_DECODE_AHEAD", options::DEFAULT_DECODE_AHEAD)?;
    m.add("SPLIT_READ_FIRST_PART", split_read::FIRST_PART)?;
    m.add("STREAM_READ_FIRST_PART", split_read::STREAM_FIRST_PART)?;
    Ok(())
}
