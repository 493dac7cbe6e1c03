//! An end-to-end world: real ext4/xfs loop file systems the test made, the
//! emulator knowing them as this instance's cloud disks (real HTTP), and an
//! appsnap policy pointing at both. Torn down thaw → unmount → detach.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{appsnap_bin, Lab};
use ecs_sim::{SimConfig, SimHandle};
use serde_json::Value;

pub const INSTANCE: &str = "i-bp1e2etest0000001";
pub const EXT_DISK: &str = "d-bp1e2eext00000001";
pub const XFS_DISK: &str = "d-bp1e2exfs00000002";

/// Loop disks with ext4 and xfs, the emulator knowing them as this
/// instance's cloud disks, and a policy pointing appsnap at it all.
pub struct World {
    pub sim: SimHandle,
    pub ext: PathBuf,
    pub xfs: PathBuf,
    pub policy: PathBuf,
    // Declared last: dropped after the emulator stops.
    pub lab: Lab,
}

/// Knobs a test changes.
pub struct Setup {
    /// Extra TOML lines inside `[[job]]`.
    pub job_extra: String,
    /// Extra TOML appended to the emulator's config (e.g. `[faults...]`).
    pub sim_extra: String,
    /// Seconds from accept to accomplished.
    pub accomplish_secs: f64,
    /// The job's freeze_timeout_secs.
    pub freeze_timeout: u64,
    /// STS credential lifetime in the emulator (default: its own, 6 h).
    pub credential_lifetime_secs: Option<u64>,
    /// Where the lab directory goes: `<lab_prefix>-<tag>-...`.
    pub lab_prefix: &'static str,
    /// The lab watchdog's deadline (it thaws everything, then aborts).
    pub lab_timeout: Duration,
    /// Let the emulator restore disks (CreateDisk ... AttachDisk) with links
    /// in the lab's by-id directory, the device showing `device_delay_ms`
    /// after the disk is `In_use` (restore drills).
    pub restore_device_delay_ms: Option<u64>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            job_extra: String::new(),
            sim_extra: String::new(),
            accomplish_secs: 0.5,
            freeze_timeout: 30,
            credential_lifetime_secs: None,
            lab_prefix: "/tmp/appsnap-host",
            lab_timeout: Duration::from_secs(240),
            restore_device_delay_ms: None,
        }
    }
}

impl World {
    pub fn new(tag: &str, setup: Setup) -> World {
        let lab = Lab::with_prefix(setup.lab_prefix, tag, setup.lab_timeout);
        let ext_dev = lab.loop_dev("ext", 300);
        let xfs_dev = lab.loop_dev("xfs", 300);
        lab.mkfs(&ext_dev, "ext4");
        lab.mkfs(&xfs_dev, "xfs");
        let ext = lab.mount(&ext_dev, "ext");
        let xfs = lab.mount(&xfs_dev, "xfs");
        lab.link(&EXT_DISK[2..], &ext_dev);
        lab.link(&XFS_DISK[2..], &xfs_dev);
        let snap = lab.dir.join("snapshots");
        std::fs::create_dir_all(&snap).unwrap();
        let sim_toml = format!(
            r#"
region_id = "cn-hangzhou"
zone_id = "cn-hangzhou-i"
instance_id = "{INSTANCE}"
ram_role = "AppSnapshotRoleName"
http_tokens = "required"
credential_lifetime_secs = {lifetime}
snapshot_dir = "{snap}"
time_to_accomplish_secs = {accomplish}
request_log = "{log}"
freeze_probe_timeout_ms = 300

[[disk]]
id = "{EXT_DISK}"
category = "cloud_essd"
size_gib = 1
backing = "{ext_img}"
probe_mounts = ["{ext}"]

[[disk]]
id = "{XFS_DISK}"
category = "cloud_auto"
size_gib = 1
backing = "{xfs_img}"
probe_mounts = ["{xfs}"]
{extra}
"#,
            snap = snap.display(),
            accomplish = setup.accomplish_secs,
            lifetime = setup.credential_lifetime_secs.unwrap_or(21_600),
            log = lab.dir.join("requests.jsonl").display(),
            ext = ext.display(),
            xfs = xfs.display(),
            // The loop devices' backing files hold the disks' bytes; the emulator
            // copies them sparsely (reflink or SEEK_DATA), which keeps accept fast.
            ext_img = lab.dir.join("img/ext.img").display(),
            xfs_img = lab.dir.join("img/xfs.img").display(),
            extra = setup.sim_extra,
        );
        let sim_toml = match setup.restore_device_delay_ms {
            None => sim_toml,
            Some(ms) => format!(
                "{sim_toml}\n[restore]\nby_id_dir = \"{}\"\ndisk_dir = \"{}\"\ncreate_delay_ms = 300\nattach_delay_ms = 300\ndetach_delay_ms = 300\ndevice_delay_ms = {ms}\n",
                lab.by_id_dir().display(),
                lab.dir.join("restored").display()
            ),
        };
        let cfg: SimConfig =
            toml::from_str(&sim_toml).unwrap_or_else(|e| panic!("{e}\n{sim_toml}"));
        let sim = SimHandle::spawn(cfg).expect("emulator starts");
        let policy = lab.dir.join("appsnap.toml");
        let text = format!(
            r#"
[cloud]
metadata_endpoint = "{imds}"
endpoint = "{ecs}"

[host]
by_id_dir = "{by_id}"
run_dir = "{run}"
state_dir = "{state}"

[[job]]
name = "db"
schedule = "30 2 * * *"
disks = ["{EXT_DISK}", "{XFS_DISK}"]
freeze_timeout_secs = {freeze}
{extra}
"#,
            imds = sim.started.imds_url,
            ecs = sim.started.ecs_url,
            by_id = lab.by_id_dir().display(),
            run = lab.run_dir().display(),
            state = lab.dir.join("state").display(),
            freeze = setup.freeze_timeout,
            extra = setup.job_extra,
        );
        std::fs::write(&policy, text).unwrap();
        World {
            sim,
            ext,
            xfs,
            policy,
            lab,
        }
    }

    /// A root-owned 0700 hook in the lab (a root-owned 0755 directory).
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.lab.dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    /// Points the job's `prescript`/`postscript` at these files.
    pub fn use_hooks(&self, pre: &Path, post: &Path) {
        let policy = std::fs::read_to_string(&self.policy).unwrap()
            + &format!(
                "prescript = \"{}\"\npostscript = \"{}\"\n",
                pre.display(),
                post.display()
            );
        std::fs::write(&self.policy, policy).unwrap();
    }

    pub fn appsnap(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(appsnap_bin());
        cmd.arg("-c")
            .arg(&self.policy)
            .args(["--config-dir", "/nonexistent"])
            .args(args);
        run_bounded(cmd, Duration::from_secs(120))
    }

    pub fn state(&self) -> Value {
        http_get(&format!("{}/_sim/state", self.sim.started.ecs_url))
    }

    pub fn groups(&self) -> Vec<Value> {
        self.state()["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The request log's CreateSnapshotGroup lines.
    pub fn create_calls(&self) -> Vec<Value> {
        let log = std::fs::read_to_string(self.lab.dir.join("requests.jsonl")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["action"] == "CreateSnapshotGroup")
            .collect()
    }
}

/// Ends a background appsnap when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

pub fn http_get(url: &str) -> Value {
    let (base, path) = url.split_at(url.find("/_sim").expect("a control URL"));
    let req = ecs_sim::testkit::http::RawRequest {
        method: "GET".into(),
        target: path.into(),
        headers: vec![],
        body: vec![],
    };
    let resp = ecs_sim::testkit::http::send(base, &req, Duration::from_secs(10))
        .expect("control endpoint answers");
    assert_eq!(resp.status, 200, "GET {url}");
    resp.json()
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Proves a file system takes writes again (bounded: a frozen one would block).
pub fn assert_writable(dir: &Path) {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo ok > \"$1/writable-check\" && sync \"$1/writable-check\"",
        "sh",
    ])
    .arg(dir);
    let out = run_bounded(cmd, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{} is not writable after the run",
        dir.display()
    );
}

/// The tags on every snapshot of the (only) group.
pub fn snapshot_tags(group: &Value) -> Vec<Vec<(String, String)>> {
    group["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| tag_pairs(&s["tags"]))
        .collect()
}

/// A `{"Tag": [{"Key", "Value"}, …]}` list as the emulator's state holds it.
pub fn tag_pairs(tags: &Value) -> Vec<(String, String)> {
    tags["Tag"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["Key"].as_str().unwrap_or_default().to_string(),
                        t["Value"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn has_tag(tags: &[(String, String)], k: &str, v: &str) -> bool {
    tags.iter().any(|(a, b)| a == k && b == v)
}

/// A writer that appends a numbered line and fsyncs it until killed (dropped),
/// for at most 200 s, and stops at the first failed write.
pub fn start_writer(dir: &Path) -> KillOnDrop {
    let f = dir.join("journal.log");
    let child = Command::new("bash")
        .args([
            "-c",
            "i=0; while [ $SECONDS -lt 200 ]; do i=$((i+1)); echo \"record $i\" >> \"$1\" && sync \"$1\" || exit 1; done",
            "bash",
        ])
        .arg(f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// Mounts a copy of an image (log replayed for xfs), counts lines of
/// `journal.log`, and runs the file system checker; returns (lines, checker ok, checker output).
pub fn check_image(lab: &Lab, image: &Path, fs: &str, name: &str) -> (usize, bool, String) {
    let scratch = lab.dir.join(format!("{name}-scratch.img"));
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(image)
        .arg(&scratch)
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, out) = if fs == "ext4" {
        // A frozen ext4 has needs_recovery clear: a clean raw check is meaningful.
        let o = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&scratch)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    } else {
        (true, String::new())
    };
    let dev = lab.attach(&scratch);
    // Mounting replays the journal (ext4) or log (xfs), as a restore would.
    let opts = if fs == "xfs" { "nouuid" } else { "rw" };
    let mp = lab.mount_opts(&dev, &format!("check-{name}"), opts);
    let lines = std::fs::read_to_string(mp.join("journal.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    lab.umount(&mp);
    if fs == "xfs" {
        // FIFREEZE leaves the xfs log to replay: the mount above replayed it; now check.
        let o = Command::new("xfs_repair")
            .args(["-n", &dev])
            .output()
            .unwrap();
        return (
            lines,
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        );
    }
    (lines, ok, out)
}
