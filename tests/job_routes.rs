//! The run's failure routes without root: the real state machine, the
//! emulator over HTTP, a host described by fixture files (by-id links, sysfs,
//! mountinfo in a temp dir), real hook scripts, and a fake freeze stage that
//! freezes nothing but records when it was asked to freeze and to thaw.
//!
//! Every hook and the fake write one line each to the same log, so the order
//! pre-script → freeze → thaw → post-script is read from one file.
//!
//! Needs no root: nothing is frozen or mounted, and the hooks are owned by
//! the user the test runs as, whom appsnap trusts like root (as root in
//! production, the two are one). CI runs it as root and as `nobody`.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use appsnap::cloud::ecs::{ClientToken, CreateSnapshotGroup, EcsClient, GroupDisks, Tag};
use appsnap::cloud::{Cloud, TAG_INSTANCE};
use appsnap::host::{FreezeError, Frozen, FsThaw, HostPaths, ThawCause, ThawError, ThawReport};
use appsnap::job::freeze_stage::{FreezeStage, GuardSpawn, StageGuard};
use appsnap::job::machine::{run, RunEnv, RunOptions, Shutdown};
use appsnap::job::report::{Consistency, RunReport};
use appsnap::policy::{self, DiskId};
use common::world::snapshot_tags;
use ecs_sim::{SimConfig, SimHandle};
use serde_json::Value;
use tokio::time::Instant;

const INSTANCE: &str = "i-bp1routes00000001";
const DATA_DISK: &str = "d-bp1routesdata0001";
const LOGS_DISK: &str = "d-bp1routeslogs0002";
const GROUP: &str = "db-routes";

/// What the fake does besides freezing nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fake {
    /// Freezes and thaws when asked.
    Obedient,
    /// Its deadline thawed before the run asked (the thaw reports `Deadline`).
    DeadlineThawsFirst,
    /// Every FIFREEZE fails; nothing stays frozen.
    CannotFreeze,
    /// Someone thawed the first file system behind the guard's back (`check` says so).
    LosesFreeze,
}

/// The fake's record, shared with the test.
struct Shared {
    mode: Fake,
    log: PathBuf,
    mounts: Mutex<Vec<PathBuf>>,
    thawed_at: Mutex<Option<SystemTime>>,
    /// With `stop_after_post`: whether no run was left in its critical
    /// section within a second of the stop (`None`: never asked).
    stop_released: Mutex<Option<bool>>,
}

impl Shared {
    fn note(&self, what: &str) {
        append(&self.log, what);
    }
}

struct FakeStage(Arc<Shared>);

struct FakeGuard {
    shared: Arc<Shared>,
    deadline: Duration,
}

impl FreezeStage for FakeStage {
    fn spawn(&self, req: GuardSpawn<'_>) -> Result<Box<dyn StageGuard>, FreezeError> {
        *self.0.mounts.lock().unwrap() = req
            .plan
            .targets()
            .into_iter()
            .map(|t| t.mount_point)
            .collect();
        Ok(Box::new(FakeGuard {
            shared: self.0.clone(),
            deadline: req.deadline,
        }))
    }
}

impl StageGuard for FakeGuard {
    fn freeze(&mut self) -> Result<Frozen, FreezeError> {
        if self.shared.mode == Fake::CannotFreeze {
            self.shared.note("freeze-failed");
            return Err(FreezeError::DeadlineWhileFreezing);
        }
        self.shared.note("freeze");
        let now = std::time::Instant::now();
        Ok(Frozen {
            at: now,
            thaw_by: now + self.deadline,
        })
    }

    fn check(&mut self) -> Result<Vec<PathBuf>, ThawError> {
        if self.shared.mode == Fake::LosesFreeze {
            return Ok(self
                .shared
                .mounts
                .lock()
                .unwrap()
                .iter()
                .take(1)
                .cloned()
                .collect());
        }
        Ok(Vec::new())
    }

    fn thaw(self: Box<Self>) -> Result<ThawReport, ThawError> {
        *self.shared.thawed_at.lock().unwrap() = Some(SystemTime::now());
        self.shared.note("thaw");
        let cause = match self.shared.mode {
            Fake::DeadlineThawsFirst => ThawCause::Deadline,
            _ => ThawCause::Requested,
        };
        let filesystems = self
            .shared
            .mounts
            .lock()
            .unwrap()
            .iter()
            .map(|m| FsThaw {
                mount_point: m.clone(),
                suspended_us: 1000,
                errno: None,
                freeze_began_us: 0,
                freeze_took_us: 0,
                lost: false,
            })
            .collect();
        Ok(ThawReport {
            cause,
            filesystems,
            window_us: 1000,
        })
    }
}

fn append(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Two cloud disks as this host sees them: `/data` (ext4 on vdb) and `/logs`
/// (xfs on vdc), found through their by-id links.
fn fixture_host(dir: &Path) -> HostPaths {
    let host = dir.join("host");
    for (dev, devno, disk) in [("vdb", "253:16", DATA_DISK), ("vdc", "253:32", LOGS_DISK)] {
        let sys = host.join("sys/class/block").join(dev);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("dev"), format!("{devno}\n")).unwrap();
        std::fs::write(sys.join("serial"), &disk[2..]).unwrap();
        std::fs::create_dir_all(host.join("by-id")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../{dev}"),
            host.join("by-id").join(format!("virtio-{}", &disk[2..])),
        )
        .unwrap();
    }
    std::fs::create_dir_all(host.join("proc")).unwrap();
    std::fs::write(
        host.join("mountinfo"),
        "21 1 0:21 / /run rw,nosuid,nodev shared:6 - tmpfs tmpfs rw,mode=755\n\
         40 1 253:16 / /data rw,relatime shared:40 - ext4 /dev/vdb rw\n\
         41 1 253:32 / /logs rw,relatime shared:41 - xfs /dev/vdc rw\n",
    )
    .unwrap();
    HostPaths {
        mountinfo: host.join("mountinfo"),
        sys_root: host.join("sys"),
        by_id_dir: host.join("by-id"),
        proc_root: host.join("proc"),
    }
}

/// Knobs one route turns.
struct Route {
    fake: Fake,
    /// Extra TOML inside `[[job]]`.
    job_extra: &'static str,
    /// Extra TOML for the emulator (faults).
    sim_extra: &'static str,
    /// The pre-script's last line (its exit status).
    pre_exit: u8,
    /// Shell lines the pre-script runs before it exits (`{LOG}`: the calls log).
    pre_body: &'static str,
    /// The post-script is made unusable (writable by others) after the policy
    /// is read, as an operator's slip would.
    post_unusable: bool,
    freeze_timeout_secs: u64,
    accomplish_secs: f64,
    await_timeout: Duration,
    /// The run ID the caller chose (the daemon does).
    run_id: Option<&'static str>,
    /// Run under a daemon's stop signal, asked for once the post-script has
    /// run: whether the daemon may then exit is recorded in `Shared`.
    stop_after_post: bool,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            fake: Fake::Obedient,
            job_extra: "",
            sim_extra: "",
            pre_exit: 0,
            pre_body: "",
            post_unusable: false,
            freeze_timeout_secs: 10,
            accomplish_secs: 3600.0,
            await_timeout: Duration::from_secs(20),
            run_id: None,
            stop_after_post: false,
        }
    }
}

/// One route's world while the run goes on.
struct World {
    sim: SimHandle,
    log: PathBuf,
    shared: Arc<Shared>,
    report: Option<RunReport>,
    _dir: tempfile::TempDir,
}

impl World {
    /// The lines the hooks and the fake wrote, in order.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn report(&self) -> &RunReport {
        self.report.as_ref().unwrap()
    }

    fn state(&self) -> Value {
        http_get(&self.sim, "/_sim/state")
    }

    fn groups(&self) -> Vec<Value> {
        self.state()["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn http_get(sim: &SimHandle, path: &str) -> Value {
    let req = ecs_sim::testkit::http::RawRequest {
        method: "GET".into(),
        target: path.into(),
        headers: vec![],
        body: vec![],
    };
    let resp = ecs_sim::testkit::http::send(&sim.started.ecs_url, &req, Duration::from_secs(10))
        .expect("control endpoint answers");
    assert_eq!(resp.status, 200, "GET {path}");
    resp.json()
}

/// Builds the world, runs the job once (with `during` beside it), and
/// returns the world with the report.
fn run_route<F, Fut>(route: Route, during: F) -> World
where
    F: FnOnce(Arc<EcsClient>, Arc<Shared>, String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let snap = d.join("snapshots");
    let mut disks = String::new();
    for id in [DATA_DISK, LOGS_DISK] {
        let backing = d.join(format!("{id}.raw"));
        std::fs::write(&backing, vec![0u8; 64 << 10]).unwrap();
        disks += &format!(
            "\n[[disk]]\nid = \"{id}\"\nbacking = \"{}\"\n",
            backing.display()
        );
    }
    let sim_toml = format!(
        r#"
region_id = "cn-hangzhou"
zone_id = "cn-hangzhou-i"
instance_id = "{INSTANCE}"
ram_role = "AppSnapshotRoleName"
snapshot_dir = "{snap}"
time_to_accomplish_secs = {tta}
{disks}
{extra}
"#,
        snap = snap.display(),
        tta = route.accomplish_secs,
        extra = route.sim_extra,
    );
    let cfg: SimConfig = toml::from_str(&sim_toml).unwrap_or_else(|e| panic!("{e}\n{sim_toml}"));
    let sim = SimHandle::spawn(cfg).expect("emulator starts");

    // Hooks: 0700 files of the user running the test, in its 0700 temp dir.
    let log = d.join("calls.log");
    let hook = |name: &str, body: String| {
        let p = d.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    };
    let pre = hook(
        "pre.sh",
        format!(
            "echo pre >> \"{}\"\n{}\nexit {}",
            log.display(),
            route.pre_body.replace("{LOG}", &log.display().to_string()),
            route.pre_exit
        ),
    );
    let post = hook("post.sh", format!("echo post >> \"{}\"", log.display()));
    if route.post_unusable {
        std::fs::set_permissions(&post, std::fs::Permissions::from_mode(0o777)).unwrap();
    }

    let policy_path = d.join("appsnap.toml");
    let text = format!(
        r#"
[cloud]
metadata_endpoint = "{imds}"
endpoint = "{ecs}"

[host]
state_dir = "{state}"
run_dir = "{run}"

[[job]]
name = "db"
schedule = "30 2 * * *"
disks = ["{DATA_DISK}", "{LOGS_DISK}"]
prescript = "{pre}"
postscript = "{post}"
freeze_timeout_secs = {freeze}
{extra}
"#,
        imds = sim.started.imds_url,
        ecs = sim.started.ecs_url,
        state = d.join("state").display(),
        run = d.join("run").display(),
        pre = pre.display(),
        post = post.display(),
        freeze = route.freeze_timeout_secs,
        extra = route.job_extra,
    );
    let policy = policy::parse_str(&policy_path, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let shared = Arc::new(Shared {
        mode: route.fake,
        log: log.clone(),
        mounts: Mutex::new(Vec::new()),
        thawed_at: Mutex::new(None),
        stop_released: Mutex::new(None),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let cloud = Cloud::connect(&policy.cloud).await.unwrap();
        let ecs = Arc::new(cloud.ecs);
        let mut env = RunEnv::from_policy(&policy, ecs.clone(), cloud.instance_id.clone());
        env.host_paths = fixture_host(d);
        env.freeze_stage = Arc::new(FakeStage(shared.clone()));
        env.await_timeout = route.await_timeout;
        env.poll_interval = Duration::from_millis(200);
        // Short waits after a throttled answer, so the give-up route is quick.
        env.throttled_backoff = appsnap::cloud::retry::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(200),
        };
        let beside = tokio::spawn(during(
            ecs.clone(),
            shared.clone(),
            GROUP.to_string(),
            sim.started.ecs_url.clone(),
        ));
        let shutdown = route.stop_after_post.then(Shutdown::new);
        let stopper = shutdown.clone().map(|sd| {
            let (shared, log) = (shared.clone(), log.clone());
            tokio::spawn(async move {
                while !std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == "post")
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sd.request();
                let done =
                    tokio::time::timeout(Duration::from_secs(1), sd.critical_sections_done())
                        .await
                        .is_ok();
                *shared.stop_released.lock().unwrap() = Some(done);
            })
        });
        let opts = RunOptions {
            group_name: Some(GROUP.into()),
            run_id: route.run_id.map(str::to_string),
            shutdown,
            ..RunOptions::default()
        };
        let report = tokio::time::timeout(
            Duration::from_secs(90),
            run(&env, &(&policy.jobs[0]).into(), opts),
        )
        .await
        .expect("the run ends");
        beside.abort();
        if let Some(s) = stopper {
            let _ = s.await;
        }
        report
    });
    drop(rt);
    World {
        sim,
        log,
        shared,
        report: Some(report),
        _dir: dir,
    }
}

async fn nothing(_: Arc<EcsClient>, _: Arc<Shared>, _: String, _: String) {}

fn consistency_tags(g: &Value) -> Vec<String> {
    snapshot_tags(g)
        .iter()
        .map(|tags| {
            let mut v: Vec<String> = tags
                .iter()
                .filter(|(k, _)| {
                    k == "appsnap:consistency" || k == "AppConsistent" || k == "FsConsistent"
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            v.sort();
            v.join(",")
        })
        .collect()
}

fn explain(w: &World) -> String {
    format!(
        "calls {:?}\nreport {:#?}\ngroups {:#}",
        w.calls(),
        w.report(),
        Value::Array(w.groups())
    )
}

/// (a) The pre-script fails: the run still freezes (for a file-system-consistent
/// snapshot, as the vendor's plugin does), thaws, runs the post-script, and
/// exits 9.
#[test]
fn a_failed_pre_script_still_thaws_runs_the_post_script_and_exits_9() {
    let w = run_route(
        Route {
            pre_exit: 3,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 9, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert_eq!(w.report().consistency, Consistency::Fs, "{why}");
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(
        consistency_tags(&groups[0]),
        ["FsConsistent=True,appsnap:consistency=fs"; 2],
        "{why}"
    );
}

/// The fake cannot freeze: no thaw is asked of a guard that froze nothing,
/// no group is made, the post-script still runs, exit 11.
#[test]
fn a_freeze_that_fails_runs_the_post_script_and_exits_11() {
    let w = run_route(
        Route {
            fake: Fake::CannotFreeze,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 11, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze-failed", "post"], "{why}");
    assert!(w.groups().is_empty(), "{why}");
}

/// (b) CreateSnapshotGroup hangs past the freeze window: the run gives up
/// before the guard's deadline, thaws, runs the post-script, exits 6, and
/// claims no consistency.
#[test]
fn a_create_call_that_hangs_thaws_and_exits_6() {
    let w = run_route(
        Route {
            freeze_timeout_secs: 2,
            sim_extra: "[faults.actions.CreateSnapshotGroup]\nhang_secs = 60\nhang_times = 10\n",
            await_timeout: Duration::from_secs(2),
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 6, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert_eq!(w.report().group_id, None, "{why}");
    assert_eq!(
        w.report().forced_thaw,
        None,
        "appsnap thawed before the deadline: not forced: {why}"
    );
    assert!(
        !matches!(w.report().consistency, Consistency::App | Consistency::Fs),
        "{why}"
    );
    assert!(
        w.report()
            .errors
            .iter()
            .any(|e| e.contains("CreateSnapshotGroup")),
        "{why}"
    );
}

/// (c) The guard's deadline thawed before the run asked: the point in time
/// may be after the thaw, so exit 6 and the snapshots are tagged crash.
#[test]
fn the_deadline_thawing_first_exits_6_with_a_crash_consistent_group() {
    let w = run_route(
        Route {
            fake: Fake::DeadlineThawsFirst,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 6, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert_eq!(w.report().consistency, Consistency::Crash, "{why}");
    assert!(
        w.report()
            .forced_thaw
            .as_deref()
            .is_some_and(|f| f.contains("deadline")),
        "the operator is told the thaw was forced: {why}"
    );
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(
        consistency_tags(&groups[0]),
        ["appsnap:consistency=crash"; 2],
        "{why}"
    );
}

/// Someone thawed a file system while the group was taken: the run cannot
/// prove I/O was suspended, so exit 11, a warning naming it, and the group
/// is tagged crash.
#[test]
fn a_lost_freeze_exits_11_with_a_crash_consistent_group() {
    let w = run_route(
        Route {
            fake: Fake::LosesFreeze,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 11, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    let lost = w.shared.mounts.lock().unwrap()[0].display().to_string();
    assert!(
        w.report()
            .forced_thaw
            .as_deref()
            .is_some_and(|f| f.contains(&lost)),
        "the operator is told the thaw was forced: {why}"
    );
    assert!(
        w.report()
            .warnings
            .iter()
            .any(|m| m.contains(&lost) && m.contains("lost")),
        "{why}"
    );
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(
        consistency_tags(&groups[0]),
        ["appsnap:consistency=crash"; 2],
        "{why}"
    );
}

/// (d) ECS accepts the group, then the group fails before its snapshots are
/// usable: the vendor's code 5 ("not in the expected state"), nothing tagged.
#[test]
fn a_group_that_fails_after_acceptance_exits_5() {
    let w = run_route(
        Route {
            job_extra: "thaw_after = \"accepted\"",
            sim_extra: "[faults]\nfail_next_groups = 1\navailable_delay_ms = 600000\n",
            accomplish_secs: 1.0,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 5, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(groups[0]["status"], "failed", "{why}");
    assert_eq!(consistency_tags(&groups[0]), ["", ""], "{why}");
}

/// (e) CreateSnapshotGroup timed out, and the group shows up only after the
/// run first looked for it (ECS processed the request late). The README
/// promises such a group is tagged `appsnap:consistency=crash`.
#[test]
fn a_group_that_appears_after_the_deadline_is_tagged_crash() {
    let w = run_route(
        Route {
            freeze_timeout_secs: 2,
            sim_extra: "[faults.actions.CreateSnapshotGroup]\nhang_secs = 60\nhang_times = 10\n",
            ..Route::default()
        },
        |ecs, shared, name, sim_url| async move {
            // After the thaw and the post-script, once the run has asked
            // DescribeSnapshotGroups at least once, "ECS" creates the group.
            loop {
                let posted = shared.log.exists()
                    && std::fs::read_to_string(&shared.log)
                        .unwrap()
                        .contains("post");
                let asked = tokio::task::spawn_blocking({
                    let u = sim_url.clone();
                    move || describe_count(&u)
                })
                .await
                .unwrap();
                if posted && asked >= 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The hang fault is for the run's call; clear it for ours.
            let _ = tokio::task::spawn_blocking(move || clear_faults(&sim_url)).await;
            let req = CreateSnapshotGroup {
                instance_id: INSTANCE.into(),
                disks: GroupDisks::Only(vec![
                    DiskId::parse(DATA_DISK).unwrap(),
                    DiskId::parse(LOGS_DISK).unwrap(),
                ]),
                name,
                description: None,
                tags: vec![Tag::new(TAG_INSTANCE, INSTANCE)],
                resource_group_id: None,
                client_token: ClientToken::generate(),
            };
            ecs.create_snapshot_group(&req, Instant::now() + Duration::from_secs(20))
                .await
                .expect("the late group is created");
        },
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 6, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(
        w.report().group_id.as_deref(),
        groups[0]["id"].as_str(),
        "{why}"
    );
    assert_eq!(w.report().consistency, Consistency::Crash, "{why}");
    assert_eq!(
        consistency_tags(&groups[0]),
        ["appsnap:consistency=crash"; 2],
        "{why}"
    );
}

/// (f) Success with `thaw_after = "listed"` (the default) against a cloud that
/// fixes the point in time after it answers: the thaw comes only after the
/// emulator took its point in time; app-consistent, exit 0.
#[test]
fn listed_success_thaws_only_after_the_point_in_time() {
    let w = run_route(
        Route {
            sim_extra: "[faults]\npit_delay_ms = 700\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert_eq!(w.report().consistency, Consistency::App, "{why}");
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(
        consistency_tags(&groups[0]),
        ["AppConsistent=True,appsnap:consistency=app"; 2],
        "{why}"
    );
    let pit: chrono::DateTime<chrono::Utc> = groups[0]["pit_at"]
        .as_str()
        .expect("the point in time was taken")
        .parse()
        .unwrap();
    let thawed: chrono::DateTime<chrono::Utc> = (*w.shared.thawed_at.lock().unwrap())
        .expect("thawed")
        .into();
    assert!(
        thawed >= pit,
        "thawed at {thawed}, point in time at {pit}\n{why}"
    );
}

/// The daemon chooses the run's ID (its journal span carries it); the
/// report, and so the job's record, must carry the same one.
#[test]
fn the_callers_run_id_is_the_reports() {
    let w = run_route(
        Route {
            run_id: Some("0123456789abcdef"),
            ..Route::default()
        },
        nothing,
    );
    assert_eq!(w.report().run_id, "0123456789abcdef", "{}", explain(&w));
}

/// The counter-test of (f): thawing at the answer lets the same cloud's point
/// in time fall after the thaw, which is what (f) would catch.
#[test]
fn accepted_thaws_before_a_deferred_point_in_time() {
    let w = run_route(
        Route {
            job_extra: "thaw_after = \"accepted\"",
            sim_extra: "[faults]\npit_delay_ms = 700\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    let groups = w.groups();
    let pit: chrono::DateTime<chrono::Utc> = groups[0]["pit_at"]
        .as_str()
        .expect("the point in time was taken")
        .parse()
        .unwrap();
    let thawed: chrono::DateTime<chrono::Utc> = (*w.shared.thawed_at.lock().unwrap())
        .expect("thawed")
        .into();
    assert!(
        thawed < pit,
        "thawed at {thawed}, point in time at {pit}\n{why}"
    );
}

fn describe_count(ecs_url: &str) -> u64 {
    let req = ecs_sim::testkit::http::RawRequest {
        method: "GET".into(),
        target: "/_sim/state".into(),
        headers: vec![],
        body: vec![],
    };
    ecs_sim::testkit::http::send(ecs_url, &req, Duration::from_secs(10))
        .map(|r| {
            r.json()["counters"]["DescribeSnapshotGroups"]
                .as_u64()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn clear_faults(ecs_url: &str) {
    let req = ecs_sim::testkit::http::RawRequest {
        method: "DELETE".into(),
        target: "/_sim/faults".into(),
        headers: vec![],
        body: vec![],
    };
    let r = ecs_sim::testkit::http::send(ecs_url, &req, Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 200);
}

/// Strict mode: with `on_prescript_failure = "skip"` a failed pre-script
/// means no freeze and no CreateSnapshotGroup at all; the post-script still
/// runs (to undo the pre-script), and the run exits 9 with no consistency.
#[test]
fn skip_mode_a_failed_pre_script_freezes_and_creates_nothing_but_runs_the_post_script() {
    let w = run_route(
        Route {
            pre_exit: 3,
            job_extra: "on_prescript_failure = \"skip\"",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 9, "{why}");
    assert_eq!(w.calls(), ["pre", "post"], "{why}");
    assert!(w.groups().is_empty(), "{why}");
    assert_eq!(
        w.state()["counters"]["CreateSnapshotGroup"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{why}"
    );
    assert_eq!(w.report().consistency, Consistency::None, "{why}");
    assert!(
        w.report()
            .errors
            .iter()
            .any(|e| e.contains("on_prescript_failure = \"skip\"")),
        "{why}"
    );
}

/// Strict mode with hooks that cannot be used (the post-script is writable by
/// others): neither script runs (nothing to undo), nothing is frozen or
/// created, exit 9 naming the script; "fs" mode takes the vendor's
/// file-system-consistent snapshot instead.
#[test]
fn skip_mode_unusable_hooks_run_nothing_and_create_nothing_fs_mode_snapshots() {
    let w = run_route(
        Route {
            post_unusable: true,
            job_extra: "on_prescript_failure = \"skip\"",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 9, "{why}");
    assert!(w.calls().is_empty(), "{why}");
    assert!(w.groups().is_empty(), "{why}");
    assert!(
        w.report()
            .errors
            .iter()
            .any(|e| e.contains("postscript not usable")),
        "{why}"
    );

    let w = run_route(
        Route {
            post_unusable: true,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    assert_eq!(w.calls(), ["freeze", "thaw"], "{why}");
    assert_eq!(
        consistency_tags(&w.groups()[0]),
        ["FsConsistent=True,appsnap:consistency=fs"; 2],
        "{why}"
    );
}

/// The tags a tag's value as the emulator holds it, on the group and on
/// every snapshot.
fn tag_values(g: &Value, key: &str) -> (Option<String>, Vec<Option<String>>) {
    let on_group = g["tags"]["Tag"].as_array().and_then(|ts| {
        ts.iter()
            .find(|t| t["Key"] == key)
            .map(|t| t["Value"].as_str().unwrap_or_default().to_string())
    });
    let on_snapshots = snapshot_tags(g)
        .iter()
        .map(|tags| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .collect();
    (on_group, on_snapshots)
}

/// What a successful pre-script writes to APPSNAP_TAGS_FILE ends up on the
/// group (at creation) and on each of its snapshots, and in the report; the
/// file is gone after the run.
#[test]
fn pre_script_tags_reach_the_group_and_its_snapshots() {
    let w = run_route(
        Route {
            pre_body: "printf '# position\\nappsnap:binlog=mariadb-bin.000003:4567\\nappsnap:gtid=0-1-42\\nsite=hz\\n' >> \"$APPSNAP_TAGS_FILE\"\necho \"$APPSNAP_TAGS_FILE\" > \"$(dirname \"$APPSNAP_TAGS_FILE\")/../../tags-file-was\"",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    let g = &w.groups()[0];
    for (k, v) in [
        ("appsnap:binlog", "mariadb-bin.000003:4567"),
        ("appsnap:gtid", "0-1-42"),
        ("site", "hz"),
    ] {
        assert_eq!(
            tag_values(g, k),
            (Some(v.to_string()), vec![Some(v.to_string()); 2]),
            "{k}: {why}"
        );
    }
    assert_eq!(w.report().script_tags.len(), 3, "{why}");
    let file = std::fs::read_to_string(w._dir.path().join("tags-file-was")).unwrap();
    assert!(
        file.trim()
            .starts_with(&w._dir.path().join("run").display().to_string()),
        "under the run directory: {file}"
    );
    assert!(
        !Path::new(file.trim()).exists(),
        "removed after the run: {file}"
    );
}

/// One bad line and none of the file's tags are used (a half-recorded
/// position misleads); the run still succeeds and the warning names the
/// line. A failed pre-script's tags are not trusted at all.
#[test]
fn a_bad_tags_file_adds_no_tag_and_a_failed_pre_script_adds_none() {
    let w = run_route(
        Route {
            pre_body: "printf 'appsnap:binlog=mariadb-bin.000003:4567\\nappsnap:job=not-mine\\n' >> \"$APPSNAP_TAGS_FILE\"",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    let g = &w.groups()[0];
    assert_eq!(
        tag_values(g, "appsnap:binlog"),
        (None, vec![None; 2]),
        "{why}"
    );
    assert_eq!(
        tag_values(g, "appsnap:job").0.as_deref(),
        Some("db"),
        "appsnap's own tag stands: {why}"
    );
    assert!(
        w.report()
            .warnings
            .iter()
            .any(|m| m.contains("prescript tags not used") && m.contains("tags:2:")),
        "{why}"
    );

    let w = run_route(
        Route {
            pre_exit: 1,
            pre_body: "echo site=hz >> \"$APPSNAP_TAGS_FILE\"",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 9, "{why}");
    assert_eq!(
        tag_values(&w.groups()[0], "site"),
        (None, vec![None; 2]),
        "{why}"
    );
}

/// Issue 18: ECS throttles CreateSnapshotGroup while frozen. The run never
/// waits inside the window: it thaws at once, waits outside, freezes again
/// and asks again with the same ClientToken (ECS did not process the
/// throttled request, so no second group can appear).
#[test]
fn throttled_while_frozen_thaws_before_waiting_and_freezes_again() {
    let w = run_route(
        Route {
            job_extra: "hooks_while_throttled = \"hold\"\n",
            sim_extra: "[faults.actions.CreateSnapshotGroup.error]\ncode = \"Throttling.User\"\nstatus = 400\ntimes = 2\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    assert_eq!(
        w.calls(),
        ["pre", "freeze", "thaw", "freeze", "thaw", "freeze", "thaw", "post"],
        "{why}"
    );
    assert_eq!(w.groups().len(), 1, "{why}");
    assert_eq!(
        consistency_tags(&w.groups()[0]),
        ["AppConsistent=True,appsnap:consistency=app"; 2],
        "{why}"
    );
    assert_eq!(
        w.state()["counters"]["CreateSnapshotGroup"].as_u64(),
        Some(3),
        "{why}"
    );
    assert_eq!(
        w.report()
            .warnings
            .iter()
            .filter(|m| m.contains("throttled while frozen") && m.contains("thawed at once"))
            .count(),
        2,
        "{why}"
    );
}

/// The listing poll that proves the point in time is inside the window is
/// throttled three times while frozen: the window asks again at its own
/// short cadence instead of backing off (0.25 s, 0.5 s, 1 s at least with
/// the SDK's schedule), so the pause is not stretched by waits; the run
/// still sees the group listed while frozen and claims app consistency.
#[test]
fn a_throttled_listing_poll_while_frozen_is_asked_again_without_backing_off() {
    let w = run_route(
        Route {
            sim_extra: "[faults.actions.DescribeSnapshotGroups.error]\ncode = \"Throttling.User\"\nstatus = 400\ntimes = 3\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert_eq!(
        consistency_tags(&w.groups()[0]),
        ["AppConsistent=True,appsnap:consistency=app"; 2],
        "{why}"
    );
    assert_eq!(
        w.state()["counters"]["DescribeSnapshotGroups"].as_u64(),
        Some(4),
        "three throttled polls, then the listing: {why}"
    );
    let told: Vec<&String> = w
        .report()
        .warnings
        .iter()
        .filter(|m| m.contains("DescribeSnapshotGroups throttled 3 time(s) while frozen"))
        .collect();
    assert_eq!(told.len(), 1, "{why}");
    // The SDK's backoff alone would have kept the window open 1.75 s at least.
    let snapshot_ms = w
        .report()
        .stages
        .iter()
        .find(|(s, _)| s.as_str() == "snapshot")
        .map(|(_, ms)| *ms)
        .unwrap();
    assert!(
        snapshot_ms < 1000,
        "window stretched to {snapshot_ms} ms: {why}"
    );
}

/// Throttled every time: the run gives up after its last window (each one
/// thawed at once), creates nothing, runs the post-script, exits 4.
#[test]
fn always_throttled_gives_up_after_the_last_window_with_nothing_frozen() {
    let w = run_route(
        Route {
            sim_extra: "[faults.actions.CreateSnapshotGroup.error]\ncode = \"Throttling.User\"\nstatus = 400\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 4, "{why}");
    let calls = w.calls();
    assert_eq!(calls.first().map(String::as_str), Some("pre"), "{why}");
    assert_eq!(calls.last().map(String::as_str), Some("post"), "{why}");
    // Released around every wait: pre, freeze, thaw, post six times over.
    assert_eq!(calls.len(), 24, "six windows: {why}");
    assert!(
        calls
            .chunks(4)
            .all(|p| p == ["pre", "freeze", "thaw", "post"]),
        "{why}"
    );
    assert!(w.groups().is_empty(), "{why}");
}

/// `hooks_while_throttled = "release"` (the default): the post-script
/// releases the application before each wait and the pre-script quiesces it
/// again; the group carries the tags of the pre-script run that held the
/// lock at its point in time, not the first one's.
#[test]
fn released_while_throttled_reruns_the_hooks_and_tags_from_the_last_prescript() {
    let w = run_route(
        Route {
            // Each pre-script run writes its own position.
            pre_body: "n=$(grep -c '^pre$' {LOG}); printf 'appsnap:binlog=mysql-bin.00000%s:4\\n' \"$n\" > \"$APPSNAP_TAGS_FILE\"",
            sim_extra: "[faults.actions.CreateSnapshotGroup.error]\ncode = \"Throttling.User\"\nstatus = 400\ntimes = 2\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 0, "{why}");
    assert_eq!(
        w.calls(),
        [
            "pre", "freeze", "thaw", "post", "pre", "freeze", "thaw", "post", "pre", "freeze",
            "thaw", "post"
        ],
        "{why}"
    );
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{why}");
    assert_eq!(
        consistency_tags(&groups[0]),
        ["AppConsistent=True,appsnap:consistency=app"; 2],
        "{why}"
    );
    let (group_tag, snapshot_tags) = tag_values(&groups[0], "appsnap:binlog");
    assert_eq!(group_tag.as_deref(), Some("mysql-bin.000003:4"), "{why}");
    assert!(
        snapshot_tags
            .iter()
            .all(|t| t.as_deref() == Some("mysql-bin.000003:4")),
        "{why}"
    );
    assert_eq!(
        w.report().script_tags,
        [(
            "appsnap:binlog".to_string(),
            "mysql-bin.000003:4".to_string()
        )],
        "{why}"
    );
}

/// The pre-script cannot be run again after a release (made unusable
/// meanwhile): the snapshot is file-system-consistent, exit 9; the
/// post-script is not run a second time for a pre-script that never ran.
#[test]
fn a_prescript_that_cannot_run_again_after_a_release_gives_an_fs_snapshot() {
    let w = run_route(
        Route {
            sim_extra: "[faults.actions.CreateSnapshotGroup.error]\ncode = \"Throttling.User\"\nstatus = 400\ntimes = 1\n",
            ..Route::default()
        },
        |_, shared, _, _| async move {
            // Once the first window thawed, the pre-script becomes writable by others.
            loop {
                if shared.thawed_at.lock().unwrap().is_some() {
                    let pre = shared.log.with_file_name("pre.sh");
                    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o777)).unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 9, "{why}");
    assert_eq!(
        w.calls(),
        ["pre", "freeze", "thaw", "post", "freeze", "thaw"],
        "{why}"
    );
    assert_eq!(
        consistency_tags(&w.groups()[0]),
        ["FsConsistent=True,appsnap:consistency=fs"; 2],
        "{why}"
    );
}

/// A failed pre-script ("fs" mode: a file-system-consistent snapshot is
/// still owed) does not make a throttled window the last one: only trouble
/// around the window itself (a lost freeze, a failed thaw) does.
#[test]
fn a_failed_pre_script_does_not_stop_the_run_freezing_again_after_throttling() {
    let w = run_route(
        Route {
            pre_exit: 3,
            sim_extra: "[faults.actions.CreateSnapshotGroup.error]\ncode = \"Throttling.User\"\nstatus = 400\ntimes = 1\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 9, "{why}");
    assert_eq!(
        w.calls(),
        ["pre", "freeze", "thaw", "freeze", "thaw", "post"],
        "{why}"
    );
    assert_eq!(
        consistency_tags(&w.groups()[0]),
        ["FsConsistent=True,appsnap:consistency=fs"; 2],
        "{why}"
    );
}

/// A throttled window whose freeze was lost (someone thawed behind the
/// guard's back) is the last one: the run cannot prove its freezes hold, so
/// it does not freeze again; exit 11, no group.
#[test]
fn a_throttled_window_with_a_lost_freeze_is_the_last() {
    let w = run_route(
        Route {
            fake: Fake::LosesFreeze,
            sim_extra: "[faults.actions.CreateSnapshotGroup.error]\ncode = \"Throttling.User\"\nstatus = 400\ntimes = 1\n",
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.report().exit_code, 11, "{why}");
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert!(w.groups().is_empty(), "{why}");
}

/// A daemon asked to stop waits for runs between their pre-script and the
/// end of their post-script (so nothing stays locked or frozen), not for a
/// run that is only waiting for ECS to finish its snapshots afterwards.
#[test]
fn a_stop_waits_for_the_post_script_not_for_the_snapshots_to_be_usable() {
    let w = run_route(
        Route {
            job_extra: "thaw_after = \"accepted\"\n",
            sim_extra: "[faults]\navailable_delay_ms = 3000\n",
            stop_after_post: true,
            ..Route::default()
        },
        nothing,
    );
    let why = explain(&w);
    assert_eq!(w.calls(), ["pre", "freeze", "thaw", "post"], "{why}");
    assert_eq!(
        *w.shared.stop_released.lock().unwrap(),
        Some(true),
        "the stop still waited for the run after its post-script: {why}"
    );
}
