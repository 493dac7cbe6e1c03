//! The span a job run logs inside, and the field names its events carry.

/// The structured field names every job event carries, exactly as they
/// appear in the journal (use them as tracing field names).
pub mod field {
    /// The job's name.
    pub const JOB: &str = "APPSNAP_JOB";
    /// One run's ID (from the scheduler's `RunRequest::run_id`).
    pub const RUN_ID: &str = "APPSNAP_RUN_ID";
    /// The state machine phase (`prescript`, `freeze`, `snapshot`, ...).
    pub const PHASE: &str = "APPSNAP_PHASE";
    /// The snapshot group ID (`ssg-...`), once ECS has returned it.
    pub const SNAPSHOT_GROUP: &str = "APPSNAP_SNAPSHOT_GROUP";
    /// `app`, `fs`, `crash` or `none`.
    pub const CONSISTENCY: &str = "APPSNAP_CONSISTENCY";
    /// The vendor exit code of the run.
    pub const EXIT_CODE: &str = "APPSNAP_EXIT_CODE";
    /// How long I/O was suspended, milliseconds.
    pub const FROZEN_MS: &str = "APPSNAP_FROZEN_MS";
    /// The real time of an event that was held during a freeze (RFC 3339).
    pub const EVENT_TIME: &str = "APPSNAP_EVENT_TIME";
}

/// The span a job run logs inside: every event in it carries the job and
/// run ID, and whatever has been [`record`](tracing::Span::record)ed on it
/// since (phase, group, consistency, exit code, frozen ms). Set the phase
/// with [`set_phase`] as the run moves on.
pub fn run_span(job: &str, run_id: &str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "run",
        APPSNAP_JOB = job,
        APPSNAP_RUN_ID = run_id,
        APPSNAP_PHASE = Empty,
        APPSNAP_SNAPSHOT_GROUP = Empty,
        APPSNAP_CONSISTENCY = Empty,
        APPSNAP_EXIT_CODE = Empty,
        APPSNAP_FROZEN_MS = Empty,
    )
}

/// Records the run's current phase on its span (events after this carry it).
pub fn set_phase(span: &tracing::Span, phase: &str) {
    span.record(field::PHASE, phase);
}
