use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use std::time::UNIX_EPOCH;

use rustls::pki_types::CertificateDer;

use super::der::*;
use super::usable::{pem_certificates, unix_seconds};
use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn names() -> Vec<String> {
    selfsigned::service_dns_names("skiff-injector", "istio-system")
}

fn generated(validity: Duration) -> Certificates {
    selfsigned::generate(&names(), validity).expect("certificates")
}

fn at(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).expect("after 1970"))
}

fn leaf_der(certs: &Certificates) -> CertificateDer<'static> {
    pem_certificates(&certs.cert_pem, CERT_KEY)
        .expect("PEM")
        .remove(0)
}

fn ca_der(certs: &Certificates) -> CertificateDer<'static> {
    pem_certificates(&certs.ca_pem, CA_KEY)
        .expect("PEM")
        .remove(0)
}

/// A set like `selfsigned::generate` makes, but with chosen validity periods for the CA and
/// the serving certificate.
fn issued(
    ca_window: (SystemTime, SystemTime),
    leaf_window: (SystemTime, SystemTime),
    dns_names: &[String],
) -> Certificates {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::default();
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "test CA");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca_params.not_before = ca_window.0.into();
    ca_params.not_after = ca_window.1.into();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = dns_names
        .iter()
        .map(|n| SanType::DnsName(n.clone().try_into().unwrap()))
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = leaf_window.0.into();
    params.not_after = leaf_window.1.into();
    let cert = params.signed_by(&key, &ca).unwrap();
    Certificates {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

// ---------------------------------------------------------------------------------------
// The usability decision
// ---------------------------------------------------------------------------------------

#[test]
fn freshly_generated_certificates_are_usable_for_their_names_and_any_subset() {
    let certs = generated(DAY);
    assert_eq!(check_usable(&certs, &names(), SystemTime::now()), Ok(()));
    assert_eq!(
        check_usable(&certs, &names()[2..3], SystemTime::now()),
        Ok(())
    );
    assert_eq!(check_usable(&certs, &[], SystemTime::now()), Ok(()));
}

#[test]
fn a_name_the_certificate_lacks_makes_it_unusable() {
    let certs = generated(DAY);
    let mut wanted = names();
    wanted.push("skiff-injector.other-namespace.svc".to_owned());
    assert_eq!(
        check_usable(&certs, &wanted, SystemTime::now()),
        Err(Unusable::MissingDnsName {
            name: "skiff-injector.other-namespace.svc".to_owned()
        })
    );
    // Certificates made for another namespace's Service cover none of ours.
    let theirs = selfsigned::generate(
        &selfsigned::service_dns_names("skiff-injector", "elsewhere"),
        DAY,
    )
    .unwrap();
    assert!(matches!(
        check_usable(&theirs, &names(), SystemTime::now()),
        Err(Unusable::MissingDnsName { .. })
    ));
}

#[test]
fn usable_until_a_third_of_the_lifetime_is_left_then_renewed() {
    let certs = generated(3 * HOUR);
    let (from, until) = validity(&leaf_der(&certs)).expect("validity");
    let last_usable = until - (until - from) / 3;
    assert_eq!(check_usable(&certs, &names(), at(last_usable)), Ok(()));
    let err = check_usable(&certs, &names(), at(last_usable + 1)).unwrap_err();
    assert!(
        matches!(
            &err,
            Unusable::Expiring { which: "serving certificate", not_after, .. }
                if *not_after == format_time(until)
        ),
        "{err:?}"
    );
    // Long expired: the same answer.
    assert!(matches!(
        check_usable(&certs, &names(), at(until + 86_400)),
        Err(Unusable::Expiring { .. })
    ));
}

#[test]
fn a_certificate_that_is_not_valid_yet_is_unusable() {
    let certs = generated(DAY);
    let (from, _) = validity(&leaf_der(&certs)).unwrap();
    assert_eq!(check_usable(&certs, &names(), at(from)), Ok(()));
    assert_eq!(
        check_usable(&certs, &names(), at(from - 1)),
        Err(Unusable::NotYetValid {
            which: "serving certificate",
            not_before: format_time(from),
        })
    );
}

#[test]
fn a_ca_that_expires_before_the_renewal_point_is_unusable() {
    let now = SystemTime::now();
    let certs = issued(
        (now - HOUR, now + HOUR),
        (now - HOUR, now + 30 * DAY),
        &names(),
    );
    assert!(matches!(
        check_usable(&certs, &names(), now),
        Err(Unusable::Expiring {
            which: "CA certificate",
            ..
        })
    ));
    // With a CA that lives as long, the same serving certificate is fine.
    let certs = issued(
        (now - HOUR, now + 30 * DAY),
        (now - HOUR, now + 30 * DAY),
        &names(),
    );
    assert_eq!(check_usable(&certs, &names(), now), Ok(()));
}

#[test]
fn dates_after_2049_are_read_too() {
    // X.509 switches from UTCTime to GeneralizedTime in 2050.
    let from = at(days_from_civil(2049, 12, 31) * 86_400);
    let until = at(days_from_civil(2061, 3, 1) * 86_400 + 3_723);
    let certs = issued((from, until), (from, until), &names());
    let expected = (unix_seconds(from), unix_seconds(until));
    assert_eq!(validity(&leaf_der(&certs)), Some(expected));
    assert_eq!(validity(&ca_der(&certs)), Some(expected));
    assert_eq!(check_usable(&certs, &names(), at(expected.0 + 60)), Ok(()));
}

#[test]
fn a_serving_certificate_from_another_ca_is_unusable() {
    let ours = generated(DAY);
    let theirs = generated(DAY);
    let mixed = Certificates {
        ca_pem: theirs.ca_pem,
        ..ours
    };
    assert!(matches!(
        check_usable(&mixed, &names(), SystemTime::now()),
        Err(Unusable::NotSignedByCa { .. })
    ));
}

#[test]
fn the_ca_itself_is_not_a_serving_certificate() {
    let certs = generated(DAY);
    let ca_as_leaf = Certificates {
        cert_pem: certs.ca_pem.clone(),
        ..certs
    };
    assert!(matches!(
        check_usable(&ca_as_leaf, &[], SystemTime::now()),
        Err(Unusable::NotSignedByCa { .. })
    ));
}

#[test]
fn a_key_of_another_certificate_is_unusable() {
    let ours = generated(DAY);
    let theirs = generated(DAY);
    let mixed = Certificates {
        key_pem: theirs.key_pem,
        ..ours
    };
    assert!(matches!(
        check_usable(&mixed, &names(), SystemTime::now()),
        Err(Unusable::KeyMismatch { .. })
    ));
}

#[test]
fn malformed_pem_is_unusable_and_names_the_key() {
    let good = generated(DAY);
    let now = SystemTime::now();
    let cases = [
        (
            Certificates {
                ca_pem: "garbage".into(),
                ..good.clone()
            },
            CA_KEY,
        ),
        (
            Certificates {
                ca_pem: format!("{}{}", good.ca_pem, good.key_pem),
                ..good.clone()
            },
            CA_KEY,
        ),
        (
            Certificates {
                ca_pem: format!("{}{}", good.ca_pem, good.ca_pem),
                ..good.clone()
            },
            CA_KEY,
        ),
        (
            Certificates {
                cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                ..good.clone()
            },
            CERT_KEY,
        ),
        (
            Certificates {
                cert_pem: String::new(),
                ..good.clone()
            },
            CERT_KEY,
        ),
        (
            Certificates {
                key_pem: good.cert_pem.clone(),
                ..good.clone()
            },
            KEY_KEY,
        ),
    ];
    for (certs, key) in cases {
        match check_usable(&certs, &names(), now) {
            Err(Unusable::Malformed { key: got, .. }) => assert_eq!(got, key, "{certs:?}"),
            other => panic!("{key}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn the_messages_say_what_is_wrong() {
    let message = Unusable::Expiring {
        which: "serving certificate",
        not_after: format_time(0),
        needed_until: format_time(86_400),
    }
    .to_string();
    assert_eq!(
        message,
        "the serving certificate expires at 1970-01-01T00:00:00Z, but must stay valid until \
         1970-01-02T00:00:00Z (a third of the serving certificate's lifetime from now)"
    );
    assert_eq!(
        Unusable::Missing { key: KEY_KEY }.to_string(),
        "it has no data key \"tls.key\""
    );
}

// ---------------------------------------------------------------------------------------
// The Secret
// ---------------------------------------------------------------------------------------

#[test]
fn a_new_secret_holds_the_three_keys_as_kubernetes_io_tls() {
    let certs = generated(DAY);
    let secret = new_secret("skiff-injector-certs", &certs);
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("skiff-injector-certs")
    );
    assert_eq!(secret.metadata.resource_version, None);
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.metadata.labels,
        Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "skiff-injector".to_owned()
        )]))
    );
    let data = secret.data.as_ref().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    assert_eq!(certificates_from_secret(&secret), Ok(certs));
}

#[test]
fn a_replacement_keeps_metadata_type_and_other_keys() {
    let mut existing = new_secret("certs", &generated(DAY));
    existing.type_ = Some("Opaque".to_owned());
    existing.metadata.resource_version = Some("42".to_owned());
    existing.metadata.annotations = Some(BTreeMap::from([("a".to_owned(), "b".to_owned())]));
    existing
        .data
        .as_mut()
        .unwrap()
        .insert("extra".to_owned(), ByteString(b"kept".to_vec()));
    let certs = generated(DAY);
    let replaced = replacement(existing.clone(), &certs);
    assert_eq!(replaced.metadata, existing.metadata);
    assert_eq!(replaced.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        replaced.data.as_ref().unwrap()["extra"],
        ByteString(b"kept".to_vec())
    );
    assert_eq!(certificates_from_secret(&replaced), Ok(certs.clone()));

    let empty = Secret {
        metadata: ObjectMeta {
            name: Some("certs".to_owned()),
            resource_version: Some("7".to_owned()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    assert_eq!(
        certificates_from_secret(&replacement(empty, &certs)),
        Ok(certs)
    );
}

#[test]
fn reading_a_secret_without_the_keys_or_with_binary_data() {
    assert_eq!(
        certificates_from_secret(&Secret::default()),
        Err(Unusable::Missing { key: CA_KEY })
    );
    let mut secret = new_secret("certs", &generated(DAY));
    secret.data.as_mut().unwrap().remove(KEY_KEY);
    assert_eq!(
        certificates_from_secret(&secret),
        Err(Unusable::Missing { key: KEY_KEY })
    );
    secret
        .data
        .as_mut()
        .unwrap()
        .insert(KEY_KEY.to_owned(), ByteString(vec![0xff, 0xfe]));
    assert!(matches!(
        certificates_from_secret(&secret),
        Err(Unusable::Malformed { key: KEY_KEY, .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Errors and arguments
// ---------------------------------------------------------------------------------------

fn secret_ref() -> SecretRef {
    SecretRef {
        namespace: "skiff-system".to_owned(),
        name: "skiff-injector-certs".to_owned(),
    }
}

fn api_error(code: u16, reason: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure("the message", reason).with_code(code),
    ))
}

#[test]
fn forbidden_names_the_rbac_that_is_needed() {
    let err = classify(&secret_ref(), Verb::Get, api_error(403, "Forbidden")).unwrap_err();
    assert!(matches!(
        err,
        CertStoreError::Forbidden {
            verb: Verb::Get,
            ..
        }
    ));
    let message = err.to_string();
    for needle in [
        "to get Secret skiff-system/skiff-injector-certs",
        "403 Forbidden: the message",
        "Role in namespace skiff-system",
        "get and update on secrets with resourceNames [\"skiff-injector-certs\"]",
        "create on secrets",
        "RoleBinding",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[test]
fn server_errors_and_throttling_are_retried_other_refusals_are_not() {
    for code in [429, 500, 503, 504] {
        assert!(
            matches!(
                classify(&secret_ref(), Verb::Create, api_error(code, "x")),
                Ok(Outcome::Transient(_))
            ),
            "{code}"
        );
    }
    assert!(matches!(
        classify(
            &secret_ref(),
            Verb::Get,
            kube::Error::LinesCodecMaxLineLengthExceeded
        ),
        Ok(Outcome::Transient(_))
    ));
    assert!(matches!(
        classify(&secret_ref(), Verb::Get, api_error(401, "Unauthorized")),
        Err(CertStoreError::Unauthorized { .. })
    ));
    let err = classify(&secret_ref(), Verb::Update, api_error(422, "Invalid")).unwrap_err();
    assert!(
        err.to_string()
            .contains("kubectl -n skiff-system delete secret skiff-injector-certs"),
        "{err}"
    );
    let err = classify(&secret_ref(), Verb::Create, api_error(404, "NotFound")).unwrap_err();
    assert!(
        err.to_string().contains("namespace skiff-system exists"),
        "{err}"
    );
}

#[test]
fn namespace_names() {
    for good in ["a", "skiff-system", "ns1", &"a".repeat(63)] {
        assert!(is_namespace_name(good), "{good}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "A",
        "a.b",
        "a/b",
        "a b",
        "..",
        &"a".repeat(64),
    ] {
        assert!(!is_namespace_name(bad), "{bad}");
    }
}

#[test]
fn retry_options_are_checked() {
    assert!(RetryOptions::default().validate().is_ok());
    let cases = [
        RetryOptions {
            attempts: 0,
            ..RetryOptions::default()
        },
        RetryOptions {
            backoff_initial: Duration::ZERO,
            ..RetryOptions::default()
        },
        RetryOptions {
            backoff_max: Duration::from_millis(1),
            ..RetryOptions::default()
        },
        RetryOptions {
            backoff_max: cabundle::MAX_INTERVAL + Duration::from_secs(1),
            ..RetryOptions::default()
        },
    ];
    for options in cases {
        assert!(
            matches!(options.validate(), Err(CertStoreError::InvalidRetry { .. })),
            "{options:?}"
        );
    }
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_request() {
    // Nothing listens there: a request would fail, be retried, and end in GaveUp.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = cabundle::client_for(config).await.unwrap();
    let call = |namespace: &'static str, name: &'static str, names: Vec<String>| {
        let client = client.clone();
        async move {
            shared_certificates(client, namespace, name, &names, DAY)
                .await
                .unwrap_err()
        }
    };
    assert!(matches!(
        call("Skiff", "certs", names()).await,
        CertStoreError::InvalidNamespace { .. }
    ));
    assert!(matches!(
        call("skiff", "../certs", names()).await,
        CertStoreError::InvalidName { .. }
    ));
    assert!(matches!(
        call("skiff", "certs", Vec::new()).await,
        CertStoreError::Generate {
            source: CertError::NoDnsNames,
            ..
        }
    ));
    assert!(matches!(
        call("skiff", "certs", vec!["10.0.0.1".to_owned()]).await,
        CertStoreError::Generate {
            source: CertError::InvalidDnsName { .. },
            ..
        }
    ));
    let err = shared_certificates(client, "skiff", "certs", &names(), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CertStoreError::Generate {
            source: CertError::InvalidValidity { .. },
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------
// DER and dates
// ---------------------------------------------------------------------------------------

#[test]
fn der_times() {
    let utc = |text: &str| der_time(DER_UTC_TIME, text.as_bytes());
    let generalized = |text: &str| der_time(DER_GENERALIZED_TIME, text.as_bytes());
    assert_eq!(utc("700101000000Z"), Some(0));
    assert_eq!(
        utc("491231235959Z").map(format_time).as_deref(),
        Some("2049-12-31T23:59:59Z")
    );
    assert_eq!(
        utc("500101000000Z").map(format_time).as_deref(),
        Some("1950-01-01T00:00:00Z")
    );
    assert_eq!(generalized("20000229000000Z"), Some(951_782_400));
    assert_eq!(
        generalized("99991231235959Z").map(format_time).as_deref(),
        Some("9999-12-31T23:59:59Z")
    );
    for bad in [
        "20230229000000Z", // not a leap year
        "21000229000000Z", // nor is 2100
        "20240431000000Z",
        "20241301000000Z",
        "20240001000000Z",
        "20240100000000Z",
        "20240101240000Z",
        "20240101006000Z",
        "20240101000060Z",
        "20240101000000",
        "20240101000000+",
        "2024010100000Z",
        "2024O101000000Z",
        "202401010000000Z",
    ] {
        assert_eq!(generalized(bad), None, "{bad}");
    }
    assert_eq!(
        utc("20000229000000Z"),
        None,
        "a GeneralizedTime under the UTCTime tag"
    );
    assert_eq!(generalized("000229000000Z"), None);
    assert_eq!(der_time(DER_SEQUENCE, b"700101000000Z"), None);
}

#[test]
fn der_lengths() {
    assert_eq!(
        der_next(&[0x02, 0x01, 0x07, 0xff]),
        Some((0x02, &[7u8][..], &[0xffu8][..]))
    );
    let mut long = vec![0x04, 0x82, 0x01, 0x00];
    long.extend(std::iter::repeat_n(0u8, 256));
    assert_eq!(
        der_next(&long).map(|(_, c, r)| (c.len(), r.len())),
        Some((256, 0))
    );
    assert_eq!(der_next(&[]), None);
    assert_eq!(der_next(&[0x02]), None);
    assert_eq!(
        der_next(&[0x02, 0x02, 0x00]),
        None,
        "shorter than its length"
    );
    assert_eq!(
        der_next(&[0x30, 0x80, 0x00, 0x00]),
        None,
        "indefinite length"
    );
    assert_eq!(
        der_next(&[0x30, 0x85, 1, 0, 0, 0, 0]),
        None,
        "five length bytes"
    );
    assert_eq!(der_next(&[0x1f, 0x01, 0x00]), None, "multi-byte tag");
    assert_eq!(der_next(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
}

#[test]
fn days_and_dates_convert_both_ways() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(days_from_civil(1969, 12, 31), -1);
    for days in (-800_000..3_000_000).step_by(997) {
        let (y, m, d) = civil_from_days(days);
        assert!((1..=12).contains(&m) && (1..=days_in_month(y, m)).contains(&d));
        assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
    }
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
}

#[test]
fn the_validity_of_a_generated_certificate() {
    let before = unix_seconds(SystemTime::now());
    let certs = generated(DAY);
    let after = unix_seconds(SystemTime::now());
    for der in [leaf_der(&certs), ca_der(&certs)] {
        let (from, until) = validity(&der).expect("validity");
        // selfsigned moves notBefore an hour into the past for clock skew.
        assert!(
            (before - 3_600 - 1..=after - 3_600).contains(&from),
            "{from}"
        );
        assert!(
            (before + 86_400 - 1..=after + 86_400).contains(&until),
            "{until}"
        );
    }
}

proptest! {
    /// Whatever the bytes, reading a validity never panics; cut or corrupted certificates
    /// make `check_usable` answer, not crash.
    #[test]
    fn validity_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = validity(&bytes);
    }

    #[test]
    fn corrupted_certificates_are_unusable_not_fatal(cut in 0usize..2000, flip in 0usize..2000, bit in 0u8..8) {
        let certs = generated(DAY);
        let mut der = leaf_der(&certs).to_vec();
        let len = der.len();
        der[flip % len] ^= 1 << bit;
        der.truncate(cut % (len + 1));
        let _ = validity(&der);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
        );
        let corrupted = Certificates { cert_pem: pem, ..certs };
        let _ = check_usable(&corrupted, &names(), SystemTime::now());
    }
}
