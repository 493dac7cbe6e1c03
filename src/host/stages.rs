//! Which file systems may be frozen at the same time.
//!
//! FIFREEZE costs 20–50 ms per file system even after `syncfs` (the kernel
//! still commits its journal and waits for in-flight I/O), and writers on the
//! first file system stay blocked while the next one freezes. Freezing
//! independent file systems in parallel shortens the pause to the slowest
//! one. Nesting is the only order the plan cares about (children before
//! parents), so a target waits only for targets mounted beneath it.

use std::path::Path;

use super::protocol::Target;

/// Groups target indices into stages: every target of a stage may be frozen
/// in parallel once all earlier stages are frozen. Thaw order is unaffected
/// (reverse of the plan).
pub fn freeze_stages(targets: &[Target]) -> Vec<Vec<usize>> {
    let mut stage_of = vec![0usize; targets.len()];
    // A target's stage is one more than that of the deepest target nested under it.
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(depth(&targets[i].mount_point)));
    for &i in &order {
        let below = (0..targets.len())
            .filter(|&j| j != i && nested_under(&targets[j].mount_point, &targets[i].mount_point))
            .map(|j| stage_of[j] + 1)
            .max()
            .unwrap_or(0);
        stage_of[i] = below;
    }
    let stages = stage_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); stages];
    for (i, s) in stage_of.into_iter().enumerate() {
        out[s].push(i);
    }
    out
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

/// `inner` is a proper descendant of `outer` (by path components, not bytes).
fn nested_under(inner: &Path, outer: &Path) -> bool {
    inner != outer && inner.starts_with(outer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn t(p: &str) -> Target {
        Target {
            mount_point: PathBuf::from(p),
            mount_id: 1,
            dev_major: 7,
            dev_minor: 0,
            fs_type: "ext4".into(),
            st_dev: None,
        }
    }

    #[test]
    fn independent_file_systems_share_one_stage() {
        let s = freeze_stages(&[t("/srv/a"), t("/srv/b"), t("/data")]);
        assert_eq!(s, vec![vec![0, 1, 2]]);
    }

    #[test]
    fn children_come_a_stage_before_their_parents() {
        // Plan order: deepest first.
        let s = freeze_stages(&[
            t("/srv/db/wal/x"),
            t("/srv/db/wal"),
            t("/srv/db"),
            t("/logs"),
        ]);
        assert_eq!(s, vec![vec![0, 3], vec![1], vec![2]]);
    }

    #[test]
    fn sibling_prefixes_are_not_nesting() {
        // "/srv/data2" is not under "/srv/data".
        let s = freeze_stages(&[t("/srv/data2"), t("/srv/data")]);
        assert_eq!(s, vec![vec![0, 1]]);
    }

    #[test]
    fn a_parent_waits_for_its_deepest_chain() {
        let s = freeze_stages(&[t("/a/b/c"), t("/a/b"), t("/a/x"), t("/a")]);
        assert_eq!(s, vec![vec![0, 2], vec![1], vec![3]]);
    }

    #[test]
    fn nothing_to_freeze_means_no_stage() {
        assert!(freeze_stages(&[]).is_empty());
    }
}
