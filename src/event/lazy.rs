//! `LazyObject`: a Python object made on first use and kept, without a lock.
//!
//! An `Event` keeps three of these (payload, metadata, timestamp). pyo3's
//! `PyOnceLock` goes through `std::sync::Once` for every set, which cost a
//! tenth of building the events an append returns. Here a value is published
//! with one compare-and-swap: two threads that both build the value (possible
//! only if building it runs Python code that lets the GIL go) keep the first
//! one published and drop the other, so every reader sees the same object.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::prelude::*;

pub struct LazyObject {
    /// An owned reference, or null while unset.
    ptr: AtomicPtr<pyo3::ffi::PyObject>,
}

impl LazyObject {
    /// An unset cell.
    pub const fn new() -> Self {
        LazyObject { ptr: AtomicPtr::new(null_mut()) }
    }

    /// A cell holding `value` (if any).
    pub fn with(value: Option<Bound<'_, PyAny>>) -> Self {
        LazyObject { ptr: AtomicPtr::new(value.map_or(null_mut(), |v| v.into_ptr())) }
    }

    /// The value, if set.
    pub fn get<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let ptr = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer is an owned reference this cell keeps alive
        // until it is dropped; a new strong reference is taken for the caller.
        (!ptr.is_null()).then(|| unsafe { Bound::from_borrowed_ptr(py, ptr) })
    }

    /// The value, made by `make` if unset.
    pub fn get_or_try_init<'py>(
        &self,
        py: Python<'py>,
        make: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(value) = self.get(py) {
            return Ok(value);
        }
        let value = make()?;
        match self.ptr.compare_exchange(null_mut(), value.as_ptr(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // The cell now owns a reference of its own.
                std::mem::forget(value.clone());
                Ok(value)
            }
            // Another thread published first: use its value, drop ours.
            // SAFETY: as in `get`.
            Err(winner) => Ok(unsafe { Bound::from_borrowed_ptr(py, winner) }),
        }
    }
}

impl Drop for LazyObject {
    fn drop(&mut self) {
        let ptr = *self.ptr.get_mut();
        if !ptr.is_null() {
            // SAFETY: the cell's own reference. Cells live in `Event`s, which are
            // built and dropped only while attached to the interpreter (a Python
            // object's deallocation, or a failed construction under `py`).
            unsafe { pyo3::ffi::Py_DecRef(ptr) };
        }
    }
}
