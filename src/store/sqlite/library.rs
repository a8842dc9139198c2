//! Which SQLite library this core calls, for `_core.sqlite_library()` and
//! `_core.sqlite_version()`.
//!
//! The core links the system `libsqlite3` (no bundled copy), the one Python's
//! `sqlite3` module loads, so a process has one SQLite: two copies on one
//! database file would not see each other's POSIX locks (they are per process)
//! and a close by one would drop the other's. These functions let a test, or a
//! user, check that the loaded object really is the shared one.

use std::ffi::{c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rusqlite::ffi;

/// The file of the loaded object holding the `sqlite3_libversion` this core
/// calls, as the dynamic loader names it (e.g. `/lib/x86_64-linux-gnu/libsqlite3.so.0`,
/// not resolved through symlinks), or None if the loader knows no such object.
pub fn library_path() -> Option<PathBuf> {
    let symbol = ffi::sqlite3_libversion as unsafe extern "C" fn() -> *const std::ffi::c_char;
    // SAFETY: `dladdr` only looks the address up in the loader's tables and
    // fills `info`; on success `dli_fname` is the loader's own NUL-terminated
    // name of that object, valid while it stays loaded (libsqlite3 is a
    // dependency of this module, so at least as long as we run), and we copy it.
    let name = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(symbol as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        CStr::from_ptr(info.dli_fname)
    };
    Some(PathBuf::from(OsStr::from_bytes(name.to_bytes())))
}

/// The version of the SQLite library in use (`sqlite3_libversion()`), e.g. `3.40.1`.
pub fn version() -> &'static str {
    rusqlite::version()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_calls_a_shared_libsqlite3() {
        // A bundled copy would be found inside the test binary itself.
        let path = library_path().expect("dladdr knows the object holding sqlite3_libversion");
        let file = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
        assert!(file.starts_with("libsqlite3.so"), "{path:?}");
    }

    #[test]
    fn version_is_the_running_library() {
        // SAFETY: sqlite3_libversion returns a static NUL-terminated string.
        let running = unsafe { CStr::from_ptr(ffi::sqlite3_libversion()) };
        assert_eq!(version(), running.to_str().unwrap());
        assert!(version().starts_with("3."), "{}", version());
    }
}
