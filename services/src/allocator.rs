//! The binary's allocator, mimalloc (v3), and the two memory settings Prism changes: the
//! allocator's purge delay, and transparent huge pages (off for the process).
//!
//! mimalloc returns freed memory to the OS, where glibc's malloc kept each thread arena's peak
//! (a full batch rebuild's RSS grew chunk after chunk). mimalloc v3 waits 1 s before it purges
//! freed pages, though: a Kappa replay of the lab allocates and frees hundreds of MB a second,
//! so a second's worth stayed resident. At 100 ms the lab's peak RSS fell from 1.03 GB to
//! 0.86–0.90 GB at the same replay speed (at 0 ms: 0.70 GB, but the replay ran 25 % slower);
//! `bench/README.md`, "Memory". The `heap-profile` feature keeps the system allocator, whose
//! calls heap profilers such as `heaptrack` intercept.
//!
//! Transparent huge pages: with THP on (mimalloc allows it by default), the first touch of a
//! fresh 2 MiB region zeroes all of it, and memory purged after 100 ms is faulted in again that
//! way. A profile of the first 13-year daily query on a version (its segments' row groups
//! decoded into fresh buffers) spent 44 % of its CPU zeroing pages. With THP off for the
//! process (what `MIMALLOC_ALLOW_THP=0` does at mimalloc's start: `prctl(PR_SET_THP_DISABLE)`)
//! that query took 63 ms instead of 87–145 ms, a repeat after 2 s idle 5–7 ms instead of
//! 7–20 ms, and a lab replay 3.5–3.9 s at 419–443 MB instead of 3.8–4.3 s at 465–486 MB.

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
/// differs: then nothing is changed), and turns transparent huge pages off for the process
/// unless `MIMALLOC_ALLOW_THP` is set (then mimalloc applies the operator's choice).
pub fn tune() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // The flag belongs to the process's memory map, so it covers every thread. A kernel
        // without it (before 3.15) refuses, and THP stays on, which is only slower; there is no
        // one to tell yet (this runs before logging starts).
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn turns_transparent_huge_pages_off_unless_the_operator_chose() {
        let before = rustix::thread::transparent_huge_pages_are_disabled().expect("PR_GET_THP_DISABLE");
        super::tune();
        let after = rustix::thread::transparent_huge_pages_are_disabled().expect("PR_GET_THP_DISABLE");
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            assert_eq!(after, before, "the operator's MIMALLOC_ALLOW_THP is left to mimalloc");
        } else {
            assert!(after, "THP off after tune()");
        }
    }
}
