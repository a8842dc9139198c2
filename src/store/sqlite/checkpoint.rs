//! WAL checkpoints on a background thread of the store.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: that one append copies megabytes of pages back into the database
//! file and syncs it, on its caller's time. With no checkpoint on the append
//! path W1 and W2 measured 25% faster; with this thread, about 10% (it shares
//! the disk with the writer). Used at `synchronous=NORMAL` only (see
//! `SqliteBackend::open`). The writer connection only notes the
//! WAL's size after each commit (a `sqlite3_wal_hook`, which replaces the
//! automatic checkpoint), and past `BACKGROUND_PAGES` a thread of the store,
//! on its own connection, copies the WAL back (a PASSIVE checkpoint: it never
//! blocks readers or the writer) while the application goes on. If the WAL
//! still reaches `INLINE_PAGES` (the thread cannot keep up, or a long reader
//! pins old pages), the writer checkpoints itself, so the WAL stays bounded.
//! The thread starts on the first request: small stores never have one.

use std::ffi::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::{ffi, Connection};

/// WAL pages (4 MiB at 2 KiB pages) after which the thread checkpoints.
const BACKGROUND_PAGES: c_int = 4096;
/// WAL pages after which the writer checkpoints inline, as SQLite would.
const INLINE_PAGES: c_int = 16 * BACKGROUND_PAGES;

#[derive(Default)]
struct State {
    requested: bool,
    stop: bool,
    thread: Option<JoinHandle<()>>,
}

/// The background checkpointer of one database file.
pub struct Checkpointer {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// WAL size at which the next checkpoint is asked for (touched only by the
    /// writer's hook): one pass per `BACKGROUND_PAGES` written, as SQLite's own
    /// automatic checkpoint; asking on every commit past the threshold kept
    /// the thread syncing the files all the time, stalling the writer.
    next_at: AtomicI32,
}

impl Checkpointer {
    pub fn new(path: PathBuf) -> Arc<Checkpointer> {
        Arc::new(Checkpointer {
            path,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            next_at: AtomicI32::new(BACKGROUND_PAGES),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take over `conn`'s checkpoints. `conn` must be closed before `self` is
    /// dropped: the hook holds a plain pointer to it.
    pub fn attach(self: &Arc<Self>, conn: &Connection) {
        // SAFETY: `conn` is open; the pointer stays valid while the owning
        // `Writer` (which closes `conn` first) keeps its `Arc`.
        unsafe {
            ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), Arc::as_ptr(self) as *mut c_void);
        }
    }

    /// Ask the thread for a checkpoint, starting it if need be.
    fn request(self: &Arc<Self>) {
        let mut state = self.state();
        if state.stop {
            return;
        }
        state.requested = true;
        if state.thread.is_none() {
            let me = Arc::clone(self);
            state.thread = std::thread::Builder::new()
                .name("stabilize-events-checkpoint".into())
                .spawn(move || me.run())
                .ok();
        }
        self.wake.notify_one();
    }

    fn run(&self) {
        let flags = super::config::connection_flags(false);
        let Ok(conn) = super::wal_vfs::open(&self.path, flags) else { return };
        loop {
            {
                let mut state = self.state();
                while !state.requested && !state.stop {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stop {
                    return;
                }
                state.requested = false;
            }
            // Busy (another process is checkpointing) or failed: the next
            // request, or the writer's inline fallback, tries again.
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
    }

    /// Stop the thread (after the checkpoint it may be running) and wait for it.
    pub fn stop(&self) {
        let thread = {
            let mut state = self.state();
            state.stop = true;
            self.wake.notify_one();
            state.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The writer's WAL hook: runs after each commit with the WAL's page count.
unsafe extern "C" fn on_commit(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    _: *const c_char,
    pages: c_int,
) -> c_int {
    if pages >= INLINE_PAGES {
        // SAFETY: called by SQLite on `db`'s thread, outside any transaction,
        // exactly where its own automatic checkpoint would run.
        ffi::sqlite3_wal_checkpoint_v2(
            db,
            std::ptr::null(),
            ffi::SQLITE_CHECKPOINT_PASSIVE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        return ffi::SQLITE_OK;
    }
    // SAFETY: `ctx` is the `Arc<Checkpointer>` pointer given in `attach`,
    // alive for as long as the connection; borrow it as an Arc.
    let me = std::mem::ManuallyDrop::new(Arc::from_raw(ctx as *const Checkpointer));
    let next_at = me.next_at.load(Ordering::Relaxed);
    if pages < next_at - BACKGROUND_PAGES {
        // The WAL was restarted from its beginning.
        me.next_at.store(BACKGROUND_PAGES, Ordering::Relaxed);
    } else if pages >= next_at {
        me.next_at.store(pages + BACKGROUND_PAGES, Ordering::Relaxed);
        me.request();
    }
    ffi::SQLITE_OK
}
