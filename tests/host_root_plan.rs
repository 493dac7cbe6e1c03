//! Root lane: `appsnap plan` against real sysfs and mountinfo, with loop
//! devices standing in for cloud disks (a by-id directory of symlinks the
//! test makes, since loop devices have no serial). Skips when not root.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{appsnap_bin, Lab};

fn plan(lab: &Lab, job: &str, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(appsnap_bin());
    cmd.arg("-c")
        .arg(lab.dir.join("appsnap.toml"))
        .arg("--config-dir")
        .arg(lab.dir.join("conf.d"))
        .args(["plan", job]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_command_on_real_devices_btrfs_spanning_two_disks() {
    root_or_skip!();
    let lab = Lab::new("plancli", Duration::from_secs(60));
    let a = lab.loop_dev("bta", 256);
    let b = lab.loop_dev("btb", 256);
    let c = lab.loop_dev("ext", 256);
    let st = Command::new("mkfs.btrfs")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(["-q", "-f", "-d", "raid0", "-m", "raid1", &a, &b])
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.btrfs on two devices");
    lab.mkfs(&c, "ext4");
    let bt = lab.mount(&a, "bt");
    let ext = lab.mount(&c, "bt/ext");
    lab.link("hostbta", &a);
    lab.link("hostbtb", &b);
    lab.link("hostext", &c);
    std::fs::create_dir_all(lab.dir.join("conf.d")).unwrap();
    std::fs::write(
        lab.dir.join("appsnap.toml"),
        format!(
            r#"[host]
by_id_dir = "{}"
run_dir = "{}"

[[job]]
name = "half"
schedule = "0 3 * * *"
disks = ["d-hostbta", "d-hostext"]

[[job]]
name = "whole"
schedule = "0 3 * * *"
disks = ["d-hostbta", "d-hostbtb", "d-hostext"]

[[job]]
name = "every"
schedule = "0 3 * * *"
disks = "all"
"#,
            lab.by_id_dir().display(),
            lab.run_dir().display()
        ),
    )
    .unwrap();

    // One btrfs on two loop disks, only one of them in the job: refused, naming both.
    let (code, _, err) = plan(&lab, "half", false);
    assert_eq!(code, 1, "{err}");
    let bname = b.trim_start_matches("/dev/");
    assert!(
        err.contains(&bt.display().to_string()) && err.contains("btrfs"),
        "{err}"
    );
    assert!(err.contains("d-hostbta") && err.contains(bname), "{err}");

    let (code, out, err) = plan(&lab, "whole", false);
    assert_eq!(code, 0, "{err}");
    let first = out.find(&format!("1. {} ext4", ext.display()));
    let second = out.find(&format!("2. {} btrfs", bt.display()));
    assert!(
        first.is_some() && second.is_some(),
        "nested ext4 before its btrfs parent:\n{out}"
    );
    assert!(out.contains("not tmpfs"), "run_dir warning:\n{out}");

    let (code, out, err) = plan(&lab, "whole", true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = v["plan"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let disks: Vec<&str> = entries[1]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(disks.len(), 2, "btrfs spans both loop disks: {disks:?}");
    assert!(disks.contains(&"d-hostbta") && disks.contains(&"d-hostbtb"));
    assert_eq!(v["freeze_timeout_secs"], 30);

    let (code, _, err) = plan(&lab, "every", false);
    assert_eq!(code, 1);
    assert!(err.contains("DescribeDisks"), "{err}");
    let (code, _, _) = plan(&lab, "nope", false);
    assert_eq!(code, 2);
}
