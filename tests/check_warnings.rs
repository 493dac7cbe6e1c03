//! `check --offline` on policies that are valid but unwise or unsafe (issue
//! 14 item 12): a schedule firing more often than once a minute over every
//! disk is warned about; a plain-http metadata endpoint is accepted only for
//! the real metadata service (100.100.100.200), link-local and loopback.

use std::process::{Command, Output};

fn check(policy: &str) -> Output {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("appsnap.toml");
    std::fs::write(&f, policy).unwrap();
    Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(&f)
        .args(["--config-dir", "/nonexistent", "check", "--offline"])
        .output()
        .expect("run appsnap")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn job(schedule: &str, disks: &str) -> String {
    format!("[[job]]\nname = \"j1\"\nschedule = \"{schedule}\"\ndisks = {disks}\n")
}

#[test]
fn a_sub_minute_schedule_over_all_disks_is_warned_about() {
    let out = check(&job("*/5 * * * * *", "\"all\""));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "a warning, not a refusal: {t}");
    let line = t
        .lines()
        .find(|l| l.contains("warning"))
        .unwrap_or_else(|| panic!("no warning: {t}"));
    assert!(
        line.contains("job \"j1\"")
            && line.contains("every 5s")
            && line.contains("disks = \"all\""),
        "{line}"
    );
    // Once a minute, or a sub-minute schedule over listed disks: no warning.
    for policy in [
        job("* * * * *", "\"all\""),
        job("0 * * * * *", "\"all\""),
        job("*/5 * * * * *", "[\"d-bp1aaaa\"]"),
    ] {
        let t = text(&check(&policy));
        assert!(!t.contains("warning"), "{policy}: {t}");
    }
}

#[test]
fn plain_http_metadata_is_only_for_the_metadata_address_link_local_and_loopback() {
    for ok in [
        "http://100.100.100.200",
        "http://169.254.169.254",
        "http://127.0.0.1:8080",
        "http://localhost:9",
        "http://[::1]:80",
        "https://metadata.example.com",
    ] {
        let out = check(&format!("[cloud]\nmetadata_endpoint = \"{ok}\"\n"));
        assert_eq!(out.status.code(), Some(0), "{ok}: {}", text(&out));
    }
    for bad in [
        "http://metadata.example.com",
        "http://10.0.0.5",
        "http://100.100.100.201",
        "http://[2001:db8::1]",
    ] {
        let out = check(&format!("[cloud]\nmetadata_endpoint = \"{bad}\"\n"));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {t}");
        assert!(
            t.contains(&format!("metadata_endpoint {bad:?}")) && t.contains("https://"),
            "{bad}: {t}"
        );
    }
}
