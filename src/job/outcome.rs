//! The vendor plugin's exit codes (the seed document's table): scripts and
//! schedulers written for the vendor's plugin keep working with appsnap.

use std::fmt;

use crate::cloud::ecs::{self, EcsError};
use crate::cloud::CloudError;

/// The vendor exit code an ECS error stands for, or `otherwise` when it is
/// just the calling step's own failure. The CLI and the job both use this, so
/// the same answer from ECS always ends with the same code.
pub fn ecs_outcome(e: &EcsError, otherwise: Outcome) -> Outcome {
    match e.code() {
        // ECS answers a bad key as `InvalidAccessKeyId` (no suffix),
        // `.NotFound` or `.Inactive` (a disabled key): all mean "no permission".
        Some(c)
            if ecs::is_permission_denied(c)
                || c == "InvalidAccessKeyId"
                || c.starts_with("InvalidAccessKeyId.") =>
        {
            Outcome::NoDisksOrPermission
        }
        Some(c) if c.starts_with("InvalidSecurityToken") => Outcome::NoRamRole,
        Some("QuotaExceed.Snapshot") => Outcome::QuotaExceeded,
        Some("IncorrectDiskStatus.CreatingSnapshot") => Outcome::PreviousSnapshotInProgress,
        _ if matches!(e, EcsError::Credentials(_)) => Outcome::NoRamRole,
        _ => otherwise,
    }
}

/// The vendor exit code for a cloud side that could not be set up or reached.
pub fn cloud_outcome(e: &CloudError) -> Outcome {
    if e.is_no_role() {
        return Outcome::NoRamRole;
    }
    match e {
        CloudError::Ecs(e) => ecs_outcome(e, Outcome::ConditionsNotMet),
        _ => Outcome::ConditionsNotMet,
    }
}

/// How a run, `check` or `plugin` ended; the discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Outcome {
    /// Snapshots created as expected.
    Success = 0,
    /// A condition is not met (disk category, name, network, no RAM role, OS).
    ConditionsNotMet = 1,
    /// The parameters (or the policy) are invalid.
    InvalidParameters = 2,
    /// No supported disks, or the role lacks snapshot permissions.
    NoDisksOrPermission = 3,
    /// The snapshot group could not be created.
    GroupCreateFailed = 4,
    /// The group is not in the expected state.
    GroupBadState = 5,
    /// Creating the group timed out.
    GroupCreateTimeout = 6,
    /// A snapshot in the group is not in the expected state.
    GroupSnapshotBadState = 7,
    /// Tags could not be added.
    TagFailed = 8,
    /// The pre-script failed or timed out.
    PreScriptFailed = 9,
    /// The post-script failed or timed out.
    PostScriptFailed = 10,
    /// I/O could not be suspended (FIFREEZE failed).
    FreezeFailed = 11,
    /// I/O could not be resumed (FITHAW failed).
    ThawFailed = 12,
    /// No RAM role is attached to the instance.
    NoRamRole = 13,
    /// The snapshot quota is exhausted.
    QuotaExceeded = 14,
    /// A snapshot is not in the expected state.
    SnapshotBadState = 15,
    /// A previous snapshot of these disks is still being created.
    PreviousSnapshotInProgress = 16,
    /// Anything else.
    Unknown = 255,
}

impl Outcome {
    /// Every outcome, in code order (for docs and tests).
    pub const ALL: [Outcome; 18] = [
        Outcome::Success,
        Outcome::ConditionsNotMet,
        Outcome::InvalidParameters,
        Outcome::NoDisksOrPermission,
        Outcome::GroupCreateFailed,
        Outcome::GroupBadState,
        Outcome::GroupCreateTimeout,
        Outcome::GroupSnapshotBadState,
        Outcome::TagFailed,
        Outcome::PreScriptFailed,
        Outcome::PostScriptFailed,
        Outcome::FreezeFailed,
        Outcome::ThawFailed,
        Outcome::NoRamRole,
        Outcome::QuotaExceeded,
        Outcome::SnapshotBadState,
        Outcome::PreviousSnapshotInProgress,
        Outcome::Unknown,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The outcome for an exit code, if it is one of the vendor's.
    pub fn from_code(code: u8) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.code() == code)
    }

    /// The vendor's description, used in the result line's `message`.
    pub fn message(self) -> &'static str {
        match self {
            Outcome::Success => "Finish whole Processes of Snapshot successfully",
            Outcome::ConditionsNotMet => "One or more conditions are not met",
            Outcome::InvalidParameters => "The type or number of the parameters is invalid",
            Outcome::NoDisksOrPermission => {
                "No supported disks are attached, or the RAM role has no permission for snapshot operations"
            }
            Outcome::GroupCreateFailed => "The snapshot-consistent group cannot be created",
            Outcome::GroupBadState => "The snapshot-consistent group is not in the expected state",
            Outcome::GroupCreateTimeout => "The request to create the snapshot-consistent group timed out",
            Outcome::GroupSnapshotBadState => {
                "A disk snapshot in the snapshot-consistent group is not in the expected state"
            }
            Outcome::TagFailed => "Tags cannot be added to the snapshot",
            Outcome::PreScriptFailed => "The prescript.sh script cannot be executed",
            Outcome::PostScriptFailed => "The postscript.sh script cannot be executed",
            Outcome::FreezeFailed => "I/O operations cannot be suspended",
            Outcome::ThawFailed => "I/O operations cannot be resumed",
            Outcome::NoRamRole => "No RAM role is attached to the instance",
            Outcome::QuotaExceeded => "The number of snapshots exceeded the upper limit",
            Outcome::SnapshotBadState => "The snapshot is not in the expected state",
            Outcome::PreviousSnapshotInProgress => {
                "The snapshot cannot be created because the previous snapshot is being created and the instant access feature is disabled"
            }
            Outcome::Unknown => "An unknown error occurred",
        }
    }

    /// The vendor's closing line: `[snapshotgroup="ssg-..."][message="..."]`.
    pub fn result_line(self, group_id: Option<&str>) -> String {
        format!(
            "[snapshotgroup=\"{}\"][message=\"{}\"]",
            group_id.unwrap_or(""),
            self.message()
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_vendor_table() {
        let codes: Vec<u8> = Outcome::ALL.iter().map(|o| o.code()).collect();
        let mut want: Vec<u8> = (0..=16).collect();
        want.push(255);
        assert_eq!(codes, want);
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_code(o.code()), Some(o));
        }
        assert_eq!(Outcome::from_code(17), None);
    }

    #[test]
    fn pre_and_post_script_are_distinct() {
        assert_eq!(Outcome::PreScriptFailed.code(), 9);
        assert_eq!(Outcome::PostScriptFailed.code(), 10);
        assert!(Outcome::PreScriptFailed.message().contains("prescript"));
        assert!(Outcome::PostScriptFailed.message().contains("postscript"));
    }

    #[test]
    fn result_line_matches_vendor_shape() {
        assert_eq!(
            Outcome::Success.result_line(Some("ssg-bp170v57ca9j01jb0001")),
            "[snapshotgroup=\"ssg-bp170v57ca9j01jb0001\"][message=\"Finish whole Processes of Snapshot successfully\"]"
        );
    }
}
