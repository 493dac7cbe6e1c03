//! The emulator's in-memory world: disks, snapshot groups, issued
//! credentials, IMDS tokens, seen nonces, idempotency tokens and faults.
//! One mutex guards it; no lock is held across an await or a disk copy.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::{DiskConfig, SimConfig};
use crate::faults::Faults;
use crate::reqlog::RequestLog;
use crate::util::{new_id, rand_hex};

/// One emulated instance: the first (`instance_id`) or an `[[instance]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `i-...`.
    pub id: String,
    /// Its zone.
    pub zone_id: String,
    /// Its RAM role, if any.
    pub ram_role: Option<String>,
}

/// Shared by every request handler.
#[derive(Debug)]
pub struct Sim {
    /// The configuration the emulator started with.
    pub cfg: SimConfig,
    /// Every emulated instance, the first instance first.
    pub instances: Vec<Instance>,
    /// The request log.
    pub log: RequestLog,
    inner: Mutex<Inner>,
}

/// STS credentials handed out by the metadata service.
#[derive(Debug, Clone)]
pub struct IssuedCred {
    /// The instance whose metadata service handed them out.
    pub instance: String,
    /// `STS.` + random.
    pub access_key_id: String,
    /// The secret.
    pub secret: String,
    /// The security token that must accompany the key.
    pub token: String,
    /// Issue time (`LastUpdated`).
    pub issued: DateTime<Utc>,
    /// `Expiration`.
    pub expires: DateTime<Utc>,
}

/// Result of probing one mount at accept time.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// The mount point probed.
    pub mount: PathBuf,
    /// `Some(true)` frozen, `Some(false)` writable, `None` could not tell.
    pub frozen: Option<bool>,
    /// Why it could not tell, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One snapshot inside a group.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// `s-...`.
    pub id: String,
    /// Source disk.
    pub disk_id: String,
    /// `system`/`data`.
    pub disk_type: String,
    /// GiB.
    pub disk_size: u64,
    /// The accept-time copy of the disk.
    pub image: PathBuf,
    /// Tags set through TagResources.
    pub tags: Vec<(String, String)>,
}

/// One snapshot group.
#[derive(Debug, Clone)]
pub struct Group {
    /// `ssg-...`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Set when all snapshots come from one instance.
    pub instance_id: String,
    /// ResourceGroupId as sent.
    pub resource_group_id: String,
    /// `CreationTime`: when the request was accepted (emulator clock); with
    /// an immediate point in time, reset to it as before.
    pub created: DateTime<Utc>,
    /// When CreateSnapshotGroup answered (emulator clock); `None` before.
    pub answered_at: Option<DateTime<Utc>>,
    /// When the point-in-time copy started (emulator clock); `None` until
    /// it is done. Progress and `Available` count from here.
    pub pit_at: Option<DateTime<Utc>>,
    /// Members stay `Available: false` this long after `pit_at`.
    pub available_delay_ms: u64,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Snapshots, one per disk.
    pub snapshots: Vec<Snapshot>,
    /// `<snapshot_dir>/<ssg-id>`.
    pub dir: PathBuf,
    /// True until the point-in-time copy is done (before the answer, or
    /// after it when `pit_delay_ms > 0`); the group has no visible members
    /// meanwhile.
    pub copying: bool,
    /// Set when the group failed.
    pub failed: bool,
    /// Set when the group must fail once its progress completes (fault).
    pub fail_at_end: bool,
    /// Per-disk freeze probe results taken at the point in time.
    pub frozen_at_pit: BTreeMap<String, Vec<ProbeResult>>,
}

impl Group {
    /// Milliseconds from the answer to the point in time: negative when the
    /// copy came first (`pit_delay_ms = 0`), `None` while either is unknown.
    pub fn pit_after_answer_ms(&self) -> Option<i64> {
        Some((self.pit_at? - self.answered_at?).num_milliseconds())
    }
}

/// Status of a disk made by CreateDisk (DescribeDisks `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DiskStatus {
    /// Being created from its snapshot.
    Creating,
    /// Not attached.
    Available,
    /// AttachDisk accepted, not attached yet.
    Attaching,
    /// Attached.
    #[serde(rename = "In_use")]
    InUse,
    /// DetachDisk accepted, not detached yet.
    Detaching,
}

impl DiskStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskStatus::Creating => "Creating",
            DiskStatus::Available => "Available",
            DiskStatus::Attaching => "Attaching",
            DiskStatus::InUse => "In_use",
            DiskStatus::Detaching => "Detaching",
        }
    }
}

/// A disk made by CreateDisk. Deleted ones stay (flagged) so `/_sim/state`
/// can prove a cleanup happened.
#[derive(Debug)]
pub struct CreatedDisk {
    /// `d-...`.
    pub id: String,
    /// DiskName.
    pub name: String,
    /// Description.
    pub description: String,
    /// Zone it was created in.
    pub zone_id: String,
    /// DiskCategory.
    pub category: String,
    /// PerformanceLevel (`""` for categories without one).
    pub performance_level: String,
    /// GiB.
    pub size_gib: u64,
    /// Source snapshot (`""` for an empty disk).
    pub snapshot_id: String,
    /// ResourceGroupId as sent.
    pub resource_group_id: String,
    /// Encrypted as sent.
    pub encrypted: bool,
    /// `<disk_dir>/<id>.img`.
    pub image: PathBuf,
    /// How the image was made, once it is.
    pub copy_method: Option<crate::diskcopy::CopyMethod>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Status.
    pub status: DiskStatus,
    /// The instance while Attaching/In_use/Detaching, else `""`.
    pub instance_id: String,
    /// AttachDisk's DeleteWithInstance.
    pub delete_with_instance: bool,
    /// CreationTime.
    pub created: DateTime<Utc>,
    /// Last attach (In_use).
    pub attached_at: Option<DateTime<Utc>>,
    /// Last detach (Available again).
    pub detached_at: Option<DateTime<Utc>>,
    /// The attached loop device (held open: see `loopdev`).
    pub device: Option<crate::loopdev::LoopDevice>,
    /// The by-id link pointing at it.
    pub link: Option<PathBuf>,
    /// Its device was made by `[restore] attach_command`, so DetachDisk
    /// runs `detach_command`.
    pub hotplugged: bool,
    /// Set by DeleteDisk (the disk no longer exists for the API).
    pub deleted: bool,
    /// The last asynchronous failure (copy or attach), for `/_sim/state`.
    pub last_error: Option<String>,
    /// Bumped on every status change, so a delayed transition that finds a
    /// newer one in place does nothing.
    pub generation: u64,
}

impl CreatedDisk {
    /// Serial as the guest sees it: the id without `d-`, as for configured disks.
    pub fn serial(&self) -> String {
        self.id.trim_start_matches("d-").to_string()
    }

    /// Removes the by-id link and detaches the loop device, if any.
    pub fn release_device(&mut self) {
        if let Some(l) = self.link.take() {
            if let Err(e) = std::fs::remove_file(&l) {
                tracing::warn!("removing {}: {e}", l.display());
            }
        }
        if let Some(d) = self.device.take() {
            d.detach();
        }
    }
}

/// A ClientToken's first use.
#[derive(Debug, Clone)]
pub struct TokenUse {
    /// The request's operation parameters, to detect a mismatched reuse.
    pub fingerprint: String,
    /// The group, once accepted.
    pub group_id: Option<String>,
}

/// The mutable world.
#[derive(Debug)]
pub struct Inner {
    /// Seconds added to the wall clock (tests move time with `/_sim/clock`).
    pub clock_offset: Duration,
    /// IMDS token -> (the instance whose service issued it, expiry): a
    /// token is good only at the service that issued it.
    pub imds_tokens: HashMap<String, (String, DateTime<Utc>)>,
    /// All STS credentials ever issued, newest last.
    pub creds: Vec<IssuedCred>,
    /// (AccessKeyId, nonce) -> when seen.
    pub nonces: HashMap<(String, String), DateTime<Utc>>,
    /// Groups by creation order.
    pub groups: Vec<Group>,
    /// ClientToken -> first use.
    pub client_tokens: HashMap<String, TokenUse>,
    /// The fault plan.
    pub faults: Faults,
    /// Disks, from the config (tests may not change them).
    pub disks: Vec<DiskConfig>,
    /// Requests seen per action (ECS) or path (IMDS), for `/_sim/state`.
    pub counters: BTreeMap<String, u64>,
    /// Disks made by CreateDisk, in creation order (deleted ones flagged).
    pub created: Vec<CreatedDisk>,
    /// CreateDisk ClientToken -> (fingerprint, disk id).
    pub disk_tokens: HashMap<String, (String, String)>,
}

impl Sim {
    /// Builds the world from the configuration.
    pub fn new(cfg: SimConfig, log: RequestLog) -> Self {
        let inner = Inner {
            clock_offset: Duration::zero(),
            imds_tokens: HashMap::new(),
            creds: Vec::new(),
            nonces: HashMap::new(),
            groups: Vec::new(),
            client_tokens: HashMap::new(),
            faults: Faults::new(cfg.faults.clone()),
            disks: cfg.disks.clone(),
            counters: BTreeMap::new(),
            created: Vec::new(),
            disk_tokens: HashMap::new(),
        };
        let first = Instance {
            id: cfg.instance_id.clone(),
            zone_id: cfg.zone_id.clone(),
            ram_role: cfg.ram_role.clone(),
        };
        let more = cfg.instances.iter().map(|i| Instance {
            id: i.id.clone(),
            zone_id: i.zone_id.clone().unwrap_or_else(|| cfg.zone_id.clone()),
            ram_role: i.ram_role.clone().or_else(|| cfg.ram_role.clone()),
        });
        let instances = std::iter::once(first).chain(more).collect();
        Sim {
            cfg,
            instances,
            log,
            inner: Mutex::new(inner),
        }
    }

    /// Locks the world; a panicked holder does not poison the emulator.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The emulator's clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.lock().clock_offset
    }

    /// Detaches every loop device the emulator attached and removes its
    /// links; run on SIGTERM/SIGINT and when a test's handle is dropped.
    pub fn release_devices(&self) {
        let mut inner = self.lock();
        for d in inner.created.iter_mut() {
            d.release_device();
        }
    }

    /// The emulated instance `id`, if it is one.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// A configured disk's zone: its own, else its instance's, else the
    /// first instance's.
    pub fn disk_zone(&self, d: &DiskConfig) -> String {
        d.zone_id.clone().unwrap_or_else(|| {
            self.instance(&self.disk_instance(d))
                .map_or_else(|| self.cfg.zone_id.clone(), |i| i.zone_id.clone())
        })
    }

    /// Instance id of a disk as configured (`""` = unattached).
    pub fn disk_instance(&self, d: &DiskConfig) -> String {
        d.instance_id
            .clone()
            .unwrap_or_else(|| self.cfg.instance_id.clone())
    }
}

impl Inner {
    /// Current time under the lock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// The credentials `instance`'s metadata service hands out now, issuing
    /// fresh ones when none exist or the current ones are in the last third
    /// of their life (so a client refreshing ahead of expiry gets new keys
    /// while the old stay valid).
    pub fn current_creds(&mut self, instance: &str, lifetime_secs: u64) -> IssuedCred {
        let now = self.now();
        let life = Duration::seconds(lifetime_secs as i64);
        let current = self.creds.iter().rev().find(|c| c.instance == instance);
        match current {
            Some(c) if c.expires - now > life / 3 => c.clone(),
            _ => {
                let c = IssuedCred {
                    instance: instance.to_string(),
                    access_key_id: format!("STS.N{}", rand_hex(10)),
                    secret: rand_hex(16),
                    token: format!("CAIS{}", rand_hex(48)),
                    issued: now,
                    expires: now + life,
                };
                self.creds.push(c.clone());
                c
            }
        }
    }

    /// Group progress in percent at `now`, given the configured duration.
    pub fn progress(&self, g: &Group, tta_secs: f64) -> u32 {
        let Some(pit) = g.pit_at.filter(|_| !g.copying) else {
            return 0;
        };
        if tta_secs <= 0.0 {
            return 100;
        }
        let elapsed = (self.now() - pit).num_milliseconds() as f64 / 1000.0;
        ((elapsed / tta_secs) * 100.0).clamp(0.0, 100.0) as u32
    }

    /// `progressing`, `accomplished` or `failed`.
    pub fn group_status(&self, g: &Group, tta_secs: f64) -> &'static str {
        let done = self.progress(g, tta_secs) >= 100;
        if g.failed || (done && g.fail_at_end) {
            "failed"
        } else if done {
            "accomplished"
        } else {
            "progressing"
        }
    }

    /// Whether the group's members are usable: after the point in time plus
    /// the availability delay (ESSD instant access), and always once the
    /// group is accomplished; never for a failed group.
    pub fn members_available(&self, g: &Group, tta_secs: f64) -> bool {
        match self.group_status(g, tta_secs) {
            "accomplished" => true,
            "failed" => false,
            _ => g.pit_at.filter(|_| !g.copying).is_some_and(|pit| {
                self.now() >= pit + Duration::milliseconds(g.available_delay_ms as i64)
            }),
        }
    }

    /// True if a progressing group holds a snapshot of `disk_id` that is not
    /// usable yet. The vendor's exit 16 reads "the previous snapshot is being
    /// created and the instant access feature is disabled": an Available
    /// (instant access) snapshot still uploading does not block a new one.
    pub fn disk_busy(&self, disk_id: &str, tta_secs: f64) -> bool {
        self.groups.iter().any(|g| {
            self.group_status(g, tta_secs) == "progressing"
                && !self.members_available(g, tta_secs)
                && g.snapshots.iter().any(|s| s.disk_id == disk_id)
        })
    }

    /// Snapshots of `disk_id` that exist (for the quota).
    pub fn snapshots_of(&self, disk_id: &str) -> usize {
        self.groups
            .iter()
            .flat_map(|g| g.snapshots.iter())
            .filter(|s| s.disk_id == disk_id)
            .count()
    }

    /// Forgets nonces older than the timestamp window plus a margin; a replay
    /// past that is refused as an expired timestamp anyway.
    pub fn prune_nonces(&mut self) {
        let cutoff = self.now() - Duration::minutes(31);
        self.nonces.retain(|_, t| *t > cutoff);
    }
}

/// A fresh disk id.
pub fn new_disk_id() -> String {
    new_id("d-")
}

/// A fresh group id.
pub fn new_group_id() -> String {
    new_id("ssg-")
}

/// A fresh snapshot id.
pub fn new_snapshot_id() -> String {
    new_id("s-")
}
