//! The real binary's cloud subcommands against a local server that plays both
//! the metadata service and ECS (every ECS request's signature is re-derived).

mod cloud_support;
#[path = "common/skip.rs"]
mod skip;

use cloud_support::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AK: &str = "LTAI-list-test";
const SECRET: &str = "list-secret-value-42";

async fn imds(server: &MockServer) {
    Mock::given(method("PUT"))
        .and(path("/latest/api/token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("imds-tok"))
        .mount(server)
        .await;
    for (item, v) in [
        ("meta-data/instance-id", "i-bp1test"),
        ("meta-data/region-id", "cn-hangzhou"),
        ("meta-data/zone-id", "cn-hangzhou-i"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/latest/{item}")))
            .respond_with(ResponseTemplate::new(200).set_body_string(v))
            .mount(server)
            .await;
    }
}

fn policy(dir: &std::path::Path, server: &MockServer, jobs: &str) -> std::path::PathBuf {
    let f = dir.join("appsnap.toml");
    std::fs::write(
        &f,
        format!(
            "[cloud]\nendpoint = \"{0}\"\nmetadata_endpoint = \"{0}\"\n\n{jobs}",
            server.uri()
        ),
    )
    .unwrap();
    f
}

async fn appsnap(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    run(config, args, true).await
}

async fn run(
    config: &std::path::Path,
    args: &[&str],
    env_keys: bool,
) -> (Option<i32>, String, String) {
    run_with(config, args, env_keys, &[]).await
}

async fn run_with(
    config: &std::path::Path,
    args: &[&str],
    env_keys: bool,
    extra_env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_appsnap"));
    cmd.envs(extra_env.iter().copied());
    cmd.arg("-c")
        .arg(config)
        .args(["--config-dir", "/nonexistent"])
        .args(args)
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN");
    if env_keys {
        cmd.env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn groups() -> serde_json::Value {
    json!({"NextToken": "", "SnapshotGroups": {"SnapshotGroup": [
        {"SnapshotGroupId": "ssg-older", "Name": "mysql-20250101T000000Z", "Status": "accomplished",
         "CreationTime": "2025-01-01T00:00:00Z",
         "Tags": {"Tag": [{"Key": "appsnap:job", "Value": "mysql"}]},
         "Snapshots": {"Snapshot": [{"SnapshotId": "s-1", "SourceDiskId": "d-bp1a", "Progress": "100%", "Available": true}]}},
        {"SnapshotGroupId": "ssg-foreign", "Name": "manual", "Status": "accomplished",
         "CreationTime": "2025-01-03T00:00:00Z", "Tags": {"Tag": []}, "Snapshots": {"Snapshot": []}},
        {"SnapshotGroupId": "ssg-newer", "Name": "mysql-20250102T000000Z", "Status": "progressing",
         "CreationTime": "2025-01-02T00:00:00Z",
         "Tags": {"Tag": [{"Key": "appsnap:job", "Value": "mysql"}]},
         "Snapshots": {"Snapshot": [{"SnapshotId": "s-2", "SourceDiskId": "d-bp1a", "Progress": "40%", "Available": false}]}}
    ]}})
}

/// Consistency lives on the snapshots (ECS cannot tag a group after creation).
/// DescribeSnapshots spells tags `{TagKey, TagValue}` (official SDK model).
fn snapshots() -> serde_json::Value {
    json!({"NextToken": "", "Snapshots": {"Snapshot": [
        {"SnapshotId": "s-1", "SourceDiskId": "d-bp1a", "Status": "accomplished",
         "Tags": {"Tag": [{"TagKey": "AppConsistent", "TagValue": "True"}, {"TagKey": "appsnap:consistency", "TagValue": "app"}]}}
    ]}})
}

#[tokio::test]
async fn list_shows_appsnap_groups_newest_first() {
    let server = MockServer::start().await;
    imds(&server).await;
    Mock::given(ActionIs("DescribeSnapshotGroups"))
        .respond_with(ecs_ok(groups()))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DescribeSnapshots"))
        .respond_with(ecs_ok(snapshots()))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, "");
    let (code, out, err) = appsnap(&cfg, &["list"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("GROUP"), "{out}");
    assert!(
        lines[1].starts_with("ssg-newer") && lines[1].contains("progressing"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("ssg-older") && lines[2].contains("application"),
        "{out}"
    );
    assert!(!out.contains("ssg-foreign"), "{out}");

    let (code, out, err) = appsnap(&cfg, &["list", "--job", "mysql", "--json"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], "ssg-newer");
    assert_eq!(v[1]["disks"][0], "d-bp1a");

    let keys = KeyRing::new().with(AK, SECRET, None);
    let seen = assert_all_signed(&server, &keys).await;
    // Each list: DescribeSnapshotGroups, then DescribeSnapshots for the
    // snapshots of every group that did not fail (one still uploading is
    // usable and tagged too).
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].params["InstanceId"], "i-bp1test");
    assert_eq!(seen[0].params["RegionId"], "cn-hangzhou");
    assert_eq!(seen[1].params["SnapshotIds"], "[\"s-1\",\"s-2\"]");
    assert_eq!(seen[2].params["Tag.1.Key"], "appsnap:job");
    assert_eq!(seen[2].params["Tag.1.Value"], "mysql");
    assert!(!format!("{out}{err}").contains(SECRET));
}

#[tokio::test]
async fn list_reports_ecs_errors_with_their_code() {
    let server = MockServer::start().await;
    imds(&server).await;
    Mock::given(ActionIs("DescribeSnapshotGroups"))
        .respond_with(ecs_error(
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource.",
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, "");
    let (code, out, err) = appsnap(&cfg, &["list"]).await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("Forbidden.RAM"), "{err}");
}

const ROLE_SECRET: &str = "role-secret-for-check-77";
const ROLE_TOKEN: &str = "role-sts-token-for-check-88";

async fn role(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/ram/security-credentials/"))
        .respond_with(ResponseTemplate::new(200).set_body_string("SnapRole"))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/ram/security-credentials/SnapRole"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(role_credentials_json(
                "STS.check",
                ROLE_SECRET,
                ROLE_TOKEN,
                chrono::Duration::hours(6),
            )),
        )
        .mount(server)
        .await;
}

async fn disks(server: &MockServer) {
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(json!({"NextToken": "", "Disks": {"Disk": [
            {"DiskId": "d-bp1sys", "Category": "cloud_essd", "Type": "system", "MultiAttach": "Disabled"},
            {"DiskId": "d-bp1data", "Category": "cloud_auto", "Type": "data", "MultiAttach": "Disabled"},
            {"DiskId": "d-bp1old", "Category": "cloud_efficiency", "Type": "data", "MultiAttach": "Disabled"},
            {"DiskId": "d-bp1shared", "Category": "cloud_essd", "Type": "data", "MultiAttach": "Enabled"}
        ]}})))
        .mount(server)
        .await;
}

const JOBS: &str = r#"
[[job]]
name = "good"
schedule = "30 2 * * *"
disks = ["d-bp1data"]

[[job]]
name = "bad"
schedule = "30 3 * * *"
disks = ["d-bp1data", "d-bp1old", "d-bp1shared", "d-bp1gone"]

[[job]]
name = "everything"
schedule = "30 4 * * *"
disks = "all"
exclude_disks = ["d-bp1sys"]
"#;

#[tokio::test]
async fn check_preflights_every_job_against_the_cloud() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, JOBS);
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("metadata ok: instance i-bp1test, region cn-hangzhou"),
        "{out}"
    );
    assert!(
        out.contains("credentials ok: RAM role SnapRole, valid until "),
        "{out}"
    );
    assert!(out.contains("4 disk(s) attached to i-bp1test"), "{out}");
    assert!(
        out.contains("job \"good\": ok: 1 disk(s): d-bp1data"),
        "{out}"
    );
    assert!(
        out.contains("job \"everything\": ok: 1 disk(s): d-bp1data"),
        "{out}"
    );
    // stderr also carries log lines; the failure report is the `job ...` lines.
    let failures: Vec<&str> = err.lines().filter(|l| l.starts_with("job ")).collect();
    assert_eq!(failures.len(), 3, "{err}");
    assert!(
        failures[0].starts_with("job \"bad\": disk d-bp1old: category cloud_efficiency"),
        "{err}"
    );
    assert!(
        failures[1].starts_with("job \"bad\": disk d-bp1shared: multi-attach"),
        "{err}"
    );
    assert!(
        failures[2].starts_with("job \"bad\": disk d-bp1gone: not attached"),
        "{err}"
    );
    for s in [ROLE_SECRET, ROLE_TOKEN, "imds-tok"] {
        assert!(!out.contains(s) && !err.contains(s), "{s} printed");
    }
    let keys = KeyRing::new().with("STS.check", ROLE_SECRET, Some(ROLE_TOKEN));
    let seen = assert_all_signed(&server, &keys).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].params["InstanceId"], "i-bp1test");
}

#[tokio::test]
async fn check_exits_3_when_all_disks_leaves_nothing_snapshottable() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    let dir = tempfile::tempdir().unwrap();
    // Left after the exclusions: a cloud_efficiency disk and a multi-attach one.
    let jobs = "[[job]]\nname = \"nothing\"\nschedule = \"30 4 * * *\"\ndisks = \"all\"\nexclude_disks = [\"d-bp1sys\", \"d-bp1data\"]\n";
    let cfg = policy(dir.path(), &server, jobs);
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(
        code,
        Some(3),
        "the vendor's 'no supported disks' code, as a run would exit:\n{out}\n{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("job \"nothing\": no disk of instance i-bp1test")),
        "{err}"
    );
}

#[tokio::test]
async fn check_without_a_ram_role_exits_13() {
    let server = MockServer::start().await;
    imds(&server).await;
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/ram/security-credentials/"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, "");
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(code, Some(13), "{out}{err}");
    assert!(err.contains("no RAM role"), "{err}");
}

/// The metadata client never goes through a proxy, whatever the environment
/// says (the ECS client honours proxies except for loopback endpoints like this one).
#[tokio::test]
async fn metadata_ignores_proxy_environment() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = format!("http://{dead}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("appsnap.toml");
    let port = server.address().port();
    std::fs::write(
        &cfg,
        format!(
            "[cloud]\nendpoint = \"http://localhost:{port}\"\nmetadata_endpoint = \"http://127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run_with(
        &cfg,
        &["check"],
        false,
        &[
            ("HTTP_PROXY", proxy.as_str()),
            ("http_proxy", proxy.as_str()),
            ("ALL_PROXY", proxy.as_str()),
            ("NO_PROXY", ""),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("metadata ok"), "{out}");
    assert!(out.contains("credentials ok"), "{out}");
}

/// Runs the binary through a symlink named like the vendor's binary.
async fn vendor_binary(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let link = dir.join("app-snapshot-plugin");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_appsnap"), &link).unwrap();
    }
    let out = tokio::process::Command::new(&link)
        .args(args)
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Cloud Assistant's separate-argument form is refused exactly like the
/// `--params=` string: exit 2, the vendor's line, the culprit named.
#[tokio::test]
async fn plugin_separate_arguments_refuse_bad_parameters_like_params() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("none.toml");
    let c = cfg.to_str().unwrap();
    let (code, out, err) = run(
        &cfg,
        &["plugin", "--params=-RamRoleName=r,-Name=x1,-Bogus=1"],
        false,
    )
    .await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("unknown parameter -Bogus"), "{err}");
    let want_line = out.clone();
    for (code, out, err) in [
        run(
            &cfg,
            &["plugin", "--RamRoleName=r", "-Name=x1", "-Bogus=1"],
            false,
        )
        .await,
        vendor_binary(
            dir.path(),
            &["-c", c, "--RamRoleName=r", "-Name=x1", "-Bogus=1"],
        )
        .await,
    ] {
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(err.contains("unknown parameter -Bogus"), "{err}");
        assert_eq!(out, want_line);
    }
    for (args, culprit, want) in [
        (
            vec!["--RamRoleName=r", "-TimeoutInSeconds=0", "-Name=x1"],
            "-TimeoutInSeconds=\"0\"",
            2,
        ),
        (vec!["--RamRoleName=r"], "-Name is required", 2),
        (
            vec!["--RamRoleName=r", "-Name"],
            "\"-Name\": expected -Key=Value",
            2,
        ),
        (vec!["--RamRoleName=r", "-Name=1bad"], "-Name=\"1bad\"", 1),
    ] {
        let mut full = vec!["-c", c];
        full.extend(&args);
        let (code, out, err) = vendor_binary(dir.path(), &full).await;
        assert_eq!(code, Some(want), "{args:?}: {out}{err}");
        assert!(err.contains(culprit), "{args:?}: {err}");
        assert!(out.starts_with("[snapshotgroup=\"\"]"), "{out}");
    }
}

/// A well-formed separate-argument call runs the same job as `--params=`:
/// the role it names is the one fetched, and the run ends the same way
/// (here: no device on this machine carries the emulated disks' serials).
#[tokio::test]
async fn plugin_separate_arguments_run_like_params() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    Mock::given(ActionIs("DescribeSnapshots"))
        .respond_with(ecs_ok(
            json!({"NextToken": "", "Snapshots": {"Snapshot": []}}),
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let cfg = dir.path().join("appsnap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cloud]\nendpoint = \"{0}\"\nmetadata_endpoint = \"{0}\"\n\n[host]\nrun_dir = \"{1}\"\nstate_dir = \"{1}\"\n",
            server.uri(),
            run_dir.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let params = "--params=-RamRoleName=SnapRole,-EnableFsFreeze=true,-TimeoutInSeconds=30,-ExcludeDiskId=\"d-bp1sys\",-Name=Created_At_202401011200";
    let (want_code, want_out, want_err) = run(&cfg, &["plugin", params], false).await;
    let separate = [
        "--RamRoleName=SnapRole",
        "-EnableFsFreeze=true",
        "-TimeoutInSeconds=30",
        "-ExcludeDiskId=d-bp1sys",
        "-Name=Created_At_202401011200",
    ];
    let mut via_plugin = vec!["plugin"];
    via_plugin.extend(separate);
    let mut via_link = vec!["-c", c];
    via_link.extend(separate);
    // What the operator reads (log lines carry times and run ids).
    let report = |err: &str| -> Vec<String> {
        err.lines()
            .filter(|l| l.starts_with("warning: ") || l.starts_with("error: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(want_code, Some(1), "{want_out}{want_err}");
    assert!(
        report(&want_err).iter().any(|l| l.contains("d-bp1data")),
        "{want_err}"
    );
    for (code, out, err) in [
        run(&cfg, &via_plugin, false).await,
        vendor_binary(dir.path(), &via_link).await,
    ] {
        assert_eq!(
            code, want_code,
            "{out}{err}\n--params gave:\n{want_out}{want_err}"
        );
        assert_eq!(out, want_out, "{err}\n--params gave:\n{want_err}");
        assert_eq!(report(&err), report(&want_err));
    }
    let reqs = server.received_requests().await.unwrap();
    let role_reads = reqs
        .iter()
        .filter(|r| r.url.path() == "/latest/meta-data/ram/security-credentials/SnapRole")
        .count();
    assert!(
        role_reads >= 3,
        "each run reads the named role's credentials"
    );
}

const RETENTION_JOBS: &str = r#"
[[job]]
name = "pruned"
schedule = "30 2 * * *"
disks = ["d-bp1data"]
keep_last = 7

[[job]]
name = "kept"
schedule = "30 3 * * *"
disks = ["d-bp1data"]
"#;

/// `check` asks ECS, changing nothing, whether the role may delete groups
/// when a job prunes: a RAM refusal names the missing action and exits 3.
#[tokio::test]
async fn check_reports_a_role_that_cannot_delete_for_retention() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    Mock::given(ActionIs("DeleteSnapshotGroup"))
        .respond_with(ecs_error(
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, RETENTION_JOBS);
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(code, Some(3), "{out}{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("job ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("job \"pruned\": the role lacks ecs:DeleteSnapshotGroup"),
        "{err}"
    );
    assert!(lines[0].contains("Forbidden.RAM"), "{err}");
    let keys = KeyRing::new().with("STS.check", ROLE_SECRET, Some(ROLE_TOKEN));
    let seen = assert_all_signed(&server, &keys).await;
    let probe: Vec<_> = seen
        .iter()
        .filter(|v| v.action == "DeleteSnapshotGroup")
        .collect();
    assert_eq!(probe.len(), 1);
    assert_eq!(
        probe[0].params["SnapshotGroupId"],
        "ssg-appsnapprobe000000000"
    );
}

/// The probe's not-found answer means the role got past RAM: allowed, exit 0.
/// Without retention nothing is probed at all.
#[tokio::test]
async fn check_accepts_a_role_that_may_delete_and_probes_only_for_retention() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    Mock::given(ActionIs("DeleteSnapshotGroup"))
        .respond_with(ecs_error(
            404,
            "InvalidSnapshotGroup.NotFound",
            "The SnapshotGroupId provided does not exist in our records.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, RETENTION_JOBS);
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("job \"pruned\": retention ok: the role may call ecs:DeleteSnapshotGroup"),
        "{out}"
    );
    assert!(!out.contains("job \"kept\": retention"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let no_retention =
        "[[job]]\nname = \"kept\"\nschedule = \"30 3 * * *\"\ndisks = [\"d-bp1data\"]\n";
    let cfg = policy(dir.path(), &server, no_retention);
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(code, Some(0), "{out}{err}");
    // `.expect(1)` above: the second check sent no DeleteSnapshotGroup.
}

/// A region or key error on the probe proves nothing about RAM: a warning,
/// not a verdict, and certainly not "allowed".
#[tokio::test]
async fn check_probe_with_an_unrelated_error_only_warns() {
    let server = MockServer::start().await;
    imds(&server).await;
    role(&server).await;
    disks(&server).await;
    Mock::given(ActionIs("DeleteSnapshotGroup"))
        .respond_with(ecs_error(
            404,
            "InvalidRegionId.NotFound",
            "The RegionId provided does not exist in our records.",
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, RETENTION_JOBS);
    let (code, out, err) = run(&cfg, &["check"], false).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("job \"pruned\": warning: cannot tell whether the role may call ecs:DeleteSnapshotGroup"),
        "{out}"
    );
    assert!(out.contains("InvalidRegionId.NotFound"), "{out}");
    assert!(!out.contains("retention ok"), "{out}");
}

/// Against the emulator (real signatures, its DeleteSnapshotGroup): the
/// probe's not-found answer counts as "may delete".
#[test]
fn check_probe_against_the_emulator_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("data.raw");
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    let sim_toml = dir.path().join("sim.toml");
    std::fs::write(
        &sim_toml,
        format!(
            "region_id = \"cn-hangzhou\"\nzone_id = \"cn-hangzhou-i\"\ninstance_id = \"i-bp1probetest00000000\"\nram_role = \"AppSnapshotRoleName\"\nhttp_tokens = \"required\"\nsnapshot_dir = \"{0}/snapshots\"\n\n[[disk]]\nid = \"d-bp1data100000000000\"\ntype = \"data\"\ncategory = \"cloud_essd\"\nbacking = \"{1}\"\n",
            dir.path().display(),
            backing.display()
        ),
    )
    .unwrap();
    let sim = ecs_sim::SimHandle::spawn(ecs_sim::config::SimConfig::load(&sim_toml).unwrap())
        .expect("emulator starts");
    let cfg = dir.path().join("appsnap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cloud]\nendpoint = \"{}\"\nmetadata_endpoint = \"{}\"\n\n[[job]]\nname = \"pruned\"\nschedule = \"30 2 * * *\"\ndisks = [\"d-bp1data100000000000\"]\nmax_age_days = 30\n",
            sim.started.ecs_url, sim.started.imds_url
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(&cfg)
        .args(["--config-dir", "/nonexistent", "check"])
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("job \"pruned\": retention ok: the role may call ecs:DeleteSnapshotGroup"),
        "{stdout}"
    );
}

/// An IMDS that predates hardened mode: the token PUT is 404, GETs need no token.
async fn imds_without_token_api(server: &MockServer) {
    Mock::given(method("PUT"))
        .and(path("/latest/api/token"))
        .respond_with(ResponseTemplate::new(404))
        .mount(server)
        .await;
    for (item, v) in [
        ("meta-data/instance-id", "i-bp1test"),
        ("meta-data/region-id", "cn-hangzhou"),
        ("meta-data/zone-id", "cn-hangzhou-i"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/latest/{item}")))
            .respond_with(ResponseTemplate::new(200).set_body_string(v))
            .mount(server)
            .await;
    }
}

/// Normal mode is used (with a warning) unless the environment or the policy
/// forbids it; then `check` says which switch did.
#[tokio::test]
async fn check_falls_back_to_normal_mode_unless_forbidden() {
    let server = MockServer::start().await;
    imds_without_token_api(&server).await;
    disks(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = policy(dir.path(), &server, "");
    let (code, out, err) = run(&cfg, &["check"], true).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("metadata ok: instance i-bp1test"), "{out}");
    assert!(err.contains("normal mode"), "{err}");

    let (code, out, err) = run_with(
        &cfg,
        &["check"],
        true,
        &[("ALIBABA_CLOUD_IMDSV1_DISABLED", "true")],
    )
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no session-token API (HTTP 404"), "{err}");
    assert!(!out.contains("metadata ok"), "{out}");

    let forbidding = dir.path().join("forbid.toml");
    std::fs::write(
        &forbidding,
        format!(
            "[cloud]\nendpoint = \"{0}\"\nmetadata_endpoint = \"{0}\"\nimds_v1_fallback = false\n",
            server.uri()
        ),
    )
    .unwrap();
    let (code, out, err) = run(&forbidding, &["check"], true).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("imds_v1_fallback = false"), "{err}");
}

// ---- `appsnap run`: retention and records, like the daemon's runs.

/// A whole block device of this machine that no file system can be on (an
/// unattached loop device, size 0) if there is one, else any whole device:
/// the by-id fixture link points at it so the run's host plan finds "the
/// disk". Nothing is frozen (`fs_freeze = false`), whatever it holds.
fn some_whole_device() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !std::path::Path::new(&format!("/sys/class/block/{n}/partition")).exists())
        .collect();
    names.sort();
    let unattached_loop = names.iter().find(|n| {
        n.starts_with("loop")
            && std::fs::read_to_string(format!("/sys/class/block/{n}/size"))
                .is_ok_and(|s| s.trim() == "0")
    });
    unattached_loop
        .or(names.first())
        .cloned()
        .expect("some block device in /sys/class/block")
}

/// The emulator (groups accomplished at once) with one data disk, and a
/// policy whose job `db` keeps the last group, runs hooks that do nothing
/// and freezes nothing: an application-consistent run that needs no freeze.
fn prune_world(dir: &std::path::Path) -> (ecs_sim::SimHandle, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    const DISK: &str = "d-bp1runprune00000001";
    let backing = dir.join("data.raw");
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    let sim_toml = dir.join("sim.toml");
    std::fs::write(
        &sim_toml,
        format!(
            "region_id = \"cn-hangzhou\"\nzone_id = \"cn-hangzhou-i\"\ninstance_id = \"i-bp1runprune00000000\"\nram_role = \"AppSnapshotRoleName\"\nsnapshot_dir = \"{0}/snapshots\"\ntime_to_accomplish_secs = 0\n\n[[disk]]\nid = \"{DISK}\"\ntype = \"data\"\ncategory = \"cloud_essd\"\nbacking = \"{1}\"\n",
            dir.display(),
            backing.display()
        ),
    )
    .unwrap();
    let sim = ecs_sim::SimHandle::spawn(ecs_sim::config::SimConfig::load(&sim_toml).unwrap())
        .expect("emulator starts");
    let by_id = dir.join("by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    std::os::unix::fs::symlink(
        format!("../../{}", some_whole_device()),
        by_id.join(format!("virtio-{}", &DISK[2..])),
    )
    .unwrap();
    let hook = dir.join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = dir.join("appsnap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cloud]\nendpoint = \"{ecs}\"\nmetadata_endpoint = \"{imds}\"\n\n[host]\nby_id_dir = \"{by_id}\"\nrun_dir = \"{d}/run\"\nstate_dir = \"{d}/state\"\n\n[[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ndisks = [\"{DISK}\"]\nfs_freeze = false\nprescript = \"{hook}\"\npostscript = \"{hook}\"\nkeep_last = 1\n",
            ecs = sim.started.ecs_url,
            imds = sim.started.imds_url,
            by_id = by_id.display(),
            d = dir.display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    (sim, cfg)
}

/// The emulator's groups, by ID.
fn sim_groups(sim: &ecs_sim::SimHandle) -> Vec<String> {
    let base = &sim.started.ecs_url;
    let get = |target: &str, body: Vec<u8>, method: &str| {
        let req = ecs_sim::testkit::http::RawRequest {
            method: method.into(),
            target: target.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        };
        ecs_sim::testkit::http::send(base, &req, std::time::Duration::from_secs(10))
            .expect("control endpoint answers")
    };
    let state = get("/_sim/state", vec![], "GET").json();
    // Each run's group is then a minute older than the next one's.
    let advanced = get("/_sim/clock", br#"{"advance_secs": 60}"#.to_vec(), "POST");
    assert_eq!(advanced.status, 200);
    let mut ids: Vec<String> = state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn appsnap_sync(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(config)
        .args(["--config-dir", "/nonexistent"])
        .args(args)
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

/// `appsnap run` applies the job's retention after a successful run, as the
/// daemon does; `--no-prune` skips it. Root only for the hooks' ownership
/// rule (they make the run application-consistent without a freeze); nothing
/// is frozen or mounted.
#[test]
fn run_prunes_the_jobs_older_groups_unless_no_prune() {
    if !nix::unistd::geteuid().is_root() {
        skip::missing("not root: the hooks must be root-owned (script ownership rules)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sim, cfg) = prune_world(dir.path());

    let (code, out, err) = appsnap_sync(&cfg, &["run", "db", "--no-prune"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let first = sim_groups(&sim);
    assert_eq!(first.len(), 1, "{first:?}\n{err}");

    let (code, out, err) = appsnap_sync(&cfg, &["run", "db", "--no-prune"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let second = sim_groups(&sim);
    assert_eq!(
        second.len(),
        2,
        "--no-prune deleted nothing: {second:?}\n{err}"
    );
    assert!(second.contains(&first[0]), "{second:?}");
    let record = dir.path().join("state/jobs/db.json");
    let recorded = std::fs::read(&record).unwrap();
    let phases = |rec: &[u8]| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(rec).unwrap();
        v["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !phases(&recorded).contains(&"prune".to_string()),
        "{recorded:?}"
    );

    // A dry run neither prunes nor records.
    let (code, out, err) = appsnap_sync(&cfg, &["run", "db", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(sim_groups(&sim), second, "{err}");
    assert_eq!(std::fs::read(&record).unwrap(), recorded);

    let (code, out, err) = appsnap_sync(&cfg, &["run", "db"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let third = sim_groups(&sim);
    assert_eq!(
        third.len(),
        1,
        "keep_last = 1 leaves only the new group: {third:?}\n{err}"
    );
    assert!(!second.contains(&third[0]), "{third:?} {second:?}");
    let said = "retention: deleted 2 group(s): ";
    let line = err
        .lines()
        .find(|l| l.starts_with(said))
        .unwrap_or_default();
    assert!(
        line.contains(&second[0]) && line.contains(&second[1]),
        "{err}"
    );
    let group = out
        .split("snapshotgroup=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default();
    assert_eq!(group, third[0], "{out}");
    // The run's record, as `appsnap status` reads it.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/jobs/db.json")).unwrap())
            .unwrap();
    assert_eq!(rec["snapshot_group_id"], third[0].as_str());
    assert_eq!(rec["exit_code"], 0);
    // Pruning is a step of the run: timed in the record and the summary.
    let recorded = std::fs::read(dir.path().join("state/jobs/db.json")).unwrap();
    assert_eq!(
        phases(&recorded).last().map(String::as_str),
        Some("prune"),
        "{rec}"
    );
    assert!(err.contains(" prune="), "{err}");
}

/// A run that cannot even reach the cloud is recorded like the daemon's
/// (`appsnap status` shows why); a dry run records nothing.
#[tokio::test]
async fn run_records_a_connect_failure_but_a_dry_run_records_nothing() {
    // No token API, and the environment forbids normal mode: connecting fails at once.
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("appsnap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cloud]\nendpoint = \"{0}\"\nmetadata_endpoint = \"{0}\"\n\n[host]\nrun_dir = \"{1}/run\"\nstate_dir = \"{1}/state\"\n\n[[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ndisks = [\"d-bp1data\"]\n",
            server.uri(),
            dir.path().display()
        ),
    )
    .unwrap();
    let record = dir.path().join("state/jobs/db.json");
    let forbid = [("ALIBABA_CLOUD_IMDSV1_DISABLED", "true")];

    let (code, out, err) = run_with(&cfg, &["run", "db", "--dry-run"], false, &forbid).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(!record.exists(), "a dry run records nothing");

    let (code, out, err) = run_with(&cfg, &["run", "db"], false, &forbid).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with("[snapshotgroup=\"\"]"), "{out}");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("the failure is recorded")).unwrap();
    assert_eq!(rec["exit_code"], 1);
    assert_eq!(rec["snapshot_group_id"], serde_json::Value::Null);
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot reach the cloud: ") && message.contains("no session-token API"),
        "{message}"
    );
}
