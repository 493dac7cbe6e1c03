//! AttachDisk and DetachDisk for disks made by CreateDisk: the image becomes
//! a loop device (with its partitions) and a by-id link `virtio-<serial>`,
//! as udev would make for a virtio disk; detaching takes both away. Request
//! fields and codes: the SDK models and the API reference's error tables
//! (NOTES.md "Disk lifecycle").

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::DiskType;
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{CreatedDisk, DiskStatus, Sim};
use crate::util::log_time;

/// The longest serial a virtio-blk disk reports (and udev names links by).
pub const VIRTIO_SERIAL_MAX: usize = 20;

/// A boolean parameter (`true`/`false`, any case), if sent.
pub fn bool_param(p: &Params, name: &str) -> Result<Option<bool>, ApiError> {
    match p.get(name).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::invalid(format!(
            "The specified parameter {name} {v:?} is not a boolean."
        ))),
    }
}

fn disk_not_found() -> ApiError {
    ApiError::new(
        404,
        "InvalidDiskId.NotFound",
        "The specified disk does not exist.",
    )
}

fn incorrect_status() -> ApiError {
    ApiError::new(
        403,
        "IncorrectDiskStatus",
        "The operation is not supported in this status.",
    )
}

fn check_instance(sim: &Sim, p: &Params) -> Result<String, ApiError> {
    let instance = p.required("InstanceId")?.to_string();
    if sim.instance(&instance).is_none() {
        return Err(ApiError::new(
            404,
            "InvalidInstanceId.NotFound",
            "The specified InstanceId does not exist.",
        ));
    }
    Ok(instance)
}

/// The configured (not created) disk `id`'s refusal, if it is one: the
/// emulator attaches and detaches only disks made by CreateDisk.
fn configured_refusal(id: &str, configured: &[crate::config::DiskConfig]) -> Option<ApiError> {
    let d = configured.iter().find(|d| d.id == id)?;
    Some(if d.disk_type == DiskType::System {
        ApiError::new(
            403,
            "DiskTypeViolation",
            "The specified disk is a system disk and cannot support the operation.",
        )
    } else {
        ApiError::new(
            403,
            "OperationDenied",
            format!("ecs-sim attaches and detaches only disks made by CreateDisk; {id} is configured in sim.toml."),
        )
    })
}

/// AttachDisk: an `Available` disk of the instance's zone goes `Attaching`,
/// then `In_use` after `attach_delay_ms` with its loop device and link.
pub fn attach_disk(sim: &Arc<Sim>, p: &Params) -> Result<Value, ApiError> {
    let instance = check_instance(sim, p)?;
    let id = p.required("DiskId")?.to_string();
    let delete_with_instance = bool_param(p, "DeleteWithInstance")?.unwrap_or(false);
    if bool_param(p, "Bootable")?.unwrap_or(false) {
        // The emulated instance has its system disk.
        return Err(ApiError::new(
            403,
            "IncorrectInstanceStatus",
            "The current status of the resource does not support this operation.",
        ));
    }
    let way = match (&sim.cfg.restore.attach_command, &sim.cfg.restore.by_id_dir) {
        (Some(argv), _) => DeviceWay::Command(argv.clone()),
        (None, Some(dir)) => DeviceWay::Link(dir.clone()),
        (None, None) => {
            return Err(ApiError::new(
                403,
                "OperationDenied",
                "ecs-sim: AttachDisk needs [restore] by_id_dir (the by-id directory for the disk's link) or attach_command in sim.toml.",
            ))
        }
    };
    let generation = {
        let mut inner = sim.lock();
        let now = inner.now();
        if let Some(e) = configured_refusal(&id, &inner.disks) {
            return Err(e);
        }
        let zone = sim.cfg.zone_id.clone();
        let d = find_created(&mut inner.created, &id)?;
        if d.status != DiskStatus::Available {
            return Err(incorrect_status());
        }
        if d.zone_id != zone {
            return Err(ApiError::new(
                403,
                "ResourcesNotInSameZone",
                "The specified instance and disk are not in the same zone.",
            ));
        }
        d.status = DiskStatus::Attaching;
        d.instance_id = instance;
        d.delete_with_instance = delete_with_instance;
        d.attached_at = Some(now);
        d.generation += 1;
        d.generation
    };
    let delay = Duration::from_millis(sim.cfg.restore.attach_delay_ms);
    let task_sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        finish_attach(task_sim, id, generation, way).await;
    });
    Ok(json!({}))
}

/// How an attached disk's device comes to be.
enum DeviceWay {
    /// A loop device and a `virtio-<serial>` link in this by-id directory.
    Link(std::path::PathBuf),
    /// `[restore] attach_command` (argv) makes it appear elsewhere.
    Command(Vec<String>),
}

/// The serial a virtio disk reports: at most [`VIRTIO_SERIAL_MAX`] characters.
fn short_serial(serial: &str) -> String {
    serial.chars().take(VIRTIO_SERIAL_MAX).collect()
}

/// Runs `[restore] detach_command` for disk `id` (blocking; call off the runtime).
fn run_detach_command(
    sim: &Sim,
    image: &std::path::Path,
    serial: &str,
    id: &str,
) -> Result<(), String> {
    let Some(argv) = &sim.cfg.restore.detach_command else {
        return Ok(());
    };
    let timeout = Duration::from_millis(sim.cfg.restore.command_timeout_ms);
    crate::devcommand::run(argv, image, &short_serial(serial), id, timeout)
}

fn find_created<'a>(
    created: &'a mut [CreatedDisk],
    id: &str,
) -> Result<&'a mut CreatedDisk, ApiError> {
    created
        .iter_mut()
        .find(|d| d.id == id && !d.deleted)
        .ok_or_else(disk_not_found)
}

/// `Attaching` -> `In_use`, then, `device_delay_ms` later, the loop device
/// and its link (or, with `attach_no_device`, neither): a client must wait
/// for the device after DescribeDisks says `In_use`, as on a real instance.
/// A device that cannot be made leaves the disk `In_use` without one, with
/// `last_error` and an `attach_failed` line.
async fn finish_attach(sim: Arc<Sim>, id: String, generation: u64, way: DeviceWay) {
    let (image, serial, no_device, generation) = {
        let mut inner = sim.lock();
        let now = inner.now();
        let no_device = inner.faults.take_attach_no_device();
        let Some(d) = inner
            .created
            .iter_mut()
            .find(|d| d.id == id && d.generation == generation && !d.deleted)
        else {
            return;
        };
        d.status = DiskStatus::InUse;
        d.attached_at = Some(now);
        d.generation += 1;
        (d.image.clone(), d.serial(), no_device, d.generation)
    };
    let mut entry = json!({
        "time": log_time(sim.now()),
        "service": "ecs-sim",
        "event": "disk_attached",
        "disk_id": id,
        "no_device": no_device,
    });
    sim.log.write(&entry);
    if no_device {
        return;
    }
    tokio::time::sleep(Duration::from_millis(sim.cfg.restore.device_delay_ms)).await;
    let by_id_dir = match way {
        DeviceWay::Link(dir) => dir,
        DeviceWay::Command(argv) => {
            attach_by_command(sim, id, generation, image, serial, argv, entry).await;
            return;
        }
    };
    let disk_dir = sim.cfg.disk_dir();
    let made = tokio::task::spawn_blocking(move || {
        let dev = crate::loopdev::attach(&image).map_err(|e| e.to_string())?;
        let link = by_id_dir.join(format!("virtio-{}", short_serial(&serial)));
        let linked = std::fs::create_dir_all(&by_id_dir)
            .and_then(|()| crate::loopdev::record_link(&disk_dir, &link))
            .and_then(|()| {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(dev.path(), &link)
            });
        match linked {
            Ok(()) => Ok((dev, link)),
            Err(e) => {
                dev.detach();
                Err(format!("{}: {e}", link.display()))
            }
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("attach task failed: {e}")));
    entry["time"] = json!(log_time(sim.now()));
    {
        let mut inner = sim.lock();
        let d = inner
            .created
            .iter_mut()
            .find(|d| d.id == id && d.generation == generation && !d.deleted);
        match (made, d) {
            (Ok((dev, link)), Some(d)) => {
                entry["event"] = json!("device_appeared");
                entry["loop_device"] = json!(dev.path());
                entry["link"] = json!(link);
                d.device = Some(dev);
                d.link = Some(link);
            }
            (Ok((dev, link)), None) => {
                // Detached or deleted meanwhile: undo.
                let _ = std::fs::remove_file(&link);
                dev.detach();
                return;
            }
            (Err(e), Some(d)) => {
                tracing::error!("attaching {id}: {e}");
                d.last_error = Some(e.clone());
                entry["event"] = json!("attach_failed");
                entry["error"] = json!(e);
            }
            (Err(_), None) => return,
        }
    }
    sim.log.write(&entry);
}

/// The device by `[restore] attach_command`: exit 0 = it is there (the disk
/// is marked `hotplugged`, so DetachDisk runs `detach_command`); a failure
/// leaves the disk `In_use` without a device, with `last_error` and an
/// `attach_failed` line, as a failed loop device does.
async fn attach_by_command(
    sim: Arc<Sim>,
    id: String,
    generation: u64,
    image: std::path::PathBuf,
    serial: String,
    argv: Vec<String>,
    mut entry: Value,
) {
    let timeout = Duration::from_millis(sim.cfg.restore.command_timeout_ms);
    let (img, ser, did) = (image.clone(), short_serial(&serial), id.clone());
    let done = tokio::task::spawn_blocking(move || {
        crate::devcommand::run(&argv, &img, &ser, &did, timeout)
    })
    .await
    .unwrap_or_else(|e| Err(format!("attach task failed: {e}")));
    entry["time"] = json!(log_time(sim.now()));
    let undo = {
        let mut inner = sim.lock();
        let d = inner
            .created
            .iter_mut()
            .find(|d| d.id == id && d.generation == generation && !d.deleted);
        match (done, d) {
            (Ok(()), Some(d)) => {
                entry["event"] = json!("device_appeared");
                entry["attach_command"] = json!(true);
                d.hotplugged = true;
                false
            }
            // Detached or deleted meanwhile: undo.
            (Ok(()), None) => true,
            (Err(e), Some(d)) => {
                tracing::error!("attaching {id}: {e}");
                d.last_error = Some(e.clone());
                entry["event"] = json!("attach_failed");
                entry["error"] = json!(e);
                false
            }
            (Err(_), None) => return,
        }
    };
    if undo {
        let task_sim = sim.clone();
        let undone = tokio::task::spawn_blocking(move || {
            run_detach_command(&task_sim, &image, &serial, &id)
        })
        .await
        .unwrap_or_else(|e| Err(format!("detach task failed: {e}")));
        if let Err(e) = undone {
            tracing::error!("undoing a late attach: {e}");
        }
        return;
    }
    sim.log.write(&entry);
}

/// DetachDisk: an `In_use` disk on the instance goes `Detaching` (its link
/// and loop device go at once), then `Available` after `detach_delay_ms`.
pub fn detach_disk(sim: &Arc<Sim>, p: &Params) -> Result<Value, ApiError> {
    let instance = check_instance(sim, p)?;
    let id = p.required("DiskId")?.to_string();
    bool_param(p, "DeleteWithInstance")?;
    let generation = {
        let mut inner = sim.lock();
        if let Some(e) = configured_refusal(&id, &inner.disks) {
            return Err(e);
        }
        let d = find_created(&mut inner.created, &id)?;
        match d.status {
            DiskStatus::InUse => {}
            DiskStatus::Available => {
                return Err(ApiError::new(
                    404,
                    "InvalidDisk.AlreadyDetached",
                    "The specified disk has been detached.",
                ))
            }
            _ => return Err(incorrect_status()),
        }
        if d.instance_id != instance {
            return Err(ApiError::new(
                403,
                "DependencyViolation",
                "The specified disk has not been attached on the specified instance.",
            ));
        }
        if let Some(e) = inner.faults.take_detach_failure() {
            return Err(e);
        }
        let d = find_created(&mut inner.created, &id)?;
        d.release_device();
        let unplug = std::mem::take(&mut d.hotplugged).then(|| (d.image.clone(), d.serial()));
        d.status = DiskStatus::Detaching;
        d.generation += 1;
        (d.generation, unplug)
    };
    let (generation, unplug) = generation;
    let delay = Duration::from_millis(sim.cfg.restore.detach_delay_ms);
    let task_sim = sim.clone();
    tokio::spawn(async move {
        if let Some((image, serial)) = unplug {
            let (s, i) = (task_sim.clone(), id.clone());
            let undone =
                tokio::task::spawn_blocking(move || run_detach_command(&s, &image, &serial, &i))
                    .await
                    .unwrap_or_else(|e| Err(format!("detach task failed: {e}")));
            if let Err(e) = undone {
                // The device is still there: the disk stays Detaching.
                tracing::error!("detaching {id}: {e}");
                let now = {
                    let mut inner = task_sim.lock();
                    let now = inner.now();
                    if let Some(d) = inner
                        .created
                        .iter_mut()
                        .find(|d| d.id == id && d.generation == generation && !d.deleted)
                    {
                        d.last_error = Some(e.clone());
                    }
                    now
                };
                task_sim.log.write(&json!({
                    "time": log_time(now),
                    "service": "ecs-sim",
                    "event": "detach_failed",
                    "disk_id": id,
                    "error": e,
                }));
                return;
            }
        }
        tokio::time::sleep(delay).await;
        let mut inner = task_sim.lock();
        let now = inner.now();
        let Some(d) = inner
            .created
            .iter_mut()
            .find(|d| d.id == id && d.generation == generation && !d.deleted)
        else {
            return;
        };
        d.status = DiskStatus::Available;
        d.instance_id.clear();
        d.detached_at = Some(now);
        d.generation += 1;
        drop(inner);
        task_sim.log.write(&json!({
            "time": log_time(now),
            "service": "ecs-sim",
            "event": "disk_detached",
            "disk_id": id,
        }));
    });
    Ok(json!({}))
}
