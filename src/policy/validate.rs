//! Raw files -> validated [`Policy`]. Collects every problem (not just the
//! first) so an operator can fix a file in one pass.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{Locator, Problem};
use super::naming;
use super::raw::{keys_of, RawCloud, RawDefaults, RawFile, RawHost, RawJob, RawMetrics, RawNotify};
use super::schedule::CronSchedule;
use super::types::*;

/// One policy file's text and where it came from.
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
    /// The main file may set `[cloud]`, `[host]` and `[defaults]`; drop-ins only add jobs.
    pub is_main: bool,
}

/// Validates all sources into one policy, or every located problem.
pub(crate) fn validate(sources: &[Source]) -> Result<Policy, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    // Where a key was dropped for its type: "no such key" there is not news.
    let mut dropped = Vec::new();
    for src in sources {
        if let Some(raw) = parse(src, &mut problems, &mut dropped) {
            parsed.push((src, raw));
        }
    }

    let mut policy = Policy {
        cloud: CloudSettings::default(),
        host: HostSettings::default(),
        defaults: JobDefaults::default(),
        notify: NotifySettings::default(),
        metrics: MetricsSettings::default(),
        jobs: Vec::new(),
    };
    for (src, raw) in &parsed {
        let mut v = Checker {
            at: Locator {
                path: &src.path,
                text: &src.text,
            },
            problems: &mut problems,
        };
        let sections = [
            ("cloud", raw.cloud.as_ref().map(|s| s.span().start)),
            ("host", raw.host.as_ref().map(|s| s.span().start)),
            ("defaults", raw.defaults.as_ref().map(|s| s.span().start)),
            ("notify", raw.notify.as_ref().map(|s| s.span().start)),
            ("metrics", raw.metrics.as_ref().map(|s| s.span().start)),
        ];
        if src.is_main {
            if let Some(c) = &raw.cloud {
                policy.cloud = v.cloud(c.get_ref());
            }
            if let Some(h) = &raw.host {
                policy.host = v.host(h.get_ref());
            }
            if let Some(d) = &raw.defaults {
                policy.defaults = v.defaults(d.get_ref());
            }
            if let Some(n) = &raw.notify {
                policy.notify = v.notify(n.get_ref(), None, "notify");
            }
            if let Some(m) = &raw.metrics {
                policy.metrics = v.metrics(m.get_ref());
            }
        } else {
            for (name, at) in sections {
                if let Some(at) = at {
                    v.push(at, None, name, format!(
                        "[{name}] is only allowed in the main policy file; drop-ins may only add [[job]] tables"
                    ));
                }
            }
        }
    }

    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for (src, raw) in &parsed {
        let mut v = Checker {
            at: Locator {
                path: &src.path,
                text: &src.text,
            },
            problems: &mut problems,
        };
        for job in &raw.job {
            let Some(j) = v.job(job, &policy.defaults, &policy.notify, &policy.cloud) else {
                continue;
            };
            let name = j.name.as_str().to_string();
            let at = job
                .get_ref()
                .name
                .as_ref()
                .map_or(job.span().start, |n| n.span().start);
            if let Some((first_path, first_line)) = seen.get(&name) {
                v.push(
                    at,
                    Some(&name),
                    "name",
                    format!(
                        "duplicate job name; first defined at {}:{first_line}",
                        first_path.display()
                    ),
                );
                continue;
            }
            let (line, _) = super::error::line_col(&src.text, at);
            seen.insert(name, (src.path.clone(), line));
            policy.jobs.push(j);
        }
    }

    if problems.is_empty() {
        Ok(policy)
    } else {
        // In reading order: files as loaded, then line and column.
        problems.retain(|p| !dropped.contains(&(p.path.clone(), p.line, p.column, p.key.clone())));
        let file = |p: &Problem| sources.iter().position(|s| s.path == p.path);
        problems.sort_by_key(|p| (file(p), p.line, p.column));
        Err(problems)
    }
}

/// One file's tables, or `None` with its problems pushed. A syntax error
/// stops the file; unknown keys do not: serde's `deny_unknown_fields` stops
/// at the first, so they are all collected (and removed) here first, and the
/// rest is then deserialized, so type errors are reported alongside them.
fn parse(
    src: &Source,
    problems: &mut Vec<Problem>,
    dropped: &mut Vec<(PathBuf, usize, usize, String)>,
) -> Option<RawFile> {
    let mut doc = match DeTable::parse(&src.text) {
        Ok(d) => d,
        Err(e) => {
            problems.push(syntax_problem(src, &e));
            return None;
        }
    };
    let at = Locator {
        path: &src.path,
        text: &src.text,
    };
    prune_unknown(doc.get_mut(), &at, problems);
    // A value of the wrong type stops serde too: report it, drop its key and
    // go on, so one pass shows them all (bounded: each round drops a key).
    loop {
        match RawFile::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(raw) => return Some(raw),
            Err(e) => {
                problems.push(syntax_problem(src, &e));
                let (table, key) = e
                    .span()
                    .and_then(|s| drop_key_at(doc.get_mut(), 0, s.start))?;
                let (line, column) = super::error::line_col(&src.text, table);
                dropped.push((src.path.clone(), line, column, key));
            }
        }
    }
}

/// Removes the innermost key whose value holds byte `pos`, returning where
/// its table starts (`start` for `t`) and the key; `None` if no value holds
/// it. Every table is searched: a `[table]`'s own span covers only its
/// header, not its keys.
fn drop_key_at(t: &mut DeTable<'_>, start: usize, pos: usize) -> Option<(usize, String)> {
    let mut holder = None;
    for (k, v) in t.iter_mut() {
        let v_start = v.span().start;
        let holds = v.span().contains(&pos);
        let found = match v.get_mut() {
            DeValue::Table(inner) => drop_key_at(inner, v_start, pos),
            DeValue::Array(items) => items.iter_mut().find_map(|item| {
                let item_start = item.span().start;
                match item.get_mut() {
                    DeValue::Table(inner) => drop_key_at(inner, item_start, pos),
                    _ => None,
                }
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
        if holds {
            holder = Some(k.get_ref().to_string());
        }
    }
    let key = holder?;
    t.remove(key.as_str())?;
    Some((start, key))
}

/// The top-level tables, as an operator writes them.
const TABLES: &str = "[cloud], [host], [defaults], [notify], [metrics] and [[job]]";

/// Reports and removes every key the policy does not know, at any depth
/// appsnap reads (`tags` is free-form and `disks` a value, so not walked).
fn prune_unknown(doc: &mut DeTable<'_>, at: &Locator<'_>, problems: &mut Vec<Problem>) {
    for (key, value) in unknown(doc, keys_of::<RawFile>()) {
        let tables = keys_of::<RawFile>();
        let shape = match &value {
            DeValue::Table(_) => format!(
                "unknown table [{key}]{}",
                did_you_mean(&key, tables, "[", "]")
            ),
            DeValue::Array(a)
                if !a.is_empty() && a.iter().all(|t| t.get_ref().as_table().is_some()) =>
            {
                format!(
                    "unknown table [[{key}]]{}",
                    did_you_mean(&key, tables, "[[", "]]")
                )
            }
            _ => format!("unknown top-level key `{key}`"),
        };
        problems.push(at.problem(
            key_start(doc, &key).unwrap_or(0),
            None,
            &key,
            format!("{shape}; the policy's tables are {TABLES}"),
        ));
        doc.remove(key.as_str());
    }
    let sections: [(&str, &[&str]); 5] = [
        ("cloud", keys_of::<RawCloud>()),
        ("host", keys_of::<RawHost>()),
        ("defaults", keys_of::<RawDefaults>()),
        ("notify", keys_of::<RawNotify>()),
        ("metrics", keys_of::<RawMetrics>()),
    ];
    for (name, keys) in sections {
        if let Some(DeValue::Table(t)) = doc.get_mut(name).map(|v| v.get_mut()) {
            prune_table(t, keys, &format!("[{name}]"), None, "", at, problems);
        }
    }
    if let Some(DeValue::Array(jobs)) = doc.get_mut("job").map(|v| v.get_mut()) {
        for job in jobs.iter_mut() {
            let DeValue::Table(t) = job.get_mut() else {
                continue;
            };
            let name = t
                .get("name")
                .and_then(|n| n.get_ref().as_str())
                .map(str::to_string);
            let name = name.as_deref();
            prune_table(t, keys_of::<RawJob>(), "[[job]]", name, "", at, problems);
            if let Some(DeValue::Table(n)) = t.get_mut("notify").map(|v| v.get_mut()) {
                prune_table(
                    n,
                    keys_of::<RawNotify>(),
                    "[[job]] notify",
                    name,
                    "notify.",
                    at,
                    problems,
                );
            }
        }
    }
}

/// Reports and removes the unknown keys of one table (`place` is how the
/// message names it, `prefix` how its keys are dotted).
fn prune_table(
    t: &mut DeTable<'_>,
    known: &[&str],
    place: &str,
    job: Option<&str>,
    prefix: &str,
    at: &Locator<'_>,
    problems: &mut Vec<Problem>,
) {
    let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    for (key, _) in unknown(t, known) {
        problems.push(at.problem(
            key_start(t, &key).unwrap_or(0),
            job,
            &format!("{prefix}{key}"),
            format!(
                "in {place}: unknown key `{key}`{}; expected one of {}",
                did_you_mean(&key, known, "`", "`"),
                expected.join(", ")
            ),
        ));
        t.remove(key.as_str());
    }
}

/// ` (did you mean `region_id`?)` for a near miss (at most two edits), else "".
fn did_you_mean(key: &str, known: &[&str], open: &str, close: &str) -> String {
    known
        .iter()
        .map(|k| (edits(key, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map_or(String::new(), |(_, k)| {
            format!(" (did you mean {open}{k}{close}?)")
        })
}

/// Levenshtein distance, by characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The keys of `t` not in `known`, with their values.
fn unknown<'i>(t: &DeTable<'i>, known: &[&str]) -> Vec<(String, DeValue<'i>)> {
    t.iter()
        .filter(|(k, _)| !known.contains(&k.get_ref().as_ref()))
        .map(|(k, v)| (k.get_ref().to_string(), v.get_ref().clone()))
        .collect()
}

/// Where `key` is written in `t` (the key itself, so a `[table]` header points at its name).
fn key_start(t: &DeTable<'_>, key: &str) -> Option<usize> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, _)| k.span().start)
}

/// A TOML syntax, type or unknown-key error, located and naming its key.
fn syntax_problem(src: &Source, e: &toml::de::Error) -> Problem {
    let at = e.span().map_or(0, |s| s.start);
    let key = key_on_line(&src.text, at).unwrap_or_default();
    let msg = friendlier(e.message());
    let mut message = if key.is_empty() || msg.contains(&format!("`{key}`")) {
        msg
    } else {
        format!("{key}: {msg}")
    };
    if let Some(table) = table_at(&src.text, at) {
        message = format!("in {table}: {message}");
    }
    Locator {
        path: &src.path,
        text: &src.text,
    }
    .problem(at, None, &key, message)
}

/// The `key` of a `key = value` line holding byte `at`, if the line has that shape.
fn key_on_line(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = &text[start..end];
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)))
    .then(|| k.to_string())
}

/// The `[table]` or `[[table]]` header governing byte `at`, if any.
fn table_at(text: &str, at: usize) -> Option<&str> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim())
}

/// Replaces serde's Rust type names with words an operator knows.
fn friendlier(msg: &str) -> String {
    msg.trim()
        .replace("unknown field", "unknown key")
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
        .replace("expected a sequence", "expected an array")
}

/// Validation of one file's raw tables, reporting into a shared list.
struct Checker<'a, 'p> {
    at: Locator<'a>,
    problems: &'p mut Vec<Problem>,
}

impl Checker<'_, '_> {
    fn push(&mut self, at: usize, job: Option<&str>, key: &str, message: String) {
        self.problems.push(self.at.problem(at, job, key, message));
    }

    /// Checks an optional string with `check`, keeping it when valid.
    fn string(
        &mut self,
        v: &Option<Spanned<String>>,
        job: Option<&str>,
        key: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let s = v.as_ref()?;
        match check(s.get_ref()) {
            Ok(()) => Some(s.get_ref().clone()),
            Err(m) => {
                self.push(s.span().start, job, key, m);
                None
            }
        }
    }

    /// Checks an optional integer against a range.
    fn int(
        &mut self,
        v: &Option<Spanned<i64>>,
        job: Option<&str>,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let n = v.as_ref()?;
        match u64::try_from(*n.get_ref()) {
            Ok(x) if range.contains(&x) => Some(x),
            _ => {
                self.push(
                    n.span().start,
                    job,
                    key,
                    format!(
                        "{key} = {}: must be {}..={}",
                        n.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn cloud(&mut self, c: &RawCloud) -> CloudSettings {
        let d = CloudSettings::default();
        CloudSettings {
            region_id: self.string(&c.region_id, None, "cloud.region_id", |s| {
                id_like(s, "region_id", "a region ID such as \"cn-hangzhou\"", "")
            }),
            instance_id: self.string(&c.instance_id, None, "cloud.instance_id", |s| {
                id_like(
                    s,
                    "instance_id",
                    "an instance ID such as \"i-bp1...\"",
                    "i-",
                )
            }),
            ram_role: self.string(&c.ram_role, None, "cloud.ram_role", ram_role),
            endpoint: self.string(&c.endpoint, None, "cloud.endpoint", |s| {
                url_check(s, "endpoint", PlainHttp::LoopbackOnly)
            }),
            metadata_endpoint: self
                .string(&c.metadata_endpoint, None, "cloud.metadata_endpoint", |s| {
                    url_check(s, "metadata_endpoint", PlainHttp::MetadataService)
                })
                .unwrap_or(d.metadata_endpoint),
            signature_version: match &c.signature_version {
                None => d.signature_version,
                Some(s) => match s.get_ref().as_str() {
                    "v3" => SignatureVersion::V3,
                    "v1" => SignatureVersion::V1,
                    other => {
                        self.push(s.span().start, None, "cloud.signature_version", format!(
                            "signature_version {other:?}: must be \"v3\" (ACS3-HMAC-SHA256, default) or \"v1\" (HMAC-SHA1)"
                        ));
                        d.signature_version
                    }
                },
            },
            max_disks_per_group: self
                .int(&c.max_disks_per_group, None, "max_disks_per_group", 1..=128)
                .map_or(d.max_disks_per_group, |n| n as u32),
            imds_v1_fallback: c
                .imds_v1_fallback
                .as_ref()
                .map_or(d.imds_v1_fallback, |b| *b.get_ref()),
        }
    }

    fn host(&mut self, h: &RawHost) -> HostSettings {
        let d = HostSettings::default();
        let mut path = |v: &Option<Spanned<String>>, key: &str, def: PathBuf| {
            self.string(v, None, key, |s| {
                absolute(s, key.rsplit('.').next().unwrap_or(key))
            })
            .map_or(def, PathBuf::from)
        };
        HostSettings {
            by_id_dir: path(&h.by_id_dir, "host.by_id_dir", d.by_id_dir),
            run_dir: path(&h.run_dir, "host.run_dir", d.run_dir),
            state_dir: path(&h.state_dir, "host.state_dir", d.state_dir),
        }
    }

    /// The inheritable keys, with `base` filling what `raw` leaves out.
    fn inheritable(
        &mut self,
        raw: &RawDefaults,
        job: Option<&str>,
        base: &JobDefaults,
    ) -> JobDefaults {
        JobDefaults {
            fs_freeze: raw
                .fs_freeze
                .as_ref()
                .map_or(base.fs_freeze, |b| *b.get_ref()),
            freeze_timeout: self
                .int(
                    &raw.freeze_timeout_secs,
                    job,
                    "freeze_timeout_secs",
                    FREEZE_TIMEOUT_RANGE,
                )
                .map_or(base.freeze_timeout, Duration::from_secs),
            script_timeout: self
                .int(
                    &raw.script_timeout_secs,
                    job,
                    "script_timeout_secs",
                    SCRIPT_TIMEOUT_RANGE,
                )
                .map_or(base.script_timeout, Duration::from_secs),
            jitter: self
                .int(&raw.jitter_secs, job, "jitter_secs", JITTER_RANGE)
                .map_or(base.jitter, Duration::from_secs),
            spread: self
                .int(&raw.spread_secs, job, "spread_secs", SPREAD_RANGE)
                .map_or(base.spread, Duration::from_secs),
            thaw_after: match &raw.thaw_after {
                None => base.thaw_after,
                Some(s) => match s.get_ref().as_str() {
                    "listed" => ThawAfter::Listed,
                    "accepted" => ThawAfter::Accepted,
                    other => {
                        self.push(s.span().start, job, "thaw_after", format!(
                            "thaw_after {other:?}: must be \"listed\" (default: thaw once ECS lists the group's snapshots, as the vendor's plugin does) or \"accepted\" (thaw at the CreateSnapshotGroup answer)"
                        ));
                        base.thaw_after
                    }
                },
            },
            on_prescript_failure: match &raw.on_prescript_failure {
                None => base.on_prescript_failure,
                Some(s) => match s.get_ref().as_str() {
                    "fs" => OnPrescriptFailure::Fs,
                    "skip" => OnPrescriptFailure::Skip,
                    other => {
                        self.push(s.span().start, job, "on_prescript_failure", format!(
                            "on_prescript_failure {other:?}: must be \"fs\" (default, the vendor's: take a file-system-consistent snapshot) or \"skip\" (no freeze, no snapshot; the post-script still runs)"
                        ));
                        base.on_prescript_failure
                    }
                },
            },
            hooks_while_throttled: match &raw.hooks_while_throttled {
                None => base.hooks_while_throttled,
                Some(s) => match s.get_ref().as_str() {
                    "release" => HooksWhileThrottled::Release,
                    "hold" => HooksWhileThrottled::Hold,
                    other => {
                        self.push(s.span().start, job, "hooks_while_throttled", format!(
                            "hooks_while_throttled {other:?}: must be \"release\" (default: the post-script releases the lock while a throttled run waits, the pre-script takes it again before the next freeze) or \"hold\" (the lock stays held across the waits)"
                        ));
                        base.hooks_while_throttled
                    }
                },
            },
            catch_up: raw
                .catch_up
                .as_ref()
                .map_or(base.catch_up, |b| *b.get_ref()),
            verify_timeout: self
                .int(
                    &raw.verify_timeout_secs,
                    job,
                    "verify_timeout_secs",
                    VERIFY_TIMEOUT_RANGE,
                )
                .map_or(base.verify_timeout, Duration::from_secs),
            verify_category: match &raw.verify_category {
                None => base.verify_category.clone(),
                Some(s) => match VerifyCategory::parse(s.get_ref()) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        self.push(s.span().start, job, "verify_category", m);
                        base.verify_category.clone()
                    }
                },
            },
        }
    }

    fn defaults(&mut self, raw: &RawDefaults) -> JobDefaults {
        self.inheritable(raw, None, &JobDefaults::default())
    }

    /// One `[[job]]`; `None` when anything in it is invalid (problems pushed).
    fn job(
        &mut self,
        sj: &Spanned<RawJob>,
        defaults: &JobDefaults,
        notify: &NotifySettings,
        cloud: &CloudSettings,
    ) -> Option<Job> {
        let before = self.problems.len();
        let j = sj.get_ref();
        let Some(name_s) = &j.name else {
            self.push(
                sj.span().start,
                None,
                "name",
                "[[job]] has no name; add name = \"...\"".into(),
            );
            return None;
        };
        let name = name_s.get_ref().clone();
        // A bad name is reported, not fatal to the checks below: the job's
        // other problems are found in the same pass (labelled with the name
        // as written, which is what the operator searches for).
        if let Err(m) = naming::check_job_name(&name) {
            self.push(name_s.span().start, None, "name", m);
        }
        let jn = Some(name.as_str());

        let schedule = match &j.schedule {
            None => {
                self.push(
                    sj.span().start,
                    jn,
                    "schedule",
                    "no schedule; add schedule = \"30 2 * * *\" (cron, 5 or 6 fields)".into(),
                );
                None
            }
            Some(s) => match CronSchedule::parse(s.get_ref()) {
                Ok(c) => Some(c),
                Err(m) => {
                    self.push(
                        s.span().start,
                        jn,
                        "schedule",
                        format!("schedule {:?}: {m}", s.get_ref()),
                    );
                    None
                }
            },
        };

        let zone = match &j.timezone {
            None => JobZone::Local,
            Some(z) => match z.get_ref().parse::<chrono_tz::Tz>() {
                Ok(tz) => JobZone::Named(tz),
                Err(_) => {
                    self.push(z.span().start, jn, "timezone", format!(
                        "timezone {:?}: not an IANA zone name (such as \"Asia/Shanghai\" or \"UTC\"); leave it out to use the system's local zone",
                        z.get_ref()
                    ));
                    JobZone::Local
                }
            },
        };

        let disks = self.disks(j, sj.span().start, jn, cloud.max_disks_per_group);

        let prescript = self.string(&j.prescript, jn, "prescript", |s| absolute(s, "prescript"));
        let postscript = self.string(&j.postscript, jn, "postscript", |s| {
            absolute(s, "postscript")
        });
        let description = self.string(&j.description, jn, "description", naming::check_description);
        let mut script_env: Vec<String> = Vec::new();
        for n in j.script_env.iter().flat_map(|l| l.get_ref()) {
            match naming::check_script_env(n.get_ref()) {
                Ok(()) if script_env.contains(n.get_ref()) => self.push(
                    n.span().start,
                    jn,
                    "script_env",
                    format!("script_env: {:?} is listed twice", n.get_ref()),
                ),
                Ok(()) => script_env.push(n.get_ref().clone()),
                Err(m) => self.push(n.span().start, jn, "script_env", m),
            }
        }

        let mut tags = BTreeMap::new();
        if let Some(t) = &j.tags {
            if t.get_ref().len() > naming::MAX_USER_TAGS {
                self.push(
                    t.span().start,
                    jn,
                    "tags",
                    format!(
                        "tags: {} given; at most {} (ECS allows 20 and appsnap sets 3 of its own)",
                        t.get_ref().len(),
                        naming::MAX_USER_TAGS
                    ),
                );
            }
            for (k, v) in t.get_ref() {
                match naming::check_tag(k, v.get_ref()) {
                    Ok(()) => {
                        tags.insert(k.clone(), v.get_ref().clone());
                    }
                    Err(m) => self.push(v.span().start, jn, "tags", m),
                }
            }
        }

        let keep_last = self
            .int(&j.keep_last, jn, "keep_last", 1..=10_000)
            .map(|n| n as u32);
        let max_age_days = self
            .int(&j.max_age_days, jn, "max_age_days", 1..=36_500)
            .map(|n| n as u32);

        let inherited = RawDefaults {
            fs_freeze: j.fs_freeze.clone(),
            freeze_timeout_secs: j.freeze_timeout_secs.clone(),
            script_timeout_secs: j.script_timeout_secs.clone(),
            jitter_secs: j.jitter_secs.clone(),
            spread_secs: j.spread_secs.clone(),
            thaw_after: j.thaw_after.clone(),
            catch_up: j.catch_up.clone(),
            verify_timeout_secs: j.verify_timeout_secs.clone(),
            verify_category: j.verify_category.clone(),
            on_prescript_failure: j.on_prescript_failure.clone(),
            hooks_while_throttled: j.hooks_while_throttled.clone(),
        };
        let eff = self.inheritable(&inherited, jn, defaults);
        // Set on the job itself with no hooks at all, "skip" could only ever
        // mean "never snapshot": surely a mistake. Inherited from [defaults],
        // it just does not apply to a job without hooks.
        if let Some(s) = &j.on_prescript_failure {
            if s.get_ref() == "skip" && j.prescript.is_none() && j.postscript.is_none() {
                self.push(
                    s.span().start,
                    jn,
                    "on_prescript_failure",
                    "on_prescript_failure = \"skip\" needs a prescript and a postscript: this job has neither, so it has no pre-script to fail".into(),
                );
            }
        }
        let ping_url = self.string(&j.ping_url, jn, "ping_url", |s| {
            url_check(s, "ping_url", PlainHttp::LoopbackOnly)
        });
        let notify = match &j.notify {
            Some(n) => self.notify(n.get_ref(), jn, "notify"),
            None => notify.clone(),
        };
        let verify_schedule = j.verify_schedule.as_ref().and_then(|s| {
            CronSchedule::parse(s.get_ref())
                .map_err(|m| {
                    self.push(
                        s.span().start,
                        jn,
                        "verify_schedule",
                        format!("verify_schedule {:?}: {m}", s.get_ref()),
                    )
                })
                .ok()
        });
        let verify_script = self.string(&j.verify_script, jn, "verify_script", |s| {
            absolute(s, "verify_script")
        });

        if self.problems.len() != before {
            return None;
        }
        Some(Job {
            name: JobName(name),
            schedule: schedule?,
            zone,
            disks: disks?,
            prescript: prescript.map(PathBuf::from),
            postscript: postscript.map(PathBuf::from),
            script_env,
            description,
            tags,
            keep_last,
            max_age_days,
            fs_freeze: eff.fs_freeze,
            freeze_timeout: eff.freeze_timeout,
            script_timeout: eff.script_timeout,
            jitter: eff.jitter,
            spread: eff.spread,
            thaw_after: eff.thaw_after,
            on_prescript_failure: eff.on_prescript_failure,
            hooks_while_throttled: eff.hooks_while_throttled,
            catch_up: eff.catch_up,
            ping_url,
            notify,
            verify: VerifySettings {
                schedule: verify_schedule,
                script: verify_script.map(PathBuf::from),
                timeout: eff.verify_timeout,
                category: eff.verify_category,
            },
        })
    }

    /// `[notify]` or a job's `notify` table (`key` is how it is spelled).
    fn notify(&mut self, n: &RawNotify, job: Option<&str>, key: &str) -> NotifySettings {
        let d = NotifySettings::default();
        let webhook_url = self.string(&n.webhook_url, job, &format!("{key}.webhook_url"), |s| {
            url_check(s, "webhook_url", PlainHttp::LoopbackOnly)
        });
        let webhook_key_file = self
            .string(
                &n.webhook_key_file,
                job,
                &format!("{key}.webhook_key_file"),
                |s| absolute(s, "webhook_key_file"),
            )
            .map(PathBuf::from);
        if let (Some(k), None) = (&n.webhook_key_file, &n.webhook_url) {
            self.push(
                k.span().start,
                job,
                &format!("{key}.webhook_key_file"),
                "webhook_key_file: only used to sign a webhook; add webhook_url or remove it"
                    .into(),
            );
        }
        let exec = self
            .string(&n.exec, job, &format!("{key}.exec"), |s| {
                absolute(s, "exec")
            })
            .map(PathBuf::from);
        NotifySettings {
            webhook_url,
            webhook_key_file,
            exec,
            success: n.success.as_ref().map_or(d.success, |b| *b.get_ref()),
            timeout: self
                .int(&n.timeout_secs, job, "timeout_secs", NOTIFY_TIMEOUT_RANGE)
                .map_or(d.timeout, Duration::from_secs),
            retries: self
                .int(&n.retries, job, "retries", NOTIFY_RETRIES_RANGE)
                .map_or(d.retries, |r| r as u32),
        }
    }

    /// `[metrics]`: the textfile must be absolute and end in `.prom`, the
    /// only files node_exporter's textfile collector reads.
    fn metrics(&mut self, m: &RawMetrics) -> MetricsSettings {
        MetricsSettings {
            textfile: self
                .string(&m.textfile, None, "metrics.textfile", |s| {
                    absolute(s, "textfile")?;
                    let name = Path::new(s).file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.len() > ".prom".len() && name.ends_with(".prom") && !name.starts_with('.') {
                        Ok(())
                    } else {
                        Err(format!(
                            "textfile {s:?}: must name a file ending in .prom (node_exporter's textfile collector reads only those), such as \"/var/lib/prometheus/node-exporter/appsnap.prom\""
                        ))
                    }
                })
                .map(PathBuf::from),
        }
    }

    /// `disks` ("all" or a list) with `exclude_disks`, and their conflicts.
    fn disks(
        &mut self,
        j: &RawJob,
        job_at: usize,
        jn: Option<&str>,
        max: u32,
    ) -> Option<DiskSelection> {
        let Some(d) = &j.disks else {
            self.push(
                job_at,
                jn,
                "disks",
                "no disks; add disks = [\"d-...\"] or disks = \"all\"".into(),
            );
            return None;
        };
        let at = d.span().start;
        let mut exclude = Vec::new();
        if let Some(ex) = &j.exclude_disks {
            for s in ex.get_ref() {
                match DiskId::parse(s) {
                    Ok(id) => exclude.push(id),
                    Err(m) => self.push(
                        ex.span().start,
                        jn,
                        "exclude_disks",
                        format!("exclude_disks: {m}"),
                    ),
                }
            }
        }
        match d.get_ref() {
            toml::Value::String(s) if s == "all" => Some(DiskSelection::All { exclude }),
            toml::Value::String(s) => {
                self.push(
                    at,
                    jn,
                    "disks",
                    format!(
                    "disks = {s:?}: must be exactly \"all\" (lowercase) or an array of disk IDs"
                ),
                );
                None
            }
            toml::Value::Array(items) => {
                let mut ids: Vec<DiskId> = Vec::new();
                for item in items {
                    let parsed = match item {
                        toml::Value::String(s) => DiskId::parse(s),
                        other => Err(format!("{other} is not a string disk ID")),
                    };
                    match parsed {
                        Ok(id) if ids.contains(&id) => {
                            self.push(at, jn, "disks", format!("disks: {id} is listed twice"))
                        }
                        Ok(id) => ids.push(id),
                        Err(m) => self.push(at, jn, "disks", format!("disks: {m}")),
                    }
                }
                if items.is_empty() {
                    self.push(
                        at,
                        jn,
                        "disks",
                        "disks = []: list at least one disk ID, or use \"all\"".into(),
                    );
                }
                if ids.len() > max as usize {
                    self.push(
                        at,
                        jn,
                        "disks",
                        format!(
                            "disks: {} listed, more than cloud.max_disks_per_group = {max}",
                            ids.len()
                        ),
                    );
                }
                if let Some(ex) = &j.exclude_disks {
                    let both: Vec<&str> = exclude
                        .iter()
                        .filter(|e| ids.contains(e))
                        .map(DiskId::as_str)
                        .collect();
                    let msg = if both.is_empty() {
                        "exclude_disks: only applies with disks = \"all\"; with an explicit list, leave the disk out of the list instead".to_string()
                    } else {
                        format!(
                            "exclude_disks: {} also listed in disks; exclude_disks only applies with disks = \"all\"",
                            both.join(", ")
                        )
                    };
                    if !ex.get_ref().is_empty() {
                        self.push(ex.span().start, jn, "exclude_disks", msg);
                    }
                }
                Some(DiskSelection::List(ids))
            }
            other => {
                self.push(at, jn, "disks", format!(
                    "disks = {other}: must be \"all\" or an array of disk IDs such as [\"d-bp1aaaa\"]"
                ));
                None
            }
        }
    }
}

/// Region/instance-shaped identifiers: lowercase letters, digits and `-`.
fn id_like(s: &str, key: &str, what: &str, prefix: &str) -> Result<(), String> {
    let ok = s.starts_with(prefix)
        && s.len() > prefix.len()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {s:?}: must be {what} (lowercase letters, digits and '-')"
        ))
    }
}

/// RAM role names ([`naming::check_ram_role_name`]).
fn ram_role(s: &str) -> Result<(), String> {
    naming::check_ram_role_name(s).map_err(|why| format!("ram_role {s:?}: {why}"))
}

/// Where plain `http` is acceptable for an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PlainHttp {
    /// Loopback only (tests and the emulator): the ECS API.
    LoopbackOnly,
    /// Also the metadata service's own address, 100.100.100.200 (the real
    /// IMDS speaks only plain http, and only on the instance's own link), and
    /// link-local addresses (169.254/16, fe80::/10), which never leave the
    /// host's link: a plain-http metadata service anywhere else could be
    /// answered by anyone on the path, with credentials and identity.
    MetadataService,
}

/// The real metadata service's address.
const IMDS_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(100, 100, 100, 200);

/// URLs: `https` always allowed; plain `http` only where [`PlainHttp`] says.
fn url_check(s: &str, key: &str, plain: PlainHttp) -> Result<(), String> {
    let u = url::Url::parse(s).map_err(|e| format!("{key} {s:?}: not a URL ({e})"))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let on_link = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip == IMDS_ADDRESS || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => ip.is_unicast_link_local(),
        _ => false,
    };
    if u.host().is_none() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "{key} {s:?}: must be scheme://host[:port] without credentials"
        ));
    }
    let plain_ok = loopback || (plain == PlainHttp::MetadataService && on_link);
    match u.scheme() {
        "https" => Ok(()),
        "http" if plain_ok => Ok(()),
        "http" if plain == PlainHttp::MetadataService => Err(format!(
            "{key} {s:?}: must use https:// (plain http is only accepted for the metadata service at 100.100.100.200, link-local 169.254.0.0/16 and fe80::/10, and loopback)"
        )),
        "http" => Err(format!(
            "{key} {s:?}: must use https:// (plain http is only accepted for loopback test endpoints)"
        )),
        other => Err(format!("{key} {s:?}: scheme {other:?} is not http or https")),
    }
}

/// Host paths and script paths must be absolute: appsnap runs from systemd
/// with no meaningful working directory.
fn absolute(s: &str, key: &str) -> Result<(), String> {
    if Path::new(s).is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{key} {s:?}: must be an absolute path (starting with /)"
        ))
    }
}
