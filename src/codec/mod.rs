//! The payload codec: Python values <-> msgpack bytes.
//!
//! Plain msgpack carries None, bool, int (64-bit), float, str, bytes, list and
//! dict; the rest travels in extension types (see `ext`). Encoding dispatches
//! on the exact Python type before falling back to isinstance checks, and
//! decoding reuses Python strings for map keys seen before (`key_cache`).

pub mod decode;
pub mod encode;
pub mod ext;
mod key_cache;
pub mod view;

/// Deepest nesting of lists and dicts accepted either way; deeper (or cyclic)
/// payloads are refused instead of overflowing the stack.
pub const MAX_DEPTH: usize = 256;
