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

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// The journald socket systemd listens on for native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The environment variable holding the filter (`info`, `appsnap=debug`, ...).
pub const FILTER_ENV: &str = "APPSNAP_LOG";

/// At most this many events are held while frozen; later ones are counted and dropped.
pub const HOLD_MAX_EVENTS: usize = 10_000;
/// At most this many bytes of formatted events are held while frozen.
pub const HOLD_MAX_BYTES: usize = 4 << 20;

/// The longest one event waits for a journal that does not accept
/// datagrams (its queue is full, e.g. it is stalled writing to a frozen
/// disk); then the event is dropped and counted, and later events do not
/// wait until the journal accepts one again. Logging never blocks a run
/// for longer than this.
pub const JOURNAL_SEND_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

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

/// Opens an unbound datagram socket and checks that `path` answers (an
/// empty datagram, as journald clients probe). `None`: no journal here.
fn journal_socket(path: &Path) -> Option<JournalSocket> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.send_to(&[], path).ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(JournalSocket {
        sock,
        path: path.to_path_buf(),
        stalled: false,
        dropped: 0,
    })
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

/// The filter a test or embedding caller passes to [`build`].
pub fn filter_from(directives: &str) -> Result<EnvFilter, LoggingError> {
    filter(Some(directives))
}

// ---------------------------------------------------------------- output

/// The process's log output: the journal socket and/or stderr, behind the
/// hold. One per process ([`global_output`]); tests make their own.
pub struct Output {
    inner: Mutex<OutputInner>,
}

struct OutputInner {
    holds: usize,
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    dropped: u64,
    journal: Option<JournalSocket>,
    stderr: Box<dyn std::io::Write + Send>,
}

struct JournalSocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// The last send timed out; do not wait again until one succeeds.
    stalled: bool,
    /// Events dropped since the journal last accepted one.
    dropped: u64,
}

impl JournalSocket {
    /// Sends one datagram without blocking for more than [`JOURNAL_SEND_WAIT`].
    fn send(&mut self, d: &[u8]) {
        const STEP: std::time::Duration = std::time::Duration::from_millis(5);
        let mut waited = std::time::Duration::ZERO;
        loop {
            match self.sock.send_to(d, &self.path) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.stalled || waited >= JOURNAL_SEND_WAIT {
                        self.stalled = true;
                        self.dropped += 1;
                        return;
                    }
                    std::thread::sleep(STEP);
                    waited += STEP;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let mut s = Vec::new();
                    put_field(&mut s, "PRIORITY", "4");
                    put_field(
                        &mut s,
                        "MESSAGE",
                        &format!(
                            "appsnap: a log event of {} bytes was too large for the journal socket and was dropped",
                            d.len()
                        ),
                    );
                    let _ = self.sock.send_to(&s, &self.path);
                    return;
                }
                // Nowhere left to report it (journald restarting, ...).
                Err(_) => return,
            }
        }
        self.stalled = false;
        if self.dropped > 0 {
            let mut s = Vec::new();
            put_field(&mut s, "PRIORITY", "4");
            put_field(
                &mut s,
                "MESSAGE",
                &format!(
                    "appsnap: {} log events were dropped because the journal did not accept them",
                    self.dropped
                ),
            );
            if self.sock.send_to(&s, &self.path).is_ok() {
                self.dropped = 0;
            }
        }
    }
}

/// One formatted event waiting for (or going to) its destination.
enum Pending {
    Journal(Vec<u8>),
    Stderr(Vec<u8>),
}

impl Pending {
    fn len(&self) -> usize {
        match self {
            Pending::Journal(b) | Pending::Stderr(b) => b.len(),
        }
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = lock(&self.inner);
        f.debug_struct("Output")
            .field("holds", &g.holds)
            .field("queued", &g.queue.len())
            .field("journal", &g.journal.as_ref().map(|j| j.path.clone()))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process-wide output that [`init`] wires and [`hold`] holds.
pub fn global_output() -> Arc<Output> {
    static GLOBAL: OnceLock<Arc<Output>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| Output::new(Box::new(std::io::stderr()), None))
        .clone()
}

/// Holds the process's log output until the guard is dropped; take it just
/// before FIFREEZE and drop it right after FITHAW.
pub fn hold() -> OutputHold {
    global_output().hold()
}

/// While it lives, nothing is written by the [`Output`] it came from;
/// dropping the last one writes everything held, in order.
#[must_use = "the hold ends when this guard is dropped"]
#[derive(Debug)]
pub struct OutputHold {
    output: Arc<Output>,
}

impl Drop for OutputHold {
    fn drop(&mut self) {
        self.output.release();
    }
}

impl Output {
    /// An output writing stderr lines to `stderr` and journal datagrams to
    /// the socket at `journal` (if it answers).
    pub fn new(stderr: Box<dyn std::io::Write + Send>, journal: Option<&Path>) -> Arc<Output> {
        Arc::new(Output {
            inner: Mutex::new(OutputInner {
                holds: 0,
                queue: VecDeque::new(),
                queued_bytes: 0,
                dropped: 0,
                journal: journal.and_then(journal_socket),
                stderr,
            }),
        })
    }

    /// Whether a journal socket is connected (tests check the probe worked).
    pub fn has_journal(&self) -> bool {
        lock(&self.inner).journal.is_some()
    }

    fn set_journal(&self, journal: Option<JournalSocket>) {
        lock(&self.inner).journal = journal;
    }

    /// Starts holding (nests: output resumes when the last hold is dropped).
    pub fn hold(self: &Arc<Self>) -> OutputHold {
        lock(&self.inner).holds += 1;
        OutputHold {
            output: self.clone(),
        }
    }

    /// Whether output is being held now.
    pub fn is_held(&self) -> bool {
        lock(&self.inner).holds > 0
    }

    fn release(&self) {
        let mut g = lock(&self.inner);
        g.holds = g.holds.saturating_sub(1);
        if g.holds > 0 {
            return;
        }
        // Still under the lock: events logged concurrently wait and land
        // after the held ones, so order is kept.
        while let Some(p) = g.queue.pop_front() {
            g.write(&p);
        }
        g.queued_bytes = 0;
        if g.dropped > 0 {
            let msg = format!(
                "appsnap: {} log events were dropped while file systems were frozen (limit {} events / {} bytes)",
                g.dropped, HOLD_MAX_EVENTS, HOLD_MAX_BYTES
            );
            g.dropped = 0;
            let p = if g.journal.is_some() {
                let mut d = Vec::new();
                put_field(&mut d, "PRIORITY", "4");
                put_field(&mut d, "MESSAGE", &msg);
                Pending::Journal(d)
            } else {
                Pending::Stderr(format!("{msg}\n").into_bytes())
            };
            g.write(&p);
        }
    }

    fn emit(&self, p: Pending) {
        let mut g = lock(&self.inner);
        if g.holds == 0 {
            g.write(&p);
            return;
        }
        if g.queue.len() >= HOLD_MAX_EVENTS || g.queued_bytes + p.len() > HOLD_MAX_BYTES {
            g.dropped += 1;
            return;
        }
        let p = match p {
            Pending::Journal(mut d) => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                put_field(&mut d, field::EVENT_TIME, &now);
                Pending::Journal(d)
            }
            other => other,
        };
        g.queued_bytes += p.len();
        g.queue.push_back(p);
    }
}

impl OutputInner {
    /// Writes one event; errors are ignored because there is nowhere left
    /// to report them (as every logger does).
    fn write(&mut self, p: &Pending) {
        match p {
            Pending::Stderr(b) => {
                let _ = self.stderr.write_all(b);
                let _ = self.stderr.flush();
            }
            Pending::Journal(d) => {
                if let Some(j) = &mut self.journal {
                    j.send(d);
                }
            }
        }
    }
}

/// `MakeWriter` for the fmt layers: each event is formatted into a buffer
/// and handed to the [`Output`] whole, so a held event is one unit.
struct HeldStderr(Arc<Output>);

/// One event's formatted bytes on their way to the output.
struct EventBuf {
    buf: Vec<u8>,
    output: Arc<Output>,
}

impl std::io::Write for EventBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuf {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.output
                .emit(Pending::Stderr(std::mem::take(&mut self.buf)));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for HeldStderr {
    type Writer = EventBuf;
    fn make_writer(&'a self) -> EventBuf {
        EventBuf {
            buf: Vec::new(),
            output: self.0.clone(),
        }
    }
}

// --------------------------------------------------------------- journald

/// Formats events as journald native-protocol datagrams (fields named as
/// written, upper-cased; span fields included, innermost wins).
struct JournaldLayer {
    identifier: String,
    output: Arc<Output>,
}

/// A span's fields, kept in its extensions for the events inside it.
#[derive(Default)]
struct SpanFields(Vec<(String, String)>);

impl<S> Layer<S> for JournaldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut v = FieldVisitor::default();
        attrs.record(&mut v);
        span.extensions_mut().insert(SpanFields(v.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut v = FieldVisitor::default();
        values.record(&mut v);
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanFields>() {
            for (k, val) in v.fields {
                match fields.0.iter_mut().find(|(n, _)| *n == k) {
                    Some(slot) => slot.1 = val,
                    None => fields.0.push((k, val)),
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields: Vec<(String, String)> = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.0.iter().cloned());
                }
            }
        }
        let mut v = FieldVisitor::default();
        event.record(&mut v);
        fields.extend(v.fields);
        let meta = event.metadata();
        let mut d = Vec::with_capacity(256);
        put_field(&mut d, "PRIORITY", priority(*meta.level()));
        put_field(&mut d, "MESSAGE", v.message.as_deref().unwrap_or(""));
        put_field(&mut d, "SYSLOG_IDENTIFIER", &self.identifier);
        put_field(&mut d, "TARGET", meta.target());
        if let Some(file) = meta.file() {
            put_field(&mut d, "CODE_FILE", file);
        }
        if let Some(line) = meta.line() {
            put_field(&mut d, "CODE_LINE", &line.to_string());
        }
        // Innermost (last) value wins, so each name appears once.
        for (i, (name, value)) in fields.iter().enumerate() {
            if fields[i + 1..].iter().any(|(n, _)| n == name) {
                continue;
            }
            put_field(&mut d, name, value);
        }
        self.output.emit(Pending::Journal(d));
    }
}

/// tracing levels as syslog priorities (the mapping tracing-journald uses).
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "5",
        Level::DEBUG => "6",
        Level::TRACE => "7",
    }
}

/// A journal field name from a tracing one: upper-case ASCII letters,
/// digits and `_`, not starting with `_` (journald reserves those) or a digit.
pub fn journal_field_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .skip_while(|c| *c == '_' || c.is_ascii_digit())
        .collect();
    if s.is_empty() {
        "FIELD".to_string()
    } else {
        s
    }
}

/// Appends one field in the native protocol: `NAME=value\n`, or the
/// length-prefixed binary form when the value has a newline.
fn put_field(d: &mut Vec<u8>, name: &str, value: &str) {
    d.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        d.push(b'\n');
        d.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        d.push(b'=');
    }
    d.extend_from_slice(value.as_bytes());
    d.push(b'\n');
}

/// Collects an event's or span's fields as journal names and text values.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(String, String)>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.fields.push((journal_field_name(field.name()), value));
        }
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.to_string());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = value.to_string();
        let mut src = value.source();
        while let Some(e) = src {
            let _ = write!(s, ": {e}");
            src = e.source();
        }
        self.put(field, s);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).expect("utf-8 log")
        }
    }

    /// Parses one native-protocol datagram into name -> values.
    fn parse(mut d: &[u8]) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while !d.is_empty() {
            let nl = d.iter().position(|b| *b == b'\n').expect("newline");
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                let name = String::from_utf8(line[..eq].to_vec()).unwrap();
                let val = String::from_utf8(line[eq + 1..].to_vec()).unwrap();
                out.entry(name).or_default().push(val);
                d = &d[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let rest = &d[nl + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                let val = String::from_utf8(rest[8..8 + len].to_vec()).unwrap();
                assert_eq!(rest[8 + len], b'\n');
                out.entry(name).or_default().push(val);
                d = &rest[9 + len..];
            }
        }
        out
    }

    struct FakeJournal {
        _dir: tempfile::TempDir,
        sock: UnixDatagram,
        output: Arc<Output>,
        stderr: SharedBuf,
    }

    impl FakeJournal {
        fn new() -> FakeJournal {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("socket");
            let sock = UnixDatagram::bind(&path).unwrap();
            let stderr = SharedBuf::default();
            let output = Output::new(Box::new(stderr.clone()), Some(&path));
            assert!(output.has_journal());
            let mut probe = [0u8; 16];
            assert_eq!(sock.recv(&mut probe).unwrap(), 0, "the probe is empty");
            sock.set_nonblocking(true).unwrap();
            FakeJournal {
                _dir: dir,
                sock,
                output,
                stderr,
            }
        }
        fn subscriber(&self) -> impl Subscriber + Send + Sync {
            build(
                Chosen::JOURNALD,
                false,
                Some("appsnap-test"),
                filter_from("debug").unwrap(),
                self.output.clone(),
            )
        }
        fn drain(&self) -> Vec<BTreeMap<String, Vec<String>>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match self.sock.recv(&mut buf) {
                    Ok(n) => out.push(parse(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    fn one<'a>(m: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
        let v = m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
        assert_eq!(v.len(), 1, "{k} appears once: {v:?}");
        &v[0]
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(stderr_is_journal(Some("8:12345"), Some((8, 12345))));
        assert!(!stderr_is_journal(Some("8:12345"), Some((8, 12346))));
        assert!(!stderr_is_journal(Some("garbage"), Some((8, 12345))));
        assert!(!stderr_is_journal(None, Some((8, 12345))));
        assert!(!stderr_is_journal(Some("8:12345"), None));
    }

    #[test]
    fn destination_choice_never_doubles_lines() {
        use Destination as D;
        let h = LogFormat::Human;
        // Under systemd (stderr is the journal) with a socket: journald only.
        assert_eq!(choose(D::Auto, h, true, true), Chosen::JOURNALD);
        // stderr elsewhere (terminal, file): the journal and stderr, one copy each.
        assert_eq!(
            choose(D::Auto, h, true, false),
            Chosen {
                journald: true,
                stderr: Some(h)
            }
        );
        // No journal socket: stderr, even if asked for journald.
        assert_eq!(choose(D::Auto, h, false, true), Chosen::stderr(h));
        assert_eq!(choose(D::Journald, h, false, false), Chosen::stderr(h));
        assert_eq!(choose(D::Journald, h, true, false), Chosen::JOURNALD);
        assert_eq!(
            choose(D::Stderr, LogFormat::Json, true, true),
            Chosen::stderr(LogFormat::Json)
        );
    }

    #[test]
    fn field_names_are_journal_safe() {
        assert_eq!(journal_field_name("APPSNAP_JOB"), "APPSNAP_JOB");
        assert_eq!(journal_field_name("run.id"), "RUN_ID");
        assert_eq!(journal_field_name("_secret"), "SECRET");
        assert_eq!(journal_field_name("9lives"), "LIVES");
        assert_eq!(journal_field_name("__"), "FIELD");
    }

    #[test]
    fn journald_datagrams_carry_the_job_fields_unprefixed() {
        let j = FakeJournal::new();
        tracing::subscriber::with_default(j.subscriber(), || {
            let span = run_span("mysql", "00c0ffee00c0ffee");
            let _e = span.enter();
            set_phase(&span, "snapshot");
            span.record(field::SNAPSHOT_GROUP, "ssg-123");
            span.record(field::CONSISTENCY, "app");
            span.record(field::FROZEN_MS, 250u64);
            tracing::info!("snapshot group accepted");
            // An event's own field overrides the span's, never doubles it.
            tracing::warn!(
                APPSNAP_PHASE = "postscript",
                APPSNAP_EXIT_CODE = 10,
                "post-script failed:\nexit 3"
            );
        });
        let got = j.drain();
        assert_eq!(got.len(), 2, "{got:?}");
        let a = &got[0];
        assert_eq!(one(a, "MESSAGE"), "snapshot group accepted");
        assert_eq!(one(a, "PRIORITY"), "5");
        assert_eq!(one(a, "SYSLOG_IDENTIFIER"), "appsnap-test");
        assert_eq!(one(a, "APPSNAP_JOB"), "mysql");
        assert_eq!(one(a, "APPSNAP_RUN_ID"), "00c0ffee00c0ffee");
        assert_eq!(one(a, "APPSNAP_PHASE"), "snapshot");
        assert_eq!(one(a, "APPSNAP_SNAPSHOT_GROUP"), "ssg-123");
        assert_eq!(one(a, "APPSNAP_CONSISTENCY"), "app");
        assert_eq!(one(a, "APPSNAP_FROZEN_MS"), "250");
        assert_eq!(one(a, "TARGET"), "appsnap::logging::tests");
        assert!(one(a, "CODE_FILE").ends_with("logging.rs"));
        assert!(!a.keys().any(|k| k.starts_with("F_")), "no prefix: {a:?}");
        let b = &got[1];
        assert_eq!(one(b, "PRIORITY"), "4");
        assert_eq!(one(b, "APPSNAP_PHASE"), "postscript");
        assert_eq!(one(b, "APPSNAP_EXIT_CODE"), "10");
        assert_eq!(one(b, "MESSAGE"), "post-script failed:\nexit 3");
        assert!(
            j.stderr.text().is_empty(),
            "journald chosen: nothing on stderr"
        );
    }

    #[test]
    fn journal_and_terminal_each_get_one_copy() {
        let j = FakeJournal::new();
        let sub = build(
            Chosen {
                journald: true,
                stderr: Some(LogFormat::Human),
            },
            false,
            None,
            filter_from("info").unwrap(),
            j.output.clone(),
        );
        tracing::subscriber::with_default(sub, || {
            let hold = j.output.hold();
            tracing::info!("held in both");
            assert!(j.stderr.text().is_empty());
            drop(hold);
            tracing::info!("written to both");
        });
        let msgs: Vec<_> = j
            .drain()
            .iter()
            .map(|m| one(m, "MESSAGE").to_string())
            .collect();
        assert_eq!(msgs, ["held in both", "written to both"]);
        let text = j.stderr.text();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.find("held in both") < text.find("written to both"));
    }

    #[test]
    fn held_journald_events_wait_for_the_thaw_and_keep_order() {
        let j = FakeJournal::new();
        tracing::subscriber::with_default(j.subscriber(), || {
            tracing::info!("before");
            let hold = j.output.hold();
            assert!(j.output.is_held());
            tracing::info!(APPSNAP_PHASE = "freeze", "frozen");
            tracing::info!(APPSNAP_PHASE = "snapshot", "group requested");
            assert_eq!(
                j.drain()
                    .iter()
                    .map(|m| one(m, "MESSAGE").to_string())
                    .collect::<Vec<_>>(),
                ["before"],
                "nothing sent while held"
            );
            drop(hold);
            tracing::info!("after");
        });
        let got = j.drain();
        let msgs: Vec<_> = got.iter().map(|m| one(m, "MESSAGE")).collect();
        assert_eq!(msgs, ["frozen", "group requested", "after"]);
        assert!(got[0].contains_key(field::EVENT_TIME));
        assert!(got[1].contains_key(field::EVENT_TIME));
        assert!(!got[2].contains_key(field::EVENT_TIME), "only held events");
    }

    #[test]
    fn a_journal_that_stops_reading_costs_a_bounded_wait_then_drops_and_says_so() {
        let j = FakeJournal::new();
        let total = 2000;
        tracing::subscriber::with_default(j.subscriber(), || {
            // Nobody reads meanwhile: the socket queue fills, sends would block.
            for i in 0..total {
                tracing::info!(i, "flood");
            }
        });
        let delivered = j.drain().len();
        assert!(delivered < total, "the queue must have filled: {delivered}");
        tracing::subscriber::with_default(j.subscriber(), || tracing::info!("recovered"));
        let got = j.drain();
        let msgs: Vec<_> = got.iter().map(|m| one(m, "MESSAGE").to_string()).collect();
        assert_eq!(msgs[0], "recovered");
        assert_eq!(
            msgs[1],
            format!(
                "appsnap: {} log events were dropped because the journal did not accept them",
                total - delivered
            )
        );
    }

    fn stderr_output(format: LogFormat) -> (SharedBuf, Arc<Output>, impl Subscriber + Send + Sync) {
        let buf = SharedBuf::default();
        let output = Output::new(Box::new(buf.clone()), None);
        let sub = build(
            Chosen::stderr(format),
            false,
            None,
            filter_from("info").unwrap(),
            output.clone(),
        );
        (buf, output, sub)
    }

    /// On a terminal stderr gets colours: building that subscriber panicked
    /// when tracing-subscriber lacked its `ansi` feature, so every command
    /// run by hand in a terminal died (found by the VM lane: ttyS1 is a tty).
    #[test]
    fn human_stderr_on_a_terminal_colours_instead_of_panicking() {
        let buf = SharedBuf::default();
        let output = Output::new(Box::new(buf.clone()), None);
        let sub = build(
            Chosen::stderr(LogFormat::Human),
            true,
            None,
            filter_from("info").unwrap(),
            output,
        );
        tracing::subscriber::with_default(sub, || tracing::warn!("coloured"));
        let text = buf.text();
        assert!(text.contains("coloured"), "{text}");
        assert!(text.contains("\x1b["), "ANSI colour codes: {text:?}");
    }

    #[test]
    fn held_stderr_lines_wait_for_the_thaw_and_keep_order() {
        let (buf, output, sub) = stderr_output(LogFormat::Human);
        tracing::subscriber::with_default(sub, || {
            let outer = output.hold();
            let inner = output.hold();
            tracing::info!("one");
            tracing::warn!("two");
            drop(inner);
            tracing::info!("three");
            assert!(buf.text().is_empty(), "nested holds: still held");
            drop(outer);
            tracing::info!("four");
        });
        let text = buf.text();
        let order: Vec<_> = ["one", "two", "three", "four"]
            .iter()
            .map(|w| text.find(w).unwrap_or_else(|| panic!("{w} in {text}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn hold_is_bounded_and_says_what_it_dropped() {
        let (buf, output, sub) = stderr_output(LogFormat::Human);
        tracing::subscriber::with_default(sub, || {
            let hold = output.hold();
            for i in 0..HOLD_MAX_EVENTS + 5 {
                tracing::info!(i, "held");
            }
            drop(hold);
        });
        let text = buf.text();
        assert_eq!(text.lines().count(), HOLD_MAX_EVENTS + 1);
        let last = text.lines().last().unwrap();
        assert!(last.contains("5 log events were dropped"), "{last}");
    }

    #[test]
    fn json_lines_are_flat_objects_with_the_run_fields() {
        let (buf, _output, sub) = stderr_output(LogFormat::Json);
        tracing::subscriber::with_default(sub, || {
            let span = run_span("web", "0123456789abcdef");
            let _e = span.enter();
            set_phase(&span, "prescript");
            tracing::info!(APPSNAP_EXIT_CODE = 0, "done");
        });
        let line = buf.text();
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        assert_eq!(v["message"], "done");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["APPSNAP_EXIT_CODE"], 0);
        assert_eq!(v["spans"][0]["APPSNAP_JOB"], "web");
        assert_eq!(v["spans"][0]["APPSNAP_RUN_ID"], "0123456789abcdef");
        assert_eq!(v["spans"][0]["APPSNAP_PHASE"], "prescript");
    }
}
