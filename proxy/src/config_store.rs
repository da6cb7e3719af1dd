//! The running configuration: one `Arc<Snapshot>` behind an [`ArcSwap`], replaced whole.
//!
//! The data path calls [`ConfigStore::current`] once per accepted connection and keeps that
//! snapshot to the end of the connection, so a change never alters a connection mid-way
//! and reading takes no lock (an atomic load and a reference count). Writers (the xDS
//! client, the static file watcher) call [`ConfigStore::replace`]; everyone else (readiness,
//! the admin server) learns of each change through [`ConfigStore::subscribe`].
//!
//! In static mode [`ConfigStore::watch_file`] keeps the store in step with the file. It
//! reloads on SIGHUP and when the file changes. Changes are found by polling the file's
//! device, inode, size and modification time every second rather than with inotify: a poll
//! needs no extra dependency, sees Kubernetes' ConfigMap updates (a symlink swap, which
//! inotify on the file itself misses), and costs one `stat` a second. A change is applied
//! once the file has looked the same for a whole poll interval and did not change while it
//! was read, so an editor's half-written file is not loaded. A rewrite that keeps the size
//! and lands within the file system's timestamp granularity can go unseen; SIGHUP (or
//! [`ConfigStore::request_reload`]) reloads unconditionally. A file that fails to load is
//! logged with the field's path and counted, and the running snapshot stays.

use std::fs::Metadata;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;

use crate::snapshot::Snapshot;
use crate::static_config::{self, StaticConfigError};

/// How often [`ConfigStore::watch_file`] looks at the file.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What the store holds, as seen through [`ConfigStore::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStatus {
    /// Whether a real configuration is installed: false only for a
    /// [`ConfigStore::pending`] store before its first [`ConfigStore::replace`]. Readiness
    /// waits for this.
    pub loaded: bool,
    /// The current snapshot's [`Snapshot::version`].
    pub version: String,
    /// How many snapshots [`ConfigStore::replace`] has installed since the store was made.
    pub generation: u64,
    /// Why the latest reload failed, until a snapshot is installed again.
    pub last_error: Option<String>,
}

/// The running configuration and how it got there.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    status: watch::Sender<ConfigStatus>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    reload_requested: Notify,
    /// The file, and its state when read, that the current snapshot was loaded from; `None`
    /// when the snapshot came from elsewhere. Tells a starting watch whether the file
    /// changed since. Not touched by the data path.
    loaded_from: Mutex<Option<(PathBuf, FileState)>>,
}

impl ConfigStore {
    /// A store that starts with `initial`, which counts as loaded.
    pub fn new(initial: Snapshot) -> ConfigStore {
        Self::with(initial, true)
    }

    /// A store with an empty snapshot that does not count as loaded: for the xDS client,
    /// whose proxy must not report ready before the first complete configuration.
    pub fn pending() -> ConfigStore {
        Self::with(Snapshot::default(), false)
    }

    /// A store that starts with the static config at `path`. Prefer this to
    /// `new(static_config::load(path)?)` before [`ConfigStore::watch_file`]: the store then
    /// knows which state of the file it holds, and the watch need not load it again.
    pub fn from_file(path: &Path) -> Result<ConfigStore, StaticConfigError> {
        let (parsed, metadata) = static_config::load_with_metadata(path)?;
        let store = Self::new(parsed.snapshot);
        store.remember(Some((path.to_owned(), FileState::from(&metadata))));
        Ok(store)
    }

    fn with(initial: Snapshot, loaded: bool) -> ConfigStore {
        let (status, _) = watch::channel(ConfigStatus {
            loaded,
            version: initial.version.clone(),
            generation: 0,
            last_error: None,
        });
        ConfigStore {
            current: ArcSwap::from_pointee(initial),
            status,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            reload_requested: Notify::new(),
            loaded_from: Mutex::new(None),
        }
    }

    /// The snapshot to use for a new connection. Lock-free; keep the `Arc` for the
    /// connection's lifetime.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs `snapshot` for new connections; connections already open keep theirs.
    pub fn replace(&self, snapshot: Snapshot) {
        self.install(snapshot, None);
    }

    fn install(&self, snapshot: Snapshot, from: Option<(PathBuf, FileState)>) {
        let version = snapshot.version.clone();
        let snapshot = Arc::new(snapshot);
        let mut old = None;
        // Swapped inside the status update, whose lock orders concurrent writers, so the
        // status never names a version other than the one installed.
        self.status.send_modify(|s| {
            old = Some(self.current.swap(snapshot));
            self.remember(from);
            s.loaded = true;
            s.version = version;
            s.generation += 1;
            s.last_error = None;
        });
        // The old snapshot is freed here (or by its last connection), outside the lock.
        drop(old);
    }

    fn remember(&self, from: Option<(PathBuf, FileState)>) {
        *self.loaded_from.lock().unwrap_or_else(|e| e.into_inner()) = from;
    }

    /// The state of `path` the current snapshot was loaded from, if it was.
    fn loaded_state(&self, path: &Path) -> Option<FileState> {
        match &*self.loaded_from.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((p, state)) if p == path => Some(state.clone()),
            _ => None,
        }
    }

    /// Follows every change of [`ConfigStatus`]: replacements and failed reloads.
    pub fn subscribe(&self) -> watch::Receiver<ConfigStatus> {
        self.status.subscribe()
    }

    pub fn status(&self) -> ConfigStatus {
        self.status.borrow().clone()
    }

    /// Successful reloads from a file (the initial load not included), for metrics.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads that failed and kept the running snapshot, for metrics.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Asks a running [`ConfigStore::watch_file`] to reload now, as SIGHUP does (for an
    /// admin endpoint, and for tests).
    pub fn request_reload(&self) {
        self.reload_requested.notify_one();
    }

    /// Loads the static config at `path` and installs it; if it cannot be loaded, keeps the
    /// running snapshot, logs and counts the failure, and returns the error.
    pub fn reload_from(&self, path: &Path) -> Result<(), StaticConfigError> {
        let result = static_config::load_with_metadata(path)
            .map(|(parsed, metadata)| (parsed.snapshot, FileState::from(&metadata)));
        self.apply(path, result)
    }

    fn apply(
        &self,
        path: &Path,
        result: Result<(Snapshot, FileState), StaticConfigError>,
    ) -> Result<(), StaticConfigError> {
        match result {
            Ok((snapshot, state)) => {
                let version = snapshot.version.clone();
                self.install(snapshot, Some((path.to_owned(), state)));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                // Only once it is in force: whoever reads the log may rely on it.
                tracing::info!(path = %path.display(), %version, "static config reloaded");
                Ok(())
            }
            Err(error) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                let message = error.to_string();
                tracing::error!(
                    path = %path.display(),
                    error = %message,
                    running = %self.status.borrow().version,
                    "static config reload failed; keeping the running configuration"
                );
                self.status.send_modify(|s| s.last_error = Some(message));
                Err(error)
            }
        }
    }

    /// Keeps the store in step with the static config at `path` until `shutdown` completes:
    /// reloads on SIGHUP, on [`ConfigStore::request_reload`], and when the file changes
    /// (polled every [`DEFAULT_POLL_INTERVAL`]; see the module docs). Unless the store
    /// loaded this file itself ([`ConfigStore::from_file`], or an earlier reload) and it has
    /// not changed since, the file is loaded once at the first poll, so that the store
    /// holds the file as it is.
    pub async fn watch_file(self: Arc<Self>, path: PathBuf, shutdown: impl Future) {
        self.watch_file_every(path, DEFAULT_POLL_INTERVAL, shutdown)
            .await;
    }

    /// [`ConfigStore::watch_file`] with another poll interval (at least 1 ms).
    pub async fn watch_file_every(
        self: Arc<Self>,
        path: PathBuf,
        interval: Duration,
        shutdown: impl Future,
    ) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot listen for SIGHUP; the static config reloads only when the file changes"
                );
                None
            }
        };
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);

        // The state last tried (loaded, or failed), and the state seen at the last poll.
        let mut attempted = self.loaded_state(&path).unwrap_or(FileState::NeverLoaded);
        let mut previous = FileState::of(&path).await;
        loop {
            let forced = tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => false,
                () = self.reload_requested.notified() => true,
                Some(()) = hangup(&mut hangups) => true,
            };
            let now = FileState::of(&path).await;
            if forced {
                tracing::info!(path = %path.display(), "static config reload requested");
            }
            // Unless asked to, wait until the file has looked the same for a whole interval.
            if (forced || (now != attempted && now == previous))
                && self.try_reload(&path, &now).await
            {
                attempted = now.clone();
            }
            previous = now;
        }
    }

    /// Loads the file and applies the result, unless the file changed while it was read
    /// (then the next polls will see the change and try again). Returns whether it applied.
    async fn try_reload(self: &Arc<Self>, path: &Path, before: &FileState) -> bool {
        let owned = path.to_owned();
        let loaded =
            tokio::task::spawn_blocking(move || static_config::load_with_metadata(&owned)).await;
        let result = match loaded {
            Ok(result) => {
                result.map(|(parsed, metadata)| (parsed.snapshot, FileState::from(&metadata)))
            }
            Err(error) => {
                tracing::error!(%error, "static config reload did not finish");
                return false;
            }
        };
        if FileState::of(path).await != *before {
            return false;
        }
        // The outcome is logged and counted by `apply`.
        let _ = self.apply(path, result);
        true
    }
}

async fn hangup(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// What a poll sees of the file: enough to notice a rewrite or a replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    /// Before the first load attempt (when the store did not load the file itself).
    NeverLoaded,
    /// Missing or unreadable.
    Absent,
    Present {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: i64,
        mtime_nsec: i64,
    },
}

impl FileState {
    async fn of(path: &Path) -> FileState {
        match tokio::fs::metadata(path).await {
            Ok(m) => FileState::from(&m),
            Err(_) => FileState::Absent,
        }
    }
}

impl From<&Metadata> for FileState {
    fn from(m: &Metadata) -> FileState {
        FileState::Present {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    /// Every wait in these tests is bounded by this, so a broken watcher fails the test
    /// instead of hanging it.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// Fast polling, so a change is seen within a few tens of milliseconds.
    const POLL: Duration = Duration::from_millis(10);

    /// A directory of its own for each test, removed at the end (also on panic).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "skiff-config-store-{}-{tag}-{n}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("proxy.yaml")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Replaces the file as editors and Kubernetes do: write aside, then rename over it.
    fn replace_file(path: &Path, text: &str) {
        let aside = path.with_extension("new");
        std::fs::write(&aside, text).expect("write");
        std::fs::rename(&aside, path).expect("rename");
    }

    /// A valid config whose service listener is on `port`.
    fn config(port: u16) -> String {
        format!(
            "listeners:\n  - {{name: out, address: 0.0.0.0:15001, useOriginalDst: true, defaultCluster: PassthroughCluster}}\n  - {{name: svc, address: 10.0.0.1:{port}, defaultCluster: BlackHoleCluster}}\n"
        )
    }

    /// Well-formed YAML whose second listener names a cluster that does not exist.
    const INVALID: &str = "listeners:\n  - {name: out, address: 0.0.0.0:15001, useOriginalDst: true, defaultCluster: PassthroughCluster}\n  - {name: svc, address: 10.0.0.1:80, defaultCluster: nope}\n";

    fn service_port(store: &ConfigStore) -> u16 {
        let snapshot = store.current();
        let svc = snapshot
            .listeners
            .iter()
            .find(|l| l.name == "svc")
            .expect("listener svc");
        svc.address.port()
    }

    fn snapshot(version: &str) -> Snapshot {
        Snapshot {
            version: version.to_owned(),
            ..Snapshot::default()
        }
    }

    async fn wait_for(
        rx: &mut watch::Receiver<ConfigStatus>,
        what: &str,
        f: impl FnMut(&ConfigStatus) -> bool,
    ) -> ConfigStatus {
        let result = tokio::time::timeout(PATIENCE, rx.wait_for(f))
            .await
            .map(|r| r.map(|status| status.clone()));
        match result {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => panic!("the store went away while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; status {:?}", *rx.borrow()),
        }
    }

    /// A running watcher and the means to stop it.
    struct Watch {
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    }

    fn watch(store: &Arc<ConfigStore>, path: &Path) -> Watch {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            store
                .clone()
                .watch_file_every(path.to_owned(), POLL, stopped),
        );
        Watch {
            stop: Some(stop),
            task,
        }
    }

    impl Watch {
        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            match tokio::time::timeout(PATIENCE, &mut self.task).await {
                Ok(joined) => joined.expect("the watcher ends cleanly"),
                Err(_) => panic!("the watcher did not stop on shutdown"),
            }
        }
    }

    #[test]
    fn replace_swaps_for_new_readers_only() {
        let store = ConfigStore::new(snapshot("one"));
        assert_eq!(
            store.status(),
            ConfigStatus {
                loaded: true,
                version: "one".into(),
                generation: 0,
                last_error: None,
            }
        );
        let held = store.current();
        store.replace(snapshot("two"));
        assert_eq!(held.version, "one", "a connection keeps its snapshot");
        assert_eq!(store.current().version, "two");
        store.replace(snapshot("three"));
        let status = store.status();
        assert_eq!((status.version.as_str(), status.generation), ("three", 2));
        assert_eq!((store.reloads(), store.reload_failures()), (0, 0));
    }

    #[test]
    fn a_pending_store_is_loaded_by_its_first_replacement() {
        let store = ConfigStore::pending();
        let status = store.status();
        assert!(!status.loaded);
        assert_eq!(status.version, "");
        assert!(store.current().listeners.is_empty());
        store.replace(snapshot("xds:1"));
        let status = store.status();
        assert!(status.loaded);
        assert_eq!((status.version.as_str(), status.generation), ("xds:1", 1));
    }

    #[tokio::test]
    async fn subscribers_see_each_replacement() {
        let store = Arc::new(ConfigStore::pending());
        let mut rx = store.subscribe();
        let writer = store.clone();
        tokio::spawn(async move { writer.replace(snapshot("xds:7")) });
        let status = wait_for(&mut rx, "the replacement", |s| s.loaded).await;
        assert_eq!(status.version, "xds:7");
        assert_eq!(store.current().version, "xds:7");
    }

    #[test]
    fn reload_from_installs_good_files_and_keeps_the_old_snapshot_otherwise() {
        let dir = TempDir::new("reload");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = ConfigStore::from_file(&path).expect("loads");
        // (case, file content or None to delete it, expected port, error substring)
        let cases: &[(&str, Option<&str>, u16, Option<&str>)] = &[
            (
                "unknown cluster",
                Some(INVALID),
                80,
                Some("listeners[1].defaultCluster: no cluster named \"nope\""),
            ),
            (
                "not YAML",
                Some("listeners: [\n"),
                80,
                Some("at line 2 column 1"),
            ),
            ("empty", Some(""), 80, Some("is empty")),
            ("deleted", None, 80, Some("cannot read the static config")),
            ("valid again", Some("__8081__"), 8081, None),
        ];
        let (mut reloads, mut failures) = (0, 0);
        for (case, content, port, error) in cases {
            match content {
                Some("__8081__") => replace_file(&path, &config(8081)),
                Some(text) => replace_file(&path, text),
                None => std::fs::remove_file(&path).expect("remove"),
            }
            let result = store.reload_from(&path);
            let status = store.status();
            match error {
                Some(expected) => {
                    failures += 1;
                    let e = result.expect_err(case).to_string();
                    assert!(e.contains(expected), "{case}: {e}");
                    assert_eq!(status.last_error.as_deref(), Some(e.as_str()), "{case}");
                }
                None => {
                    reloads += 1;
                    result.expect(case);
                    assert_eq!(status.last_error, None, "{case}");
                    assert!(status.version.starts_with("file:"), "{case}");
                }
            }
            assert_eq!(service_port(&store), *port, "{case}");
            assert_eq!(store.reloads(), reloads, "{case}");
            assert_eq!(store.reload_failures(), failures, "{case}");
            assert_eq!(status.generation, reloads, "{case}");
        }
    }

    #[tokio::test]
    async fn watch_file_applies_a_valid_change() {
        let dir = TempDir::new("valid");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = Arc::new(ConfigStore::from_file(&path).expect("loads"));
        let mut rx = store.subscribe();
        let watcher = watch(&store, &path);

        replace_file(&path, &config(8080));
        let status = wait_for(&mut rx, "the reload", |s| s.generation >= 1).await;
        assert_eq!(service_port(&store), 8080);
        assert_eq!(status.generation, 1);
        assert!(
            status
                .version
                .starts_with(&format!("file:{}@", path.display()))
        );
        assert_eq!(store.status().version, store.current().version);

        // A rewrite in place (same inode, other size) is seen too.
        std::fs::write(&path, config(9)).expect("write");
        wait_for(&mut rx, "the second reload", |s| s.generation >= 2).await;
        assert_eq!(service_port(&store), 9);
        assert_eq!((store.reloads(), store.reload_failures()), (2, 0));
        watcher.stop().await;
    }

    #[tokio::test]
    async fn watch_file_keeps_the_old_snapshot_when_the_file_becomes_invalid() {
        let dir = TempDir::new("invalid");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = Arc::new(ConfigStore::from_file(&path).expect("loads"));
        let before = store.current().version.clone();
        let mut rx = store.subscribe();
        let watcher = watch(&store, &path);

        replace_file(&path, INVALID);
        let status = wait_for(&mut rx, "the failure", |s| s.last_error.is_some()).await;
        let error = status.last_error.expect("an error");
        assert!(
            error.contains("listeners[1].defaultCluster: no cluster named \"nope\""),
            "{error}"
        );
        assert_eq!(store.current().version, before);
        assert_eq!(status.version, before);
        assert_eq!(service_port(&store), 80);
        assert_eq!((store.reloads(), store.reload_failures()), (0, 1));

        replace_file(&path, &config(8080));
        let status = wait_for(&mut rx, "the fix", |s| s.generation >= 1).await;
        assert_eq!(status.last_error, None);
        assert_eq!(service_port(&store), 8080);
        assert_eq!(
            (store.reloads(), store.reload_failures()),
            (1, 1),
            "the invalid file was tried once, however many polls saw it"
        );
        watcher.stop().await;
    }

    #[tokio::test]
    async fn a_deleted_file_is_one_failure_and_its_return_a_reload() {
        let dir = TempDir::new("deleted");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = Arc::new(ConfigStore::from_file(&path).expect("loads"));
        let mut rx = store.subscribe();
        let watcher = watch(&store, &path);

        std::fs::remove_file(&path).expect("remove");
        let status = wait_for(&mut rx, "the failure", |s| s.last_error.is_some()).await;
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("cannot read the static config")),
            "{status:?}"
        );
        assert_eq!(service_port(&store), 80);

        replace_file(&path, &config(81));
        wait_for(&mut rx, "the reload", |s| s.generation >= 1).await;
        assert_eq!(service_port(&store), 81);
        assert_eq!((store.reloads(), store.reload_failures()), (1, 1));
        watcher.stop().await;
    }

    #[tokio::test]
    async fn a_requested_reload_rereads_an_unchanged_file() {
        let dir = TempDir::new("requested");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = Arc::new(ConfigStore::from_file(&path).expect("loads"));
        let mut rx = store.subscribe();
        let watcher = watch(&store, &path);

        store.request_reload();
        let status = wait_for(&mut rx, "the reload", |s| s.generation >= 1).await;
        assert_eq!(status.version, store.current().version);
        assert_eq!((store.reloads(), store.reload_failures()), (1, 0));
        watcher.stop().await;
    }

    #[tokio::test]
    async fn watch_file_catches_up_when_the_store_does_not_hold_the_file() {
        let dir = TempDir::new("catch-up");
        let path = dir.file();
        std::fs::write(&path, config(8443)).expect("write");
        let other = static_config::parse(&config(80), "inline").expect("parses");
        let store = Arc::new(ConfigStore::new(other));
        let mut rx = store.subscribe();
        let watcher = watch(&store, &path);

        let status = wait_for(&mut rx, "the catch-up", |s| s.generation >= 1).await;
        assert!(status.version.starts_with("file:"), "{status:?}");
        assert_eq!(service_port(&store), 8443);
        watcher.stop().await;
    }

    #[tokio::test]
    async fn the_store_remembers_which_state_of_the_file_it_holds() {
        let dir = TempDir::new("remember");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = ConfigStore::from_file(&path).expect("loads");
        let loaded = FileState::of(&path).await;
        assert!(matches!(loaded, FileState::Present { .. }));
        assert_eq!(store.loaded_state(&path), Some(loaded));
        assert_eq!(store.loaded_state(&dir.0.join("other.yaml")), None);

        replace_file(&path, &config(81));
        store.reload_from(&path).expect("reloads");
        assert_eq!(store.loaded_state(&path), Some(FileState::of(&path).await));

        replace_file(&path, INVALID);
        assert!(store.reload_from(&path).is_err());
        assert_ne!(
            store.loaded_state(&path),
            Some(FileState::of(&path).await),
            "a failed load does not change what the store holds"
        );

        store.replace(snapshot("xds:1"));
        assert_eq!(store.loaded_state(&path), None);
        let elsewhere =
            ConfigStore::new(static_config::parse(&config(80), "inline").expect("parses"));
        assert_eq!(elsewhere.loaded_state(&path), None);
    }

    #[tokio::test]
    async fn shutdown_ends_the_watch() {
        let dir = TempDir::new("shutdown");
        let path = dir.file();
        std::fs::write(&path, config(80)).expect("write");
        let store = Arc::new(ConfigStore::from_file(&path).expect("loads"));
        watch(&store, &path).stop().await;
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the watcher let go of the store"
        );
    }
}
