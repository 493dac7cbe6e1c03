//! What `check` (and every policy load) says about a bad policy: every
//! unknown key at once, unknown tables named as tables, a bad job name not
//! hiding the job's other errors, the name limit it states being the real
//! one, and a missing file said plainly.

use std::path::Path;

use appsnap::policy::naming::JOB_NAME_MAX;
use appsnap::policy::{parse_str, PolicyError, Problem};

fn problems(text: &str) -> Vec<Problem> {
    match parse_str(Path::new("/etc/appsnap.toml"), text) {
        Ok(p) => panic!("accepted:\n{text}\n=> {p:?}"),
        Err(PolicyError::Invalid(p)) => p,
        Err(e) => panic!("not a located error: {e}"),
    }
}

/// The problem whose message names `word`, with the whole list on failure.
fn find<'a>(ps: &'a [Problem], word: &str) -> &'a Problem {
    ps.iter()
        .find(|p| p.message.contains(word))
        .unwrap_or_else(|| panic!("no message names {word:?}:\n{}", shown(ps)))
}

fn shown(ps: &[Problem]) -> String {
    ps.iter().map(|p| format!("{p}\n")).collect()
}

#[test]
fn every_unknown_key_is_reported_at_once_with_its_line() {
    let text = "[cloud]\nregoin_id = \"cn-hangzhou\"\nendpont = \"https://x\"\n\
                [host]\nrundir = \"/run/x\"\n\
                [[job]]\nname = \"mysql\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\nretention = 3\n\
                notify = { retires = 1 }\n";
    let ps = problems(text);
    for (key, line) in [
        ("regoin_id", 2),
        ("endpont", 3),
        ("rundir", 5),
        ("retention", 10),
        ("retires", 11),
    ] {
        let p = find(&ps, &format!("`{key}`"));
        assert_eq!(p.line, line, "{p}");
        assert!(p.message.contains("unknown key"), "{p}");
    }
    assert_eq!(ps.len(), 5, "one problem per unknown key:\n{}", shown(&ps));
    let job = find(&ps, "`retention`");
    assert_eq!(job.job.as_deref(), Some("mysql"), "{job}");
    assert!(find(&ps, "`rundir`").message.contains("[host]"));
    assert!(
        find(&ps, "`regoin_id`")
            .message
            .contains("(did you mean `region_id`?)"),
        "a near miss is named"
    );
    assert!(
        !find(&ps, "`retention`").message.contains("did you mean"),
        "no guess when nothing is close"
    );
}

#[test]
fn unknown_keys_do_not_hide_type_or_range_errors() {
    let ps = problems(
        "[defaults]\nfreeze = true\nfs_freeze = 1\nfreeze_timeout_secs = 0\n\
         [[job]]\nname = \"mysql\"\nschedule = 5\ndisks = \"all\"\nkeep_last = 0\n",
    );
    assert_eq!(find(&ps, "`freeze`").line, 2);
    assert_eq!(find(&ps, "integer `1`").line, 3);
    assert_eq!(find(&ps, "freeze_timeout_secs = 0").line, 4);
    assert_eq!(find(&ps, "integer `5`").line, 7);
    assert_eq!(find(&ps, "keep_last = 0").line, 9);
    assert_eq!(
        ps.len(),
        5,
        "a wrongly typed schedule is not also missing:\n{}",
        shown(&ps)
    );
    let lines: Vec<usize> = ps.iter().map(|p| p.line).collect();
    assert!(lines.is_sorted(), "in reading order: {lines:?}");
}

#[test]
fn an_unknown_table_is_named_as_a_table_not_as_a_key_of_the_one_before() {
    let ps = problems("[host]\nrun_dir = \"/run/x\"\n\n[bogus]\nx = 1\n");
    let p = find(&ps, "bogus");
    assert_eq!(p.line, 4, "{p}");
    assert!(p.message.contains("unknown table [bogus]"), "{p}");
    assert!(!p.message.contains("in [host]"), "{p}");
}

#[test]
fn an_invalid_job_name_does_not_hide_the_jobs_other_errors() {
    let ps = problems(
        "[[job]]\nname = \"1mysql\"\nschedule = \"61 * * * *\"\ndisks = \"all\"\ntimezone = \"Asia/Shangai\"\n",
    );
    assert_eq!(find(&ps, "name \"1mysql\"").line, 2);
    assert_eq!(find(&ps, "minute").line, 3);
    assert_eq!(find(&ps, "Asia/Shangai").line, 5);
}

#[test]
fn the_name_length_a_message_states_is_the_real_limit() {
    let job = |name: &str| {
        format!("[[job]]\nname = \"{name}\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n")
    };
    let longest = format!("a{}", "b".repeat(JOB_NAME_MAX - 1));
    parse_str(Path::new("/etc/appsnap.toml"), &job(&longest)).expect("the longest name is valid");
    let max = JOB_NAME_MAX.to_string();
    for bad in [
        format!("{longest}c"),
        "1mysql".to_string(),
        "my sql".to_string(),
    ] {
        let ps = problems(&job(&bad));
        let p = find(&ps, "name");
        assert!(p.message.contains(&max), "states the real limit {max}: {p}");
        assert!(!p.message.contains("127"), "{p}");
    }
}

#[test]
fn a_missing_policy_file_says_no_such_file_and_how_to_create_one() {
    let err = appsnap::policy::load(
        Path::new("/nonexistent/appsnap.toml"),
        Path::new("/nonexistent/d"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("/nonexistent/appsnap.toml: no such file"),
        "{msg}"
    );
    assert!(msg.contains("/usr/share/doc/appsnap/examples/"), "{msg}");
    assert!(msg.contains("appsnap check"), "{msg}");
    assert!(
        !err.is_rejection(),
        "a missing file is not a rejected policy"
    );
}
