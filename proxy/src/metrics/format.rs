//! Exposition formats. prometheus-client writes OpenMetrics only, but scrapers and the
//! merged endpoint also need the older Prometheus text format (0.0.4): Envoy serves that,
//! many non-Prometheus collectors only read it, and an OpenMetrics `# EOF` in the middle of a
//! merged response would end the document early.

/// An exposition format the proxy can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text: counters are declared without `_total`, the document ends with
    /// `# EOF`.
    OpenMetrics,
    /// Prometheus text 0.0.4, what Envoy's `/stats/prometheus` serves.
    Text,
}

const OPENMETRICS_MEDIA_TYPE: &str = "application/openmetrics-text";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format a scraper asks for in its `Accept` header: OpenMetrics when it prefers it
    /// at least as much as plain text, else text (also without a header, as Envoy and
    /// Go's promhttp answer a bare `curl`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for entry in accept.split(',') {
            let mut params = entry.split(';');
            let media = params
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                OPENMETRICS_MEDIA_TYPE => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The format of a response, from its `Content-Type`; `None` for what cannot be merged as
    /// text (the Prometheus protobuf format, or anything that is not a metrics format).
    pub fn of_content_type(content_type: Option<&str>) -> Option<Format> {
        let Some(content_type) = content_type else {
            // Many small exporters send no Content-Type at all; Prometheus reads that as text.
            return Some(Format::Text);
        };
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            OPENMETRICS_MEDIA_TYPE => Some(Format::OpenMetrics),
            "" | "text/plain" => Some(Format::Text),
            _ => None,
        }
    }

    /// The `Accept` header for an upstream scrape whose body will be merged into a response
    /// in `self`'s format: never protobuf, which cannot be concatenated.
    pub(crate) fn upstream_accept(self) -> &'static str {
        match self {
            Format::OpenMetrics => {
                "application/openmetrics-text;version=1.0.0;q=0.9,application/openmetrics-text;version=0.0.1;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            }
            Format::Text => "text/plain;version=0.0.4;q=1.0,*/*;q=0.1",
        }
    }
}

/// OpenMetrics text (as prometheus-client writes it) rewritten as Prometheus text 0.0.4:
/// counter families get their `_total` name in `# HELP`/`# TYPE` (as Envoy writes them),
/// `_created` samples, `# UNIT` lines, exemplars and the `# EOF` terminator are dropped,
/// and types 0.0.4 lacks become `untyped`.
pub(crate) fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, kind)| *kind == "counter")
        .map(|(name, _)| name)
        .collect();
    let is_counter = |name: &str| counters.contains(&name);
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if is_counter(name) { "_total" } else { "" };
            out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF` and other comments have no 0.0.4 meaning.
        } else {
            let sample = line.split(" # {").next().unwrap_or(line);
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            if name.strip_suffix("_created").is_some_and(is_counter) {
                continue;
            }
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// `body` without a trailing OpenMetrics `# EOF` line (and the whitespace around it), so
/// that several expositions can be concatenated and terminated once.
pub(crate) fn strip_openmetrics_eof(body: &[u8]) -> &[u8] {
    let trimmed = body.trim_ascii_end();
    match trimmed.strip_suffix(b"# EOF") {
        Some(rest) if rest.is_empty() || rest.ends_with(b"\n") => rest,
        _ => body,
    }
}

/// The samples of an OpenMetrics document as `name{labels}: value` lines, the shape of
/// Envoy's plain `/stats`, for people reading the admin page.
pub(crate) fn openmetrics_to_plain_stats(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.split(" # {").next().unwrap_or(line);
        match sample.rsplit_once(' ') {
            Some((series, value)) => out.push_str(&format!("{series}: {value}\n")),
            None => {
                out.push_str(sample);
                out.push('\n');
            }
        }
    }
    out
}
