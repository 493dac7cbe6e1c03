//! Help texts a newcomer (and the man pages generated from them) can trust:
//! `run --help` says what a dry run leaves out, `plugin --help` lists every
//! parameter the plugin accepts with its default, from the parser's own table.

use std::process::Command;

use appsnap::job::plugin_params::PARAMETERS;

fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .args([sub, "--help"])
        .output()
        .expect("run appsnap");
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_help_says_a_dry_run_skips_the_scripts() {
    let h = help("run");
    let dry = h
        .split("--dry-run")
        .nth(1)
        .expect("--dry-run is documented");
    let dry = dry.split("--no-prune").next().unwrap();
    assert!(dry.contains("skips the pre- and post-script"), "{dry}");
}

#[test]
fn plugin_help_lists_every_parameter_with_its_default() {
    let h = help("plugin");
    for p in PARAMETERS {
        let line = h
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("-{}", p.name)))
            .unwrap_or_else(|| panic!("-{} not listed:\n{h}", p.name));
        assert!(
            line.contains(&p.default.to_string()),
            "-{}: default {} not shown: {line}",
            p.name,
            p.default
        );
    }
    assert!(
        h.contains("TimeoutInSeconds") && h.contains("(default: 30,"),
        "{h}"
    );
}
