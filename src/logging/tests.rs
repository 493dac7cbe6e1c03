//! Tests of the logging outputs through the public API (fake journal socket,
//! in-memory stderr).

use super::*;
use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};

use tracing::Subscriber;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    assert!(one(a, "CODE_FILE").ends_with("logging/tests.rs"));
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
