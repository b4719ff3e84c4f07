//! The process allocator of the tidemark binaries: mimalloc, set up for a pipeline whose rows
//! are freed on another thread than the one that allocated them.
//!
//! A binary links it with `tidemark_allocator::configure()` first thing in `main`; the
//! `#[global_allocator]` is here, so the allocator and its settings cannot come apart.
//!
//! ## Why mimalloc
//! The pipeline allocates a row's values on one thread (the result-set reader, the binlog decoder,
//! the Kafka consumer) and frees them on another (the transform, which moves them into target
//! records; the write stage hands the records back to it). glibc's allocator serialises such
//! frees on its arena locks: over a third of a backfill's CPU went to malloc and free.
//!
//! ## Why pages are reclaimed on a free
//! mimalloc (v3) *abandons* pages that its owner cannot allocate from any more, so that frees from
//! other threads do not keep them tied to it. A free from another thread into an abandoned page
//! collects the page's list of freed blocks and then either frees the page, or reclaims it into
//! the freeing thread's heap, or abandons it again. By default (`page_reclaim_on_free = 0`) a page
//! is reclaimed only by a thread of the heap it came from, so the transform thread, which frees
//! nearly everything the reader allocated, collected the reader's pages and abandoned them again,
//! over and over: about 1,100 instructions a row, a tenth of the transform's work. With
//! `page_reclaim_on_free = 1` the thread that frees into an abandoned page takes it over and
//! allocates its own records from it. Measured on a 1,000,000-row backfill (four alternating
//! pairs on one server, AMD EPYC, 2 cores): 4.26, 5.03, 4.38, 3.58 s → 3.78, 3.55, 3.32, 3.16 s,
//! user + system CPU 6.4, 7.7, 6.8, 5.5 → 5.8, 5.2, 5.1, 4.8 s; by callgrind (30,000 rows) the
//! transform thread 305 → 280 M instructions.
//!
//! The environment still has the last word: `MIMALLOC_PAGE_RECLAIM_ON_FREE` (mimalloc's own
//! variable) set to another value is kept.
#![allow(unsafe_code)] // the two calls into mimalloc's C API below; nothing else.

use libmimalloc_sys::mi_option_t;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_page_reclaim_on_free` in the `mi_option_e` enum of the mimalloc v3 that
/// `libmimalloc-sys` builds (its Rust bindings do not name it); the test below checks the name
/// against mimalloc's own list of options.
const PAGE_RECLAIM_ON_FREE: mi_option_t = 35;

/// The environment variable by which mimalloc lets a user set the option instead.
const PAGE_RECLAIM_ON_FREE_ENV: &str = "MIMALLOC_PAGE_RECLAIM_ON_FREE";

/// Set the allocator's options for the pipeline (see the module doc). Call once, at the start of
/// `main`; the settings apply from then on to every thread.
pub fn configure() {
    if std::env::var_os(PAGE_RECLAIM_ON_FREE_ENV).is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores a value in mimalloc's option table, which every thread
    // reads on its own; `PAGE_RECLAIM_ON_FREE` is an option of this build (tested below), and 1
    // is one of its documented values (-1, 0, 1).
    unsafe { libmimalloc_sys::mi_option_set(PAGE_RECLAIM_ON_FREE, 1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{c_char, c_void, CStr};

    extern "C" {
        /// mimalloc's list of its options, `option 'NAME': VALUE` a line (not in the bindings).
        fn mi_options_print_out(out: libmimalloc_sys::mi_output_fun, arg: *mut c_void);
    }

    unsafe extern "C" fn append(msg: *const c_char, arg: *mut c_void) {
        // SAFETY: `arg` is the `String` that `options_text` passes, alive for the call, and
        // mimalloc passes a NUL-terminated message.
        let out = unsafe { &mut *arg.cast::<String>() };
        out.push_str(&unsafe { CStr::from_ptr(msg) }.to_string_lossy());
    }

    fn options_text() -> String {
        let mut out = String::new();
        // SAFETY: `append` writes only into `out`, which outlives the call.
        unsafe { mi_options_print_out(Some(append), (&mut out as *mut String).cast()) };
        out
    }

    /// The option number set by `configure` is `page_reclaim_on_free` in this mimalloc, and
    /// `configure` sets it to 1 (unless the environment set it).
    #[test]
    fn configure_turns_on_reclaiming_abandoned_pages_on_a_free() {
        configure();
        let text = options_text();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("option 'page_reclaim_on_free': "))
            .map(|v| v.trim().to_string());
        let expected = match std::env::var(PAGE_RECLAIM_ON_FREE_ENV) {
            Ok(v) => v,
            Err(_) => "1".to_string(),
        };
        assert_eq!(
            value.as_deref(),
            Some(expected.as_str()),
            "option {PAGE_RECLAIM_ON_FREE} may not be page_reclaim_on_free in this mimalloc version; its options:\n{text}"
        );
    }
}
