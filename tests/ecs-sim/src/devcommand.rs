//! `[restore] attach_command` / `detach_command`: instead of a loop device
//! and a by-id link on the emulator's own host, a command makes a created
//! disk appear where the client under test runs (the VM lane hot-plugs the
//! image into its QEMU guest, so the guest's udev names it by serial). The
//! emulator only runs the command, bounded, and reports how it ended.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of the command's stderr an error quotes (its tail).
const STDERR_TAIL: usize = 600;

/// Runs `argv` + `image serial disk_id`, killed after `timeout`. `Ok` only
/// for exit status 0; the error names the program and says why (status or
/// timeout), with the tail of its stderr.
pub fn run(
    argv: &[String],
    image: &Path,
    serial: &str,
    disk_id: &str,
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .arg(image)
        .arg(serial)
        .arg(disk_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: cannot start: {e}"))?;
    // Read stderr on the side: a chatty command must not block on a full pipe.
    let (tx, rx) = mpsc::channel();
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{program}: waiting for it: {e}")),
        }
    };
    // A grandchild may hold the pipe open: do not wait for it long.
    let stderr = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    let text = String::from_utf8_lossy(&stderr);
    let text = text.trim();
    let tail: String = {
        let chars: Vec<char> = text.chars().collect();
        chars[chars.len().saturating_sub(STDERR_TAIL)..]
            .iter()
            .collect()
    };
    let why = match status {
        Some(st) if st.success() => return Ok(()),
        Some(st) => format!("{program} {disk_id}: exited with {st}"),
        None => format!(
            "{program} {disk_id}: timed out after {} ms (killed)",
            timeout.as_millis()
        ),
    };
    if tail.is_empty() {
        Err(why)
    } else {
        Err(format!("{why}: {tail}"))
    }
}
