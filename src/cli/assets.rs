//! `appsnap generate-assets DIR` (hidden): writes the man pages and shell
//! completions the packages ship. They are generated from the same `Cli`
//! struct the binary parses, so they cannot drift from the real options; the
//! subcommand lives in the binary because the CLI is not part of the library.
//! Every page gets EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO, and
//! `appsnap.toml(5)` documents the policy; both print the tables of
//! [`super::doc_tables`], which the README's tables are checked against.

use std::fs;
use std::io;
use std::path::Path;

use appsnap::job::outcome::Outcome;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use roff::{bold, roman, Inline, Roff};

use super::args::{AssetsArgs, Cli};
use super::doc_tables::{self, PolicySection, POLICY};

/// The example policy appsnap.toml(5) shows: the one the packages ship.
const EXAMPLE_POLICY: &str = include_str!("../../config/examples/two-jobs.toml");

/// Writes `DIR/man/*.1`, `DIR/man/appsnap.toml.5` and
/// `DIR/completions/{appsnap.bash,_appsnap}`; 0 on success, 1 on an I/O error.
pub fn run(args: &AssetsArgs) -> u8 {
    match generate(&args.dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("appsnap: generate-assets: {e}");
            1
        }
    }
}

fn generate(dir: &Path) -> io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    write_man_pages(&man)?;
    let mut cmd = without_hidden_subcommands(Cli::command());
    for (shell, name) in [(Shell::Bash, "appsnap.bash"), (Shell::Zsh, "_appsnap")] {
        let mut out = fs::File::create(completions.join(name))?;
        clap_complete::generate(shell, &mut cmd, "appsnap", &mut out);
    }
    Ok(())
}

/// One page per visible subcommand (appsnap-run.1, ...) plus appsnap.1 and
/// appsnap.toml.5; hidden subcommands (freeze-guard, generate-assets) are
/// internal. Same pages as `clap_mangen::generate_to`, plus our sections.
fn write_man_pages(dir: &Path) -> io::Result<()> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut pages = vec![cli.clone()];
    pages.extend(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let names: Vec<String> = pages.iter().map(page_name).collect();
    for cmd in pages {
        let name = page_name(&cmd);
        let man = Man::new(cmd);
        let mut page = Vec::new();
        man.render(&mut page)?;
        let page = String::from_utf8(page).map_err(io::Error::other)?;
        let see_also: Vec<String> = names
            .iter()
            .filter(|n| **n != name)
            .map(|n| format!("{n}(1)"))
            .chain(["appsnap.toml(5)".to_string()])
            .collect();
        fs::write(
            dir.join(man.get_filename()),
            with_common_sections(&page, &see_also),
        )?;
    }
    fs::write(dir.join("appsnap.toml.5"), policy_page())
}

/// `appsnap` or `appsnap-run`: what clap_mangen names the page.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name().unwrap_or(cmd.get_name()).to_string()
}

/// clap_mangen's page with EXIT STATUS, ENVIRONMENT and FILES before its
/// VERSION section (where man-pages(7) puts them) and SEE ALSO last.
fn with_common_sections(page: &str, see_also: &[String]) -> String {
    let mut middle = Roff::new();
    exit_status_section(&mut middle);
    environment_section(&mut middle);
    files_section(&mut middle);
    let middle = without_preamble(&middle);
    let mut tail = Roff::new();
    see_also_section(&mut tail, see_also);
    let (head, version) = match page.find("\n.SH VERSION") {
        Some(i) => page.split_at(i + 1),
        None => (page, ""),
    };
    format!("{head}{middle}{version}{}", without_preamble(&tail))
}

/// Rendered roff without the apostrophe preamble the page already has.
fn without_preamble(r: &Roff) -> String {
    let text = r.render();
    match text.split_once("\n.el .ds Aq '\n") {
        Some((_, body)) => body.to_string(),
        None => text,
    }
}

/// README-style Markdown inline text as roff: `code` bold, [text](link) as text.
fn inlines(md: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = md;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                out.push(roman(std::mem::take(&mut plain)));
                out.push(bold(&rest[1..1 + end]));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if c == '[' {
            if let Some(close) = rest.find(']') {
                if rest[close + 1..].starts_with('(') {
                    if let Some(paren) = rest[close..].find(')') {
                        plain.push_str(&rest[1..close]);
                        rest = &rest[close + paren + 1..];
                        continue;
                    }
                }
            }
        }
        plain.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.push(roman(plain));
    out.retain(|i| !matches!(i, Inline::Roman(t) if t.is_empty()));
    out
}

/// A `.TP` item: a bold tag, then the body.
fn item(r: &mut Roff, tag: &str, body: Vec<Inline>) {
    r.control("TP", []);
    r.text([bold(tag)]);
    r.text(body);
}

fn exit_status_section(r: &mut Roff) {
    r.control("SH", ["EXIT STATUS"]);
    r.text(inlines(
        "Every command but `verify` exits with one of the vendor snapshot plugin's codes, \
         so scripts written for the plugin keep working; `run` and `plugin` also end with \
         the vendor's line `[snapshotgroup=\"ssg-...\"][message=\"...\"]` carrying the \
         message below. `verify` (a restore drill, which the plugin does not have) exits \
         0 when the drill passed, 1 when it failed (a file system check or the \
         verify_script), 2 when it could not run, 3 when something it made could not be \
         cleaned up.",
    ));
    for o in Outcome::ALL {
        let mut body = inlines(doc_tables::exit_meaning(o));
        body.push(roman(format!(". Message: \"{}\"", o.message())));
        item(r, &o.code().to_string(), body);
    }
}

fn environment_section(r: &mut Roff) {
    r.control("SH", ["ENVIRONMENT"]);
    let vars: [(&str, &str); 8] = [
        (
            appsnap::logging::FILTER_ENV,
            "the log filter: `info` by default; `debug`, `appsnap=debug`, ... (tracing's EnvFilter syntax). A bad filter is reported and `info` used.",
        ),
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET, ALIBABA_CLOUD_SECURITY_TOKEN",
            "an AccessKey (and optional STS token) to sign ECS requests with; when set it is used instead of the instance's RAM role. Never logged.",
        ),
        (
            "ALIBABA_CLOUD_IMDSV1_DISABLED",
            "`true` forbids reading the metadata service without a session token (as `imds_v1_fallback = false` in the policy does).",
        ),
        (
            "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
            "ECS API requests, webhooks and `ping_url` pings to non-loopback hosts go through the proxy these name (as do their lowercase forms); the metadata service and loopback endpoints are always reached directly.",
        ),
        (
            "JOURNAL_STREAM",
            "set by systemd: when stderr is the journal, appsnap logs there once, with structured fields, and not as text lines.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "set by systemd for `appsnap daemon` (`Type=notify`): readiness, status and watchdog pings.",
        ),
        (
            "SERVICE_RESULT",
            "set by systemd for the unit's `ExecStopPost`: there `appsnap thaw --all` thaws what a freeze guard of the stopping unit still holds instead of refusing because the guard is alive (systemd is about to kill it).",
        ),
        (
            "script_env",
            "variables a job's `script_env` names are passed from appsnap's environment to its pre- and post-scripts; scripts otherwise get a clean environment with `PATH`, `LANG`, `HOME` and the `APPSNAP_*` variables.",
        ),
    ];
    for (name, what) in vars {
        item(r, name, inlines(what));
    }
}

fn files_section(r: &mut Roff) {
    r.control("SH", ["FILES"]);
    let files: [(&str, &str); 7] = [
        ("/etc/appsnap.toml", "the policy (see appsnap.toml(5)); `-c PATH` replaces it."),
        (
            "/etc/appsnap.d/*.toml",
            "drop-in policy files, read in name order; each may add `[[job]]` tables. `--config-dir DIR` replaces the directory.",
        ),
        (
            "/run/appsnap/",
            "runtime (tmpfs, 0700 root): the frozen-set record and the daemon's lock; `run_dir` in `[host]`.",
        ),
        (
            "/var/lib/appsnap/",
            "state (0700 root): each job's last result and the notification results; `state_dir` in `[host]`.",
        ),
        (
            "/var/lib/appsnap/verify/",
            "records of restore drills in progress: what each made, so an unfinished drill is cleaned up at the next start or by `appsnap verify --cleanup`.",
        ),
        (
            "/usr/lib/systemd/system/appsnap.service",
            "the unit that runs `appsnap daemon` (`journalctl -u appsnap` for its logs).",
        ),
        (
            "/usr/share/doc/appsnap/examples/",
            "an example two-job policy, MySQL/MariaDB and PostgreSQL pre/post scripts and restore-drill verify scripts, Prometheus alerting rules.",
        ),
    ];
    for (path, what) in files {
        item(r, path, inlines(what));
    }
}

fn see_also_section(r: &mut Roff, pages: &[String]) {
    r.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<Inline> = Vec::new();
    for p in pages.iter().map(String::as_str).chain([
        "fsfreeze(8)",
        "journalctl(1)",
        "systemd.service(5)",
    ]) {
        if !refs.is_empty() {
            refs.push(roman(", "));
        }
        let (name, section) = p.split_once('(').unwrap_or((p, ""));
        refs.push(bold(name));
        refs.push(roman(format!("({section}")));
    }
    r.text(refs);
}

/// appsnap.toml(5): the policy format, from the same tables as the README.
fn policy_page() -> String {
    let mut r = Roff::new();
    let source = format!("appsnap {}", super::args::LONG_VERSION);
    r.control("TH", ["appsnap.toml", "5", "", &source, "File Formats"]);
    r.control("SH", ["NAME"]);
    r.text([roman(
        "appsnap.toml - the policy of appsnap: its snapshot jobs and settings",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold("/etc/appsnap.toml")]);
    r.control("br", []);
    r.text([bold("/etc/appsnap.d/*.toml")]);
    r.control("SH", ["DESCRIPTION"]);
    for para in [
        "appsnap(1) reads its policy, in TOML, from `/etc/appsnap.toml`, then from every `/etc/appsnap.d/*.toml` in name order. Drop-ins may only add `[[job]]` tables (`[cloud]`, `[host]` and `[defaults]` belong to the main file); a job name may appear only once across all files.",
        "The policy is strict: unknown keys and tables are errors. Every error names the file, line and column, the job, the key and what would be accepted, and all errors are reported at once. `appsnap check --offline` validates the files; `appsnap check` also checks each job against this instance; `systemctl reload appsnap` makes the daemon re-read them.",
        "The files must be owned by root and writable by nobody else, or appsnap refuses them. Every table below is optional except that a policy without a `[[job]]` schedules nothing.",
    ] {
        r.control("PP", []);
        r.text(inlines(para));
    }
    for s in POLICY {
        policy_section(&mut r, s);
    }
    r.control("SH", ["EXAMPLE"]);
    r.text(inlines(
        "Two jobs on one database host (shipped as /usr/share/doc/appsnap/examples/two-jobs.toml):",
    ));
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.control("nf", []);
    for line in EXAMPLE_POLICY.lines() {
        r.text([roman(line)]);
    }
    r.control("fi", []);
    r.control("RE", []);
    r.control("SH", ["FILES"]);
    item(
        &mut r,
        "/etc/appsnap.toml",
        inlines("the main policy file."),
    );
    item(
        &mut r,
        "/etc/appsnap.d/*.toml",
        inlines("drop-ins: more jobs."),
    );
    item(
        &mut r,
        "/usr/share/doc/appsnap/examples/",
        inlines(
            "the example above, and pre/post and verify scripts for MySQL/MariaDB and PostgreSQL.",
        ),
    );
    see_also_section(
        &mut r,
        &[
            "appsnap(1)".to_string(),
            "appsnap-check(1)".to_string(),
            "appsnap-plan(1)".to_string(),
        ],
    );
    r.render()
}

fn policy_section(r: &mut Roff, s: &PolicySection) {
    r.control("SH", [s.header]);
    r.text(inlines(s.summary));
    for row in s.rows {
        let mut body = vec![roman("Type: ")];
        body.extend(inlines(row.ty));
        body.push(roman(". Default: "));
        body.extend(inlines(row.default));
        body.push(roman(". Accepted: "));
        body.extend(inlines(row.accepted));
        if let Some(v) = row.vendor {
            body.push(roman(". Vendor parameter: "));
            body.extend(inlines(v));
        }
        body.push(roman("."));
        item(r, &row.keys.join(", "), body);
    }
}

/// The command with its internal subcommands removed: clap_complete, unlike
/// clap_mangen, offers hidden subcommands, and operators should never be
/// tab-completed into `freeze-guard`.
fn without_hidden_subcommands(cmd: clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut out = clap::Command::new("appsnap")
        .version(super::args::LONG_VERSION)
        .args(cmd.get_arguments().cloned())
        .subcommands(visible);
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions_without_internal_commands() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let main = fs::read_to_string(dir.path().join("man/appsnap.1")).unwrap();
        assert!(main.contains(".TH appsnap 1"), "{main}");
        assert!(main.contains("thaw"), "subcommands listed: {main}");
        assert!(dir.path().join("man/appsnap-run.1").exists());
        assert!(!main.contains("freeze-guard"));
        assert!(!dir.path().join("man/appsnap-freeze-guard.1").exists());
        let bash = fs::read_to_string(dir.path().join("completions/appsnap.bash")).unwrap();
        assert!(bash.contains("complete -F _appsnap"), "{bash}");
        assert!(!bash.contains("freeze-guard") && !bash.contains("generate-assets"));
        let zsh = fs::read_to_string(dir.path().join("completions/_appsnap")).unwrap();
        assert!(zsh.starts_with("#compdef appsnap"), "{zsh}");
    }

    #[test]
    fn every_page_has_exit_status_environment_files_and_see_also() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let mut pages = 0;
        for e in fs::read_dir(dir.path().join("man")).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x != "1") {
                continue;
            }
            pages += 1;
            let page = fs::read_to_string(&path).unwrap();
            let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{path:?}: no {s}"));
            // man-pages(7) order, before clap's VERSION; SEE ALSO last.
            assert!(at(".SH \"EXIT STATUS\"") < at(".SH ENVIRONMENT"));
            assert!(at(".SH ENVIRONMENT") < at(".SH FILES"));
            assert!(at(".SH FILES") < at(".SH VERSION"));
            assert!(at(".SH VERSION") < at(".SH \"SEE ALSO\""));
            for o in Outcome::ALL {
                assert!(
                    page.contains(&format!(".TP\n\\fB{}\\fR\n", o.code())),
                    "{path:?}: {o}"
                );
            }
            assert!(page.contains("APPSNAP_LOG") && page.contains("/etc/appsnap.d/*.toml"));
            assert!(page.contains("\\fBappsnap.toml\\fR(5)"), "{path:?}");
            assert_eq!(page.matches(".ds Aq").count(), 2, "one apostrophe preamble");
        }
        let visible = <crate::cli::args::Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .count();
        assert!(visible >= 9, "run, check, verify, ... are visible");
        assert_eq!(
            pages,
            visible + 1,
            "appsnap.1 and one page per visible subcommand"
        );
    }

    /// appsnap.toml(5) documents every key of every table the README's
    /// tables hold (both come from doc_tables) and shows the shipped example.
    #[test]
    fn policy_page_documents_every_key_and_the_example() {
        let page = policy_page();
        assert!(page.contains(".TH appsnap.toml 5"), "{page}");
        assert!(
            page.contains("appsnap.toml \\- the policy"),
            "whatis line: {page}"
        );
        for s in POLICY {
            assert!(page.contains(&format!(".SH {}", s.header)), "{}", s.header);
            for row in s.rows {
                let tag = format!(".TP\n\\fB{}\\fR\n", row.keys.join(", "));
                assert!(page.contains(&tag), "{tag}");
            }
        }
        assert!(page.contains("name = \"mysql\""), "the example: {page}");
    }

    #[test]
    fn markdown_code_and_links_become_roff() {
        let mut r = Roff::new();
        r.text(inlines("a `b-c` [see](#x) d"));
        assert_eq!(r.to_roff(), "a \\fBb\\-c\\fR see d\n");
    }
}
