//! Where log events go, and holding them while file systems are frozen.
//!
//! * **journald** (native protocol, structured fields) whenever the journal
//!   socket answers.
//! * **stderr** as well, as human text or JSON lines (`--log-format`),
//!   unless stderr *is* the journal (`JOURNAL_STREAM` names stderr's device
//!   and inode: systemd started us), so each line reaches the journal
//!   exactly once while an operator at a terminal still sees the run.
//! * **stderr** only, when there is no journal.
//!
//! Every job event carries the fields in [`field`] (`APPSNAP_JOB`,
//! `APPSNAP_RUN_ID`, `APPSNAP_PHASE`, ...) under exactly those names: the
//! journald writer adds no prefix (`journalctl APPSNAP_JOB=mysql`).
//!
//! **Hold while frozen.** Between FIFREEZE and FITHAW nothing may be written
//! anywhere: the journal (or the file stderr points at) may live on a frozen
//! file system, and a blocked write on the thaw path would hang the machine.
//! [`hold`] returns a guard; while any guard lives, each event is formatted
//! as usual but kept in memory (bounded: [`HOLD_MAX_EVENTS`],
//! [`HOLD_MAX_BYTES`]), and dropping the last guard writes them out in order.
//! Held journald events gain `APPSNAP_EVENT_TIME` (their real time), since
//! the journal stamps them when they arrive.
//!
//! We write the journald native protocol ourselves rather than through
//! `tracing-journald`: that crate sends from inside its layer with no hook
//! to hold or redirect a datagram, and its socket path is a private
//! constant, so it could be neither held nor tested without root.
//!
//! One concern per file: `span` the run span and its fields, `init` the
//! destination decision and the subscriber, `hold` the output and the
//! in-memory hold used while frozen, `socket` the journal socket and the
//! native-protocol encoding, `journald` the layer that turns events into
//! datagrams.

mod hold;
mod init;
mod journald;
mod socket;
mod span;
#[cfg(test)]
mod tests;

pub use hold::{global_output, hold, Output, OutputHold, HOLD_MAX_BYTES, HOLD_MAX_EVENTS};
#[cfg(test)]
pub use init::filter_from;
pub use init::{
    build, choose, init, stderr_is_journal, Chosen, Destination, LogConfig, LogFormat,
    LoggingError, FILTER_ENV,
};
pub use journald::journal_field_name;
pub use socket::{JOURNAL_SEND_WAIT, JOURNAL_SOCKET};
pub use span::{field, run_span, set_phase};
