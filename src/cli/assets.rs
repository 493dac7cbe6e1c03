//! `appsnap generate-assets DIR` (hidden): writes the man pages and shell
//! completions the packages ship. They are generated from the same `Cli`
//! struct the binary parses, so they cannot drift from the real options; the
//! subcommand lives in the binary because the CLI is not part of the library.

use std::fs;
use std::io;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use super::args::{AssetsArgs, Cli};

/// Writes `DIR/man/*.1` and `DIR/completions/{appsnap.bash,_appsnap}`; 0 on success, 1 on an I/O error.
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
    // One page per visible subcommand (appsnap-run.1, ...) plus appsnap.1;
    // hidden subcommands (freeze-guard, generate-assets) are internal.
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut cmd = without_hidden_subcommands(Cli::command());
    for (shell, name) in [(Shell::Bash, "appsnap.bash"), (Shell::Zsh, "_appsnap")] {
        let mut out = fs::File::create(completions.join(name))?;
        clap_complete::generate(shell, &mut cmd, "appsnap", &mut out);
    }
    Ok(())
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
}
