//! What the xDS client has to say about itself: the connection, every type's last ACK or
//! NACK and the names and versions held (shown in /config_dump), why the proxy is not
//! ready yet (shown on /ready and /healthz/ready), and the `skiff_xds_*` metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::metrics::ProxyMetrics;

/// One type's last exchange with the control plane.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// The last version accepted (state of the world: `version_info`; delta: the
    /// response's `system_version_info` when the server sends one).
    pub version: String,
    pub last_nonce: String,
    /// `ACK` or `NACK`.
    pub last_answer: String,
    /// Why the last NACK refused the push, resource by resource.
    pub last_nack_reason: Option<String>,
    pub pushes: u64,
    pub nacks: u64,
    /// Names held, with their versions.
    pub resources: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusView {
    pub address: String,
    pub variant: &'static str,
    pub connected: bool,
    pub last_error: Option<String>,
    /// What the configuration still waits for (empty once complete).
    pub waiting_for: Vec<String>,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    type_url: &'static str,
}

/// The client's state for the admin server, the readiness reason and the metrics.
pub struct XdsStatus {
    view: Mutex<StatusView>,
    connected: Gauge,
    pushes: Family<TypeLabel, Counter>,
    acks: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    apply: Histogram,
}

impl XdsStatus {
    /// Registers `skiff_xds_*` in `metrics`.
    pub fn new(address: &str, delta: bool, metrics: &ProxyMetrics) -> XdsStatus {
        let status = XdsStatus {
            view: Mutex::new(StatusView {
                address: address.to_owned(),
                variant: if delta { "DELTA_GRPC" } else { "GRPC" },
                waiting_for: vec!["a connection to the control plane".to_owned()],
                ..StatusView::default()
            }),
            connected: Gauge::default(),
            pushes: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            // 100 µs to ~6.5 s.
            apply: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 17,
            )),
        };
        metrics.register(
            "skiff_xds_connected",
            "1 while the ADS stream to the control plane is open",
            status.connected.clone(),
        );
        metrics.register(
            "skiff_xds_pushes",
            "Discovery responses received, by type",
            status.pushes.clone(),
        );
        metrics.register(
            "skiff_xds_acks",
            "Discovery responses accepted, by type",
            status.acks.clone(),
        );
        metrics.register(
            "skiff_xds_nacks",
            "Discovery responses refused, by type",
            status.nacks.clone(),
        );
        metrics.register(
            "skiff_xds_apply_seconds",
            "Time from receiving a push to the new configuration being in force",
            status.apply.clone(),
        );
        status
    }

    fn with<T>(&self, f: impl FnOnce(&mut StatusView) -> T) -> T {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn view(&self) -> StatusView {
        self.with(|v| v.clone())
    }

    pub fn set_connected(&self, connected: bool, error: Option<String>) {
        self.connected.set(i64::from(connected));
        self.with(|v| {
            v.connected = connected;
            if error.is_some() || connected {
                v.last_error = error;
            }
        });
    }

    pub fn set_waiting(&self, waiting: Vec<String>) {
        self.with(|v| v.waiting_for = waiting);
    }

    /// Why the proxy has no complete configuration yet, when it has none.
    pub fn not_ready_reason(&self) -> Option<String> {
        self.with(|v| {
            if v.waiting_for.is_empty() {
                return None;
            }
            let mut reason = format!(
                "waiting for the control plane at {}: {}",
                v.address,
                v.waiting_for.join(", ")
            );
            if let Some(e) = &v.last_error {
                reason.push_str(&format!(" (last error: {e})"));
            }
            Some(reason)
        })
    }

    /// Records the answer to one push of `type_url`.
    pub fn answered(
        &self,
        type_url: &'static str,
        nonce: &str,
        version: Option<&str>,
        nack: Option<String>,
        resources: BTreeMap<String, String>,
    ) {
        let label = TypeLabel { type_url };
        self.pushes.get_or_create(&label).inc();
        if nack.is_some() {
            self.nacks.get_or_create(&label).inc();
        } else {
            self.acks.get_or_create(&label).inc();
        }
        self.with(|v| {
            let t = v.types.entry(type_url).or_default();
            t.pushes += 1;
            t.last_nonce = nonce.to_owned();
            if let Some(version) = version {
                t.version = version.to_owned();
            }
            match nack {
                Some(reason) => {
                    t.nacks += 1;
                    t.last_answer = "NACK".to_owned();
                    t.last_nack_reason = Some(reason);
                }
                None => {
                    t.last_answer = "ACK".to_owned();
                    t.resources = resources;
                }
            }
        });
    }

    pub fn applied_in(&self, took: Duration) {
        self.apply.observe(took.as_secs_f64());
    }
}
