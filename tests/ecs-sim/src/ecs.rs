//! The ECS OpenAPI endpoint: authenticate, apply faults, dispatch, answer in
//! the vendor's shape (XML unless JSON was asked for), and write one
//! request-log line.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::{json, Value};

use crate::actions::{dispatch, Outcome};
use crate::auth::{authenticate, Incoming};
use crate::error::ApiError;
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
    // Whose role credentials signed it (none for a long-lived key).
    let caller = meta.access_key_id.as_deref().and_then(|ak| {
        sim.lock()
            .creds
            .iter()
            .find(|c| c.access_key_id == ak)
            .map(|c| c.instance.clone())
    });
    let json_wanted = crate::xml::wants_json(&meta.params, &incoming.headers);
    let mut verdict = "accepted";
    let mut accept = None;
    let mut retry_after_ms = None;
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
                retry_after_ms = decision.retry_after_ms;
                (e.status, e.body(&rid, &host_id))
            } else {
                // Processed on its own task: a client that hangs up does not
                // cancel a request ECS has accepted (real ECS finishes it; a
                // dropped future would leave a half-made group behind).
                let task = {
                    let (sim, action, version) =
                        (sim.clone(), a.action.clone(), a.api_version.clone());
                    tokio::spawn(
                        async move { dispatch(sim, &action, &version, Params(a.params)).await },
                    )
                };
                let done = task.await.unwrap_or_else(|e| {
                    Err(ApiError::new(
                        500,
                        "InternalError",
                        format!("The request processing has failed due to some unknown error: {e}"),
                    ))
                });
                let r = match done {
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
    let (text, content_type) = if json_wanted {
        (answer.to_string(), "application/json;charset=utf-8")
    } else if status == 200 {
        let root = format!("{}Response", meta.action.as_deref().unwrap_or("Unknown"));
        (crate::xml::render(&root, &answer), "text/xml;charset=utf-8")
    } else {
        (crate::xml::render_error(&answer), "text/xml;charset=utf-8")
    };
    sim.log.write(&json!({
        "time": crate::util::log_time(sim.now()),
        "service": "ecs",
        "request_id": rid,
        "method": method.as_str(),
        "action": meta.action,
        "access_key_id": meta.access_key_id,
        "instance": caller,
        "signature_version": meta.version.map(|v| v.as_str()),
        "params": redact_params(&meta.params),
        "verdict": verdict,
        "status": status,
        "code": answer.get("Code"),
        "answer": redact_answer(&answer),
        "format": if json_wanted { "json" } else { "xml" },
        "answer_xml": (!json_wanted).then_some(&text),
        "retry_after_ms": retry_after_ms,
        "accept": accept,
    }));
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-acs-request-id", rid);
    if let Some(ms) = retry_after_ms {
        resp = resp.header("x-acs-retry-after", ms.to_string());
    }
    resp.body(Body::from(text))
        .expect("static response parts are valid")
}
