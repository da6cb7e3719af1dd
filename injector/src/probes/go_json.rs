//! JSON text as Go's `encoding/json` writes it, for the environment variables Istio's
//! injector fills (`ISTIO_KUBE_APP_PROBERS`, `ISTIO_PROMETHEUS_ANNOTATIONS`), so that a pod
//! injected by Skiff carries the same bytes as one injected by Istio.
//!
//! Field order comes from the serde structs (declared in Go's order) and map keys are sorted
//! by `BTreeMap`, as Go sorts them. What is left is string escaping: Go escapes `<`, `>` and
//! `&` (for embedding in HTML) and U+2028 and U+2029 (for embedding in JavaScript), which
//! serde_json writes as they are. Both encoders escape control characters the same way.

use serde::Serialize;

/// `value` as compact JSON with Go's escaping.
pub(crate) fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(value)?;
    let mut out = String::with_capacity(text.len());
    // These characters never occur in JSON outside strings, and escaping them inside a
    // string keeps its meaning, so a plain pass over the text is enough.
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}
