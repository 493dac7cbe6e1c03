//! The reference tables that both the README and the man pages print: the
//! policy's keys and the exit codes. They live here, once, so the two cannot
//! drift: `generate-assets` renders them to roff, and a test compares the
//! README's generated blocks with [`readme_block`] (and the key tables with the
//! policy parser's own structs), failing with the fresh text to paste.

use appsnap::job::outcome::Outcome;

/// One row of a policy table: one key, or several that share a row.
pub struct KeyRow {
    /// The key(s) as written in TOML.
    pub keys: &'static [&'static str],
    /// The TOML type: `string`, `integer`, `boolean`, `array of strings`,
    /// `table`, or prose for rows whose type comes from elsewhere.
    pub ty: &'static str,
    /// What applies when the key is absent (Markdown inline).
    pub default: &'static str,
    /// What values are accepted and what they mean (Markdown inline).
    pub accepted: &'static str,
    /// The vendor plugin's parameter this key stands for (only `[defaults]`).
    pub vendor: Option<&'static str>,
}

/// One table of the policy file.
pub struct PolicySection {
    /// The name the README's markers and the parser use (`cloud`, `job`, ...);
    /// only the README check reads it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub id: &'static str,
    /// How the table is written in TOML: `[cloud]`, `[[job]]`.
    pub header: &'static str,
    /// One sentence on what the table is for (Markdown inline).
    pub summary: &'static str,
    pub rows: &'static [KeyRow],
}

const fn row(
    keys: &'static [&'static str],
    ty: &'static str,
    default: &'static str,
    accepted: &'static str,
) -> KeyRow {
    KeyRow {
        keys,
        ty,
        default,
        accepted,
        vendor: None,
    }
}

const fn vrow(
    key: &'static [&'static str],
    ty: &'static str,
    default: &'static str,
    accepted: &'static str,
    vendor: &'static str,
) -> KeyRow {
    KeyRow {
        keys: key,
        ty,
        default,
        accepted,
        vendor: Some(vendor),
    }
}

/// Every table of the policy file, in the order the file is usually written.
pub const POLICY: &[PolicySection] = &[
    PolicySection {
        id: "cloud",
        header: "[cloud]",
        summary: "Where and as whom appsnap calls ECS. All optional: the metadata service knows this instance.",
        rows: &[
            row(&["region_id"], "string", "from the metadata service", "lowercase letters, digits, `-`"),
            row(&["instance_id"], "string", "from the metadata service", "`i-` + lowercase letters, digits, `-`"),
            row(&["ram_role"], "string", "the role attached to the instance", "1-64 of letters, digits, `.`, `-`, `_`"),
            row(&["endpoint"], "string", "`https://ecs-vpc.<region>.aliyuncs.com`", "an `https://` URL (`http://` only for loopback test endpoints)"),
            row(&["metadata_endpoint"], "string", "`http://100.100.100.200`", "an `https://` URL; `http://` only for 100.100.100.200 (the real service speaks only plain http), link-local (169.254.0.0/16, fe80::/10) and loopback"),
            row(&["signature_version"], "string", "`\"v3\"`", "`\"v3\"` (ACS3-HMAC-SHA256) or `\"v1\"` (HMAC-SHA1)"),
            row(&["max_disks_per_group"], "integer", "`128`", "1..=128: only an operator's own cap; ECS enforces its own limit"),
            row(&["imds_v1_fallback"], "boolean", "`true`", "may the metadata service be read without a token when it has no token API (`ALIBABA_CLOUD_IMDSV1_DISABLED=true` in the environment also forbids it)"),
        ],
    },
    PolicySection {
        id: "host",
        header: "[host]",
        summary: "Where appsnap finds disks and keeps its own files.",
        rows: &[
            row(&["by_id_dir"], "string", "`/dev/disk/by-id`", "absolute path"),
            row(&["run_dir"], "string", "`/run/appsnap`", "absolute path; should be tmpfs (the frozen-set record lives here); owned by root, writable by nobody else"),
            row(&["state_dir"], "string", "`/var/lib/appsnap`", "absolute path; owned by root, writable by nobody else"),
        ],
    },
    PolicySection {
        id: "defaults",
        header: "[defaults]",
        summary: "Inherited by every job, each overridable per job; the defaults are the vendor plugin's.",
        rows: &[
            vrow(&["fs_freeze"], "boolean", "`true`", "freeze the job's file systems (`false`: no freeze, the group is at best crash-consistent unless the scripts quiesce)", "`EnableFsFreeze`"),
            vrow(&["freeze_timeout_secs"], "integer", "`30`", "1..=600: the longest the file systems stay frozen", "`TimeoutInSeconds`"),
            vrow(&["script_timeout_secs"], "integer", "`1800`", "1..=86400: the longest a pre- or post-script may run", "`ScriptTimeoutInSeconds`"),
            vrow(&["jitter_secs"], "integer", "`0`", "0..=86400: a random delay before a scheduled run", "(none)"),
            vrow(&["spread_secs"], "integer", "`60`", "0..=3600: a scheduled run starts at a fixed offset within this window, from a hash of the instance ID and the job name (a fleet on one policy fans out; each instance keeps its time); 0 = at the cron time; jitter is added on top", "(none)"),
            vrow(&["thaw_after"], "string", "`\"listed\"`", "`\"listed\"` (thaw once ECS lists one usable snapshot per disk, as the vendor's plugin does) or `\"accepted\"` (thaw at the CreateSnapshotGroup answer: shorter, but assumes the answer fixes the point in time, which no Alibaba document says)", "(the vendor always waits)"),
            vrow(&["on_prescript_failure"], "string", "`\"fs\"`", "`\"fs\"` (the vendor's: a failed pre-script, or hooks that cannot be used, give a file-system-consistent snapshot) or `\"skip\"` (no snapshot rather than a worse one: nothing frozen or created, exit 9; after a failed pre-script the post-script still runs to undo it). Set on a job without hooks, `\"skip\"` is refused", "(the vendor falls back to `fs`)"),
            vrow(&["hooks_while_throttled"], "string", "`\"release\"`", "when ECS throttles CreateSnapshotGroup while frozen, the run thaws at once, waits, and freezes again: `\"release\"` runs the post-script before the wait and the pre-script again after it (the application is held only around each window; the tags come from the pre-script that held the lock); `\"hold\"` keeps the lock across the waits", "(the vendor retries inside the freeze)"),
            vrow(&["catch_up"], "boolean", "`false`", "when the daemon starts and a scheduled time passed with no run, run once now (like systemd's `Persistent=true`)", "(none)"),
            vrow(&["verify_timeout_secs"], "integer", "`1800`", "60..=86400: the longest a restore drill's `verify_script` may run (the drill's disks are billed meanwhile)", "(none)"),
            vrow(&["verify_category"], "string", "cheapest first: `cloud_essd:PL0`, then `cloud_auto`, then `cloud_essd_entry`", "the disk category restore drills create their disks in: `\"cloud_essd\"` (optionally `:PL0`..`:PL3`), `\"cloud_auto\"` or `\"cloud_essd_entry\"`; set, no other category is tried", "(none)"),
        ],
    },
    PolicySection {
        id: "job",
        header: "[[job]]",
        summary: "One per snapshot job; drop-ins in `/etc/appsnap.d/` may add more. A job name may appear only once across all files.",
        rows: &[
            row(&["name"], "string", "required", "`[A-Za-z][A-Za-z0-9._:-]+`, at most 111 characters (it prefixes the group name `<name>-<UTC timestamp>`, which ECS caps at 128)"),
            row(&["schedule"], "string", "required", "cron, 5 fields (`min hour dom month dow`) or 6 (seconds first); must match some date"),
            row(&["timezone"], "string", "the system's local zone", "an IANA zone name (`Asia/Shanghai`, `UTC`)"),
            row(&["disks"], "string or array of strings", "required", "`\"all\"` (exactly; every supported disk of this instance) or an array of disk IDs `d-` + lowercase letters and digits, no repeats, at most `max_disks_per_group`"),
            row(&["exclude_disks"], "array of strings", "`[]`", "disk IDs; only with `disks = \"all\"` (the vendor's `ExcludeDiskId`)"),
            row(&["prescript", "postscript"], "string", "none", "absolute paths. At run time a script counts only if it is a regular file owned by root, mode exactly 0700, reached only through root-owned directories not writable by group or others; otherwise the run is file-system-consistent and the warning says why"),
            row(&["script_env"], "array of strings", "`[]`", "names of variables of appsnap's own environment the scripts also get (e.g. `[\"PGPASSFILE\", \"TZ\"]`); `[A-Za-z_][A-Za-z0-9_]*`, no repeats; never `ALIBABA_CLOUD_*` (the credentials), `APPSNAP_*` (appsnap's own), `NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*` (systemd's, the daemon's)"),
            row(&["description"], "string", "none", "2-256 characters, not starting with `http://` or `https://`"),
            row(&["tags"], "table", "none", "table of at most 17 tags; ECS rules (key 1-128 characters, not `aliyun*`/`acs:*`, no URLs; value ≤128, not `acs:*`); keys `appsnap:*`, `AppConsistent`, `FsConsistent` are appsnap's own"),
            row(&["keep_last"], "integer", "none (keep all)", "1..=10000 groups of this job"),
            row(&["max_age_days"], "integer", "none (keep all)", "1..=36500"),
            row(&["fs_freeze", "freeze_timeout_secs", "script_timeout_secs", "jitter_secs", "spread_secs", "thaw_after", "on_prescript_failure", "hooks_while_throttled", "catch_up", "verify_timeout_secs", "verify_category"], "as in `[defaults]`", "from `[defaults]`", "as in `[defaults]`"),
            row(&["verify_schedule"], "string", "none (drills only by hand)", "cron, as `schedule`: when the daemon runs a restore drill (`appsnap verify`) of this job's newest application- or file-system-consistent group"),
            row(&["verify_script"], "string", "none (file-system checks only)", "absolute path; trusted by the same rules as `prescript`; run after the restored copies are checked, with their mount points in its environment, bounded by `verify_timeout_secs`"),
            row(&["ping_url"], "string", "none", "a health-check URL, https (http only to loopback): `<url>/start` when a run starts, `<url>` on success, `<url>/fail` on failure"),
            row(&["notify"], "table", "`[notify]`", "a table with the keys of `[notify]`; replaces `[notify]` whole for this job (`notify = {}` sends this job's events nowhere)"),
        ],
    },
    PolicySection {
        id: "notify",
        header: "[notify]",
        summary: "Where events go (every job without its own `notify`).",
        rows: &[
            row(&["webhook_url"], "string", "none", "https URL, or http to loopback only (`127.0.0.1`, `::1`, `localhost`); no user or password in it"),
            row(&["webhook_key_file"], "string", "none", "absolute path of the HMAC-SHA256 key for `X-Appsnap-Signature`; read at each delivery; must be root's, mode 0600 or stricter, on a trusted path. The key itself is never in the policy (a `webhook_key` key is an error)"),
            row(&["exec"], "string", "none", "absolute path of a command run like the hooks (root's, mode 0700, trusted path), the event on stdin and in its environment"),
            row(&["success"], "boolean", "`false`", "also send `success` events"),
            row(&["timeout_secs"], "integer", "`10`", "1..=120: the longest one delivery attempt may take"),
            row(&["retries"], "integer", "`3`", "0..=10 attempts after the first, backoff 1 s doubling up to 30 s; only timeouts, connection errors, 408, 429 and 5xx are retried"),
        ],
    },
    PolicySection {
        id: "metrics",
        header: "[metrics]",
        summary: "Prometheus metrics through node_exporter's textfile collector.",
        rows: &[
            row(&["textfile"], "string", "none (no metrics)", "absolute path of a `*.prom` file in node_exporter's textfile-collector directory: `/var/lib/prometheus/node-exporter/appsnap.prom` on Debian and Ubuntu (`prometheus-node-exporter`); on RHEL-family hosts whichever directory `--collector.textfile.directory` names (e.g. `/var/lib/node_exporter/textfile_collector/appsnap.prom`). The directory must be root's and writable by nobody else, reached without symlinks"),
        ],
    },
];

/// What an exit code means for an operator: the vendor's table in our words,
/// with the cases appsnap adds. Exhaustive on purpose: a new outcome does not
/// compile until it is documented.
pub fn exit_meaning(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "snapshots created as expected (`check`: all good)",
        Outcome::ConditionsNotMet => "a condition is not met (disk category, name, network, no RAM role, a file system spanning disks inside and outside the job)",
        Outcome::InvalidParameters => "invalid parameters or policy (also a command-line usage error)",
        Outcome::NoDisksOrPermission => "no supported disks attached, or the RAM role lacks snapshot permissions",
        Outcome::GroupCreateFailed => "the snapshot group cannot be created (also when ECS refuses it for its own per-group limits: `NumberExceed.TooManyDisks`, `CapacityExceed.TooManyDisks`; the message says what to do)",
        Outcome::GroupBadState => "the snapshot group is not in the expected state",
        Outcome::GroupCreateTimeout => "creating the snapshot group timed out",
        Outcome::GroupSnapshotBadState => "a snapshot in the group is not in the expected state",
        Outcome::TagFailed => "tags cannot be added",
        Outcome::PreScriptFailed => "the pre-script failed or timed out (the vendor's table says \"postscript\" for both 9 and 10; 9 is the pre-script)",
        Outcome::PostScriptFailed => "the post-script failed or timed out",
        Outcome::FreezeFailed => "I/O cannot be suspended (freeze failed, or a file system was thawed by someone else while held: the freeze was lost)",
        Outcome::ThawFailed => "I/O cannot be resumed (thaw failed)",
        Outcome::NoRamRole => "no RAM role attached to the instance",
        Outcome::QuotaExceeded => "the snapshot quota is exhausted",
        Outcome::SnapshotBadState => "a snapshot is not in the expected state",
        Outcome::PreviousSnapshotInProgress => "a previous snapshot of these disks is still being created and not yet usable (\"... and the instant access feature is disabled\"; also ECS's `IncorrectDiskStatus.CreatingSnapshot`)",
        Outcome::Unknown => "unknown error",
    }
}

/// The README's side: its generated blocks as Markdown. Only the README
/// check renders them, so this is test code.
#[cfg(test)]
pub mod readme {
    use super::*;

    /// The names of the README's generated blocks, in README order.
    pub fn readme_block_names() -> Vec<String> {
        let mut names: Vec<String> = POLICY.iter().map(|s| format!("policy-{}", s.id)).collect();
        names.push("exit-codes".to_string());
        names
    }

    /// The Markdown a generated README block holds (between its markers).
    pub fn readme_block(name: &str) -> Option<String> {
        if name == "exit-codes" {
            return Some(exit_codes_markdown());
        }
        let id = name.strip_prefix("policy-")?;
        POLICY.iter().find(|s| s.id == id).map(section_markdown)
    }

    /// The line that opens a generated README block.
    pub fn begin_marker(name: &str) -> String {
        format!("<!-- generated:{name}:begin (from src/cli/doc_tables.rs; edit there) -->")
    }

    /// The line that closes a generated README block.
    pub fn end_marker(name: &str) -> String {
        format!("<!-- generated:{name}:end -->")
    }

    /// `` `a` `` or `` `a`, `b` ``: how a row's keys are written.
    pub fn keys_markdown(keys: &[&str]) -> String {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn section_markdown(s: &PolicySection) -> String {
        let vendor = s.rows.iter().any(|r| r.vendor.is_some());
        let mut out = String::from("| key | type | default | accepted |");
        out.push_str(if vendor {
            " vendor parameter |\n|---|---|---|---|---|\n"
        } else {
            "\n|---|---|---|---|\n"
        });
        for r in s.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |",
                keys_markdown(r.keys),
                r.ty,
                r.default,
                r.accepted
            ));
            if vendor {
                out.push_str(&format!(" {} |", r.vendor.unwrap_or("")));
            }
            out.push('\n');
        }
        out
    }

    fn exit_codes_markdown() -> String {
        let mut out = String::from("| code | meaning | vendor message |\n|---|---|---|\n");
        for o in Outcome::ALL {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                o.code(),
                exit_meaning(o),
                o.message()
            ));
        }
        out
    }

    /// Replaces every generated block of `readme` with the fresh text; errors
    /// name a block whose markers are missing.
    pub fn refresh_readme(readme: &str) -> Result<String, String> {
        let mut out = readme.to_string();
        for name in readme_block_names() {
            let (begin, end) = (begin_marker(&name), end_marker(&name));
            let b = out
                .find(&begin)
                .ok_or_else(|| format!("README has no line `{begin}`"))?;
            let body_start = b + begin.len();
            let e = out[body_start..]
                .find(&end)
                .map(|i| body_start + i)
                .ok_or_else(|| format!("README has no line `{end}` after its begin marker"))?;
            let fresh = readme_block(&name).expect("every listed block renders");
            out.replace_range(body_start..e, &format!("\n{fresh}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::readme::*;
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn readme_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
    }

    /// The README's tables are this file's tables. On a difference the
    /// failure prints the fresh blocks; `APPSNAP_UPDATE_README=1` writes them.
    #[test]
    fn readme_tables_are_the_generated_ones() {
        let readme = std::fs::read_to_string(readme_path()).unwrap();
        let fresh = refresh_readme(&readme).unwrap_or_else(|e| panic!("{e}"));
        if fresh == readme {
            return;
        }
        if std::env::var_os("APPSNAP_UPDATE_README").is_some() {
            std::fs::write(readme_path(), &fresh).unwrap();
            return;
        }
        let mut expected = String::new();
        for name in readme_block_names() {
            let block = format!(
                "{}\n{}{}\n",
                begin_marker(&name),
                readme_block(&name).unwrap(),
                end_marker(&name)
            );
            if !readme.contains(&block) {
                expected.push_str(&block);
                expected.push('\n');
            }
        }
        panic!(
            "README.md's generated tables differ from src/cli/doc_tables.rs. Edit the \
             tables there, then run `APPSNAP_UPDATE_README=1 cargo test --bin appsnap \
             readme_tables` (or paste these blocks):\n\n{expected}"
        );
    }

    #[test]
    fn an_edited_readme_table_is_caught_and_restored() {
        let readme = refresh_readme(&std::fs::read_to_string(readme_path()).unwrap()).unwrap();
        let edited = readme.replacen("| 1..=600: the longest", "| 1..=900: the longest", 1);
        assert_ne!(edited, readme, "the row to edit is in the README");
        assert_eq!(refresh_readme(&edited).unwrap(), readme);
        let unmarked = readme.replace(&end_marker("exit-codes"), "");
        assert!(refresh_readme(&unmarked)
            .unwrap_err()
            .contains("generated:exit-codes:end"));
    }

    /// Each raw struct's fields with the type the docs should name, read from
    /// the parser's source (the structs are serde-only, with no reflection).
    fn parser_keys() -> BTreeMap<String, BTreeMap<String, String>> {
        let src = include_str!("../policy/raw.rs");
        assert!(
            !src.contains("rename"),
            "raw.rs renames a field: teach this reader"
        );
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in src.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub struct Raw") {
                current = rest.split_whitespace().next().map(str::to_lowercase);
                continue;
            }
            if line == "}" {
                current = None;
                continue;
            }
            let (Some(table), Some(field)) = (&current, line.strip_prefix("pub ")) else {
                continue;
            };
            let Some((name, ty)) = field.split_once(':') else {
                continue;
            };
            let ty = ty.trim().trim_end_matches(',');
            let doc_ty = if ty.contains("Raw") || ty.contains("BTreeMap") {
                "table"
            } else if ty.contains("Vec<") {
                "array of strings"
            } else if ty.contains("toml::Value") {
                "string or array of strings"
            } else if ty.contains("String") {
                "string"
            } else if ty.contains("i64") {
                "integer"
            } else if ty.contains("bool") {
                "boolean"
            } else {
                panic!("raw.rs: {table}.{name}: no doc type for `{ty}`")
            };
            out.entry(table.clone())
                .or_default()
                .insert(name.trim().to_string(), doc_ty.to_string());
        }
        out
    }

    /// Every key the parser accepts is documented with its type, and nothing
    /// else is: a key added to or removed from `policy::raw` fails here.
    #[test]
    fn policy_tables_are_the_parsers_keys() {
        let parser = parser_keys();
        let tables: Vec<&str> = parser["file"].keys().map(String::as_str).collect();
        let documented: Vec<&str> = POLICY.iter().map(|s| s.id).collect();
        let mut sorted = documented.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, tables, "the policy's tables");
        for s in POLICY {
            let fields = &parser[s.id];
            let mut seen = Vec::new();
            for r in s.rows {
                for k in r.keys {
                    let ty = fields
                        .get(*k)
                        .unwrap_or_else(|| panic!("[{}] {k}: documented, not parsed", s.id));
                    let want = if r.ty.starts_with("as in `[defaults]`") {
                        parser["defaults"]
                            .get(*k)
                            .unwrap_or_else(|| panic!("[{}] {k}: not in [defaults]", s.id))
                    } else {
                        r.ty
                    };
                    assert_eq!(ty, want, "[{}] {k}: type", s.id);
                    seen.push(k.to_string());
                }
            }
            seen.sort();
            let parsed: Vec<String> = fields.keys().cloned().collect();
            assert_eq!(seen, parsed, "[{}]: keys documented vs parsed", s.id);
        }
    }

    #[test]
    fn exit_code_table_has_every_vendor_code_once() {
        let table = readme_block("exit-codes").unwrap();
        for o in Outcome::ALL {
            let line = format!("| {} | {} | {} |", o.code(), exit_meaning(o), o.message());
            assert_eq!(table.matches(&line).count(), 1, "{line}");
        }
        assert_eq!(table.lines().count(), Outcome::ALL.len() + 2);
    }
}
