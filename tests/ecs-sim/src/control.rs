//! The loopback control endpoint tests use to look inside the emulator and to
//! change it mid-run: `GET /_sim/state`, `GET|POST|DELETE /_sim/faults`,
//! `POST /_sim/clock`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Response, StatusCode};
use chrono::Duration;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actions::{tag_list, TagStyle};
use crate::faults::FaultConfig;
use crate::state::Sim;
use crate::util::{fmt_time, log_time};

fn reply(status: StatusCode, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .expect("static response parts are valid")
}

/// `GET /_sim/state`: groups (status, images, freeze probes), disks,
/// issued credentials (ids and times only), faults, counters, clock.
pub async fn state(State(sim): State<Arc<Sim>>) -> Response<Body> {
    let tta = sim.cfg.time_to_accomplish_secs;
    let inner = sim.lock();
    let groups: Vec<Value> = inner
        .groups
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "name": g.name,
                "status": inner.group_status(g, tta),
                "progress": inner.progress(g, tta),
                "copying": g.copying,
                "created": fmt_time(g.created),
                "answered_at": g.answered_at.map(log_time),
                "pit_at": g.pit_at.map(log_time),
                "pit_after_answer_ms": g.pit_after_answer_ms(),
                "failed": g.failed,
                "available": inner.members_available(g, tta),
                "dir": g.dir,
                "tags": tag_list(&g.tags, TagStyle::KeyValue),
                "frozen_at_pit": g.frozen_at_pit,
                "frozen_at_accept": g.frozen_at_pit,
                "snapshots": g.snapshots.iter().map(|s| json!({
                    "id": s.id, "disk_id": s.disk_id, "image": s.image, "tags": tag_list(&s.tags, TagStyle::KeyValue),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let creds: Vec<Value> = inner
        .creds
        .iter()
        .map(|c| json!({"instance": c.instance, "access_key_id": c.access_key_id, "issued": fmt_time(c.issued), "expires": fmt_time(c.expires)}))
        .collect();
    let disks: Vec<Value> = inner
        .disks
        .iter()
        .map(|d| json!({"id": d.id, "busy": inner.disk_busy(&d.id, tta), "snapshots": inner.snapshots_of(&d.id)}))
        .collect();
    let created: Vec<Value> = inner
        .created
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "status": d.status.as_str(),
                "deleted": d.deleted,
                "instance_id": d.instance_id,
                "zone_id": d.zone_id,
                "category": d.category,
                "snapshot_id": d.snapshot_id,
                "image": d.image,
                "image_exists": d.image.exists(),
                "copy_method": d.copy_method,
                "loop_device": d.device.as_ref().map(|l| l.path()),
                "link": d.link,
                "hotplugged": d.hotplugged,
                "serial": d.serial(),
                "tags": tag_list(&d.tags, TagStyle::TagKeyValue),
                "last_error": d.last_error,
            })
        })
        .collect();
    let v = json!({
        "now": fmt_time(inner.now()),
        "created_disks": created,
        "by_id_dir": sim.cfg.restore.by_id_dir,
        "disk_dir": sim.cfg.disk_dir(),
        "clock_offset_secs": inner.clock_offset.num_seconds(),
        "region_id": sim.cfg.region_id,
        "instance_id": sim.cfg.instance_id,
        "instances": sim.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        "groups": groups,
        "disks": disks,
        "credentials": creds,
        "imds_tokens": inner.imds_tokens.len(),
        "faults": inner.faults.plan(),
        "counters": inner.counters,
        "throttled": inner.faults.throttled(),
    });
    reply(StatusCode::OK, v)
}

/// `GET /_sim/faults`: the fault plan now (counters consumed so far).
pub async fn get_faults(State(sim): State<Arc<Sim>>) -> Response<Body> {
    let plan = sim.lock().faults.plan().clone();
    reply(StatusCode::OK, json!(plan))
}

/// `POST /_sim/faults`: replaces the plan with the posted JSON.
pub async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response<Body> {
    match serde_json::from_slice::<FaultConfig>(&body) {
        Ok(plan) => {
            sim.lock().faults.replace(plan.clone());
            reply(StatusCode::OK, json!(plan))
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    }
}

/// `DELETE /_sim/faults`: no faults.
pub async fn clear_faults(State(sim): State<Arc<Sim>>) -> Response<Body> {
    sim.lock().faults.replace(FaultConfig::default());
    reply(StatusCode::OK, json!(FaultConfig::default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    advance_secs: i64,
}

/// `POST /_sim/clock {"advance_secs": N}`: moves the emulator's clock, so
/// credential expiry and group progress are testable without sleeping.
pub async fn clock(State(sim): State<Arc<Sim>>, body: Bytes) -> Response<Body> {
    match serde_json::from_slice::<ClockReq>(&body) {
        Ok(c) => {
            let mut inner = sim.lock();
            inner.clock_offset += Duration::seconds(c.advance_secs);
            reply(
                StatusCode::OK,
                json!({"now": fmt_time(inner.now()), "clock_offset_secs": inner.clock_offset.num_seconds()}),
            )
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    }
}
