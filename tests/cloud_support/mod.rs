//! Shared test helpers for the cloud tests: a server-side signature verifier
//! written independently of `appsnap::cloud::sign` (it re-derives both schemes
//! from the wire request, as ECS does), mock IMDS answers, and log capture.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use wiremock::{Match, MockServer, Request, Respond, ResponseTemplate};

pub const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn pct(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// One key the fake server knows.
#[derive(Clone, Debug)]
pub struct KnownKey {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

/// The keys the fake server accepts.
#[derive(Clone, Debug, Default)]
pub struct KeyRing(pub Vec<KnownKey>);

impl KeyRing {
    pub fn new() -> KeyRing {
        KeyRing::default()
    }
    pub fn with(mut self, id: &str, secret: &str, token: Option<&str>) -> KeyRing {
        self.0.push(KnownKey {
            id: id.into(),
            secret: secret.into(),
            token: token.map(str::to_string),
        });
        self
    }
    fn find(&self, id: &str) -> Result<&KnownKey, String> {
        self.0
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| format!("unknown AccessKeyId {id}"))
    }
}

/// What a verified request said.
#[derive(Clone, Debug)]
pub struct Verified {
    pub scheme: &'static str,
    pub action: String,
    pub access_key_id: String,
    pub nonce: String,
    /// Operation parameters (common ones removed), decoded.
    pub params: BTreeMap<String, String>,
}

const V1_COMMON: &[&str] = &[
    "AccessKeyId",
    "Action",
    "Format",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
    "SecurityToken",
    "Signature",
];

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_time(ts: &str) -> Result<(), String> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).map_err(|e| format!("bad time {ts}: {e}"))?;
    if ts.len() != 20 || !ts.ends_with('Z') {
        return Err(format!("time {ts} is not YYYY-MM-DDThh:mm:ssZ"));
    }
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs();
    if skew > 900 {
        return Err(format!("time {ts} is {skew}s off"));
    }
    Ok(())
}

/// Recomputes the signature of `req` as the server does; Err says why it fails.
pub fn verify(req: &Request, keys: &KeyRing) -> Result<Verified, String> {
    if req.method.as_str() != "POST" {
        return Err(format!("method {}", req.method));
    }
    if req.url.path() != "/" {
        return Err(format!("path {}", req.url.path()));
    }
    let pairs: Vec<(String, String)> = req
        .url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut sorted = pairs.clone();
    sorted.sort();
    let cqs = sorted
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&");
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(auth) = header(req, "authorization") {
        let rest = auth
            .strip_prefix("ACS3-HMAC-SHA256 ")
            .ok_or("Authorization algorithm")?;
        let mut cred = None;
        let mut signed = None;
        let mut sig = None;
        for part in rest.split(',') {
            let (k, v) = part.split_once('=').ok_or("Authorization part")?;
            match k.trim() {
                "Credential" => cred = Some(v.to_string()),
                "SignedHeaders" => signed = Some(v.to_string()),
                "Signature" => sig = Some(v.to_string()),
                other => return Err(format!("unknown Authorization part {other}")),
            }
        }
        let (cred, signed, sig) = (
            cred.ok_or("no Credential")?,
            signed.ok_or("no SignedHeaders")?,
            sig.ok_or("no Signature")?,
        );
        let key = keys.find(&cred)?;
        let names: Vec<&str> = signed.split(';').collect();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        if names != sorted_names {
            return Err("SignedHeaders not sorted".into());
        }
        if !names.contains(&"host") {
            return Err("host not signed".into());
        }
        for (name, _) in req.headers.iter() {
            let n = name.as_str();
            if n.starts_with("x-acs-") && !names.contains(&n) {
                return Err(format!("{n} sent but not signed"));
            }
        }
        let body_hash = hex::encode(Sha256::digest(&req.body));
        if header(req, "x-acs-content-sha256") != Some(body_hash.as_str()) {
            return Err("x-acs-content-sha256 does not match the body".into());
        }
        let mut canon_headers = String::new();
        for n in &names {
            let v = header(req, n).ok_or_else(|| format!("signed header {n} missing"))?;
            canon_headers.push_str(&format!("{n}:{}\n", v.trim()));
        }
        let cr = format!("POST\n/\n{cqs}\n{canon_headers}\n{signed}\n{body_hash}");
        let sts = format!(
            "ACS3-HMAC-SHA256\n{}",
            hex::encode(Sha256::digest(cr.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(key.secret.as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        let want = hex::encode(mac.finalize().into_bytes());
        if want != sig {
            return Err("SignatureDoesNotMatch (V3)".into());
        }
        match (&key.token, header(req, "x-acs-security-token")) {
            (Some(t), Some(h)) if t == h => {
                if header(req, "x-acs-accesskey-id") != Some(cred.as_str()) {
                    return Err("x-acs-accesskey-id missing or wrong".into());
                }
            }
            (None, None) => {}
            _ => return Err("security token missing or wrong".into()),
        }
        check_time(header(req, "x-acs-date").ok_or("no x-acs-date")?)?;
        if header(req, "x-acs-version") != Some("2014-05-26") {
            return Err("x-acs-version".into());
        }
        Ok(Verified {
            scheme: "v3",
            action: header(req, "x-acs-action").ok_or("no x-acs-action")?.into(),
            access_key_id: cred,
            nonce: header(req, "x-acs-signature-nonce")
                .ok_or("no nonce")?
                .into(),
            params: pairs.into_iter().collect(),
        })
    } else {
        let sig = get("Signature").ok_or("neither Authorization nor Signature")?;
        let id = get("AccessKeyId").ok_or("no AccessKeyId")?;
        let key = keys.find(&id)?;
        if get("SignatureMethod").as_deref() != Some("HMAC-SHA1")
            || get("SignatureVersion").as_deref() != Some("1.0")
        {
            return Err("SignatureMethod/Version".into());
        }
        let sts = format!("POST&%2F&{}", pct(&cqs));
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(format!("{}&", key.secret).as_bytes()).unwrap();
        mac.update(sts.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if want != sig {
            return Err("SignatureDoesNotMatch (v1)".into());
        }
        if key.token != get("SecurityToken") {
            return Err("SecurityToken missing or wrong".into());
        }
        check_time(&get("Timestamp").ok_or("no Timestamp")?)?;
        if get("Version").as_deref() != Some("2014-05-26") {
            return Err("Version".into());
        }
        Ok(Verified {
            scheme: "v1",
            action: get("Action").ok_or("no Action")?,
            access_key_id: id,
            nonce: get("SignatureNonce").ok_or("no nonce")?,
            params: pairs
                .into_iter()
                .filter(|(k, _)| !V1_COMMON.contains(&k.as_str()))
                .collect(),
        })
    }
}

/// Verifies every request `server` received that was not for IMDS; also checks
/// that no nonce was used twice. Returns them in order.
pub async fn assert_all_signed(server: &MockServer, keys: &KeyRing) -> Vec<Verified> {
    let reqs = server.received_requests().await.expect("recording on");
    let mut nonces = HashSet::new();
    let mut out = Vec::new();
    for r in reqs
        .iter()
        .filter(|r| !r.url.path().starts_with("/latest/"))
    {
        let v = verify(r, keys)
            .unwrap_or_else(|e| panic!("request {} failed verification: {e}", r.url));
        assert!(nonces.insert(v.nonce.clone()), "nonce {} reused", v.nonce);
        out.push(v);
    }
    out
}

/// Matches requests for one ECS action, whichever signature scheme carries it.
pub struct ActionIs(pub &'static str);

impl Match for ActionIs {
    fn matches(&self, req: &Request) -> bool {
        header(req, "x-acs-action") == Some(self.0)
            || req
                .url
                .query_pairs()
                .any(|(k, v)| k == "Action" && v == self.0)
    }
}

/// Matches only requests whose signature verifies.
pub struct SignedBy(pub KeyRing);

impl Match for SignedBy {
    fn matches(&self, req: &Request) -> bool {
        verify(req, &self.0).is_ok()
    }
}

/// An ECS error answer.
pub fn ecs_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "RequestId": format!("req-{code}"),
        "HostId": "ecs.cn-hangzhou.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}&product=Ecs"),
    }))
}

/// An ECS success answer.
pub fn ecs_ok(mut body: serde_json::Value) -> ResponseTemplate {
    body["RequestId"] = "req-ok".into();
    ResponseTemplate::new(200).set_body_json(body)
}

/// A responder that returns the given templates in order, then repeats the last.
pub struct Sequence(pub Mutex<Vec<ResponseTemplate>>);

impl Sequence {
    pub fn new(mut v: Vec<ResponseTemplate>) -> Sequence {
        v.reverse();
        Sequence(Mutex::new(v))
    }
}

impl Respond for Sequence {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let mut v = self.0.lock().unwrap();
        if v.len() > 1 {
            v.pop().unwrap()
        } else {
            v[0].clone()
        }
    }
}

/// IMDS role credentials JSON.
pub fn role_credentials_json(
    id: &str,
    secret: &str,
    token: &str,
    valid: chrono::Duration,
) -> String {
    let now = chrono::Utc::now();
    serde_json::json!({
        "AccessKeyId": id,
        "AccessKeySecret": secret,
        "SecurityToken": token,
        "Expiration": (now + valid).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "LastUpdated": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "Code": "Success",
    })
    .to_string()
}

/// Captured log output (every level, every target).
#[derive(Clone, Default)]
pub struct LogBuf(pub Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes every TRACE-and-above event of this thread into a buffer
/// (use with a current-thread runtime so all tasks log here).
pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, LogBuf) {
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), buf)
}
