//! Retention against the emulator over real signed HTTP: a history of this
//! job's groups (successful, failed, crash, progressing) among foreign ones;
//! `appsnap list --prune-preview` shows the plan, `prune` deletes exactly the
//! right groups and never a foreign one.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use appsnap::cloud::ecs::{ClientToken, CreateSnapshotGroup, GroupDisks, SnapshotGroupFilter, Tag};
use appsnap::cloud::{Cloud, TAG_INSTANCE, TAG_JOB};
use appsnap::job::machine::TAG_CONSISTENCY;
use appsnap::job::report::RunReport;
use appsnap::owner::{OwnerId, TAG_OWNER};
use appsnap::policy::{self, DiskId, Policy};
use appsnap::retention::{self, SuccessfulRun};
use appsnap::state::Consistency;
use chrono::{DateTime, Utc};
use ecs_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};
use tokio::time::Instant;

const INSTANCE: &str = "i-bp1retention";
const DISK: &str = "d-bp1retdisk";
/// Seconds the emulator takes to accomplish a group; the clock is advanced past it.
const ACCOMPLISH: u64 = 30;

fn sim(dir: &Path) -> SimHandle {
    let backing = dir.join("disk.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let snap = dir.join("snapshots");
    std::fs::create_dir_all(&snap).unwrap();
    let text = format!(
        r#"
region_id = "cn-hangzhou"
zone_id = "cn-hangzhou-i"
instance_id = "{INSTANCE}"
ram_role = "AppSnapshotRoleName"
snapshot_dir = "{snap}"
time_to_accomplish_secs = {ACCOMPLISH}

[[disk]]
id = "{DISK}"
size_gib = 1
backing = "{backing}"
"#,
        snap = snap.display(),
        backing = backing.display(),
    );
    let cfg: SimConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    SimHandle::spawn(cfg).expect("emulator starts")
}

fn write_policy(dir: &Path, sim: &SimHandle) -> (std::path::PathBuf, Policy) {
    let path = dir.join("appsnap.toml");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/owner-id"), format!("{OWNER_A}\n")).unwrap();
    let text = format!(
        r#"
[cloud]
metadata_endpoint = "{imds}"
endpoint = "{ecs}"

[host]
state_dir = "{state}"
run_dir = "{run}"

[[job]]
name = "mysql"
schedule = "30 2 * * *"
disks = ["{DISK}"]
keep_last = 2
max_age_days = 30
"#,
        imds = sim.started.imds_url,
        ecs = sim.started.ecs_url,
        state = dir.join("state").display(),
        run = dir.join("run").display(),
    );
    std::fs::write(&path, &text).unwrap();
    let p = policy::parse_str(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    (path, p)
}

async fn control(sim: &SimHandle, method: reqwest::Method, path: &str, body: Value) -> Value {
    let url = format!("{}{path}", sim.started.ecs_url);
    let r = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

async fn advance(sim: &SimHandle, secs: u64) {
    control(
        sim,
        reqwest::Method::POST,
        "/_sim/clock",
        json!({ "advance_secs": secs }),
    )
    .await;
}

/// One group made with appsnap's own signed client; `consistency` tags its
/// snapshots the way the job does; `fail` makes the emulator fail it.
async fn make_group(
    sim: &SimHandle,
    cloud: &Cloud,
    name: &str,
    tags: &[(&str, &str)],
    consistency: Option<&str>,
    fail: bool,
    wait: bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    if fail {
        control(
            sim,
            reqwest::Method::POST,
            "/_sim/faults",
            json!({ "fail_next_groups": 1 }),
        )
        .await;
    }
    let req = CreateSnapshotGroup {
        instance_id: INSTANCE.into(),
        disks: GroupDisks::Only(vec![DiskId::parse(DISK).unwrap()]),
        name: name.into(),
        description: None,
        tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
        resource_group_id: None,
        client_token: ClientToken::generate(),
    };
    let id = cloud
        .ecs
        .create_snapshot_group(&req, deadline)
        .await
        .unwrap();
    if wait {
        advance(sim, ACCOMPLISH + 10).await;
    }
    if let Some(c) = consistency {
        let g = &cloud
            .ecs
            .describe_snapshot_groups(
                &SnapshotGroupFilter {
                    ids: vec![id.clone()],
                    ..Default::default()
                },
                deadline,
            )
            .await
            .unwrap()[0];
        let snaps: Vec<String> = g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect();
        cloud
            .ecs
            .tag_resources(
                "snapshot",
                &snaps,
                &[
                    Tag::new("appsnap:job", "mysql"),
                    Tag::new(TAG_CONSISTENCY, c),
                ],
                deadline,
            )
            .await
            .unwrap();
    }
    id
}

async fn all_groups(cloud: &Cloud) -> Vec<appsnap::cloud::ecs::SnapshotGroup> {
    cloud
        .ecs
        .describe_snapshot_groups(
            &SnapshotGroupFilter::default(),
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap()
}

fn preview(config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(config)
        .args([
            "--config-dir",
            "/nonexistent",
            "list",
            "--job",
            "mysql",
            "--prune-preview",
        ])
        .args(extra)
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prune_deletes_exactly_the_selected_groups_and_no_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path());
    let (config, policy) = write_policy(dir.path(), &sim);
    let job = policy.job("mysql").unwrap().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ours = [
        (TAG_JOB, "mysql"),
        (TAG_INSTANCE, INSTANCE),
        (TAG_OWNER, OWNER_A),
    ];
    let (ids, cloud) = rt.block_on(async {
        let cloud = Cloud::connect(&policy.cloud).await.unwrap();
        assert_eq!(cloud.instance_id, INSTANCE);
        let mut ids = Vec::new();
        // Oldest first, each ACCOMPLISH+10 s apart on the emulator's clock.
        for (name, tags, c, fail, wait) in [
            (
                "pg-1",
                vec![(TAG_JOB, "pg"), (TAG_INSTANCE, INSTANCE)],
                Some("app"),
                false,
                true,
            ),
            ("manual-1", vec![], None, false, true),
            (
                "mysql-elsewhere",
                vec![(TAG_JOB, "mysql"), (TAG_INSTANCE, "i-bp1other")],
                Some("app"),
                false,
                true,
            ),
            ("mysql-old1", ours.to_vec(), Some("app"), false, true),
            ("mysql-old2", ours.to_vec(), Some("fs"), false, true),
            ("mysql-failed", ours.to_vec(), None, true, true),
            ("mysql-crash", ours.to_vec(), Some("crash"), false, true),
            ("mysql-a", ours.to_vec(), Some("app"), false, true),
            ("mysql-b", ours.to_vec(), Some("fs"), false, true),
            ("mysql-c", ours.to_vec(), Some("app"), false, true),
            ("mysql-progressing", ours.to_vec(), None, false, false),
        ] {
            let id = make_group(&sim, &cloud, name, &tags, c, fail, wait).await;
            ids.push((name, id));
        }
        (ids, cloud)
    });
    let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let groups = rt.block_on(all_groups(&cloud));
    assert_eq!(groups.len(), 11);
    let status = |name: &str| {
        groups
            .iter()
            .find(|g| g.snapshot_group_id == id(name))
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(status("mysql-failed"), "failed");
    assert_eq!(status("mysql-progressing"), "progressing");
    assert_eq!(status("mysql-c"), "accomplished");

    // The preview (real binary, wall-clock now: every group is minutes old,
    // so only keep_last=2 applies; nothing is protected as just created).
    let (code, out, err) = preview(&config, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let deletes: BTreeSet<&str> = out
        .lines()
        .filter(|l| l.starts_with("DELETE"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let expect: BTreeSet<String> = ["mysql-a", "mysql-old2", "mysql-old1"]
        .into_iter()
        .map(id)
        .collect();
    assert_eq!(
        deletes,
        expect.iter().map(String::as_str).collect(),
        "{out}"
    );
    assert!(out.contains("beyond keep_last=2"), "{out}");
    for name in ["pg-1", "manual-1", "mysql-elsewhere"] {
        assert!(
            !out.contains(&id(name)),
            "foreign {name} in preview:\n{out}"
        );
    }
    let (code, json_out, err) = preview(&config, &["--json"]);
    assert_eq!(code, Some(0), "{json_out}{err}");
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["delete"].as_array().unwrap().len(), 3, "{json_out}");
    assert_eq!(v["keep"].as_array().unwrap().len(), 5, "{json_out}");
    assert_eq!(v["keep_last"], 2);
    assert_eq!(
        v["delete"][0]["reasons"][0],
        json!({"rule": "beyond_keep_last", "keep_last": 2})
    );
    // Nothing was deleted by the preview.
    assert_eq!(rt.block_on(all_groups(&cloud)).len(), 11);

    // Prune, as the daemon will after mysql-c's successful run, "now" being
    // 30 days and 1 second after mysql-crash was created.
    let crash_created: DateTime<Utc> = retention::parse_time(
        &groups
            .iter()
            .find(|g| g.snapshot_group_id == id("mysql-crash"))
            .unwrap()
            .creation_time,
    )
    .unwrap();
    let now = crash_created + chrono::Duration::days(30) + chrono::Duration::seconds(1);
    let report = RunReport {
        job: "mysql".into(),
        run_id: "r1".into(),
        started_at: chrono::Utc::now(),
        exit_code: 0,
        group_id: Some(id("mysql-c")),
        group_name: None,
        consistency: Consistency::App,
        frozen_ms: None,
        stages: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
        upload: None,
        forced_thaw: None,
        script_tags: vec![],
    };
    let run = SuccessfulRun::from_report(&report).unwrap();
    let pruned = rt
        .block_on(retention::prune(
            &cloud.ecs,
            &job,
            INSTANCE,
            &OwnerId::parse(OWNER_A).unwrap(),
            &run,
            now,
            Instant::now() + Duration::from_secs(60),
        ))
        .unwrap();
    assert!(pruned.failed.is_empty(), "{:?}", pruned.failed);
    let deleted: BTreeSet<String> = pruned.deleted.iter().map(|v| v.id.clone()).collect();
    let expect: BTreeSet<String> = [
        "mysql-old1",
        "mysql-old2",
        "mysql-failed",
        "mysql-crash",
        "mysql-a",
    ]
    .into_iter()
    .map(id)
    .collect();
    assert_eq!(deleted, expect);
    let reason = |name: &str| {
        pruned
            .deleted
            .iter()
            .find(|v| v.id == id(name))
            .unwrap()
            .reason()
    };
    assert_eq!(reason("mysql-a"), "beyond keep_last=2");
    assert_eq!(
        reason("mysql-old1"),
        "beyond keep_last=2; older than 30 days"
    );
    assert_eq!(reason("mysql-failed"), "older than 30 days");

    // What is left in the cloud: the three foreign groups and the three kept.
    let left: BTreeSet<String> = rt
        .block_on(all_groups(&cloud))
        .into_iter()
        .map(|g| g.snapshot_group_id)
        .collect();
    let expect_left: BTreeSet<String> = [
        "pg-1",
        "manual-1",
        "mysql-elsewhere",
        "mysql-b",
        "mysql-c",
        "mysql-progressing",
    ]
    .into_iter()
    .map(id)
    .collect();
    assert_eq!(left, expect_left);
    drop(cloud);
    drop(rt);
    drop(sim);
}

#[test]
fn a_failed_run_cannot_prune() {
    let mut report = RunReport {
        job: "mysql".into(),
        run_id: "r2".into(),
        started_at: chrono::Utc::now(),
        exit_code: 6,
        group_id: Some("ssg-x".into()),
        group_name: None,
        consistency: Consistency::App,
        frozen_ms: None,
        stages: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
        upload: None,
        forced_thaw: None,
        script_tags: vec![],
    };
    assert!(SuccessfulRun::from_report(&report).is_err());
    report.exit_code = 0;
    report.consistency = Consistency::Crash;
    assert!(SuccessfulRun::from_report(&report).is_err());
    report.consistency = Consistency::Fs;
    report.group_id = None;
    assert!(SuccessfulRun::from_report(&report).is_err());
    report.group_id = Some("ssg-x".into());
    let run = SuccessfulRun::from_report(&report).unwrap();
    assert_eq!(run.group_id(), "ssg-x");
}

const OWNER_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OWNER_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A second policy file for the same emulator, job `mysql` too, with its own
/// state dir holding the owner ID `owner`.
fn installation(dir: &Path, sim: &SimHandle, owner: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/owner-id"), format!("{owner}\n")).unwrap();
    let path = dir.join("appsnap.toml");
    let text = format!(
        r#"
[cloud]
metadata_endpoint = "{imds}"
endpoint = "{ecs}"

[host]
state_dir = "{state}"
run_dir = "{run}"

[[job]]
name = "mysql"
schedule = "30 2 * * *"
disks = ["{DISK}"]
keep_last = 1
"#,
        imds = sim.started.imds_url,
        ecs = sim.started.ecs_url,
        state = dir.join("state").display(),
        run = dir.join("run").display(),
    );
    std::fs::write(&path, &text).unwrap();
    path
}

fn preview_deletes(config: &Path) -> BTreeSet<String> {
    let (code, out, err) = preview(config, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    out.lines()
        .filter(|l| l.starts_with("DELETE"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

/// Issue 14 item 4: job and instance tags are not ownership. A second
/// installation with the same job name on the same instance, and a group
/// tagged by hand like appsnap's, are never selected for deletion; only
/// groups carrying this installation's `appsnap:owner` tag are.
#[test]
fn only_groups_with_this_installations_owner_tag_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path());
    let (_, policy) = write_policy(dir.path(), &sim);
    let a = installation(&dir.path().join("a"), &sim, OWNER_A);
    let b = installation(&dir.path().join("b"), &sim, OWNER_B);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tags_a = [
        (TAG_JOB, "mysql"),
        (TAG_INSTANCE, INSTANCE),
        (TAG_OWNER, OWNER_A),
    ];
    let spoof = [(TAG_JOB, "mysql"), (TAG_INSTANCE, INSTANCE)];
    let ids = rt.block_on(async {
        let cloud = Cloud::connect(&policy.cloud).await.unwrap();
        let mut ids = Vec::new();
        for (name, tags) in [
            ("a-1", &tags_a[..]),
            ("spoof-1", &spoof[..]),
            ("a-2", &tags_a[..]),
            ("spoof-2", &spoof[..]),
            ("a-3", &tags_a[..]),
        ] {
            ids.push((
                name,
                make_group(&sim, &cloud, name, tags, Some("app"), false, true).await,
            ));
        }
        ids
    });
    let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    // Installation B (same job name, same instance, another owner): nothing is its.
    assert_eq!(preview_deletes(&b), BTreeSet::new());
    // Installation A: its own two older groups, never the spoofs.
    let expect: BTreeSet<String> = ["a-1", "a-2"].into_iter().map(id).collect();
    assert_eq!(preview_deletes(&a), expect);

    // The deletions themselves, as each daemon would after a successful run
    // (with the installations' keep_last = 1).
    let mut job = policy.job("mysql").unwrap().clone();
    job.keep_last = Some(1);
    let run = |group: &str| {
        SuccessfulRun::from_report(&RunReport {
            job: "mysql".into(),
            run_id: "r".into(),
            started_at: chrono::Utc::now(),
            exit_code: 0,
            group_id: Some(group.into()),
            group_name: None,
            consistency: Consistency::App,
            frozen_ms: None,
            stages: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
            upload: None,
            forced_thaw: None,
            script_tags: vec![],
        })
        .unwrap()
    };
    let prune_as = |owner: &str, group: &str| {
        rt.block_on(async {
            let cloud = Cloud::connect(&policy.cloud).await.unwrap();
            retention::prune(
                &cloud.ecs,
                &job,
                INSTANCE,
                &OwnerId::parse(owner).unwrap(),
                &run(group),
                chrono::Utc::now(),
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .unwrap()
        })
    };
    let b_pruned = prune_as(OWNER_B, "ssg-of-b");
    assert!(b_pruned.deleted.is_empty(), "{:?}", b_pruned.deleted);
    let a_pruned = prune_as(OWNER_A, &id("a-3"));
    assert!(a_pruned.failed.is_empty(), "{:?}", a_pruned.failed);
    let deleted: BTreeSet<String> = a_pruned.deleted.iter().map(|v| v.id.clone()).collect();
    assert_eq!(deleted, expect);
    let left: BTreeSet<String> = rt
        .block_on(async {
            let cloud = Cloud::connect(&policy.cloud).await.unwrap();
            all_groups(&cloud).await
        })
        .into_iter()
        .map(|g| g.snapshot_group_id)
        .collect();
    let expect_left: BTreeSet<String> = ["spoof-1", "spoof-2", "a-3"].into_iter().map(id).collect();
    assert_eq!(left, expect_left);
    drop(rt);
    drop(sim);
}
