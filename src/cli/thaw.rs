//! `appsnap thaw --all`: thaw whatever the frozen-set record names. Run by the
//! unit's ExecStopPost and by every daemon start; safe to repeat. Works even
//! when the default policy does not load, because a broken policy must never
//! keep a file system frozen; a policy named with `-c` that does not load is
//! an error instead (its run dir is unknown: the default one may hold another
//! installation's record). A record whose freeze guard still runs is a
//! snapshot in progress and is left alone unless `--force`.

use std::path::{Path, PathBuf};

use appsnap::host::record::{self, RecordError, RecoveryAction};
use appsnap::job::outcome::Outcome;
use appsnap::policy::{self, HostSettings};

use super::args::{Cli, ThawArgs};

/// Runs `thaw --all`: exit 0 when nothing of ours is left frozen, 12 when a FITHAW failed.
pub fn run(cli: &Cli, args: &ThawArgs) -> u8 {
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => match run_dir_from_policy(cli) {
            Some(d) => d,
            None => return Outcome::InvalidParameters.code(),
        },
    };
    let recovery =
        match record::recover_with(&run_dir, Path::new("/proc/self/mountinfo"), args.force) {
            Ok(r) => r,
            Err(e @ RecordError::GuardAlive { .. }) => {
                eprintln!("appsnap: thaw: {e}");
                return Outcome::ConditionsNotMet.code();
            }
            Err(e) => {
                eprintln!("appsnap: thaw: {e}");
                return Outcome::ThawFailed.code();
            }
        };
    let Some(r) = recovery else {
        println!(
            "nothing to thaw: no frozen-set record in {}",
            run_dir.display()
        );
        return Outcome::Success.code();
    };
    println!(
        "frozen-set record {} (written by freeze guard pid {}):",
        record::record_path(&run_dir).display(),
        r.guard_pid
    );
    let mut failed = false;
    for (t, action) in &r.actions {
        let mp = t.mount_point.display();
        match action {
            RecoveryAction::Thawed => println!("  thawed {mp} ({})", t.fs_type),
            RecoveryAction::NotFrozen => println!("  {mp} ({}) was not frozen", t.fs_type),
            RecoveryAction::NotThatMount(e) => println!(
                "  left {mp} alone: {e}. If it was unmounted while frozen, its superblock may still be frozen: mount it again and run `fsfreeze -u` on it"
            ),
            RecoveryAction::ThawFailed(e) => {
                failed = true;
                println!("  FAILED to thaw {mp}: {e}")
            }
        }
    }
    if r.record_removed {
        println!("record removed");
    } else {
        println!("record kept so that `appsnap thaw --all` can be retried");
    }
    if failed {
        Outcome::ThawFailed.code()
    } else {
        Outcome::Success.code()
    }
}

/// The policy's run dir; the default one only when the default policy does
/// not load. `None` (after saying why) when a policy named with `-c` does not.
fn run_dir_from_policy(cli: &Cli) -> Option<PathBuf> {
    match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => Some(p.host.run_dir),
        Err(e) if cli.config != Path::new(DEFAULT_CONFIG) => {
            eprintln!(
                "appsnap: thaw: the policy {} did not load ({e}); its run dir is unknown, so nothing is thawed (fix it, or name the record's directory with --run-dir)",
                cli.config.display()
            );
            None
        }
        Err(e) => {
            let d = HostSettings::default().run_dir;
            eprintln!(
                "appsnap: thaw: the policy did not load ({e}); using the default run dir {}",
                d.display()
            );
            Some(d)
        }
    }
}

/// `-c`'s default (kept equal to the argument's `default_value`).
const DEFAULT_CONFIG: &str = "/etc/appsnap.toml";
