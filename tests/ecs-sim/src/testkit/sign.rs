//! The test client's signer. Written on purpose without any code from
//! `crate::verify` or `crate::pct`: its own encoder, its own sort and
//! canonical strings, so a shared mistake cannot make both sides agree.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::http::{send, HttpResponse, RawRequest};

/// Access key, secret and (for STS) the security token.
#[derive(Debug, Clone)]
pub struct Creds {
    /// AccessKeyId.
    pub access_key_id: String,
    /// AccessKeySecret.
    pub secret: String,
    /// SecurityToken, for STS credentials.
    pub token: Option<String>,
}

/// Which signature scheme the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RPC HMAC-SHA1.
    V1,
    /// ACS3-HMAC-SHA256.
    V3,
}

/// RFC 3986 encoding, byte by byte: unreserved bytes literal, others `%XX`.
pub fn rfc3986(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sorted_query(params: &[(String, String)]) -> String {
    let mut v: Vec<(String, String)> = params.to_vec();
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let parts: Vec<String> = v
        .iter()
        .map(|(k, val)| format!("{}={}", rfc3986(k), rfc3986(val)))
        .collect();
    parts.join("&")
}

/// V1: the full signed parameter list (common + operation + `Signature`)
/// and the string-to-sign, for `method` (POST/GET).
pub fn sign_v1(
    method: &str,
    action: &str,
    op_params: &[(String, String)],
    creds: &Creds,
    timestamp: &str,
    nonce: &str,
) -> (Vec<(String, String)>, String) {
    let mut p: Vec<(String, String)> = op_params.to_vec();
    let mut add = |k: &str, v: &str| p.push((k.to_string(), v.to_string()));
    add("Action", action);
    add("Version", "2014-05-26");
    // JSON unless the caller chose a Format itself (the API's default is XML).
    if !op_params.iter().any(|(k, _)| k == "Format") {
        add("Format", "JSON");
    }
    add("AccessKeyId", &creds.access_key_id);
    add("SignatureMethod", "HMAC-SHA1");
    add("SignatureVersion", "1.0");
    add("SignatureNonce", nonce);
    add("Timestamp", timestamp);
    if let Some(t) = &creds.token {
        add("SecurityToken", t);
    }
    let (sig, sts) = sign_v1_params(method, &p, &creds.secret);
    p.push(("Signature".into(), sig));
    (p, sts)
}

/// V1 core: signature and string-to-sign over exactly `params` (which must
/// not contain `Signature`).
pub fn sign_v1_params(method: &str, params: &[(String, String)], secret: &str) -> (String, String) {
    let sts = format!("{method}&%2F&{}", rfc3986(&sorted_query(params)));
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("any key length");
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (sig, sts)
}

/// V3 output: headers to send (with `Authorization`) and the canonical request.
#[derive(Debug, Clone)]
pub struct V3Signed {
    /// Headers to send, `authorization` included.
    pub headers: Vec<(String, String)>,
    /// The canonical request that was signed.
    pub canonical_request: String,
    /// The signature (hex).
    pub signature: String,
}

/// V3 with the minimal header set (host + x-acs-*), like a Rust client.
#[allow(clippy::too_many_arguments)]
pub fn sign_v3(
    method: &str,
    host: &str,
    action: &str,
    query: &[(String, String)],
    body: &[u8],
    creds: &Creds,
    date: &str,
    nonce: &str,
) -> V3Signed {
    let body_hash = hex::encode(Sha256::digest(body));
    let mut h: Vec<(String, String)> = vec![
        ("host".into(), host.into()),
        ("x-acs-action".into(), action.into()),
        ("x-acs-content-sha256".into(), body_hash.clone()),
        ("x-acs-date".into(), date.into()),
        ("x-acs-signature-nonce".into(), nonce.into()),
        ("x-acs-version".into(), "2014-05-26".into()),
    ];
    if let Some(t) = &creds.token {
        h.push(("x-acs-accesskey-id".into(), creds.access_key_id.clone()));
        h.push(("x-acs-security-token".into(), t.clone()));
    }
    sign_v3_headers(method, query, body, h, creds)
}

/// V3 over an explicit header set: every header given is signed.
pub fn sign_v3_headers(
    method: &str,
    query: &[(String, String)],
    body: &[u8],
    mut headers: Vec<(String, String)>,
    creds: &Creds,
) -> V3Signed {
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let canon_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{}:{}\n", k.to_lowercase(), v.trim()))
        .collect();
    let signed: Vec<String> = headers.iter().map(|(k, _)| k.to_lowercase()).collect();
    let signed = signed.join(";");
    let canonical_request = format!(
        "{method}\n/\n{}\n{canon_headers}\n{signed}\n{}",
        sorted_query(query),
        hex::encode(Sha256::digest(body))
    );
    let sts = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(creds.secret.as_bytes()).expect("any key length");
    mac.update(sts.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    headers.push((
        "authorization".into(),
        format!(
            "ACS3-HMAC-SHA256 Credential={},SignedHeaders={signed},Signature={signature}",
            creds.access_key_id
        ),
    ));
    V3Signed {
        headers,
        canonical_request,
        signature,
    }
}

/// The current UTC time in the wire format.
pub fn now_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh random nonce.
pub fn fresh_nonce() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS random source");
    hex::encode(b)
}

/// A signing ECS client for tests and the demo.
#[derive(Debug, Clone)]
pub struct EcsClient {
    /// `http://127.0.0.1:P`.
    pub base_url: String,
    /// Credentials.
    pub creds: Creds,
    /// Scheme.
    pub scheme: Scheme,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Ask for JSON (V3 `Accept: application/json`, V1 `Format=JSON`), as the
    /// official SDK does; `false` gets the API's default, XML.
    pub accept_json: bool,
}

impl EcsClient {
    /// A client with a 60 s timeout.
    pub fn new(base_url: &str, creds: Creds, scheme: Scheme) -> Self {
        EcsClient {
            base_url: base_url.to_string(),
            creds,
            scheme,
            timeout: Duration::from_secs(60),
            accept_json: true,
        }
    }

    /// Builds the signed request (now, fresh nonce) without sending it.
    pub fn build(&self, action: &str, params: &[(&str, &str)]) -> RawRequest {
        self.build_at(action, params, &now_stamp(), &fresh_nonce())
    }

    /// Builds the signed request with a given timestamp and nonce.
    pub fn build_at(
        &self,
        action: &str,
        params: &[(&str, &str)],
        ts: &str,
        nonce: &str,
    ) -> RawRequest {
        let mut p: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self.scheme {
            Scheme::V1 => {
                if !self.accept_json && !p.iter().any(|(k, _)| k == "Format") {
                    p.push(("Format".into(), "XML".into()));
                }
                let (all, _) = sign_v1("POST", action, &p, &self.creds, ts, nonce);
                RawRequest {
                    method: "POST".into(),
                    target: format!("/?{}", sorted_query(&all)),
                    headers: vec![],
                    body: vec![],
                }
            }
            Scheme::V3 => {
                let host = super::http::authority(&self.base_url).to_string();
                let s = sign_v3("POST", &host, action, &p, b"", &self.creds, ts, nonce);
                let mut headers = s.headers;
                if self.accept_json {
                    // Unsigned, as the signing spec allows for `accept`.
                    headers.push(("accept".into(), "application/json".into()));
                }
                RawRequest {
                    method: "POST".into(),
                    target: format!("/?{}", sorted_query(&p)),
                    headers,
                    body: vec![],
                }
            }
        }
    }

    /// Signs and sends one action.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
        let req = self.build(action, params);
        self.send(&req)
    }

    /// Sends a prepared request.
    pub fn send(&self, req: &RawRequest) -> std::io::Result<HttpResponse> {
        send(&self.base_url, req, self.timeout)
    }
}
