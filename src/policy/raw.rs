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
    pub spread_secs: Option<Spanned<i64>>,
    pub thaw_after: Option<Spanned<String>>,
    pub catch_up: Option<Spanned<bool>>,
    pub verify_timeout_secs: Option<Spanned<i64>>,
    pub verify_category: Option<Spanned<String>>,
    pub on_prescript_failure: Option<Spanned<String>>,
    pub hooks_while_throttled: Option<Spanned<String>>,
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
    pub spread_secs: Option<Spanned<i64>>,
    pub thaw_after: Option<Spanned<String>>,
    pub catch_up: Option<Spanned<bool>>,
    pub ping_url: Option<Spanned<String>>,
    pub verify_schedule: Option<Spanned<String>>,
    pub verify_script: Option<Spanned<String>>,
    pub verify_timeout_secs: Option<Spanned<i64>>,
    pub verify_category: Option<Spanned<String>>,
    pub on_prescript_failure: Option<Spanned<String>>,
    pub hooks_while_throttled: Option<Spanned<String>>,
    pub notify: Option<Spanned<RawNotify>>,
}

/// The keys a table type accepts, read from its own `Deserialize` (the field
/// list serde hands to `deserialize_struct`), so the unknown-key walk in
/// `validate` cannot drift from the structs above.
pub fn keys_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldList(&mut keys));
    keys
}

/// A deserializer that records the field list of the struct asked for and
/// then stops (it never produces a value).
struct FieldList<'a>(&'a mut &'static [&'static str]);

/// The only error [`FieldList`] produces.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field list read")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Stop {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for FieldList<'_> {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_the_structs() {
        assert_eq!(
            keys_of::<RawFile>(),
            ["cloud", "host", "defaults", "notify", "metrics", "job"]
        );
        assert!(keys_of::<RawJob>().contains(&"exclude_disks"));
        assert_eq!(keys_of::<RawMetrics>(), ["textfile"]);
    }
}
