//! What the two ADS variants share: the subscriptions to named resources, and the shape of
//! a NACK.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::google::rpc::Status;
use tokio::sync::mpsc;

use super::cache::Rejection;
use super::client::{Core, XdsError, until};

/// The names subscribed to, per type (route tables and endpoints; listeners and clusters
/// are wildcard subscriptions).
#[derive(Default)]
pub(super) struct Subscriptions {
    by_type: HashMap<&'static str, BTreeSet<String>>,
}

impl Subscriptions {
    /// Makes `wanted` the subscription of `kind`; returns the names to subscribe to and to
    /// drop, or None when nothing changed.
    pub fn update(
        &mut self,
        kind: &'static str,
        wanted: &BTreeSet<String>,
    ) -> Option<(Vec<String>, Vec<String>)> {
        let current = self.by_type.entry(kind).or_default();
        let subscribe: Vec<String> = wanted.difference(current).cloned().collect();
        let unsubscribe: Vec<String> = current.difference(wanted).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        *current = wanted.clone();
        Some((subscribe, unsubscribe))
    }

    pub fn names(&self, kind: &str) -> Vec<String> {
        self.by_type
            .get(kind)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Runs a stream to its end: each response goes through `handle`, whose requests (the ACK
/// or NACK and new subscriptions) are sent before the next response is read; between
/// responses, what falls due without a push (warming timeout, DNS refresh) is done.
pub(super) async fn drive<Req, Resp>(
    mut responses: tonic::Streaming<Resp>,
    requests: &mpsc::Sender<Req>,
    core: &mut Core,
    mut handle: impl FnMut(&mut Core, Resp) -> Vec<Req>,
) -> Result<(), XdsError> {
    loop {
        let response = tokio::select! {
            message = responses.message() => match message? {
                Some(r) => r,
                None => return Ok(()),
            },
            _ = until(core.next_deadline()) => {
                core.on_deadline().await;
                continue;
            }
        };
        for request in handle(core, response) {
            requests.send(request).await.map_err(|_| XdsError::Closed)?;
        }
    }
}

/// `error_detail` of a NACK: gRPC's INVALID_ARGUMENT with the reasons.
pub(super) fn nack_status(message: String) -> Status {
    Status {
        code: 3,
        message,
        details: Vec::new(),
    }
}

/// Every refused resource with its field and reason, one after the other.
pub(super) fn rejection_message(rejections: &[Rejection]) -> String {
    let parts: Vec<String> = rejections.iter().map(|r| r.to_string()).collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_report_changes_only() {
        let mut s = Subscriptions::default();
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            s.update("r", &set(&["80", "9080"])),
            Some((vec!["80".into(), "9080".into()], vec![]))
        );
        assert_eq!(s.update("r", &set(&["80", "9080"])), None);
        assert_eq!(
            s.update("r", &set(&["9080", "15010"])),
            Some((vec!["15010".into()], vec!["80".into()]))
        );
        assert_eq!(s.names("r"), ["15010", "9080"]);
        assert_eq!(
            s.update("r", &set(&[])),
            Some((vec![], vec!["15010".into(), "9080".into()]))
        );
    }
}
