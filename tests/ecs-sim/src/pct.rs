//! Percent-encoding and form decoding exactly as the ECS signer expects:
//! RFC 3986 unreserved bytes stay literal, everything else is `%XX` upper case.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Every byte except `A-Z a-z 0-9 - _ . ~`.
const SIGN_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Encodes one name or value for a canonical string.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, SIGN_SET).to_string()
}

/// Decodes an `application/x-www-form-urlencoded` string (`+` is a space)
/// into ordered pairs; clients may send spaces as `+` or `%20`.
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn dec(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}
