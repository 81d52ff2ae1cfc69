//! Byte-level encoders for access-log fields: escaped text, decimal numbers,
//! the `[10/Oct/2000:13:55:36 +0000]` date and the Basic-auth user name. Each
//! appends to a caller's buffer and never allocates, so the access-log format
//! (`access_format.rs`, the only caller) renders a line with no per-field
//! allocation.

use std::time::{SystemTime, UNIX_EPOCH};

const HEX: &[u8; 16] = b"0123456789abcdef";
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Appends `text`, escaping `"` and `\` with a backslash and any byte outside
/// printable ASCII as `\xNN`. gunicorn only escapes `"`; we also escape the
/// rest (as Apache does) so a header value cannot forge a line or a field.
pub(crate) fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    let mut clean_from = 0;
    for (i, &b) in text.iter().enumerate() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&text[clean_from..i]);
        clean_from = i + 1;
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
    }
    out.extend_from_slice(&text[clean_from..]);
}

/// Appends `text` escaped, or `-` when it is empty (gunicorn's missing value).
pub(crate) fn push_or_dash(out: &mut Vec<u8>, text: &[u8]) {
    if text.is_empty() {
        out.push(b'-');
    } else {
        push_escaped(out, text);
    }
}

/// Appends `n` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    start = start.min(digits.len().saturating_sub(width));
    out.extend_from_slice(&digits[start..]);
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    push_padded(out, n, 1);
}

/// Appends `at` as `[10/Oct/2000:13:55:36 +0000]`.
///
/// gunicorn prints local time with its offset. We print UTC on purpose: the
/// local offset needs `localtime_r`, which races with `setenv` in a
/// multi-threaded process (why the `time` crate refuses it), and servers that
/// care run with `TZ=UTC` anyway. A time before 1970 prints as the epoch.
pub(crate) fn push_clf_date(out: &mut Vec<u8>, at: SystemTime) {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    out.push(b'[');
    push_padded(out, day, 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(month - 1) as usize]);
    out.push(b'/');
    push_padded(out, year, 4);
    for (sep, n) in [
        (b':', in_day / 3600),
        (b':', in_day / 60 % 60),
        (b':', in_day % 60),
    ] {
        out.push(sep);
        push_padded(out, n, 2);
    }
    out.extend_from_slice(b" +0000]");
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, after Howard
/// Hinnant's `civil_from_days`, restricted to dates from 1970 on.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends the user name of a `Basic` `Authorization` value, escaped, or `-`
/// if there is none or it doesn't decode (gunicorn's `_get_user`).
pub(crate) fn push_basic_auth_user(out: &mut Vec<u8>, authorization: Option<&[u8]>) {
    let mark = out.len();
    let decoded = authorization
        .and_then(basic_credentials)
        .is_some_and(|b64| decode_user(out, b64));
    if !decoded || out.len() == mark {
        out.truncate(mark);
        out.push(b'-');
    }
}

/// The base64 part of `Basic <b64>` (scheme matched case-insensitively).
fn basic_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") || rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Decodes standard base64 up to the first `:` (or the end), appending the
/// escaped bytes; false if a character before that point is not base64.
fn decode_user(out: &mut Vec<u8>, b64: &[u8]) -> bool {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in b64 {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = (acc >> bits) as u8;
            acc &= (1 << bits) - 1;
            if byte == b':' {
                return true;
            }
            push_escaped(out, &[byte]);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_bytes() {
        assert_eq!(render(|o| push_escaped(o, b"plain text")), "plain text");
        assert_eq!(
            render(|o| push_escaped(o, b"a\"b\\c\nd\x7f\xc3\xa9")),
            r#"a\"b\\c\x0ad\x7f\xc3\xa9"#
        );
        assert_eq!(render(|o| push_or_dash(o, b"")), "-");
    }

    #[test]
    fn numbers() {
        assert_eq!(render(|o| push_u64(o, 0)), "0");
        assert_eq!(render(|o| push_u64(o, u64::MAX)), "18446744073709551615");
        assert_eq!(render(|o| push_padded(o, 7, 2)), "07");
        assert_eq!(render(|o| push_padded(o, 123, 2)), "123");
        assert_eq!(render(|o| push_padded(o, 42, 6)), "000042");
    }

    #[test]
    fn clf_dates() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            render(|o| push_clf_date(o, at(0))),
            "[01/Jan/1970:00:00:00 +0000]"
        );
        // gunicorn docs' example instant, 2000-10-10 20:55:36 UTC.
        assert_eq!(
            render(|o| push_clf_date(o, at(971_211_336))),
            "[10/Oct/2000:20:55:36 +0000]"
        );
        // Leap day and the last second of a year.
        assert_eq!(
            render(|o| push_clf_date(o, at(1_709_164_800))),
            "[29/Feb/2024:00:00:00 +0000]"
        );
        assert_eq!(
            render(|o| push_clf_date(o, at(1_735_689_599))),
            "[31/Dec/2024:23:59:59 +0000]"
        );
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(
            render(|o| push_clf_date(o, before)),
            "[01/Jan/1970:00:00:00 +0000]"
        );
    }

    #[test]
    fn basic_auth_user() {
        let user = |v: &[u8]| render(|o| push_basic_auth_user(o, Some(v)));
        // "aladdin:opensesame"
        assert_eq!(user(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"), "aladdin");
        assert_eq!(user(b"basic  YWxhZGRpbjpvcGVuc2VzYW1l "), "aladdin");
        // "bob" (no colon) and "" (empty user).
        assert_eq!(user(b"Basic Ym9i"), "bob");
        assert_eq!(user(b"Basic OnB3"), "-");
        assert_eq!(user(b"Basic !!!"), "-");
        assert_eq!(user(b"Bearer YWxhZGRpbjpvcGVuc2VzYW1l"), "-");
        assert_eq!(user(b"Basic"), "-");
        assert_eq!(render(|o| push_basic_auth_user(o, None)), "-");
    }
}
