//! Background work that yields the CPU to serving.
//!
//! A Kappa replay encodes a year's segment on each core of a small machine, and a Lambda
//! catch-up archives, compacts and folds thousands of master-dataset files; a `/v1/bars` request
//! arriving then waits for a core (the lab's 13-year daily query went from p99 20 ms to 56 ms
//! during a replay when the replay took both). Work run through [`run_at_low_priority`] goes to
//! a pool of threads of its own whose nice value is raised by [`BACKGROUND_NICE`]
//! (`setpriority(2)`; on Linux the nice value is per thread). The kernel's scheduler then gives
//! serving's threads the core first when both want one (CFS weights a nice-10 thread at about a
//! tenth of a nice-0 one), and the background threads every cycle no one else wants, so the
//! work is no slower on an idle machine.
//!
//! The pool is the blocking pool of a tokio runtime kept for this alone (its threads never run
//! foreground work, so their raised nice value, which an unprivileged thread cannot lower again,
//! slows nothing else). Its threads start on demand and leave after 10 s idle; callers bound how
//! much runs at once (a batch run's parallelism and its folds in flight, a replay's two segment
//! writes). The pool's own cap, tokio's default of 512, is far above that on purpose: a batch
//! chunk build waits on folds that run here too, so a cap near the callers' total could leave
//! every thread waiting.

use std::sync::OnceLock;

/// How much a background thread's nice value is raised (capped at 19, the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// How much the threads of a [`layers_runtime`] have their nice value raised: between serving
/// (0) and the background pool, whose threads a layer thread starts ([`BACKGROUND_NICE`] above
/// the layer's own).
pub const LAYERS_NICE: i32 = 5;

/// Why background work gave no result.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The work panicked (the panic is reported by the panic hook, on stderr).
    #[error("background work {0} panicked")]
    Panicked(String),
    /// The pool shut down before the work ran (the process is exiting).
    #[error("background work {0} was cancelled")]
    Cancelled(String),
}

/// The background pool, built on first use; `None` when the OS refused (then work runs on the
/// caller's runtime at the caller's priority).
fn pool() -> Option<&'static tokio::runtime::Runtime> {
    static POOL: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    POOL.get_or_init(|| {
        // The nice value of the thread that first asks (a foreground one), raised: a thread
        // inherits its creator's nice value, and a pool thread may start another.
        let base = rustix::process::getpriority_process(None).unwrap_or(0);
        let built = tokio::runtime::Builder::new_current_thread()
            .thread_name("prism-background")
            .on_thread_start(move || lower_priority(base))
            .build();
        match built {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                tracing::warn!(error = %e, "no background pool: background work runs at normal priority");
                None
            }
        }
    })
    .as_ref()
}

/// Runs `f` on a background thread (nice raised by [`BACKGROUND_NICE`]) and returns its result;
/// `name` says what it is in errors.
///
/// If the nice value cannot be raised (a platform without per-thread priorities), `f` still
/// runs, at the caller's priority. Errors: [`BackgroundError`] when `f` panics or the pool is
/// shutting down.
pub async fn run_at_low_priority<T, F>(name: &str, f: F) -> Result<T, BackgroundError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = match pool() {
        Some(pool) => pool.spawn_blocking(f),
        None => tokio::task::spawn_blocking(f),
    };
    handle.await.map_err(|e| {
        if e.is_panic() {
            BackgroundError::Panicked(name.to_string())
        } else {
            BackgroundError::Cancelled(name.to_string())
        }
    })
}

/// A multi-thread tokio runtime (a worker thread per core, named `thread_name`) whose threads,
/// workers and blocking pool alike, run at the caller's nice value + [`LAYERS_NICE`].
///
/// `prism up` runs its layers and intake on one (the speed layer, the archiver, the batch
/// layer, the feed…) and its HTTP API on the main runtime: when a catch-up keeps both cores
/// busy, a request's threads get a core first (CFS weights a nice-5 thread at about a third of
/// a nice-0 one), and the layers take every cycle serving leaves. Threads the runtime's tasks
/// start (a SQLite connection's worker, a background-pool thread) inherit the raised value. On
/// a platform without per-thread priorities the threads run at the caller's priority.
///
/// Errors: the OS refused to start the runtime's threads.
pub fn layers_runtime(thread_name: &str) -> std::io::Result<LayersRuntime> {
    let base = rustix::process::getpriority_process(None).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(thread_name)
        .on_thread_start(move || set_own_nice(base + LAYERS_NICE))
        .enable_all()
        .build()?;
    Ok(LayersRuntime(Some(runtime)))
}

/// The runtime [`layers_runtime`] builds. Dropping it stops its threads without waiting for
/// them (`Runtime::shutdown_background`), so it may be dropped inside async code, as an early
/// return of its owner does; tasks still running on it are dropped at their next await.
#[derive(Debug)]
pub struct LayersRuntime(Option<tokio::runtime::Runtime>);

impl LayersRuntime {
    /// A handle to spawn tasks on the runtime (`JoinSet::spawn_on`, `Handle::spawn`).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the runtime is only taken when dropped"),
        }
    }
}

impl Drop for LayersRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value to `base` + [`BACKGROUND_NICE`].
fn lower_priority(base: i32) {
    set_own_nice(base + BACKGROUND_NICE);
}

/// Sets the calling thread's nice value to `nice` (at most 19); logs (debug) and carries on if
/// the OS refuses.
fn set_own_nice(nice: i32) {
    let me = Some(rustix::thread::gettid());
    if let Err(e) = rustix::process::setpriority_process(me, nice.min(19)) {
        tracing::debug!(error = %e, "could not lower a thread's priority");
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
        assert_eq!(name.as_deref(), Some("prism-background"));
        // The caller's own priority is untouched.
        assert_eq!(rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice"), caller);
    }

    #[tokio::test]
    async fn a_layers_runtime_runs_its_tasks_and_their_threads_below_the_caller() {
        let caller = rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("own nice value");
        let layers = layers_runtime("prism-test-layers").expect("runtime");
        let nice_of_this_thread = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice value");
        let (worker, blocking, background) = layers
            .handle()
            .spawn(async move {
                let worker = (nice_of_this_thread(), std::thread::current().name().map(str::to_string));
                let blocking = tokio::task::spawn_blocking(nice_of_this_thread).await.expect("blocking");
                let background = run_at_low_priority("prism-test-bg-of-layer", nice_of_this_thread).await.expect("ran");
                (worker, blocking, background)
            })
            .await
            .expect("task");
        drop(layers);
        assert_eq!(worker, ((caller + LAYERS_NICE).min(19), Some("prism-test-layers".to_string())));
        assert_eq!(blocking, (caller + LAYERS_NICE).min(19));
        // The background pool is below the layers whichever starts it first (this test or
        // another in the same process): at least BACKGROUND_NICE above the caller.
        assert!(background >= (caller + BACKGROUND_NICE).min(19), "{background}");
        assert_eq!(nice_of_this_thread(), caller);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_naming_the_work() {
        let err = run_at_low_priority("prism-test-panics", || -> i32 { panic!("on purpose") }).await.expect_err("panicked");
        assert!(err.to_string().contains("prism-test-panics"), "{err}");
    }
}
