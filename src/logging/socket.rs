//! The journal socket: native-protocol datagrams sent with bounded waits,
//! drops counted and reported. Shared by the journald layer and the hold
//! (which writes what it kept once file systems thaw).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// The journald socket systemd listens on for native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The longest one event waits for a journal that does not accept
/// datagrams (its queue is full, e.g. it is stalled writing to a frozen
/// disk); then the event is dropped and counted, and later events do not
/// wait until the journal accepts one again. Logging never blocks a run
/// for longer than this.
pub const JOURNAL_SEND_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) struct JournalSocket {
    sock: UnixDatagram,
    pub(super) path: PathBuf,
    /// The last send timed out; do not wait again until one succeeds.
    stalled: bool,
    /// Events dropped since the journal last accepted one.
    dropped: u64,
}

impl JournalSocket {
    /// Sends one datagram without blocking for more than [`JOURNAL_SEND_WAIT`].
    pub(super) fn send(&mut self, d: &[u8]) {
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

/// Opens an unbound datagram socket and checks that `path` answers (an
/// empty datagram, as journald clients probe). `None`: no journal here.
pub(super) fn journal_socket(path: &Path) -> Option<JournalSocket> {
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

/// Appends one field in the native protocol: `NAME=value\n`, or the
/// length-prefixed binary form when the value has a newline.
pub(super) fn put_field(d: &mut Vec<u8>, name: &str, value: &str) {
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
