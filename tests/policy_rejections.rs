//! Table-driven tests of bad policies: each must be rejected with a message
//! that names the offending key and points at the right line.

use std::path::Path;

use appsnap::policy::{parse_str, PolicyError};

/// A job that is valid on its own, so each case changes exactly one thing.
const JOB_HEAD: &str = "[[job]]\nname = \"mysql\"\nschedule = \"30 2 * * *\"\n";

/// The valid job plus `extra` lines (line 5 onward).
fn job(extra: &str) -> String {
    format!("{JOB_HEAD}disks = [\"d-bp1aaaa\"]\n{extra}")
}

/// The valid job without `disks`, plus `extra` lines (line 4 onward).
fn job_no_disks(extra: &str) -> String {
    format!("{JOB_HEAD}{extra}")
}

/// Asserts `text` is rejected with a problem on `line` whose message names `key`.
fn rejects(text: &str, line: usize, key: &str) {
    let path = Path::new("/etc/appsnap.toml");
    let err = match parse_str(path, text) {
        Ok(p) => panic!("accepted:\n{text}\n=> {p:?}"),
        Err(e) => e,
    };
    let PolicyError::Invalid(problems) = &err else {
        panic!("not a located error: {err}")
    };
    let Some(p) = problems.iter().find(|p| p.message.contains(key)) else {
        panic!("no message names {key:?}:\n{err}")
    };
    assert_eq!(p.line, line, "wrong line in: {p}");
    let shown = p.to_string();
    assert!(
        shown.starts_with(&format!("/etc/appsnap.toml:{line}:")),
        "{shown}"
    );
}

/// One `#[test]` per bad policy: `name: text, line, key;`.
macro_rules! rejections {
    ($($name:ident: $text:expr, $line:expr, $key:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let text: String = $text.into();
                rejects(&text, $line, $key);
            }
        )*
    };
}

rejections! {
    unknown_top_level_table: "[clod]\nregion_id = \"cn-hangzhou\"\n", 1, "clod";
    unknown_key_in_cloud: "[cloud]\nregoin_id = \"cn-hangzhou\"\n", 2, "regoin_id";
    unknown_key_in_host: "[host]\nrundir = \"/run/x\"\n", 2, "rundir";
    unknown_key_in_defaults: "[defaults]\nfreeze = true\n", 2, "freeze";
    unknown_key_in_a_job: job("retention = 3\n"), 5, "retention";
    string_where_integer: "[defaults]\nfreeze_timeout_secs = \"30\"\n", 2, "freeze_timeout_secs";
    integer_where_bool: "[defaults]\nfs_freeze = 1\n", 2, "fs_freeze";
    bad_region_id: "[cloud]\nregion_id = \"CN_Hangzhou\"\n", 2, "region_id";
    bad_instance_id: "[cloud]\ninstance_id = \"bp1xyz\"\n", 2, "instance_id";
    bad_ram_role: "[cloud]\nram_role = \"role with spaces\"\n", 2, "ram_role";
    plain_http_endpoint: "[cloud]\nendpoint = \"http://ecs.cn-hangzhou.aliyuncs.com\"\n", 2, "endpoint";
    metadata_endpoint_not_a_url: "[cloud]\nmetadata_endpoint = \"100.100.100.200\"\n", 2, "metadata_endpoint";
    bad_signature_version: "[cloud]\nsignature_version = \"v2\"\n", 2, "signature_version";
    max_disks_zero: "[cloud]\nmax_disks_per_group = 0\n", 2, "max_disks_per_group";
    relative_run_dir: "[host]\nrun_dir = \"run/appsnap\"\n", 2, "run_dir";
    freeze_timeout_0: "[defaults]\nfreeze_timeout_secs = 0\n", 2, "freeze_timeout_secs";
    freeze_timeout_601: job("freeze_timeout_secs = 601\n"), 5, "freeze_timeout_secs";
    script_timeout_too_long: "[defaults]\nscript_timeout_secs = 86401\n", 2, "script_timeout_secs";
    negative_jitter: job("jitter_secs = -5\n"), 5, "jitter_secs";
    spread_over_an_hour: job("spread_secs = 3601\n"), 5, "spread_secs";
    negative_spread_default: "[defaults]\nspread_secs = -1\n", 2, "spread_secs";
    unknown_thaw_point: job("thaw_after = \"answered\"\n"), 5, "thaw_after";
    unknown_prescript_failure_rule: job("on_prescript_failure = \"crash\"\n"), 5, "must be \"fs\"";
    skip_without_hooks: job("on_prescript_failure = \"skip\"\n"), 5, "needs a prescript and a postscript";
    unknown_prescript_failure_default: "[defaults]\non_prescript_failure = \"none\"\n", 2, "on_prescript_failure";
    unknown_hooks_while_throttled: job("hooks_while_throttled = \"keep\"\n"), 5, "must be \"release\"";
    script_env_credentials: job("script_env = [\"PGPASSFILE\",\n  \"ALIBABA_CLOUD_ACCESS_KEY_SECRET\"]\n"), 6, "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
    script_env_own_variables: job("script_env = [\"APPSNAP_JOB\"]\n"), 5, "may not be passed";
    script_env_not_a_name: job("script_env = [\"A-B\"]\n"), 5, "not a variable name";
    script_env_twice: job("script_env = [\"TZ\", \"TZ\"]\n"), 5, "listed twice";
    verify_schedule_bad_cron: job("verify_schedule = \"0 25 * * *\"\n"), 5, "verify_schedule";
    verify_script_relative: job("verify_script = \"verify.sh\"\n"), 5, "verify_script";
    verify_timeout_too_short: job("verify_timeout_secs = 59\n"), 5, "verify_timeout_secs";
    verify_timeout_too_long: "[defaults]\nverify_timeout_secs = 86401\n", 2, "verify_timeout_secs";
    verify_category_unknown: job("verify_category = \"cloud_ssd\"\n"), 5, "verify_category";
    verify_category_level_on_autopl: job("verify_category = \"cloud_auto:PL0\"\n"), 5, "only cloud_essd has performance levels";
    verify_category_bad_level: "[defaults]\nverify_category = \"cloud_essd:PL4\"\n", 2, "verify_category";
    verify_key_misspelt: job("verify_shedule = \"0 5 * * *\"\n"), 5, "verify_shedule";
    minute_61: "[[job]]\nname = \"mysql\"\nschedule = \"61 * * * *\"\ndisks = \"all\"\n", 3, "minute";
    hour_24: "[[job]]\nname = \"mysql\"\nschedule = \"0 24 * * *\"\ndisks = \"all\"\n", 3, "hour";
    four_cron_fields: "[[job]]\nname = \"mysql\"\nschedule = \"0 2 * *\"\ndisks = \"all\"\n", 3, "schedule";
    seven_cron_fields: "[[job]]\nname = \"mysql\"\nschedule = \"0 0 2 * * * 2030\"\ndisks = \"all\"\n", 3, "schedule";
    cron_that_never_fires: "[[job]]\nname = \"mysql\"\nschedule = \"0 0 30 2 *\"\ndisks = \"all\"\n", 3, "schedule";
    missing_schedule: "[[job]]\nname = \"mysql\"\ndisks = \"all\"\n", 1, "schedule";
    bad_zone: job("timezone = \"Asia/Shangai\"\n"), 5, "timezone";
    missing_name: "[[job]]\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n", 1, "name";
    name_starting_with_digit: "[[job]]\nname = \"1mysql\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n", 2, "name";
    name_with_space: "[[job]]\nname = \"my sql\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n", 2, "name";
    name_too_long_for_group_name: format!("[[job]]\nname = \"a{}\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n", "b".repeat(120)), 2, "name";
    missing_disks: job_no_disks(""), 1, "disks";
    disks_all: job_no_disks("disks = \"All\"\n"), 4, "disks";
    disks_a_number: job_no_disks("disks = 3\n"), 4, "disks";
    disk_id_uppercase: job_no_disks("disks = [\"d-BP1\"]\n"), 4, "disk ID";
    disk_id_without_prefix: job_no_disks("disks = [\"bp1aaaa\"]\n"), 4, "disk ID";
    empty_disk_list: job_no_disks("disks = []\n"), 4, "disks";
    disk_listed_twice: job_no_disks("disks = [\"d-a1\", \"d-a1\"]\n"), 4, "disks";
    exclude_with_explicit_list: job("exclude_disks = [\"d-bp1bbbb\"]\n"), 5, "exclude_disks";
    exclude_overlapping_list: job("exclude_disks = [\"d-bp1aaaa\"]\n"), 5, "exclude_disks";
    bad_excluded_id: job_no_disks("disks = \"all\"\nexclude_disks = [\"x\"]\n"), 5, "exclude_disks";
    relative_prescript: job("prescript = \"prescript.sh\"\n"), 5, "prescript";
    relative_postscript: job("postscript = \"./post.sh\"\n"), 5, "postscript";
    description_too_short: job("description = \"x\"\n"), 5, "description";
    description_a_url: job("description = \"https://example.com/x\"\n"), 5, "description";
    tag_key_acs: job("tags = { \"acs:x\" = \"v\" }\n"), 5, "tag key";
    tag_key_aliyun: job("tags = { aliyunx = \"v\" }\n"), 5, "tag key";
    tag_value_acs: job("tags = { env = \"acs:prod\" }\n"), 5, "tag";
    reserved_tag_key: job("tags = { AppConsistent = \"True\" }\n"), 5, "tag key";
    keep_last_zero: job("keep_last = 0\n"), 5, "keep_last";
    max_age_days_negative: job("max_age_days = -1\n"), 5, "max_age_days";
    too_many_disks_for_a_group: format!("[cloud]\nmax_disks_per_group = 1\n{}", job_no_disks("disks = [\"d-a1\", \"d-b2\"]\n")), 6, "max_disks_per_group";
    duplicate_job_name: format!("{}{}", job(""), job("")), 6, "duplicate job name";
    webhook_plain_http_off_host: "[notify]\nwebhook_url = \"http://alerts.example.com/hook\"\n", 2, "webhook_url";
    webhook_with_credentials: "[notify]\nwebhook_url = \"https://u:p@alerts.example.com/\"\n", 2, "webhook_url";
    webhook_key_relative: "[notify]\nwebhook_url = \"https://a.example/\"\nwebhook_key_file = \"key\"\n", 3, "webhook_key_file";
    webhook_key_without_webhook: "[notify]\nwebhook_key_file = \"/etc/appsnap/key\"\n", 2, "add webhook_url";
    webhook_secret_in_the_policy: "[notify]\nwebhook_url = \"https://a.example/\"\nwebhook_key = \"s3cret\"\n", 3, "webhook_key";
    exec_relative: "[notify]\nexec = \"notify.sh\"\n", 2, "exec";
    notify_timeout_zero: "[notify]\ntimeout_secs = 0\n", 2, "timeout_secs";
    notify_retries_too_many: job("notify = { retries = 11 }\n"), 5, "retries";
    job_webhook_plain_http: job("notify = { webhook_url = \"http://10.0.0.5/x\" }\n"), 5, "webhook_url";
    ping_url_plain_http: job("ping_url = \"http://hc-ping.com/uuid\"\n"), 5, "ping_url";
    catch_up_not_bool: job("catch_up = \"yes\"\n"), 5, "catch_up";
    textfile_not_prom: "[metrics]\ntextfile = \"/var/lib/prometheus/node-exporter/appsnap.txt\"\n", 2, ".prom";
    textfile_relative: "[metrics]\ntextfile = \"appsnap.prom\"\n", 2, "textfile";
    unknown_key_in_metrics: "[metrics]\ntextfle = \"/x.prom\"\n", 2, "textfle";
}

#[test]
fn notify_and_metrics_keys_are_read_and_a_jobs_table_replaces_the_global_one() {
    let text = format!(
        "[notify]\nwebhook_url = \"https://alerts.example/appsnap\"\nwebhook_key_file = \"/etc/appsnap/webhook.key\"\nsuccess = true\n\
         [metrics]\ntextfile = \"/var/lib/prometheus/node-exporter/appsnap.prom\"\n\
         [defaults]\ncatch_up = true\n{}{}",
        job("ping_url = \"https://hc-ping.com/5f3e\"\n"),
        "[[job]]\nname = \"pg\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\ncatch_up = false\nnotify = { exec = \"/etc/appsnap/notify.sh\", retries = 0 }\n"
    );
    let p = parse_str(Path::new("/etc/appsnap.toml"), &text).unwrap();
    assert_eq!(
        p.metrics.textfile.as_deref(),
        Some(Path::new("/var/lib/prometheus/node-exporter/appsnap.prom"))
    );
    let (mysql, pg) = (&p.jobs[0], &p.jobs[1]);
    assert!(mysql.catch_up && !pg.catch_up);
    assert_eq!(mysql.ping_url.as_deref(), Some("https://hc-ping.com/5f3e"));
    assert_eq!(
        mysql.notify, p.notify,
        "no table of its own: the global one"
    );
    assert!(mysql.notify.success);
    assert_eq!(
        pg.notify.webhook_url, None,
        "its own table replaces the global one whole"
    );
    assert_eq!(
        pg.notify.exec.as_deref(),
        Some(Path::new("/etc/appsnap/notify.sh"))
    );
    assert_eq!(pg.notify.retries, 0);
    // And the whole policy survives render -> parse.
    let again = parse_str(Path::new("/etc/appsnap.toml"), &p.to_toml()).unwrap();
    assert_eq!(again, p);
    // Loopback http is for tests and local receivers.
    parse_str(
        Path::new("/etc/appsnap.toml"),
        "[notify]\nwebhook_url = \"http://127.0.0.1:9000/hook\"\n",
    )
    .unwrap();
}

#[test]
fn dropins_may_only_add_jobs_and_names_are_unique_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("appsnap.toml");
    let d = dir.path().join("appsnap.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(&main, job("")).unwrap();
    std::fs::write(d.join("20-b.toml"), "[cloud]\nregion_id = \"cn-beijing\"\n").unwrap();
    std::fs::write(d.join("10-a.toml"), job("")).unwrap();
    let err = appsnap::policy::load(&main, &d).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("10-a.toml:2:8: job \"mysql\": duplicate job name; first defined at"),
        "{text}"
    );
    assert!(
        text.contains("20-b.toml:1:1: [cloud] is only allowed in the main policy file"),
        "{text}"
    );
}

#[test]
fn dropins_add_jobs_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("appsnap.toml");
    let d = dir.path().join("appsnap.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(&main, "").unwrap();
    let named =
        |n: &str| format!("[[job]]\nname = \"{n}\"\nschedule = \"0 * * * *\"\ndisks = \"all\"\n");
    std::fs::write(d.join("20-web.toml"), named("web")).unwrap();
    std::fs::write(d.join("10-db.toml"), named("db")).unwrap();
    std::fs::write(d.join("notes.txt"), "not a policy").unwrap();
    let p = appsnap::policy::load(&main, &d).unwrap();
    let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["db", "web"]);
}

#[test]
fn missing_main_file_is_named() {
    let err = appsnap::policy::load(
        Path::new("/nonexistent/appsnap.toml"),
        Path::new("/nonexistent/d"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/appsnap.toml: no such file"),
        "{err}"
    );
}

/// `on_prescript_failure` from `[defaults]` reaches every job; a job without
/// hooks accepts an inherited "skip" (it has no pre-script to fail), and a
/// job's own value wins.
#[test]
fn on_prescript_failure_is_inherited_and_overridable() {
    use appsnap::policy::OnPrescriptFailure;
    let text = format!(
        "[defaults]\non_prescript_failure = \"skip\"\n\n{}\n{}prescript = \"/etc/appsnap/pre.sh\"\npostscript = \"/etc/appsnap/post.sh\"\non_prescript_failure = \"fs\"\n",
        job(""),
        JOB_HEAD.replace("mysql", "pg") + "disks = [\"d-bp1bbbb\"]\n",
    );
    let p = parse_str(Path::new("/etc/appsnap.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let by = |n: &str| p.jobs.iter().find(|j| j.name.as_str() == n).unwrap();
    assert_eq!(by("mysql").on_prescript_failure, OnPrescriptFailure::Skip);
    assert_eq!(by("pg").on_prescript_failure, OnPrescriptFailure::Fs);
    let plain = parse_str(Path::new("/etc/appsnap.toml"), &job("")).unwrap();
    assert_eq!(plain.jobs[0].on_prescript_failure, OnPrescriptFailure::Fs);
}
