//! Argument checks that raise `ArgumentTypeError` naming the argument.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString};

use crate::errors::{raise, Kind};

/// The qualified name of `obj`'s type, for messages ("... not int").
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// `obj` as a String, or ArgumentTypeError naming `what`.
pub fn str_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => text(s, what),
        Err(_) => raise(Kind::ArgumentType, format!("{what} must be a str, not {}", type_name(obj))),
    }
}

/// `obj`'s bytes (a `bytes` object only), or ArgumentTypeError naming `what`.
pub fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => raise(Kind::ArgumentType, format!("{what} must be bytes, not {}", type_name(obj))),
    }
}

/// A str's UTF-8; InvalidArgumentError naming `what` for one that has none
/// (a lone surrogate), instead of Python's bare UnicodeEncodeError.
fn text(s: &Bound<'_, PyString>, what: &str) -> PyResult<String> {
    match s.to_str() {
        Ok(t) => Ok(t.to_owned()),
        Err(e) => raise(
            Kind::InvalidArgument,
            format!("{what} cannot be stored: it is not valid Unicode text ({})", e.value(s.py())),
        ),
    }
}

/// `obj` as an i64 (bools refused), or ArgumentTypeError naming `what`.
pub fn int_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<pyo3::types::PyBool>() {
        return obj
            .extract::<i64>()
            .or_else(|_| raise(Kind::InvalidArgument, format!("{what} is out of the 64-bit range")));
    }
    raise(Kind::ArgumentType, format!("{what} must be an int, not {}", type_name(obj)))
}

/// The `.value` of an enum member, or the string itself.
pub fn enum_value(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return text(s, what);
    }
    match obj.getattr("value") {
        Ok(v) if v.is_instance_of::<PyString>() => Ok(v.extract()?),
        _ => {
            raise(Kind::ArgumentType, format!("{what} must be an enum member or str, not {}", type_name(obj)))
        }
    }
}
