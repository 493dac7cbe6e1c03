//! The process's log output and the in-memory hold used while file systems
//! are frozen: held events are kept (bounded) and written in order when the
//! last hold ends.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use super::socket::{journal_socket, put_field, JournalSocket};
use super::span::field;

/// At most this many events are held while frozen; later ones are counted and dropped.
pub const HOLD_MAX_EVENTS: usize = 10_000;
/// At most this many bytes of formatted events are held while frozen.
pub const HOLD_MAX_BYTES: usize = 4 << 20;

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

/// One formatted event waiting for (or going to) its destination.
pub(super) enum Pending {
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

/// The process-wide output that `logging::init` wires and [`hold`] holds.
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

    #[cfg(test)]
    /// Whether a journal socket is connected (tests check the probe worked).
    pub fn has_journal(&self) -> bool {
        lock(&self.inner).journal.is_some()
    }

    pub(super) fn set_journal(&self, journal: Option<JournalSocket>) {
        lock(&self.inner).journal = journal;
    }

    /// Starts holding (nests: output resumes when the last hold is dropped).
    pub fn hold(self: &Arc<Self>) -> OutputHold {
        lock(&self.inner).holds += 1;
        OutputHold {
            output: self.clone(),
        }
    }

    #[cfg(test)]
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

    pub(super) fn emit(&self, p: Pending) {
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
pub(super) struct HeldStderr(pub(super) Arc<Output>);

/// One event's formatted bytes on their way to the output.
pub(super) struct EventBuf {
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
