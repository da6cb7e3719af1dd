use super::*;

/// A ClientHello built by hand from RFC 8446's layout, with the given SNI and ALPN.
fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let mut ext = Vec::new();
    // server_name (0): list length, type 0, name length, name.
    let name = sni.as_bytes();
    let mut sn = Vec::new();
    sn.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sn.push(0);
    sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sn.extend_from_slice(name);
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&(sn.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sn);
    // A padding-like unknown extension in between, to be skipped.
    ext.extend_from_slice(&[0x00, 0x15, 0x00, 0x03, 0, 0, 0]);
    // application_layer_protocol_negotiation (16).
    let mut list = Vec::new();
    for p in alpn {
        list.push(p.len() as u8);
        list.extend_from_slice(p.as_bytes());
    }
    let mut al = (list.len() as u16).to_be_bytes().to_vec();
    al.extend_from_slice(&list);
    ext.extend_from_slice(&16u16.to_be_bytes());
    ext.extend_from_slice(&(al.len() as u16).to_be_bytes());
    ext.extend_from_slice(&al);

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[test]
fn http1_request_lines() {
    assert_eq!(
        sniff(b"GET /ratings/0 HTTP/1.1\r\nHost: x\r\n"),
        Sniff::Done(Protocol::Http1)
    );
    assert_eq!(sniff(b"POST /a HTTP/1.0\r\n"), Sniff::Done(Protocol::Http1));
    assert_eq!(sniff(b"GET /ratings"), Sniff::NeedMore);
    assert_eq!(sniff(b"GET / HTT"), Sniff::NeedMore);
    assert_eq!(sniff(b"GET / HTTP/2.0\r\n"), Sniff::Done(Protocol::Opaque));
    assert_eq!(sniff(b"GET / FTP/1.1\r\n"), Sniff::Done(Protocol::Opaque));
    assert_eq!(sniff(b"hello world\n"), Sniff::Done(Protocol::Opaque));
    assert_eq!(sniff(b"\x00\x01binary"), Sniff::Done(Protocol::Opaque));
}

#[test]
fn h2_preface() {
    assert_eq!(
        sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"),
        Sniff::Done(Protocol::H2c)
    );
    assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniff::NeedMore);
}

#[test]
fn tls_client_hello_gives_sni_and_alpn() {
    let hello = client_hello("reviews.default.svc.cluster.local", &["istio", "h2"]);
    let expected = Protocol::Tls {
        sni: Some("reviews.default.svc.cluster.local".into()),
        alpn: vec!["istio".into(), "h2".into()],
    };
    assert_eq!(sniff(&hello), Sniff::Done(expected.clone()));
    assert_eq!(expected.application_protocols(), vec!["istio", "h2"]);
    for cut in [1, 5, 20, hello.len() - 1] {
        assert_eq!(sniff(&hello[..cut]), Sniff::NeedMore, "cut at {cut}");
    }
    assert_eq!(
        sniff(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x02]),
        Sniff::Done(Protocol::Opaque),
        "not a ClientHello"
    );
}

#[test]
fn a_full_buffer_always_decides() {
    let long_line = [b'G', b'E', b'T', b' ']
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'a', MAX_SNIFF))
        .collect::<Vec<_>>();
    assert!(matches!(sniff(&long_line), Sniff::Done(_)));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let _ = sniff(&bytes);
        let mut tls = vec![0x16, 0x03, 0x01];
        tls.extend_from_slice(&bytes);
        let _ = sniff(&tls);
    }
}
