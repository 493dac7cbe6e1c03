//! Root lane: a real `systemd-journald`, started in a private mount
//! namespace (tmpfs over /run and /var/log/journal, so nothing reaches the
//! host's journal), receives appsnap's events. Asserted field by field from
//! `journalctl -o json`, plus: events logged while output is held (between
//! freeze and thaw) reach the journal only after the thaw, in order, and
//! nothing goes to stderr (exactly one copy of each line). Run by hand
//! (stderr not the journal), an event goes once to each.
//!
//! Needs root, `unshare`, `journalctl` and `/lib/systemd/systemd-journald`
//! (Debian package `systemd`; it need not be PID 1). Skips with a printed
//! reason otherwise. Bounded by `timeout 60`.
//!
//! The test re-executes its own binary inside the namespace as the emitter
//! (env `APPSNAP_JOURNALD_CHILD=1`), so the events come from the real
//! `appsnap::logging::init` choosing journald by itself.

#[path = "common/skip.rs"]
mod skip;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const CHILD_ENV: &str = "APPSNAP_JOURNALD_CHILD";
const IDENT: &str = "appsnap-journald-test";
const RUN_ID: &str = "5eed5eed5eed5eed";
const JOURNALD: &str = "/lib/systemd/systemd-journald";
const TEST_NAME: &str = "journald_captures_fields_and_holds_while_frozen";

#[test]
fn journald_captures_fields_and_holds_while_frozen() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("systemd") => return emit_events(),
        Ok("terminal") => return emit_from_a_terminal(),
        _ => {}
    }
    if let Some(why) = skip_reason() {
        skip::missing(&why);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let script = r#"
set -eu
mount -t tmpfs appsnap-test /run
mkdir -p /run/systemd /run/log
if [ -d /var/log/journal ]; then mount -t tmpfs appsnap-test /var/log/journal; fi
/lib/systemd/systemd-journald &
JP=$!
trap 'kill $JP 2>/dev/null || true; wait $JP 2>/dev/null || true' EXIT
for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
[ -S /run/systemd/journal/socket ] || { echo "journald socket never appeared" >&2; exit 3; }
: > "$WORK/child.stderr"
JS=$(stat -L -c '%d:%i' "$WORK/child.stderr")
set +e
env APPSNAP_JOURNALD_CHILD=systemd JOURNAL_STREAM="$JS" "$TEST_EXE" --exact "$TEST_NAME" --test-threads=1 \
    > "$WORK/child.stdout" 2>> "$WORK/child.stderr"
echo $? > "$WORK/child.rc"
# As if run by hand: stderr is not the journal (JOURNAL_STREAM unset).
env -u JOURNAL_STREAM APPSNAP_JOURNALD_CHILD=terminal "$TEST_EXE" --exact "$TEST_NAME" --test-threads=1 \
    > "$WORK/term.stdout" 2> "$WORK/term.stderr"
echo $? > "$WORK/term.rc"
set -e
query() {
  for d in /run/log/journal /var/log/journal; do
    [ -d "$d" ] && journalctl -q -D "$d" -o json SYSLOG_IDENTIFIER="$IDENT" 2>/dev/null || true
  done
}
for i in $(seq 100); do
  n=$(query | wc -l)
  [ "$n" -ge 7 ] && break
  sleep 0.1
done
query > "$WORK/journal.json"
"#;
    let out = Command::new("timeout")
        .args(["-k", "5", "60", "unshare", "-m", "--propagation", "private"])
        .args(["bash", "-c", script])
        .env("WORK", work.path())
        .env("TEST_EXE", std::env::current_exe().unwrap())
        .env("TEST_NAME", TEST_NAME)
        .env("IDENT", IDENT)
        .env_remove(CHILD_ENV)
        .output()
        .expect("run unshare");
    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap_or_default();
    assert!(
        out.status.success(),
        "namespace script failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read("child.rc").trim(),
        "0",
        "emitter failed:\n{}\n{}",
        read("child.stdout"),
        read("child.stderr")
    );
    assert!(
        read("child.stdout").contains("1 passed"),
        "{}",
        read("child.stdout")
    );
    assert_eq!(
        read("child.stderr"),
        "",
        "journald chosen: nothing may also go to stderr (it is the journal under systemd)"
    );

    assert_eq!(read("term.rc").trim(), "0", "{}", read("term.stdout"));
    let mut entries: Vec<Value> = read("journal.json")
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl JSON line"))
        .collect();
    // Run by hand (stderr not the journal): one copy in the journal, one on stderr.
    let (term, systemd): (Vec<Value>, Vec<Value>) = entries
        .drain(..)
        .partition(|e| e.get("APPSNAP_JOB").and_then(Value::as_str) == Some("by-hand"));
    let mut entries = systemd;
    assert_eq!(term.len(), 1, "{term:?}");
    assert_eq!(s(&term[0], "MESSAGE"), "run by hand");
    let term_err = read("term.stderr");
    assert_eq!(term_err.matches("run by hand").count(), 1, "{term_err}");
    entries.sort_by_key(seqnum);
    let msgs: Vec<&str> = entries.iter().map(|e| s(e, "MESSAGE")).collect();
    assert_eq!(
        msgs,
        [
            "pre-script finished",
            "marker: sent straight to the socket while output was held",
            "file systems frozen",
            "snapshot group accepted",
            "file systems thawed",
            "run finished",
        ],
        "held events arrive after the marker sent during the hold, in order"
    );
    let ours: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("APPSNAP_JOB").is_some())
        .collect();
    assert_eq!(ours.len(), 5);
    for e in &ours {
        assert_eq!(s(e, "APPSNAP_JOB"), "mysql");
        assert_eq!(s(e, "APPSNAP_RUN_ID"), RUN_ID);
        assert_eq!(s(e, "SYSLOG_IDENTIFIER"), IDENT);
        assert_eq!(s(e, "TARGET"), "journald_root");
        assert!(s(e, "CODE_FILE").ends_with("journald_root.rs"), "{e}");
        assert!(num(e, "CODE_LINE") > 0);
        let obj = e.as_object().unwrap();
        assert!(
            !obj.keys().any(|k| k.starts_with("F_")),
            "unprefixed names: {e}"
        );
    }
    let [pre, frozen, accepted, thawed, finished] = ours[..] else {
        unreachable!()
    };
    let phases: Vec<&str> = ours.iter().map(|e| s(e, "APPSNAP_PHASE")).collect();
    assert_eq!(
        phases,
        ["prescript", "freeze", "snapshot", "thaw", "record"]
    );
    assert_eq!(s(pre, "PRIORITY"), "5");
    assert!(pre.get("APPSNAP_SNAPSHOT_GROUP").is_none(), "not known yet");
    assert_eq!(s(accepted, "APPSNAP_SNAPSHOT_GROUP"), "ssg-test0001");
    assert_eq!(s(thawed, "APPSNAP_FROZEN_MS"), "42");
    assert_eq!(s(finished, "PRIORITY"), "4");
    assert_eq!(s(finished, "APPSNAP_SNAPSHOT_GROUP"), "ssg-test0001");
    assert_eq!(s(finished, "APPSNAP_CONSISTENCY"), "app");
    assert_eq!(s(finished, "APPSNAP_EXIT_CODE"), "0");
    assert_eq!(s(finished, "APPSNAP_FROZEN_MS"), "42");

    // Held events carry their real time, which is earlier than when the
    // journal received them (after the marker, i.e. after the thaw).
    let marker = &entries[1];
    let marker_rx = num(marker, "__REALTIME_TIMESTAMP");
    for held in [frozen, accepted] {
        let t = chrono::DateTime::parse_from_rfc3339(s(held, "APPSNAP_EVENT_TIME"))
            .expect("RFC 3339 event time");
        let t_us = t.timestamp_micros() as u64;
        assert!(t_us <= num(held, "__REALTIME_TIMESTAMP"), "{held}");
    }
    let frozen_t = chrono::DateTime::parse_from_rfc3339(s(frozen, "APPSNAP_EVENT_TIME")).unwrap();
    assert!(
        (frozen_t.timestamp_micros() as u64) < marker_rx,
        "the first held event was logged before the marker, yet received after it"
    );
    for not_held in [pre, thawed, finished] {
        assert!(not_held.get("APPSNAP_EVENT_TIME").is_none(), "{not_held}");
    }
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (mount namespace, tmpfs, journald)".into());
    }
    if !Path::new(JOURNALD).exists() {
        return Some(format!("{JOURNALD} is absent (Debian package `systemd`)"));
    }
    for tool in ["unshare", "journalctl", "timeout", "stat"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// As an operator at a terminal: the journal and stderr both get the event.
fn emit_from_a_terminal() {
    use appsnap::logging::{self, Chosen, LogConfig, LogFormat};
    let chosen = logging::init(&LogConfig {
        identifier: Some(IDENT.to_string()),
        filter: Some("info".to_string()),
        ..LogConfig::default()
    })
    .expect("logging init");
    assert_eq!(
        chosen,
        Chosen {
            journald: true,
            stderr: Some(LogFormat::Human)
        }
    );
    let span = logging::run_span("by-hand", RUN_ID);
    let _in_run = span.enter();
    logging::set_phase(&span, "preflight");
    tracing::info!("run by hand");
}

fn s<'a>(e: &'a Value, k: &str) -> &'a str {
    e.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {k} in {e}"))
}

/// The journal's sequence number, from the cursor's `i=` part (hex); the
/// JSON output of systemd 252 has no separate `__SEQNUM`.
fn seqnum(e: &Value) -> u64 {
    let cursor = s(e, "__CURSOR");
    let i = cursor
        .split(';')
        .find_map(|p| p.strip_prefix("i="))
        .unwrap_or_else(|| panic!("no seqnum in cursor {cursor}"));
    u64::from_str_radix(i, 16).expect("hex seqnum")
}

fn num(e: &Value, k: &str) -> u64 {
    s(e, k)
        .parse()
        .unwrap_or_else(|_| panic!("{k} not a number in {e}"))
}

/// The emitter, inside the namespace: what a job run logs, with a freeze
/// window in the middle.
fn emit_events() {
    use appsnap::logging::{self, field, Chosen, Destination, LogConfig};
    let chosen = logging::init(&LogConfig {
        destination: Destination::Auto,
        identifier: Some(IDENT.to_string()),
        filter: Some("info".to_string()),
        ..LogConfig::default()
    })
    .expect("logging init");
    assert_eq!(
        chosen,
        Chosen::JOURNALD,
        "JOURNAL_STREAM names stderr and the socket answers: journald only"
    );

    let span = logging::run_span("mysql", RUN_ID);
    let _in_run = span.enter();
    logging::set_phase(&span, "prescript");
    tracing::info!("pre-script finished");

    logging::set_phase(&span, "freeze");
    let hold = logging::hold();
    tracing::info!("file systems frozen");
    // Sent around the hold, straight to the socket: if held events had been
    // sent during the hold, they would precede it in the journal.
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let marker = format!(
        "MESSAGE=marker: sent straight to the socket while output was held\nSYSLOG_IDENTIFIER={IDENT}\n"
    );
    sock.send_to(marker.as_bytes(), logging::JOURNAL_SOCKET)
        .expect("send marker");
    logging::set_phase(&span, "snapshot");
    span.record(field::SNAPSHOT_GROUP, "ssg-test0001");
    tracing::info!("snapshot group accepted");
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(hold);

    logging::set_phase(&span, "thaw");
    span.record(field::FROZEN_MS, 42u64);
    tracing::info!(APPSNAP_FROZEN_MS = 42u64, "file systems thawed");
    logging::set_phase(&span, "record");
    span.record(field::CONSISTENCY, "app");
    span.record(field::EXIT_CODE, 0u8);
    tracing::warn!("run finished");
}
