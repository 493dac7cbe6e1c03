//! `/proc/self/mountinfo` parser.
//!
//! mountinfo (not `/proc/mounts`) is read because it carries what freezing by
//! identity needs: the mount id (checked against `statx(STATX_MNT_ID)` of the
//! opened directory), the parent id, the superblock's `major:minor` (to
//! deduplicate bind mounts) and the super options (read-only superblocks).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// One line of mountinfo, decoded (octal escapes such as `\040` undone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of this mount (field 1); what `statx` reports as `stx_mnt_id`.
    pub mount_id: u64,
    /// Id of the parent mount (field 2); the root mount is its own parent or points outside.
    pub parent_id: u64,
    /// Major of the superblock's device (anonymous `0` for btrfs, tmpfs, …).
    pub major: u32,
    /// Minor of the superblock's device.
    pub minor: u32,
    /// Which directory of the file system is mounted here (`/` unless a bind or subvolume).
    pub root: PathBuf,
    /// Where it is mounted, relative to this process's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `ro`, `relatime`, …).
    pub mount_options: String,
    /// Optional fields (`shared:N`, `master:N`, …), kept for completeness.
    pub optional_fields: Vec<String>,
    /// File system type (`ext4`, `xfs`, `btrfs`, …).
    pub fs_type: String,
    /// Mount source (`/dev/vdb1`, `tmpfs`, …); the device path for btrfs.
    pub source: String,
    /// Per-superblock options; `ro` here means the whole file system is read-only.
    pub super_options: String,
}

impl MountInfo {
    /// True when this particular mount is read-only.
    pub fn mount_read_only(&self) -> bool {
        has_option(&self.mount_options, "ro")
    }

    /// True when the superblock itself is read-only: nothing can write, so no freeze is needed.
    pub fn super_read_only(&self) -> bool {
        has_option(&self.super_options, "ro")
    }

    /// `major:minor` as mountinfo and sysfs spell it.
    pub fn dev_string(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// True when this mount shows the file system's own root (not a bind of a subdirectory).
    pub fn is_fs_root(&self) -> bool {
        self.root == Path::new("/")
    }
}

fn has_option(list: &str, name: &str) -> bool {
    list.split(',').any(|o| o == name)
}

/// Why mountinfo could not be read or understood.
#[derive(Debug, Error)]
pub enum MountsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The mountinfo path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line did not have mountinfo's shape.
    #[error("mountinfo line {line}: {reason}: {text:?}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
        /// The line as read.
        text: String,
    },
}

/// Reads and parses a mountinfo file (normally `/proc/self/mountinfo`).
pub fn read(path: &Path) -> Result<Vec<MountInfo>, MountsError> {
    let text = std::fs::read_to_string(path).map_err(|source| MountsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text)
}

/// Parses mountinfo text; blank lines are ignored, anything else malformed is an error
/// (a silently skipped line could be the mount we were asked to freeze).
pub fn parse(text: &str) -> Result<Vec<MountInfo>, MountsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        out.push(parse_line(raw).map_err(|reason| MountsError::Malformed {
            line: i + 1,
            reason,
            text: raw.to_string(),
        })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<MountInfo, &'static str> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or("no \" - \" separator")?;
    if sep < 6 {
        return Err("fewer than 6 fields before the separator");
    }
    if fields.len() < sep + 4 {
        return Err("fewer than 3 fields after the separator");
    }
    let mount_id = fields[0].parse().map_err(|_| "bad mount id")?;
    let parent_id = fields[1].parse().map_err(|_| "bad parent id")?;
    let (maj, min) = fields[2].split_once(':').ok_or("bad major:minor")?;
    let major = maj.parse().map_err(|_| "bad major")?;
    let minor = min.parse().map_err(|_| "bad minor")?;
    Ok(MountInfo {
        mount_id,
        parent_id,
        major,
        minor,
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        mount_options: fields[5].to_string(),
        optional_fields: fields[6..sep].iter().map(|s| s.to_string()).collect(),
        fs_type: unescape(fields[sep + 1]),
        source: unescape(fields[sep + 2]),
        super_options: fields[sep + 3..].join(" "),
    })
}

/// Undoes the kernel's `\ooo` octal escapes (space, tab, newline, backslash).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 0xff {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount whose mount point is the longest prefix of `path` (the last such
/// mount in mountinfo order wins, as the most recent mount shadows older ones).
pub fn containing_mount<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point) {
            let better = match best {
                None => true,
                Some(b) => m.mount_point.components().count() >= b.mount_point.components().count(),
            };
            if better {
                best = Some(m);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 253:16 / /data\\040dir rw,relatime shared:30 master:2 - xfs /dev/vdb rw,attr2,inode64
41 22 253:16 /sub /srv/bind ro,relatime - xfs /dev/vdb ro,attr2
42 22 0:45 /@home /home rw,relatime - btrfs /dev/vdc rw,space_cache=v2,subvolid=257,subvol=/@home
";

    #[test]
    fn parses_fields_escapes_and_optional_fields() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].mount_id, 22);
        assert_eq!(m[0].parent_id, 1);
        assert_eq!((m[0].major, m[0].minor), (253, 0));
        assert_eq!(m[0].super_options, "rw,errors=remount-ro");
        assert_eq!(m[2].mount_point, PathBuf::from("/data dir"));
        assert_eq!(m[2].optional_fields, vec!["shared:30", "master:2"]);
        assert_eq!(m[2].fs_type, "xfs");
        assert_eq!(m[3].optional_fields, Vec::<String>::new());
        assert_eq!(m[3].root, PathBuf::from("/sub"));
        assert!(m[3].mount_read_only());
        assert!(m[3].super_read_only());
        assert!(!m[3].is_fs_root());
        assert_eq!(m[4].source, "/dev/vdc");
        assert_eq!(m[4].dev_string(), "0:45");
    }

    #[test]
    fn unescapes_octal_and_leaves_other_backslashes() {
        assert_eq!(unescape("a\\040b\\011c\\012d\\134e"), "a b\tc\nd\\e");
        assert_eq!(unescape("x\\9yz"), "x\\9yz");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn rejects_malformed_lines_with_line_number() {
        let err = parse("22 1 253:0 / / rw - ext4 /dev/vda rw\nnonsense here\n").unwrap_err();
        match err {
            MountsError::Malformed { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse("x 1 1:1 / / rw - ext4 a rw").is_err());
        assert!(parse("1 1 11 / / rw - ext4 a rw").is_err());
    }

    #[test]
    fn containing_mount_prefers_deepest_and_latest() {
        let m = parse(SAMPLE).unwrap();
        let c = containing_mount(&m, Path::new("/data dir/x/y")).unwrap();
        assert_eq!(c.mount_id, 40);
        let c = containing_mount(&m, Path::new("/data")).unwrap();
        assert_eq!(c.mount_id, 22);
    }
}
