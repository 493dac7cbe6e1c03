//! Server-side signature computation for both schemes ECS accepts, written
//! from the vendor's spec (not from appsnap's client) so the two cannot share
//! a bug. Pure functions: the caller supplies the received request.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::pct::encode;

/// The V3 algorithm name, the only one this emulator accepts for V3.
pub const ACS3: &str = "ACS3-HMAC-SHA256";

/// Builds `k=v&k=v` over byte-wise sorted raw names, both sides encoded.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// V1 (RPC HMAC-SHA1) string-to-sign over every parameter except `Signature`.
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let signed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    format!(
        "{}&{}&{}",
        method.to_uppercase(),
        encode("/"),
        encode(&canonical_query(&signed))
    )
}

/// V1 signature: Base64(HMAC-SHA1(secret + "&", string_to_sign)).
pub fn v1_signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The parts of a V3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    /// `Credential=`.
    pub access_key_id: String,
    /// `SignedHeaders=`, split on `;`, as sent.
    pub signed_headers: Vec<String>,
    /// `Signature=` (lower-case hex).
    pub signature: String,
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
pub fn parse_authorization(value: &str) -> Result<V3Authorization, ApiError> {
    let incomplete = |what: &str| {
        ApiError::new(
            400,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards: {what}"),
        )
    };
    let (algo, rest) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| incomplete("malformed Authorization header"))?;
    if algo != ACS3 {
        return Err(ApiError::new(
            400,
            "InvalidSignatureMethod",
            format!("The specified signature method {algo} is not supported."),
        ));
    }
    let (mut cred, mut sh, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("malformed Authorization header"))?;
        match k {
            "Credential" => cred = Some(v.to_string()),
            "SignedHeaders" => sh = Some(v.to_string()),
            "Signature" => sig = Some(v.to_string()),
            _ => return Err(incomplete("unknown Authorization field")),
        }
    }
    let cred = cred
        .filter(|c| !c.is_empty())
        .ok_or_else(|| incomplete("missing Credential"))?;
    let sh = sh
        .filter(|c| !c.is_empty())
        .ok_or_else(|| incomplete("missing SignedHeaders"))?;
    let sig = sig
        .filter(|c| !c.is_empty())
        .ok_or_else(|| incomplete("missing Signature"))?;
    Ok(V3Authorization {
        access_key_id: cred,
        signed_headers: sh.split(';').map(|s| s.to_string()).collect(),
        signature: sig,
    })
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// V3 canonical request. `headers` are the received headers (any case);
/// every name in `signed_headers` is looked up, trimmed, and repeated
/// values are joined with `,`. `payload_hash` is the hash of the body as
/// received.
pub fn v3_canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let mut names: Vec<String> = signed_headers.iter().map(|h| h.to_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut canon_headers = String::new();
    for name in &names {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        canon_headers.push_str(name);
        canon_headers.push(':');
        canon_headers.push_str(&values.join(","));
        canon_headers.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_uppercase(),
        if path.is_empty() { "/" } else { path },
        canonical_query(query),
        canon_headers,
        names.join(";"),
        payload_hash
    )
}

/// V3 string-to-sign and signature for a canonical request:
/// hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\n" + hex(sha256(canonical)))).
pub fn v3_sign(secret: &str, canonical_request: &str) -> (String, String) {
    let sts = format!("{ACS3}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(sts.as_bytes());
    (sts, hex::encode(mac.finalize().into_bytes()))
}

/// Compares two signatures without an early exit, so timing reveals nothing.
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
