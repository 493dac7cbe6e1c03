//! After the thaw: wait until the group's snapshots are usable (or look
//! for a group a timed-out call made anyway), then tag them.

use super::*;

/// The first pause after the thaw: the vendor saw members listed ~0.7 s after
/// the answer, and ESSD snapshots are usable within seconds.
const FIRST_POLL: Duration = Duration::from_millis(250);
/// How long a group may stay unlisted after ECS accepted it before the run
/// gives up on it: DescribeSnapshotGroups can briefly miss a new group (Alibaba's
/// own CSI driver caches created groups for this reason).
const LISTING_GRACE: Duration = Duration::from_secs(120);
/// How long, after CreateSnapshotGroup timed out, the run looks for a group
/// that ECS may have made anyway (at most the await timeout). A guess: a
/// request ECS processes at all is seen within seconds; waiting the whole
/// await timeout (30 min) would hold `appsnap run`, the vendor plugin's
/// command and the job's next run for nothing in the common case where the
/// request was never processed.
const LATE_GROUP_WAIT: Duration = Duration::from_secs(30);

impl Run<'_> {
    /// A usable group must hold one snapshot per disk, each complete or
    /// Available (vendor code 7 otherwise): an `accomplished` group is usable
    /// whatever its members say, so they are checked here.
    fn check_members(&mut self, wanted: &[DiskId], g: &SnapshotGroup) {
        for d in wanted {
            match g.snapshots.iter().find(|s| s.source_disk_id == d.as_str()) {
                None => self.fail(
                    Outcome::GroupSnapshotBadState,
                    format!("group {} has no snapshot of disk {d}", g.snapshot_group_id),
                ),
                Some(s) if !s.available && s.progress != "100%" => self.fail(
                    Outcome::GroupSnapshotBadState,
                    format!(
                        "snapshot {} of group {} is not complete ({})",
                        s.snapshot_id, g.snapshot_group_id, s.progress
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    // ---- AwaitGroup: until the snapshots are usable, not until they are uploaded.

    pub(super) async fn await_group(&mut self, prep: Prepared, creation: Creation) -> Step {
        let (id, accepted_at) = match creation {
            Creation::Nothing | Creation::Throttled { .. } => return Step::Done,
            // Seen usable (or failed) while frozen: nothing more to wait for.
            Creation::Accepted { seen: Some(g), .. } => {
                let failed = g.status == "failed";
                if !failed {
                    self.check_members(prep.wanted(), &g);
                }
                self.last_seen = Some((*g).clone());
                return if failed { Step::Done } else { Step::Tag(*g) };
            }
            Creation::Accepted { id, at, seen: None } => (id, at),
            // The call timed out: a group with our name may appear anyway, late.
            Creation::TimedOut => {
                let wait = self.env.await_timeout.min(LATE_GROUP_WAIT);
                match self.find_late_group(Instant::now() + wait).await {
                    Some(id) => (id, Instant::now()),
                    None => return Step::Done,
                }
            }
        };
        let ecs = &self.env.ecs;
        let until = Instant::now() + self.env.await_timeout;
        let filter = SnapshotGroupFilter {
            ids: vec![id.clone()],
            ..SnapshotGroupFilter::default()
        };
        let listed_by = accepted_at + LISTING_GRACE;
        let mut pause = FIRST_POLL.min(self.env.poll_interval);
        loop {
            match ecs
                .describe_snapshot_groups(&filter, Self::call_deadline().min(until))
                .await
            {
                Ok(groups) => match groups.into_iter().find(|g| g.snapshot_group_id == id) {
                    Some(g) => match usability(&g, prep.wanted()) {
                        Usability::Usable => {
                            self.check_members(prep.wanted(), &g);
                            self.last_seen = Some(g.clone());
                            return Step::Tag(g);
                        }
                        Usability::Failed => {
                            self.fail(
                                Outcome::GroupBadState,
                                format!("snapshot group {id} failed"),
                            );
                            self.last_seen = Some(g);
                            return Step::Done;
                        }
                        Usability::NotYet => {}
                    },
                    None if Instant::now() >= listed_by => {
                        self.fail(
                            Outcome::GroupBadState,
                            format!(
                                "snapshot group {id} is still not listed by DescribeSnapshotGroups {}s after ECS accepted it",
                                LISTING_GRACE.as_secs()
                            ),
                        );
                        return Step::Done;
                    }
                    // Still being created: a new group can be missing from the list for a while.
                    None => {}
                },
                // An answer that will not change by asking again (refused, unreadable) ends the wait.
                Err(e) if Instant::now() >= until || !e.is_retryable() => {
                    let outcome = ecs_outcome(&e, Outcome::GroupBadState);
                    self.fail(outcome, format!("waiting for group {id}: {e}"));
                    return Step::Done;
                }
                Err(e) => warn!(job = %self.job.name, "waiting for group {id}: {e}; retrying"),
            }
            if Instant::now() + pause > until {
                self.fail(
                    Outcome::GroupSnapshotBadState,
                    format!(
                        "the snapshots of group {id} were not usable within {}s",
                        self.env.await_timeout.as_secs()
                    ),
                );
                return Step::Done;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.env.poll_interval);
        }
    }

    /// After CreateSnapshotGroup timed out, ECS may still process the request
    /// and the group appear later: it is looked for by name until `until`. A
    /// group found is crash-consistent at best (its point in time may be after
    /// the thaw) and is tagged so, as the README promises.
    async fn find_late_group(&mut self, until: Instant) -> Option<String> {
        let filter = SnapshotGroupFilter {
            instance_id: Some(self.env.instance_id.clone()),
            name: self.report.group_name.clone(),
            ..SnapshotGroupFilter::default()
        };
        let mut pause = FIRST_POLL.min(self.env.poll_interval);
        loop {
            match self
                .env
                .ecs
                .describe_snapshot_groups(&filter, Self::call_deadline().min(until))
                .await
            {
                Ok(groups) => {
                    if let Some(g) = groups.into_iter().next() {
                        let id = g.snapshot_group_id.clone();
                        self.warn(format!(
                            "group {id} appeared after CreateSnapshotGroup timed out; tagged crash-consistent"
                        ));
                        self.consistency = Consistency::Crash;
                        self.report.group_id = Some(id.clone());
                        return Some(id);
                    }
                }
                Err(e) if !e.is_retryable() => {
                    self.warn(format!(
                        "looking for a group named {} after the timeout: {e}",
                        self.report.group_name.as_deref().unwrap_or("")
                    ));
                    return None;
                }
                Err(e) => warn!(job = %self.job.name, "looking for a late group: {e}; retrying"),
            }
            if Instant::now() + pause > until {
                info!(
                    job = %self.job.name,
                    "no group named {} appeared within {}s of the timeout",
                    self.report.group_name.as_deref().unwrap_or(""),
                    self.env.await_timeout.min(LATE_GROUP_WAIT).as_secs()
                );
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.env.poll_interval);
        }
    }

    // ---- Tag the snapshots with the consistency achieved.

    pub(super) async fn tag(&mut self, group: SnapshotGroup) -> Step {
        let ids: Vec<String> = group
            .snapshots
            .iter()
            .map(|s| s.snapshot_id.clone())
            .collect();
        if ids.is_empty() {
            self.fail(
                Outcome::GroupSnapshotBadState,
                format!("group {} lists no snapshots", group.snapshot_group_id),
            );
            return Step::Done;
        }
        let mut tags = vec![
            self.job_tag(),
            Tag::new(TAG_CONSISTENCY, self.consistency.as_str()),
        ];
        if let Some((k, v)) = vendor_tag(self.consistency) {
            tags.push(Tag::new(k, v));
        }
        // The pre-script's position tags belong with the snapshots a
        // restore starts from (group tags do not reach them).
        tags.extend(
            self.report
                .script_tags
                .iter()
                .map(|(k, v)| Tag::new(k.as_str(), v.as_str())),
        );
        let mut failed = None;
        for chunk in ids.chunks(crate::cloud::ecs::MAX_TAG_RESOURCES) {
            if let Err(e) = self
                .env
                .ecs
                .tag_resources("snapshot", chunk, &tags, Self::call_deadline())
                .await
            {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            let outcome = ecs_outcome(&e, Outcome::TagFailed);
            self.fail(outcome, format!("TagResources: {e}"));
        }
        Step::Done
    }
}

/// Whether a listed group can be used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Usability {
    /// One snapshot per wanted disk, each `Available`, or the group `accomplished`.
    Usable,
    /// Not yet: members missing or still unavailable.
    NotYet,
    /// The group failed.
    Failed,
}

/// Whether `g`, made of the disks `wanted`, can be used to create or roll back
/// disks (ESSD snapshots are, within seconds, long before the upload ends).
pub(super) fn usability(g: &SnapshotGroup, wanted: &[DiskId]) -> Usability {
    match g.status.as_str() {
        "failed" => return Usability::Failed,
        "accomplished" => return Usability::Usable,
        _ => {}
    }
    let each_listed = wanted.iter().all(|d| {
        g.snapshots
            .iter()
            .any(|s| s.source_disk_id == d.as_str() && s.available)
    });
    if !wanted.is_empty() && each_listed && g.snapshots.len() == wanted.len() {
        Usability::Usable
    } else {
        Usability::NotYet
    }
}

/// Where `g`'s upload stands: its status and its slowest snapshot's progress.
pub fn upload_of(g: &SnapshotGroup) -> crate::state::Upload {
    let progress = g
        .snapshots
        .iter()
        .filter_map(|s| s.progress.trim_end_matches('%').trim().parse::<u32>().ok())
        .min()
        .map(|p| format!("{p}%"))
        .unwrap_or_default();
    crate::state::Upload {
        status: g.status.clone(),
        progress,
        checked_at: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(status: &str, members: &[(&str, bool, &str)]) -> SnapshotGroup {
        SnapshotGroup {
            snapshot_group_id: "ssg-1".into(),
            status: status.into(),
            snapshots: members
                .iter()
                .map(
                    |(disk, available, progress)| crate::cloud::ecs::GroupSnapshot {
                        snapshot_id: format!("s-{disk}"),
                        source_disk_id: disk.to_string(),
                        available: *available,
                        progress: progress.to_string(),
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_group_is_usable_once_every_disk_has_an_available_snapshot() {
        let wanted = [DiskId::parse("d-a").unwrap(), DiskId::parse("d-b").unwrap()];
        let u = |g: &SnapshotGroup| usability(g, &wanted);
        // Listed without members, as right after the answer.
        assert_eq!(u(&group("progressing", &[])), Usability::NotYet);
        // One of two disks ("Unexpected length of the snapshot group").
        assert_eq!(
            u(&group("progressing", &[("d-a", true, "0%")])),
            Usability::NotYet
        );
        // Both listed, one not yet Available.
        assert_eq!(
            u(&group(
                "progressing",
                &[("d-a", true, "3%"), ("d-b", false, "0%")]
            )),
            Usability::NotYet
        );
        // A snapshot of another disk does not count.
        assert_eq!(
            u(&group(
                "progressing",
                &[("d-a", true, "3%"), ("d-c", true, "0%")]
            )),
            Usability::NotYet
        );
        assert_eq!(
            u(&group(
                "progressing",
                &[("d-a", true, "3%"), ("d-b", true, "0%")]
            )),
            Usability::Usable
        );
        assert_eq!(u(&group("accomplished", &[])), Usability::Usable);
        assert_eq!(
            u(&group("failed", &[("d-a", true, "3%")])),
            Usability::Failed
        );
        // Nothing wanted (never for appsnap's own requests) is never usable by members alone.
        assert_eq!(
            usability(&group("progressing", &[]), &[]),
            Usability::NotYet
        );
    }

    #[test]
    fn upload_reports_the_slowest_snapshot() {
        let g = group("progressing", &[("d-a", true, "80%"), ("d-b", true, "35%")]);
        let u = upload_of(&g);
        assert_eq!(
            (u.status.as_str(), u.progress.as_str()),
            ("progressing", "35%")
        );
        assert!(u.is_pending());
        assert!(!upload_of(&group("accomplished", &[("d-a", true, "100%")])).is_pending());
    }
}
