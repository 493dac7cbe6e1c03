//! The policy file exactly as TOML spells it: strict serde structs whose every
//! value carries its span, so validation can point at file, line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One policy file (the main file or a drop-in).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub cloud: Option<Spanned<RawCloud>>,
    pub host: Option<Spanned<RawHost>>,
    pub defaults: Option<Spanned<RawDefaults>>,
    pub notify: Option<Spanned<RawNotify>>,
    pub metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    pub job: Vec<Spanned<RawJob>>,
}

/// `[notify]` and a job's own `[job.notify]` (which replaces it for that job).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub webhook_url: Option<Spanned<String>>,
    pub webhook_key_file: Option<Spanned<String>>,
    pub exec: Option<Spanned<String>>,
    pub success: Option<Spanned<bool>>,
    pub timeout_secs: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub textfile: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloud {
    pub region_id: Option<Spanned<String>>,
    pub instance_id: Option<Spanned<String>>,
    pub ram_role: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub metadata_endpoint: Option<Spanned<String>>,
    pub signature_version: Option<Spanned<String>>,
    pub max_disks_per_group: Option<Spanned<i64>>,
    pub imds_v1_fallback: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub by_id_dir: Option<Spanned<String>>,
    pub run_dir: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
}

/// Keys shared by `[defaults]` and `[[job]]` (a job overrides a default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub fs_freeze: Option<Spanned<bool>>,
    pub freeze_timeout_secs: Option<Spanned<i64>>,
    pub script_timeout_secs: Option<Spanned<i64>>,
    pub jitter_secs: Option<Spanned<i64>>,
    pub thaw_after: Option<Spanned<String>>,
    pub catch_up: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub name: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    /// `"all"` or an array of disk IDs; kept as a value so both shapes keep a span.
    pub disks: Option<Spanned<toml::Value>>,
    pub exclude_disks: Option<Spanned<Vec<String>>>,
    pub prescript: Option<Spanned<String>>,
    pub postscript: Option<Spanned<String>>,
    pub script_env: Option<Spanned<Vec<Spanned<String>>>>,
    pub description: Option<Spanned<String>>,
    pub tags: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub keep_last: Option<Spanned<i64>>,
    pub max_age_days: Option<Spanned<i64>>,
    pub fs_freeze: Option<Spanned<bool>>,
    pub freeze_timeout_secs: Option<Spanned<i64>>,
    pub script_timeout_secs: Option<Spanned<i64>>,
    pub jitter_secs: Option<Spanned<i64>>,
    pub thaw_after: Option<Spanned<String>>,
    pub catch_up: Option<Spanned<bool>>,
    pub ping_url: Option<Spanned<String>>,
    pub notify: Option<Spanned<RawNotify>>,
}
