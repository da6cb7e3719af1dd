//! Kubernetes label selectors (`matchLabels`, `matchExpressions`), for the never/always
//! inject selectors of the config and for the webhook selectors of stage A.
//!
//! Written out here rather than taken from k8s-openapi so that the policy stays plain data
//! and the validation rules (what the API server would refuse) live next to the matching.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::Labels;

/// A Kubernetes `metav1.LabelSelector`: `match_labels` and every expression must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// The four operators a `LabelSelector` allows (`Gt`/`Lt` exist only for node selectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl FromStr for Operator {
    type Err = SelectorProblem;

    /// Case-sensitive, as the API server is: `in` is as wrong as `Foo`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "In" => Ok(Self::In),
            "NotIn" => Ok(Self::NotIn),
            "Exists" => Ok(Self::Exists),
            "DoesNotExist" => Ok(Self::DoesNotExist),
            _ => Err(SelectorProblem::UnknownOperator {
                operator: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        })
    }
}

impl Requirement {
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Self {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// `NotIn` holds for a missing label: Kubernetes defines it as "not one of these", and
    /// the webhook selectors rely on that (`sidecar.istio.io/inject NotIn [false]` must
    /// select pods without the label).
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// A selector with no terms matches every pod in Kubernetes; the injection selectors
    /// ignore such a selector instead, so that an empty list entry cannot flip the mesh.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Kubernetes semantics, including "an empty selector matches everything".
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The API server's rules for a selector, so that a selector Istio would have thrown
    /// away is recognised as such here too.
    pub fn validate(&self) -> Result<(), SelectorError> {
        let fail = |field: String, problem| Err(SelectorError { field, problem });
        for (key, value) in &self.match_labels {
            if let Err(problem) = check_key(key) {
                return fail(format!("matchLabels[{key:?}]"), problem);
            }
            if let Err(problem) = check_value(value) {
                return fail(format!("matchLabels[{key:?}]"), problem);
            }
        }
        for (i, req) in self.match_expressions.iter().enumerate() {
            let at = |part: &str| format!("matchExpressions[{i}].{part}");
            if let Err(problem) = check_key(&req.key) {
                return fail(at("key"), problem);
            }
            let operator = req.operator;
            match operator {
                Operator::In | Operator::NotIn if req.values.is_empty() => {
                    return fail(at("values"), SelectorProblem::MissingValues { operator });
                }
                Operator::Exists | Operator::DoesNotExist if !req.values.is_empty() => {
                    return fail(at("values"), SelectorProblem::UnexpectedValues { operator });
                }
                _ => {}
            }
            for (j, value) in req.values.iter().enumerate() {
                if let Err(problem) = check_value(value) {
                    return fail(at(&format!("values[{j}]")), problem);
                }
            }
        }
        Ok(())
    }
}

/// A label key is a Kubernetes qualified name: an optional DNS-subdomain prefix and `/`,
/// then a name part of at most 63 characters.
fn check_key(key: &str) -> Result<(), SelectorProblem> {
    let invalid = |why: &'static str| {
        Err(SelectorProblem::InvalidKey {
            key: key.to_owned(),
            why,
        })
    };
    let name = match key.split_once('/') {
        None => key,
        Some((prefix, name)) => {
            if name.contains('/') {
                return invalid("it has more than one '/'");
            }
            if prefix.is_empty() {
                return invalid("the prefix before '/' is empty");
            }
            if !is_dns_subdomain(prefix) {
                return invalid("the prefix before '/' is not a lowercase DNS subdomain");
            }
            name
        }
    };
    if name.is_empty() {
        return invalid("the name part is empty");
    }
    if !is_label_token(name) {
        return invalid(
            "the name part must be at most 63 characters of [A-Za-z0-9-_.], \
             starting and ending with a letter or digit",
        );
    }
    Ok(())
}

/// Label values may be empty; otherwise they follow the same shape as a key's name part.
fn check_value(value: &str) -> Result<(), SelectorProblem> {
    if value.is_empty() || is_label_token(value) {
        Ok(())
    } else {
        Err(SelectorProblem::InvalidValue {
            value: value.to_owned(),
        })
    }
}

fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner_ok)
}

fn is_dns_subdomain(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && lower_alnum(&b[0])
                && lower_alnum(&b[b.len() - 1])
                && b.iter().all(|c| lower_alnum(c) || *c == b'-')
        })
}

/// A selector that is wrong, with where it is wrong (a path inside the selector, or inside
/// the config once [`PolicyConfig::validate`] has prefixed it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {problem}")]
pub struct SelectorError {
    pub field: String,
    pub problem: SelectorProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorProblem {
    #[error("unknown operator {operator:?}; use In, NotIn, Exists or DoesNotExist")]
    UnknownOperator { operator: String },
    #[error("operator {operator} needs at least one value; add `values` or use Exists")]
    MissingValues { operator: Operator },
    #[error("operator {operator} takes no values; remove `values`")]
    UnexpectedValues { operator: Operator },
    #[error(
        "label key {key:?} is invalid because {why}; use an optional DNS-subdomain prefix \
         and '/', then a name such as app.kubernetes.io/name"
    )]
    InvalidKey { key: String, why: &'static str },
    #[error(
        "label value {value:?} is invalid; use at most 63 characters of [A-Za-z0-9-_.] \
         starting and ending with a letter or digit, or the empty string"
    )]
    InvalidValue { value: String },
}
