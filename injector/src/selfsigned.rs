//! The certificates of `skiff-injector serve --self-signed`: a private CA made at start-up
//! and the webhook's serving certificate signed by it.
//!
//! The API server calls the webhook over HTTPS and trusts only the `caBundle` of the
//! MutatingWebhookConfiguration (spec/injector.md, section 5). Istio fills that bundle with
//! istiod's CA; a cluster without istiod or cert-manager still needs some CA, so the injector
//! can be its own: [`generate`] makes a CA and a serving certificate, [`write`] puts the
//! serving pair where the TLS listener loads it, and [`crate::cabundle`] puts the CA into the
//! webhook configuration.
//!
//! Choices, and why:
//! - The CA's private key is dropped as soon as the serving certificate is signed. Nothing
//!   can then mint another certificate the API server would trust, and there is no CA key
//!   to store or leak. The price is that a CA cannot be reused to sign a second serving
//!   certificate: replicas that must agree on one CA share the whole set instead (the CA
//!   certificate, the serving certificate and its key, through a Secret: see
//!   [`crate::certstore`]), and renewing means a new CA and a re-patched bundle.
//! - `cert_pem` holds the serving certificate alone, without the CA. The only client is the
//!   API server, which already has the CA as its trust anchor from the caBundle; there is no
//!   intermediate to send, and a copy of the root would add about 500 bytes to every
//!   handshake without helping any client build a path (RFC 8446, section 4.4.2, lets the
//!   server omit it).
//! - Both keys are ECDSA P-256: every API server version and rustls accept it, and it is
//!   quick to generate at start-up.
//! - The certificates are valid from one hour before now, so an API server whose clock is a
//!   little behind the injector's does not reject a certificate "not yet valid".
//! - The CA may sign only end-entity certificates (path length 0): it has no other purpose.
//!
//! Everything except [`write`] is pure: no files, no network.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// Subject common name of the CA; shows up in the API server's TLS errors, so a user can tell
/// the injector's own CA from istiod's or cert-manager's.
pub const CA_COMMON_NAME: &str = "skiff-injector-ca";
/// File name of the serving certificate in the directory given to [`write`] (the name a
/// `kubernetes.io/tls` Secret uses, so the same reader works for both).
pub const CERT_FILE: &str = "tls.crt";
/// File name of the serving key; written with mode 0600.
pub const KEY_FILE: &str = "tls.key";
/// How far `notBefore` is moved into the past to absorb clock skew between nodes.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);
/// Longest accepted validity. X.509 dates end at year 9999 and a larger value is surely a
/// unit mistake (seconds given as days, say), so it is refused rather than clamped.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A CA and a serving certificate signed by it, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificates {
    /// The CA certificate: what goes into the webhook configuration's `caBundle`.
    pub ca_pem: String,
    /// The serving certificate alone (see the module documentation for why not the chain).
    pub cert_pem: String,
    /// The serving certificate's private key, PKCS#8.
    pub key_pem: String,
}

/// Hand-written so that logging a `Certificates` (e.g. with `{:?}` in a tracing field)
/// cannot leak the private key.
impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Why the certificates could not be made or written.
#[derive(Debug, Error)]
pub enum CertError {
    #[error(
        "self-signed certificate: no DNS names given; pass the names the API server uses to \
         reach the webhook (see service_dns_names)"
    )]
    NoDnsNames,
    #[error(
        "self-signed certificate: DNS name {name:?} is not a valid DNS name ({reason}); use \
         the webhook Service's names, e.g. \"skiff-injector.istio-system.svc\""
    )]
    InvalidDnsName { name: String, reason: String },
    #[error(
        "self-signed certificate: validity {validity:?} is out of range; use a duration \
         greater than zero and at most 100 years"
    )]
    InvalidValidity { validity: Duration },
    #[error("self-signed certificate: could not create the {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "self-signed certificate: could not write {path}: {source}; the directory must exist \
         and be writable by the injector (e.g. an emptyDir volume)"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Makes a fresh CA and a serving certificate for exactly `dns_names` (as subject alternative
/// names; the first one is also the subject's common name, for people reading it), valid
/// for `validity` from now.
///
/// Duplicate names are dropped. Each name must be a syntactically valid DNS name; an IP
/// address is refused, since the API server reaches the webhook through its Service name.
pub fn generate(dns_names: &[String], validity: Duration) -> Result<Certificates, CertError> {
    let sans = subject_alt_names(dns_names)?;
    if validity.is_zero() || validity > MAX_VALIDITY {
        return Err(CertError::InvalidValidity { validity });
    }
    let now = SystemTime::now();
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    let not_after = now
        .checked_add(validity)
        .ok_or(CertError::InvalidValidity { validity })?;

    let ca_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CertError::Generate {
            what: "CA key",
            source,
        })?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = common_name(CA_COMMON_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca_params.not_before = not_before.into();
    ca_params.not_after = not_after.into();
    let ca =
        CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CertError::Generate {
            what: "serving key",
            source,
        })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&dns_names[0]);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|source| CertError::Generate {
            what: "serving certificate",
            source,
        })?;

    Ok(Certificates {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The names under which the API server may reach `service` in `namespace`, shortest first:
/// the API server itself uses `<svc>.<ns>.svc`, the others cover clients inside the cluster
/// and match what Istio puts into istiod's certificate.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Writes the serving certificate to `dir/tls.crt` and its key to `dir/tls.key` (mode 0600),
/// each through a temporary file in `dir` that is then renamed over the target, so that a
/// reader sees either the old or the new file, never part of one.
///
/// The key is renamed first and the certificate last: a reader that reloads when `tls.crt`
/// changes then always finds the matching key. A reader that happens to load between the
/// two renames can still see a new key with the old certificate; it should treat a key
/// mismatch as "try again shortly", not as a fatal error.
///
/// Returns the paths of the certificate and of the key. `dir` must exist; only one writer per
/// directory is supported.
pub fn write(dir: &Path, certs: &Certificates) -> Result<(PathBuf, PathBuf), CertError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    write_atomically(&key_path, certs.key_pem.as_bytes(), 0o600)?;
    write_atomically(&cert_path, certs.cert_pem.as_bytes(), 0o644)?;
    // Make the renames durable; a failure here only risks losing the files on a crash, and
    // some filesystems cannot sync a directory at all, so it is not an error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((cert_path, key_path))
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // In a container the pid is often 1 on every start, so a temporary file left behind by a
    // crash is removed first; `create_new` below then guarantees the mode is ours.
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// Checks `names` and `validity` as [`generate`] does, without generating anything: for
/// callers that may not need to generate at all (a stored certificate may still be good)
/// but must refuse a bad configuration either way.
pub(crate) fn check_inputs(names: &[String], validity: Duration) -> Result<(), CertError> {
    subject_alt_names(names)?;
    if validity.is_zero() || validity > MAX_VALIDITY {
        return Err(CertError::InvalidValidity { validity });
    }
    Ok(())
}

/// Validates `names` and turns them into DNS subject alternative names, first occurrence
/// kept.
fn subject_alt_names(names: &[String]) -> Result<Vec<SanType>, CertError> {
    if names.is_empty() {
        return Err(CertError::NoDnsNames);
    }
    let mut seen: Vec<&str> = Vec::with_capacity(names.len());
    let mut sans = Vec::with_capacity(names.len());
    for name in names {
        let invalid = |reason: String| CertError::InvalidDnsName {
            name: name.clone(),
            reason,
        };
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid("an IP address, not a DNS name".to_owned()));
        }
        rustls::pki_types::DnsName::try_from(name.as_str()).map_err(|e| invalid(e.to_string()))?;
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| invalid(e.to_string()))?;
        sans.push(SanType::DnsName(ia5));
    }
    Ok(sans)
}
