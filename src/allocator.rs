//! The allocator: mimalloc, with frees of another thread's blocks made local.
//!
//! Records are allocated and freed by the thousand per query; mimalloc keeps
//! that off glibc's slower paths and avoids returning pages to the OS each time.
//!
//! A large read's rows are read on a second thread that ends with the read
//! (`store::split_read`), so the records it allocated sit on pages abandoned
//! when it exits, and the thread holding the GIL frees them as it drops the
//! events. By default mimalloc frees each such block through the page's
//! cross-thread list and gives up reclaiming the page once the freeing thread
//! owns 32 pages of that size, so a large read's events were freed the slow
//! way, a tenth of the GIL thread's work on them. Reclaiming every abandoned
//! page on a free makes the rest of its frees plain local ones (about 9% fewer
//! instructions per event read, under callgrind). `STABILIZE_EVENTS_ALLOCATOR=default`
//! leaves mimalloc at its defaults (see `crate::tuning`).

use std::ffi::{c_int, c_long};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_page_reclaim_on_free` in mimalloc v3's `mi_option_t` (default 0:
/// only pages the freeing thread once owned). 1: any abandoned page.
const PAGE_RECLAIM_ON_FREE: c_int = 35;
/// `mi_option_page_cross_thread_max_reclaim` (default 32 pages per size class).
const PAGE_CROSS_THREAD_MAX_RECLAIM: c_int = 42;

/// Set the allocator's options; call once, when the module loads. Left at
/// mimalloc's defaults when `crate::tuning::allocator_settings` says so.
pub fn configure() {
    if !crate::tuning::allocator_settings() {
        return;
    }
    // SAFETY: setting an option is a plain store mimalloc allows at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(PAGE_RECLAIM_ON_FREE, 1);
        libmimalloc_sys::mi_option_set(PAGE_CROSS_THREAD_MAX_RECLAIM, c_long::from(i32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_numbers_name_the_options_meant() {
        // The numbers are positions in mimalloc's enum: a renumbering would
        // show as other defaults here and beside them (generic_collect before,
        // page_full_retain after). This test process never calls `configure`.
        // SAFETY: reading an option is a plain load.
        let got = unsafe {
            [
                PAGE_RECLAIM_ON_FREE - 1,
                PAGE_RECLAIM_ON_FREE,
                PAGE_RECLAIM_ON_FREE + 1,
                PAGE_CROSS_THREAD_MAX_RECLAIM,
            ]
            .map(|option| libmimalloc_sys::mi_option_get(option))
        };
        assert_eq!(got, [10_000, 0, 2, 32]);
    }
}
