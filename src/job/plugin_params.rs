//! The vendor plugin's parameter string, exactly as Cloud Assistant passes it:
//! `-RamRoleName="r",-EnableFsFreeze=true,-TimeoutInSeconds=30,-Name="LinuxApp1"`.
//! Operators migrating from `acs-plugin-manager --exec --plugin
//! app-snapshot-plugin --params=...` paste the same string after `appsnap plugin --params=`.
//!
//! Cloud Assistant itself starts the vendor binary with one argv entry per
//! parameter instead (`--RamRoleName=r -EnableFsFreeze=true ... -Name=x`);
//! [`parse_args`] takes that form with the same defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use super::outcome::Outcome;
use super::spec::RunSpec;
use crate::policy::naming;
use crate::policy::types::{
    DiskId, DEFAULT_FREEZE_TIMEOUT_SECS, DEFAULT_FS_FREEZE, DEFAULT_SCRIPT_TIMEOUT_SECS,
    FREEZE_TIMEOUT_RANGE, SCRIPT_TIMEOUT_RANGE,
};

/// The vendor's parameters, with the vendor's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginParams {
    /// RamRoleName (required).
    pub ram_role_name: String,
    /// Name (required): the snapshot group's name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// EnableFsFreeze (default true).
    pub enable_fs_freeze: bool,
    /// TimeoutInSeconds (default 30).
    pub timeout: Duration,
    /// ScriptTimeoutInSeconds (default 1800).
    pub script_timeout: Duration,
    /// PreScriptPath.
    pub pre_script: Option<PathBuf>,
    /// PostScriptPath.
    pub post_script: Option<PathBuf>,
    /// ExcludeDiskId (comma-separated inside the quotes).
    pub exclude_disks: Vec<DiskId>,
}

/// What is wrong with a parameter string; each names its culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginParamsError {
    /// An item that is not `-Key=Value`.
    #[error("parameter {item:?}: expected -Key=Value")]
    Malformed {
        /// The item as given.
        item: String,
    },
    /// A quote opened and never closed.
    #[error("unterminated quote in --params")]
    UnterminatedQuote,
    /// Both forms at once: which one wins would be a guess.
    #[error(
        "give the parameters either as --params=... or as separate -Key=Value arguments, not both"
    )]
    BothForms,
    /// Neither form.
    #[error(
        "no parameters: give --params=\"-RamRoleName=...,-Name=...\" or -RamRoleName=... -Name=..."
    )]
    NoParameters,
    /// A key the vendor plugin does not have.
    #[error("unknown parameter -{key} (known: {})", known().collect::<Vec<_>>().join(", "))]
    Unknown {
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("parameter -{key} given twice")]
    Duplicate {
        /// The key.
        key: String,
    },
    /// Name or RamRoleName absent or empty.
    #[error("parameter -{key} is required")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A value of the wrong type or range.
    #[error("parameter -{key}={value:?}: {expected}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// Name is well-typed but ECS would reject it (vendor: code 1, "the snapshot name is invalid").
    #[error("parameter -Name={value:?}: {reason}")]
    InvalidName {
        /// The name.
        value: String,
        /// The ECS rule it breaks.
        reason: String,
    },
}

impl PluginParamsError {
    /// The vendor's exit code: 1 for an invalid snapshot name, 2 for the rest.
    pub fn outcome(&self) -> Outcome {
        match self {
            PluginParamsError::InvalidName { .. } => Outcome::ConditionsNotMet,
            _ => Outcome::InvalidParameters,
        }
    }
}

/// Every parameter the vendor plugin takes, with its default: what the
/// parser accepts and what `appsnap plugin --help` lists (one table, so
/// the help cannot drift from the parser).
pub const PARAMETERS: [Parameter; 9] = [
    Parameter {
        name: "RamRoleName",
        default: ParamDefault::Required,
        meaning: "the RAM role attached to the instance",
    },
    Parameter {
        name: "Name",
        default: ParamDefault::Required,
        meaning: "the snapshot group's name (2-128 characters, a letter first)",
    },
    Parameter {
        name: "Description",
        default: ParamDefault::Empty,
        meaning: "the group's description",
    },
    Parameter {
        name: "EnableFsFreeze",
        default: ParamDefault::Bool(DEFAULT_FS_FREEZE),
        meaning: "freeze the file systems (true or false)",
    },
    Parameter {
        name: "TimeoutInSeconds",
        default: ParamDefault::Secs(DEFAULT_FREEZE_TIMEOUT_SECS, FREEZE_TIMEOUT_RANGE),
        meaning: "longest freeze",
    },
    Parameter {
        name: "ScriptTimeoutInSeconds",
        default: ParamDefault::Secs(DEFAULT_SCRIPT_TIMEOUT_SECS, SCRIPT_TIMEOUT_RANGE),
        meaning: "longest run of each script",
    },
    Parameter {
        name: "PreScriptPath",
        default: ParamDefault::Empty,
        meaning: "absolute path of the pre-script",
    },
    Parameter {
        name: "PostScriptPath",
        default: ParamDefault::Empty,
        meaning: "absolute path of the post-script",
    },
    Parameter {
        name: "ExcludeDiskId",
        default: ParamDefault::Empty,
        meaning: "disks to leave out, comma-separated inside quotes",
    },
];

/// One vendor parameter, for the parser and the help.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// As written after the dash.
    pub name: &'static str,
    /// What applies when it is not given.
    pub default: ParamDefault,
    /// What it sets, in a few words.
    pub meaning: &'static str,
}

/// A parameter's default.
#[derive(Debug, Clone)]
pub enum ParamDefault {
    /// No default: the run is refused without it.
    Required,
    /// Empty: nothing (no description, no script, no exclusion).
    Empty,
    /// A boolean.
    Bool(bool),
    /// Seconds, and the range accepted.
    Secs(u64, std::ops::RangeInclusive<u64>),
}

impl std::fmt::Display for ParamDefault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamDefault::Required => f.write_str("required"),
            ParamDefault::Empty => f.write_str("default: none"),
            ParamDefault::Bool(b) => write!(f, "default: {b}"),
            ParamDefault::Secs(n, _) => write!(f, "default: {n}"),
        }
    }
}

/// The parameter list for `appsnap plugin --help`, built from [`PARAMETERS`].
pub fn help() -> String {
    let width = PARAMETERS.iter().map(|p| p.name.len()).max().unwrap_or(0) + 1;
    let mut out = String::from("Parameters (either form):\n");
    for p in &PARAMETERS {
        let range = match &p.default {
            ParamDefault::Secs(_, r) => format!(", {}..={}", r.start(), r.end()),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  -{:<width$} {} ({}{range})\n",
            p.name, p.meaning, p.default
        ));
    }
    out
}

/// The parameter names, as the parser and its errors use them.
fn known() -> impl Iterator<Item = &'static str> {
    PARAMETERS.iter().map(|p| p.name)
}

/// Splits on commas outside double quotes, unquoting values.
fn items(s: &str) -> Result<Vec<(String, String)>, PluginParamsError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut raw_items = Vec::new();
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => raw_items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(PluginParamsError::UnterminatedQuote);
    }
    raw_items.push(cur);
    for item in raw_items {
        let t = item.trim();
        if t.is_empty() {
            continue;
        }
        out.push(key_value(t, t.strip_prefix('-'))?);
    }
    Ok(out)
}

/// `Key=Value` after its dash(es) → (key, unquoted value); `item` is what
/// the operator wrote, for the error.
fn key_value(item: &str, body: Option<&str>) -> Result<(String, String), PluginParamsError> {
    let malformed = || PluginParamsError::Malformed {
        item: item.to_string(),
    };
    let (k, v) = body
        .ok_or_else(malformed)?
        .split_once('=')
        .ok_or_else(malformed)?;
    if k.trim().is_empty() {
        return Err(malformed());
    }
    let v = v.trim();
    let v = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(v);
    Ok((k.trim().to_string(), v.to_string()))
}

/// Cloud Assistant's form: one argv entry per parameter, led by `--` or `-`
/// (`--RamRoleName=r -TimeoutInSeconds=30 -ExcludeDiskId=d-1,d-2 -Name=x`),
/// values possibly still quoted. Same defaults and checks as [`parse`].
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<PluginParams, PluginParamsError> {
    let mut out = Vec::new();
    for a in args {
        let t = a.as_ref().trim();
        if t.is_empty() {
            continue;
        }
        let body = t.strip_prefix("--").or_else(|| t.strip_prefix('-'));
        out.push(key_value(t, body)?);
    }
    if out.is_empty() {
        return Err(PluginParamsError::NoParameters);
    }
    from_items(out)
}

fn bool_value(key: &'static str, v: &str) -> Result<bool, PluginParamsError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(PluginParamsError::BadValue {
            key,
            value: v.into(),
            expected: "expected true or false".into(),
        }),
    }
}

fn secs(
    key: &'static str,
    v: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, PluginParamsError> {
    match v.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(PluginParamsError::BadValue {
            key,
            value: v.into(),
            expected: format!("expected an integer {}..={}", range.start(), range.end()),
        }),
    }
}

fn script(key: &'static str, v: &str) -> Result<Option<PathBuf>, PluginParamsError> {
    // An empty path means "no script", as in the vendor's samples.
    Ok((!v.is_empty()).then(|| PathBuf::from(v))).and_then(|p| match &p {
        Some(path) if !path.is_absolute() => Err(PluginParamsError::BadValue {
            key,
            value: v.into(),
            expected: "expected an absolute path".into(),
        }),
        _ => Ok(p),
    })
}

impl PluginParams {
    /// The one-off run the vendor plugin makes: every supported disk of the
    /// instance minus `ExcludeDiskId`, never scheduled, never pruned.
    pub fn to_spec(&self) -> RunSpec {
        use crate::policy::{DiskSelection, JobName};
        RunSpec {
            name: JobName(self.name.clone()),
            disks: DiskSelection::All {
                exclude: self.exclude_disks.clone(),
            },
            prescript: self.pre_script.clone(),
            postscript: self.post_script.clone(),
            script_env: Vec::new(),
            description: self.description.clone(),
            tags: Default::default(),
            fs_freeze: self.enable_fs_freeze,
            freeze_timeout: self.timeout,
            script_timeout: self.script_timeout,
            thaw_after: crate::policy::types::ThawAfter::Listed,
            // The vendor's plugin falls back to a file-system-consistent snapshot.
            on_prescript_failure: crate::policy::types::OnPrescriptFailure::Fs,
            hooks_while_throttled: crate::policy::types::HooksWhileThrottled::Release,
        }
    }
}

/// Parses the `--params` string with the vendor's defaults.
pub fn parse(s: &str) -> Result<PluginParams, PluginParamsError> {
    from_items(items(s)?)
}

/// The vendor's defaults, then each `(key, value)` checked and applied.
fn from_items(items: Vec<(String, String)>) -> Result<PluginParams, PluginParamsError> {
    let mut p = PluginParams {
        ram_role_name: String::new(),
        name: String::new(),
        description: None,
        enable_fs_freeze: DEFAULT_FS_FREEZE,
        timeout: Duration::from_secs(DEFAULT_FREEZE_TIMEOUT_SECS),
        script_timeout: Duration::from_secs(DEFAULT_SCRIPT_TIMEOUT_SECS),
        pre_script: None,
        post_script: None,
        exclude_disks: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in items {
        let Some(key) = known().find(|known| *known == k) else {
            return Err(PluginParamsError::Unknown { key: k });
        };
        if seen.iter().any(|s| s == key) {
            return Err(PluginParamsError::Duplicate { key: k });
        }
        seen.push(k);
        match key {
            "RamRoleName" => p.ram_role_name = v,
            "Name" => p.name = v,
            "Description" => p.description = (!v.is_empty()).then_some(v),
            "EnableFsFreeze" => p.enable_fs_freeze = bool_value(key, &v)?,
            "TimeoutInSeconds" => p.timeout = secs(key, &v, FREEZE_TIMEOUT_RANGE)?,
            "ScriptTimeoutInSeconds" => p.script_timeout = secs(key, &v, SCRIPT_TIMEOUT_RANGE)?,
            "PreScriptPath" => p.pre_script = script(key, &v)?,
            "PostScriptPath" => p.post_script = script(key, &v)?,
            "ExcludeDiskId" => {
                for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let d = DiskId::parse(id).map_err(|expected| PluginParamsError::BadValue {
                        key,
                        value: id.into(),
                        expected,
                    })?;
                    p.exclude_disks.push(d);
                }
            }
            _ => unreachable!("every PARAMETERS name is matched"),
        }
    }
    if p.ram_role_name.is_empty() {
        return Err(PluginParamsError::Missing { key: "RamRoleName" });
    }
    if p.name.is_empty() {
        return Err(PluginParamsError::Missing { key: "Name" });
    }
    naming::check_ram_role_name(&p.ram_role_name).map_err(|expected| {
        PluginParamsError::BadValue {
            key: "RamRoleName",
            value: p.ram_role_name.clone(),
            expected,
        }
    })?;
    naming::check_group_name(&p.name).map_err(|reason| PluginParamsError::InvalidName {
        value: p.name.clone(),
        reason,
    })?;
    if let Some(d) = &p.description {
        naming::check_description(d).map_err(|expected| PluginParamsError::BadValue {
            key: "Description",
            value: d.clone(),
            expected,
        })?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample from the vendor's document, verbatim.
    const VENDOR_SAMPLE: &str = r#"-RamRoleName="AppSnapshotRoleName",-EnableFsFreeze=true,-TimeoutInSeconds=30,-PreScriptPath="/tmp/prescript.sh",-PostScriptPath="/tmp/postscript.sh",-ExcludeDiskId="",-Name="LinuxApp1""#;

    #[test]
    fn vendor_sample_parses_with_vendor_defaults() {
        let p = parse(VENDOR_SAMPLE).unwrap();
        assert_eq!(p.ram_role_name, "AppSnapshotRoleName");
        assert_eq!(p.name, "LinuxApp1");
        assert!(p.enable_fs_freeze);
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!(p.script_timeout, Duration::from_secs(1800));
        assert_eq!(p.pre_script, Some(PathBuf::from("/tmp/prescript.sh")));
        assert_eq!(p.post_script, Some(PathBuf::from("/tmp/postscript.sh")));
        assert!(p.exclude_disks.is_empty());
        assert_eq!(p.description, None);
    }

    /// Cloud Assistant's separate-argument form gives the same parameters.
    #[test]
    fn separate_arguments_parse_like_the_params_string() {
        let args = [
            "--RamRoleName=AppSnapshotRoleName",
            "-EnableFsFreeze=true",
            "-TimeoutInSeconds=30",
            "-PreScriptPath=/tmp/prescript.sh",
            "-PostScriptPath=\"/tmp/postscript.sh\"",
            "-ExcludeDiskId=",
            "-Name=LinuxApp1",
        ];
        assert_eq!(parse_args(&args).unwrap(), parse(VENDOR_SAMPLE).unwrap());
        let p = parse_args(&[
            "--RamRoleName=r",
            "-ExcludeDiskId=d-1,d-2",
            "-Name=Created_At_202401011200",
        ])
        .unwrap();
        assert_eq!(
            p.exclude_disks
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>(),
            ["d-1", "d-2"]
        );
        assert_eq!(p.name, "Created_At_202401011200");
    }

    #[test]
    fn separate_arguments_name_the_culprit() {
        let e = parse_args(&["--RamRoleName=r", "-Name=a1", "-Bogus=1"]).unwrap_err();
        assert!(e.to_string().contains("unknown parameter -Bogus"), "{e}");
        assert_eq!(e.outcome().code(), 2);
        let e = parse_args(&["--RamRoleName=r", "-Name"]).unwrap_err();
        assert!(
            e.to_string().contains("\"-Name\": expected -Key=Value"),
            "{e}"
        );
        let e = parse_args(&["RamRoleName=r", "-Name=a1"]).unwrap_err();
        assert!(e.to_string().contains("RamRoleName=r"), "{e}");
        assert_eq!(
            parse_args::<&str>(&[]).unwrap_err(),
            PluginParamsError::NoParameters
        );
        let e = parse_args(&["--RamRoleName=r", "-Name=1bad"]).unwrap_err();
        assert_eq!(e.outcome().code(), 1, "{e}");
    }

    #[test]
    fn quoted_commas_list_several_excluded_disks() {
        let p = parse(r#"-RamRoleName=r,-Name="a1",-ExcludeDiskId="d-aa1,d-bb2",-ScriptTimeoutInSeconds=60,-Description="two words, one comma""#).unwrap();
        assert_eq!(
            p.exclude_disks
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>(),
            ["d-aa1", "d-bb2"]
        );
        assert_eq!(p.script_timeout, Duration::from_secs(60));
        assert_eq!(p.description.as_deref(), Some("two words, one comma"));
        // What the run reads: every disk but the excluded ones, the vendor's
        // defaults elsewhere, the default thaw point.
        let spec = p.to_spec();
        assert_eq!(spec.name.as_str(), "a1");
        assert_eq!(
            spec.disks,
            crate::policy::DiskSelection::All {
                exclude: p.exclude_disks.clone()
            }
        );
        assert_eq!(spec.script_timeout, Duration::from_secs(60));
        assert_eq!(
            spec.freeze_timeout,
            Duration::from_secs(DEFAULT_FREEZE_TIMEOUT_SECS)
        );
        assert_eq!(spec.fs_freeze, DEFAULT_FS_FREEZE);
        assert_eq!(spec.thaw_after, crate::policy::ThawAfter::Listed);
        assert_eq!(spec.description.as_deref(), Some("two words, one comma"));
    }

    #[test]
    fn errors_name_the_culprit_and_map_to_vendor_codes() {
        let cases: [(&str, &str, u8); 10] = [
            (
                r#"-RamRoleName=r,-Name=a1,-Foo=1"#,
                "unknown parameter -Foo",
                2,
            ),
            (r#"-Name=a1"#, "-RamRoleName is required", 2),
            (r#"-RamRoleName=r"#, "-Name is required", 2),
            (
                r#"-RamRoleName=r,-Name=a1,-EnableFsFreeze=yes"#,
                "-EnableFsFreeze=\"yes\": expected true or false",
                2,
            ),
            (
                r#"-RamRoleName=r,-Name=a1,-TimeoutInSeconds=abc"#,
                "-TimeoutInSeconds=\"abc\"",
                2,
            ),
            (
                r#"-RamRoleName=r,-Name=a1,-TimeoutInSeconds=0"#,
                "expected an integer 1..=600",
                2,
            ),
            (
                r#"-RamRoleName=r,-Name=a1,-Name=b2"#,
                "-Name given twice",
                2,
            ),
            (r#"-RamRoleName=r,Name=a1"#, "expected -Key=Value", 2),
            (r#"-RamRoleName=r,-Name="1bad""#, "-Name=\"1bad\"", 1),
            (
                r#"-RamRoleName="../../..",-Name=a1"#,
                "-RamRoleName=\"../../..\": must be 1-64 letters",
                2,
            ),
        ];
        for (input, want, code) in cases {
            let e = parse(input).unwrap_err();
            assert!(e.to_string().contains(want), "{input}: {e}");
            assert_eq!(e.outcome().code(), code, "{input}: {e}");
        }
        assert_eq!(
            parse(r#"-RamRoleName="r,-Name=a1"#).unwrap_err(),
            PluginParamsError::UnterminatedQuote
        );
    }
}
