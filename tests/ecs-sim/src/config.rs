//! The emulator's configuration file (`sim.toml`): one instance (or a fleet of
//! them in one account), the disks and their backing bytes, plus the knobs
//! tests need (timings, quota, faults).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::faults::FaultConfig;

/// Why a configuration was refused; each variant names the offending value so
/// a test author sees at once what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file that was parsed.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: toml::de::Error,
    },
    /// The emulator serves credentials and disk images: it must never be
    /// reachable from another host.
    #[error("listen address {0} is not a loopback address; ecs-sim only listens on loopback (127.0.0.0/8 or ::1)")]
    NotLoopback(String),
    /// The listen address is not an IP address at all.
    #[error("listen address {0:?} is not an IP address")]
    BadListen(String),
    /// A semantic rule of the file was broken.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Whether the metadata service accepts token-less GETs (`HttpTokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// Normal mode: a token is checked when sent, but not required.
    #[default]
    Optional,
    /// Hardened-only mode: a GET without a token gets 403.
    Required,
}

/// The whole `sim.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Address both servers bind; loopback only.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Metadata service port; 0 picks a free one.
    #[serde(default)]
    pub imds_port: u16,
    /// ECS API port (also serves `/_sim/*`); 0 picks a free one.
    #[serde(default)]
    pub ecs_port: u16,
    /// Region the instance lives in (`RegionId` must match).
    pub region_id: String,
    /// Zone of the instance and, by default, of its disks.
    pub zone_id: String,
    /// The emulated instance.
    pub instance_id: String,
    /// Owner account shown in the identity document.
    #[serde(default = "default_owner")]
    pub owner_account_id: String,
    /// Instance type shown in the identity document.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// RAM role attached to the instance; `None` means no role.
    #[serde(default)]
    pub ram_role: Option<String>,
    /// Lifetime of each STS credential handed out by IMDS, in seconds.
    #[serde(default = "default_cred_lifetime")]
    pub credential_lifetime_secs: u64,
    /// IMDS token mode.
    #[serde(default)]
    pub http_tokens: HttpTokens,
    /// Long-lived access keys the ECS side accepts besides the STS ones.
    #[serde(default)]
    pub access_keys: Vec<AccessKey>,
    /// Where snapshot images go: `<snapshot_dir>/<ssg-id>/<disk-id>.img`.
    pub snapshot_dir: PathBuf,
    /// Seconds from acceptance until a group is `accomplished`.
    #[serde(default = "default_accomplish")]
    pub time_to_accomplish_secs: f64,
    /// Manual snapshots allowed per disk before `QuotaExceed.Snapshot`.
    #[serde(default = "default_quota")]
    pub snapshot_quota_per_disk: usize,
    /// Disks allowed in one group.
    #[serde(default = "default_max_disks")]
    pub max_disks_per_group: usize,
    /// JSON-lines request log; none if absent.
    #[serde(default)]
    pub request_log: Option<PathBuf>,
    /// How long the accept-time freeze probe waits before calling a file
    /// system frozen, in milliseconds.
    #[serde(default = "default_probe_ms")]
    pub freeze_probe_timeout_ms: u64,
    /// Copy each disk's bytes into an image at accept (the point in time).
    /// `false` is for benchmarks only: the answer then comes after the
    /// injected latency alone, not latency + copy time; the group and its
    /// snapshots are still recorded, but their image files never exist.
    #[serde(default = "default_true")]
    pub copy_images: bool,
    /// Milliseconds between CreateSnapshotGroup's answer and the point in
    /// time (probe + copy); 0 = copy first, then answer. Real ECS does not
    /// document when the point in time is taken (reference §0 item 4), so
    /// tests can model "after the answer". The fault plan's value wins.
    #[serde(default)]
    pub pit_delay_ms: u64,
    /// Milliseconds after the point in time during which member snapshots
    /// are listed `Available: false` (ESSD instant access makes them usable
    /// within seconds). The fault plan's value wins.
    #[serde(default)]
    pub available_delay_ms: u64,
    /// Faults active from start-up.
    #[serde(default)]
    pub faults: FaultConfig,
    /// The disks.
    #[serde(default, rename = "disk")]
    pub disks: Vec<DiskConfig>,
    /// `[[instance]]`: more instances of the same account and region, each
    /// with its own metadata service (address), identity, role credentials
    /// and disks (`[[disk]] instance_id`), for fleet benchmarks: flow
    /// control is account-wide, so they share every `rate_limits` bucket.
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceConfig>,
    /// `[restore]`: disks made by CreateDisk and attached by AttachDisk.
    #[serde(default)]
    pub restore: RestoreConfig,
}

/// `[restore]`: the disk lifecycle a restore drill drives (CreateDisk,
/// AttachDisk, DetachDisk, DeleteDisk). Real ECS documents no timings, so
/// each transition's delay is a knob.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Where created disks' images go (`<disk_dir>/<d-id>.img`); default
    /// `<snapshot_dir>/disks`.
    #[serde(default)]
    pub disk_dir: Option<PathBuf>,
    /// The by-id directory in which AttachDisk makes `virtio-<serial>` links
    /// to the loop device; none = AttachDisk is refused (403 `OperationDenied`
    /// naming this key).
    #[serde(default)]
    pub by_id_dir: Option<PathBuf>,
    /// `Creating` -> `Available`, in milliseconds (at least the image copy).
    #[serde(default = "default_transition_ms")]
    pub create_delay_ms: u64,
    /// `Attaching` -> `In_use`.
    #[serde(default = "default_transition_ms")]
    pub attach_delay_ms: u64,
    /// `In_use` -> the loop device and its by-id link exist (a guest sees a
    /// hot-plugged disk after the API says it is attached).
    #[serde(default)]
    pub device_delay_ms: u64,
    /// `Detaching` -> `Available` (the device is gone from the start).
    #[serde(default = "default_transition_ms")]
    pub detach_delay_ms: u64,
    /// Instead of a loop device and a by-id link: the command (argv) that
    /// makes the disk appear where its client runs, e.g. hot-plugs the image
    /// into a QEMU guest (tests/vm/hotplug). Run with three more arguments:
    /// the image path, the serial (at most 20 characters) and the disk id.
    /// Exit 0 = the device is there; anything else fails the attach
    /// (`last_error`). Needs `detach_command`.
    #[serde(default)]
    pub attach_command: Option<Vec<String>>,
    /// Undoes `attach_command` at DetachDisk (same arguments). A failure
    /// leaves the disk `Detaching` with `last_error`: the device is still
    /// there, as on a real instance whose guest does not release it.
    #[serde(default)]
    pub detach_command: Option<Vec<String>>,
    /// The bound on each attach/detach command; past it the command is
    /// killed and counts as failed.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            disk_dir: None,
            by_id_dir: None,
            create_delay_ms: default_transition_ms(),
            attach_delay_ms: default_transition_ms(),
            device_delay_ms: 0,
            detach_delay_ms: default_transition_ms(),
            attach_command: None,
            detach_command: None,
            command_timeout_ms: default_command_timeout_ms(),
        }
    }
}

fn default_transition_ms() -> u64 {
    1000
}

fn default_command_timeout_ms() -> u64 {
    60_000
}

/// One more instance of the account (`[[instance]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// `i-...`.
    pub id: String,
    /// The loopback address its metadata service listens on, at the same
    /// port as the first instance's (`imds_port`): on ECS every instance
    /// reaches its own service at 100.100.100.200, so each daemon's
    /// `metadata_endpoint` names its own address here.
    pub imds_listen: String,
    /// Zone; default: the first instance's.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// RAM role; default: the first instance's (`None` there = no role).
    #[serde(default)]
    pub ram_role: Option<String>,
}

/// A long-lived (non-STS) access key pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// AccessKeyId.
    pub id: String,
    /// AccessKeySecret.
    pub secret: String,
    /// `false`: a disabled key, refused with 403 `InvalidAccessKeyId.Inactive`
    /// (a real code, alibaba-api.md §0 item 12) whatever the signature.
    #[serde(default = "default_true")]
    pub active: bool,
}

/// `system` or `data`, as DescribeDisks `Type` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// The instance's system disk.
    System,
    /// A data disk.
    Data,
}

impl DiskType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskType::System => "system",
            DiskType::Data => "data",
        }
    }
}

/// One emulated cloud disk and the local file or block device holding its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// `d-...`.
    pub id: String,
    /// Serial number; default: the id without `d-`.
    #[serde(default)]
    pub serial: Option<String>,
    /// `cloud_essd`, `cloud_auto`, `cloud_efficiency`, ...
    #[serde(default = "default_category")]
    pub category: String,
    /// System or data disk.
    #[serde(rename = "type", default = "default_disk_type")]
    pub disk_type: DiskType,
    /// Multi-attach enabled (such disks cannot be in a group).
    #[serde(default)]
    pub multi_attach: bool,
    /// Size in GiB as reported by DescribeDisks.
    #[serde(default = "default_size")]
    pub size_gib: u64,
    /// Instance the disk is attached to; default: the emulated instance;
    /// `""` means unattached.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Disk status (`In_use`, `Available`, ...); default `In_use` when
    /// attached, `Available` otherwise.
    #[serde(default)]
    pub status: Option<String>,
    /// Zone; default: the instance's zone.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// Regular file or block device that holds the disk's bytes.
    pub backing: PathBuf,
    /// Mount points of file systems on this disk; at accept time the
    /// emulator probes whether each is frozen and records it.
    #[serde(default)]
    pub probe_mounts: Vec<PathBuf>,
    /// Tags DescribeDisks reports for the disk.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl DiskConfig {
    /// Serial as DescribeDisks and IMDS report it.
    pub fn serial(&self) -> String {
        self.serial
            .clone()
            .unwrap_or_else(|| self.id.trim_start_matches("d-").to_string())
    }
}

fn default_listen() -> String {
    "127.0.0.1".into()
}
fn default_owner() -> String {
    "1234567890123456".into()
}
fn default_instance_type() -> String {
    "ecs.g7.large".into()
}
fn default_cred_lifetime() -> u64 {
    21600
}
fn default_accomplish() -> f64 {
    2.0
}
fn default_quota() -> usize {
    256
}
/// Many regions allow 128 disks per group (alibaba-api.md §0 item 7).
fn default_max_disks() -> usize {
    128
}
fn default_true() -> bool {
    true
}
fn default_probe_ms() -> u64 {
    500
}
fn default_category() -> String {
    "cloud_essd".into()
}
fn default_disk_type() -> DiskType {
    DiskType::Data
}
fn default_size() -> u64 {
    40
}

impl SimConfig {
    /// Where created disks' images go.
    pub fn disk_dir(&self) -> PathBuf {
        self.restore
            .disk_dir
            .clone()
            .unwrap_or_else(|| self.snapshot_dir.join("disks"))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: SimConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parsed listen address, refused unless loopback.
    pub fn listen_ip(&self) -> Result<IpAddr, ConfigError> {
        let ip: IpAddr = self
            .listen
            .parse()
            .map_err(|_| ConfigError::BadListen(self.listen.clone()))?;
        if !ip.is_loopback() {
            return Err(ConfigError::NotLoopback(self.listen.clone()));
        }
        Ok(ip)
    }

    /// Semantic checks the type system cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_ip()?;
        if self.credential_lifetime_secs == 0 {
            return Err(ConfigError::Invalid(
                "credential_lifetime_secs must be > 0".into(),
            ));
        }
        if !self.time_to_accomplish_secs.is_finite() || self.time_to_accomplish_secs < 0.0 {
            return Err(ConfigError::Invalid(
                "time_to_accomplish_secs must be >= 0".into(),
            ));
        }
        let mut instances: HashSet<&str> = HashSet::from([self.instance_id.as_str()]);
        let mut addresses: HashSet<IpAddr> = HashSet::from([self.listen_ip()?]);
        for i in &self.instances {
            if !i.id.starts_with("i-") {
                return Err(ConfigError::Invalid(format!(
                    "instance id {:?} must start with i-",
                    i.id
                )));
            }
            if !instances.insert(i.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "duplicate instance id {}",
                    i.id
                )));
            }
            let ip: IpAddr = i
                .imds_listen
                .parse()
                .map_err(|_| ConfigError::BadListen(i.imds_listen.clone()))?;
            if !ip.is_loopback() {
                return Err(ConfigError::NotLoopback(i.imds_listen.clone()));
            }
            if !addresses.insert(ip) {
                return Err(ConfigError::Invalid(format!(
                    "instance {}: imds_listen {} is already used by another instance (each metadata service needs its own address)",
                    i.id, i.imds_listen
                )));
            }
        }
        let mut ids = HashSet::new();
        for d in &self.disks {
            if !d.id.starts_with("d-") {
                return Err(ConfigError::Invalid(format!(
                    "disk id {:?} must start with d-",
                    d.id
                )));
            }
            if !ids.insert(d.id.clone()) {
                return Err(ConfigError::Invalid(format!("duplicate disk id {}", d.id)));
            }
        }
        if let Some(d) = &self.restore.by_id_dir {
            if !d.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "restore.by_id_dir {} must be an absolute path",
                    d.display()
                )));
            }
        }
        let r = &self.restore;
        match (&r.attach_command, &r.detach_command) {
            (None, None) => {}
            (Some(a), Some(d)) => {
                if a.is_empty() || a[0].is_empty() || d.is_empty() || d[0].is_empty() {
                    return Err(ConfigError::Invalid(
                        "restore.attach_command and restore.detach_command must name a program".into(),
                    ));
                }
            }
            _ => {
                return Err(ConfigError::Invalid(
                    "restore.attach_command and restore.detach_command go together (one undoes the other)".into(),
                ))
            }
        }
        if r.command_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "restore.command_timeout_ms must be > 0".into(),
            ));
        }
        for k in &self.access_keys {
            if k.id.starts_with("STS.") {
                return Err(ConfigError::Invalid(format!(
                    "access key {} : the STS. prefix is reserved for credentials issued by the metadata service",
                    k.id
                )));
            }
        }
        Ok(())
    }
}
