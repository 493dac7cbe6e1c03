//! What the alert tests talk to: a local webhook receiver that checks
//! `X-Appsnap-Signature` and records events (or hangs, on request), and
//! Debian's `prometheus-node-exporter` reading a test's textfile directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The signature header matched HMAC-SHA256(key, body).
    pub signature_ok: bool,
    pub at: Instant,
    /// When it arrived, on the wall clock (to compare with appsnap's records).
    pub wall: chrono::DateTime<chrono::Utc>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on 127.0.0.1 (threads, no runtime).
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    hang: Arc<AtomicBool>,
    fail_next: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers 200 after recording, or never answers while [`Receiver::hang`] is set.
    pub fn start(key: &[u8]) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        l.set_nonblocking(true).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let hang = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let fail_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let key = key.to_vec();
        let (g, h, s, f) = (got.clone(), hang.clone(), stop.clone(), fail_next.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (g, h, f, key) = (g.clone(), h.clone(), f.clone(), key.clone());
                        std::thread::spawn(move || serve(c, &key, &g, &h, &f));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            url,
            got,
            hang,
            fail_next,
            stop,
        }
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::Relaxed);
    }

    /// Stop answering (requests are still recorded, then held open).
    pub fn hang(&self, on: bool) {
        self.hang.store(on, Ordering::Relaxed);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The events received so far (their JSON bodies).
    pub fn events(&self) -> Vec<Value> {
        self.received().iter().map(Received::json).collect()
    }

    /// Waits (bounded) until `pred` holds over the events.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let until = Instant::now() + limit;
        loop {
            let ev = self.events();
            if pred(&ev) || Instant::now() > until {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    c: TcpStream,
    key: &[u8],
    got: &Mutex<Vec<Received>>,
    hang: &AtomicBool,
    fail_next: &std::sync::atomic::AtomicUsize,
) {
    c.set_nonblocking(false).ok();
    c.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(&body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let signature_ok = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("x-appsnap-signature") && *v == want);
    got.lock().unwrap().push(Received {
        path,
        headers,
        body,
        signature_ok,
        at: Instant::now(),
        wall: chrono::Utc::now(),
    });
    if hang.load(Ordering::Relaxed) {
        // Hold the connection without answering until the client gives up.
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let mut c = c;
    let failing = fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        let _ = c.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy");
        return;
    }
    let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
}

/// Why node_exporter tests cannot run here, if they cannot.
pub fn node_exporter_missing() -> Option<String> {
    (!Path::new(NODE_EXPORTER).exists()).then(|| {
        format!("{NODE_EXPORTER} not installed (Debian package prometheus-node-exporter; scripts/test installs it)")
    })
}

pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Debian's node_exporter on loopback, with only the textfile collector.
pub struct NodeExporter {
    child: Child,
    pub url: String,
}

impl NodeExporter {
    pub fn start(textfile_dir: &Path) -> NodeExporter {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node_exporter starts");
        let url = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "node_exporter did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        NodeExporter { child, url }
    }

    /// `GET /metrics`.
    pub fn scrape(&self) -> String {
        let req = ecs_sim::testkit::http::RawRequest {
            method: "GET".into(),
            target: "/metrics".into(),
            headers: vec![],
            body: vec![],
        };
        let resp = ecs_sim::testkit::http::send(&self.url, &req, Duration::from_secs(10))
            .expect("node_exporter answers");
        assert_eq!(resp.status, 200);
        resp.text()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a scrape about appsnap and the textfile collector.
pub fn appsnap_lines(scrape: &str) -> String {
    scrape
        .lines()
        .filter(|l| l.contains("appsnap") || l.contains("node_textfile"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of the sample `series` (name with labels, exactly as exposed).
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

/// A 0700 root-owned directory for keys.
pub fn key_file(dir: &Path, key: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("webhook.key");
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}
