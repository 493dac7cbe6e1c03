//! Where events go (journald, stderr, both), decided once at start, and the
//! subscriber that sends them there.

use std::path::Path;
use std::sync::Arc;

use tracing::Subscriber;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use super::hold::{global_output, HeldStderr, Output};
use super::journald::JournaldLayer;
use super::socket::{journal_socket, JOURNAL_SOCKET};

/// The environment variable holding the filter (`info`, `appsnap=debug`, ...).
pub const FILTER_ENV: &str = "APPSNAP_LOG";

/// How stderr lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event (colour only on a terminal).
    #[default]
    Human,
    /// One JSON object per line, fields flattened, for log shippers.
    Json,
}

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Destination {
    /// journald if the socket answers, plus stderr unless stderr is the journal.
    #[default]
    Auto,
    /// journald only (stderr if the socket does not answer).
    Journald,
    /// stderr only, in the chosen [`LogFormat`].
    Stderr,
}

/// What [`init`] decided, for the daemon's first log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// Events go to journald (native protocol).
    pub journald: bool,
    /// Events go to stderr, in this format.
    pub stderr: Option<LogFormat>,
}

impl Chosen {
    /// journald only: what systemd-started processes get.
    pub const JOURNALD: Chosen = Chosen {
        journald: true,
        stderr: None,
    };

    /// stderr only, in `format`.
    pub fn stderr(format: LogFormat) -> Chosen {
        Chosen {
            journald: false,
            stderr: Some(format),
        }
    }
}

/// Everything [`init`] needs; `Default` is what the daemon wants.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// stderr format.
    pub format: LogFormat,
    /// Where to write.
    pub destination: Destination,
    /// Filter directives; `None`: `$APPSNAP_LOG`, else `info`.
    pub filter: Option<String>,
    /// `SYSLOG_IDENTIFIER` in the journal; `None`: `appsnap`.
    pub identifier: Option<String>,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter directives do not parse.
    #[error("invalid log filter {directives:?}: {message}")]
    Filter {
        /// What was given.
        directives: String,
        /// The parser's complaint.
        message: String,
    },
    /// Another subscriber was installed first (a bug: call `init` once).
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Does `JOURNAL_STREAM` (`"<dev>:<inode>"`) name the file stderr is?
/// systemd sets it when it connects stdout/stderr to the journal; a
/// redirected or inherited stderr no longer matches.
pub fn stderr_is_journal(journal_stream: Option<&str>, stderr_dev_ino: Option<(u64, u64)>) -> bool {
    let (Some(js), Some((dev, ino))) = (journal_stream, stderr_dev_ino) else {
        return false;
    };
    let Some((d, i)) = js.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// The decision [`init`] makes, as a pure function of what it observed.
pub fn choose(
    destination: Destination,
    format: LogFormat,
    socket_answers: bool,
    stderr_is_journal: bool,
) -> Chosen {
    match destination {
        _ if !socket_answers => Chosen::stderr(format),
        Destination::Stderr => Chosen::stderr(format),
        Destination::Journald => Chosen::JOURNALD,
        Destination::Auto if stderr_is_journal => Chosen::JOURNALD,
        Destination::Auto => Chosen {
            journald: true,
            stderr: Some(format),
        },
    }
}

/// stderr's device and inode (`fstat(2)`), to compare with `JOURNAL_STREAM`.
fn stderr_dev_ino() -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `struct stat` into the buffer when it
    // returns 0; fd 2 is only inspected, never closed.
    let rc = unsafe { libc::fstat(2, st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// Installs the global subscriber per `config`; call once, early in `main`.
/// Returns what it chose so the caller can say so in its first log line.
pub fn init(config: &LogConfig) -> Result<Chosen, LoggingError> {
    let socket = match config.destination {
        Destination::Stderr => None,
        _ => journal_socket(Path::new(JOURNAL_SOCKET)),
    };
    let is_journal = stderr_is_journal(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        stderr_dev_ino(),
    );
    let chosen = choose(
        config.destination,
        config.format,
        socket.is_some(),
        is_journal,
    );
    let output = global_output();
    output.set_journal(if chosen.journald { socket } else { None });
    let ansi = chosen.stderr == Some(LogFormat::Human) && stderr_is_tty();
    let filter = filter(config.filter.as_deref())?;
    let subscriber = build(chosen, ansi, config.identifier.as_deref(), filter, output);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadySet)?;
    Ok(chosen)
}

/// The filter from the config, else `$APPSNAP_LOG`, else `info`.
fn filter(directives: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let text = match directives {
        Some(d) => d.to_string(),
        None => std::env::var(FILTER_ENV).unwrap_or_else(|_| "info".to_string()),
    };
    EnvFilter::try_new(&text).map_err(|e| LoggingError::Filter {
        directives: text,
        message: e.to_string(),
    })
}

fn stderr_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Builds the subscriber for a decided destination, writing through
/// `output` (tests pass their own output and use `with_default`).
pub fn build(
    chosen: Chosen,
    ansi: bool,
    identifier: Option<&str>,
    filter: EnvFilter,
    output: Arc<Output>,
) -> impl Subscriber + Send + Sync {
    let journald = chosen.journald.then(|| JournaldLayer {
        identifier: identifier.unwrap_or("appsnap").to_string(),
        output: output.clone(),
    });
    let human = (chosen.stderr == Some(LogFormat::Human)).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(HeldStderr(output.clone()))
    });
    let json = (chosen.stderr == Some(LogFormat::Json)).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(HeldStderr(output.clone()))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(human)
        .with(json)
}

#[cfg(test)]
/// The filter a test or embedding caller passes to [`build`].
pub fn filter_from(directives: &str) -> Result<EnvFilter, LoggingError> {
    filter(Some(directives))
}
