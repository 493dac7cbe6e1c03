//! `ecs-sim-call`: one signed ECS call against the emulator, for the demo
//! script until `appsnap run` can drive it. Credentials come from the
//! metadata service (token flow + RAM role), as appsnap will get them.
//!
//! Usage: `ecs-sim-call --imds URL --ecs URL ACTION [Key=Value ...]`
//! Prints the answer (JSON; XML with `--xml`); exits 1 on an HTTP error status.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ecs_sim::testkit::http::{send, RawRequest};
use ecs_sim::testkit::{Creds, EcsClient, Scheme};

#[derive(Parser, Debug)]
struct Args {
    /// Metadata service base URL.
    #[arg(long)]
    imds: String,
    /// ECS API base URL.
    #[arg(long)]
    ecs: String,
    /// Sign with RPC v1 instead of V3.
    #[arg(long)]
    v1: bool,
    /// Do not ask for JSON: get the API's default format, XML.
    #[arg(long)]
    xml: bool,
    /// The action.
    action: String,
    /// Operation parameters, `Key=Value`.
    params: Vec<String>,
}

fn imds_get(base: &str, path: &str, token: &str) -> Result<String, String> {
    let r = send(
        base,
        &RawRequest {
            method: "GET".into(),
            target: path.into(),
            headers: vec![("X-aliyun-ecs-metadata-token".into(), token.into())],
            body: vec![],
        },
        Duration::from_secs(5),
    )
    .map_err(|e| format!("GET {path}: {e}"))?;
    if r.status != 200 {
        return Err(format!("GET {path}: HTTP {}", r.status));
    }
    Ok(r.text())
}

fn creds(imds: &str) -> Result<Creds, String> {
    let t = send(
        imds,
        &RawRequest {
            method: "PUT".into(),
            target: "/latest/api/token".into(),
            headers: vec![(
                "X-aliyun-ecs-metadata-token-ttl-seconds".into(),
                "60".into(),
            )],
            body: vec![],
        },
        Duration::from_secs(5),
    )
    .map_err(|e| format!("token: {e}"))?;
    if t.status != 200 {
        return Err(format!("token: HTTP {}", t.status));
    }
    let token = t.text();
    let role = imds_get(imds, "/latest/meta-data/ram/security-credentials/", &token)?;
    let body = imds_get(
        imds,
        &format!("/latest/meta-data/ram/security-credentials/{}", role.trim()),
        &token,
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok(Creds {
        access_key_id: s("AccessKeyId"),
        secret: s("AccessKeySecret"),
        token: Some(s("SecurityToken")),
    })
}

fn main() -> ExitCode {
    let a = Args::parse();
    let creds = match creds(&a.imds) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ecs-sim-call: metadata service: {e}");
            return ExitCode::from(2);
        }
    };
    let scheme = if a.v1 { Scheme::V1 } else { Scheme::V3 };
    let mut client = EcsClient::new(&a.ecs, creds, scheme);
    client.accept_json = !a.xml;
    let kv: Vec<(&str, &str)> = a
        .params
        .iter()
        .map(|p| p.split_once('=').unwrap_or((p.as_str(), "")))
        .collect();
    match client.call(&a.action, &kv) {
        Ok(r) => {
            println!("{}", r.text());
            if r.status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ecs-sim-call: {e}");
            ExitCode::from(2)
        }
    }
}
