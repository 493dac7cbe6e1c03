//! The daemon's follower of a group's upload (a run ends once its snapshots
//! are usable; the upload can take hours): against the emulator, the job's
//! record moves to `accomplished`, a group that disappears is recorded as
//! such, and a newer run's record is never touched.

use std::sync::Arc;
use std::time::Duration;

use appsnap::cloud::ecs::{ClientToken, CreateSnapshotGroup, GroupDisks};
use appsnap::cloud::Cloud;
use appsnap::job::upload::{follow, FollowPace, Followed};
use appsnap::policy::types::{CloudSettings, DiskId};
use appsnap::state::{Consistency, JobResult, StateStore, Upload, STATE_SCHEMA};
use ecs_sim::{SimConfig, SimHandle};
use tokio::time::Instant;

const INSTANCE: &str = "i-bp1follow000000001";
const DISK: &str = "d-bp1follow00000001";

fn sim(dir: &std::path::Path, accomplish_secs: f64) -> SimHandle {
    let backing = dir.join("disk.raw");
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    let cfg: SimConfig = toml::from_str(&format!(
        r#"
region_id = "cn-hangzhou"
zone_id = "cn-hangzhou-i"
instance_id = "{INSTANCE}"
ram_role = "AppSnapshotRoleName"
snapshot_dir = "{snap}"
time_to_accomplish_secs = {accomplish_secs}

[[disk]]
id = "{DISK}"
backing = "{backing}"
"#,
        snap = dir.join("snapshots").display(),
        backing = backing.display(),
    ))
    .unwrap();
    SimHandle::spawn(cfg).expect("emulator starts")
}

fn record(run_id: &str, group: &str) -> JobResult {
    let now = chrono::Utc::now();
    JobResult {
        schema: STATE_SCHEMA,
        job: "db".into(),
        run_id: run_id.into(),
        scheduled_for: None,
        started_at: now,
        finished_at: now,
        exit_code: 0,
        consistency: Consistency::App,
        snapshot_group_id: Some(group.into()),
        frozen_ms: Some(100),
        phases: vec![],
        message: "ok".into(),
        upload: Some(Upload {
            status: "progressing".into(),
            progress: "0%".into(),
            checked_at: now,
        }),
    }
}

const FAST: FollowPace = FollowPace {
    first: Duration::from_millis(100),
    max: Duration::from_millis(400),
};

struct Setup {
    ecs: Arc<appsnap::cloud::ecs::EcsClient>,
    store: StateStore,
    group: String,
}

/// The emulator runs its own runtime, started outside the test's.
fn with_sim<F: std::future::Future<Output = ()>>(
    accomplish_secs: f64,
    test: impl FnOnce(Setup) -> F,
) {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), accomplish_secs);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let s = setup(&sim, dir.path()).await;
            test(s).await
        });
}

async fn setup(sim: &SimHandle, dir: &std::path::Path) -> Setup {
    let settings = CloudSettings {
        endpoint: Some(sim.started.ecs_url.clone()),
        metadata_endpoint: sim.started.imds_url.clone(),
        ..CloudSettings::default()
    };
    let cloud = Cloud::connect(&settings).await.unwrap();
    let req = CreateSnapshotGroup {
        instance_id: INSTANCE.into(),
        disks: GroupDisks::Only(vec![DiskId::parse(DISK).unwrap()]),
        name: "db-follow".into(),
        description: None,
        tags: vec![],
        resource_group_id: None,
        client_token: ClientToken::generate(),
    };
    let group = cloud
        .ecs
        .create_snapshot_group(&req, Instant::now() + Duration::from_secs(20))
        .await
        .unwrap();
    let store = StateStore::new(&dir.join("state"));
    Setup {
        ecs: Arc::new(cloud.ecs),
        store,
        group,
    }
}

fn followed(run_id: &str, group: &str) -> Followed {
    Followed {
        job: "db".into(),
        run_id: run_id.into(),
        group_id: group.into(),
    }
}

async fn follow_for(s: &Setup, run_id: &str, limit: Duration) {
    let records = Arc::new(tokio::sync::Mutex::new(()));
    tokio::time::timeout(
        limit,
        follow(
            s.ecs.clone(),
            s.store.clone(),
            records,
            followed(run_id, &s.group),
            FAST,
        ),
    )
    .await
    .expect("the follower ends once the group is accomplished");
}

#[test]
fn the_record_follows_the_upload_to_accomplished() {
    with_sim(1.0, |s| async move {
        s.store.write(&record("r1", &s.group)).unwrap();
        follow_for(&s, "r1", Duration::from_secs(30)).await;
        let rec = s.store.read("db").unwrap();
        let up = rec.upload.expect("upload recorded");
        assert_eq!(up.status, "accomplished");
        assert_eq!(up.progress, "100%");
        assert_eq!(rec.run_id, "r1");
    });
}

#[test]
fn a_newer_runs_record_is_never_touched() {
    with_sim(1.0, |s| async move {
        let newer = record("r2", "ssg-other");
        s.store.write(&newer).unwrap();
        follow_for(&s, "r1", Duration::from_secs(30)).await;
        assert_eq!(s.store.read("db").unwrap(), newer);
    });
}

#[test]
fn a_deleted_group_ends_the_following() {
    with_sim(3600.0, |s| async move {
        s.store.write(&record("r1", &s.group)).unwrap();
        s.ecs
            .delete_snapshot_group(&s.group, Instant::now() + Duration::from_secs(20))
            .await
            .unwrap();
        follow_for(&s, "r1", Duration::from_secs(30)).await;
        let up = s.store.read("db").unwrap().upload.unwrap();
        assert_eq!(up.status, "deleted");
    });
}
