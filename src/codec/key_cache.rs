//! A small direct-mapped cache of Python strings.
//!
//! Event payloads repeat the same few keys (and many short values such as
//! statuses) millions of times; handing back a cached `str` (one incref) is
//! cheaper than building a new one, and allocates nothing.
//! `STABILIZE_EVENTS_STRING_CACHE=off` turns it off (see `crate::tuning`).

use pyo3::prelude::*;
use pyo3::types::PyString;

const SLOTS: usize = 4096;
/// Longest key cached; longer keys are rare.
pub const MAX_KEY_LEN: usize = 64;
/// Longest value cached: statuses, types and the short ids that repeat across
/// a stage's events (`wf-250-stage-1234`); a slot holds up to 24 bytes inline.
pub const MAX_VALUE_LEN: usize = 24;

struct Slot {
    hash: u64,
    /// Inline up to 24 bytes: replacing a slot allocates nothing for short text.
    text: compact_str::CompactString,
    value: Py<PyString>,
}

pub struct KeyCache {
    slots: Vec<Option<Slot>>,
    /// The key at each position of the last payloads (the n-th key read):
    /// payloads of one kind repeat their keys in the same places, so a hit
    /// there costs a compare and no hash. (Values were tried too: payloads
    /// whose values are all new decoded 11% slower for the churn.)
    recent: Vec<Option<(compact_str::CompactString, Py<PyString>)>>,
}

/// Key positions of a payload remembered by `KeyCache::get_at`.
const RECENT: usize = 32;
/// Longest key remembered by position (a slot's inline size).
const RECENT_LEN: usize = 24;

impl KeyCache {
    pub fn new() -> Self {
        KeyCache { slots: (0..SLOTS).map(|_| None).collect(), recent: (0..RECENT).map(|_| None).collect() }
    }

    /// A cache that keeps nothing: every string is made anew (and nothing is allocated for it).
    pub fn uncached() -> Self {
        KeyCache { slots: Vec::new(), recent: Vec::new() }
    }

    /// The Python string for `text`, from the cache when it was seen before.
    pub fn get<'py>(&mut self, py: Python<'py>, text: &str, max_len: usize) -> Bound<'py, PyString> {
        let Ok(value) = self.get_utf8(py, text.as_bytes(), max_len, || {
            Ok::<_, std::convert::Infallible>(PyString::new(py, text))
        });
        value
    }

    /// `get_utf8`, for the string at `position` in a payload (see `recent`).
    pub fn get_at_utf8<'py, E>(
        &mut self,
        py: Python<'py>,
        position: usize,
        bytes: &[u8],
        max_len: usize,
        make: impl FnOnce() -> Result<Bound<'py, PyString>, E>,
    ) -> Result<Bound<'py, PyString>, E> {
        if position >= self.recent.len() || bytes.len() > RECENT_LEN.min(max_len) {
            return self.get_utf8(py, bytes, max_len, make);
        }
        if let Some((seen, value)) = &self.recent[position] {
            if same_bytes(seen.as_bytes(), bytes) {
                return Ok(value.bind(py).clone());
            }
        }
        let value = self.get_utf8(py, bytes, max_len, make)?;
        self.recent[position] = Some((known_text(bytes), value.clone().unbind()));
        Ok(value)
    }

    /// The Python string whose UTF-8 is `bytes`: from the cache when the same
    /// bytes were seen before, else made by `make`, which checks them (a cached
    /// string's bytes were valid when it was made, so a hit needs no check).
    pub fn get_utf8<'py, E>(
        &mut self,
        py: Python<'py>,
        bytes: &[u8],
        max_len: usize,
        make: impl FnOnce() -> Result<Bound<'py, PyString>, E>,
    ) -> Result<Bound<'py, PyString>, E> {
        if bytes.len() > max_len || self.slots.is_empty() {
            return make();
        }
        let hash = fx_hash(bytes);
        let index = slot_of(hash);
        if let Some(slot) = &self.slots[index] {
            if slot.hash == hash && same_bytes(slot.text.as_bytes(), bytes) {
                return Ok(slot.value.bind(py).clone());
            }
        }
        let value = make()?;
        self.slots[index] = Some(Slot { hash, text: known_text(bytes), value: value.clone().unbind() });
        Ok(value)
    }
}

/// The text of bytes a Python string was just made from, so valid UTF-8.
fn known_text(bytes: &[u8]) -> compact_str::CompactString {
    // SAFETY: `make` returned a string for these bytes: it decoded them as UTF-8.
    unsafe { compact_str::CompactString::from_utf8_unchecked(bytes) }
}

/// The slot of a hash: its top bits. A multiplicative hash mixes its input
/// into the high bits, while the low ones may follow only the last few bytes:
/// ids ending alike (`wf-250-stage-1234`, `step-1234`) would collide there.
fn slot_of(hash: u64) -> usize {
    (hash >> (64 - SLOTS.trailing_zeros())) as usize
}

/// `a == b` inlined for the short strings cached here: a call to `memcmp`
/// cost as much as the hash.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a_words = a.chunks_exact(8);
    let mut b_words = b.chunks_exact(8);
    for (x, y) in (&mut a_words).zip(&mut b_words) {
        if u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]))
            != u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]))
        {
            return false;
        }
    }
    a_words.remainder().iter().zip(b_words.remainder()).all(|(x, y)| x == y)
}

/// `rustc-hash`'s hash of the bytes (fast on short input; its `slot_of` bits spread well).
fn fx_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::{fx_hash, same_bytes, slot_of, SLOTS};

    #[test]
    fn similar_ids_spread_over_the_slots() {
        for pattern in ["wf-250-stage-{}", "step-{}", "wf-5-task-{}", "{}"] {
            let slots: std::collections::HashSet<usize> = (0..1000)
                .map(|i| slot_of(fx_hash(pattern.replace("{}", &i.to_string()).as_bytes())))
                .collect();
            // 1,000 random picks of 4,096 slots land on ~890 distinct ones.
            assert!(slots.len() > 850, "{pattern}: {} distinct slots of {SLOTS}", slots.len());
        }
    }

    #[test]
    fn same_bytes_compares_every_byte_and_the_length() {
        let base = b"wf-5-stage-1234-and-more-text".to_vec();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(same_bytes(a, a));
            assert!(!same_bytes(a, &base[..len + 1]), "lengths differ at {len}");
            for i in 0..len {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!same_bytes(a, &b), "byte {i} of {len} differs");
            }
        }
    }
}
