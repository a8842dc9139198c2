//! msgpack bytes -> Python values.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use super::key_cache::{KeyCache, MAX_KEY_LEN, MAX_VALUE_LEN};
use super::{ext, MAX_DEPTH};
use crate::pyrefs;
use crate::time;

/// Why bytes could not be decoded (truncated, an unknown marker, bad UTF-8...).
#[derive(Debug, Clone)]
pub struct DecodeError(pub String);

type Result<T> = std::result::Result<T, DecodeError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(DecodeError(msg.into()))
}

static KEY_CACHE: std::sync::Mutex<Option<KeyCache>> = std::sync::Mutex::new(None);

/// Decoding with the string cache held: take one per batch of values, not per value.
pub struct Session {
    cache: SessionCache,
}

enum SessionCache {
    Shared(std::sync::MutexGuard<'static, Option<KeyCache>>),
    /// The shared cache was in use: this session makes every string anew.
    Own(KeyCache),
}

/// Start a decoding session.
///
/// Callers hold the GIL, so the cache is nearly always free. But a session can
/// run Python code while it decodes (a class for an extension value, a
/// collector callback when an allocation sets off a collection), and that code
/// may let the GIL go with the cache still held. A thread that then blocked
/// on the cache while holding the GIL would wait forever; so it decodes
/// without the cache instead.
pub fn session() -> Session {
    if !crate::tuning::string_cache() {
        return Session { cache: SessionCache::Own(KeyCache::uncached()) };
    }
    let cache = match KEY_CACHE.try_lock() {
        Ok(guard) => SessionCache::Shared(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => SessionCache::Shared(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => SessionCache::Own(KeyCache::uncached()),
    };
    Session { cache }
}

impl Session {
    fn cache(&mut self) -> &mut KeyCache {
        match &mut self.cache {
            SessionCache::Shared(guard) => guard.get_or_insert_with(KeyCache::new),
            SessionCache::Own(cache) => cache,
        }
    }

    /// Decode one msgpack value from `bytes`, which must hold exactly that value.
    pub fn decode<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Result<Bound<'py, PyAny>> {
        self.decode_acyclic(py, bytes).map(|(value, _)| value)
    }

    /// `decode`, and whether the value holds nothing the cycle collector needs
    /// to see (atomic values and dicts of them; see `keep_off_collector`).
    pub fn decode_acyclic<'py>(
        &mut self,
        py: Python<'py>,
        bytes: &[u8],
    ) -> Result<(Bound<'py, PyAny>, bool)> {
        // The replay fold decodes its kept values one by one, most of them a
        // short string or nil: no reader for those.
        match *bytes {
            [0xc0] => return Ok((py.None().into_bound(py), true)),
            [m @ 0xa0..=0xbf, ref text @ ..] | [m @ 0xd9, _, ref text @ ..]
                if text.len() == if m == 0xd9 { bytes[1] as usize } else { (m & 0x1f) as usize } =>
            {
                return Ok((string_value(py, self.cache(), text)?, true));
            }
            _ => {}
        }
        let mut reader = Reader { py, buf: bytes, pos: 0, keys: self.cache(), keys_read: 0, acyclic: true };
        let value = reader.value(0)?;
        if reader.pos != bytes.len() {
            return err(format!("{} trailing bytes after the payload", bytes.len() - reader.pos));
        }
        Ok((value, reader.acyclic))
    }

    /// A (cached) Python string for a dict key.
    pub fn key<'py>(&mut self, py: Python<'py>, text: &str) -> Bound<'py, pyo3::types::PyString> {
        self.cache().get(py, text, MAX_KEY_LEN)
    }
}

/// A Python string from UTF-8 that is still to be checked (CPython's decoder
/// checks it as it copies, so the bytes are read once).
fn new_string<'py>(py: Python<'py>, raw: &[u8]) -> Result<Bound<'py, PyString>> {
    // SAFETY: a pointer and length of live bytes; the result is a new `str` or null with the
    // error set, which `from_owned_ptr_or_err` takes.
    let made = unsafe {
        let ptr = pyo3::ffi::PyUnicode_DecodeUTF8(
            raw.as_ptr().cast(),
            raw.len() as pyo3::ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr_or_err(py, ptr).map(|s| s.cast_into_unchecked::<PyString>())
    };
    match made {
        Ok(s) => Ok(s),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyUnicodeDecodeError>(py) => {
            err(format!("invalid UTF-8 in string: {}", e.value(py)))
        }
        Err(e) => err(e.to_string()),
    }
}

/// A decoded string value, from the cache when short: statuses and types
/// repeat everywhere, and so do ids within a run of events (a stage's name
/// and id come back in each of its events), while a value seen only once
/// costs a slot (which allocates nothing) on top of its string.
fn string_value<'py>(py: Python<'py>, keys: &mut KeyCache, raw: &[u8]) -> Result<Bound<'py, PyAny>> {
    Ok(keys.get_utf8(py, raw, MAX_VALUE_LEN, || new_string(py, raw))?.into_any())
}

/// Decode one msgpack value from `bytes`, which must hold exactly that value.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> Result<Bound<'py, PyAny>> {
    session().decode(py, bytes)
}

/// Untrack `dict`, which holds only atomic values and dicts of them.
///
/// Such a dict cannot be in a cycle, but CPython tracks any dict a dict is
/// put in; payloads and rebuilt states are made by the thousand, so they are
/// kept off the collector's lists as a flat dict would be. (A dict is tracked
/// again as soon as a container is put in it.)
pub fn keep_off_collector(dict: &Bound<'_, PyDict>) {
    // SAFETY: a live dict; untracking only takes it off the GC's lists.
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(dict.as_ptr().cast()) };
}

/// A Python int or float from a Rust number (infallible conversions).
fn num<'py, T>(py: Python<'py>, value: T) -> Bound<'py, PyAny>
where
    T: IntoPyObject<'py, Error = std::convert::Infallible>,
{
    use pyo3::BoundObject;
    let Ok(obj) = value.into_pyobject(py);
    obj.into_any().into_bound()
}

struct Reader<'a, 'py> {
    py: Python<'py>,
    buf: &'a [u8],
    pos: usize,
    keys: &'a mut KeyCache,
    /// Map keys read so far: the position `KeyCache::get_at` remembers them by.
    keys_read: usize,
    /// Whether the value just decoded holds nothing the cycle collector needs
    /// to see: an atomic value, or a dict of such values (see `map`).
    acyclic: bool,
}

impl<'a, 'py> Reader<'a, 'py> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => err(format!("truncated at byte {} (wanted {n} more)", self.pos)),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn len16(&mut self) -> Result<usize> {
        Ok(u16::from_be_bytes(self.be()?) as usize)
    }
    fn len32(&mut self) -> Result<usize> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    fn py_err(&self, e: PyErr) -> DecodeError {
        DecodeError(e.value(self.py).to_string())
    }

    fn string(&mut self, n: usize) -> Result<Bound<'py, PyAny>> {
        let raw = self.take(n)?;
        string_value(self.py, self.keys, raw)
    }

    fn value(&mut self, depth: usize) -> Result<Bound<'py, PyAny>> {
        let py = self.py;
        let m = self.u8()?;
        // Atomic unless an array, map or extension value below says otherwise.
        self.acyclic = true;
        let obj = match m {
            0x00..=0x7f => num(py, m as i64),
            0x80..=0x8f => return self.map((m & 0x0f) as usize, depth),
            0x90..=0x9f => return self.array((m & 0x0f) as usize, depth),
            0xa0..=0xbf => {
                let n = (m & 0x1f) as usize;
                self.string(n)?
            }
            0xc0 => py.None().into_bound(py),
            0xc2 => pyo3::types::PyBool::new(py, false).to_owned().into_any(),
            0xc3 => pyo3::types::PyBool::new(py, true).to_owned().into_any(),
            0xc4 => {
                let n = self.u8()? as usize;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            0xc5 => {
                let n = self.len16()?;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            0xc6 => {
                let n = self.len32()?;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            0xc7 => {
                let n = self.u8()? as usize;
                return self.ext(n);
            }
            0xc8 => {
                let n = self.len16()?;
                return self.ext(n);
            }
            0xc9 => {
                let n = self.len32()?;
                return self.ext(n);
            }
            0xca => num(py, f32::from_be_bytes(self.be()?) as f64),
            0xcb => num(py, f64::from_be_bytes(self.be()?)),
            0xcc => num(py, self.u8()? as i64),
            0xcd => num(py, u16::from_be_bytes(self.be()?) as i64),
            0xce => num(py, u32::from_be_bytes(self.be()?) as i64),
            0xcf => num(py, u64::from_be_bytes(self.be()?)),
            0xd0 => num(py, i8::from_be_bytes(self.be()?) as i64),
            0xd1 => num(py, i16::from_be_bytes(self.be()?) as i64),
            0xd2 => num(py, i32::from_be_bytes(self.be()?) as i64),
            0xd3 => num(py, i64::from_be_bytes(self.be()?)),
            0xd4 => return self.ext(1),
            0xd5 => return self.ext(2),
            0xd6 => return self.ext(4),
            0xd7 => return self.ext(8),
            0xd8 => return self.ext(16),
            0xd9 => {
                let n = self.u8()? as usize;
                self.string(n)?
            }
            0xda => {
                let n = self.len16()?;
                self.string(n)?
            }
            0xdb => {
                let n = self.len32()?;
                self.string(n)?
            }
            0xdc => {
                let n = self.len16()?;
                return self.array(n, depth);
            }
            0xdd => {
                let n = self.len32()?;
                return self.array(n, depth);
            }
            0xde => {
                let n = self.len16()?;
                return self.map(n, depth);
            }
            0xdf => {
                let n = self.len32()?;
                return self.map(n, depth);
            }
            0xe0..=0xff => num(py, (m as i8) as i64),
            0xc1 => return err(format!("invalid msgpack marker 0xc1 at byte {}", self.pos - 1)),
        };
        Ok(obj)
    }

    fn check_depth(&self, depth: usize, n: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        // Every element takes at least one byte: a length beyond the rest is corrupt.
        if n > self.buf.len() - self.pos {
            return err(format!("container of {n} items at byte {} is longer than the payload", self.pos));
        }
        Ok(())
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Bound<'py, PyAny>> {
        self.check_depth(depth, n)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        // Lists stay tracked: CPython never re-tracks a list when one is put in it.
        self.acyclic = false;
        Ok(PyList::new(self.py, items).map_err(|e| self.py_err(e))?.into_any())
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Bound<'py, PyAny>> {
        self.check_depth(depth, n)?;
        let dict = PyDict::new(self.py);
        let mut acyclic = true;
        let mut holds_dict = false;
        for _ in 0..n {
            let key = self.key()?;
            let value = self.value(depth + 1)?;
            acyclic &= self.acyclic;
            holds_dict |= self.acyclic && value.is_instance_of::<PyDict>();
            dict.set_item(key, value).map_err(|e| self.py_err(e))?;
        }
        if acyclic && holds_dict {
            keep_off_collector(&dict);
        }
        self.acyclic = acyclic;
        Ok(dict.into_any())
    }

    fn key(&mut self) -> Result<Bound<'py, PyAny>> {
        let m = self.u8()?;
        let n = match m {
            0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.u8()? as usize,
            0xda => self.len16()?,
            0xdb => self.len32()?,
            _ => {
                // An int, float, bool or None key (see the module docs of `codec`): rare, so
                // decoded generally. A list or map here fails as an unhashable key.
                self.pos -= 1;
                return self.value(MAX_DEPTH - 1);
            }
        };
        let raw = self.take(n)?;
        self.keys_read += 1;
        let py = self.py;
        Ok(self
            .keys
            .get_at_utf8(py, self.keys_read - 1, raw, MAX_KEY_LEN, || new_string(py, raw))?
            .into_any())
    }

    fn ext(&mut self, n: usize) -> Result<Bound<'py, PyAny>> {
        // UUIDs are instances of a Python class: leave their containers tracked.
        self.acyclic = false;
        let code = self.u8()? as i8;
        let payload = self.take(n)?;
        let py = self.py;
        let r = match code {
            ext::DATETIME if n == 8 || n == 12 => {
                let wall = i64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                if n == 8 {
                    time::datetime_from_wall(py, wall, None)
                } else {
                    let off = i32::from_be_bytes(payload[8..12].try_into().unwrap_or([0; 4]));
                    let tz = if off == 0 {
                        pyrefs::utc(py).cloned()
                    } else {
                        pyrefs::timedelta_class(py)
                            .and_then(|td| td.call1((0, off)))
                            .and_then(|delta| pyrefs::timezone_class(py)?.call1((delta,)))
                    };
                    tz.and_then(|tz| time::datetime_from_wall(py, wall, Some(&tz)))
                }
            }
            ext::DATE if n == 4 => {
                let days = i32::from_be_bytes(payload.try_into().unwrap_or([0; 4])) as i64;
                let (y, m, d) = time::civil_from_days(days);
                pyrefs::date_class(py).and_then(|c| c.call1((y, m, d)))
            }
            ext::UUID if n == 16 => pyrefs::uuid_class(py).and_then(|c| {
                let kwargs = pyrefs::kwargs1(py, "bytes", PyBytes::new(py, payload))?;
                c.call((), Some(&kwargs))
            }),
            ext::DECIMAL => {
                let text = std::str::from_utf8(payload)
                    .map_err(|e| DecodeError(format!("invalid decimal text: {e}")))?;
                pyrefs::decimal_class(py).and_then(|c| c.call1((text,)))
            }
            ext::BIGINT => {
                let kwargs = pyrefs::kwargs1(py, "signed", true).map_err(|e| self.py_err(e))?;
                py.get_type::<pyo3::types::PyInt>().call_method(
                    "from_bytes",
                    (PyBytes::new(py, payload), "little"),
                    Some(&kwargs),
                )
            }
            _ => return err(format!("unknown extension type {code} of {n} bytes")),
        };
        r.map_err(|e| self.py_err(e))
    }
}
