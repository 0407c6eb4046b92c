//! Live rule reloading: poll the rule files, swap in a new table when their content
//! changes and validates, keep the old one (and say why) when it does not.
//!
//! Polling, not inotify: Kubernetes updates a ConfigMap volume by swapping the `..data`
//! symlink to a new directory, which file watches on the old targets do not see. Reading
//! a few KiB every couple of seconds and comparing contents catches every kind of update.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;

use super::config::Sources;
use super::{RoutingError, RoutingTable};

/// Keeps the current [`RoutingTable`] in step with the rule files.
///
/// The polling task holds only a weak reference: dropping the last `Arc` (or calling
/// [`stop`](Self::stop)) ends it.
#[derive(Debug)]
pub struct RoutingWatcher {
    paths: Vec<PathBuf>,
    current: ArcSwap<RoutingTable>,
    /// Why the files on disk are not the current table, if they are not.
    problem: Mutex<Option<String>>,
    task: Mutex<Option<AbortHandle>>,
}

impl RoutingWatcher {
    /// How often the files are read: quick enough that a rule change applies within
    /// seconds, slow enough to cost nothing.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

    /// Loads the rules (failing like [`RoutingTable::load`]) and starts polling them every
    /// `poll_interval`.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn start(paths: &[PathBuf], poll_interval: Duration) -> Result<Arc<Self>, RoutingError> {
        let sources = Sources::read(paths);
        let table = RoutingTable::from_sources(&sources)?;
        log_warnings(&table);
        let watcher = Arc::new(Self {
            paths: paths.to_vec(),
            current: ArcSwap::from_pointee(table),
            problem: Mutex::new(None),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(poll(Arc::downgrade(&watcher), poll_interval, sources));
        *lock(&watcher.task) = Some(task.abort_handle());
        Ok(watcher)
    }

    /// The table in force. Cheap: take one per connection or request.
    pub fn current(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// The watched paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Why the rule files on disk are not in force (unreadable, invalid), if so; `None`
    /// once they are (for readiness checks and tests).
    pub fn problem(&self) -> Option<String> {
        lock(&self.problem).clone()
    }

    /// Stops polling; the current table stays.
    pub fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    fn set_problem(&self, error: &RoutingError) {
        let message = error.to_string();
        let mut problem = lock(&self.problem);
        // Once per distinct problem, not once per poll.
        if problem.as_deref() != Some(message.as_str()) {
            tracing::warn!(error = %message, "routing rules not reloaded; keeping the previous rules");
            *problem = Some(message);
        }
    }

    fn clear_problem(&self) {
        lock(&self.problem).take();
    }
}

impl Drop for RoutingWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (an
/// `Option`) is still coherent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn poll(watcher: Weak<RoutingWatcher>, every: Duration, mut seen: Sources) {
    // A change is acted on once two consecutive reads agree, so a file caught half-written
    // by a non-atomic writer is neither loaded nor reported. It costs one interval.
    let mut pending: Option<Sources> = None;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate; the files were just read.
    loop {
        ticker.tick().await;
        let Some(paths) = watcher.upgrade().map(|w| w.paths.clone()) else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || Sources::read(&paths)).await;
        let Some(watcher) = watcher.upgrade() else {
            return;
        };
        let sources = match read {
            Ok(sources) => sources,
            Err(join_error) => {
                tracing::error!(error = %join_error, "routing rule reader failed");
                continue;
            }
        };
        // The snapshot includes read errors, so an unchanged problem is not re-reported.
        if sources == seen {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&sources) {
            pending = Some(sources);
            continue;
        }
        pending = None;
        // Off the runtime's threads: the overlap check looks at every pair of rules.
        let built = tokio::task::spawn_blocking({
            let sources = sources.clone();
            move || RoutingTable::from_sources(&sources)
        })
        .await;
        match built {
            Ok(Ok(table)) => {
                tracing::info!(
                    rules = table.len(),
                    files = table.files().len(),
                    "routing rules reloaded"
                );
                log_warnings(&table);
                watcher.current.store(Arc::new(table));
                watcher.clear_problem();
            }
            Ok(Err(error)) => watcher.set_problem(&error),
            Err(join_error) => {
                tracing::error!(error = %join_error, "routing rule validation failed");
                continue;
            }
        }
        seen = sources;
    }
}

/// One log line for a table's warnings (legal rules that are likely not meant), naming the
/// first; `openkcm routing check` lists them all.
fn log_warnings(table: &RoutingTable) {
    let Some(first) = table.warnings().first() else {
        return;
    };
    let count = table.warnings().len() + table.warnings_left_out();
    tracing::warn!(
        count,
        first = %first,
        "routing rules loaded with warnings (see `openkcm routing check --policies …`)"
    );
}
