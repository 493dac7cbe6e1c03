//! The vendor's defaults, and the round-trip property: whatever the validator
//! accepts serializes back to a policy that validates to the same value.

use std::path::Path;
use std::time::Duration;

use appsnap::policy::types::ThawAfter;
use appsnap::policy::{parse_str, DiskSelection, JobZone, Policy};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use toml::{Table, Value};

fn parse(text: &str) -> Policy {
    parse_str(Path::new("/etc/appsnap.toml"), text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[test]
fn defaults_are_the_vendor_plugins() {
    let p = parse("[[job]]\nname = \"db\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\n");
    let j = &p.jobs[0];
    assert!(j.fs_freeze, "EnableFsFreeze defaults to true");
    assert_eq!(
        j.freeze_timeout,
        Duration::from_secs(30),
        "TimeoutInSeconds"
    );
    assert_eq!(
        j.script_timeout,
        Duration::from_secs(1800),
        "ScriptTimeoutInSeconds"
    );
    assert_eq!(j.jitter, Duration::ZERO);
    assert_eq!(
        j.spread,
        Duration::from_secs(60),
        "a fleet fans out over a minute by default"
    );
    assert_eq!(j.thaw_after, ThawAfter::Listed, "the vendor's thaw point");
    assert_eq!(j.zone, JobZone::Local);
    assert_eq!(j.disks, DiskSelection::All { exclude: vec![] });
    assert_eq!(j.prescript, None);
    assert_eq!(p.cloud.metadata_endpoint, "http://100.100.100.200");
    assert_eq!(p.cloud.max_disks_per_group, 128);
    assert_eq!(p.host.run_dir, Path::new("/run/appsnap"));
    assert_eq!(p.host.state_dir, Path::new("/var/lib/appsnap"));
    assert_eq!(p.host.by_id_dir, Path::new("/dev/disk/by-id"));
}

#[test]
fn job_overrides_defaults_which_override_vendor() {
    let p = parse(
        "[defaults]\nfreeze_timeout_secs = 10\nfs_freeze = false\n\
         [[job]]\nname = \"a1\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\nfreeze_timeout_secs = 5\n\
         [[job]]\nname = \"b1\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\n",
    );
    assert_eq!(p.jobs[0].freeze_timeout, Duration::from_secs(5));
    assert_eq!(p.jobs[1].freeze_timeout, Duration::from_secs(10));
    assert!(!p.jobs[1].fs_freeze);
    assert_eq!(p.jobs[1].script_timeout, Duration::from_secs(1800));
}

#[test]
fn shipped_and_example_policies_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let none = root.join("nonexistent.d");
    let shipped = appsnap::policy::load(&root.join("config/appsnap.toml"), &none).unwrap();
    assert!(
        shipped.jobs.is_empty(),
        "the shipped policy must schedule nothing"
    );
    let mut examples = 0;
    for e in std::fs::read_dir(root.join("config/examples")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let p = appsnap::policy::load(&path, &none).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.jobs.is_empty(), "{} has no job", path.display());
            examples += 1;
        }
    }
    assert!(examples >= 1);
}

const ZONES: &[&str] = &["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York"];

fn cron() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..60, 0u32..24).prop_map(|(m, h)| format!("{m} {h} * * *")),
        (0u32..60, 1u32..31, 1u32..8).prop_map(|(s, d, step)| format!("{s} */{step} * {d} * *")),
        (0u32..60, 0u32..7).prop_map(|(m, w)| format!("{m} 1-5 * * {w}")),
        Just("*/5 * * * *".to_string()),
    ]
}

fn disk() -> impl Strategy<Value = String> {
    "d-[a-z0-9]{1,12}"
}

fn opt_int(lo: i64, hi: i64) -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(lo..=hi)
}

prop_compose! {
    fn job_table(name: String)(
        schedule in cron(),
        zone in proptest::option::of(proptest::sample::select(ZONES)),
        all in any::<bool>(),
        disks in proptest::collection::btree_set(disk(), 1..5),
        scripts in proptest::option::of(("/[a-z]{1,8}", "[a-z]{1,8}")),
        script_env in proptest::collection::btree_set("[A-Z][A-Z0-9_]{0,12}", 0..3),
        description in proptest::option::of("[A-Za-z][A-Za-z0-9 ]{1,40}"),
        tags in proptest::collection::btree_map("[a-z]{1,10}", "[A-Za-z0-9]{0,10}", 0..4),
        keep_last in opt_int(1, 100),
        max_age in opt_int(1, 400),
        fs_freeze in proptest::option::of(any::<bool>()),
        freeze in opt_int(1, 600),
        script in opt_int(1, 86_400),
        timing in (opt_int(0, 3600), opt_int(0, 3600)),
        thaw_after in proptest::option::of(proptest::sample::select(&["listed", "accepted"][..])),
        verify in (
            proptest::option::of(cron()),
            proptest::option::of("/[a-z]{1,8}/[a-z]{1,8}"),
            opt_int(60, 86_400),
            proptest::option::of(proptest::sample::select(VERIFY_CATEGORIES)),
        ),
    ) -> Table {
        let (jitter, spread) = timing;
        let mut t = Table::new();
        t.insert("name".into(), Value::String(name.clone()));
        t.insert("schedule".into(), Value::String(schedule));
        if let Some(z) = zone { t.insert("timezone".into(), Value::String(z.to_string())); }
        let ids: Vec<Value> = disks.into_iter().map(Value::String).collect();
        if all {
            t.insert("disks".into(), Value::String("all".into()));
            t.insert("exclude_disks".into(), Value::Array(ids));
        } else {
            t.insert("disks".into(), Value::Array(ids));
        }
        if let Some((dir, file)) = scripts {
            t.insert("prescript".into(), Value::String(format!("{dir}/{file}-pre.sh")));
            t.insert("postscript".into(), Value::String(format!("{dir}/{file}-post.sh")));
        }
        let script_env: Vec<Value> = script_env
            .into_iter()
            .filter(|n| appsnap::policy::naming::check_script_env(n).is_ok())
            .map(Value::String)
            .collect();
        if !script_env.is_empty() { t.insert("script_env".into(), Value::Array(script_env)); }
        if let Some(d) = description { t.insert("description".into(), Value::String(d)); }
        if !tags.is_empty() {
            t.insert("tags".into(), Value::Table(tags.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
        }
        for (k, v) in [("keep_last", keep_last), ("max_age_days", max_age),
                       ("freeze_timeout_secs", freeze), ("script_timeout_secs", script), ("jitter_secs", jitter),
                       ("spread_secs", spread)] {
            if let Some(v) = v { t.insert(k.into(), Value::Integer(v)); }
        }
        if let Some(b) = fs_freeze { t.insert("fs_freeze".into(), Value::Boolean(b)); }
        if let Some(w) = thaw_after { t.insert("thaw_after".into(), Value::String(w.to_string())); }
        let (v_schedule, v_script, v_timeout, v_category) = verify;
        if let Some(s) = v_schedule { t.insert("verify_schedule".into(), Value::String(s)); }
        if let Some(s) = v_script { t.insert("verify_script".into(), Value::String(s)); }
        if let Some(n) = v_timeout { t.insert("verify_timeout_secs".into(), Value::Integer(n)); }
        if let Some(c) = v_category { t.insert("verify_category".into(), Value::String(c.to_string())); }
        t
    }
}

/// Every spelling `verify_category` accepts.
const VERIFY_CATEGORIES: &[&str] = &[
    "cloud_essd",
    "cloud_essd:PL0",
    "cloud_essd:PL1",
    "cloud_essd:PL3",
    "cloud_auto",
    "cloud_essd_entry",
];

#[test]
fn verify_keys_default_inherit_and_override() {
    let p = parse(
        "[defaults]\nverify_timeout_secs = 600\nverify_category = \"cloud_auto\"\n\
         [[job]]\nname = \"a1\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\n\
         verify_schedule = \"0 5 * * 0\"\nverify_script = \"/etc/appsnap/verify-mysql.sh\"\n\
         verify_timeout_secs = 3600\nverify_category = \"cloud_essd:PL0\"\n\
         [[job]]\nname = \"b1\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\n",
    );
    let a = &p.jobs[0].verify;
    assert_eq!(a.schedule.as_ref().map(|s| s.as_str()), Some("0 5 * * 0"));
    assert_eq!(
        a.script.as_deref(),
        Some(Path::new("/etc/appsnap/verify-mysql.sh"))
    );
    assert_eq!(a.timeout, Duration::from_secs(3600));
    let c = a.category.as_ref().unwrap();
    assert_eq!(
        (c.category.as_str(), c.performance_level.as_deref()),
        ("cloud_essd", Some("PL0"))
    );
    let b = &p.jobs[1].verify;
    assert_eq!(b.schedule, None, "no drills unless asked");
    assert_eq!(b.script, None);
    assert_eq!(b.timeout, Duration::from_secs(600), "from [defaults]");
    assert_eq!(
        b.category.as_ref().map(ToString::to_string).as_deref(),
        Some("cloud_auto")
    );
    let plain = parse("[[job]]\nname = \"c1\"\nschedule = \"0 3 * * *\"\ndisks = \"all\"\n");
    assert_eq!(
        plain.jobs[0].verify.timeout,
        Duration::from_secs(1800),
        "default 1800 s"
    );
    assert_eq!(plain.jobs[0].verify.category, None, "the built-in fallback");
    assert_round_trips(&p.to_toml()).unwrap();
}

fn policy_text() -> impl Strategy<Value = String> {
    let names = proptest::collection::btree_set("[A-Za-z][A-Za-z0-9._:-]{1,30}", 1..4);
    (
        names,
        proptest::option::of("[a-z]{2}-[a-z]{3,10}"),
        proptest::option::of(1i64..=128),
        proptest::option::of(any::<bool>()),
        opt_int(1, 600),
    )
        .prop_flat_map(|(names, region, max_disks, v1, def_freeze)| {
            let jobs: Vec<_> = names.into_iter().map(job_table).collect();
            (jobs, Just((region, max_disks, v1, def_freeze)))
        })
        .prop_map(|(jobs, (region, max_disks, v1, def_freeze))| {
            let mut cloud = Table::new();
            if let Some(r) = region {
                cloud.insert("region_id".into(), Value::String(r));
            }
            // Jobs list at most 4 disks, so the cap never rejects them.
            if let Some(m) = max_disks {
                cloud.insert("max_disks_per_group".into(), Value::Integer(m.max(4)));
            }
            if let Some(v1) = v1 {
                let v = if v1 { "v1" } else { "v3" };
                cloud.insert("signature_version".into(), Value::String(v.into()));
            }
            let mut defaults = Table::new();
            if let Some(f) = def_freeze {
                defaults.insert("freeze_timeout_secs".into(), Value::Integer(f));
            }
            let mut root = Table::new();
            root.insert("cloud".into(), Value::Table(cloud));
            root.insert("defaults".into(), Value::Table(defaults));
            root.insert(
                "job".into(),
                Value::Array(jobs.into_iter().map(Value::Table).collect()),
            );
            toml::to_string(&root).unwrap()
        })
}

/// Whatever the validator accepts renders to text that parses to the same
/// policy, and rendering that again gives the same text.
fn assert_round_trips(text: &str) -> Result<(), TestCaseError> {
    let first = parse(text);
    let rendered = first.to_toml();
    let second = parse(&rendered);
    prop_assert_eq!(&first, &second);
    prop_assert_eq!(rendered, second.to_toml());
    Ok(())
}

proptest! {
    // The recorded seeds (`cc …` lines in tests/policy_roundtrip.proptest-regressions,
    // named after this file) are replayed before any new case, and a new
    // failure is appended there.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn accepted_policies_round_trip(text in policy_text()) {
        assert_round_trips(&text)?;
    }
}

/// A seed replays the case the strategy generated when it was recorded, and
/// the strategy has changed since; the shrunk input written next to each seed
/// (`# shrinks to text = "…"`) is checked as it is. The property is "accepted
/// implies round-trips": a recorded input the validator rejects must be
/// rejected with a located error (the one recorded today has hour 24 in its
/// cron, from a generator that put the day of month in the hour field).
#[test]
fn recorded_regressions_round_trip_or_are_rejected_with_a_location() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_roundtrip.proptest-regressions");
    let file = std::fs::read_to_string(&path).unwrap();
    let mut replayed = 0;
    for line in file.lines().filter(|l| l.starts_with("cc ")) {
        let (_, literal) = line
            .split_once("# shrinks to text = ")
            .unwrap_or_else(|| panic!("a seed without its shrunk input: {line}"));
        // proptest writes the input with Debug; for these ASCII texts that is
        // a JSON string literal.
        let text: String = serde_json::from_str(literal)
            .unwrap_or_else(|e| panic!("cannot read the shrunk input ({e}): {literal}"));
        match parse_str(Path::new("/etc/appsnap.toml"), &text) {
            Ok(_) => assert_round_trips(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}")),
            Err(e) => {
                let e = e.to_string();
                assert!(e.starts_with("/etc/appsnap.toml:"), "not located: {e}");
                eprintln!("recorded case rejected: {e}");
            }
        }
        replayed += 1;
    }
    assert!(replayed > 0, "no recorded case in {}", path.display());
}
