//! `GcPause`: Python's cyclic garbage collector paused for a scope.
//!
//! Folds and reads build Python objects by the thousand and keep them off the
//! collector (`Event::untracked`, `codec::decode::keep_off_collector`). CPython
//! still counts each allocation towards its schedule, so, running, the
//! collector would stop such work every 700 objects to walk everything else
//! (and on a process's first large read, once through all that its imports
//! made, a few milliseconds). Paused, the count carries over and the next
//! allocation after the scope runs one young-generation pass.
//!
//! The switch is the process's (`gc.disable()`), so threads that run while a
//! paused read waits for rows run with it off too, for as long as the read,
//! and a collector that was on when the scope began is turned on again when
//! it ends, even if another thread turned it off meanwhile.

/// Pauses Python's cyclic garbage collector while alive (if it was running).
pub struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    pub fn new(_attached: pyo3::Python<'_>) -> Self {
        // SAFETY: attached to the interpreter (the token says so); these only flip a flag.
        let was_enabled = unsafe { pyo3::ffi::PyGC_Disable() } != 0;
        GcPause { was_enabled }
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
