//! A VFS over SQLite's default one that writes a transaction's WAL frames with
//! one system call.
//!
//! SQLite writes each WAL frame as two `pwrite`s (its 24-byte header, then the
//! page), so a single-event append (four or five pages) made ten system calls:
//! a third of the time of single appends. Here a WAL file collects the
//! frames written one after the other and hands them to the file in one write
//! when the transaction's commit frame is complete, or before anything else is
//! done with the file (a read, a sync, a truncate, a size query, a write
//! elsewhere, closing it). Every other file is SQLite's own, untouched.
//! A store opened with `coalesce_wal_writes=False` uses SQLite's default VFS.
//!
//! Why this is safe: nothing outside the writing connection reads a frame
//! before the commit publishes it in the shared wal-index, and SQLite does that
//! only after `walFrames` has written the commit frame, which is flushed as its
//! page arrives, with no other call on the file in between, so readers and
//! checkpoints never see less than SQLite alone would have written. A failed
//! flush fails the write or call that caused it, as SQLite's own write would
//! have. A crash loses at most frames of a transaction that had not committed,
//! which recovery ignores anyway. The one 24-byte write that is not followed
//! by its page is a checksum rewrite (`walRewriteChecksums`), which always
//! comes right after a read of the same frame: such writes go straight through.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{ffi, Connection, OpenFlags};

/// The name connections open the VFS by.
pub const NAME: &CStr = c"stabilize-events-wal";

/// Bytes of a WAL frame header, and of the WAL file header.
const FRAME_HEADER: c_int = 24;
const WAL_HEADER: c_int = 32;
/// A transaction's frames are held up to this size, then written on: the unix
/// VFS writes at most 0x1ffff bytes in one call (`seekAndWriteFd`).
const MAX_PENDING: usize = 0x1ffff;

/// A WAL file: our state, with the underlying VFS's file placed after it.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    pending: Vec<u8>,
    pending_at: i64,
    /// The frame header just held is a commit's: write on once its page follows.
    commit_page_next: bool,
    /// Offset of the read just before this call (-1 if the last call was not a read).
    read_at: i64,
}

/// Where the underlying file starts within ours.
const REAL_OFFSET: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

struct Vfs {
    ours: *mut ffi::sqlite3_vfs,
    underlying: *mut ffi::sqlite3_vfs,
}

// SAFETY: both pointers are to VFS objects that live for the whole process and
// that SQLite itself shares between threads.
unsafe impl Send for Vfs {}
unsafe impl Sync for Vfs {}

static VFS: OnceLock<Option<Vfs>> = OnceLock::new();

/// The VFS name to open file databases with: ours, registered on first use,
/// or None (SQLite's default) if it could not be registered.
pub fn name() -> Option<&'static CStr> {
    VFS.get_or_init(register).as_ref().map(|_| NAME)
}

/// A connection to the database file at `path`, through this VFS when it is registered.
pub fn open(path: &Path, flags: OpenFlags, coalesce: bool) -> rusqlite::Result<Connection> {
    match name().filter(|_| coalesce) {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs),
        None => Connection::open_with_flags(path, flags),
    }
}

fn register() -> Option<Vfs> {
    // SAFETY: plain SQLite calls; the VFS object is leaked, as SQLite requires
    // a registered VFS to outlive every connection that uses it.
    unsafe {
        if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
            return None;
        }
        let underlying = ffi::sqlite3_vfs_find(std::ptr::null());
        // The methods table below is version 3, as the unix VFS's files are.
        if underlying.is_null() || CStr::from_ptr((*underlying).zName) != c"unix" {
            return None;
        }
        let mut vfs = *underlying;
        vfs.zName = NAME.as_ptr();
        vfs.pNext = std::ptr::null_mut();
        vfs.szOsFile = (*underlying).szOsFile + REAL_OFFSET as c_int;
        vfs.xOpen = Some(vfs_open);
        let ours = Box::into_raw(Box::new(vfs));
        if ffi::sqlite3_vfs_register(ours, 0) != ffi::SQLITE_OK {
            drop(Box::from_raw(ours));
            return None;
        }
        Some(Vfs { ours, underlying })
    }
}

fn underlying() -> *mut ffi::sqlite3_vfs {
    VFS.get().and_then(Option::as_ref).map_or(std::ptr::null_mut(), |v| v.underlying)
}

unsafe extern "C" fn vfs_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let under = underlying();
    let Some(under_open) = under.as_ref().and_then(|u| u.xOpen) else {
        return ffi::SQLITE_ERROR;
    };
    debug_assert!(VFS.get().and_then(Option::as_ref).is_some_and(|v| v.ours == vfs));
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Any other file is the underlying VFS's own, in place: no forwarding.
        return under_open(under, name, file, flags, out_flags);
    }
    let real = file.cast::<u8>().add(REAL_OFFSET).cast::<ffi::sqlite3_file>();
    let rc = under_open(under, name, real, flags, out_flags);
    if (*real).pMethods.is_null() {
        // Nothing to close: SQLite calls xClose only when pMethods is set.
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    file.cast::<WalFile>().write(WalFile {
        base: ffi::sqlite3_file { pMethods: &WAL_METHODS },
        real,
        pending: Vec::new(),
        pending_at: 0,
        commit_page_next: false,
        read_at: -1,
    });
    rc
}

/// Our state of `file` (a WAL file opened by `open`).
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    &mut *file.cast::<WalFile>()
}

unsafe fn methods(f: &WalFile) -> &ffi::sqlite3_io_methods {
    &*(*f.real).pMethods
}

/// Write what is held, in one call.
unsafe fn flush(f: &mut WalFile) -> c_int {
    f.commit_page_next = false;
    if f.pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = methods(f).xWrite else { return ffi::SQLITE_IOERR_WRITE };
    let rc = write(f.real, f.pending.as_ptr().cast(), f.pending.len() as c_int, f.pending_at);
    f.pending.clear();
    rc
}

/// Flush, then note that the last call was not a read.
unsafe fn settle(f: &mut WalFile) -> c_int {
    f.read_at = -1;
    flush(f)
}

fn is_commit_header(data: &[u8]) -> bool {
    // Bytes 4..8 of a frame header: the database size after a commit, else 0.
    data.len() == FRAME_HEADER as usize && data[4..8] != [0, 0, 0, 0]
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    at: i64,
) -> c_int {
    let f = wal(file);
    let read_at = std::mem::replace(&mut f.read_at, -1);
    let data = std::slice::from_raw_parts(buf.cast::<u8>(), amt.max(0) as usize);
    let end = f.pending_at + f.pending.len() as i64;
    if !f.pending.is_empty() && (at != end || f.pending.len() + data.len() > MAX_PENDING) {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if f.pending.is_empty() {
        let starts_frames = (amt == FRAME_HEADER && read_at != at) || (amt == WAL_HEADER && at == 0);
        if !starts_frames {
            let Some(write) = methods(f).xWrite else { return ffi::SQLITE_IOERR_WRITE };
            return write(f.real, buf, amt, at);
        }
        f.pending_at = at;
        f.pending.extend_from_slice(data);
        f.commit_page_next = is_commit_header(data);
        return ffi::SQLITE_OK;
    }
    f.pending.extend_from_slice(data);
    if f.commit_page_next {
        return flush(f);
    }
    f.commit_page_next = is_commit_header(data);
    ffi::SQLITE_OK
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    let flushed = settle(f);
    let closed = methods(f).xClose.map_or(ffi::SQLITE_OK, |close| close(f.real));
    std::ptr::drop_in_place(&mut f.pending);
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn wal_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amt: c_int, at: i64) -> c_int {
    let f = wal(file);
    let rc = settle(f);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    f.read_at = at;
    methods(f).xRead.map_or(ffi::SQLITE_IOERR_READ, |read| read(f.real, buf, amt, at))
}

/// A method that first writes what is held, then forwards to the underlying file.
macro_rules! forward {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let f = wal(file);
            let rc = settle(f);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            methods(f).$field.map_or($missing, |m| m(f.real $(, $arg)*))
        }
    };
}

forward!(wal_truncate, xTruncate, (size: i64), ffi::SQLITE_IOERR_TRUNCATE);
forward!(wal_sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
forward!(wal_file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
forward!(wal_lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
forward!(wal_unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
forward!(wal_check_reserved, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
forward!(wal_file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
forward!(wal_shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
forward!(wal_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
forward!(wal_shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
forward!(wal_fetch, xFetch, (at: i64, amt: c_int, out: *mut *mut c_void), ffi::SQLITE_OK);
forward!(wal_unfetch, xUnfetch, (at: i64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    methods(f).xSectorSize.map_or(4096, |m| m(f.real))
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    methods(f).xDeviceCharacteristics.map_or(0, |m| m(f.real))
}

unsafe extern "C" fn wal_shm_barrier(file: *mut ffi::sqlite3_file) {
    let f = wal(file);
    if let Some(m) = methods(f).xShmBarrier {
        m(f.real)
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: Some(wal_shm_map),
    xShmLock: Some(wal_shm_lock),
    xShmBarrier: Some(wal_shm_barrier),
    xShmUnmap: Some(wal_shm_unmap),
    xFetch: Some(wal_fetch),
    xUnfetch: Some(wal_unfetch),
};
