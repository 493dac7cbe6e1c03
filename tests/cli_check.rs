//! The real binary: `check --offline` exit codes and output, `--version`,
//! and subcommands that are not built yet refusing plainly.

use std::path::Path;
use std::process::{Command, Output};

fn appsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .args(args)
        .output()
        .expect("run appsnap")
}

fn root(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

#[test]
fn check_offline_accepts_the_example_and_prints_next_runs() {
    let out = appsnap(&[
        "-c",
        &root("config/examples/two-jobs.toml"),
        "--config-dir",
        "/nonexistent",
        "check",
        "--offline",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("policy ok: 2 job(s)"), "{stdout}");
    let mysql = stdout
        .lines()
        .find(|l| l.starts_with("job \"mysql\""))
        .expect(&stdout);
    assert!(mysql.contains("(Asia/Shanghai)"), "{mysql}");
    assert_eq!(
        mysql.matches("02:30:00 +08:00").count(),
        3,
        "three next runs in the job's zone: {mysql}"
    );
}

#[test]
fn check_offline_rejects_a_bad_policy_with_code_2_and_location() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[[job]]\nname = \"mysql\"\nschedule = \"61 * * * *\"\ndisks = \"all\"\n",
    )
    .unwrap();
    let out = appsnap(&[
        "-c",
        f.to_str().unwrap(),
        "--config-dir",
        "/nonexistent",
        "check",
        "--offline",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:3:12: job \"mysql\": schedule \"61 * * * *\": minute must be 0-59",
        f.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn version_names_the_commit() {
    let out = appsnap(&["--version"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("appsnap {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
}

/// What each subcommand's help must say, from the README's "Using it" and
/// "Exit codes": its purpose in its own words and the options an operator
/// reaches for. A subcommand added without an entry here fails too.
const HELP_PROMISES: &[(&str, &[&str])] = &[
    ("daemon", &["scheduler", "scheduled times"]),
    (
        "run",
        &[
            "one job now",
            "exit code",
            "<JOB>",
            "--dry-run",
            "--no-prune",
        ],
    ),
    ("check", &["validate the policy", "instance", "--offline"]),
    (
        "plan",
        &["disks", "file systems", "freeze order", "<JOB>", "--json"],
    ),
    ("status", &["last result", "next run", "daemon", "--json"]),
    (
        "list",
        &[
            "snapshot groups",
            "newest first",
            "--job",
            "--json",
            "--prune-preview",
        ],
    ),
    (
        "thaw",
        &["frozen-set record", "safe to repeat", "--all", "--force"],
    ),
    (
        "verify",
        &[
            "Restore drill",
            "never the live",
            "--job",
            "--group",
            "--cleanup",
            "3 something could not be cleaned up",
        ],
    ),
    ("plugin", &["vendor plugin", "--params", "-Key=Value"]),
];

/// The subcommand names `appsnap --help` lists (without clap's `help`).
fn listed_subcommands() -> Vec<(String, String)> {
    let out = appsnap(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let commands = text
        .split_once("Commands:\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no Commands section: {text}"));
    commands
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_string(), about.trim().to_string())
        })
        .filter(|(name, _)| name != "help")
        .collect()
}

#[test]
fn every_subcommand_has_operator_help() {
    let listed = listed_subcommands();
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    let promised: Vec<&str> = HELP_PROMISES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, promised, "every listed subcommand has promises here");
    for ((sub, wanted), (_, listed_about)) in HELP_PROMISES.iter().zip(&listed) {
        assert!(
            !listed_about.is_empty(),
            "{sub} has no one-line about in `appsnap --help`"
        );
        let out = appsnap(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            !first.trim().is_empty() && !first.starts_with("Usage:"),
            "{sub} --help starts without saying what it does: {text}"
        );
        let lower = text.to_lowercase();
        for phrase in *wanted {
            assert!(
                lower.contains(&phrase.to_lowercase()),
                "{sub} --help does not mention {phrase:?}:\n{text}"
            );
        }
    }
}

/// `check` says beforehand what would make notifications fail: an `exec`
/// command appsnap would not run, a key file others can read, a textfile
/// directory it would not write; warnings, exit 0.
#[test]
fn check_offline_warns_about_sinks_that_would_fail() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let exec = dir.path().join("notify.sh");
    std::fs::write(&exec, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.path().join("webhook.key");
    std::fs::write(&key, "k3y-material\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let collector = dir.path().join("collector");
    std::fs::create_dir(&collector).unwrap();
    std::fs::set_permissions(&collector, std::fs::Permissions::from_mode(0o777)).unwrap();
    let f = dir.path().join("appsnap.toml");
    std::fs::write(
        &f,
        format!(
            "[notify]\nwebhook_url = \"https://alerts.example/x\"\nwebhook_key_file = \"{}\"\nexec = \"{}\"\n\
             [metrics]\ntextfile = \"{}/appsnap.prom\"\n\
             [[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ndisks = [\"d-bp1a\"]\nverify_script = \"{}\"\n",
            key.display(),
            exec.display(),
            collector.display(),
            exec.display()
        ),
    )
    .unwrap();
    let out = appsnap(&[
        "-c",
        f.to_str().unwrap(),
        "--config-dir",
        "/nonexistent",
        "check",
        "--offline",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("job \"db\": warning: notify.exec will not run:")
            && stdout.contains("must be exactly 0700"),
        "{stdout}"
    );
    assert!(
        stdout.contains("job \"db\": warning: verify_script will not run, so restore drills fail:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("job \"db\": warning: webhook events will not be sent:")
            && stdout.contains("chmod 0600"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("k3y-material"),
        "the key is never shown: {stdout}"
    );
    assert!(
        stdout.contains("warning: no metrics will be written:") && stdout.contains("mode 0777"),
        "{stdout}"
    );
}

/// A missing policy file is not a "rejected" policy: the message says the
/// file is not there and how to make one.
#[test]
fn check_on_a_missing_policy_says_no_such_file_and_how_to_create_one() {
    let out = appsnap(&[
        "-c",
        "/nonexistent/appsnap.toml",
        "--config-dir",
        "/nonexistent",
        "check",
        "--offline",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("policy rejected"), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/appsnap.toml: no such file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/usr/share/doc/appsnap/examples/"),
        "{stderr}"
    );
}
