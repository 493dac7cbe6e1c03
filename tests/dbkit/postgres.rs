//! A private PostgreSQL 15 server: the packaged binaries run as the
//! `postgres` user (the server refuses root) on a data directory and WAL
//! directory the test chose, a unix socket in the test's directory, no TCP.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{must, private_dir, stop_child, user_ids, wait_ready};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The socket is `<sock>/.s.PGSQL.5432`, private to the test: no clash with
/// any other cluster.
pub const PORT: &str = "5432";

/// The binaries the PostgreSQL test needs.
pub const TOOLS: &[&str] = &[
    "/usr/lib/postgresql/15/bin/postgres",
    "/usr/lib/postgresql/15/bin/initdb",
    "/usr/lib/postgresql/15/bin/psql",
    "/usr/lib/postgresql/15/bin/pg_amcheck",
    "/usr/lib/postgresql/15/bin/pg_controldata",
    "/usr/bin/psql",
];

/// One server instance (stopped when dropped).
pub struct Postgres {
    /// The data directory.
    pub data: PathBuf,
    /// The unix socket directory (`psql -h`).
    pub sock: PathBuf,
    /// The server's log (stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    let (uid, gid) = user_ids("postgres");
    cmd.uid(uid).gid(gid).current_dir("/")
}

impl Postgres {
    /// A server named `name` under `work` on an existing data directory.
    pub fn configure(work: &Path, name: &str, data: &Path) -> Postgres {
        let sock = work.join(format!("{name}-sock"));
        private_dir(&sock, "postgres");
        Postgres {
            data: data.to_path_buf(),
            sock,
            log: work.join(format!("{name}.log")),
            child: None,
        }
    }

    /// `initdb` of a new cluster in `data` with its WAL in `wal` (pg_wal
    /// becomes a symlink there), trust authentication on the private socket.
    pub fn init(work: &Path, name: &str, data: &Path, wal: &Path) -> Postgres {
        private_dir(data, "postgres");
        private_dir(wal, "postgres");
        let mut cmd = Command::new(format!("{BIN}/initdb"));
        as_postgres(&mut cmd)
            .arg("-D")
            .arg(data)
            .arg(format!("--waldir={}", wal.display()))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        must(cmd, "initdb", Duration::from_secs(120));
        Postgres::configure(work, name, data)
    }

    /// Starts the server and waits until it accepts queries (after recovery).
    pub fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut cmd = Command::new(format!("{BIN}/postgres"));
        as_postgres(&mut cmd)
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.sock)
            .args(["-p", PORT, "-c", "listen_addresses="])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().expect("postgres starts");
        wait_ready(&mut child, &self.log, Duration::from_secs(120), || {
            let mut c = self.psql();
            c.args(["-c", "SELECT 1"]);
            crate::common::world::run_bounded(c, Duration::from_secs(10))
                .status
                .success()
        });
        self.child = Some(child);
    }

    /// `psql` (as root, connecting as `postgres` over the private socket):
    /// unaligned, tuples only, stop at the first error.
    pub fn psql(&self) -> Command {
        let mut c = Command::new("/usr/bin/psql");
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(&self.sock)
        .args(["-p", PORT, "-d", "postgres"]);
        c
    }

    /// The arguments the example hooks' `PSQL_ARGS` needs for this server.
    pub fn psql_args(&self) -> String {
        format!("-h {} -p {PORT}", self.sock.display())
    }

    /// Runs SQL; its output (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        let mut c = self.psql();
        c.args(["-c", sql]);
        must(c, &format!("psql -c {sql:?}"), Duration::from_secs(60))
    }

    /// `pg_amcheck --all` with heap and index checks (installing the amcheck
    /// extension where missing): (passed, its output).
    pub fn amcheck_all(&self) -> (bool, String) {
        let mut c = Command::new(format!("{BIN}/pg_amcheck"));
        c.args(["-U", "postgres", "-p", PORT])
            .arg("-h")
            .arg(&self.sock)
            .args(["--all", "--install-missing", "--heapallindexed"]);
        let out = crate::common::world::run_bounded(c, Duration::from_secs(120));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGINT: fast shutdown), if running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGINT);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pg_controldata` of a (stopped) data directory: a lookup of its fields
/// by label, panicking with the whole output when one is missing.
pub fn control_data(data: &Path) -> impl Fn(&str) -> String {
    let mut cmd = Command::new(format!("{BIN}/pg_controldata"));
    as_postgres(&mut cmd).arg("-D").arg(data);
    let out = must(cmd, "pg_controldata", Duration::from_secs(30));
    move |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(label)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label:?} in pg_controldata:\n{out}"))
    }
}

/// An LSN (`X/Y`, hex) as a number, for comparing positions.
pub fn lsn(v: &str) -> u64 {
    let (hi, lo) = v.split_once('/').unwrap_or_else(|| panic!("LSN {v:?}"));
    let n = |x: &str| u64::from_str_radix(x, 16).unwrap_or_else(|e| panic!("LSN {v:?}: {e}"));
    (n(hi) << 32) | n(lo)
}
