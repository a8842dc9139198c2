//! Raising the errors of `stabilize_events.errors` from Rust.
//!
//! The classes are defined in Python (so they can also derive from builtins
//! like `ValueError`); Rust looks each one up once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The kinds of error the core raises; each maps to one Python class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    ArgumentType,
    Payload,
    Store,
    StoreOpen,
    Schema,
    StoreClosed,
    DuplicateEvent,
    Concurrency,
    CorruptEvent,
    DatabaseDamaged,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "InvalidArgumentError",
            Kind::ArgumentType => "ArgumentTypeError",
            Kind::Payload => "PayloadError",
            Kind::Store => "StoreError",
            Kind::StoreOpen => "StoreOpenError",
            Kind::Schema => "SchemaError",
            Kind::StoreClosed => "StoreClosedError",
            Kind::DuplicateEvent => "DuplicateEventError",
            Kind::Concurrency => "ConcurrencyError",
            Kind::CorruptEvent => "CorruptEventError",
            Kind::DatabaseDamaged => "DatabaseDamagedError",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const KINDS: usize = 11;

static CLASSES: [PyOnceLock<Py<PyType>>; KINDS] = [const { PyOnceLock::new() }; KINDS];

/// An error raised by the core, carried without the GIL until it reaches Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreError {
    pub kind: Kind,
    pub message: String,
}

impl CoreError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        CoreError { kind, message: message.into() }
    }
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        Python::attach(|py| {
            let cell = &CLASSES[err.kind.index()];
            match cell.import(py, "stabilize_events.errors", err.kind.class_name()) {
                Ok(cls) => PyErr::from_type(cls.clone(), err.message),
                Err(import_err) => import_err,
            }
        })
    }
}

/// Shorthand for `Err(CoreError)` converted into a `PyErr`.
pub fn raise<T>(kind: Kind, message: impl Into<String>) -> PyResult<T> {
    Err(CoreError::new(kind, message).into())
}

pub type CoreResult<T> = Result<T, CoreError>;
