//! Request signing for ECS OpenAPI: ACS3-HMAC-SHA256 (V3, default) and RPC
//! HMAC-SHA1 (`SignatureVersion=1.0`, "v1" in the policy).
//!
//! Pure functions over strings so they are checked byte for byte against the
//! vectors produced by the official SDK (`tests/fixtures/sig_vectors.json`).
//! Nothing here does I/O, reads the clock or draws randomness: the caller passes
//! the timestamp and nonce ([`timestamp`] and [`nonce`] make fresh ones).

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::secret::Secret;

/// The ECS OpenAPI version every call uses.
pub const ECS_API_VERSION: &str = "2014-05-26";
/// Algorithm name of the V3 scheme, first line of its string-to-sign.
pub const ACS3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// `hex(sha256(""))`: the payload hash of every ECS call (parameters travel in the query).
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// RFC 3986 unreserved characters stay literal; every other byte is `%XX`
/// (upper-case hex). So a space is `%20`, `*` is `%2A`, `~` stays `~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes as both signature schemes require (UTF-8, RFC 3986 unreserved kept).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// `k=v` pairs, both percent-encoded, sorted byte-wise by raw name (so
/// `DiskId.10` sorts before `DiskId.2`, as the server does), joined with `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A fresh `x-acs-date` / `Timestamp`: UTC, whole seconds, `YYYY-MM-DDThh:mm:ssZ`.
pub fn timestamp(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh signature nonce: 16 random bytes as 32 hex digits (a reused nonce is
/// rejected with `SignatureNonceUsed`, so every attempt draws a new one).
///
/// Signing runs while file systems are frozen, so this never panics: should
/// the OS generator fail (it does not on Linux), the nonce is a hash of the
/// time, the process and a counter. A nonce must be unique, not secret: it
/// stops replays, and the signature still needs the key.
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(t.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(n.to_le_bytes());
        b.copy_from_slice(&h.finalize()[..16]);
    }
    hex::encode(b)
}

/// Who signs: the access key pair and, for STS/RAM-role credentials, the token.
#[derive(Debug, Clone, Copy)]
pub struct SigningKey<'a> {
    /// AccessKeyId (not secret; it appears in `Authorization`).
    pub access_key_id: &'a str,
    /// AccessKeySecret.
    pub access_key_secret: &'a Secret,
    /// STS SecurityToken, present for role credentials.
    pub security_token: Option<&'a Secret>,
}

/// Everything that identifies one request, before credentials.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// HTTP method; part of both signatures (ECS calls use POST).
    pub method: &'a str,
    /// The `Host` header exactly as sent (`host[:port]`).
    pub host: &'a str,
    /// API action, e.g. `CreateSnapshotGroup`.
    pub action: &'a str,
    /// API version, [`ECS_API_VERSION`] for ECS.
    pub version: &'a str,
    /// Operation parameters, already flattened (`DiskId.1`, `Tag.1.Key`, ...).
    pub params: &'a [(String, String)],
    /// From [`timestamp`].
    pub timestamp: &'a str,
    /// From [`nonce`].
    pub nonce: &'a str,
}

/// A V3-signed request: what to put in the URL query and which headers to send.
#[derive(Clone)]
pub struct V3Signed {
    /// The query string to send (identical to the canonical one).
    pub canonical_query: String,
    /// Canonical request (contains the security token for STS: never log it).
    pub canonical_request: String,
    /// `ACS3-HMAC-SHA256\n<hex sha256 of canonical request>`.
    pub string_to_sign: String,
    /// `;`-joined lower-case names of the signed headers.
    pub signed_headers: String,
    /// Lower-case hex HMAC-SHA256.
    pub signature: String,
    /// The `Authorization` header value.
    pub authorization: String,
    /// Headers to send besides `host` (which the HTTP client sets), including `authorization`.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for V3Signed {
    // The canonical request and headers carry the STS token: show only safe parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V3Signed")
            .field("canonical_query", &self.canonical_query)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Builds the V3 canonical request and its `SignedHeaders` from lower-case
/// header names and values (`host` included). Repeated names join with `,`.
pub fn v3_canonical_request(
    method: &str,
    canonical_query: &str,
    headers: &[(String, String)],
    payload_sha256: &str,
) -> (String, String) {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(sorted.len());
    for (k, v) in sorted {
        match merged.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let canonical_headers: String = merged.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{method}\n/\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}"
    );
    (canonical_request, signed_headers)
}

/// `(string_to_sign, hex signature)` for a canonical request; the key is the raw secret.
pub fn v3_signature(secret: &Secret, canonical_request: &str) -> (String, String) {
    let hashed = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    let string_to_sign = format!("{ACS3_ALGORITHM}\n{hashed}");
    // HMAC takes keys of any length; were that to fail, the request goes out
    // with an empty signature and ECS refuses it (no panic while frozen).
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return (string_to_sign, String::new());
    };
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    (string_to_sign, signature)
}

/// Signs an ECS call with ACS3-HMAC-SHA256 using the minimal header set
/// (`host` and `x-acs-*`), the set the public V3 example uses.
pub fn sign_v3(parts: &RequestParts<'_>, key: &SigningKey<'_>) -> V3Signed {
    let canonical_query = canonical_query(parts.params);
    let mut headers: Vec<(String, String)> = vec![
        ("x-acs-action".into(), parts.action.into()),
        ("x-acs-version".into(), parts.version.into()),
        ("x-acs-date".into(), parts.timestamp.into()),
        ("x-acs-signature-nonce".into(), parts.nonce.into()),
        ("x-acs-content-sha256".into(), EMPTY_PAYLOAD_SHA256.into()),
    ];
    if let Some(token) = key.security_token {
        headers.push(("x-acs-accesskey-id".into(), key.access_key_id.into()));
        headers.push(("x-acs-security-token".into(), token.expose().into()));
    }
    let mut signed = headers.clone();
    signed.push(("host".into(), parts.host.into()));
    let (canonical_request, signed_headers) = v3_canonical_request(
        parts.method,
        &canonical_query,
        &signed,
        EMPTY_PAYLOAD_SHA256,
    );
    let (string_to_sign, signature) = v3_signature(key.access_key_secret, &canonical_request);
    let authorization = format!(
        "{ACS3_ALGORITHM} Credential={},SignedHeaders={signed_headers},Signature={signature}",
        key.access_key_id
    );
    headers.push(("authorization".into(), authorization.clone()));
    V3Signed {
        canonical_query,
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
        headers,
    }
}

/// A v1-signed request: every parameter, common ones included, is in the query.
#[derive(Clone)]
pub struct V1Signed {
    /// All signed parameters (common + operation), without `Signature`.
    pub signed_params: Vec<(String, String)>,
    /// Canonicalized query string.
    pub canonical_query: String,
    /// `METHOD&%2F&pct(canonical_query)`.
    pub string_to_sign: String,
    /// Base64 HMAC-SHA1.
    pub signature: String,
    /// The query to send: canonical query plus `&Signature=...`. Carries the STS token.
    pub wire_query: String,
}

impl fmt::Debug for V1Signed {
    // The query and string-to-sign carry the STS token: show only the signature.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V1Signed")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// The v1 string-to-sign: `METHOD&%2F&pct(canonical_query(params))`.
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// Base64 HMAC-SHA1 of a v1 string-to-sign with key `secret + "&"`.
pub fn v1_signature(secret: &Secret, string_to_sign: &str) -> String {
    // As in `v3_signature`: an impossible key error leaves the request unsigned.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(format!("{}&", secret.expose()).as_bytes())
    else {
        return String::new();
    };
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Signs an ECS call with RPC HMAC-SHA1, adding the common parameters the
/// current SDK sends (`Format=json`, `SignatureMethod`, `SignatureVersion=1.0`, ...).
pub fn sign_v1(parts: &RequestParts<'_>, key: &SigningKey<'_>) -> V1Signed {
    let mut params: Vec<(String, String)> = parts.params.to_vec();
    params.extend([
        ("AccessKeyId".to_string(), key.access_key_id.to_string()),
        ("Action".into(), parts.action.into()),
        ("Format".into(), "json".into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureNonce".into(), parts.nonce.into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("Timestamp".into(), parts.timestamp.into()),
        ("Version".into(), parts.version.into()),
    ]);
    if let Some(token) = key.security_token {
        params.push(("SecurityToken".into(), token.expose().into()));
    }
    let canonical_query = canonical_query(&params);
    let string_to_sign = v1_string_to_sign(parts.method, &params);
    let signature = v1_signature(key.access_key_secret, &string_to_sign);
    let wire_query = format!("{canonical_query}&Signature={}", percent_encode(&signature));
    V1Signed {
        signed_params: params,
        canonical_query,
        string_to_sign,
        signature,
        wire_query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn percent_encoding_table_from_reference() {
        for (raw, enc) in [
            (" ", "%20"),
            ("*", "%2A"),
            ("~", "~"),
            ("/", "%2F"),
            ("+", "%2B"),
            ("=", "%3D"),
            ("&", "%26"),
            ("'", "%27"),
            ("(", "%28"),
            (")", "%29"),
            ("!", "%21"),
            ("%", "%25"),
            (":", "%3A"),
            (",", "%2C"),
            (";", "%3B"),
            ("[", "%5B"),
            ("]", "%5D"),
            ("\"", "%22"),
            ("备", "%E5%A4%87"),
            ("ü", "%C3%BC"),
            ("aZ09-_.", "aZ09-_."),
        ] {
            assert_eq!(percent_encode(raw), enc, "{raw:?}");
        }
    }

    #[test]
    fn canonical_query_sorts_bytewise() {
        let q = canonical_query(&p(&[
            ("DiskId.2", "b"),
            ("DiskId.10", "c"),
            ("DiskId.1", "a"),
        ]));
        assert_eq!(q, "DiskId.1=a&DiskId.10=c&DiskId.2=b");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn debug_of_signed_requests_hides_token() {
        let secret = Secret::new("sekrit-value");
        let token = Secret::new("tok-abcdefgh");
        let key = SigningKey {
            access_key_id: "STS.id",
            access_key_secret: &secret,
            security_token: Some(&token),
        };
        let parts = RequestParts {
            method: "POST",
            host: "h",
            action: "A",
            version: ECS_API_VERSION,
            params: &[],
            timestamp: "2025-01-02T03:04:05Z",
            nonce: "n",
        };
        let v3 = format!("{:?}", sign_v3(&parts, &key));
        let v1 = format!("{:?}", sign_v1(&parts, &key));
        for s in [v3, v1] {
            assert!(!s.contains("tok-abcdefgh") && !s.contains("sekrit"), "{s}");
        }
    }

    proptest::proptest! {
        /// Any UTF-8 encodes to unreserved bytes and upper-case `%XX` only, and
        /// decodes back: so the canonical query is also a safe wire query.
        #[test]
        fn percent_encoding_roundtrips(v in "\\PC*") {
            let e = percent_encode(&v);
            let bytes = e.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if b == b'%' {
                    proptest::prop_assert!(bytes[i + 1..i + 3]
                        .iter()
                        .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)));
                    i += 3;
                } else {
                    proptest::prop_assert!(b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
                    i += 1;
                }
            }
            let back = percent_encoding::percent_decode_str(&e).decode_utf8().unwrap();
            proptest::prop_assert_eq!(back, v);
        }

        /// The canonical query is sorted byte-wise by name, whatever the input order.
        #[test]
        fn canonical_query_is_order_independent(
            mut params in proptest::collection::vec(("[A-Za-z][A-Za-z0-9.]{0,12}", "\\PC{0,8}"), 0..12)
        ) {
            let a = canonical_query(&params);
            params.reverse();
            proptest::prop_assert_eq!(&a, &canonical_query(&params));
            let names: Vec<&str> = a.split('&').filter(|s| !s.is_empty()).map(|kv| kv.split('=').next().unwrap()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            proptest::prop_assert_eq!(names, sorted);
        }
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, nonce());
    }
}
