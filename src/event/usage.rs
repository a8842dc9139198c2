//! Whether large reads' payloads get used: the store's cue to decode them ahead.
//!
//! A large read can decode its events' payloads on the thread that holds the
//! GIL while a second thread is still reading rows, which hides most of the
//! decoding behind the reading. That pays only if the caller then asks for
//! the payloads; a read whose payloads go unused would pay for them instead.
//! So the store decodes ahead only while the last large read's payloads were
//! asked for: of the events it handed out, at least half have had their
//! `data` asked for since. (A large read: one of 2,048 events or more read
//! lazily, or one streamed from a second thread, past 512.) The counts are process-wide and kept loosely (two
//! threads reading at once may lose a count): they steer speed, never a result.

use std::sync::atomic::{AtomicU64, Ordering};

/// Events handed out by the last large read.
static HANDED: AtomicU64 = AtomicU64::new(0);
/// Of the events handed out by large reads, those whose payload was asked for since.
static ASKED: AtomicU64 = AtomicU64::new(0);

/// Whether the last large read's payloads were used (see the module).
pub fn payloads_wanted() -> bool {
    let handed = HANDED.load(Ordering::Relaxed);
    handed > 0 && ASKED.load(Ordering::Relaxed) * 2 >= handed
}

/// A large read hands out `events`: the counts start again from it.
pub fn handed_out(events: usize) {
    ASKED.store(0, Ordering::Relaxed);
    HANDED.store(events as u64, Ordering::Relaxed);
}

/// The payload of an event handed out by a large read was asked for (once per event).
pub fn payload_asked() {
    ASKED.fetch_add(1, Ordering::Relaxed);
}
