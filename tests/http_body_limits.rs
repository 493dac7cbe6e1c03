//! Every HTTP body appsnap reads is bounded (issue 14 item 8): a server that
//! streams a chunked answer larger than the cap gets a clear error naming the
//! action and the limit, and the client stops reading (no unbounded memory).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use appsnap::cloud::credentials::{AccessKey, Credentials};
use appsnap::cloud::ecs::EcsClient;
use appsnap::cloud::metadata::MetadataClient;
use appsnap::cloud::retry::{Backoff, RetryPolicy};
use appsnap::cloud::secret::Secret;
use appsnap::cloud::tls;
use appsnap::policy::types::CloudSettings;
use tokio::time::Instant;

const MIB: u64 = 1024 * 1024;

/// A server answering `PUT` with a short token and anything else with a
/// chunked 200 of up to `total` bytes; counts the bytes it managed to send.
struct Streamer {
    uri: String,
    sent: Arc<AtomicU64>,
}

fn streamer(total: u64) -> Streamer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let counter = counter.clone();
            std::thread::spawn(move || serve(conn, total, &counter));
        }
    });
    Streamer { uri, sent }
}

fn serve(conn: TcpStream, total: u64, sent: &AtomicU64) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        if request_line.starts_with("PUT ") {
            let _ = out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\ntoken",
            );
            continue;
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .is_err()
        {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let mut n = 0u64;
        while n < total {
            let head = format!("{:x}\r\n", chunk.len());
            if out.write_all(head.as_bytes()).is_err()
                || out.write_all(&chunk).is_err()
                || out.write_all(b"\r\n").is_err()
            {
                return;
            }
            n += chunk.len() as u64;
            sent.store(n, Ordering::SeqCst);
        }
        let _ = out.write_all(b"0\r\n\r\n");
    }
}

fn ecs(uri: &str) -> EcsClient {
    tls::install_provider();
    let settings = CloudSettings {
        endpoint: Some(uri.to_string()),
        ..CloudSettings::default()
    };
    let creds = Credentials::from_static(AccessKey {
        access_key_id: "LTAItest".into(),
        access_key_secret: Secret::new("test-secret"),
        security_token: None,
        expiration: None,
    });
    EcsClient::new(&settings, "cn-hangzhou", creds)
        .unwrap()
        .with_retry_policy(RetryPolicy {
            normal: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(10),
            },
            throttling: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(10),
            },
            max_attempts: 2,
            attempt_timeout: Duration::from_secs(120),
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ecs_answer_larger_than_16_mib_is_refused_not_buffered() {
    let server = streamer(64 * MIB);
    let e = ecs(&server.uri)
        .describe_disks("i-bp1test", &[], Instant::now() + Duration::from_secs(300))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("DescribeDisks") && msg.contains("16 MiB limit"),
        "{msg}"
    );
    assert!(
        !e.is_retryable(),
        "a too-large answer is not retried: {msg}"
    );
    // The client stopped reading: the server could not push the whole body
    // (its writes block once the socket buffers are full, then fail).
    std::thread::sleep(Duration::from_millis(200));
    let sent = server.sent.load(Ordering::SeqCst);
    assert!(
        sent < 64 * MIB,
        "server sent {sent} bytes: the client read everything"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ecs_answer_under_the_limit_is_still_read() {
    // 1 MiB of spaces is not JSON: the error is a decode error, not the limit.
    let server = streamer(MIB);
    let e = ecs(&server.uri)
        .describe_disks("i-bp1test", &[], Instant::now() + Duration::from_secs(300))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("unreadable answer") && !msg.contains("limit"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metadata_answer_larger_than_64_kib_is_refused() {
    tls::install_provider();
    let server = streamer(16 * MIB);
    let md = MetadataClient::with_endpoint(&server.uri)
        .unwrap()
        .with_retries(
            1,
            Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(10),
            },
        );
    let e = md.instance_id().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("meta-data/instance-id") && msg.contains("64 KiB limit"),
        "{msg}"
    );
}
