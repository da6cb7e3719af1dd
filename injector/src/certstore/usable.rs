//! Whether the certificates found in the shared Secret can be used: the decision behind
//! [`super::shared_certificates`]'s "use it or replace it". Pure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use rustls::RootCertStore;
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::pki_types::pem::{PemObject as _, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use thiserror::Error;

use super::der::{format_time, validity};
use super::{CA_KEY, CERT_KEY, KEY_KEY};
use crate::selfsigned::Certificates;

/// Why the certificates in a Secret are not used (they are then replaced). Shown in logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unusable {
    #[error("it has no data key {key:?}")]
    Missing { key: &'static str },
    #[error("{key} is not usable: {reason}")]
    Malformed { key: &'static str, reason: String },
    #[error(
        "the certificate in tls.crt is not a serving certificate signed by the CA in ca.crt \
         ({reason})"
    )]
    NotSignedByCa { reason: String },
    #[error("tls.key is not the key of the certificate in tls.crt ({reason})")]
    KeyMismatch { reason: String },
    #[error("the serving certificate does not cover the DNS name {name:?}")]
    MissingDnsName { name: String },
    #[error("the {which} is not valid before {not_before}")]
    NotYetValid {
        which: &'static str,
        not_before: String,
    },
    #[error(
        "the {which} expires at {not_after}, but must stay valid until {needed_until} (a \
         third of the serving certificate's lifetime from now)"
    )]
    Expiring {
        which: &'static str,
        not_after: String,
        needed_until: String,
    },
}

/// The three PEM texts of a Secret, not yet checked (see [`check_usable`]).
pub fn certificates_from_secret(secret: &Secret) -> Result<Certificates, Unusable> {
    let text = |key: &'static str| {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or(Unusable::Missing { key })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| Unusable::Malformed {
            key,
            reason: "not text, so not PEM".to_owned(),
        })
    };
    Ok(Certificates {
        ca_pem: text(CA_KEY)?,
        cert_pem: text(CERT_KEY)?,
        key_pem: text(KEY_KEY)?,
    })
}

/// Whether `certs` can serve the webhook for `dns_names` from `now` on: `ca_pem` is one CA
/// certificate; the first certificate of `cert_pem` is signed by it (through the others,
/// if any), may serve TLS and covers every name; `key_pem` is its key; and both
/// certificates are valid from `now` until a third of the serving certificate's lifetime
/// later.
pub fn check_usable(
    certs: &Certificates,
    dns_names: &[String],
    now: SystemTime,
) -> Result<(), Unusable> {
    let ca = single(pem_certificates(&certs.ca_pem, CA_KEY)?)?;
    let chain = pem_certificates(&certs.cert_pem, CERT_KEY)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(malformed(CERT_KEY, "it holds no certificate"));
    };
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes())
        .map_err(|e| malformed(KEY_KEY, &format!("no PEM private key ({e})")))?;

    // Time first: an expired certificate would fail the chain check below with a less
    // helpful message.
    let (leaf_from, leaf_until) =
        validity(leaf).ok_or_else(|| malformed(CERT_KEY, "its validity period cannot be read"))?;
    let (ca_from, ca_until) =
        validity(&ca).ok_or_else(|| malformed(CA_KEY, "its validity period cannot be read"))?;
    if leaf_until <= leaf_from {
        return Err(malformed(CERT_KEY, "it expires before it becomes valid"));
    }
    let now = unix_seconds(now);
    let needed_until = now.saturating_add((leaf_until - leaf_from) / 3);
    for (which, from, until) in [
        ("serving certificate", leaf_from, leaf_until),
        ("CA certificate", ca_from, ca_until),
    ] {
        if now < from {
            return Err(Unusable::NotYetValid {
                which,
                not_before: format_time(from),
            });
        }
        if until < needed_until {
            return Err(Unusable::Expiring {
                which,
                not_after: format_time(until),
                needed_until: format_time(needed_until),
            });
        }
    }

    // The chain and the names, as a TLS client (webpki) would check them.
    let provider = rustls::crypto::ring::default_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| malformed(CA_KEY, &format!("not a usable CA certificate ({e})")))?;
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| malformed(CERT_KEY, &format!("not a usable certificate ({e})")))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        intermediates,
        at,
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| Unusable::NotSignedByCa {
        reason: e.to_string(),
    })?;
    for name in dns_names {
        let covered = ServerName::try_from(name.as_str())
            .ok()
            .is_some_and(|server_name| verify_server_name(&parsed, &server_name).is_ok());
        if !covered {
            return Err(Unusable::MissingDnsName { name: name.clone() });
        }
    }

    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| malformed(KEY_KEY, &format!("not a usable private key ({e})")))?;
    CertifiedKey::new(vec![leaf.clone()], signing)
        .keys_match()
        .map_err(|e| Unusable::KeyMismatch {
            reason: e.to_string(),
        })
}

fn malformed(key: &'static str, reason: &str) -> Unusable {
    Unusable::Malformed {
        key,
        reason: reason.to_owned(),
    }
}

/// The certificates of a PEM text that must hold certificates only (a key in `ca.crt`
/// would be published in the caBundle).
pub(super) fn pem_certificates(
    pem: &str,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Unusable> {
    let mut certificates = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section.map_err(|e| malformed(key, &format!("bad PEM ({e})")))? {
            (SectionKind::Certificate, der) => certificates.push(CertificateDer::from(der)),
            (kind, _) => {
                return Err(malformed(
                    key,
                    &format!("it holds a {kind:?} PEM section where only certificates belong"),
                ));
            }
        }
    }
    if certificates.is_empty() {
        return Err(malformed(key, "it holds no PEM certificate"));
    }
    Ok(certificates)
}

fn single(
    mut certificates: Vec<CertificateDer<'static>>,
) -> Result<CertificateDer<'static>, Unusable> {
    match (certificates.pop(), certificates.is_empty()) {
        (Some(only), true) => Ok(only),
        _ => Err(malformed(
            CA_KEY,
            "it must hold exactly one certificate, the injector's CA",
        )),
    }
}

pub(super) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
