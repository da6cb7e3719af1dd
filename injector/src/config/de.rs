//! Field readers for [`super::InjectionConfig`]: each turns one YAML value into its typed
//! form or fails with a message that yaml_serde prefixes with the key's path and suffixes
//! with the line and column.
//!
//! Values that a pod can also set through an annotation are checked by handing them to
//! [`crate::annotations::parse`] under that annotation's key, so the config accepts exactly
//! what the annotation accepts and explains a bad value in the same words.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::RESERVED_PORTS;
use crate::annotations::{
    self, CaptureSet, Cidr, ComponentLogLevel, InterceptionMode, PodOverrides, ProxyLogLevel,
    Quantity, ScopedLogLevel, key,
};
use crate::policy::{
    InjectionPolicy, LabelSelector, Labels, Operator, Requirement, SelectorProblem,
};

/// Runs `parse` inside yaml_serde's visit of the value, so that an error carries the
/// value's own path and line (an error returned after the visit would carry the enclosing
/// mapping's). `parse` gets `None` for a YAML null.
///
/// With `lists`, the value may be a scalar as text (`8080` and `"8080"` alike) or a list of
/// scalars, joined with commas as the annotations write lists; otherwise it must be a string.
struct Parse<F> {
    parse: F,
    lists: bool,
}

impl<'de, T, F> Visitor<'de> for Parse<F>
where
    F: FnOnce(Option<&str>) -> Result<T, String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.lists {
            "a string, a number, or a list of them"
        } else {
            "a string"
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(Some(v)).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        self.scalar(v, de::Unexpected::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.scalar(v, de::Unexpected::Signed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.scalar(v, de::Unexpected::Unsigned(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.scalar(v, de::Unexpected::Float(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        (self.parse)(None).map_err(E::custom)
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        (self.parse)(None).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        if !self.lists {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut items = Vec::new();
        while let Some(Scalar(item)) = seq.next_element()? {
            items.push(item);
        }
        (self.parse)(Some(&items.join(","))).map_err(de::Error::custom)
    }
}

impl<F> Parse<F> {
    fn scalar<T, E, V>(self, v: V, unexpected: de::Unexpected<'_>) -> Result<T, E>
    where
        F: FnOnce(Option<&str>) -> Result<T, String>,
        E: de::Error,
        V: fmt::Display,
    {
        if self.lists {
            (self.parse)(Some(&v.to_string())).map_err(E::custom)
        } else {
            Err(E::invalid_type(unexpected, &"a string"))
        }
    }
}

/// A string value, checked by `parse`.
fn parse_str<'de, D, T>(d: D, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_any(Parse {
        parse: |v: Option<&str>| match v {
            Some(v) => parse(v),
            None => Err("is null; write a value, or remove the key for the default".to_owned()),
        },
        lists: false,
    })
}

/// A scalar or list value as text (null reads as the empty string), checked by `parse`.
fn parse_text<'de, D, T>(d: D, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_any(Parse {
        parse: |v: Option<&str>| parse(v.unwrap_or_default()),
        lists: true,
    })
}

/// One list item: a scalar as text, never a nested list.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(Scalar)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Reads `text` as the annotation `key` would be read and picks the parsed field.
fn via<T>(
    key: &str,
    text: &str,
    pick: impl FnOnce(PodOverrides) -> Option<T>,
) -> Result<T, String> {
    let one = Labels::from([(key.to_owned(), text.to_owned())]);
    match annotations::parse(&one) {
        Ok(parsed) => pick(parsed).ok_or_else(|| format!("{text:?} is not accepted")),
        Err(e) => Err(format!("{text:?} {}", e.reason)),
    }
}

fn text_via<'de, D, T>(
    d: D,
    key: &str,
    pick: impl FnOnce(PodOverrides) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    parse_text(d, |text| via(key, text, pick))
}

pub(super) fn policy<'de, D: Deserializer<'de>>(d: D) -> Result<InjectionPolicy, D::Error> {
    parse_str(d, |value| {
        value.parse().map_err(|_| {
            format!(
                "unknown value {value:?}; use \"enabled\" (inject unless the pod opts out) or \
                 \"disabled\" (inject only when the pod opts in)"
            )
        })
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SelectorYaml {
    #[serde(default)]
    match_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    match_expressions: Option<Vec<RequirementYaml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementYaml {
    key: String,
    #[serde(deserialize_with = "operator")]
    operator: Operator,
    #[serde(default)]
    values: Option<Vec<String>>,
}

fn operator<'de, D: Deserializer<'de>>(d: D) -> Result<Operator, D::Error> {
    parse_str(d, |value| {
        value.parse().map_err(|e: SelectorProblem| e.to_string())
    })
}

/// Kubernetes `LabelSelector`s; whether each is valid is checked afterwards by
/// [`crate::policy::PolicyConfig::validate`], which names the entry.
pub(super) fn selectors<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LabelSelector>, D::Error> {
    let list = Option::<Vec<SelectorYaml>>::deserialize(d)?.unwrap_or_default();
    Ok(list
        .into_iter()
        .map(|s| LabelSelector {
            match_labels: s.match_labels.unwrap_or_default(),
            match_expressions: s
                .match_expressions
                .unwrap_or_default()
                .into_iter()
                .map(|r| Requirement {
                    key: r.key,
                    operator: r.operator,
                    values: r.values.unwrap_or_default(),
                })
                .collect(),
        })
        .collect())
}

/// Letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit, at most
/// 63 characters: what Kubernetes allows as a (non-empty) label value.
fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner)
}

const LABEL_VALUE_RULE: &str = "use at most 63 letters, digits, '-', '_' and '.', starting and \
                                ending with a letter or digit";

/// Used as a label value by the webhook selectors, so it must be one.
pub(super) fn label_value<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, |value| {
        if is_label_value(value) {
            Ok(value.to_owned())
        } else {
            Err(format!(
                "{value:?} is not a label value; {LABEL_VALUE_RULE}"
            ))
        }
    })
}

/// A label value, or empty (or null) for unset.
pub(super) fn optional_label_value<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(Parse {
        parse: |value: Option<&str>| {
            let value = value.unwrap_or_default();
            if value.is_empty() || is_label_value(value) {
                Ok(value.to_owned())
            } else {
                Err(format!(
                    "{value:?} is not a label value; {LABEL_VALUE_RULE}, or leave it empty"
                ))
            }
        },
        lists: false,
    })
}

/// An image reference: only its shape is checked (non-empty, no whitespace); the registry
/// is the judge of the rest.
pub(super) fn image<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, |value| {
        if value.is_empty() {
            return Err("is empty; write a full image reference such as \
                        ghcr.io/skiff-mesh/skiff-proxy:1.0.0, or remove the key for the default"
                .to_owned());
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{value:?} is not an image reference: it contains whitespace"
            ));
        }
        Ok(value.to_owned())
    })
}

/// A DNS-1123 subdomain, as Kubernetes requires of Secret names.
fn is_dns_subdomain(value: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    value.len() <= 253
        && value.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && alnum(&b[0])
                && alnum(&b[b.len() - 1])
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// One `imagePullSecrets` entry.
struct SecretName(String);

impl<'de> Deserialize<'de> for SecretName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |name| {
            if is_dns_subdomain(name) {
                Ok(SecretName(name.to_owned()))
            } else {
                Err(format!(
                    "{name:?} is not a Secret name; use lowercase letters, digits, '-' and '.', \
                     starting and ending with a letter or digit"
                ))
            }
        })
    }
}

pub(super) fn secret_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Option::<Vec<SecretName>>::deserialize(d)?.unwrap_or_default();
    Ok(names.into_iter().map(|n| n.0).collect())
}

/// The cluster's DNS domain: lowercase DNS labels separated by dots.
pub(super) fn dns_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, |value| {
        if is_dns_subdomain(value) {
            Ok(value.to_owned())
        } else {
            Err(format!(
                "{value:?} is not a DNS domain; use lowercase letters, digits, '-' and '.', \
                 e.g. cluster.local"
            ))
        }
    })
}

pub(super) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, |value| {
        if value.trim().is_empty() {
            Err("is empty; write a value, or remove the key for the default".to_owned())
        } else {
            Ok(value.to_owned())
        }
    })
}

/// `host:port` or `[ipv6]:port`.
fn check_address(value: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{value:?} is not host:port ({why}), e.g. istiod.istio-system.svc:15012"
        ))
    };
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace");
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad("the port is missing");
    };
    if host.is_empty() || host == "[]" {
        return bad("the host is missing");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(value.to_owned()),
        _ => bad("the port must be a number from 1 to 65535"),
    }
}

pub(super) fn address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, check_address)
}

pub(super) fn optional_address<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Parse {
        parse: |value: Option<&str>| value.map(check_address).transpose(),
        lists: false,
    })
}

pub(super) fn proxy_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<ProxyLogLevel, D::Error> {
    text_via(d, key::LOG_LEVEL, |o| o.log_level)
}

pub(super) fn component_log_level<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<ComponentLogLevel>, D::Error> {
    text_via(d, key::COMPONENT_LOG_LEVEL, |o| o.component_log_level)
}

pub(super) fn agent_log_level<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<ScopedLogLevel>, D::Error> {
    text_via(d, key::AGENT_LOG_LEVEL, |o| o.agent_log_level)
}

pub(super) fn interception_mode<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<InterceptionMode, D::Error> {
    text_via(d, key::INTERCEPTION_MODE, |o| o.interception_mode)
}

/// Why `port` cannot be the status port; shared with the per-pod annotation check.
pub(crate) fn reserved_port_reason(port: u16) -> String {
    format!(
        "{port} is one of the ports the sidecar itself uses (15000, 15001, 15006, 15021, \
         15053, 15090); choose another port, e.g. 15020, or 0 for no status port"
    )
}

pub(super) fn status_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    parse_text(d, |text| {
        let port = via(key::STATUS_PORT, text, |o| o.status_port)?;
        if port != 0 && RESERVED_PORTS.contains(&port) {
            return Err(reserved_port_reason(port));
        }
        Ok(port)
    })
}

/// A whole number from `min` to i32::MAX (probe fields are int32 in the Kubernetes API).
fn int32_from<'de, D: Deserializer<'de>>(d: D, min: i32) -> Result<i32, D::Error> {
    parse_text(d, |text| {
        text.parse::<i32>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| format!("{text:?} is not a whole number from {min} to 2147483647"))
    })
}

pub(super) fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    int32_from(d, 0)
}

pub(super) fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    int32_from(d, 1)
}

fn quantity<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    pick: fn(PodOverrides) -> Option<Quantity>,
) -> Result<Option<Quantity>, D::Error> {
    d.deserialize_any(Parse {
        parse: |text: Option<&str>| text.map(|text| via(key, text, pick)).transpose(),
        lists: true,
    })
}

pub(super) fn cpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    quantity(d, key::PROXY_CPU, |o| o.resources.cpu_request)
}

pub(super) fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    quantity(d, key::PROXY_MEMORY, |o| o.resources.memory_request)
}

pub(super) fn include_outbound_ip_ranges<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<CaptureSet<Cidr>, D::Error> {
    text_via(d, key::INCLUDE_OUTBOUND_IP_RANGES, |o| {
        o.include_outbound_ip_ranges
    })
}

pub(super) fn exclude_outbound_ip_ranges<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Cidr>, D::Error> {
    text_via(d, key::EXCLUDE_OUTBOUND_IP_RANGES, |o| {
        o.exclude_outbound_ip_ranges
    })
}

pub(super) fn include_inbound_ports<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<CaptureSet<u16>, D::Error> {
    text_via(d, key::INCLUDE_INBOUND_PORTS, |o| o.include_inbound_ports)
}

pub(super) fn exclude_inbound_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    text_via(d, key::EXCLUDE_INBOUND_PORTS, |o| o.exclude_inbound_ports)
}

pub(super) fn include_outbound_ports<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<u16>, D::Error> {
    text_via(d, key::INCLUDE_OUTBOUND_PORTS, |o| o.include_outbound_ports)
}

pub(super) fn exclude_outbound_ports<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<u16>, D::Error> {
    text_via(d, key::EXCLUDE_OUTBOUND_PORTS, |o| o.exclude_outbound_ports)
}

/// Kubernetes' classic rule for environment variable names (`[-._a-zA-Z][-._a-zA-Z0-9]*`),
/// which every Kubernetes version accepts.
pub(crate) fn is_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(ok)
}

/// A key of an environment map, checked where it is written.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EnvName(String);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |name| {
            if is_env_name(name) {
                Ok(EnvName(name.to_owned()))
            } else {
                Err(format!(
                    "{name:?} is not an environment variable name; use letters, digits, '_', \
                     '-' and '.', not starting with a digit"
                ))
            }
        })
    }
}

/// Environment variables: names checked, values as text (`true` and `2` are "true", "2").
pub(super) fn env_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<EnvName, Scalar>>::deserialize(d)?.unwrap_or_default();
    Ok(map.into_iter().map(|(k, v)| (k.0, v.0)).collect())
}
