//! The webhook sink: the event as a JSON `POST`, signed with HMAC-SHA256
//! when a key file is set (`X-Appsnap-Signature: sha256=<hex>` over the exact
//! body bytes, as GitHub's webhooks do).
//!
//! The URL is https, or http to loopback only (checked by the policy); no
//! redirect is followed (it would send the signed event elsewhere); the
//! answer's body is read only up to [`ANSWER_LIMIT`] for the error message.
//! The key is read at each delivery from a root-only file, never from the
//! policy (which everyone may read), and never logged.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::event::Event;
use super::AttemptError;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Appsnap-Signature";
/// The event kind header (so a receiver can route before parsing).
pub const EVENT_HEADER: &str = "X-Appsnap-Event";
/// The most of an answer's body read (for the error message).
pub const ANSWER_LIMIT: usize = 1024;
/// The largest key file accepted.
pub const KEY_FILE_LIMIT: u64 = 4096;

/// The HTTP client for webhooks and pings: no redirects, short connects.
/// `direct` ignores the environment's proxies: a loopback receiver is on
/// this machine, and a proxy would answer for it (or refuse it).
pub fn client(direct: bool) -> Result<reqwest::Client, reqwest::Error> {
    crate::cloud::tls::install_provider();
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("appsnap/", env!("CARGO_PKG_VERSION")));
    if direct {
        b = b.no_proxy();
    }
    b.build()
}

/// Whether `url` names this machine (loopback), which is reached directly.
pub fn is_loopback(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An HMAC key whose bytes never reach a log, an error or `Debug`.
pub struct HmacKey(Vec<u8>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    /// Reads the key: the file and the way to it trusted (root's, writable by
    /// no one else), readable by no one else either, not empty; a trailing
    /// newline is not part of the key.
    pub fn read(path: &Path) -> Result<HmacKey, String> {
        let bytes = crate::securefs::read_trusted_file(path, KEY_FILE_LIMIT)
            .map_err(|e| format!("webhook key: {e}"))?;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("webhook key {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "webhook key {}: mode {:o} lets group or others read it; chmod 0600",
                path.display(),
                mode & 0o7777
            ));
        }
        let mut key = bytes;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        if key.is_empty() {
            return Err(format!("webhook key {}: the file is empty", path.display()));
        }
        Ok(HmacKey(key))
    }

    /// From bytes (tests).
    pub fn from_bytes(b: &[u8]) -> HmacKey {
        HmacKey(b.to_vec())
    }

    /// `sha256=<hex of HMAC-SHA256(key, body)>`.
    pub fn signature(&self, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// One delivery attempt of `e` to `url`.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    key_file: Option<&Path>,
    e: &Event,
) -> Result<(), AttemptError> {
    let body = serde_json::to_vec(e)
        .map_err(|err| AttemptError::permanent(format!("cannot encode the event: {err}")))?;
    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, e.event.as_str());
    if let Some(path) = key_file {
        let key = HmacKey::read(path).map_err(AttemptError::permanent)?;
        req = req.header(SIGNATURE_HEADER, key.signature(&body));
    }
    let resp = req.body(body).send().await.map_err(|err| {
        AttemptError::transient(format!("POST {}: {}", redacted(url), transport(&err)))
    })?;
    answer(resp, url).await
}

/// 2xx is delivered; 5xx, 408 and 429 may be retried; anything else
/// (a redirect too) is refused for good.
pub(crate) async fn answer(mut resp: reqwest::Response, url: &str) -> Result<(), AttemptError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let mut text = Vec::new();
    while text.len() < ANSWER_LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => text.extend_from_slice(&c[..c.len().min(ANSWER_LIMIT - text.len())]),
            _ => break,
        }
    }
    let text: String = String::from_utf8_lossy(&text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let msg = if status.is_redirection() {
        format!(
            "{} answered {status} (a redirect, not followed)",
            redacted(url)
        )
    } else {
        format!("{} answered {status}: {}", redacted(url), text.trim())
    };
    let retry = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
    Err(AttemptError {
        message: msg,
        retry,
    })
}

/// The URL for messages: scheme, host and port only; a path may hold a
/// token (healthchecks' UUIDs, Slack's hook paths).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<url>".to_string(),
    }
}

/// A transport error without the URL reqwest puts in its message.
pub(crate) fn transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (key "Jefe").
    #[test]
    fn signature_is_hmac_sha256_hex() {
        let k = HmacKey::from_bytes(b"Jefe");
        assert_eq!(
            k.signature(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(format!("{k:?}"), "HmacKey(<redacted>)");
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:9000/hook"));
        assert!(is_loopback("http://[::1]/x"));
        assert!(is_loopback("http://localhost/x"));
        assert!(!is_loopback("https://hc-ping.com/x"));
        assert!(!is_loopback("https://127.0.0.1.example.com/x"));
    }

    #[test]
    fn redacted_urls_keep_no_path() {
        assert_eq!(
            redacted("https://hc-ping.com/5f3e-secret-uuid"),
            "https://hc-ping.com/…"
        );
        assert_eq!(
            redacted("http://127.0.0.1:8080/x?y"),
            "http://127.0.0.1:8080/…"
        );
    }

    #[test]
    fn a_key_others_can_read_is_refused_and_never_shown() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: key files must be root's; not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "s3cret-key\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = HmacKey::read(&p).unwrap_err();
        assert!(e.contains("chmod 0600"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = HmacKey::read(&p).unwrap();
        assert_eq!(
            k.signature(b"x"),
            HmacKey::from_bytes(b"s3cret-key").signature(b"x")
        );
    }
}
