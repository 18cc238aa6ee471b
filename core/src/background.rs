//! Background work that yields the CPU to serving.
//!
//! A Kappa replay encodes a year's segment on each core of a small machine; a `/v1/bars`
//! request arriving then waits for a core (the lab's 13-year daily query went from p99 20 ms
//! to 56 ms during a replay when the replay took both). Work run through
//! [`run_at_low_priority`] goes on an OS thread of its own whose nice value is raised by
//! [`BACKGROUND_NICE`] (`setpriority(2)`; on Linux the nice value is per thread). The kernel's
//! scheduler then gives serving's threads the core first when both want one (CFS weights a
//! nice-10 thread at about a tenth of a nice-0 one), and the background thread every cycle no
//! one else wants, so the work is no slower on an idle machine.
//!
//! A new thread per job, not a pooled one: an unprivileged thread cannot lower its nice value
//! again, so a pooled thread would stay slow for whatever it ran next. Jobs here are coarse (a
//! segment: tenths of a second), so the thread's start is noise.

/// How much a background thread's nice value is raised (capped at 19, the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Why background work gave no result.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The OS refused a new thread.
    #[error("could not start background thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The work panicked (the panic is reported by the panic hook, on stderr).
    #[error("background thread {0} panicked")]
    Panicked(String),
}

/// Runs `f` on a new thread named `name` at [`BACKGROUND_NICE`] and returns its result.
///
/// If the nice value cannot be raised (a platform without per-thread priorities), `f` still
/// runs, at the caller's priority. Errors: [`BackgroundError`] when the thread cannot start or
/// `f` panics.
pub async fn run_at_low_priority<T, F>(name: &str, f: F) -> Result<T, BackgroundError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(f());
        })
        .map_err(|source| BackgroundError::Spawn { name: name.to_string(), source })?;
    rx.await.map_err(|_| BackgroundError::Panicked(name.to_string()))
}

/// Raises the calling thread's nice value by [`BACKGROUND_NICE`]; logs (debug) and carries on
/// if the OS refuses.
fn lower_priority() {
    let me = Some(rustix::thread::gettid());
    let raised = rustix::process::getpriority_process(me)
        .and_then(|nice| rustix::process::setpriority_process(me, (nice + BACKGROUND_NICE).min(19)));
    if let Err(e) = raised {
        tracing::debug!(error = %e, "could not lower a background thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_the_work_at_a_higher_nice_value_than_the_caller() {
        let caller = rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("own nice value");
        let (nice, name) = run_at_low_priority("prism-test-bg", || {
            let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice value");
            (nice, std::thread::current().name().map(str::to_string))
        })
        .await
        .expect("ran");
        assert_eq!(nice, (caller + BACKGROUND_NICE).min(19));
        assert_eq!(name.as_deref(), Some("prism-test-bg"));
        // The caller's own priority is untouched.
        assert_eq!(rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice"), caller);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_naming_the_thread() {
        let err = run_at_low_priority("prism-test-panics", || -> i32 { panic!("on purpose") }).await.expect_err("panicked");
        assert!(err.to_string().contains("prism-test-panics"), "{err}");
    }
}
