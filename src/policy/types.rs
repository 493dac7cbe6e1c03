//! The validated policy: what the rest of appsnap consumes. Every value here has
//! already been checked, so no other module re-validates configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::schedule::CronSchedule;

/// The whole validated policy, main file plus drop-ins.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How to reach the cloud and who we are there.
    pub cloud: CloudSettings,
    /// Where appsnap looks for devices and keeps its own files.
    pub host: HostSettings,
    /// The defaults every job inherited (kept for `check` and serialization).
    pub defaults: JobDefaults,
    /// `[notify]`: the sinks of every job without its own `notify` table.
    pub notify: NotifySettings,
    /// `[metrics]`: the Prometheus textfile.
    pub metrics: MetricsSettings,
    /// Jobs in file order: main file first, then drop-ins sorted by name.
    pub jobs: Vec<Job>,
}

impl Policy {
    /// Looks a job up by name, as the CLI and the scheduler address jobs.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name.as_str() == name)
    }
}

/// The request-signing scheme; V3 is what current SDKs use, v1 exists for old gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureVersion {
    /// ACS3-HMAC-SHA256.
    #[default]
    V3,
    /// RPC HMAC-SHA1 (`SignatureVersion=1.0`).
    V1,
}

impl SignatureVersion {
    /// The spelling used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::V3 => "v3",
            SignatureVersion::V1 => "v1",
        }
    }
}

/// `[cloud]`: every value optional because the metadata service knows the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudSettings {
    /// Region override; default from the metadata service.
    pub region_id: Option<String>,
    /// Instance override; default from the metadata service.
    pub instance_id: Option<String>,
    /// RAM role override; default: the role attached to the instance.
    pub ram_role: Option<String>,
    /// ECS endpoint override; default `https://ecs-vpc.<region>.aliyuncs.com`.
    pub endpoint: Option<String>,
    /// Base URL of the instance metadata service.
    pub metadata_endpoint: String,
    /// Which signature scheme requests carry.
    pub signature_version: SignatureVersion,
    /// The operator's own cap on disks per group; ECS enforces its own limit
    /// (16 or 128 depending on region) and answers `NumberExceed.TooManyDisks`.
    pub max_disks_per_group: u32,
    /// Read the metadata service without a token when its token API is absent
    /// (404/405), like the official credentials library; `false` forbids it.
    pub imds_v1_fallback: bool,
}

/// Default metadata service address on every ECS instance.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// Default cap on disks per group: the most any region accepts (128), so
/// appsnap never refuses what ECS would take; ECS's own answer decides.
pub const DEFAULT_MAX_DISKS_PER_GROUP: u32 = 128;

impl Default for CloudSettings {
    fn default() -> Self {
        CloudSettings {
            region_id: None,
            instance_id: None,
            ram_role: None,
            endpoint: None,
            metadata_endpoint: DEFAULT_METADATA_ENDPOINT.to_string(),
            signature_version: SignatureVersion::V3,
            max_disks_per_group: DEFAULT_MAX_DISKS_PER_GROUP,
            imds_v1_fallback: true,
        }
    }
}

/// `[host]`: host paths are settings so tests can point them at fixture trees.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSettings {
    /// Where udev publishes stable disk links.
    pub by_id_dir: PathBuf,
    /// Runtime dir (tmpfs): the frozen-set record and the lock live here.
    pub run_dir: PathBuf,
    /// Persistent state: last result per job.
    pub state_dir: PathBuf,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            by_id_dir: PathBuf::from("/dev/disk/by-id"),
            run_dir: PathBuf::from("/run/appsnap"),
            state_dir: PathBuf::from("/var/lib/appsnap"),
        }
    }
}

/// `[defaults]`: the vendor plugin's defaults, inherited by every job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDefaults {
    /// EnableFsFreeze (vendor default true).
    pub fs_freeze: bool,
    /// TimeoutInSeconds: the longest I/O may stay suspended (vendor default 30 s).
    pub freeze_timeout: Duration,
    /// ScriptTimeoutInSeconds (vendor default 1800 s).
    pub script_timeout: Duration,
    /// Random delay before a scheduled run, to spread a fleet.
    pub jitter: Duration,
    /// The window within which a scheduled run starts at a fixed offset
    /// (hash of the instance and the job): a fleet on one policy fans out
    /// without randomness, and each instance keeps a stable time.
    pub spread: Duration,
    /// When the file systems are thawed.
    pub thaw_after: ThawAfter,
    /// Run once at daemon start when a scheduled time passed with no run
    /// (systemd's `Persistent=true`).
    pub catch_up: bool,
    /// The bound on a restore drill's `verify_script`.
    pub verify_timeout: Duration,
    /// The disk category restore drills create their disks in; `None`: the
    /// built-in cheapest-first fallback.
    pub verify_category: Option<VerifyCategory>,
    /// What a failed pre-script (or unusable hooks) leads to.
    pub on_prescript_failure: OnPrescriptFailure,
    /// The pre-script's lock while a throttled run waits outside the window.
    pub hooks_while_throttled: HooksWhileThrottled,
}

/// Default for `verify_timeout_secs`: as long as the hooks' default, enough
/// to start a database on a copy and check it.
pub const DEFAULT_VERIFY_TIMEOUT_SECS: u64 = 1800;
/// Accepted range for `verify_timeout_secs`: at least a minute (a database
/// start), at most a day (a drill disk is billed by the hour meanwhile).
pub const VERIFY_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 60..=86_400;

/// The disk categories a drill may be told to use: the ESSD kinds snapshot
/// groups hold. Regional ESSD is left out: a drill disk lives in this
/// instance's zone and is billed as a zonal disk would be.
pub const VERIFY_CATEGORIES: &[&str] = &["cloud_essd", "cloud_auto", "cloud_essd_entry"];
/// ESSD performance levels (`cloud_essd` only).
pub const ESSD_PERFORMANCE_LEVELS: &[&str] = &["PL0", "PL1", "PL2", "PL3"];

/// `verify_category = "cloud_essd:PL0"`: a category and, for `cloud_essd`
/// only, a performance level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCategory {
    /// `DiskCategory`.
    pub category: String,
    /// `PerformanceLevel` (`cloud_essd` only).
    pub performance_level: Option<String>,
}

impl VerifyCategory {
    /// Parses `category` or `cloud_essd:PLn`.
    pub fn parse(s: &str) -> Result<VerifyCategory, String> {
        let (category, level) = match s.split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (s, None),
        };
        if !VERIFY_CATEGORIES.contains(&category) {
            return Err(format!(
                "verify_category {s:?}: the category must be one of {} (cloud_essd may name a level, e.g. \"cloud_essd:PL0\")",
                VERIFY_CATEGORIES.join(", ")
            ));
        }
        match level {
            Some(l) if category != "cloud_essd" => Err(format!(
                "verify_category {s:?}: only cloud_essd has performance levels; write \"{category}\" without \":{l}\""
            )),
            Some(l) if !ESSD_PERFORMANCE_LEVELS.contains(&l) => Err(format!(
                "verify_category {s:?}: the level must be one of {}",
                ESSD_PERFORMANCE_LEVELS.join(", ")
            )),
            _ => Ok(VerifyCategory {
                category: category.to_string(),
                performance_level: level.map(str::to_string),
            }),
        }
    }
}

impl fmt::Display for VerifyCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.performance_level {
            Some(l) => write!(f, "{}:{l}", self.category),
            None => f.write_str(&self.category),
        }
    }
}

/// A job's restore-drill settings (`appsnap verify`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifySettings {
    /// When the daemon verifies the job's newest app/fs-consistent group;
    /// `None`: only by hand.
    pub schedule: Option<CronSchedule>,
    /// Run on the restored copies (same trust rules as the hooks).
    pub script: Option<PathBuf>,
    /// The bound on `script`.
    pub timeout: Duration,
    /// The category override; `None`: the built-in fallback.
    pub category: Option<VerifyCategory>,
}

/// Where a job's events go: `[notify]`, or the job's own `notify` table,
/// which replaces it whole (so a job can also send to fewer sinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// A webhook: https, or http to loopback only (checked).
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key for `X-Appsnap-Signature`: a root-only file, read
    /// at delivery, so the key is never in the policy (which is 0644).
    pub webhook_key_file: Option<PathBuf>,
    /// A root-owned command run like the hooks, the event on stdin and in its environment.
    pub exec: Option<PathBuf>,
    /// Also send `success` events (off by default: the other events are the news).
    pub success: bool,
    /// The longest one delivery attempt may take.
    pub timeout: Duration,
    /// Attempts after the first, with backoff.
    pub retries: u32,
}

/// Default for one delivery attempt.
pub const DEFAULT_NOTIFY_TIMEOUT_SECS: u64 = 10;
/// Default number of retries.
pub const DEFAULT_NOTIFY_RETRIES: u32 = 3;
/// Accepted range for `notify.timeout_secs`.
pub const NOTIFY_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=120;
/// Accepted range for `notify.retries`.
pub const NOTIFY_RETRIES_RANGE: std::ops::RangeInclusive<u64> = 0..=10;

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            webhook_url: None,
            webhook_key_file: None,
            exec: None,
            success: false,
            timeout: Duration::from_secs(DEFAULT_NOTIFY_TIMEOUT_SECS),
            retries: DEFAULT_NOTIFY_RETRIES,
        }
    }
}

impl NotifySettings {
    /// Whether any event sink is configured.
    pub fn has_sinks(&self) -> bool {
        self.webhook_url.is_some() || self.exec.is_some()
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    /// The node_exporter textfile (`*.prom`) appsnap rewrites after every
    /// run and at daemon start; `None`: no metrics.
    pub textfile: Option<PathBuf>,
}

/// When a run thaws: the point in time of a snapshot group is only known to be
/// fixed once ECS lists the group's snapshots, not when CreateSnapshotGroup
/// answers (no Alibaba document says the answer fixes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThawAfter {
    /// Hold the freeze until DescribeSnapshotGroups lists one snapshot per disk,
    /// each `Available` (or the group `accomplished`): what the vendor's plugin does.
    #[default]
    Listed,
    /// Thaw at the CreateSnapshotGroup answer: a shorter pause, resting on an
    /// assumption about the cloud that the vendor does not make.
    Accepted,
}

impl ThawAfter {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            ThawAfter::Listed => "listed",
            ThawAfter::Accepted => "accepted",
        }
    }
}

/// What a run does when the pre-script fails or the hooks cannot be used.
/// Some operators would rather have no snapshot than one their application
/// cannot trust ("no snapshot rather than a worse one").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPrescriptFailure {
    /// The vendor's behaviour: a file-system-consistent snapshot (exit 9 for
    /// a failed pre-script; unusable hooks only warn).
    #[default]
    Fs,
    /// No freeze and no snapshot; the post-script still runs after a failed
    /// pre-script to undo what it did; exit 9.
    Skip,
}

impl OnPrescriptFailure {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            OnPrescriptFailure::Fs => "fs",
            OnPrescriptFailure::Skip => "skip",
        }
    }
}

/// What the pre-script's lock does while a run waits outside the window
/// after ECS throttled CreateSnapshotGroup (the run thaws at once, waits,
/// then freezes again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HooksWhileThrottled {
    /// The post-script releases the lock before the wait and the pre-script
    /// takes it again after it: the application is held only around each
    /// window, and the snapshot's tags come from the pre-script run that
    /// held the lock at its point in time.
    #[default]
    Release,
    /// The lock stays held across every wait: one pre-script and one
    /// post-script per run, however long ECS throttles.
    Hold,
}

impl HooksWhileThrottled {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            HooksWhileThrottled::Release => "release",
            HooksWhileThrottled::Hold => "hold",
        }
    }
}

/// Vendor default for EnableFsFreeze.
pub const DEFAULT_FS_FREEZE: bool = true;
/// Vendor default for TimeoutInSeconds.
pub const DEFAULT_FREEZE_TIMEOUT_SECS: u64 = 30;
/// Vendor default for ScriptTimeoutInSeconds.
pub const DEFAULT_SCRIPT_TIMEOUT_SECS: u64 = 1800;
/// Accepted range for the freeze timeout, seconds.
pub const FREEZE_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=600;
/// Accepted range for the script timeout, seconds.
pub const SCRIPT_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;
/// Accepted range for jitter, seconds (up to a day).
pub const JITTER_RANGE: std::ops::RangeInclusive<u64> = 0..=86_400;
/// Accepted range for the spread, seconds (up to an hour: a wider window
/// belongs in the cron schedule itself).
pub const SPREAD_RANGE: std::ops::RangeInclusive<u64> = 0..=3_600;
/// The default spread: a fleet on one account's API limits fans out over a
/// minute; one instance alone waits at most that long past its cron time.
pub const DEFAULT_SPREAD_SECS: u64 = 60;

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            fs_freeze: DEFAULT_FS_FREEZE,
            freeze_timeout: Duration::from_secs(DEFAULT_FREEZE_TIMEOUT_SECS),
            script_timeout: Duration::from_secs(DEFAULT_SCRIPT_TIMEOUT_SECS),
            jitter: Duration::ZERO,
            spread: Duration::from_secs(DEFAULT_SPREAD_SECS),
            thaw_after: ThawAfter::Listed,
            catch_up: false,
            verify_timeout: Duration::from_secs(DEFAULT_VERIFY_TIMEOUT_SECS),
            verify_category: None,
            on_prescript_failure: OnPrescriptFailure::Fs,
            hooks_while_throttled: HooksWhileThrottled::Release,
        }
    }
}

/// A job name, already checked against `[A-Za-z][A-Za-z0-9._:-]{1,110}`; it
/// prefixes snapshot group names, so it must satisfy ECS naming too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName(pub(crate) String);

impl JobName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ECS disk ID (`d-` + lowercase alphanumerics); a newtype so a mount
/// point or serial can never be passed where a disk ID is meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskId(pub(crate) String);

impl DiskId {
    /// Checks the ECS shape and wraps it; the message says what is accepted.
    pub fn parse(s: &str) -> Result<DiskId, String> {
        let rest = s
            .strip_prefix("d-")
            .ok_or_else(|| format!("disk ID {s:?} must start with \"d-\""))?;
        if rest.is_empty()
            || !rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "disk ID {s:?} must be \"d-\" followed by lowercase letters and digits"
            ));
        }
        Ok(DiskId(s.to_string()))
    }

    /// The ID as ECS spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The serial the guest sees when DescribeDisks gives none: the ID without `d-`.
    pub fn default_serial(&self) -> &str {
        &self.0[2..]
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which disks a job snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSelection {
    /// Every supported disk of this instance, minus `exclude_disks`.
    All {
        /// ExcludeDiskId.
        exclude: Vec<DiskId>,
    },
    /// Exactly these disks.
    List(Vec<DiskId>),
}

/// Which time zone a schedule is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobZone {
    /// The system's local zone (TZ or /etc/localtime), read at run time.
    Local,
    /// A named IANA zone.
    Named(chrono_tz::Tz),
}

impl fmt::Display for JobZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobZone::Local => f.write_str("local"),
            JobZone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

/// One `[[job]]`, with the defaults already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Unique across all policy files.
    pub name: JobName,
    /// When it runs.
    pub schedule: CronSchedule,
    /// The zone the schedule is read in.
    pub zone: JobZone,
    /// Which disks.
    pub disks: DiskSelection,
    /// Quiesces the application; absent means file-system consistency only.
    pub prescript: Option<PathBuf>,
    /// Resumes the application.
    pub postscript: Option<PathBuf>,
    /// Names of appsnap's environment variables the scripts also get (their
    /// environment is otherwise fixed; `ALIBABA_CLOUD_*` is never allowed).
    pub script_env: Vec<String>,
    /// Snapshot group Description.
    pub description: Option<String>,
    /// Extra tags put on the group (ECS tag rules already checked).
    pub tags: BTreeMap<String, String>,
    /// Keep at most this many groups of this job.
    pub keep_last: Option<u32>,
    /// Delete this job's groups older than this many days.
    pub max_age_days: Option<u32>,
    /// EnableFsFreeze.
    pub fs_freeze: bool,
    /// TimeoutInSeconds: the freeze guard's deadline.
    pub freeze_timeout: Duration,
    /// ScriptTimeoutInSeconds.
    pub script_timeout: Duration,
    /// Random delay before a scheduled run.
    pub jitter: Duration,
    /// Window of the deterministic start offset (see [`JobDefaults::spread`]).
    pub spread: Duration,
    /// When the file systems are thawed.
    pub thaw_after: ThawAfter,
    /// What a failed pre-script (or unusable hooks) leads to.
    pub on_prescript_failure: OnPrescriptFailure,
    /// The pre-script's lock while a throttled run waits outside the window.
    pub hooks_while_throttled: HooksWhileThrottled,
    /// Run once at daemon start when a scheduled time was missed.
    pub catch_up: bool,
    /// A health-check URL (healthchecks.io convention: `/start`, success, `/fail`).
    pub ping_url: Option<String>,
    /// Where this job's events go (its own table, or `[notify]`).
    pub notify: NotifySettings,
    /// Restore drills of this job's groups.
    pub verify: VerifySettings,
}

impl Job {
    /// The next `n` scheduled times strictly after `after`, in the job's zone
    /// (iterating from each previous result, as croner requires for DST).
    pub fn next_runs(
        &self,
        after: chrono::DateTime<chrono::Utc>,
        n: usize,
    ) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
        fn walk<Tz: chrono::TimeZone>(
            s: &CronSchedule,
            mut t: chrono::DateTime<Tz>,
            n: usize,
        ) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                match s.next_after(&t) {
                    Some(next) => {
                        out.push(next.fixed_offset());
                        t = next;
                    }
                    None => break,
                }
            }
            out
        }
        match self.zone {
            JobZone::Local => walk(&self.schedule, after.with_timezone(&chrono::Local), n),
            JobZone::Named(tz) => walk(&self.schedule, after.with_timezone(&tz), n),
        }
    }
}
