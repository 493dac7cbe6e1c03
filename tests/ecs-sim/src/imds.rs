//! The instance metadata service (100.100.100.200) in hardened mode: token
//! PUT with TTL validation, `X-Forwarded-For` refusal, token-required mode,
//! identity items, and rotating RAM role credentials in the vendor's JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use chrono::Duration;
use serde_json::json;

use crate::config::HttpTokens;
use crate::reqlog::redact_answer;
use crate::state::{Instance, Sim};
use crate::util::{fmt_time, rand_hex};

/// Header carrying the token on GETs.
pub const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
/// Header carrying the TTL on the token PUT.
pub const TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";

fn text(status: StatusCode, body: impl Into<String>) -> (StatusCode, String) {
    (status, body.into())
}

/// One instance's metadata service: the world and whose service it is.
#[derive(Debug, Clone)]
pub struct Service {
    /// The shared world.
    pub sim: Arc<Sim>,
    /// The instance this service belongs to (it sees only its own identity,
    /// disks, role and tokens).
    pub instance: Instance,
}

/// Serves every metadata path (also proxy-form requests: only the path counts).
pub async fn handle(
    State(svc): State<Service>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let Service { sim, instance } = svc;
    let path = uri.path().to_string();
    let (status, body, is_creds) = answer(&sim, &instance, &method, &path, &headers);
    {
        let mut inner = sim.lock();
        *inner.counters.entry(format!("imds {path}")).or_default() += 1;
    }
    let logged = if is_creds && status == StatusCode::OK {
        serde_json::from_str(&body)
            .map(|v| redact_answer(&v))
            .unwrap_or(serde_json::Value::Null)
    } else if path == "/latest/api/token" && status == StatusCode::OK {
        json!("***")
    } else {
        json!(body)
    };
    sim.log.write(&json!({
        "time": crate::util::log_time(sim.now()),
        "service": "imds",
        "instance": instance.id,
        "method": method.as_str(),
        "path": path,
        "token_sent": headers.contains_key(TOKEN_HEADER),
        "verdict": if status.is_success() { "accepted" } else { "rejected" },
        "status": status.as_u16(),
        "answer": logged,
    }));
    let ctype = if is_creds || path.ends_with("/document") {
        "application/json"
    } else {
        "text/plain"
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Body::from(body))
        .expect("static response parts are valid")
}

fn answer(
    sim: &Sim,
    inst: &Instance,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> (StatusCode, String, bool) {
    if let Some(code) = sim.lock().faults.on_imds() {
        let s = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            s,
            "metadata service unavailable (injected fault)".into(),
            false,
        );
    }
    if path == "/latest/api/token" {
        let (s, b) = put_token(sim, inst, method, headers);
        return (s, b, false);
    }
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed".into(),
            false,
        );
    }
    match headers.get(TOKEN_HEADER).map(|v| v.to_str().unwrap_or("")) {
        Some(tok) => {
            let inner = sim.lock();
            let ok = inner
                .imds_tokens
                .get(tok)
                .is_some_and(|(owner, exp)| *owner == inst.id && *exp > inner.now());
            if !ok {
                return (StatusCode::UNAUTHORIZED, "Unauthorized".into(), false);
            }
        }
        None if sim.cfg.http_tokens == HttpTokens::Required => {
            return (StatusCode::FORBIDDEN, "Forbidden".into(), false);
        }
        None => {}
    }
    let (s, b) = get_item(sim, inst, path);
    let is_creds = s == StatusCode::OK
        && inst
            .ram_role
            .as_ref()
            .is_some_and(|r| path == format!("/latest/meta-data/ram/security-credentials/{r}"));
    (s, b, is_creds)
}

fn put_token(
    sim: &Sim,
    inst: &Instance,
    method: &Method,
    headers: &HeaderMap,
) -> (StatusCode, String) {
    if method != Method::PUT {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    if headers.contains_key("x-forwarded-for") {
        return text(StatusCode::FORBIDDEN, "Forbidden");
    }
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let Some(ttl) = ttl.filter(|t| (1..=21600).contains(t)) else {
        return text(StatusCode::BAD_REQUEST, "Missing or Invalid Parameters");
    };
    let token = rand_hex(28);
    let mut inner = sim.lock();
    let exp = inner.now() + Duration::seconds(ttl);
    let now = inner.now();
    inner.imds_tokens.retain(|_, (_, e)| *e > now);
    inner
        .imds_tokens
        .insert(token.clone(), (inst.id.clone(), exp));
    text(StatusCode::OK, token)
}

fn get_item(sim: &Sim, inst: &Instance, path: &str) -> (StatusCode, String) {
    let c = &sim.cfg;
    // Only the disks attached to this instance are its own.
    let disks: Vec<_> = c
        .disks
        .iter()
        .filter(|d| sim.disk_instance(d) == inst.id)
        .collect();
    let not_found = || text(StatusCode::NOT_FOUND, "Not Found");
    let Some(rest) = path.strip_prefix("/latest/") else {
        return not_found();
    };
    match rest {
        "meta-data" | "meta-data/" => text(
            StatusCode::OK,
            "disks/\ninstance-id\nowner-account-id\nram/\nregion-id\nzone-id",
        ),
        "meta-data/instance-id" => text(StatusCode::OK, inst.id.clone()),
        "meta-data/region-id" => text(StatusCode::OK, c.region_id.clone()),
        "meta-data/zone-id" => text(StatusCode::OK, inst.zone_id.clone()),
        "meta-data/owner-account-id" => text(StatusCode::OK, c.owner_account_id.clone()),
        "meta-data/ram/" => text(StatusCode::OK, "security-credentials/"),
        "dynamic/instance-identity/document" => text(
            StatusCode::OK,
            json!({
                "instance-id": inst.id,
                "region-id": c.region_id,
                "zone-id": inst.zone_id,
                "owner-account-id": c.owner_account_id,
                "instance-type": c.instance_type,
                "image-id": "debian_12_x64_20G_alibase_20250101.vhd",
                "serial-number": "00000000-0000-0000-0000-000000000000",
                "mac": "00:16:3e:00:00:01",
                "private-ipv4": "192.168.0.10",
                "private-ip": "192.168.0.10",
            })
            .to_string(),
        ),
        "meta-data/ram/security-credentials/" | "meta-data/ram/security-credentials" => {
            match &inst.ram_role {
                Some(r) => text(StatusCode::OK, r.clone()),
                None => not_found(),
            }
        }
        "meta-data/disks/" | "meta-data/disks" => {
            let list: Vec<String> = disks.iter().map(|d| format!("{}/", d.serial())).collect();
            text(StatusCode::OK, list.join("\n"))
        }
        _ => {
            if let Some(role) = rest.strip_prefix("meta-data/ram/security-credentials/") {
                if inst.ram_role.as_deref() == Some(role) {
                    let cred = sim
                        .lock()
                        .current_creds(&inst.id, c.credential_lifetime_secs);
                    // Written by hand to keep the reference's field order.
                    let body = format!(
                        "{{\"AccessKeyId\":{},\"AccessKeySecret\":{},\"Expiration\":{},\"SecurityToken\":{},\"LastUpdated\":{},\"Code\":\"Success\"}}",
                        json!(cred.access_key_id),
                        json!(cred.secret),
                        json!(fmt_time(cred.expires)),
                        json!(cred.token),
                        json!(fmt_time(cred.issued)),
                    );
                    return text(StatusCode::OK, body);
                }
                return not_found();
            }
            if let Some(d) = rest.strip_prefix("meta-data/disks/") {
                let (serial, item) = d.split_once('/').unwrap_or((d, ""));
                if let Some(disk) = disks.iter().find(|x| x.serial() == serial) {
                    return match item {
                        "" => text(StatusCode::OK, "id\nname"),
                        "id" => text(StatusCode::OK, disk.id.clone()),
                        "name" => text(StatusCode::OK, String::new()),
                        _ => not_found(),
                    };
                }
            }
            not_found()
        }
    }
}
