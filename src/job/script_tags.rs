//! `APPSNAP_TAGS_FILE`: the pre-script's way to put facts on the snapshot
//! (the database's binary log position, GTID, checkpoint LSN), so that a
//! restored copy can rejoin replication or start a point-in-time recovery.
//!
//! appsnap makes a fresh, empty file in a private directory under the run
//! directory (tmpfs, never a file system the job freezes) and names it to
//! the pre-script only. After a pre-script that *succeeded* it reads it
//! once, bounded and without following links, then removes it. Each line is
//! `key=value` (blank lines and `#` comments ignored); the tags follow ECS's
//! rules and appsnap's reserved keys, except the documented position keys.
//! All or nothing: one bad line and none of the file's tags are used (a
//! half-recorded position misleads more than none).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::policy::naming;

/// Keys under the reserved `appsnap:` prefix that a pre-script may set: the
/// database positions the shipped hooks record. Every other `appsnap:` key
/// is appsnap's own (retention and drills rely on `appsnap:job`,
/// `appsnap:owner`, …) and refused.
pub const POSITION_KEYS: [&str; 4] = [
    "appsnap:binlog",
    "appsnap:gtid",
    "appsnap:lsn",
    "appsnap:timeline",
];
/// The most tags one pre-script may add.
pub const MAX_SCRIPT_TAGS: usize = 10;
/// The largest tags file read; a position needs a few hundred bytes.
pub const MAX_FILE_BYTES: u64 = 4096;

/// Why a tags file was not used; `path` is always the file's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagsFileError {
    /// It could not be read: replaced by a link or a FIFO, removed, larger
    /// than [`MAX_FILE_BYTES`] (the error names the file).
    #[error("{0}")]
    Read(String),
    /// Not UTF-8.
    #[error("{path}: not UTF-8 text")]
    NotText {
        /// The file.
        path: String,
    },
    /// One line breaks a rule.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// Its 1-based line number.
        line: usize,
        /// The rule it breaks.
        reason: String,
    },
    /// More tags than there is room for.
    #[error("{path}: {count} tags; at most {room} fit (ECS allows 20 per resource, appsnap and the job's own tags use the rest)")]
    TooMany {
        /// The file.
        path: String,
        /// How many it holds.
        count: usize,
        /// How many fit.
        room: usize,
    },
}

/// The file a pre-script may write, removed (with its directory) when dropped.
#[derive(Debug)]
pub struct TagsFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TagsFile {
    /// A fresh empty file `<run_dir>/pre-<run_id>/tags`: the run directory
    /// made if missing and trusted, the directory 0700, the file 0600, both
    /// new (an existing one is an error, never reused).
    pub fn create(run_dir: &Path, run_id: &str) -> std::io::Result<TagsFile> {
        crate::securefs::ensure_trusted_dir(run_dir).map_err(std::io::Error::other)?;
        let dir = run_dir.join(format!("pre-{run_id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("tags");
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match made {
            Ok(_) => Ok(TagsFile { dir, path }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Where the pre-script writes (`APPSNAP_TAGS_FILE`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tags the file holds, checked; `room` is how many fit, `taken` the
    /// keys the group already carries from the job.
    pub fn read(
        &self,
        room: usize,
        taken: &[&str],
    ) -> Result<Vec<(String, String)>, TagsFileError> {
        let shown = self.path.display().to_string();
        let bytes = crate::securefs::read_bounded_regular(&self.path, MAX_FILE_BYTES)
            .map_err(|e| TagsFileError::Read(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| TagsFileError::NotText {
            path: shown.clone(),
        })?;
        parse(&text, room, taken, &shown)
    }
}

impl Drop for TagsFile {
    fn drop(&mut self) {
        // The script may have left anything here: remove what it could have made.
        let _ = std::fs::remove_file(&self.path);
        if std::fs::remove_dir(&self.dir).is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The tags in `text`, all checked: ECS's tag rules, the reserved keys
/// (bar [`POSITION_KEYS`]), no key twice or already in `taken`, at most
/// `room` (and [`MAX_SCRIPT_TAGS`]); errors name `path`.
pub fn parse(
    text: &str,
    room: usize,
    taken: &[&str],
    path: &str,
) -> Result<Vec<(String, String)>, TagsFileError> {
    let line_err = |line: usize, reason: String| TagsFileError::Line {
        path: path.to_string(),
        line,
        reason,
    };
    let mut tags: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        if raw.chars().any(char::is_control) {
            return Err(line_err(n, "control characters are not allowed".into()));
        }
        let Some((key, value)) = raw.split_once('=') else {
            return Err(line_err(n, format!("{raw:?} is not key=value")));
        };
        check(key, value).map_err(|m| line_err(n, m))?;
        if tags.iter().any(|(k, _)| k == key) {
            return Err(line_err(n, format!("tag key {key:?} given twice")));
        }
        if taken.contains(&key) {
            return Err(line_err(
                n,
                format!("tag key {key:?} is already one of the job's tags"),
            ));
        }
        tags.push((key.to_string(), value.to_string()));
    }
    let room = room.min(MAX_SCRIPT_TAGS);
    if tags.len() > room {
        return Err(TagsFileError::TooMany {
            path: path.to_string(),
            count: tags.len(),
            room,
        });
    }
    Ok(tags)
}

/// ECS's rules for one tag, with the position keys let through appsnap's
/// reserved prefix.
fn check(key: &str, value: &str) -> Result<(), String> {
    if POSITION_KEYS.contains(&key) {
        // The prefix check would refuse it; the rest of the rules still apply.
        let stand_in = key.replacen(naming::RESERVED_TAG_PREFIX, "x", 1);
        return naming::check_tag(&stand_in, value)
            .map_err(|m| m.replace(&format!("{stand_in:?}"), &format!("{key:?}")));
    }
    naming::check_tag(key, value).map_err(|m| {
        if key.starts_with(naming::RESERVED_TAG_PREFIX) {
            format!(
                "{m}; a pre-script may set only {}",
                POSITION_KEYS.join(", ")
            )
        } else {
            m
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match parse(text, 10, &["team"], "f") {
            Err(TagsFileError::Line { line, reason, .. }) => {
                format!("{line}: {reason}")
            }
            Err(e) => e.to_string(),
            Ok(t) => panic!("accepted {text:?}: {t:?}"),
        }
    }

    #[test]
    fn position_keys_and_plain_tags_pass_comments_and_blanks_are_skipped() {
        let t = parse(
            "# written by the MariaDB hook\n\nappsnap:binlog=mariadb-bin.000003:4567\nappsnap:gtid=0-1-42,1-2-7\nsite=hz=a\nempty=\n",
            10,
            &[],
            "f",
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                ("appsnap:binlog".into(), "mariadb-bin.000003:4567".into()),
                ("appsnap:gtid".into(), "0-1-42,1-2-7".into()),
                // Split at the first '=' only.
                ("site".into(), "hz=a".into()),
                ("empty".into(), "".into()),
            ]
        );
    }

    #[test]
    fn every_refusal_names_the_line_and_why() {
        assert!(
            reason("ok=1\nno equals sign\n").starts_with("2: "),
            "{}",
            reason("ok=1\nno equals sign\n")
        );
        assert!(reason("appsnap:job=other").contains("a pre-script may set only appsnap:binlog"));
        assert!(reason("appsnap:owner=x").contains("set by appsnap itself"));
        assert!(reason("AppConsistent=True").contains("set by appsnap itself"));
        assert!(reason("acs:x=1").contains("reserved by Alibaba Cloud"));
        assert!(reason("aliyun.a=1").contains("reserved by Alibaba Cloud"));
        assert!(reason("x=acs:y").contains("must not start with \"acs:\""));
        assert!(reason(&format!("k={}", "v".repeat(129))).contains("at most 128"));
        assert!(reason(&format!("appsnap:gtid={}", "1".repeat(129))).contains("\"appsnap:gtid\""));
        assert!(reason(&format!("{}=v", "k".repeat(129))).contains("1-128"));
        assert!(reason("=v").contains("1-128"));
        assert!(reason("a=1\na=2").contains("given twice"));
        assert!(reason("team=x").contains("already one of the job's tags"));
        assert!(reason("a=b\tc").contains("control characters"));
    }

    #[test]
    fn the_count_is_bounded_by_the_room_left_and_by_ten() {
        let lines = |n: usize| (0..n).map(|i| format!("k{i}=v\n")).collect::<String>();
        assert_eq!(parse(&lines(3), 3, &[], "f").unwrap().len(), 3);
        match parse(&lines(4), 3, &[], "f") {
            Err(TagsFileError::TooMany {
                count: 4, room: 3, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&lines(10), 17, &[], "f").unwrap().len(), 10);
        assert!(parse(&lines(11), 17, &[], "f").is_err());
    }

    #[test]
    fn the_file_is_private_read_bounded_never_through_a_link_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let f = TagsFile::create(tmp.path(), "r1").unwrap();
        let dir = f.path().parent().unwrap().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(f.read(10, &[]).unwrap(), vec![]);
        std::fs::write(f.path(), "appsnap:lsn=0/3000060\nappsnap:timeline=1\n").unwrap();
        assert_eq!(f.read(10, &[]).unwrap().len(), 2);
        // Too large.
        std::fs::write(f.path(), "k=v\n".repeat(1100)).unwrap();
        assert!(matches!(
            f.read(10, &[]),
            Err(TagsFileError::Read(m)) if m.contains("larger than")
        ));
        // Replaced by a link to a file elsewhere: not followed.
        let elsewhere = tmp.path().join("secret");
        std::fs::write(&elsewhere, "k=v\n").unwrap();
        std::fs::remove_file(f.path()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, f.path()).unwrap();
        assert!(matches!(
            f.read(10, &[]),
            Err(TagsFileError::Read(m)) if m.contains("symbolic link")
        ));
        // Not text.
        std::fs::remove_file(f.path()).unwrap();
        std::fs::write(f.path(), [0xff, 0xfe, b'\n']).unwrap();
        assert!(matches!(
            f.read(10, &[]),
            Err(TagsFileError::NotText { .. })
        ));
        // A line error names the file.
        std::fs::write(f.path(), "ok=1\nbad\n").unwrap();
        let e = f.read(10, &[]).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: ", f.path().display())), "{e}");
        // A second file for the same run is refused, never reused.
        assert!(TagsFile::create(tmp.path(), "r1").is_err());
        // A directory the script left behind goes too.
        std::fs::create_dir(dir.join("junk")).unwrap();
        drop(f);
        assert!(!dir.exists());
        assert!(elsewhere.exists(), "the link's target is not touched");
    }
}
