//! Authentication of an incoming ECS request, in the order the emulator
//! checks it: signature scheme and required fields, AccessKeyId, signature,
//! STS token, timestamp window, nonce reuse. Every failure is the vendor's
//! code and HTTP status.

use chrono::Duration;

use crate::error::ApiError;
use crate::pct::form_decode;
use crate::state::Sim;
use crate::util::parse_time;
use crate::verify;

/// The two request signing schemes ECS accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigVersion {
    /// RPC HMAC-SHA1 (`SignatureVersion=1.0`).
    V1,
    /// ACS3-HMAC-SHA256.
    V3,
}

impl SigVersion {
    /// Name used in the request log.
    pub fn as_str(self) -> &'static str {
        match self {
            SigVersion::V1 => "v1-hmac-sha1",
            SigVersion::V3 => "v3-acs3-hmac-sha256",
        }
    }
}

/// A received ECS request, as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// `GET`/`POST`.
    pub method: String,
    /// Request path (RPC: `/`).
    pub path: String,
    /// The raw query string, form-decoded into pairs.
    pub query: Vec<(String, String)>,
    /// Header names and values as received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body_params(&self) -> Vec<(String, String)> {
        let form = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form && !self.body.is_empty() {
            form_decode(&String::from_utf8_lossy(&self.body))
        } else {
            Vec::new()
        }
    }
}

/// What is known about a request even when it is rejected (for the log).
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Scheme, once recognised.
    pub version: Option<SigVersion>,
    /// Action, once found.
    pub action: Option<String>,
    /// AccessKeyId, once found (not a secret).
    pub access_key_id: Option<String>,
    /// All parameters received (query + form body + V3 action header),
    /// unredacted: the caller redacts before logging.
    pub params: Vec<(String, String)>,
}

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The action.
    pub action: String,
    /// `Version` / `x-acs-version`.
    pub api_version: String,
    /// The caller.
    pub access_key_id: String,
    /// Operation parameters (common parameters removed).
    pub params: Vec<(String, String)>,
}

/// RPC common parameters, never passed on to the action.
const COMMON: &[&str] = &[
    "AccessKeyId",
    "Action",
    "Version",
    "Format",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "SecurityToken",
    "Signature",
];

/// The one place the timestamp window is defined (ECS: 15 minutes).
const MAX_SKEW_MINUTES: i64 = 15;

/// Authenticates `req` against the emulator's keys and clock.
pub fn authenticate(sim: &Sim, req: &Incoming) -> (Meta, Result<Authed, ApiError>) {
    let mut meta = Meta::default();
    let r = if let Some(authz) = req.header("authorization") {
        meta.version = Some(SigVersion::V3);
        authenticate_v3(sim, req, authz, &mut meta)
    } else {
        meta.version = Some(SigVersion::V1);
        authenticate_v1(sim, req, &mut meta)
    };
    (meta, r)
}

fn get<'a>(params: &'a [(String, String)], k: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn authenticate_v1(sim: &Sim, req: &Incoming, meta: &mut Meta) -> Result<Authed, ApiError> {
    let mut params = req.query.clone();
    params.extend(req.body_params());
    meta.params = params.clone();
    meta.action = get(&params, "Action").map(str::to_string);
    meta.access_key_id = get(&params, "AccessKeyId").map(str::to_string);
    let signature = get(&params, "Signature").ok_or_else(|| ApiError::missing("Signature"))?;
    for p in [
        "AccessKeyId",
        "Action",
        "Version",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ] {
        if get(&params, p).is_none_or(str::is_empty) {
            return Err(ApiError::missing(p));
        }
    }
    let method = get(&params, "SignatureMethod").unwrap_or_default();
    if method != "HMAC-SHA1" {
        return Err(ApiError::new(
            400,
            "InvalidSignatureMethod",
            format!("The specified signature method {method} is not supported."),
        ));
    }
    let sv = get(&params, "SignatureVersion").unwrap_or_default();
    if sv != "1.0" {
        return Err(ApiError::new(
            400,
            "InvalidSignatureVersion",
            format!("The specified signature version {sv} is not supported."),
        ));
    }
    let ts = get(&params, "Timestamp").unwrap_or_default().to_string();
    let ak = get(&params, "AccessKeyId").unwrap_or_default().to_string();
    let nonce = get(&params, "SignatureNonce")
        .unwrap_or_default()
        .to_string();
    let token = get(&params, "SecurityToken").map(str::to_string);
    let secret = lookup_secret(sim, &ak)?;
    let sts = verify::v1_string_to_sign(&req.method, &params);
    let expected = verify::v1_signature(&secret, &sts);
    if !verify::ct_eq(&expected, signature) {
        return Err(sig_mismatch(&sts));
    }
    check_token(sim, &ak, token.as_deref())?;
    check_time_and_nonce(sim, &ak, &ts, &nonce)?;
    let action = get(&params, "Action").unwrap_or_default().to_string();
    let api_version = get(&params, "Version").unwrap_or_default().to_string();
    let params = params
        .into_iter()
        .filter(|(k, _)| !COMMON.contains(&k.as_str()))
        .collect();
    Ok(Authed {
        action,
        api_version,
        access_key_id: ak,
        params,
    })
}

fn authenticate_v3(
    sim: &Sim,
    req: &Incoming,
    authz: &str,
    meta: &mut Meta,
) -> Result<Authed, ApiError> {
    let mut params = req.query.clone();
    params.extend(req.body_params());
    meta.params = params.clone();
    meta.action = req.header("x-acs-action").map(str::to_string);
    let a = verify::parse_authorization(authz)?;
    meta.access_key_id = Some(a.access_key_id.clone());
    for h in [
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
    ] {
        if req.header(h).is_none_or(str::is_empty) {
            return Err(ApiError::missing(h));
        }
    }
    // ECS requires host and every x-acs-* header to be covered by the signature.
    let signed: Vec<String> = a.signed_headers.iter().map(|h| h.to_lowercase()).collect();
    for (name, _) in &req.headers {
        let n = name.to_lowercase();
        if (n == "host" || n.starts_with("x-acs-")) && !signed.contains(&n) {
            return Err(ApiError::new(
                400,
                "IncompleteSignature",
                format!("The request signature does not conform to Aliyun standards: header {n} must be signed."),
            ));
        }
    }
    if !signed.iter().any(|h| h == "host") {
        return Err(ApiError::new(
            400,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards: header host must be signed.",
        ));
    }
    let secret = lookup_secret(sim, &a.access_key_id)?;
    let payload_hash = verify::sha256_hex(&req.body);
    if let Some(claimed) = req.header("x-acs-content-sha256") {
        if claimed.trim() != payload_hash {
            // The signature covers the claimed hash; a body that does not match
            // it was altered in transit, which is a signature failure.
            let canon = verify::v3_canonical_request(
                &req.method,
                &req.path,
                &req.query,
                &req.headers,
                &a.signed_headers,
                &payload_hash,
            );
            return Err(sig_mismatch(&verify::v3_sign(&secret, &canon).0));
        }
    }
    let canon = verify::v3_canonical_request(
        &req.method,
        &req.path,
        &req.query,
        &req.headers,
        &a.signed_headers,
        &payload_hash,
    );
    let (sts, expected) = verify::v3_sign(&secret, &canon);
    if !verify::ct_eq(&expected, &a.signature) {
        return Err(sig_mismatch(&sts));
    }
    check_token(sim, &a.access_key_id, req.header("x-acs-security-token"))?;
    let ts = req.header("x-acs-date").unwrap_or_default().to_string();
    let nonce = req
        .header("x-acs-signature-nonce")
        .unwrap_or_default()
        .to_string();
    check_time_and_nonce(sim, &a.access_key_id, &ts, &nonce)?;
    Ok(Authed {
        action: req.header("x-acs-action").unwrap_or_default().to_string(),
        api_version: req.header("x-acs-version").unwrap_or_default().to_string(),
        access_key_id: a.access_key_id,
        params: params
            .into_iter()
            .filter(|(k, _)| !COMMON.contains(&k.as_str()))
            .collect(),
    })
}

fn sig_mismatch(sts: &str) -> ApiError {
    ApiError::new(
        400,
        "SignatureDoesNotMatch",
        format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
    )
}

/// Secret for a long-lived key or an STS key the metadata service issued.
fn lookup_secret(sim: &Sim, ak: &str) -> Result<String, ApiError> {
    if let Some(k) = sim.cfg.access_keys.iter().find(|k| k.id == ak) {
        if !k.active {
            return Err(ApiError::new(
                403,
                "InvalidAccessKeyId.Inactive",
                "Specified access key is disabled.",
            ));
        }
        return Ok(k.secret.clone());
    }
    if let Some(c) = sim.lock().creds.iter().find(|c| c.access_key_id == ak) {
        return Ok(c.secret.clone());
    }
    Err(ApiError::new(
        404,
        "InvalidAccessKeyId.NotFound",
        "Specified access key is not found.",
    ))
}

/// STS keys need their own token, unexpired; long-lived keys need none.
fn check_token(sim: &Sim, ak: &str, token: Option<&str>) -> Result<(), ApiError> {
    let inner = sim.lock();
    let Some(c) = inner.creds.iter().find(|c| c.access_key_id == ak) else {
        return Ok(());
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            400,
            "MissingSecurityToken",
            "SecurityToken is mandatory for this action.",
        ));
    };
    if !verify::ct_eq(token, &c.token) {
        return Err(ApiError::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "The Security Token does not match access key Id.",
        ));
    }
    if inner.now() >= c.expires {
        return Err(ApiError::new(
            400,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        ));
    }
    Ok(())
}

fn check_time_and_nonce(sim: &Sim, ak: &str, ts: &str, nonce: &str) -> Result<(), ApiError> {
    let t = parse_time(ts).ok_or_else(|| {
        ApiError::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    })?;
    let mut inner = sim.lock();
    let skew = (inner.now() - t).abs();
    if skew > Duration::minutes(MAX_SKEW_MINUTES) {
        return Err(ApiError::new(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    inner.prune_nonces();
    let key = (ak.to_string(), nonce.to_string());
    if inner.nonces.contains_key(&key) {
        return Err(ApiError::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    let now = inner.now();
    inner.nonces.insert(key, now);
    Ok(())
}
