//! Switches for the process-wide speed mechanisms, to measure each side by side.
//!
//! The allocator's settings (`allocator`) and the decoder's string cache
//! (`codec::key_cache`) serve the whole process, not one store, so they have no
//! store option: each is on unless the environment turns it off, read once
//! when first needed. Results are the same either way; only speed differs.
//!
//! - `STABILIZE_EVENTS_ALLOCATOR=default`: leave mimalloc at its own defaults.
//! - `STABILIZE_EVENTS_STRING_CACHE=off`: make every decoded string anew.
//!
//! The per-store mechanisms are store options instead (`decode_ahead`,
//! `split_reads`, `coalesce_wal_writes`: see `py::native_store`).

use std::sync::OnceLock;

fn turned_off(variable: &str, off: &str) -> bool {
    std::env::var_os(variable).is_some_and(|v| v == off)
}

/// Whether the allocator's settings are applied (see `allocator`).
pub fn allocator_settings() -> bool {
    !turned_off("STABILIZE_EVENTS_ALLOCATOR", "default")
}

/// Whether decoding shares Python strings through the string cache (see `codec::key_cache`).
pub fn string_cache() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !turned_off("STABILIZE_EVENTS_STRING_CACHE", "off"))
}
