//! Argument checks that raise `ArgumentTypeError` naming the argument.

use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use crate::errors::{raise, Kind};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// `obj` as a String, or ArgumentTypeError naming `what`.
pub fn str_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => raise(Kind::ArgumentType, format!("{what} must be a str, not {}", type_name(obj))),
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
        return Ok(s.to_str()?.to_owned());
    }
    match obj.getattr("value") {
        Ok(v) if v.is_instance_of::<PyString>() => Ok(v.extract()?),
        _ => {
            raise(Kind::ArgumentType, format!("{what} must be an enum member or str, not {}", type_name(obj)))
        }
    }
}
