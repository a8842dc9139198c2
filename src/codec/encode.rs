//! Python value -> msgpack bytes.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use rmp::encode as mp;

use super::{ext, MAX_DEPTH};
use crate::pyrefs;
use crate::time;

/// One step of the path from the payload root to a value.
#[derive(Debug, Clone)]
pub enum PathStep {
    Key(String),
    /// A key that is not a str, as its `repr`.
    Other(String),
    Index(usize),
}

/// Why a value could not be encoded, and where it sits in the payload.
#[derive(Debug, Clone)]
pub struct EncodeError {
    /// Steps from the root, innermost last (pushed while unwinding, so reversed).
    steps_rev: Vec<PathStep>,
    /// What is wrong.
    pub message: String,
    /// How to put it right, when there is something to say.
    hint: Option<&'static str>,
}

impl EncodeError {
    fn new(message: impl Into<String>) -> Box<Self> {
        Box::new(EncodeError { steps_rev: Vec::new(), message: message.into(), hint: None })
    }

    fn hint(mut self: Box<Self>, hint: &'static str) -> Box<Self> {
        self.hint = Some(hint);
        self
    }

    /// The whole message: what is wrong, where (`path(root)`), how to fix it.
    pub fn describe(&self, root: &str) -> String {
        let mut out = format!("{} at {}", self.message, self.path(root));
        if let Some(hint) = self.hint {
            out.push_str("; ");
            out.push_str(hint);
        }
        out
    }

    fn at(mut self: Box<Self>, step: PathStep) -> Box<Self> {
        self.steps_rev.push(step);
        self
    }

    /// `root["a"][2]`, the path of the offending value. A deep path is shortened to its
    /// first and last `PATH_ENDS` steps around `[... N more ...]`.
    pub fn path(&self, root: &str) -> String {
        let mut out = String::from(root);
        let steps = self.steps_rev.len();
        let write = |out: &mut String, step: &PathStep| match step {
            PathStep::Key(k) => out.push_str(&format!("[{k:?}]")),
            PathStep::Other(k) => out.push_str(&format!("[{k}]")),
            PathStep::Index(i) => out.push_str(&format!("[{i}]")),
        };
        for (at, step) in self.steps_rev.iter().rev().enumerate() {
            if steps > 2 * PATH_ENDS + 1 && at >= PATH_ENDS && at < steps - PATH_ENDS {
                if at == PATH_ENDS {
                    out.push_str(&format!("[... {} more ...]", steps - 2 * PATH_ENDS));
                }
                continue;
            }
            write(&mut out, step);
        }
        out
    }
}

/// Steps kept at each end of a shortened path.
const PATH_ENDS: usize = 4;

/// Boxed: every value encoded returns one, and a pointer-sized `Ok` is the cheapest.
type Result<T> = std::result::Result<T, Box<EncodeError>>;

fn from_py(err: PyErr, py: Python<'_>) -> Box<EncodeError> {
    EncodeError::new(err.value(py).to_string())
}

/// Encode `value` as msgpack, appending to `out`.
pub fn encode(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Result<()> {
    encode_value(value, out, 0)
}

fn type_is(value: &Bound<'_, PyAny>, ty: *mut ffi::PyTypeObject) -> bool {
    value.get_type_ptr() == ty
}

fn encode_value(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    // Exact types first: one pointer comparison each, no isinstance walk.
    unsafe {
        if type_is(value, &raw mut ffi::PyUnicode_Type) {
            return encode_str(value.cast_unchecked::<PyString>(), out);
        }
        if type_is(value, &raw mut ffi::PyDict_Type) {
            return encode_dict(value.cast_unchecked::<PyDict>(), out, depth);
        }
        if type_is(value, &raw mut ffi::PyLong_Type) {
            return encode_int(value, out);
        }
        if value.is_none() {
            mp::write_nil(out).ok();
            return Ok(());
        }
        if type_is(value, &raw mut ffi::PyBool_Type) {
            mp::write_bool(out, value.is_truthy().unwrap_or(false)).ok();
            return Ok(());
        }
        if type_is(value, &raw mut ffi::PyFloat_Type) {
            mp::write_f64(out, value.cast_unchecked::<PyFloat>().value()).ok();
            return Ok(());
        }
        if type_is(value, &raw mut ffi::PyList_Type) {
            return encode_seq(value, value.cast_unchecked::<PyList>().len(), out, depth);
        }
        if type_is(value, &raw mut ffi::PyTuple_Type) {
            return encode_seq(value, value.cast_unchecked::<PyTuple>().len(), out, depth);
        }
        if type_is(value, &raw mut ffi::PyBytes_Type) {
            let b = value.cast_unchecked::<PyBytes>().as_bytes();
            mp::write_bin(out, b).ok();
            return Ok(());
        }
    }
    encode_other(value, out, depth)
}

/// Subclasses of the plain types, and the extension types.
fn encode_other(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    let py = value.py();
    let isinstance = |cls: PyResult<&Bound<'_, pyo3::types::PyType>>| -> Result<bool> {
        let cls = cls.map_err(|e| from_py(e, py))?;
        value.is_instance(cls).map_err(|e| from_py(e, py))
    };
    // An Enum member is stored as its value (checked first: IntEnum is an int too).
    if isinstance(pyrefs::enum_class(py))? {
        let inner = value.getattr("value").map_err(|e| from_py(e, py))?;
        return encode_value(&inner, out, depth);
    }
    if let Ok(s) = value.cast::<PyString>() {
        return encode_str(s, out);
    }
    if value.is_instance_of::<pyo3::types::PyBool>() {
        mp::write_bool(out, value.is_truthy().unwrap_or(false)).ok();
        return Ok(());
    }
    if value.is_instance_of::<pyo3::types::PyInt>() {
        return encode_int(value, out);
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        mp::write_f64(out, f.value()).ok();
        return Ok(());
    }
    if let Ok(d) = value.cast::<PyDict>() {
        return encode_dict(d, out, depth);
    }
    if let Ok(l) = value.cast::<PyList>() {
        return encode_seq(value, l.len(), out, depth);
    }
    if let Ok(t) = value.cast::<PyTuple>() {
        return encode_seq(value, t.len(), out, depth);
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        mp::write_bin(out, b.as_bytes()).ok();
        return Ok(());
    }
    // datetime before date: a datetime is a date too.
    if isinstance(pyrefs::datetime_class(py))? {
        let f = time::datetime_fields(value).map_err(|e| from_py(e, py))?;
        let mut payload = Vec::with_capacity(12);
        payload.extend_from_slice(&f.wall_micros.to_be_bytes());
        if let Some(off) = f.offset_seconds {
            payload.extend_from_slice(&(off as i32).to_be_bytes());
        }
        return write_ext(out, ext::DATETIME, &payload);
    }
    if isinstance(pyrefs::date_class(py))? {
        let get = |n: &str| -> Result<i64> {
            value.getattr(n).and_then(|v| v.extract()).map_err(|e| from_py(e, py))
        };
        let days = time::days_from_civil(get("year")?, get("month")? as u32, get("day")? as u32);
        return write_ext(out, ext::DATE, &(days as i32).to_be_bytes());
    }
    if isinstance(pyrefs::uuid_class(py))? {
        let raw = value.getattr("bytes").map_err(|e| from_py(e, py))?;
        let raw = raw.cast::<PyBytes>().map_err(|e| EncodeError::new(e.to_string()))?;
        return write_ext(out, ext::UUID, raw.as_bytes());
    }
    if isinstance(pyrefs::decimal_class(py))? {
        let text = value.str().map_err(|e| from_py(e, py))?;
        let text = text.to_str().map_err(|e| from_py(e, py))?;
        return write_ext(out, ext::DECIMAL, text.as_bytes());
    }
    let type_name = value.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "?".to_owned());
    Err(EncodeError::new(format!("values of type {type_name} cannot be stored in an event payload")).hint(
        "convert it to one that can: str, int, float, bool, None, bytes, list, tuple, dict, \
         datetime, date, UUID, Decimal or an Enum of these",
    ))
}

fn encode_str(s: &Bound<'_, PyString>, out: &mut Vec<u8>) -> Result<()> {
    let text = s.to_str().map_err(|e| from_py(e, s.py()))?;
    mp::write_str(out, text).ok();
    Ok(())
}

fn encode_int(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Result<()> {
    if let Ok(v) = value.extract::<i64>() {
        mp::write_sint(out, v).ok();
        return Ok(());
    }
    if let Ok(v) = value.extract::<u64>() {
        mp::write_uint(out, v).ok();
        return Ok(());
    }
    // Beyond 64 bits: two's complement bytes, as long as the value needs.
    let py = value.py();
    let bits: usize =
        value.call_method0("bit_length").and_then(|b| b.extract()).map_err(|e| from_py(e, py))?;
    let length = bits / 8 + 1;
    let kwargs = pyrefs::kwargs1(py, "signed", true).map_err(|e| from_py(e, py))?;
    let raw = value.call_method("to_bytes", (length, "little"), Some(&kwargs)).map_err(|e| from_py(e, py))?;
    let raw = raw.cast::<PyBytes>().map_err(|e| EncodeError::new(e.to_string()))?;
    write_ext(out, ext::BIGINT, raw.as_bytes())
}

fn encode_dict(dict: &Bound<'_, PyDict>, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(EncodeError::new(format!(
            "nesting deeper than {MAX_DEPTH} levels (or a reference cycle)"
        ))
        .hint("flatten the payload, or break the cycle"));
    }
    mp::write_map_len(out, dict.len() as u32).ok();
    for (key, value) in dict.iter() {
        // A str key (nearly all of them) costs what it always did: one type check.
        if let Ok(key_text) = key.cast::<PyString>() {
            encode_str(key_text, out).map_err(|e| e.at(PathStep::Key(key_text.to_string())))?;
            encode_value(&value, out, depth + 1).map_err(|e| e.at(PathStep::Key(key_text.to_string())))?;
        } else {
            encode_other_key(&key, out)?;
            encode_value(&value, out, depth + 1).map_err(|e| e.at(PathStep::Other(shown(&key))))?;
        }
    }
    Ok(())
}

/// A key of one of the other types `json.dumps` takes (int, float, bool, None and their
/// subclasses, such as IntEnum), kept as that type rather than turned into text as JSON does.
// Cold and out of line: the loop of `encode_dict`, which str keys go through, stays as it was.
#[cold]
#[inline(never)]
fn encode_other_key(key: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Result<()> {
    if key.is_none() {
        mp::write_nil(out).ok();
    } else if key.is_instance_of::<pyo3::types::PyBool>() {
        mp::write_bool(out, key.is_truthy().unwrap_or(false)).ok();
    } else if key.is_instance_of::<pyo3::types::PyInt>() {
        // An IntEnum member as its int, as the value would be (and as JSON writes it).
        encode_int(key, out)?;
    } else if let Ok(f) = key.cast::<PyFloat>() {
        mp::write_f64(out, f.value()).ok();
    } else {
        let tname = key.get_type().qualname().map(|n| n.to_string()).unwrap_or_default();
        return Err(EncodeError::new(format!(
            "dict keys must be str, int, float, bool or None (as in JSON), not {tname}: key {}",
            shown(key)
        ))
        .hint("use str(key), or another key of those types"));
    }
    Ok(())
}

/// `repr(value)`, for naming a key in an error.
fn shown(value: &Bound<'_, PyAny>) -> String {
    value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into())
}

fn encode_seq(seq: &Bound<'_, PyAny>, len: usize, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(EncodeError::new(format!(
            "nesting deeper than {MAX_DEPTH} levels (or a reference cycle)"
        ))
        .hint("flatten the payload, or break the cycle"));
    }
    mp::write_array_len(out, len as u32).ok();
    let iter = seq.try_iter().map_err(|e| from_py(e, seq.py()))?;
    for (i, item) in iter.enumerate() {
        let item = item.map_err(|e| from_py(e, seq.py()))?;
        encode_value(&item, out, depth + 1).map_err(|e| e.at(PathStep::Index(i)))?;
    }
    Ok(())
}

fn write_ext(out: &mut Vec<u8>, code: i8, payload: &[u8]) -> Result<()> {
    mp::write_ext_meta(out, payload.len() as u32, code).ok();
    out.extend_from_slice(payload);
    Ok(())
}
