//! Table tests of the pure retention selection over a mixed history.

use appsnap::owner::OwnerId;
use appsnap::retention::{select, Class, GroupFacts, Reason, Rules, Selection};
use appsnap::state::Consistency;
use chrono::{DateTime, Duration, Utc};

const JOB: &str = "mysql";
const ME: &str = "i-bp1me";
const OWNER: &str = "0123456789abcdef0123456789abcdef";

fn owner() -> OwnerId {
    OwnerId::parse(OWNER).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A group of this job on this instance, `age` old.
fn g(id: &str, age: Duration, status: &str, c: Option<Consistency>) -> GroupFacts {
    GroupFacts {
        id: id.into(),
        job_tag: Some(JOB.into()),
        instance_tag: Some(ME.into()),
        owner_tag: Some(OWNER.into()),
        plugin_tag: None,
        instance_id: ME.into(),
        created: Some(now() - age),
        status: status.into(),
        consistency: c,
    }
}

fn ok(id: &str, days: i64) -> GroupFacts {
    g(
        id,
        Duration::days(days),
        "accomplished",
        Some(Consistency::App),
    )
}

fn fs(id: &str, days: i64) -> GroupFacts {
    g(
        id,
        Duration::days(days),
        "accomplished",
        Some(Consistency::Fs),
    )
}

fn crash(id: &str, days: i64) -> GroupFacts {
    g(
        id,
        Duration::days(days),
        "accomplished",
        Some(Consistency::Crash),
    )
}

fn failed(id: &str, days: i64) -> GroupFacts {
    g(id, Duration::days(days), "failed", None)
}

fn progressing(id: &str, days: i64) -> GroupFacts {
    g(id, Duration::days(days), "progressing", None)
}

fn rules(keep_last: Option<u32>, max_age_days: Option<u32>) -> Rules {
    Rules {
        keep_last,
        max_age_days,
    }
}

fn deleted(s: &Selection) -> Vec<(&str, String)> {
    s.delete
        .iter()
        .map(|v| (v.id.as_str(), v.reason()))
        .collect()
}

fn ids(v: &[appsnap::retention::Verdict]) -> Vec<&str> {
    v.iter().map(|v| v.id.as_str()).collect()
}

/// Foreign groups of every kind, all very old: none may ever be selected.
fn foreign() -> Vec<GroupFacts> {
    let mut other_job = ok("ssg-otherjob", 400);
    other_job.job_tag = Some("pg".into());
    let mut untagged = ok("ssg-manual", 400);
    untagged.job_tag = None;
    untagged.instance_tag = None;
    let mut other_instance = ok("ssg-otherhost", 400);
    other_instance.instance_tag = Some("i-bp1other".into());
    other_instance.instance_id = "i-bp1other".into();
    // Tagged for this instance but ECS says it was taken elsewhere: disagreement = foreign.
    let mut disagree = ok("ssg-disagree", 400);
    disagree.instance_id = "i-bp1other".into();
    // Job tag only, no instance information at all.
    let mut no_instance = ok("ssg-noinstance", 400);
    no_instance.instance_tag = None;
    no_instance.instance_id = String::new();
    // Case matters: a job named MySQL is another job.
    let mut case = ok("ssg-case", 400);
    case.job_tag = Some("MySQL".into());
    // Another installation with the same job name on this instance.
    let mut other_owner = ok("ssg-otherowner", 400);
    other_owner.owner_tag = Some("ffffffffffffffffffffffffffffffff".into());
    // Made by an appsnap older than the owner tag, or tagged by hand.
    let mut no_owner = ok("ssg-noowner", 400);
    no_owner.owner_tag = None;
    // Made by `appsnap plugin -Name=mysql` on this installation.
    let mut plugin = ok("ssg-plugin", 400);
    plugin.plugin_tag = Some(JOB.into());
    vec![
        other_owner,
        no_owner,
        plugin,
        other_job,
        untagged,
        other_instance,
        disagree,
        no_instance,
        case,
    ]
}

fn mixed_history() -> Vec<GroupFacts> {
    let mut h = vec![
        progressing("ssg-p0", 0),
        ok("ssg-a1", 1),
        failed("ssg-f2", 2),
        fs("ssg-s3", 3),
        crash("ssg-c4", 4),
        ok("ssg-a5", 5),
        ok("ssg-a10", 10),
        failed("ssg-f40", 40),
        crash("ssg-c41", 41),
        ok("ssg-a45", 45),
        progressing("ssg-p50", 50),
    ];
    h.extend(foreign());
    h
}

#[test]
fn keep_last_counts_app_and_fs_alike_and_skips_failed_and_crash() {
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(Some(3), None),
        now(),
        None,
        &mixed_history(),
    );
    // Successful newest first: a1, s3, a5 kept; a10, a45 beyond.
    assert_eq!(
        deleted(&s),
        [
            ("ssg-a10", "beyond keep_last=3".to_string()),
            ("ssg-a45", "beyond keep_last=3".to_string())
        ]
    );
    assert_eq!(s.foreign, 9);
    let kept = ids(&s.keep);
    for id in [
        "ssg-p0", "ssg-a1", "ssg-f2", "ssg-s3", "ssg-c4", "ssg-a5", "ssg-f40", "ssg-c41", "ssg-p50",
    ] {
        assert!(kept.contains(&id), "{id} should be kept: {kept:?}");
    }
    let a1 = s.keep.iter().find(|v| v.id == "ssg-a1").unwrap();
    assert_eq!(a1.reasons, [Reason::NewestSuccessful]);
    assert_eq!(a1.class, Class::Successful);
}

#[test]
fn max_age_deletes_old_successful_failed_and_crash_but_never_progressing() {
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(None, Some(30)),
        now(),
        None,
        &mixed_history(),
    );
    assert_eq!(
        deleted(&s),
        [
            ("ssg-f40", "older than 30 days".to_string()),
            ("ssg-c41", "older than 30 days".to_string()),
            ("ssg-a45", "older than 30 days".to_string()),
        ]
    );
    let p50 = s.keep.iter().find(|v| v.id == "ssg-p50").unwrap();
    assert_eq!(p50.reasons, [Reason::Progressing]);
}

#[test]
fn both_rules_at_once_give_both_reasons() {
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(Some(2), Some(7)),
        now(),
        None,
        &mixed_history(),
    );
    assert_eq!(
        deleted(&s),
        [
            ("ssg-a5", "beyond keep_last=2".to_string()),
            (
                "ssg-a10",
                "beyond keep_last=2; older than 7 days".to_string()
            ),
            ("ssg-f40", "older than 7 days".to_string()),
            ("ssg-c41", "older than 7 days".to_string()),
            (
                "ssg-a45",
                "beyond keep_last=2; older than 7 days".to_string()
            ),
        ]
    );
    // Failed/crash within 7 days stay: they are removed by age only.
    let kept = ids(&s.keep);
    assert!(
        kept.contains(&"ssg-f2") && kept.contains(&"ssg-c4"),
        "{kept:?}"
    );
}

#[test]
fn age_boundary_is_strict() {
    let history = vec![
        ok("ssg-new", 0),
        g(
            "ssg-exact",
            Duration::days(30),
            "accomplished",
            Some(Consistency::App),
        ),
        g(
            "ssg-over",
            Duration::days(30) + Duration::seconds(1),
            "accomplished",
            Some(Consistency::Fs),
        ),
        g(
            "ssg-under",
            Duration::days(30) - Duration::seconds(1),
            "failed",
            None,
        ),
    ];
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(None, Some(30)),
        now(),
        None,
        &history,
    );
    assert_eq!(
        deleted(&s),
        [("ssg-over", "older than 30 days".to_string())]
    );
    assert_eq!(ids(&s.keep), ["ssg-new", "ssg-under", "ssg-exact"]);
}

#[test]
fn keep_last_larger_than_history_deletes_nothing() {
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(Some(50), None),
        now(),
        None,
        &mixed_history(),
    );
    assert!(s.delete.is_empty(), "{:?}", deleted(&s));
    assert_eq!(s.keep.len(), 11);
}

#[test]
fn newest_successful_survives_any_age_and_keep_last_zero() {
    // The job has failed for 3 months: the last good group is 90 days old.
    let history = vec![
        failed("ssg-f1", 1),
        crash("ssg-c2", 2),
        fs("ssg-good", 90),
        ok("ssg-older", 95),
    ];
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(Some(0), Some(30)),
        now(),
        None,
        &history,
    );
    assert_eq!(
        deleted(&s),
        [(
            "ssg-older",
            "beyond keep_last=0; older than 30 days".to_string()
        )]
    );
    let good = s.keep.iter().find(|v| v.id == "ssg-good").unwrap();
    assert_eq!(good.reasons, [Reason::NewestSuccessful]);
}

#[test]
fn crash_groups_never_take_a_keep_last_slot() {
    // Five crash runs after one good one: with keep_last=1, the crash runs do
    // not push the good one out, and the good one is the only kept slot.
    let history = vec![
        crash("ssg-c1", 1),
        crash("ssg-c2", 2),
        crash("ssg-c3", 3),
        g("ssg-unknown", Duration::days(4), "accomplished", None),
        ok("ssg-good", 5),
        ok("ssg-old-good", 6),
    ];
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(Some(1), None),
        now(),
        None,
        &history,
    );
    assert_eq!(
        deleted(&s),
        [("ssg-old-good", "beyond keep_last=1".to_string())]
    );
    let unknown = s.keep.iter().find(|v| v.id == "ssg-unknown").unwrap();
    assert_eq!(unknown.class, Class::Unsuccessful);
}

#[test]
fn protected_group_and_unknown_time_are_kept() {
    let mut no_time = ok("ssg-notime", 0);
    no_time.created = None;
    let history = vec![ok("ssg-just", 0), ok("ssg-a1", 1), ok("ssg-a2", 2), no_time];
    // keep_last=1: the protected group is the newest successful and takes the slot.
    let s = select(
        JOB,
        ME,
        &owner(),
        rules(Some(1), Some(1)),
        now(),
        Some("ssg-just"),
        &history,
    );
    assert_eq!(
        deleted(&s),
        [
            ("ssg-a1", "beyond keep_last=1".to_string()),
            (
                "ssg-a2",
                "beyond keep_last=1; older than 1 days".to_string()
            )
        ]
    );
    let just = s.keep.iter().find(|v| v.id == "ssg-just").unwrap();
    assert_eq!(just.reasons, [Reason::JustCreated]);
    let nt = s.keep.iter().find(|v| v.id == "ssg-notime").unwrap();
    assert_eq!(nt.reasons, [Reason::UnknownAge]);
}

#[test]
fn no_rules_delete_nothing() {
    let s = select(
        JOB,
        ME,
        &owner(),
        Rules::default(),
        now(),
        None,
        &mixed_history(),
    );
    assert!(s.delete.is_empty());
    assert_eq!(s.keep.len(), 11);
}

#[test]
fn no_foreign_group_is_ever_selected_under_any_rules() {
    let history = mixed_history();
    let foreign_ids: Vec<String> = foreign().into_iter().map(|g| g.id).collect();
    for keep_last in [None, Some(0), Some(1), Some(3), Some(100)] {
        for max_age in [None, Some(0), Some(1), Some(30), Some(365)] {
            let s = select(
                JOB,
                ME,
                &owner(),
                rules(keep_last, max_age),
                now(),
                None,
                &history,
            );
            for v in s.delete.iter().chain(s.keep.iter()) {
                assert!(
                    !foreign_ids.contains(&v.id),
                    "{} considered with {keep_last:?}/{max_age:?}",
                    v.id
                );
            }
            assert_eq!(s.foreign, foreign_ids.len());
        }
    }
    // An instance tag alone (no InstanceId reported) is enough to be ours.
    let mut tag_only = ok("ssg-tagonly", 400);
    tag_only.instance_id = String::new();
    assert!(tag_only.is_ours(JOB, ME, &owner()));
    let mut id_only = ok("ssg-idonly", 400);
    id_only.instance_tag = None;
    assert!(id_only.is_ours(JOB, ME, &owner()));
}
