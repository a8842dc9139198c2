//! WAL checkpoints on a background thread of the store.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: that one append copies megabytes of pages back into the database
//! file and syncs it, on its caller's time. With no checkpoint on the append
//! path appends ran 25% faster; with this thread, about 10% faster (it shares
//! the disk with the writer). Used at `synchronous=NORMAL` only (see
//! `SqliteBackend::open`). The writer connection only notes the
//! WAL's size after each commit (a `sqlite3_wal_hook`, which replaces the
//! automatic checkpoint), and past `BACKGROUND_PAGES` a thread of the store,
//! on its own connection, copies the WAL back (a PASSIVE checkpoint: it never
//! blocks readers or the writer) while the application goes on. If the WAL
//! still reaches `INLINE_PAGES` (the thread cannot keep up, or a long reader
//! pins old pages), the writer checkpoints itself, so the WAL stays bounded.
//! The thread starts on the first request: small stores never have one.

use std::cell::RefCell;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::hooks::{CheckpointMode, Wal};
use rusqlite::Connection;

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
    /// Open the thread's connection through `wal_vfs`, as the store's own.
    coalesce_wal_writes: bool,
    state: Mutex<State>,
    wake: Condvar,
    /// WAL size at which the next checkpoint is asked for (touched only by the
    /// writer's hook): one pass per `BACKGROUND_PAGES` written, as SQLite's own
    /// automatic checkpoint; asking on every commit past the threshold kept
    /// the thread syncing the files all the time, stalling the writer.
    next_at: AtomicI32,
}

impl Checkpointer {
    pub fn new(path: PathBuf, coalesce_wal_writes: bool) -> Arc<Checkpointer> {
        Arc::new(Checkpointer {
            path,
            coalesce_wal_writes,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            next_at: AtomicI32::new(BACKGROUND_PAGES),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take over `conn`'s checkpoints: after each commit made while a
    /// `Committing` of this checkpointer is alive on the committing thread,
    /// the WAL's size is noted here.
    pub fn attach(conn: &Connection) {
        conn.wal_hook(Some(on_commit));
    }

    /// The WAL holds `pages` after a commit: ask for a checkpoint once per
    /// `BACKGROUND_PAGES` written.
    fn noted(self: &Arc<Self>, pages: c_int) {
        let next_at = self.next_at.load(Ordering::Relaxed);
        if pages < next_at - BACKGROUND_PAGES {
            // The WAL was restarted from its beginning.
            self.next_at.store(BACKGROUND_PAGES, Ordering::Relaxed);
        } else if pages >= next_at {
            self.next_at.store(pages + BACKGROUND_PAGES, Ordering::Relaxed);
            self.request();
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
        let Ok(conn) = super::wal_vfs::open(&self.path, flags, self.coalesce_wal_writes) else { return };
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

thread_local! {
    /// The checkpointer of the store whose writer this thread holds (see `Committing`).
    static COMMITTING: RefCell<Option<Arc<Checkpointer>>> = const { RefCell::new(None) };
}

/// While alive, commits on this thread are the writer's of `checkpointer`'s
/// store: the WAL hook (a plain function, without context of its own) finds
/// it here. Taken with the writer's lock held.
pub struct Committing {
    previous: Option<Arc<Checkpointer>>,
}

impl Committing {
    pub fn enter(checkpointer: Option<&Arc<Checkpointer>>) -> Committing {
        let previous = COMMITTING.with(|c| c.replace(checkpointer.cloned()));
        Committing { previous }
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        COMMITTING.with(|c| *c.borrow_mut() = self.previous.take());
    }
}

/// The writer's WAL hook: runs after each commit with the WAL's page count.
fn on_commit(wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    if pages >= INLINE_PAGES {
        // Called by SQLite on the writer's thread, outside any transaction,
        // exactly where its own automatic checkpoint would run. Busy or failed:
        // the next commit tries again.
        let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
        return Ok(());
    }
    let checkpointer = COMMITTING.with(|c| c.borrow().clone());
    if let Some(c) = checkpointer {
        c.noted(pages);
    }
    Ok(())
}
