//! Kubernetes resource quantities (`100m`, `128Mi`, `1e3`), checked against the grammar the
//! API server documents for `resource.Quantity`, so that a bad `sidecar.istio.io/proxyCPU`
//! is refused by the webhook with a clear message instead of by the API server afterwards.
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <sign>            ::= "+" | "-"
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <exponent> | "E" <exponent>
//! ```
//!
//! The documented grammar writes `<signedNumber>` after `e`, but the API server parses the
//! exponent as a signed integer (`1e1.5` is refused) and keeps it in an int32, so
//! `<exponent>` is an optional sign and digits whose value fits an i32. The grammar also
//! requires at least one digit: the bare signs `-` and `+`, which the API server's parser
//! happens to read as zero, are refused.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A syntactically valid quantity, kept exactly as written: the API server canonicalises it
/// itself, and users recognise their own spelling in `kubectl get pod -o yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(String);

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("it is empty")]
    Empty,
    #[error("it has no digits before the suffix")]
    NoDigits,
    #[error(
        "{suffix:?} is not a suffix (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, \
         or e/E with a whole exponent)"
    )]
    UnknownSuffix { suffix: String },
    #[error("the exponent {exponent:?} is not a whole number from -2147483648 to 2147483647")]
    BadExponent { exponent: String },
}

const DECIMAL_SI: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
const BINARY_SI: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bytes = value.as_bytes();
        let mut pos = usize::from(matches!(bytes[0], b'+' | b'-'));
        let whole = count_digits(&bytes[pos..]);
        pos += whole;
        let mut fraction = 0;
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            fraction = count_digits(&bytes[pos..]);
            pos += fraction;
        }
        if whole + fraction == 0 {
            return Err(QuantityError::NoDigits);
        }
        // Everything up to `pos` is ASCII, so this slice starts on a character boundary.
        let suffix = &value[pos..];
        if DECIMAL_SI.contains(&suffix) || BINARY_SI.contains(&suffix) {
            return Ok(Self(value.to_owned()));
        }
        match suffix.strip_prefix(['e', 'E']) {
            Some(exponent) if !exponent.is_empty() => {
                if is_signed_integer(exponent) && exponent.parse::<i32>().is_ok() {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(QuantityError::BadExponent {
                        exponent: exponent.to_owned(),
                    })
                }
            }
            _ => Err(QuantityError::UnknownSuffix {
                suffix: suffix.to_owned(),
            }),
        }
    }
}

impl Quantity {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A minus sign in front of any non-zero digit; `-0` and `-0.0` are zero, not negative.
    pub fn is_negative(&self) -> bool {
        let Some(rest) = self.0.strip_prefix('-') else {
            return false;
        };
        rest.bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .any(|b| (b'1'..=b'9').contains(&b))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// An optional sign, then one or more ASCII digits (what Go's `strconv.ParseInt` reads).
fn is_signed_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}
