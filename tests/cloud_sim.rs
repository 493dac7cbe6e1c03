//! The real cloud client against the project's emulator (`tests/ecs-sim`),
//! whose signature verifier is an independent implementation: hardened-only
//! IMDS, RAM-role STS credentials, and a whole snapshot-group lifecycle, in
//! both signature schemes.

use std::time::Duration;

use appsnap::cloud::ecs::{
    ClientToken, CreateSnapshotGroup, DeleteOutcome, GroupDisks, SnapshotFilter,
    SnapshotGroupFilter, Tag,
};
use appsnap::cloud::{Cloud, TAG_JOB};
use appsnap::job::disks::select_disks;
use appsnap::policy::types::{CloudSettings, DiskId, DiskSelection, SignatureVersion};
use ecs_sim::config::{DiskConfig, DiskType, HttpTokens, SimConfig};
use ecs_sim::SimHandle;
use tokio::time::Instant;

const INSTANCE: &str = "i-bp1simtest0000000000";
const SYS: &str = "d-bp1sys0000000000000";
const DATA1: &str = "d-bp1data100000000000";
const DATA2: &str = "d-bp1data200000000000";
const OLD: &str = "d-bp1oldcat000000000";

fn disk(dir: &std::path::Path, id: &str, ty: DiskType, category: &str) -> DiskConfig {
    let backing = dir.join(format!("{id}.raw"));
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    DiskConfig {
        id: id.into(),
        serial: None,
        category: category.into(),
        disk_type: ty,
        multi_attach: false,
        size_gib: 40,
        instance_id: None,
        status: None,
        zone_id: None,
        backing,
        probe_mounts: vec![],
        tags: Default::default(),
    }
}

fn start(dir: &std::path::Path) -> SimHandle {
    let cfg = SimConfig {
        listen: "127.0.0.1".into(),
        imds_port: 0,
        ecs_port: 0,
        region_id: "cn-hangzhou".into(),
        zone_id: "cn-hangzhou-i".into(),
        instance_id: INSTANCE.into(),
        owner_account_id: "1234567890123456".into(),
        instance_type: "ecs.g7.large".into(),
        ram_role: Some("AppSnapshotRoleName".into()),
        credential_lifetime_secs: 21_600,
        http_tokens: HttpTokens::Required,
        access_keys: vec![],
        snapshot_dir: dir.join("snapshots"),
        time_to_accomplish_secs: 0.2,
        snapshot_quota_per_disk: 256,
        max_disks_per_group: 16,
        request_log: None,
        freeze_probe_timeout_ms: 300,
        copy_images: true,
        pit_delay_ms: 0,
        available_delay_ms: 0,
        faults: Default::default(),
        restore: Default::default(),
        instances: vec![],
        disks: vec![
            disk(dir, SYS, DiskType::System, "cloud_essd"),
            disk(dir, DATA1, DiskType::Data, "cloud_essd"),
            disk(dir, DATA2, DiskType::Data, "cloud_auto"),
            disk(dir, OLD, DiskType::Data, "cloud_efficiency"),
        ],
    };
    SimHandle::spawn(cfg).expect("emulator starts")
}

/// The emulator runs its own runtime (started outside ours); the client runs
/// on a current-thread runtime as the CLI does.
fn with_sim(version: SignatureVersion) {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(lifecycle(&sim, version));
}

async fn lifecycle(sim: &SimHandle, version: SignatureVersion) {
    let settings = CloudSettings {
        endpoint: Some(sim.started.ecs_url.clone()),
        metadata_endpoint: sim.started.imds_url.clone(),
        signature_version: version,
        ..CloudSettings::default()
    };
    let cloud = Cloud::connect(&settings).await.unwrap();
    assert_eq!(cloud.instance_id, INSTANCE);
    assert_eq!(cloud.region_id, "cn-hangzhou");
    let deadline = || Instant::now() + Duration::from_secs(20);

    // Preflight: "all" minus the system disk keeps the two supported data disks.
    let disks = cloud
        .ecs
        .describe_disks(&cloud.instance_id, &[], deadline())
        .await
        .unwrap();
    assert_eq!(disks.len(), 4);
    let selection = DiskSelection::All {
        exclude: vec![DiskId::parse(SYS).unwrap()],
    };
    let sel = select_disks(&selection, &cloud.instance_id, &disks, 16).unwrap();
    let ids: Vec<DiskId> = sel
        .disks
        .iter()
        .map(|d| DiskId::parse(&d.disk_id).unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(sel.skipped.len(), 1, "{:?}", sel.skipped);

    // Before the freeze: credentials good for the window, connection warm.
    let key = cloud
        .credentials
        .ensure_valid_for(Duration::from_secs(600))
        .await
        .unwrap();
    assert!(key.access_key_id.starts_with("STS."));
    cloud.ecs.warm(deadline()).await.unwrap();

    // Frozen: one call, with a ClientToken; a replay returns the same group.
    let req = CreateSnapshotGroup {
        instance_id: cloud.instance_id.clone(),
        disks: GroupDisks::Only(ids),
        name: "mysql-20250102T030405Z".into(),
        description: Some("app-consistent: fsfreeze /data; a*b~c/d+e=f&g %k 备份".into()),
        tags: vec![Tag::new(TAG_JOB, "mysql"), Tag::new("env", "")],
        resource_group_id: None,
        client_token: ClientToken::generate(),
    };
    let ssg = cloud
        .ecs
        .create_snapshot_group(&req, deadline())
        .await
        .unwrap();
    let replay = cloud
        .ecs
        .create_snapshot_group(&req, deadline())
        .await
        .unwrap();
    assert_eq!(ssg, replay, "same ClientToken, same group");

    // After thawing: await, tag the snapshots, list, prune.
    let filter = SnapshotGroupFilter {
        ids: vec![ssg.clone()],
        ..Default::default()
    };
    let mut group = None;
    for _ in 0..200 {
        let g = cloud
            .ecs
            .describe_snapshot_groups(&filter, deadline())
            .await
            .unwrap();
        assert_eq!(g.len(), 1);
        if g[0].status == "accomplished" {
            group = g.into_iter().next();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let group = group.expect("group accomplished");
    assert_eq!(group.tag(TAG_JOB), Some("mysql"));
    assert_eq!(group.snapshots.len(), 2);
    let snapshot_ids: Vec<String> = group
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    cloud
        .ecs
        .tag_resources(
            "snapshot",
            &snapshot_ids,
            &[Tag::new("AppConsistent", "True")],
            deadline(),
        )
        .await
        .unwrap();
    let snaps = cloud
        .ecs
        .describe_snapshots(
            &SnapshotFilter {
                snapshot_ids: snapshot_ids.clone(),
                ..Default::default()
            },
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s
        .tags
        .iter()
        .any(|t| t.key == "AppConsistent" && t.value == "True")));
    let mine = cloud
        .ecs
        .describe_snapshot_groups(
            &SnapshotGroupFilter {
                instance_id: Some(cloud.instance_id.clone()),
                tags: vec![Tag::new(TAG_JOB, "mysql")],
                ..Default::default()
            },
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        cloud
            .ecs
            .delete_snapshot_group(&ssg, deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        cloud
            .ecs
            .delete_snapshot_group(&ssg, deadline())
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
}

#[test]
fn snapshot_group_lifecycle_v3() {
    with_sim(SignatureVersion::V3);
}

#[test]
fn snapshot_group_lifecycle_v1() {
    with_sim(SignatureVersion::V1);
}
