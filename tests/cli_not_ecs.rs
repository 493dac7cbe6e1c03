//! `check` on a machine that is not an ECS instance: the metadata service
//! does not answer (closed port) or answers 404 to everything, the token
//! request included. The message says so in words, with what to check.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Runs `check` against `metadata` (ECS itself on the same URL: never reached).
fn check(metadata: &str, extra: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("appsnap.toml");
    std::fs::write(
        &f,
        format!("[cloud]\nendpoint = \"{metadata}\"\nmetadata_endpoint = \"{metadata}\"\n{extra}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .args([
            "-c",
            f.to_str().unwrap(),
            "--config-dir",
            "/nonexistent",
            "check",
        ])
        .output()
        .expect("run appsnap");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_says_not_ecs(stderr: &str, endpoint: &str) {
    assert!(
        stderr.contains("this does not look like an Alibaba Cloud ECS instance"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("the metadata service at {endpoint}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("metadata_endpoint"),
        "says what to check: {stderr}"
    );
}

#[test]
fn a_closed_metadata_port_is_called_not_an_ecs_instance() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let (code, stderr) = check(&url, "");
    assert_ne!(code, Some(0), "{stderr}");
    assert_says_not_ecs(&stderr, &url);
    assert!(stderr.contains("did not answer"), "{stderr}");
}

/// A web server that is not a metadata service: 404 to every request.
fn not_found_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    url
}

#[test]
fn a_404_to_the_token_request_is_called_not_an_ecs_instance() {
    let url = not_found_server();
    let (code, stderr) = check(&url, "");
    assert_ne!(code, Some(0), "{stderr}");
    assert_says_not_ecs(&stderr, &url);
    assert!(stderr.contains("404"), "{stderr}");
}

#[test]
fn a_404_to_the_token_request_without_fallback_is_called_not_an_ecs_instance() {
    let url = not_found_server();
    let (code, stderr) = check(&url, "imds_v1_fallback = false\n");
    assert_ne!(code, Some(0), "{stderr}");
    assert_says_not_ecs(&stderr, &url);
}
