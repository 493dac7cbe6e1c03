//! The ECS OpenAPI endpoint: authenticate, apply faults, dispatch, answer in
//! the vendor's JSON shape, and write one request-log line.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::{json, Value};

use crate::actions::{dispatch, Outcome};
use crate::auth::{authenticate, Incoming};
use crate::params::Params;
use crate::pct::form_decode;
use crate::reqlog::{redact_answer, redact_params};
use crate::state::Sim;
use crate::util::request_id;

/// Handles one ECS API request.
pub async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let rid = request_id();
    let host_id = format!("ecs.{}.aliyuncs.com", sim.cfg.region_id);
    let incoming = Incoming {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: form_decode(uri.query().unwrap_or("")),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let (meta, auth) = authenticate(&sim, &incoming);
    let mut verdict = "accepted";
    let mut accept = None;
    let (status, mut answer) = match auth {
        Err(e) => {
            verdict = "rejected";
            (e.status, e.body(&rid, &host_id))
        }
        Ok(a) => {
            {
                let mut inner = sim.lock();
                *inner.counters.entry(a.action.clone()).or_default() += 1;
            }
            let decision = sim.lock().faults.on_ecs(&a.action, &a.access_key_id);
            if !decision.delay.is_zero() {
                tokio::time::sleep(decision.delay).await;
            }
            if let Some(e) = decision.error {
                verdict = "fault";
                (e.status, e.body(&rid, &host_id))
            } else {
                let r = match dispatch(sim.clone(), &a.action, &a.api_version, Params(a.params))
                    .await
                {
                    Ok(Outcome { body, accept: acc }) => {
                        accept = acc;
                        (200, body)
                    }
                    Err(e) => {
                        verdict = "error";
                        (e.status, e.body(&rid, &host_id))
                    }
                };
                if !decision.answer_delay.is_zero() {
                    tokio::time::sleep(decision.answer_delay).await;
                }
                r
            }
        }
    };
    if let Value::Object(m) = &mut answer {
        m.entry("RequestId").or_insert_with(|| json!(rid));
    }
    sim.log.write(&json!({
        "time": crate::util::log_time(sim.now()),
        "service": "ecs",
        "request_id": rid,
        "method": method.as_str(),
        "action": meta.action,
        "access_key_id": meta.access_key_id,
        "signature_version": meta.version.map(|v| v.as_str()),
        "params": redact_params(&meta.params),
        "verdict": verdict,
        "status": status,
        "code": answer.get("Code"),
        "answer": redact_answer(&answer),
        "accept": accept,
    }));
    Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=utf-8")
        .header("x-acs-request-id", rid)
        .body(Body::from(answer.to_string()))
        .expect("static response parts are valid")
}
