//! Health-check pings in the healthchecks.io convention, which Cronitor-style
//! monitors also accept: `POST <url>/start` when a run starts, `POST <url>`
//! when it succeeds, `POST <url>/fail` when it fails. The monitor then also
//! alerts when no ping comes at all (the daemon is down, the machine is off),
//! which no event from appsnap itself can. The body is a one-line summary
//! (healthchecks shows it in the ping's log).

use super::webhook::{answer, redacted, transport};
use super::AttemptError;

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// The run starts (lets the monitor measure run time and spot hangs).
    Start,
    /// The run succeeded.
    Success,
    /// The run failed.
    Fail,
}

impl PingKind {
    /// As kept in the sink log.
    pub fn label(self) -> &'static str {
        match self {
            PingKind::Start => "start",
            PingKind::Success => "success",
            PingKind::Fail => "fail",
        }
    }
}

/// The URL for `kind`: `/start` or `/fail` appended to the path (before any query).
pub fn url_for(base: &str, kind: PingKind) -> String {
    let suffix = match kind {
        PingKind::Start => "/start",
        PingKind::Success => "",
        PingKind::Fail => "/fail",
    };
    match url::Url::parse(base) {
        Ok(mut u) => {
            let path = format!("{}{suffix}", u.path().trim_end_matches('/'));
            u.set_path(&path);
            u.to_string()
        }
        Err(_) => format!("{base}{suffix}"),
    }
}

/// One attempt.
pub async fn send(
    http: &reqwest::Client,
    base: &str,
    kind: PingKind,
    body: &str,
) -> Result<(), AttemptError> {
    let url = url_for(base, kind);
    let body: String = body.chars().take(10_000).collect();
    let resp = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            AttemptError::transient(format!("POST {}: {}", redacted(&url), transport(&e)))
        })?;
    answer(resp, &url).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_healthchecks_convention() {
        let b = "https://hc-ping.com/5f3e";
        assert_eq!(
            url_for(b, PingKind::Start),
            "https://hc-ping.com/5f3e/start"
        );
        assert_eq!(url_for(b, PingKind::Success), "https://hc-ping.com/5f3e");
        assert_eq!(url_for(b, PingKind::Fail), "https://hc-ping.com/5f3e/fail");
        assert_eq!(
            url_for("https://cronitor.link/p/k/db/?env=prod", PingKind::Fail),
            "https://cronitor.link/p/k/db/fail?env=prod"
        );
    }
}
