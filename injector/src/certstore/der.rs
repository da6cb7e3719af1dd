//! Just enough DER to read a certificate's validity period (RFC 5280, section 4.1): the
//! crate has no X.509 parser, and webpki checks the dates without exposing them. Also the
//! date arithmetic that goes with it. Pure; never panics, whatever the bytes.

const DER_INTEGER: u8 = 0x02;
pub(super) const DER_SEQUENCE: u8 = 0x30;
pub(super) const DER_UTC_TIME: u8 = 0x17;
pub(super) const DER_GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` at the start of a TBSCertificate (absent in v1 certificates).
const DER_VERSION: u8 = 0xa0;

/// `(notBefore, notAfter)` of a DER certificate, in seconds since the Unix epoch, or `None`
/// if the structure up to them is not what RFC 5280 prescribes.
pub(super) fn validity(certificate: &[u8]) -> Option<(i64, i64)> {
    let (certificate, _) = der_expect(certificate, DER_SEQUENCE)?;
    let (tbs, _) = der_expect(certificate, DER_SEQUENCE)?;
    let (tag, _, after_version) = der_next(tbs)?;
    let rest = if tag == DER_VERSION {
        after_version
    } else {
        tbs
    };
    let (_serial, rest) = der_expect(rest, DER_INTEGER)?;
    let (_signature, rest) = der_expect(rest, DER_SEQUENCE)?;
    let (_issuer, rest) = der_expect(rest, DER_SEQUENCE)?;
    let (validity, _) = der_expect(rest, DER_SEQUENCE)?;
    let (tag, not_before, rest) = der_next(validity)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der_next(rest)?;
    let not_after = der_time(tag, not_after)?;
    Some((not_before, not_after))
}

/// The next element of `input`: its tag, its contents and what follows it.
pub(super) fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // a multi-byte tag: none of the fields read here has one
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form. 0x80 (indefinite) is not DER; more than 4 length bytes is no certificate.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes.iter().try_fold(0usize, |len, &b| {
            len.checked_mul(256)?.checked_add(usize::from(b))
        })?;
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

fn der_expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    match der_next(input)? {
        (tag, contents, rest) if tag == want => Some((contents, rest)),
        _ => None,
    }
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 1950 to 2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// only forms RFC 5280 allows, in seconds since the Unix epoch.
pub(super) fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, text.len()) {
        (DER_UTC_TIME, 13) => {
            let (yy, rest) = text.split_at(2);
            let yy = decimal(yy)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        (DER_GENERALIZED_TIME, 15) => {
            let (yyyy, rest) = text.split_at(4);
            (decimal(yyyy)?, rest)
        }
        _ => return None,
    };
    let (fields, zone) = rest.split_at(10);
    if zone != b"Z" {
        return None;
    }
    let field = |i: usize| decimal(fields.get(i..i + 2)?);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn decimal(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + i64::from(b - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(super) fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 in UTC, for messages.
pub(super) fn format_time(seconds: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}
