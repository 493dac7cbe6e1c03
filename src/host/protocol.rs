//! What the daemon and the freeze guard say to each other over the guard's
//! stdin/stdout pipes: one JSON line per message.
//!
//! Parent → guard: a [`GuardRequest`] line, then the bare lines `freeze`,
//! optionally `check` (answered by [`GuardEvent::Lost`] lines and
//! [`GuardEvent::Checked`]) and `thaw`; closing stdin means "thaw now" (the
//! parent died). Guard → parent:
//! [`GuardEvent`] lines. The `frozen` event is serialized before the freeze so
//! the guard allocates nothing while file systems are frozen.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Protocol (and record) version; bumped on any incompatible change.
pub const VERSION: u32 = 1;

/// One file system to freeze, with the identity the guard checks before freezing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Mount point to open (the mount's root directory).
    pub mount_point: PathBuf,
    /// Expected `statx` mount id of the opened directory.
    pub mount_id: u64,
    /// Expected device major (`0` = anonymous, e.g. btrfs: not compared with st_dev).
    pub dev_major: u32,
    /// Expected device minor.
    pub dev_minor: u32,
    /// For messages.
    pub fs_type: String,
    /// `st_dev` of the opened mount root as the guard saw it (filled in by the
    /// guard for the record; the daemon sends `None`). Unlike the mount id it is
    /// the same in every mount namespace, so `thaw --all` run from another one
    /// (a unit's ExecStopPost with ProtectSystem=) can still recognise the
    /// file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub st_dev: Option<(u32, u32)>,
}

/// The first line the guard reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardRequest {
    /// Must equal [`VERSION`].
    pub version: u32,
    /// Where the frozen-set record is written.
    pub run_dir: PathBuf,
    /// The longest I/O may stay suspended, counted from just before the first FIFREEZE.
    pub deadline_ms: u64,
    /// In freeze order; thaw is the reverse.
    pub targets: Vec<Target>,
}

/// Why the guard thawed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThawCause {
    /// The parent said `thaw`.
    Requested,
    /// The parent closed stdin (exited or died).
    StdinClosed,
    /// Nobody said `thaw` before the deadline.
    Deadline,
    /// A freeze failed, so what had been frozen was thawed at once.
    FreezeFailed,
}

/// The outcome of thawing one file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsThaw {
    /// The mount point.
    pub mount_point: PathBuf,
    /// From the start of FIFREEZE to the end of FITHAW: how long writers were held.
    pub suspended_us: u64,
    /// `None` = thawed; `Some(errno)` = FITHAW failed (EINVAL means it was not frozen).
    pub errno: Option<i32>,
    /// When its FIFREEZE began, counted from the first FIFREEZE of the run: shows
    /// which file systems froze in parallel and that children froze first.
    #[serde(default)]
    pub freeze_began_us: u64,
    /// How long its FIFREEZE call took (the kernel's flush with writers blocked).
    #[serde(default)]
    pub freeze_took_us: u64,
    /// Someone else thawed it while the guard held it (seen by `check`, or
    /// FITHAW answered EINVAL): I/O was not suspended throughout the window.
    #[serde(default)]
    pub lost: bool,
}

/// Messages from the guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GuardEvent {
    /// Targets opened and verified, record written, memory locked: ready for `freeze`.
    Armed {
        /// Whether `mlockall` succeeded (if not, page faults could touch a frozen disk).
        mlocked: bool,
    },
    /// syncfs done, deadline armed; FIFREEZE starts now.
    Freezing,
    /// Every target is frozen.
    Frozen,
    /// Answer to `check`, one per target found thawed by someone else (it is
    /// frozen again now, until the guard's thaw). Followed by [`GuardEvent::Checked`].
    Lost {
        /// Index of the target in the request.
        index: usize,
        /// Its mount point.
        mount_point: PathBuf,
    },
    /// End of the answer to `check`.
    Checked,
    /// A FIFREEZE failed (or the deadline passed while freezing); everything the guard froze is thawed again.
    FreezeFailed {
        /// Index of the failing target (`None` when the deadline interrupted freezing).
        index: Option<usize>,
        /// Its mount point.
        mount_point: Option<PathBuf>,
        /// The errno of FIFREEZE.
        errno: Option<i32>,
        /// What was thawed.
        thawed: Vec<FsThaw>,
    },
    /// All frozen targets were thawed (or FITHAW failed on some: see `errno`).
    Thawed {
        /// Why.
        cause: ThawCause,
        /// Per target, in thaw order.
        filesystems: Vec<FsThaw>,
        /// First FIFREEZE start to last FITHAW end: the job's I/O pause
        /// (file systems freeze in parallel, so no single one spans it).
        #[serde(default)]
        window_us: u64,
    },
    /// The guard could not prepare (bad request, identity mismatch, record not written).
    Error {
        /// Which step.
        stage: String,
        /// What happened.
        message: String,
    },
}

impl GuardEvent {
    /// One protocol line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            b"{\"event\":\"error\",\"stage\":\"encode\",\"message\":\"\"}".to_vec()
        });
        v.push(b'\n');
        v
    }
}
