//! [`restore`]: the inverse of [`super::rewrite`], for uninject and for re-injection.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec};

use super::saved::{Restored, SavedProber};
use super::{PROXY_CONTAINER, ProbeError, Slot};

/// Puts back every probe and hook that `probers_json` (the value of
/// `ISTIO_KUBE_APP_PROBERS`) saved, with the port name as written when the JSON carries
/// `skiffPortName`. A slot is put back only while it still is the rewritten probe, an
/// httpGet on the saved path; an entry whose container or slot is gone, or was changed
/// since, is skipped, because the pod's current probe is what its owner wants. Malformed
/// JSON is an error, and then `spec` is left unchanged.
pub fn restore(spec: &mut PodSpec, probers_json: &str) -> Result<(), ProbeError> {
    let saved: BTreeMap<String, SavedProber> =
        serde_json::from_str(probers_json).map_err(|e| ProbeError::SavedJson {
            reason: e.to_string(),
        })?;
    let mut out = spec.clone();
    for (path, prober) in saved {
        let Some((container, slot)) = Slot::parse_path(&path) else {
            return Err(ProbeError::SavedPath { path });
        };
        let handler = prober
            .into_restored()
            .map_err(|reason| ProbeError::SavedProber {
                path: path.clone(),
                reason,
            })?;
        if slot.is_hook() && matches!(handler, Restored::Grpc(_)) {
            return Err(ProbeError::SavedProber {
                path,
                reason: "is a grpc action, which a lifecycle hook cannot have".to_owned(),
            });
        }
        let candidates = out
            .init_containers
            .iter_mut()
            .flatten()
            .chain(out.containers.iter_mut())
            .filter(|c| c.name == container && c.name != PROXY_CONTAINER);
        for c in candidates {
            if put_back(c, slot, &path, &handler) {
                break;
            }
        }
    }
    *spec = out;
    Ok(())
}

/// Whether the slot was still the rewritten probe and has been put back.
fn put_back(container: &mut Container, slot: Slot, path: &str, handler: &Restored) -> bool {
    let is_ours = |http_get: &Option<HTTPGetAction>| {
        http_get
            .as_ref()
            .is_some_and(|h| h.path.as_deref() == Some(path))
    };
    if slot.is_hook() {
        let Some(lifecycle) = &mut container.lifecycle else {
            return false;
        };
        let hook = match slot {
            Slot::PostStart => &mut lifecycle.post_start,
            _ => &mut lifecycle.pre_stop,
        };
        let Some(hook) = hook.as_mut().filter(|h| is_ours(&h.http_get)) else {
            return false;
        };
        match handler {
            Restored::Http(h) => hook.http_get = Some(h.clone()),
            Restored::Tcp(t) => {
                hook.http_get = None;
                hook.tcp_socket = Some(t.clone());
            }
            Restored::Grpc(_) => return false,
        }
        return true;
    }
    let probe = match slot {
        Slot::Readiness => &mut container.readiness_probe,
        Slot::Liveness => &mut container.liveness_probe,
        _ => &mut container.startup_probe,
    };
    let Some(probe) = probe.as_mut().filter(|p| is_ours(&p.http_get)) else {
        return false;
    };
    match handler {
        Restored::Http(h) => probe.http_get = Some(h.clone()),
        Restored::Tcp(t) => {
            probe.http_get = None;
            probe.tcp_socket = Some(t.clone());
        }
        Restored::Grpc(g) => {
            probe.http_get = None;
            probe.grpc = Some(g.clone());
        }
    }
    true
}
