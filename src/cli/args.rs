//! The command line as operators type it; one variant per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Version plus the git commit the binary was built from.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("APPSNAP_GIT_COMMIT"),
    ")"
);

/// Application-consistent snapshots of this ECS instance's cloud disks, on a schedule.
///
/// appsnap runs your pre-script, freezes the file systems on the job's disks,
/// asks ECS for one snapshot group across them, thaws once ECS lists one
/// snapshot per disk (or at its answer, with `thaw_after = "accepted"`), runs
/// your post-script, tags the snapshots and prunes the job's old groups. A
/// separate guard process thaws at the deadline even if appsnap itself dies.
#[derive(Debug, Parser)]
#[command(name = "appsnap", version = LONG_VERSION, propagate_version = true)]
pub struct Cli {
    /// The policy file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "PATH",
        global = true,
        default_value = "/etc/appsnap.toml"
    )]
    pub config: PathBuf,

    /// Directory of drop-in policy files (*.toml, read in name order; each may add jobs).
    #[arg(
        long = "config-dir",
        value_name = "DIR",
        global = true,
        default_value = "/etc/appsnap.d"
    )]
    pub config_dir: PathBuf,

    /// How log lines on stderr look. The journal, when present, always gets
    /// structured fields; under systemd nothing goes to stderr.
    #[arg(
        long = "log-format",
        value_name = "FORMAT",
        global = true,
        value_enum,
        default_value_t = LogFormatArg::Human
    )]
    pub log_format: LogFormatArg,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scheduler (what systemd starts): runs every job at its scheduled times.
    Daemon,
    /// Run one job now and exit with the vendor plugin's exit code.
    Run(RunArgs),
    /// Validate the policy, then check every job against this instance and the cloud.
    Check(CheckArgs),
    /// Show which disks, devices and file systems a job would freeze, in freeze order
    /// (for disks = "all", the disk list comes from ECS, as in `run --dry-run`).
    Plan(PlanArgs),
    /// Show each job's last result and next run, and whether the daemon is running.
    Status(JsonArgs),
    /// List the snapshot groups appsnap created on this instance, newest first.
    List(ListArgs),
    /// Thaw every file system the frozen-set record names (after a crash; safe to repeat).
    Thaw(ThawArgs),
    /// Restore drill: prove that a job's snapshot group restores and its application starts.
    ///
    /// Restores each snapshot of the group to a new disk attached to this
    /// instance, checks every file system on the copies (never the live
    /// ones), runs the job's verify_script on them, then unmounts, detaches
    /// and deletes the disks, also after a failure or SIGTERM. Exit 0
    /// passed, 1 failed, 2 not run, 3 something could not be cleaned up.
    Verify(VerifyArgs),
    /// Drop-in replacement for the vendor plugin: takes its --params string, or
    /// its parameters as separate -Key=Value arguments (as Cloud Assistant passes them).
    Plugin(PluginArgs),
    /// Internal: the freeze guard process the daemon starts (plan on stdin, events on stdout).
    #[command(hide = true, name = "freeze-guard")]
    FreezeGuard,
    /// Internal: write the man pages and shell completions the packages ship.
    #[command(hide = true, name = "generate-assets")]
    GenerateAssets(AssetsArgs),
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job's name, as in the policy.
    pub job: String,
    /// Check and print what would happen, changing nothing: asks ECS for the
    /// disks and builds the plan, but skips the pre- and post-scripts, the
    /// freeze, the snapshot group, retention and the status record.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not apply the job's retention (keep_last, max_age_days) after a
    /// successful run; by default `run` deletes the job's older groups as the daemon does.
    #[arg(long)]
    pub no_prune: bool,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only validate the policy files; do not contact the metadata service or ECS.
    #[arg(long)]
    pub offline: bool,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The job's name, as in the policy.
    pub job: String,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands whose only option is JSON output.
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this job's groups.
    #[arg(long)]
    pub job: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Show which of the job's groups retention would delete now, and why (deletes nothing).
    #[arg(long, requires = "job")]
    pub prune_preview: bool,
}

/// `thaw`.
#[derive(Debug, Args)]
pub struct ThawArgs {
    /// Thaw everything the record names (the only mode; required so it is never typed by accident).
    #[arg(long, required = true)]
    pub all: bool,
    /// Where the record is (default: the policy's `host.run_dir`); for tests and rescue.
    #[arg(long, value_name = "DIR", hide = true)]
    pub run_dir: Option<PathBuf>,
    /// Thaw even while the freeze guard that wrote the record still runs (a
    /// snapshot in progress, which then becomes crash-consistent).
    #[arg(long)]
    pub force: bool,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The job whose group is restored.
    #[arg(long, required_unless_present = "cleanup")]
    pub job: Option<String>,
    /// Restore this group (ssg-...) instead of the job's newest app- or
    /// fs-consistent one; it must be one this job made on this instance.
    #[arg(long, value_name = "ssg-ID", requires = "job")]
    pub group: Option<String>,
    /// Only finish drills that did not finish (after a crash or SIGKILL):
    /// unmount their copies, detach and delete their disks.
    #[arg(long, conflicts_with_all = ["job", "group"])]
    pub cleanup: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long an attached disk's device may take to appear (tests, rescue).
    #[arg(long, value_name = "SECS", hide = true, default_value_t = 120)]
    pub device_timeout_secs: u64,
}

/// `generate-assets`.
#[derive(Debug, Args)]
pub struct AssetsArgs {
    /// Output directory (gets `man/` and `completions/`).
    pub dir: PathBuf,
}

/// `plugin`.
#[derive(Debug, Args)]
#[command(after_help = appsnap::job::plugin_params::help())]
pub struct PluginArgs {
    /// The vendor's parameter string, e.g.
    /// -RamRoleName="r",-EnableFsFreeze=true,-TimeoutInSeconds=30,-Name="LinuxApp1"
    #[arg(long, value_name = "PARAMS", allow_hyphen_values = true)]
    pub params: Option<String>,
    /// Or the same parameters as separate arguments, as Cloud Assistant starts
    /// the vendor binary: --RamRoleName=r -TimeoutInSeconds=30 -Name=x
    /// (taken raw: clap would read -Name=x as short options).
    #[arg(
        value_name = "-Key=Value",
        num_args = 0..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub vendor_args: Vec<String>,
}

/// The vendor binary's file name: invoked under it (a symlink), appsnap acts
/// as `appsnap plugin`, so Cloud Assistant commands written for the vendor
/// plugin run unchanged.
pub const VENDOR_BINARY_NAME: &str = "app-snapshot-plugin";

/// The command line to parse: argv as given, or, when argv[0]'s file name is
/// [`VENDOR_BINARY_NAME`], `plugin` inserted after it.
pub fn effective_args(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let invoked_as_vendor = argv
        .first()
        .and_then(|a0| std::path::Path::new(a0).file_name())
        .is_some_and(|n| n == VENDOR_BINARY_NAME);
    if !invoked_as_vendor {
        return argv;
    }
    let mut out = Vec::with_capacity(argv.len() + 1);
    let mut it = argv.into_iter();
    out.extend(it.next());
    out.push("plugin".into());
    out.extend(it);
    out
}
