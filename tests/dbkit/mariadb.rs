//! A private MariaDB server: its own option file (read instead of
//! /etc/mysql), data directory and InnoDB redo log where the test says, a
//! unix socket in the test's directory and no networking. The binary log is
//! on (in the data directory), so the hooks record a position to check.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{must, private_dir, stop_child, wait_ready};

/// The binaries the MariaDB test needs.
pub const TOOLS: &[&str] = &[
    "/usr/sbin/mariadbd",
    "/usr/bin/mariadb-install-db",
    "/usr/bin/mariadb",
    "/usr/bin/mariadb-check",
];

/// One server instance (stopped when dropped).
pub struct MariaDb {
    /// The server's option file (`--defaults-file`).
    pub cnf: PathBuf,
    /// `[client]` options (socket, user root): what the example hooks'
    /// `DEFAULTS_FILE` points at.
    pub client_cnf: PathBuf,
    /// The server's error log.
    pub log: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    /// Writes the option files for a server named `name` under `work`, with
    /// its data in `datadir` and its redo log in `redo_dir`.
    pub fn configure(work: &Path, name: &str, datadir: &Path, redo_dir: &Path) -> MariaDb {
        let sock = work.join(format!("{name}-sock"));
        private_dir(&sock, "mysql");
        let cnf = work.join(format!("{name}.cnf"));
        // In the server's own directory: mariadbd opens it as `mysql`.
        let log = sock.join("mysqld.err");
        std::fs::write(
            &cnf,
            format!(
                "[mysqld]\nuser=mysql\ndatadir={d}\ninnodb_log_group_home_dir={r}\n\
                 socket={s}/mysqld.sock\npid-file={s}/mysqld.pid\nlog-error={l}\n\
                 skip-networking\ninnodb_buffer_pool_size=64M\ninnodb_log_file_size=32M\n\
                 log_bin=mariadb-bin\nserver_id=1\n",
                d = datadir.display(),
                r = redo_dir.display(),
                s = sock.display(),
                l = log.display(),
            ),
        )
        .unwrap();
        let client_cnf = work.join(format!("{name}-client.cnf"));
        std::fs::write(
            &client_cnf,
            format!(
                "[client]\nuser=root\nsocket={}/mysqld.sock\n",
                sock.display()
            ),
        )
        .unwrap();
        MariaDb {
            cnf,
            client_cnf,
            log,
            child: None,
        }
    }

    /// A new, empty server: system tables in `datadir`, redo log in `redo_dir`.
    pub fn install(work: &Path, name: &str, datadir: &Path, redo_dir: &Path) -> MariaDb {
        private_dir(datadir, "mysql");
        private_dir(redo_dir, "mysql");
        let db = MariaDb::configure(work, name, datadir, redo_dir);
        let mut cmd = Command::new("/usr/bin/mariadb-install-db");
        cmd.arg(format!("--defaults-file={}", db.cnf.display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
        must(cmd, "mariadb-install-db", Duration::from_secs(120));
        db
    }

    /// Starts the server and waits until it answers (crash recovery included).
    pub fn start(&mut self) {
        let mut child = Command::new("/usr/sbin/mariadbd")
            .arg(format!("--defaults-file={}", self.cnf.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        let probe = |db: &MariaDb| {
            let mut c = db.client(None);
            c.args(["-e", "SELECT 1"]);
            crate::common::world::run_bounded(c, Duration::from_secs(10))
                .status
                .success()
        };
        wait_ready(&mut child, &self.log, Duration::from_secs(120), || {
            probe(self)
        });
        self.child = Some(child);
    }

    /// A `mariadb` client command on this server's socket (batch mode).
    pub fn client(&self, db: Option<&str>) -> Command {
        let mut c = Command::new("/usr/bin/mariadb");
        c.arg(format!(
            "--defaults-extra-file={}",
            self.client_cnf.display()
        ))
        .args(["--batch", "--skip-column-names", "--unbuffered"]);
        if let Some(db) = db {
            c.arg(db);
        }
        c
    }

    /// Runs SQL; its output (tab-separated, no headers).
    pub fn sql(&self, sql: &str) -> String {
        let mut c = self.client(None);
        c.args(["-e", sql]);
        must(c, &format!("mariadb -e {sql:?}"), Duration::from_secs(60))
    }

    /// `mariadb-check --all-databases`: (passed, its output). Passing means
    /// exit 0 and no table reported with an error or corruption.
    pub fn check_all(&self) -> (bool, String) {
        let mut c = Command::new("/usr/bin/mariadb-check");
        c.arg(format!(
            "--defaults-extra-file={}",
            self.client_cnf.display()
        ))
        .arg("--all-databases");
        let out = crate::common::world::run_bounded(c, Duration::from_secs(120));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let bad = text.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("corrupt")
        });
        (out.status.success() && !bad, text)
    }

    /// The server's error log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server cleanly (SIGTERM), if running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGTERM);
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
