use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn names() -> Vec<String> {
    service_dns_names("skiff-injector", "istio-system")
}

fn certs() -> Certificates {
    generate(&names(), 365 * DAY).expect("generate")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn one_cert(pem: &str) -> CertificateDer<'static> {
    let mut certs = pem_certs(pem);
    assert_eq!(certs.len(), 1, "{pem}");
    certs.remove(0)
}

fn roots(ca_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(ca_pem) {
        roots.add(cert).expect("CA usable as trust anchor");
    }
    Arc::new(roots)
}

/// Verifies the serving certificate the way a TLS client trusting only the CA would.
fn verify(certs: &Certificates, name: &str, at: SystemTime) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&certs.ca_pem), provider())
        .build()
        .expect("verifier");
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    let now = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).expect("after 1970"));
    verifier
        .verify_server_cert(&one_cert(&certs.cert_pem), &[], &server_name, &[], now)
        .map(|_| ())
}

// ---- A minimal DER reader, enough to look at the fields rustls does not check. ----

/// Splits one DER element off `input`: (tag, contents, rest).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(input[2]), 3),
        0x82 => (usize::from(input[2]) << 8 | usize::from(input[3]), 4),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    (tag, &input[header..header + len], &input[header + len..])
}

fn elements(mut input: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tag, content, rest) = tlv(input);
        out.push((tag, content));
        input = rest;
    }
    out
}

/// The fields of tbsCertificate: version, serial, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, extensions.
fn tbs(der: &[u8]) -> Vec<(u8, &[u8])> {
    let (_, cert, _) = tlv(der);
    let (_, tbs, _) = tlv(cert);
    elements(tbs)
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_EKU: &[u8] = &[0x55, 0x1d, 0x25];
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

fn name_cn(name: &[u8]) -> String {
    for (_, set) in elements(name) {
        let (_, attr, _) = tlv(set);
        let fields = elements(attr);
        if fields[0].1 == OID_CN {
            return String::from_utf8(fields[1].1.to_vec()).expect("UTF-8 CN");
        }
    }
    panic!("no CN");
}

fn subject_cn(der: &[u8]) -> String {
    name_cn(tbs(der)[5].1)
}

fn issuer_cn(der: &[u8]) -> String {
    name_cn(tbs(der)[3].1)
}

/// The value (inside the OCTET STRING) of the extension with `oid`, if present.
fn extension<'a>(der: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let fields = tbs(der);
    let (_, wrapper) = fields.iter().find(|(tag, _)| *tag == 0xa3)?;
    let (_, list, _) = tlv(wrapper);
    elements(list).into_iter().find_map(|(_, ext)| {
        let parts = elements(ext);
        (parts[0].1 == oid).then(|| parts.last().expect("value").1)
    })
}

/// The key usage bits as the first byte of the BIT STRING (digitalSignature = 0x80,
/// keyCertSign = 0x04).
fn key_usage(der: &[u8]) -> u8 {
    let (tag, bits, _) = tlv(extension(der, OID_KEY_USAGE).expect("keyUsage"));
    assert_eq!(tag, 0x03);
    bits[1]
}

#[test]
fn ca_is_a_ca_that_may_only_sign_certificates() {
    let certs = certs();
    let ca = one_cert(&certs.ca_pem);
    assert_eq!(subject_cn(&ca), CA_COMMON_NAME);
    assert_eq!(issuer_cn(&ca), CA_COMMON_NAME, "self-signed");
    let (_, constraints, _) = tlv(extension(&ca, OID_BASIC_CONSTRAINTS).expect("basicConstraints"));
    let constraints = elements(constraints);
    assert_eq!(constraints[0], (0x01, &[0xff][..]), "cA TRUE");
    assert_eq!(constraints[1], (0x02, &[0x00][..]), "pathLenConstraint 0");
    assert_eq!(key_usage(&ca), 0x04, "keyCertSign only");
}

#[test]
fn serving_cert_is_a_server_leaf_for_exactly_the_names() {
    let certs = certs();
    let leaf = one_cert(&certs.cert_pem);
    assert_eq!(issuer_cn(&leaf), CA_COMMON_NAME);
    assert_eq!(subject_cn(&leaf), "skiff-injector");
    let (_, sans, _) = tlv(extension(&leaf, OID_SAN).expect("subjectAltName"));
    let sans: Vec<String> = elements(sans)
        .into_iter()
        .map(|(tag, name)| {
            assert_eq!(tag, 0x82, "dNSName");
            String::from_utf8(name.to_vec()).expect("ASCII")
        })
        .collect();
    assert_eq!(sans, names());
    let (_, ekus, _) = tlv(extension(&leaf, OID_EKU).expect("extKeyUsage"));
    assert_eq!(elements(ekus), vec![(0x06, OID_SERVER_AUTH)]);
    assert_eq!(key_usage(&leaf), 0x80, "digitalSignature");
    if let Some(constraints) = extension(&leaf, OID_BASIC_CONSTRAINTS) {
        assert_eq!(constraints, &[0x30, 0x00], "cA absent (FALSE)");
    }
}

#[test]
fn serving_cert_chains_to_the_ca_for_each_name_and_no_other() {
    let certs = certs();
    let now = SystemTime::now();
    for name in names() {
        verify(&certs, &name, now).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in [
        "skiff-injector.default.svc",
        "istiod.istio-system.svc",
        "example.com",
    ] {
        let result = verify(&certs, name, now);
        assert!(
            matches!(
                result,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn serving_cert_does_not_chain_to_another_ca() {
    let certs = certs();
    let other = certs_for_other_ca();
    let mixed = Certificates {
        ca_pem: other.ca_pem,
        ..certs
    };
    // Every CA has the same subject, so a verifier finds the other CA as the issuer by name
    // and then rejects the signature; a CA with another name would give UnknownIssuer.
    let result = verify(&mixed, "skiff-injector.istio-system.svc", SystemTime::now());
    assert!(
        matches!(
            result,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer
            ))
        ),
        "{result:?}"
    );
}

fn certs_for_other_ca() -> Certificates {
    let other = certs();
    assert_ne!(other.ca_pem, certs().ca_pem, "every call makes a new CA");
    other
}

#[test]
fn validity_starts_an_hour_ago_and_lasts_as_asked() {
    let certs = generate(&names(), 30 * DAY).unwrap();
    let name = "skiff-injector.istio-system.svc";
    let now = SystemTime::now();
    verify(&certs, name, now - Duration::from_secs(50 * 60)).expect("clock skew allowance");
    verify(&certs, name, now + 29 * DAY).expect("still valid");
    assert!(matches!(
        verify(&certs, name, now - Duration::from_secs(2 * 60 * 60)),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYetContext { .. }
        ))
    ));
    assert!(matches!(
        verify(&certs, name, now + 31 * DAY),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredContext { .. }
        ))
    ));
}

#[test]
fn key_is_pkcs8_and_matches_the_serving_cert() {
    let certs = certs();
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).expect("key PEM");
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
    assert!(certs.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // with_single_cert checks that the key belongs to the certificate.
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pem_certs(&certs.cert_pem), key)
        .expect("key matches certificate");
}

#[test]
fn debug_output_hides_the_key() {
    let certs = certs();
    let text = format!("{certs:?}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(text.contains("<redacted>"));
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    assert!(matches!(generate(&[], DAY), Err(CertError::NoDnsNames)));
    for bad in [
        "",
        "has space.svc",
        "10.96.0.7",
        "::1",
        "ünicode.svc",
        "a..b",
    ] {
        match generate(&[bad.to_owned()], DAY) {
            Err(CertError::InvalidDnsName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    for validity in [
        Duration::ZERO,
        MAX_VALIDITY + Duration::from_secs(1),
        Duration::MAX,
    ] {
        assert!(matches!(
            generate(&names(), validity),
            Err(CertError::InvalidValidity { .. })
        ));
    }
    let message = generate(&["10.96.0.7".to_owned()], DAY)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"10.96.0.7\"") && message.contains("IP address"),
        "{message}"
    );
}

#[test]
fn duplicate_names_appear_once() {
    let twice = vec!["a.svc".to_owned(), "b.svc".to_owned(), "a.svc".to_owned()];
    let certs = generate(&twice, DAY).unwrap();
    let leaf = one_cert(&certs.cert_pem);
    let (_, sans, _) = tlv(extension(&leaf, OID_SAN).unwrap());
    assert_eq!(elements(sans).len(), 2);
}

#[test]
fn service_names_go_from_short_to_fully_qualified() {
    assert_eq!(
        service_dns_names("istiod", "istio-system"),
        [
            "istiod",
            "istiod.istio-system",
            "istiod.istio-system.svc",
            "istiod.istio-system.svc.cluster.local",
        ]
    );
}

/// A TLS client that trusts only `ca_pem` talks to a server using `cert_pem`/`key_pem`,
/// over an in-memory pipe, and exchanges one message each way.
async fn handshake(certs: &Certificates, server_name: &str) -> Result<(), String> {
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pem_certs(&certs.cert_pem),
            PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap(),
        )
        .map_err(|e| e.to_string())?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&certs.ca_pem))
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);

    let server_side = async move {
        let mut tls = acceptor.accept(server_io).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, io::Error>(buf)
    };
    let client_side = async move {
        let mut tls = connector.connect(name, client_io).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        Ok::<_, io::Error>(buf)
    };
    let (server_result, client_result) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(server_side, client_side)
    })
    .await
    .map_err(|_| "handshake timed out".to_owned())?;
    let reply = client_result.map_err(|e| e.to_string())?;
    let request = server_result.map_err(|e| format!("server: {e}"))?;
    assert_eq!((&request, &reply), (b"ping", b"pong"));
    Ok(())
}

#[tokio::test]
async fn tls_handshake_succeeds_for_a_san_and_fails_for_another_name() {
    let certs = certs();
    handshake(&certs, "skiff-injector.istio-system.svc")
        .await
        .expect("handshake for a SAN");
    handshake(&certs, "skiff-injector.istio-system.svc.cluster.local")
        .await
        .expect("handshake for the FQDN");
    let err = handshake(&certs, "skiff-injector.other.svc")
        .await
        .expect_err("a name outside the SANs must fail");
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn tls_handshake_fails_when_the_client_trusts_another_ca() {
    let certs = certs();
    let other = Certificates {
        ca_pem: certs_for_other_ca().ca_pem,
        ..certs
    };
    let err = handshake(&other, "skiff-injector.istio-system.svc")
        .await
        .expect_err("another CA must not be trusted");
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "skiff-selfsigned-{test}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_puts_cert_and_private_key_in_place() {
    let dir = temp_dir("write");
    let first = certs();
    let (cert_path, key_path) = write(&dir, &first).unwrap();
    assert_eq!(cert_path, dir.join("tls.crt"));
    assert_eq!(key_path, dir.join("tls.key"));
    assert_eq!(fs::read_to_string(&cert_path).unwrap(), first.cert_pem);
    assert_eq!(fs::read_to_string(&key_path).unwrap(), first.key_pem);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&cert_path) & 0o600, 0o600);
    assert_eq!(
        dir_entries(&dir),
        ["tls.crt", "tls.key"],
        "no temporary files left"
    );

    // A second write replaces both files, and the key stays private even if the old file was
    // readable by others.
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let second = certs();
    write(&dir, &second).unwrap();
    assert_eq!(fs::read_to_string(&cert_path).unwrap(), second.cert_pem);
    assert_eq!(fs::read_to_string(&key_path).unwrap(), second.key_pem);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(dir_entries(&dir), ["tls.crt", "tls.key"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_replaces_a_stale_temporary_file() {
    let dir = temp_dir("stale");
    let stale = dir.join(format!(".tls.key.{}.tmp", std::process::id()));
    fs::write(&stale, "half a key").unwrap();
    fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();
    let certs = certs();
    let (_, key_path) = write(&dir, &certs).unwrap();
    assert_eq!(fs::read_to_string(&key_path).unwrap(), certs.key_pem);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(dir_entries(&dir), ["tls.crt", "tls.key"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_to_a_missing_directory_names_the_path() {
    let dir = temp_dir("missing").join("does-not-exist");
    let err = write(&dir, &certs()).unwrap_err();
    match &err {
        CertError::Write { path, source } => {
            assert_eq!(path, &dir.join("tls.key"));
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("does-not-exist/tls.key"), "{err}");
    fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}
