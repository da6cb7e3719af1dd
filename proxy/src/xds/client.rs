//! The ADS client's outer loop: connect to the control plane (plaintext, TLS with istiod's
//! root certificate and service-account token, or a Unix socket), run a session in the
//! configured variant until the stream ends, and reconnect with capped, jittered
//! exponential back-off — serving the last good snapshot all along. The resources received
//! survive reconnects, so a delta session resumes with `initial_resource_versions`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

use super::cache::Cache;
use super::status::XdsStatus;
use super::{delta, sotw};
use crate::config_store::ConfigStore;

/// Envoy waits this long for a warming cluster's endpoints (its `initial_fetch_timeout`
/// for EDS) before using the cluster without them.
pub const DEFAULT_WARMING_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a configuration change freed memory is returned to the kernel.
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// Where the control plane is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsAddress {
    /// `http://host:port`: plaintext gRPC (tests, a local agent).
    Plain(String),
    /// `https://host:port`, or a bare `host:port` as istiod's `discoveryAddress` is written:
    /// TLS verified against the root certificate file.
    Tls { uri: String, host: String },
    /// `unix:/path`: gRPC over a Unix socket, as pilot-agent serves Envoy.
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("xDS address {0:?}: {1}")]
    Address(String, &'static str),
    #[error("reading the root certificate {path}: {source}")]
    RootCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the root certificate file {0} holds no usable certificate")]
    NoRootCert(PathBuf),
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the ADS stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the ADS stream's request side closed")]
    Closed,
}

impl FromStr for XdsAddress {
    type Err = XdsError;

    fn from_str(s: &str) -> Result<XdsAddress, XdsError> {
        let bad = |why| XdsError::Address(s.to_owned(), why);
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(bad(
                    "a Unix socket address needs a path: unix:/path/to/socket",
                ));
            }
            return Ok(XdsAddress::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = match s.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some(_) => return Err(bad("use http://, https:// or unix:")),
            None => (true, s),
        };
        let rest = rest.trim_end_matches('/');
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(bad("write host:port, e.g. istiod.istio-system.svc:15012"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("write host:port, e.g. istiod.istio-system.svc:15012"));
        }
        let uri = format!("{}://{rest}", if tls { "https" } else { "http" });
        Ok(if tls {
            XdsAddress::Tls {
                uri,
                host: host.trim_matches(['[', ']']).to_owned(),
            }
        } else {
            XdsAddress::Plain(uri)
        })
    }
}

impl std::fmt::Display for XdsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdsAddress::Plain(uri) | XdsAddress::Tls { uri, .. } => f.write_str(uri),
            XdsAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

pub struct XdsOptions {
    pub address: XdsAddress,
    /// Incremental (delta) xDS, istiod's default; false: state of the world.
    pub delta: bool,
    pub node: Node,
    /// istiod's root certificate, for `https` addresses.
    pub root_cert: PathBuf,
    /// The projected service-account token sent as `authorization: Bearer`, read again
    /// at every connection (the kubelet rotates it). None or missing: no token.
    pub token_file: Option<PathBuf>,
    /// The `clusterid` metadata istiod checks with the token.
    pub cluster_id: Option<String>,
    pub warming_timeout: Duration,
}

/// Runs the client until `stop` turns true.
pub async fn run(
    options: XdsOptions,
    store: Arc<ConfigStore>,
    status: Arc<XdsStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let mut core = Core::new(store, status.clone(), options.warming_timeout);
    let mut failures = 0u32;
    loop {
        let session = async {
            let client = connect(&options).await?;
            status.set_connected(true, None);
            tracing::info!(address = %options.address, delta = options.delta, "connected to the control plane");
            if options.delta {
                delta::session(client, &options, &mut core).await
            } else {
                sotw::session(client, &options, &mut core).await
            }
        };
        let outcome = tokio::select! {
            outcome = session => outcome,
            _ = stop.wait_for(|s| *s) => return,
        };
        let error = match outcome {
            Ok(()) => "the control plane closed the stream".to_owned(),
            Err(e) => e.to_string(),
        };
        status.set_connected(false, Some(error.clone()));
        // A session that got as far as a push resets the back-off.
        failures = if core.pushes_this_session > 0 {
            1
        } else {
            failures + 1
        };
        core.pushes_this_session = 0;
        let wait = backoff(failures, crate::balance::random_u64());
        tracing::warn!(address = %options.address, retry_in = ?wait, "xDS: {error}; serving the last configuration");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Capped exponential back-off with full jitter: uniform in `[ceiling/2, ceiling)`, the
/// ceiling doubling from 0.5 s to 30 s, so that proxies that lost istiod together do not
/// return together.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let ceiling = (BACKOFF_BASE * (1u32 << doublings)).min(BACKOFF_MAX);
    let half = ceiling.as_millis() as u64 / 2;
    Duration::from_millis(half + random % half.max(1))
}

type Client = AggregatedDiscoveryServiceClient<Channel>;

async fn connect(options: &XdsOptions) -> Result<Client, XdsError> {
    let address = options.address.to_string();
    let failed = |source| XdsError::Connect {
        address: address.clone(),
        source,
    };
    let endpoint = |uri: &str| {
        Endpoint::from_shared(uri.to_owned())
            .map(|e| {
                e.connect_timeout(CONNECT_TIMEOUT)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
            })
            .map_err(failed)
    };
    let channel = match &options.address {
        XdsAddress::Plain(uri) => endpoint(uri)?.connect().await.map_err(failed)?,
        XdsAddress::Unix(path) => {
            let path = path.clone();
            endpoint("http://localhost")?
                .connect_with_connector(tower_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .map_err(failed)?
        }
        XdsAddress::Tls { uri, host } => {
            let tls = super::tls::client_config(&options.root_cert)?;
            let connector = tokio_rustls::TlsConnector::from(tls);
            let host = host.clone();
            endpoint(uri)?
                .connect_with_connector(tower_fn(move |uri: Uri| {
                    let (connector, host) = (connector.clone(), host.clone());
                    async move {
                        let port = uri.port_u16().unwrap_or(15012);
                        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| {
                            std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
                        })?;
                        Ok::<_, std::io::Error>(TokioIo::new(connector.connect(name, tcp).await?))
                    }
                }))
                .await
                .map_err(failed)?
        }
    };
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX))
}

/// A tower service from a closure (what tonic's custom connectors take).
fn tower_fn<F, Fut, R>(f: F) -> tower_service_fn::ServiceFn<F>
where
    F: FnMut(Uri) -> Fut,
    Fut: std::future::Future<Output = Result<R, std::io::Error>>,
{
    tower_service_fn::ServiceFn(f)
}

mod tower_service_fn {
    use std::task::{Context, Poll};

    pub struct ServiceFn<F>(pub F);

    impl<F, Fut, R> tower_service::Service<super::Uri> for ServiceFn<F>
    where
        F: FnMut(super::Uri) -> Fut,
        Fut: std::future::Future<Output = Result<R, std::io::Error>>,
    {
        type Response = R;
        type Error = std::io::Error;
        type Future = Fut;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, uri: super::Uri) -> Fut {
            (self.0)(uri)
        }
    }
}

/// The authentication istiod expects on the stream.
pub(super) fn authenticate<T>(options: &XdsOptions, request: &mut tonic::Request<T>) {
    let metadata = request.metadata_mut();
    if let Some(path) = &options.token_file {
        match std::fs::read_to_string(path) {
            Ok(token) => match format!("Bearer {}", token.trim()).parse() {
                Ok(value) => {
                    metadata.insert("authorization", value);
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "the token file holds characters a header cannot carry")
                }
            },
            Err(e) => tracing::warn!(path = %path.display(), "no service-account token sent: {e}"),
        }
    }
    if let Some(id) = &options.cluster_id
        && let Ok(value) = id.parse()
    {
        metadata.insert("clusterid", value);
    }
}

/// The cache and everything that follows from it: publishing snapshots, readiness, DNS.
pub(super) struct Core {
    pub cache: Cache,
    store: Arc<ConfigStore>,
    pub status: Arc<XdsStatus>,
    published: bool,
    /// Since when the configuration has been incomplete after a push.
    pending_since: Option<Instant>,
    warming_timeout: Duration,
    generation: u64,
    /// When each DNS cluster is due for resolution.
    dns_due: Option<Instant>,
    /// When to hand memory freed by replaced configurations back to the kernel.
    trim_due: Option<Instant>,
    pub pushes_this_session: u64,
}

impl Core {
    fn new(store: Arc<ConfigStore>, status: Arc<XdsStatus>, warming_timeout: Duration) -> Core {
        Core {
            cache: Cache::default(),
            store,
            status,
            published: false,
            pending_since: None,
            warming_timeout,
            generation: 0,
            dns_due: None,
            trim_due: None,
            pushes_this_session: 0,
        }
    }

    /// After a push was applied to the cache and the subscriptions follow it: drops what
    /// nothing references any more, then publishes a snapshot when the configuration is
    /// complete — or, once a first one is out, when what it waits for has not come within
    /// the warming timeout (Envoy then uses warming clusters without endpoints).
    pub fn after_push(&mut self, received: Instant) {
        self.cache.forget_unwanted();
        self.pushes_this_session += 1;
        if !self.cache.dns_clusters().is_empty() && self.dns_due.is_none() {
            self.dns_due = Some(Instant::now());
        }
        self.try_publish(Some(received));
    }

    fn try_publish(&mut self, received: Option<Instant>) {
        let missing = self.cache.missing();
        let overdue = self
            .pending_since
            .is_some_and(|since| since.elapsed() >= self.warming_timeout);
        let give_up_waiting = self.published && overdue;
        if !missing.is_empty() && !give_up_waiting {
            self.pending_since.get_or_insert_with(Instant::now);
            if !self.published {
                self.status.set_waiting(missing);
            }
            return;
        }
        if !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "xDS: still incomplete after {:?}; applying what arrived",
                self.warming_timeout
            );
        }
        self.pending_since = None;
        self.generation += 1;
        let snapshot = self.cache.assemble(format!("xds-{}", self.generation));
        self.store.replace(snapshot);
        // Off the apply path, and once for a burst of pushes.
        self.trim_due
            .get_or_insert_with(|| Instant::now() + TRIM_DELAY);
        if !self.published {
            let c = self.cache.counts();
            tracing::info!(
                listeners = c.listeners,
                clusters = c.clusters,
                routes = c.routes,
                endpoints = c.endpoints,
                "xDS: first configuration applied"
            );
        }
        self.published = true;
        self.status.set_waiting(Vec::new());
        if let Some(received) = received {
            self.status.applied_in(received.elapsed());
        }
    }

    /// The next moment something is due without a push: the warming timeout or a DNS
    /// refresh.
    pub fn next_deadline(&self) -> Option<Instant> {
        let warming = self
            .pending_since
            .filter(|_| self.published)
            .map(|since| since + self.warming_timeout);
        [warming, self.dns_due, self.trim_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Does what is due at the deadline.
    pub async fn on_deadline(&mut self) {
        let now = Instant::now();
        if self.trim_due.is_some_and(|due| due <= now) {
            self.trim_due = None;
            crate::memory::release_free();
        }
        if self.dns_due.is_some_and(|due| due <= now) {
            let clusters = self.cache.dns_clusters();
            let mut changed = false;
            let mut next = Duration::from_secs(5);
            for (name, targets, refresh) in clusters {
                next = next.min(refresh.max(Duration::from_millis(100)));
                match tokio::time::timeout(Duration::from_secs(5), super::dns::resolve(&targets))
                    .await
                {
                    Ok(Ok(endpoints)) => changed |= self.cache.set_dns(&name, endpoints),
                    Ok(Err(e)) => {
                        tracing::warn!(cluster = %name, "DNS: {e}; keeping the last answer")
                    }
                    Err(_) => {
                        tracing::warn!(cluster = %name, "DNS: no answer in 5s; keeping the last answer")
                    }
                }
            }
            self.dns_due = (!self.cache.dns_clusters().is_empty()).then(|| Instant::now() + next);
            if changed {
                self.try_publish(None);
            }
        }
        if self.pending_since.is_some() {
            self.try_publish(None);
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(super) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "http://127.0.0.1:15010".parse::<XdsAddress>().unwrap(),
            XdsAddress::Plain("http://127.0.0.1:15010".into())
        );
        assert_eq!(
            "istiod.istio-system.svc:15012"
                .parse::<XdsAddress>()
                .unwrap(),
            XdsAddress::Tls {
                uri: "https://istiod.istio-system.svc:15012".into(),
                host: "istiod.istio-system.svc".into()
            }
        );
        assert_eq!(
            "unix:///etc/istio/proxy/XDS".parse::<XdsAddress>().unwrap(),
            XdsAddress::Unix("/etc/istio/proxy/XDS".into())
        );
        for bad in [
            "ftp://x:1",
            "istiod",
            "http://:15010",
            "unix:",
            "https://istiod:port",
        ] {
            assert!(bad.parse::<XdsAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        for (failures, ceiling_ms) in [(1, 500), (2, 1000), (3, 2000), (7, 30_000), (40, 30_000)] {
            let low = backoff(failures, 0);
            let high = backoff(failures, u64::MAX);
            assert_eq!(low, Duration::from_millis(ceiling_ms / 2));
            assert!(
                high < Duration::from_millis(ceiling_ms),
                "{failures}: {high:?}"
            );
        }
    }
}
