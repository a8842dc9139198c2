//! The payload codec: Python values <-> msgpack bytes.
//!
//! Plain msgpack carries None, bool, int (64-bit), float, str, bytes, list and
//! dict; the rest travels in extension types (see `ext`). Encoding dispatches
//! on the exact Python type before falling back to isinstance checks, and
//! decoding reuses Python strings for map keys seen before (`key_cache`).
//!
//! Dict keys: str, and the other key types `json.dumps` takes (int of any
//! size, float, bool, None, and their subclasses such as IntEnum). msgpack maps
//! take any key, so a key is written as its own type and reads back as it was
//! (`{1: "a"}` stays `{1: "a"}`), where the reference's JSON turns it into text
//! (`{"1": "a"}`). A str key costs one type check as before; other keys, and
//! keys JSON refuses too (tuples, ...; refused here), take a slower path. The
//! replay fold (`fold::state`) keeps such keys of a workflow's context too.

pub mod decode;
pub mod encode;
pub mod ext;
mod key_cache;
pub mod validate;
pub mod view;

/// Deepest nesting of lists and dicts accepted either way; deeper (or cyclic)
/// payloads are refused instead of overflowing the stack.
pub const MAX_DEPTH: usize = 256;

/// `std::str::from_utf8` with a fast path for ASCII, which nearly every
/// stored string is (ids, types, keys): one word-at-a-time scan, no decoding.
#[inline]
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}
