//! What can go wrong while assembling or tearing down a drill's copies. Each
//! variant names the device, path or tool at fault; tool output is only ever
//! a bounded tail (no secrets pass through these tools).

use std::path::PathBuf;

use thiserror::Error;

/// Why a drill could not be assembled or torn down.
#[derive(Debug, Error)]
pub enum DrillError {
    /// A restored disk was described wrongly (bad disk id, not a block device, duplicate).
    #[error("restored disk {disk_id} ({device}): {reason}")]
    BadDisk {
        /// The restored disk.
        disk_id: String,
        /// Its device as given.
        device: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A restored device (or one of its partitions) is mounted or held by
    /// another device: it is not a fresh copy, and touching it could touch live storage.
    #[error(
        "{device} is in use ({what}); a freshly restored disk must be unused, not touching it"
    )]
    InUse {
        /// The device.
        device: PathBuf,
        /// Mounted where, or held by what.
        what: String,
    },
    /// The private directory already exists: a drill with this run id ran
    /// before, or was never cleaned up.
    #[error("{path} already exists: a previous drill left it; clean it up first")]
    RootExists {
        /// The layout root.
        path: PathBuf,
    },
    /// A crash record is already there: another drill runs or one was never cleaned up.
    #[error("{path} already exists: another drill is running or one was never cleaned up (`appsnap verify --cleanup`)")]
    RecordExists {
        /// The record.
        path: PathBuf,
    },
    /// The crash record could not be written, read or removed.
    #[error("drill record {path}: {reason}")]
    Record {
        /// The record.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An external program could not be started.
    #[error("cannot run {tool} ({path}): {source}")]
    Spawn {
        /// Its short name.
        tool: &'static str,
        /// The program path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An external program was killed at its timeout or the drill's deadline.
    #[error("{tool} {args} did not finish within {secs} s; killed")]
    Timeout {
        /// Its short name.
        tool: &'static str,
        /// Its arguments, for the operator.
        args: String,
        /// The time it had.
        secs: u64,
    },
    /// An external program that must succeed failed.
    #[error("{tool} {args} exited with {exit}: {output_tail}")]
    ToolFailed {
        /// Its short name.
        tool: &'static str,
        /// Its arguments, for the operator.
        args: String,
        /// Exit code (-1 when killed by a signal).
        exit: i32,
        /// The end of what it printed.
        output_tail: String,
    },
    /// A program's output did not have the expected shape.
    #[error("{tool}: unexpected output: {detail}")]
    Parse {
        /// Its short name.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A restored device's partition table names partitions the kernel never showed.
    #[error("{device}: partition {number} of its table did not appear as a block device within {secs} s")]
    PartitionMissing {
        /// The restored device.
        device: PathBuf,
        /// The partition number.
        number: u32,
        /// How long we waited.
        secs: u64,
    },
    /// The drill's deadline passed before assembling finished.
    #[error("the drill's deadline passed while {step}")]
    Deadline {
        /// What was being done.
        step: String,
    },
    /// The record names something that is not the drill's to touch (a mount
    /// point outside its root, a VG without the private prefix): refused.
    #[error("drill record {record}: refusing to touch {what}: {why}")]
    Foreign {
        /// The record.
        record: PathBuf,
        /// The thing named.
        what: String,
        /// Why it is not ours.
        why: &'static str,
    },
    /// Teardown could not undo everything; the record is kept so that
    /// `cleanup_from_record` can finish later.
    #[error("drill teardown left {}: {}", problems.len(), problems.join("; "))]
    Leftover {
        /// One line per thing left behind (a busy mount names its mount point).
        problems: Vec<String>,
    },
    /// Assembling failed, and so did the teardown that followed.
    #[error("{cause}; and tearing down after it failed: {teardown}")]
    Aborted {
        /// Why assembling stopped.
        cause: Box<DrillError>,
        /// What the teardown left.
        teardown: Box<DrillError>,
    },
}
