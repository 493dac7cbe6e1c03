//! Policy -> TOML, so a validated policy can be shown or written back, and so
//! tests can prove that what the validator accepts survives a round trip.

use toml::{Table, Value};

use super::types::*;

impl Policy {
    /// The policy as one self-contained TOML document (defaults included,
    /// every job with its effective values).
    pub fn to_toml(&self) -> String {
        let mut root = Table::new();
        root.insert("cloud".into(), Value::Table(cloud(&self.cloud)));
        root.insert("host".into(), Value::Table(host(&self.host)));
        root.insert("defaults".into(), Value::Table(defaults(&self.defaults)));
        root.insert("notify".into(), Value::Table(notify(&self.notify)));
        let mut metrics = Table::new();
        let textfile = self
            .metrics
            .textfile
            .as_ref()
            .map(|p| p.display().to_string());
        put_opt(&mut metrics, "textfile", &textfile);
        root.insert("metrics".into(), Value::Table(metrics));
        let jobs = self.jobs.iter().map(|j| Value::Table(job(j))).collect();
        root.insert("job".into(), Value::Array(jobs));
        toml::to_string(&root).expect("a toml::Table always serializes")
    }
}

fn put_opt(t: &mut Table, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        t.insert(k.into(), Value::String(v.clone()));
    }
}

fn secs(d: std::time::Duration) -> Value {
    Value::Integer(d.as_secs() as i64)
}

fn cloud(c: &CloudSettings) -> Table {
    let mut t = Table::new();
    put_opt(&mut t, "region_id", &c.region_id);
    put_opt(&mut t, "instance_id", &c.instance_id);
    put_opt(&mut t, "ram_role", &c.ram_role);
    put_opt(&mut t, "endpoint", &c.endpoint);
    t.insert(
        "metadata_endpoint".into(),
        Value::String(c.metadata_endpoint.clone()),
    );
    t.insert(
        "signature_version".into(),
        Value::String(c.signature_version.as_str().into()),
    );
    t.insert(
        "max_disks_per_group".into(),
        Value::Integer(c.max_disks_per_group.into()),
    );
    t.insert(
        "imds_v1_fallback".into(),
        Value::Boolean(c.imds_v1_fallback),
    );
    t
}

fn host(h: &HostSettings) -> Table {
    let mut t = Table::new();
    for (k, p) in [
        ("by_id_dir", &h.by_id_dir),
        ("run_dir", &h.run_dir),
        ("state_dir", &h.state_dir),
    ] {
        t.insert(k.into(), Value::String(p.display().to_string()));
    }
    t
}

fn defaults(d: &JobDefaults) -> Table {
    let mut t = Table::new();
    t.insert("fs_freeze".into(), Value::Boolean(d.fs_freeze));
    t.insert("freeze_timeout_secs".into(), secs(d.freeze_timeout));
    t.insert("script_timeout_secs".into(), secs(d.script_timeout));
    t.insert("jitter_secs".into(), secs(d.jitter));
    t.insert("spread_secs".into(), secs(d.spread));
    t.insert(
        "thaw_after".into(),
        Value::String(d.thaw_after.as_str().into()),
    );
    t.insert(
        "on_prescript_failure".into(),
        Value::String(d.on_prescript_failure.as_str().into()),
    );
    t.insert(
        "hooks_while_throttled".into(),
        Value::String(d.hooks_while_throttled.as_str().into()),
    );
    t.insert("catch_up".into(), Value::Boolean(d.catch_up));
    t.insert("verify_timeout_secs".into(), secs(d.verify_timeout));
    let category = d.verify_category.as_ref().map(ToString::to_string);
    put_opt(&mut t, "verify_category", &category);
    t
}

fn notify(n: &NotifySettings) -> Table {
    let mut t = Table::new();
    put_opt(&mut t, "webhook_url", &n.webhook_url);
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    put_opt(&mut t, "webhook_key_file", &path(&n.webhook_key_file));
    put_opt(&mut t, "exec", &path(&n.exec));
    t.insert("success".into(), Value::Boolean(n.success));
    t.insert("timeout_secs".into(), secs(n.timeout));
    t.insert("retries".into(), Value::Integer(n.retries.into()));
    t
}

fn job(j: &Job) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), Value::String(j.name.to_string()));
    t.insert("schedule".into(), Value::String(j.schedule.as_str().into()));
    if let JobZone::Named(tz) = j.zone {
        t.insert("timezone".into(), Value::String(tz.name().into()));
    }
    let ids = |v: &[DiskId]| Value::Array(v.iter().map(|d| Value::String(d.to_string())).collect());
    match &j.disks {
        DiskSelection::All { exclude } => {
            t.insert("disks".into(), Value::String("all".into()));
            if !exclude.is_empty() {
                t.insert("exclude_disks".into(), ids(exclude));
            }
        }
        DiskSelection::List(l) => {
            t.insert("disks".into(), ids(l));
        }
    }
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    put_opt(&mut t, "prescript", &path(&j.prescript));
    put_opt(&mut t, "postscript", &path(&j.postscript));
    if !j.script_env.is_empty() {
        let names = j.script_env.iter().cloned().map(Value::String).collect();
        t.insert("script_env".into(), Value::Array(names));
    }
    put_opt(&mut t, "description", &j.description);
    if !j.tags.is_empty() {
        let tags = j
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        t.insert("tags".into(), Value::Table(tags));
    }
    if let Some(n) = j.keep_last {
        t.insert("keep_last".into(), Value::Integer(n.into()));
    }
    if let Some(n) = j.max_age_days {
        t.insert("max_age_days".into(), Value::Integer(n.into()));
    }
    t.insert("fs_freeze".into(), Value::Boolean(j.fs_freeze));
    t.insert("freeze_timeout_secs".into(), secs(j.freeze_timeout));
    t.insert("script_timeout_secs".into(), secs(j.script_timeout));
    t.insert("jitter_secs".into(), secs(j.jitter));
    t.insert("spread_secs".into(), secs(j.spread));
    t.insert(
        "thaw_after".into(),
        Value::String(j.thaw_after.as_str().into()),
    );
    t.insert(
        "on_prescript_failure".into(),
        Value::String(j.on_prescript_failure.as_str().into()),
    );
    t.insert(
        "hooks_while_throttled".into(),
        Value::String(j.hooks_while_throttled.as_str().into()),
    );
    t.insert("catch_up".into(), Value::Boolean(j.catch_up));
    put_opt(&mut t, "ping_url", &j.ping_url);
    let v = &j.verify;
    let schedule = v.schedule.as_ref().map(|s| s.as_str().to_string());
    put_opt(&mut t, "verify_schedule", &schedule);
    put_opt(&mut t, "verify_script", &path(&v.script));
    t.insert("verify_timeout_secs".into(), secs(v.timeout));
    let category = v.category.as_ref().map(ToString::to_string);
    put_opt(&mut t, "verify_category", &category);
    t.insert("notify".into(), Value::Table(notify(&j.notify)));
    t
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// `imds_v1_fallback` survives parse → render → parse, both ways round.
    #[test]
    fn imds_v1_fallback_round_trips() {
        let p = Path::new("/etc/appsnap.toml");
        let default = crate::policy::parse_str(p, "").unwrap();
        assert!(default.cloud.imds_v1_fallback);
        let off = crate::policy::parse_str(p, "[cloud]\nimds_v1_fallback = false\n").unwrap();
        assert!(!off.cloud.imds_v1_fallback);
        for policy in [default, off] {
            let again = crate::policy::parse_str(p, &policy.to_toml()).unwrap();
            assert_eq!(again.cloud, policy.cloud);
        }
        assert!(crate::policy::parse_str(p, "[cloud]\nimds_v1_fallback = \"no\"\n").is_err());
    }
}
