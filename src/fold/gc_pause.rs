//! `GcPause`: Python's cyclic garbage collector paused for a scope.

/// Pauses Python's cyclic garbage collector while alive (if it was running).
pub struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    pub fn new() -> Self {
        // SAFETY: called with the GIL held (from `to_py`); these only flip a flag.
        let was_enabled = unsafe { pyo3::ffi::PyGC_Disable() } != 0;
        GcPause { was_enabled }
    }
}

impl Default for GcPause {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: as above; the GIL is still held when the guard drops.
            unsafe {
                pyo3::ffi::PyGC_Enable();
            }
        }
    }
}
