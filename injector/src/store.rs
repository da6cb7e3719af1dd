//! The webhook's injection config, re-read when its file changes (a ConfigMap update). A
//! file that fails to load is logged and counted, and the last good config stays in force:
//! a typo in the ConfigMap must not stop pod creation cluster-wide.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{ConfigError, InjectionConfig};
use crate::files::Stamp;
use crate::metrics::Metrics;
use crate::policy::PolicyConfig;

/// A config and the policy derived from it, shared by the requests that use it.
#[derive(Debug)]
pub struct Loaded {
    pub config: InjectionConfig,
    pub policy: PolicyConfig,
}

impl Loaded {
    fn new(config: InjectionConfig) -> Arc<Loaded> {
        let policy = config.policy_config();
        Arc::new(Loaded { config, policy })
    }
}

struct State {
    stamp: Option<Stamp>,
    current: Option<Arc<Loaded>>,
}

/// The current injection config.
pub struct ConfigStore {
    path: Option<PathBuf>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl ConfigStore {
    /// With no path the built-in defaults apply and never change. With a path the first
    /// load must succeed, so a broken deployment fails at start rather than serving.
    pub fn new(path: Option<PathBuf>, metrics: Arc<Metrics>) -> Result<ConfigStore, ConfigError> {
        let (stamp, current) = match &path {
            None => (None, Loaded::new(InjectionConfig::default())),
            Some(p) => (Stamp::of(p), Loaded::new(InjectionConfig::load(p)?)),
        };
        Ok(ConfigStore {
            path,
            state: Mutex::new(State {
                stamp,
                current: Some(current),
            }),
            metrics,
        })
    }

    /// The config to use now, reloading it first if the file changed.
    pub fn get(&self) -> Arc<Loaded> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let stamp = Stamp::of(path);
            if stamp != state.stamp {
                state.stamp = stamp;
                match InjectionConfig::load(path) {
                    Ok(config) => {
                        tracing::info!(path = %path.display(), "injection config reloaded");
                        self.metrics.config_reloads.inc();
                        state.current = Some(Loaded::new(config));
                    }
                    Err(err) => {
                        self.metrics.config_reload_failures.inc();
                        tracing::error!("keeping the last good injection config: {err}");
                    }
                }
            }
        }
        // `current` is set in `new` and only ever replaced.
        state
            .current
            .clone()
            .unwrap_or_else(|| Loaded::new(InjectionConfig::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_update_keeps_the_last_good_config() {
        let dir = std::env::temp_dir().join(format!("skiff-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        let write = |text: &str| {
            let tmp = dir.join("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("statusPort: 15030\n");
        let metrics = Arc::new(Metrics::new());
        let store = ConfigStore::new(Some(path.clone()), metrics.clone()).unwrap();
        assert_eq!(store.get().config.status_port, 15030);

        write("statusPort: 15031\n");
        assert_eq!(store.get().config.status_port, 15031);
        assert_eq!(metrics.config_reloads.get(), 1);

        write("statusPort: [not a port]\n");
        assert_eq!(
            store.get().config.status_port,
            15031,
            "the last good config stays"
        );
        assert_eq!(metrics.config_reload_failures.get(), 1);

        write("bogus: 1\n");
        assert!(
            ConfigStore::new(Some(path), metrics).is_err(),
            "a bad file at start is an error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
