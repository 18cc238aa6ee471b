//! The binary's allocator, mimalloc (v3), and the one option Prism changes: its purge delay.
//!
//! mimalloc returns freed memory to the OS, where glibc's malloc kept each thread arena's peak
//! (a full batch rebuild's RSS grew chunk after chunk). mimalloc v3 waits 1 s before it purges
//! freed pages, though: a Kappa replay of the lab allocates and frees hundreds of MB a second,
//! so a second's worth stayed resident. At 100 ms the lab's peak RSS fell from 1.03 GB to
//! 0.86–0.90 GB at the same replay speed (at 0 ms: 0.70 GB, but the replay ran 25 % slower);
//! `bench/README.md`, "Memory". The `heap-profile` feature keeps the system allocator, whose
//! calls heap profilers such as `heaptrack` intercept.

#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Purge delay Prism sets, ms.
#[cfg(not(feature = "heap-profile"))]
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (include/mimalloc.h), and its
/// default there (ms).
#[cfg(not(feature = "heap-profile"))]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
#[cfg(not(feature = "heap-profile"))]
const MI_DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 1_000;

#[cfg(not(feature = "heap-profile"))]
extern "C" {
    // mimalloc's public C API (libmimalloc-sys links the library; these are its exports).
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Sets mimalloc's purge delay to 100 ms, unless the option does not read as v3's
/// default (an operator's `MIMALLOC_PURGE_DELAY`, or another mimalloc whose option table
/// differs: then nothing is changed).
pub fn tune() {
    #[cfg(not(feature = "heap-profile"))]
    {
        // SAFETY: plain calls into mimalloc's option table with a valid option index; mimalloc
        // reads and writes options atomically, from any thread, at any time.
        unsafe {
            if mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY_MS {
                mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
            }
        }
    }
}
