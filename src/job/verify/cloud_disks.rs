//! The drill's cloud side: one disk per snapshot of the group, made in the
//! instance's zone, attached here, found by its serial, and always released
//! again (detached, then deleted). Every disk carries the drill's tags —
//! owner, instance, group and run — so a crash leftover is found by tag even
//! when the record missed its ID, and only a disk carrying this
//! installation's owner tag is ever detached or deleted.

use std::path::Path;
use std::time::Duration;

use thiserror::Error;
use tokio::time::{sleep, Instant};

use super::record::{DrillDisk, DrillRecord};
use crate::cloud::ecs::{
    ClientToken, CreateDisk, Disk, DiskDeleted, DrillCategory, EcsClient, EcsError, Tag,
    NOT_ATTACHED_CODES,
};
use crate::cloud::{TAG_INSTANCE, TAG_VERIFY_GROUP, TAG_VERIFY_RUN};
use crate::host::devices::BlockGraph;
use crate::host::drill::RestoredDisk;
use crate::host::DiskRequest;
use crate::owner::{OwnerId, TAG_OWNER};
use crate::policy::DiskId;

/// How often a status or a device is looked for.
const POLL: Duration = Duration::from_millis(500);

/// A cloud step of the drill that failed.
#[derive(Debug, Error)]
pub enum DiskStepError {
    /// An ECS call failed.
    #[error("{action} {subject}: {source}")]
    Ecs {
        /// The call.
        action: &'static str,
        /// The disk or snapshot.
        subject: String,
        /// The error.
        source: EcsError,
    },
    /// A disk did not reach a status in time.
    #[error("disk {disk} still {status:?} after {waited_secs} s (waiting for {want})")]
    Status {
        /// The disk.
        disk: String,
        /// Its last status ("" when not listed).
        status: String,
        /// What was awaited.
        want: &'static str,
        /// How long.
        waited_secs: u64,
    },
    /// An attached disk never showed up as a block device.
    #[error("disk {disk} is attached (In_use) but no block device with serial {serial} appeared in {by_id_dir} or sysfs within {waited_secs} s")]
    NoDevice {
        /// The disk.
        disk: String,
        /// Its serial.
        serial: String,
        /// Where the link was looked for.
        by_id_dir: String,
        /// How long.
        waited_secs: u64,
    },
    /// The drill record could not be written: nothing more is created.
    #[error("{0}")]
    Record(#[from] super::record::RecordError),
}

/// What the cloud steps need.
pub struct CloudSide<'a> {
    /// The client.
    pub ecs: &'a EcsClient,
    /// This instance.
    pub instance_id: &'a str,
    /// This installation.
    pub owner: &'a OwnerId,
    /// Where the drill record lives.
    pub state_dir: &'a Path,
    /// Where by-id links appear.
    pub by_id_dir: &'a Path,
    /// sysfs (`/sys` outside tests).
    pub sys_root: &'a Path,
    /// Categories to try, in order.
    pub categories: &'a [DrillCategory],
}

/// The serial the guest sees for disk `id`: DescribeDisks' `SerialNumber`,
/// else the ID without `d-` (the rule the run's [`DiskRequest`] keeps).
pub fn serial_of(listed: &[Disk], id: &str) -> String {
    let serial = listed
        .iter()
        .find(|l| l.disk_id == id)
        .map(|l| l.serial_number.clone())
        .filter(|s| !s.is_empty());
    match DiskId::parse(id) {
        Ok(id) => DiskRequest { id, serial }.serial().to_string(),
        Err(_) => serial.unwrap_or_else(|| id.to_string()),
    }
}

/// The tags every drill disk carries.
pub fn drill_tags(owner: &OwnerId, instance_id: &str, group_id: &str, run_id: &str) -> Vec<Tag> {
    vec![
        Tag::new(TAG_OWNER, owner.as_str()),
        Tag::new(TAG_INSTANCE, instance_id),
        Tag::new(TAG_VERIFY_GROUP, group_id),
        Tag::new(TAG_VERIFY_RUN, run_id),
    ]
}

/// Whether a listed disk is one of this installation's drill disks on this
/// instance: the one test that guards every detach and delete.
pub fn is_our_drill_disk(d: &Disk, owner: &OwnerId, instance_id: &str) -> bool {
    let tag = |k: &str| d.tag(k);
    tag(TAG_OWNER) == Some(owner.as_str())
        && tag(TAG_INSTANCE) == Some(instance_id)
        && tag(TAG_VERIFY_GROUP).is_some()
        && tag(TAG_VERIFY_RUN).is_some()
}

/// What [`CloudSide::release`] did.
#[derive(Debug, Default)]
pub struct Released {
    /// Disks deleted now.
    pub deleted: Vec<String>,
    /// What could not be released, each with why.
    pub problems: Vec<String>,
}

/// What releasing one listed disk takes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseStep {
    /// Not ours to touch (or attached elsewhere), with why.
    LeaveAlone(String),
    /// Attaching here: wait until attached, then detach.
    AwaitAttachedThenDetach,
    /// Attached here: detach.
    Detach,
    /// Available, creating or detaching: wait until available, then delete.
    AwaitAvailable,
}

/// The first step of releasing `d` (see [`CloudSide::release`]).
pub fn release_step(d: &Disk, owner: &OwnerId, instance_id: &str) -> ReleaseStep {
    if !is_our_drill_disk(d, owner, instance_id) {
        return ReleaseStep::LeaveAlone("it does not carry this installation's drill tags".into());
    }
    let here = d.instance_id == instance_id;
    match d.status.as_str() {
        "Attaching" if here => ReleaseStep::AwaitAttachedThenDetach,
        "In_use" if here => ReleaseStep::Detach,
        "Available" | "Creating" | "ReIniting" | "Detaching" => ReleaseStep::AwaitAvailable,
        other if !d.instance_id.is_empty() && !here => ReleaseStep::LeaveAlone(format!(
            "{other} on instance {}, not this one",
            d.instance_id
        )),
        // Attaching or In_use with no instance reported: ask to detach
        // anyway (an answer that it is not attached is fine).
        _ => ReleaseStep::Detach,
    }
}

impl CloudSide<'_> {
    /// Creates one disk per record entry (the record is saved before each
    /// call with its token, and after with the new ID).
    pub async fn create_all(
        &self,
        rec: &mut DrillRecord,
        zone_id: &str,
        deadline: Instant,
    ) -> Result<(), DiskStepError> {
        let tags = drill_tags(self.owner, self.instance_id, &rec.group_id, &rec.run_id);
        for i in 0..rec.disks.len() {
            if rec.disks[i].disk_id.is_some() {
                continue;
            }
            let d: DrillDisk = rec.disks[i].clone();
            let id = self
                .create_one(&d, zone_id, &tags, &rec.run_id, deadline)
                .await?;
            rec.disks[i].disk_id = Some(id);
            rec.save(self.state_dir)?;
        }
        Ok(())
    }

    async fn create_one(
        &self,
        d: &DrillDisk,
        zone_id: &str,
        tags: &[Tag],
        run_id: &str,
        deadline: Instant,
    ) -> Result<String, DiskStepError> {
        let token = ClientToken::parse(&d.client_token).unwrap_or_else(|_| ClientToken::generate());
        let first = self
            .categories
            .first()
            .cloned()
            .unwrap_or_else(|| DrillCategory::new("cloud_essd", Some("PL0")));
        let req = CreateDisk {
            zone_id: zone_id.to_string(),
            snapshot_id: d.snapshot_id.clone(),
            category: first.category.clone(),
            performance_level: first.performance_level.clone(),
            disk_name: format!("appsnap-verify-{}", d.source_disk_id),
            description: format!(
                "appsnap restore drill {run_id}: copy of {} from {}",
                d.source_disk_id, d.snapshot_id
            ),
            tags: tags.to_vec(),
            client_token: token,
        };
        self.ecs
            .create_disk_with_fallback(&req, self.categories, deadline)
            .await
            .map(|(id, _)| id)
            .map_err(|source| DiskStepError::Ecs {
                action: "CreateDisk from",
                subject: d.snapshot_id.clone(),
                source,
            })
    }

    /// Waits until every disk in `ids` reports `want`.
    pub async fn wait_status(
        &self,
        ids: &[String],
        want: &'static str,
        deadline: Instant,
    ) -> Result<Vec<Disk>, DiskStepError> {
        let started = Instant::now();
        let disk_ids: Vec<DiskId> = ids.iter().filter_map(|i| DiskId::parse(i).ok()).collect();
        loop {
            let listed = self
                .ecs
                .describe_disks_by_id(&disk_ids, deadline)
                .await
                .map_err(|source| DiskStepError::Ecs {
                    action: "DescribeDisks",
                    subject: ids.join(","),
                    source,
                })?;
            let pending = ids.iter().find_map(|id| {
                let status = listed
                    .iter()
                    .find(|d| &d.disk_id == id)
                    .map_or(String::new(), |d| d.status.clone());
                (status != want).then(|| (id.clone(), status))
            });
            match pending {
                None => return Ok(listed),
                Some((disk, status)) if Instant::now() + POLL >= deadline => {
                    return Err(DiskStepError::Status {
                        disk,
                        status,
                        want,
                        waited_secs: started.elapsed().as_secs(),
                    })
                }
                Some(_) => sleep(POLL).await,
            }
        }
    }

    /// Attaches every disk of the record to this instance.
    pub async fn attach_all(&self, ids: &[String], deadline: Instant) -> Result<(), DiskStepError> {
        for id in ids {
            self.ecs
                .attach_disk(self.instance_id, id, deadline)
                .await
                .map_err(|source| DiskStepError::Ecs {
                    action: "AttachDisk",
                    subject: id.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Waits for each attached disk's block device, found by serial as the
    /// run finds the job's disks.
    pub async fn devices(
        &self,
        rec: &DrillRecord,
        listed: &[Disk],
        deadline: Instant,
    ) -> Result<Vec<RestoredDisk>, DiskStepError> {
        let started = Instant::now();
        let mut out = Vec::new();
        for d in &rec.disks {
            let Some(id) = d.disk_id.as_deref() else {
                continue;
            };
            let serial = serial_of(listed, id);
            loop {
                let found = BlockGraph::read(self.sys_root)
                    .ok()
                    .and_then(|g| g.find_serial(self.by_id_dir, &serial));
                if let Some((name, _)) = found {
                    out.push(RestoredDisk {
                        disk_id: id.to_string(),
                        source_disk_id: d.source_disk_id.clone(),
                        device: Path::new("/dev").join(name),
                    });
                    break;
                }
                if Instant::now() + POLL >= deadline {
                    return Err(DiskStepError::NoDevice {
                        disk: id.to_string(),
                        serial,
                        by_id_dir: self.by_id_dir.display().to_string(),
                        waited_secs: started.elapsed().as_secs(),
                    });
                }
                sleep(POLL).await;
            }
        }
        Ok(out)
    }

    /// Detaches (when attached here) and deletes each disk that carries this
    /// installation's drill tags; a disk already gone counts as released.
    /// A disk between two states is waited for first (attaching: until
    /// attached, then detached; detaching or creating: until available).
    pub async fn release(&self, ids: &[String], deadline: Instant) -> Released {
        let mut out = Released::default();
        let problems = &mut out.problems;
        let disk_ids: Vec<DiskId> = ids.iter().filter_map(|i| DiskId::parse(i).ok()).collect();
        let listed = match self.ecs.describe_disks_by_id(&disk_ids, deadline).await {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("DescribeDisks {}: {e}", ids.join(",")));
                return out;
            }
        };
        let mut settle_attach = Vec::new();
        let mut detach = Vec::new();
        let mut delete = Vec::new();
        for d in &listed {
            match release_step(d, self.owner, self.instance_id) {
                ReleaseStep::LeaveAlone(why) => {
                    problems.push(format!("disk {}: {why}: left alone", d.disk_id))
                }
                ReleaseStep::AwaitAttachedThenDetach => settle_attach.push(d.disk_id.clone()),
                ReleaseStep::Detach => detach.push(d.disk_id.clone()),
                ReleaseStep::AwaitAvailable => delete.push(d.disk_id.clone()),
            }
        }
        if !settle_attach.is_empty() {
            match self.wait_status(&settle_attach, "In_use", deadline).await {
                Ok(_) => detach.extend(settle_attach),
                Err(e) => problems.push(e.to_string()),
            }
        }
        for id in detach {
            match self.ecs.detach_disk(self.instance_id, &id, deadline).await {
                Ok(()) => delete.push(id),
                // Already detached (a race with an earlier cleanup): delete it.
                Err(e) if e.code().is_some_and(|c| NOT_ATTACHED_CODES.contains(&c)) => {
                    delete.push(id)
                }
                Err(e) => problems.push(format!("DetachDisk {id}: {e}")),
            }
        }
        if !delete.is_empty() {
            if let Err(e) = self.wait_status(&delete, "Available", deadline).await {
                problems.push(e.to_string());
            }
        }
        for id in delete {
            match self.ecs.delete_disk(&id, deadline).await {
                Ok(DiskDeleted::Deleted) => out.deleted.push(id),
                Ok(DiskDeleted::AlreadyGone) => {}
                Err(e) => problems.push(format!("DeleteDisk {id}: {e}")),
            }
        }
        out
    }

    /// Drill disks of this installation on this instance, found by tag (a
    /// crash may have lost their IDs).
    pub async fn tagged_leftovers(
        &self,
        run_id: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<String>, EcsError> {
        let (key, value) = match run_id {
            Some(r) => (TAG_VERIFY_RUN, Some(r)),
            None => (TAG_OWNER, Some(self.owner.as_str())),
        };
        let listed = self.ecs.describe_disks_tagged(key, value, deadline).await?;
        Ok(listed
            .into_iter()
            .filter(|d| is_our_drill_disk(d, self.owner, self.instance_id))
            .map(|d| d.disk_id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerId {
        OwnerId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn disk(status: &str, instance: &str) -> Disk {
        Disk {
            disk_id: "d-copy".into(),
            status: status.into(),
            instance_id: instance.into(),
            tags: drill_tags(&owner(), "i-1", "ssg-1", "r1"),
            ..Default::default()
        }
    }

    #[test]
    fn each_state_of_a_drill_disk_has_its_way_out() {
        let step =
            |status: &str, instance: &str| release_step(&disk(status, instance), &owner(), "i-1");
        assert_eq!(step("In_use", "i-1"), ReleaseStep::Detach);
        assert_eq!(
            step("Attaching", "i-1"),
            ReleaseStep::AwaitAttachedThenDetach
        );
        // Detaching keeps its instance until it is done: no second DetachDisk
        // (ECS answers IncorrectDiskStatus), just wait and delete.
        assert_eq!(step("Detaching", "i-1"), ReleaseStep::AwaitAvailable);
        assert_eq!(step("Creating", ""), ReleaseStep::AwaitAvailable);
        assert_eq!(step("Available", ""), ReleaseStep::AwaitAvailable);
        assert!(matches!(
            step("In_use", "i-other"),
            ReleaseStep::LeaveAlone(_)
        ));
    }

    #[test]
    fn a_disk_without_all_our_drill_tags_is_never_touched() {
        let mut d = disk("Available", "");
        d.tags.retain(|t| t.key != TAG_VERIFY_RUN);
        assert!(matches!(
            release_step(&d, &owner(), "i-1"),
            ReleaseStep::LeaveAlone(_)
        ));
        let other = OwnerId::parse("ffffffffffffffffffffffffffffffff").unwrap();
        assert!(matches!(
            release_step(&disk("Available", ""), &other, "i-1"),
            ReleaseStep::LeaveAlone(_)
        ));
        assert!(matches!(
            release_step(&disk("Available", ""), &owner(), "i-2"),
            ReleaseStep::LeaveAlone(_)
        ));
    }
}
