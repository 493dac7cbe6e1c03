//! Root lane for the restore drill's host side (`appsnap::host::drill`):
//! "live" disks are loop devices over sparse images the test makes, the
//! "restored" disks are loop devices over copies of those images (as ECS
//! would restore them from snapshots), assembled while the live file systems
//! stay mounted (same UUIDs). Skips when not root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use appsnap::host::drill::{
    self, Assembly, CopyFs, DrillError, DrillLayout, FsCheck, FsType, RestoredDisk, Tools,
};
use common::Lab;

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("PATH", SYSTEM_PATH)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tools() -> Tools {
    Tools {
        timeout: Duration::from_secs(60),
        ..Tools::discover()
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

/// A drill layout inside the lab: root `<lab>/verify/<run>`, record in the lab's run dir.
fn layout(lab: &Lab, run: &str) -> DrillLayout {
    DrillLayout {
        root: lab.dir.join("verify").join(run),
        record: lab.run_dir().join(format!("drill-{run}.json")),
    }
}

/// Runs `cleanup_from_record` when dropped: declared after the `Lab`, it
/// unmounts the drill's copies before the lab detaches their loop devices,
/// even when an assertion failed.
struct CleanupOnDrop(PathBuf);

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if let Err(e) = drill::cleanup_from_record(&self.0, &tools()) {
            eprintln!("cleanup after the test: {e}");
        }
    }
}

/// A sparse copy of the image behind `name`, attached as a new loop device:
/// the "restored" disk.
fn restore(lab: &Lab, name: &str, copy: &str) -> String {
    let src = lab.dir.join("img").join(format!("{name}.img"));
    let dst = lab.dir.join("img").join(format!("{copy}.img"));
    run(
        "cp",
        &[
            "--sparse=always",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
    lab.attach(&dst)
}

/// Makes `fs` on `dev`, writes `marker` into `<fs>/hello.txt`, unmounts.
fn fill(lab: &Lab, dev: &str, fs: &str, rel: &str, marker: &str) {
    lab.mkfs(dev, fs);
    let mp = lab.mount(dev, rel);
    std::fs::create_dir_all(mp.join("data")).unwrap();
    std::fs::write(mp.join("hello.txt"), marker).unwrap();
    for i in 0..50 {
        std::fs::write(mp.join("data").join(format!("f{i}")), vec![b'x'; 3000]).unwrap();
    }
    lab.umount(&mp);
}

fn mounted_at(p: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = p.to_str().unwrap();
    text.lines()
        .find(|l| l.split(' ').nth(4) == Some(target))
        .map(str::to_string)
}

fn mounts_under(p: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = p.to_str().unwrap();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Assembles `disks` under a fresh layout for `run`, expecting success; the
/// guard cleans up from the record whatever the test leaves.
fn assembled(
    lab: &Lab,
    run: &str,
    disks: &[RestoredDisk],
) -> (DrillLayout, CleanupOnDrop, Assembly) {
    let lay = layout(lab, run);
    let cleanup = CleanupOnDrop(lay.record.clone());
    let a = drill::assemble(disks, &lay, &tools(), deadline()).unwrap();
    (lay, cleanup, a)
}

fn only<'a>(a: &'a Assembly, disk_id: &str) -> &'a CopyFs {
    let all: Vec<&CopyFs> = a
        .filesystems()
        .iter()
        .filter(|f| f.disk_id == disk_id)
        .collect();
    assert_eq!(all.len(), 1, "{disk_id}: {:?}", a.filesystems());
    all[0]
}

fn disk(id: &str, src: &str, dev: &str) -> RestoredDisk {
    RestoredDisk {
        disk_id: id.into(),
        source_disk_id: src.into(),
        device: PathBuf::from(dev),
    }
}

#[test]
fn ext4_whole_disk_and_xfs_partition_pass_mount_and_tear_down_beside_the_live_ones() {
    root_or_skip!();
    let lab = Lab::new("drill-ok", Duration::from_secs(240));
    let live_a = lab.loop_dev("livea", 64);
    fill(&lab, &live_a, "ext4", "live-a", "ext4 marker");
    let live_b = lab.loop_dev("liveb", 320);
    let live_b1 = lab.partition(&live_b, &[320]).remove(0);
    fill(&lab, &live_b1, "xfs", "live-b", "xfs marker");
    let rest_a = restore(&lab, "livea", "resta");
    let rest_b = restore(&lab, "liveb", "restb");
    // The live file systems stay mounted throughout, with the copies' UUIDs.
    let live_a_mp = lab.mount(&live_a, "live-a");
    let live_b_mp = lab.mount(&live_b1, "live-b");

    let lay = layout(&lab, "run-ok");
    let _cleanup = CleanupOnDrop(lay.record.clone());

    // A live (mounted) device is refused before anything is made.
    let err = drill::assemble(
        &[disk("d-live", "d-live", &live_a)],
        &lay,
        &tools(),
        deadline(),
    )
    .unwrap_err();
    assert!(matches!(err, DrillError::InUse { .. }), "{err}");
    assert!(err.to_string().contains(&live_a), "{err}");
    assert!(!lay.root.exists() && !lay.record.exists());

    let disks = [
        disk("d-resta", "d-livea", &rest_a),
        disk("d-restb", "d-liveb", &rest_b),
    ];
    let a = drill::assemble(&disks, &lay, &tools(), deadline()).unwrap();
    assert!(
        lay.record.exists(),
        "the record is kept while the copies exist"
    );
    // Traverse-only for others: a verify script starts the database as its
    // own user (mysql, postgres), who must reach the copy; nobody may list
    // the drill's directories.
    let mode = std::fs::metadata(&lay.root).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o711
    );

    let ext = only(&a, "d-resta");
    assert_eq!(ext.fstype, FsType::Ext4);
    assert_eq!(ext.check, FsCheck::Passed, "{ext:?}");
    assert_eq!(ext.source_disk_id, "d-livea");
    assert_eq!(ext.device, PathBuf::from(&rest_a));
    let ext_mp = ext.mount_point.clone().unwrap();
    assert_eq!(ext_mp, lay.root.join("d-resta"));
    let xfs = only(&a, "d-restb");
    assert_eq!(xfs.fstype, FsType::Xfs);
    assert_eq!(xfs.check, FsCheck::Passed, "{xfs:?}");
    assert_eq!(xfs.device, PathBuf::from(format!("{rest_b}p1")));
    let xfs_mp = xfs.mount_point.clone().unwrap();
    assert_eq!(xfs_mp, lay.root.join("d-restb-p1"));
    assert!(!xfs.uuid.is_empty());
    assert_eq!(
        xfs.uuid,
        run("blkid", &["-p", "-s", "UUID", "-o", "value", &live_b1]).trim(),
        "a copy has the live file system's UUID"
    );

    for (mp, marker) in [(&ext_mp, "ext4 marker"), (&xfs_mp, "xfs marker")] {
        assert_eq!(
            std::fs::read_to_string(mp.join("hello.txt")).unwrap(),
            marker
        );
        let as_nobody = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "cat"])
            .arg(mp.join("hello.txt"))
            .output()
            .unwrap();
        assert!(
            as_nobody.status.success(),
            "a service user cannot reach {}: {}",
            mp.display(),
            String::from_utf8_lossy(&as_nobody.stderr)
        );
        let line = mounted_at(mp).unwrap_or_else(|| panic!("{} not mounted", mp.display()));
        assert!(line.contains("nodev") && line.contains("nosuid"), "{line}");
    }
    // Writing to a copy leaves the live one alone.
    std::fs::write(xfs_mp.join("hello.txt"), "changed on the copy").unwrap();
    assert_eq!(
        std::fs::read_to_string(live_b_mp.join("hello.txt")).unwrap(),
        "xfs marker"
    );

    a.teardown().unwrap();
    assert!(mounts_under(&lay.root).is_empty());
    assert!(!lay.root.exists(), "the root is removed");
    assert!(!lay.record.exists(), "the record is deleted");
    assert!(
        !Path::new(&format!("{rest_b}p1")).exists(),
        "the partition the drill added is removed"
    );
    assert!(mounted_at(&live_a_mp).is_some() && mounted_at(&live_b_mp).is_some());
    assert_eq!(
        std::fs::read_to_string(live_a_mp.join("hello.txt")).unwrap(),
        "ext4 marker"
    );
}

/// `dumpe2fs` line "Inode table at A-B" of group 0: the first block and the block size.
fn inode_table(img: &Path) -> (u64, u64) {
    let out = run("dumpe2fs", &[img.to_str().unwrap()]);
    let bs: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let at = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Inode table at "))
        .unwrap();
    let first: u64 = at.split(['-', ' ']).next().unwrap().parse().unwrap();
    (first, bs)
}

/// Overwrites `len` bytes at `offset` of `img` with a fixed junk pattern.
fn scribble(img: &Path, offset: u64, len: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let junk: Vec<u8> = (0..len).map(|i| (i * 7 + 0x5a) as u8).collect();
    f.write_all(&junk).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn damaged_ext4_and_xfs_copies_fail_naming_their_checker_or_mount_and_are_not_mounted() {
    root_or_skip!();
    let lab = Lab::new("drill-bad", Duration::from_secs(240));
    let live_e = lab.loop_dev("livee", 64);
    fill(&lab, &live_e, "ext4", "live-e", "e");
    let live_x = lab.loop_dev("livex", 320);
    fill(&lab, &live_x, "xfs", "live-x", "x");
    let live_g = lab.loop_dev("liveg", 64);
    fill(&lab, &live_g, "ext4", "live-g", "good");
    let rest_e = restore(&lab, "livee", "reste");
    let rest_x = restore(&lab, "livex", "restx");
    let rest_y = restore(&lab, "livex", "resty");
    let rest_g = restore(&lab, "liveg", "restg");

    // ext4: junk over group 0's inode table (the root directory's inode is
    // there); the superblock stays, so blkid still says ext4.
    let img_e = lab.dir.join("img/reste.img");
    let (first, bs) = inode_table(&img_e);
    scribble(&img_e, first * bs, 4 * bs as usize);
    // xfs (1): junk over AG 1's free-space and inode headers (AGF, AGI,
    // AGFL), the primary superblock kept: the mount that replays the log fails.
    // xfs (2): junk over AG 1's superblock copy only: it mounts, and
    // `xfs_repair -n` finds it.
    let img_x = lab.dir.join("img/restx.img");
    let sb = run(
        "xfs_db",
        &[
            "-r",
            "-c",
            "sb 0",
            "-c",
            "p agblocks blocksize",
            img_x.to_str().unwrap(),
        ],
    );
    let field = |name: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let ag1 = field("agblocks") * field("blocksize");
    scribble(&img_x, ag1 + 512, 3 * 512);
    scribble(&lab.dir.join("img/resty.img"), ag1, 512);
    for dev in [&rest_e, &rest_x, &rest_y] {
        // The loop device may cache the old blocks.
        run("blockdev", &["--flushbufs", dev]);
    }
    assert_eq!(
        run("blkid", &["-p", "-s", "TYPE", "-o", "value", &rest_e]).trim(),
        "ext4"
    );

    let lay = layout(&lab, "run-bad");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    let disks = [
        disk("d-reste", "d-livee", &rest_e),
        disk("d-restx", "d-livex", &rest_x),
        disk("d-resty", "d-livex", &rest_y),
        disk("d-restg", "d-liveg", &rest_g),
    ];
    let a = drill::assemble(&disks, &lay, &tools(), deadline()).unwrap();

    let e = only(&a, "d-reste");
    match &e.check {
        FsCheck::Failed {
            tool,
            exit,
            output_tail,
        } => {
            assert_eq!(tool, "e2fsck");
            assert_ne!(*exit, 0);
            assert!(!output_tail.is_empty());
        }
        other => panic!("damaged ext4: {other:?}"),
    }
    assert_eq!(e.fstype, FsType::Ext4);
    assert!(!e.uuid.is_empty(), "the failed fs is named by its UUID");
    assert!(e.mount_point.is_none());
    assert!(!lay.root.join("d-reste").exists());

    for (id, want) in [("d-restx", "mount"), ("d-resty", "xfs_repair")] {
        let x = only(&a, id);
        match &x.check {
            FsCheck::Failed { tool, exit, .. } => {
                assert_eq!(tool, want, "{id}: {:?}", x.check);
                assert_ne!(*exit, 0);
            }
            other => panic!("damaged xfs {id}: {other:?}"),
        }
        assert_eq!(x.fstype, FsType::Xfs);
        assert!(x.mount_point.is_none());
        assert!(!lay.root.join(id).exists());
    }
    assert!(mounts_under(&lay.root)
        .iter()
        .all(|m| m.ends_with("d-restg")));

    // The undamaged copy beside them passed and is mounted.
    let g = only(&a, "d-restg");
    assert_eq!(g.check, FsCheck::Passed);
    assert_eq!(
        std::fs::read_to_string(g.mount_point.as_ref().unwrap().join("hello.txt")).unwrap(),
        "good"
    );
    a.teardown().unwrap();
    assert!(mounts_under(&lay.root).is_empty() && !lay.root.exists());
}

#[test]
fn btrfs_copy_passes_while_the_live_one_is_mounted() {
    root_or_skip!();
    let lab = Lab::new("drill-btrfs", Duration::from_secs(240));
    let live = lab.loop_dev("liveb", 256);
    fill(&lab, &live, "btrfs", "live", "btrfs marker");
    let rest = restore(&lab, "liveb", "restb");
    let live_mp = lab.mount(&live, "live");

    let lay = layout(&lab, "run-btrfs");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    let a = drill::assemble(
        &[disk("d-restb", "d-liveb", &rest)],
        &lay,
        &tools(),
        deadline(),
    )
    .unwrap();
    let b = only(&a, "d-restb");
    assert_eq!(b.fstype, FsType::Btrfs);
    assert_eq!(b.check, FsCheck::Passed, "{b:?}");
    let mp = b.mount_point.clone().unwrap();
    assert_eq!(
        std::fs::read_to_string(mp.join("hello.txt")).unwrap(),
        "btrfs marker"
    );
    std::fs::write(mp.join("hello.txt"), "copy").unwrap();
    assert_eq!(
        std::fs::read_to_string(live_mp.join("hello.txt")).unwrap(),
        "btrfs marker"
    );
    a.teardown().unwrap();
    assert!(mounts_under(&lay.root).is_empty() && !lay.root.exists());
    assert!(mounted_at(&live_mp).is_some());
}

#[test]
fn cleanup_from_record_after_a_crash_undoes_everything_and_again_nothing() {
    root_or_skip!();
    let lab = Lab::new("drill-crash", Duration::from_secs(240));
    let live_a = lab.loop_dev("livea", 64);
    fill(&lab, &live_a, "ext4", "live-a", "a");
    let live_b = lab.loop_dev("liveb", 64);
    let live_b1 = lab.partition(&live_b, &[64]).remove(0);
    fill(&lab, &live_b1, "ext4", "live-b", "b");
    let rest_a = restore(&lab, "livea", "resta");
    let rest_b = restore(&lab, "liveb", "restb");

    let (lay, _cleanup, a) = assembled(
        &lab,
        "run-crash",
        &[
            disk("d-resta", "d-livea", &rest_a),
            disk("d-restb", "d-liveb", &rest_b),
        ],
    );
    assert_eq!(a.filesystems().len(), 2);
    // The process "dies": no teardown, no drop.
    std::mem::forget(a);
    assert_eq!(mounts_under(&lay.root).len(), 2);

    // A second drill with the same record is refused while the first is not cleaned up.
    let err = drill::assemble(&[], &lay, &tools(), deadline()).unwrap_err();
    assert!(matches!(err, DrillError::RecordExists { .. }), "{err}");

    let left = drill::cleanup_from_record(&lay.record, &tools()).unwrap();
    assert!(left.record_found);
    let mut unmounted = left.unmounted.clone();
    unmounted.sort();
    assert_eq!(
        unmounted,
        vec![lay.root.join("d-resta"), lay.root.join("d-restb-p1")]
    );
    assert_eq!(left.partitions_removed, vec![PathBuf::from(&rest_b)]);
    assert!(left.removed_dirs.contains(&lay.root));
    assert!(mounts_under(&lay.root).is_empty());
    assert!(!lay.root.exists() && !lay.record.exists());
    assert!(!Path::new(&format!("{rest_b}p1")).exists());

    // Idempotent: nothing left, nothing done.
    let again = drill::cleanup_from_record(&lay.record, &tools()).unwrap();
    assert_eq!(again, drill::Leftovers::default());
}

#[test]
fn cleanup_refuses_a_record_that_names_a_mount_outside_its_root() {
    root_or_skip!();
    let lab = Lab::new("drill-foreign", Duration::from_secs(60));
    let live = lab.loop_dev("live", 64);
    lab.mkfs(&live, "ext4");
    let live_mp = lab.mount(&live, "live");
    let lay = layout(&lab, "run-foreign");
    let rec = drill::DrillRecord {
        version: 1,
        pid: 1,
        root: lay.root.clone(),
        mount_points: vec![live_mp.clone()],
        ..Default::default()
    };
    std::fs::write(&lay.record, serde_json::to_vec(&rec).unwrap()).unwrap();
    let err = drill::cleanup_from_record(&lay.record, &tools()).unwrap_err();
    assert!(matches!(err, DrillError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains(live_mp.to_str().unwrap()), "{err}");
    assert!(
        mounted_at(&live_mp).is_some(),
        "a foreign mount is left alone"
    );
    assert!(lay.record.exists(), "the record is kept for the operator");
}

#[test]
fn a_busy_copy_is_reported_not_lazily_unmounted_and_cleanup_finishes_later() {
    root_or_skip!();
    let lab = Lab::new("drill-busy", Duration::from_secs(120));
    let live = lab.loop_dev("live", 64);
    fill(&lab, &live, "ext4", "live", "busy");
    let rest = restore(&lab, "live", "rest");
    let lay = layout(&lab, "run-busy");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    let a = drill::assemble(
        &[disk("d-rest", "d-live", &rest)],
        &lay,
        &tools(),
        deadline(),
    )
    .unwrap();
    let mp = only(&a, "d-rest").mount_point.clone().unwrap();
    // A verify script that left a file open on the copy.
    let held = std::fs::File::open(mp.join("hello.txt")).unwrap();
    let err = a.teardown().unwrap_err();
    match &err {
        DrillError::Leftover { problems } => {
            assert!(
                problems.iter().any(|p| p.contains(mp.to_str().unwrap())),
                "{err}"
            )
        }
        other => panic!("{other}"),
    }
    assert!(
        mounted_at(&mp).is_some(),
        "still mounted, not detached lazily"
    );
    assert!(lay.record.exists(), "the record stays for the next cleanup");
    drop(held);
    let left = drill::cleanup_from_record(&lay.record, &tools()).unwrap();
    assert_eq!(left.unmounted, vec![mp.clone()]);
    assert!(mounted_at(&mp).is_none() && !lay.root.exists() && !lay.record.exists());
}

/// Writes an LVM2 PV label (sector 1) that `blkid` recognises, CRC and all:
/// enough for the drill to see a PV. The real LVM path (vgimportclone on real
/// PVs beside a live VG) is the VM lane's; this lane has no lvm2.
fn pv_label(img: &Path, uuid: &[u8; 32]) {
    const TAB: [u32; 16] = [
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158,
        0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4,
        0xa00ae278, 0xbdbdf21c,
    ];
    let mut s = vec![0u8; 512];
    s[0..8].copy_from_slice(b"LABELONE");
    s[8..16].copy_from_slice(&1u64.to_le_bytes());
    s[20..24].copy_from_slice(&32u32.to_le_bytes());
    s[24..32].copy_from_slice(b"LVM2 001");
    s[32..64].copy_from_slice(uuid);
    let mut crc: u32 = 0xf597a6cf;
    for &b in &s[20..] {
        crc ^= u32::from(b);
        crc = (crc >> 4) ^ TAB[(crc & 0xf) as usize];
        crc = (crc >> 4) ^ TAB[(crc & 0xf) as usize];
    }
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(&s).unwrap();
}

/// A stand-in `lvm` that logs each call, refuses (exit 99) any call without
/// the drill's device restriction, and plays one VG of two PVs whose LV
/// `lv0` is the block device `lv`.
fn fake_lvm(lab: &Lab, pva: &str, pvb: &str, lv: &str) -> (PathBuf, PathBuf) {
    let state = lab.dir.join("lvm-state");
    std::fs::create_dir_all(&state).unwrap();
    let script = lab.dir.join("fake-lvm");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
S='{state}'
echo "$*" >> "$S/log"
cmd=$1
[ "$2" = --config ] || {{ echo UNRESTRICTED >> "$S/log"; exit 99; }}
case "$3" in *'"r|.*|"'*) ;; *) echo UNRESTRICTED >> "$S/log"; exit 99;; esac
case "$3" in *use_devicesfile=0*) ;; *) echo UNRESTRICTED >> "$S/log"; exit 99;; esac
shift 3
vg=vg_live
if [ -f "$S/name" ]; then vg=$(cat "$S/name"); fi
case "$cmd" in
pvs) printf '  %s|%s|UUIDVG|2\n  %s|%s|UUIDVG|2\n' '{pva}' "$vg" '{pvb}' "$vg" ;;
vgimportclone) [ "$1" = --basevgname ] || exit 3; [ "$3 $4" = '{pva} {pvb}' ] || exit 4; echo "$2" > "$S/name" ;;
vgchange) case "$1" in -ay) touch "$S/active";; -an) rm -f "$S/active";; esac ;;
lvs) printf '  lv0|%s\n  pool|\n' '{lv}' ;;
vgs) if [ -f "$S/name" ]; then echo "  $(cat "$S/name")"; fi ;;
vgremove) [ "$1" = -f ] || exit 6; rm -f "$S/name"; touch "$S/removed" ;;
*) exit 5 ;;
esac
exit 0
"#,
            state = state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, state)
}

#[test]
fn lvm_clone_is_imported_activated_and_removed_only_through_the_device_restriction() {
    root_or_skip!();
    let lab = Lab::new("drill-lvm", Duration::from_secs(120));
    let pva = lab.loop_dev("pva", 8);
    let pvb = lab.loop_dev("pvb", 8);
    pv_label(
        &lab.dir.join("img/pva.img"),
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    pv_label(
        &lab.dir.join("img/pvb.img"),
        b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    );
    for d in [&pva, &pvb] {
        run("blockdev", &["--flushbufs", d]);
        assert_eq!(
            run("blkid", &["-p", "-s", "TYPE", "-o", "value", d]).trim(),
            "LVM2_member"
        );
    }
    // The "LV": its device is what the fake lvs names.
    let lv = lab.loop_dev("lv", 64);
    fill(&lab, &lv, "ext4", "lv", "on the lv");
    let (script, state) = fake_lvm(&lab, &pva, &pvb, &lv);
    let tools = Tools {
        lvm: Some(script),
        ..tools()
    };

    let lay = layout(&lab, "20261202T023000Z-9f3a0c1e");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    let a = drill::assemble(
        &[disk("d-pvb", "d-src2", &pvb), disk("d-pva", "d-src1", &pva)],
        &lay,
        &tools,
        deadline(),
    )
    .unwrap();
    let vg = format!("{}9f3a0c1e_0", drill::CLONE_VG_PREFIX);
    assert_eq!(
        std::fs::read_to_string(state.join("name")).unwrap().trim(),
        vg
    );
    assert!(state.join("active").exists());
    let f = &a.filesystems()[0];
    assert_eq!(a.filesystems().len(), 1, "{:?}", a.filesystems());
    assert_eq!(f.lvm, Some((vg.clone(), "lv0".to_string())));
    assert_eq!(f.check, FsCheck::Passed);
    let mp = f.mount_point.clone().unwrap();
    assert_eq!(mp.file_name().unwrap(), "d-pvb-lv0");
    assert_eq!(
        std::fs::read_to_string(mp.join("hello.txt")).unwrap(),
        "on the lv"
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lay.record).unwrap()).unwrap();
    assert_eq!(rec["clone_vgs"][0], vg.as_str());

    // Crash, then cleanup from the record: deactivated and removed, restricted.
    std::mem::forget(a);
    let left = drill::cleanup_from_record(&lay.record, &tools).unwrap();
    assert_eq!(left.removed_vgs, vec![vg.clone()]);
    assert!(state.join("removed").exists() && !state.join("active").exists());
    assert!(mounts_under(&lay.root).is_empty() && !lay.root.exists());

    let log = std::fs::read_to_string(state.join("log")).unwrap();
    assert!(!log.contains("UNRESTRICTED"), "{log}");
    let cmds: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        cmds,
        [
            "pvs",
            "vgimportclone",
            "pvs",
            "vgchange",
            "lvs",
            "vgs",
            "vgchange",
            "vgremove"
        ],
        "{log}"
    );
    for line in log.lines() {
        // filter and global_filter each accept the two clone PVs, nothing else.
        assert_eq!(
            line.matches("\"a|").count(),
            4,
            "only the two clone PVs: {line}"
        );
        assert!(
            line.contains(&format!("a|^{pva}$|")) && line.contains(&format!("a|^{pvb}$|")),
            "{line}"
        );
    }
}

#[test]
fn a_failure_mid_assembly_tears_down_what_was_built() {
    root_or_skip!();
    let lab = Lab::new("drill-abort", Duration::from_secs(120));
    let live_x = lab.loop_dev("livex", 320);
    fill(&lab, &live_x, "xfs", "live-x", "x");
    let live_e = lab.loop_dev("livee", 64);
    fill(&lab, &live_e, "ext4", "live-e", "e");
    let rest_x = restore(&lab, "livex", "restx");
    let rest_e = restore(&lab, "livee", "reste");
    let lay = layout(&lab, "run-abort");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    // The xfs copy is checked and mounted first; then e2fsck cannot start.
    let tools = Tools {
        e2fsck: lab.dir.join("no-such-e2fsck"),
        ..tools()
    };
    let err = drill::assemble(
        &[
            disk("d-restx", "d-livex", &rest_x),
            disk("d-reste", "d-livee", &rest_e),
        ],
        &lay,
        &tools,
        deadline(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DrillError::Spawn { tool: "e2fsck", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-e2fsck"), "{err}");
    assert!(
        mounts_under(&lay.root).is_empty(),
        "the xfs copy was unmounted"
    );
    assert!(!lay.root.exists() && !lay.record.exists());
}

#[test]
fn frozen_ext4_with_an_open_unlinked_file_passes_after_the_mount_processes_its_orphans() {
    root_or_skip!();
    let lab = Lab::new("drill-orphan", Duration::from_secs(120));
    let live = lab.loop_dev("live", 64);
    fill(&lab, &live, "ext4", "live", "orphan");
    let mp = lab.mount(&live, "live");
    // A database's temporary file: open, unlinked, then the snapshot (frozen).
    let tmp = {
        use std::io::Write;
        let mut f = std::fs::File::create(mp.join("ibtmp")).unwrap();
        f.write_all(&vec![b't'; 200_000]).unwrap();
        f.sync_all().unwrap();
        std::fs::remove_file(mp.join("ibtmp")).unwrap();
        f
    };
    {
        let _thaw = common::ThawOnDrop(mp.clone());
        assert!(common::fsfreeze("-f", &mp));
        let src = lab.dir.join("img/live.img");
        let dst = lab.dir.join("img/rest.img");
        run(
            "cp",
            &[
                "--sparse=always",
                src.to_str().unwrap(),
                dst.to_str().unwrap(),
            ],
        );
        assert!(common::fsfreeze("-u", &mp));
    }
    drop(tmp);
    let rest = lab.attach(&lab.dir.join("img/rest.img"));
    // The premise: `e2fsck -fn` alone calls this clean copy broken.
    let plain = Command::new("e2fsck")
        .env("PATH", SYSTEM_PATH)
        .args(["-f", "-n", &rest])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(4), "{plain:?}");

    let lay = layout(&lab, "run-orphan");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    let a = drill::assemble(
        &[disk("d-rest", "d-live", &rest)],
        &lay,
        &tools(),
        deadline(),
    )
    .unwrap();
    let f = only(&a, "d-rest");
    assert_eq!(f.check, FsCheck::Passed, "{f:?}");
    let copy = f.mount_point.clone().unwrap();
    assert_eq!(
        std::fs::read_to_string(copy.join("hello.txt")).unwrap(),
        "orphan"
    );
    assert!(!copy.join("ibtmp").exists());
    a.teardown().unwrap();
    assert!(!lay.root.exists() && !lay.record.exists());
}

#[test]
fn a_passed_deadline_stops_before_any_tool_and_leaves_nothing() {
    root_or_skip!();
    let lab = Lab::new("drill-deadline", Duration::from_secs(60));
    let live = lab.loop_dev("live", 64);
    fill(&lab, &live, "ext4", "live", "d");
    let rest = restore(&lab, "live", "rest");
    let lay = layout(&lab, "run-deadline");
    let _cleanup = CleanupOnDrop(lay.record.clone());
    let err = drill::assemble(
        &[disk("d-rest", "d-live", &rest)],
        &lay,
        &tools(),
        Instant::now(),
    )
    .unwrap_err();
    assert!(matches!(err, DrillError::Deadline { .. }), "{err}");
    assert!(err.to_string().contains("blkid"), "{err}");
    assert!(!lay.root.exists() && !lay.record.exists());
}

#[test]
fn a_system_like_disk_reports_its_other_partitions_and_a_two_disk_btrfs_is_not_run() {
    root_or_skip!();
    let lab = Lab::new("drill-mixed", Duration::from_secs(180));
    // GPT: p1 swap, p2 empty, p3 ext4.
    let sys = lab.loop_dev("sys", 96);
    let parts = lab.partition(&sys, &[16, 16, 64]);
    run("mkswap", &[&parts[0]]);
    fill(&lab, &parts[2], "ext4", "sys", "root fs");
    // One btrfs over two disks.
    let b1 = lab.loop_dev("bt1", 256);
    let b2 = lab.loop_dev("bt2", 256);
    run(
        "mkfs.btrfs",
        &["-q", "-f", "-d", "raid0", "-m", "raid1", &b1, &b2],
    );
    let rest_sys = restore(&lab, "sys", "rsys");
    let rest_b1 = restore(&lab, "bt1", "rbt1");
    let rest_b2 = restore(&lab, "bt2", "rbt2");

    let (lay, _cleanup, a) = assembled(
        &lab,
        "run-mixed",
        &[
            disk("d-sys", "d-livesys", &rest_sys),
            disk("d-bt1", "d-livebt1", &rest_b1),
            disk("d-bt2", "d-livebt2", &rest_b2),
        ],
    );
    let root_fs = only(&a, "d-sys");
    assert_eq!(root_fs.check, FsCheck::Passed);
    assert_eq!(root_fs.device, PathBuf::from(format!("{rest_sys}p3")));
    assert_eq!(
        root_fs.mount_point.as_deref(),
        Some(lay.root.join("d-sys-p3").as_path())
    );
    let skipped: Vec<(String, String)> = a
        .skipped()
        .iter()
        .map(|s| (s.device.display().to_string(), s.why.clone()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].0 == format!("{rest_sys}p1") && skipped[0].1.contains("swap"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].0 == format!("{rest_sys}p2") && skipped[1].1.contains("nothing"),
        "{skipped:?}"
    );
    for id in ["d-bt1", "d-bt2"] {
        let b = only(&a, id);
        assert_eq!(b.fstype, FsType::Btrfs);
        assert!(
            matches!(&b.check, FsCheck::NotRun { why } if why.contains("several disks")),
            "{b:?}"
        );
        assert!(b.mount_point.is_none());
    }
    assert_eq!(mounts_under(&lay.root).len(), 1);
    a.teardown().unwrap();
    assert!(!lay.root.exists() && !lay.record.exists());
}
