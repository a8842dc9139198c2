//! A small direct-mapped cache of Python strings.
//!
//! Event payloads repeat the same few keys (and many short values such as
//! statuses) millions of times; handing back a cached `str` (one incref) is
//! cheaper than building a new one, and allocates nothing.

use pyo3::prelude::*;
use pyo3::types::PyString;

const SLOTS: usize = 4096;
/// Longest key cached; longer keys are rare.
pub const MAX_KEY_LEN: usize = 64;
/// Longest value cached: short values repeat (statuses, types), long ones rarely do.
pub const MAX_VALUE_LEN: usize = 16;

struct Slot {
    hash: u64,
    text: Box<str>,
    value: Py<PyString>,
}

pub struct KeyCache {
    slots: Vec<Option<Slot>>,
}

impl KeyCache {
    pub fn new() -> Self {
        KeyCache { slots: (0..SLOTS).map(|_| None).collect() }
    }

    /// The Python string for `text`, from the cache when it was seen before.
    pub fn get<'py>(&mut self, py: Python<'py>, text: &str, max_len: usize) -> Bound<'py, PyString> {
        if text.len() > max_len {
            return PyString::new(py, text);
        }
        let hash = fx_hash(text.as_bytes());
        let index = (hash as usize) & (SLOTS - 1);
        if let Some(slot) = &self.slots[index] {
            if slot.hash == hash && &*slot.text == text {
                return slot.value.bind(py).clone();
            }
        }
        let value = PyString::new(py, text);
        self.slots[index] = Some(Slot { hash, text: text.into(), value: value.clone().unbind() });
        value
    }
}

fn fx_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
    }
    h
}
