//! Protocol detection: what the first bytes a client sends say about the connection. Pure
//! functions over a byte prefix; the listener reads (with a timeout) and asks again while
//! the answer is [`Sniff::NeedMore`].
//!
//! Server-first protocols (MySQL, SMTP) send nothing until the server greets, so the
//! caller's timeout, not this module, decides that such a connection is opaque TCP.

/// Enough for an HTTP request line or a typical TLS ClientHello; a larger ClientHello (e.g.
/// with post-quantum key shares) still yields what was parsed up to here.
pub const MAX_SNIFF: usize = 4096;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello, with what it asks for.
    Tls {
        sni: Option<String>,
        alpn: Vec<String>,
    },
    Http1,
    /// HTTP/2 with prior knowledge (the connection preface).
    H2c,
    Opaque,
}

impl Protocol {
    /// The values filter chains match in `application_protocols`.
    pub fn application_protocols(&self) -> Vec<String> {
        match self {
            Protocol::Tls { alpn, .. } => alpn.clone(),
            Protocol::Http1 => vec!["http/1.1".into()],
            Protocol::H2c => vec!["h2c".into()],
            Protocol::Opaque => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    Done(Protocol),
    /// The prefix is consistent with a protocol but too short to tell.
    NeedMore,
}

/// Classifies the bytes received so far.
pub fn sniff(buf: &[u8]) -> Sniff {
    if buf.is_empty() {
        return Sniff::NeedMore;
    }
    let full = buf.len() >= MAX_SNIFF;
    let undecided = |protocol| {
        if full {
            Sniff::Done(protocol)
        } else {
            Sniff::NeedMore
        }
    };
    if H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
        return if buf.len() >= H2_PREFACE.len() {
            Sniff::Done(Protocol::H2c)
        } else {
            // "PRI " is also a valid HTTP/1 method prefix; only the full preface says h2.
            undecided(Protocol::Opaque)
        };
    }
    if buf[0] == 0x16 {
        return match client_hello(buf) {
            Hello::Parsed(protocol) => Sniff::Done(protocol),
            Hello::Short => undecided(Protocol::Tls {
                sni: None,
                alpn: Vec::new(),
            }),
            Hello::NotTls => Sniff::Done(Protocol::Opaque),
        };
    }
    match http1_request_line(buf) {
        Line::Complete => Sniff::Done(Protocol::Http1),
        Line::Partial => undecided(Protocol::Opaque),
        Line::No => Sniff::Done(Protocol::Opaque),
    }
}

enum Line {
    Complete,
    Partial,
    No,
}

/// `METHOD SP request-target SP HTTP/1.x CRLF`, checked as far as the bytes go.
fn http1_request_line(buf: &[u8]) -> Line {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) || method.len() > 32 {
        return if line.is_empty() {
            Line::Partial
        } else {
            Line::No
        };
    }
    let Some(target) = parts.next() else {
        return if line_end.is_none() {
            Line::Partial
        } else {
            Line::No
        };
    };
    if target.iter().any(|&b| b.is_ascii_control()) {
        return Line::No;
    }
    let Some(version) = parts.next() else {
        return if line_end.is_none() {
            Line::Partial
        } else {
            Line::No
        };
    };
    let version = version.strip_suffix(b"\r").unwrap_or(version);
    const HTTP1: &[u8] = b"HTTP/1.";
    if line_end.is_none() {
        let n = version.len().min(HTTP1.len());
        return if version[..n] == HTTP1[..n] {
            Line::Partial
        } else {
            Line::No
        };
    }
    if version.len() == 8
        && version.starts_with(HTTP1)
        && (version[7] == b'0' || version[7] == b'1')
    {
        Line::Complete
    } else {
        Line::No
    }
}

enum Hello {
    Parsed(Protocol),
    Short,
    NotTls,
}

/// Reads SNI and ALPN from a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301).
fn client_hello(buf: &[u8]) -> Hello {
    let mut r = Reader { buf, pos: 0 };
    let header = (|| {
        let content_type = r.u8()?;
        let major = r.u8()?;
        let _minor = r.u8()?;
        let _record_len = r.u16()?;
        let handshake_type = r.u8()?;
        Some((content_type, major, handshake_type))
    })();
    let Some((0x16, 3, 1)) = header else {
        return if header.is_none() {
            Hello::Short
        } else {
            Hello::NotTls
        };
    };
    match parse_hello_body(&mut r) {
        Some(protocol) => Hello::Parsed(protocol),
        None => Hello::Short,
    }
}

fn parse_hello_body(r: &mut Reader<'_>) -> Option<Protocol> {
    let _len = r.u24()?;
    r.skip(2 + 32)?; // legacy_version, random
    let session = r.u8()?;
    r.skip(usize::from(session))?;
    let suites = r.u16()?;
    r.skip(usize::from(suites))?;
    let compression = r.u8()?;
    r.skip(usize::from(compression))?;
    let mut sni = None;
    let mut alpn = Vec::new();
    let extensions_len = r.u16()?;
    let end = r.pos + usize::from(extensions_len);
    while r.pos < end {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        let body = r.take(len)?;
        let mut e = Reader { buf: body, pos: 0 };
        match kind {
            0 => {
                // server_name_list: type 0 (host_name) entries.
                let _list = e.u16()?;
                while e.pos < body.len() {
                    let name_type = e.u8()?;
                    let name_len = usize::from(e.u16()?);
                    let name = e.take(name_len)?;
                    if name_type == 0 {
                        sni = std::str::from_utf8(name).ok().map(str::to_string);
                    }
                }
            }
            16 => {
                let _list = e.u16()?;
                while e.pos < body.len() {
                    let proto_len = usize::from(e.u8()?);
                    let proto = e.take(proto_len)?;
                    alpn.push(String::from_utf8_lossy(proto).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(Protocol::Tls { sni, alpn })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(slice)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<u32> {
        self.take(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
