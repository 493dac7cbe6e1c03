//! Policy errors that always say where (file:line:column), which key, and
//! what would have been accepted.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the policy, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The job it belongs to, when inside a `[[job]]`.
    pub job: Option<String>,
    /// The offending key, dotted (`defaults.freeze_timeout_secs`, `schedule`).
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if let Some(job) = &self.job {
            write!(f, "job {job:?}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Why a policy could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read at all.
    #[error("{}: cannot read policy: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The main policy file does not exist: said plainly, with how to make
    /// one, since this is what a fresh install or a mistyped `-c` meets first.
    #[error(
        "{}: no such file; create the policy there (copy an example from {EXAMPLES_DIR}, or config/examples/ in a source tree, and edit it), or name another with -c PATH; then `appsnap check` validates it",
        path.display()
    )]
    NotFound {
        /// The file that is missing.
        path: PathBuf,
    },
    /// The drop-in directory exists but cannot be listed.
    #[error("{}: cannot list drop-in directory: {source}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file or directory appsnap does not trust, or cannot use: not owned
    /// by root, writable by others, reached through such a directory, not a
    /// regular file, too large. The message names it and says why.
    #[error("refusing policy: {0}")]
    Untrusted(crate::securefs::TrustError),
    /// One or more located problems; all are reported at once so an operator
    /// fixes the file in one pass.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// Where the packages install the example policies.
pub const EXAMPLES_DIR: &str = "/usr/share/doc/appsnap/examples/";

impl PolicyError {
    /// Whether the policy was read and refused (bad content, or a file
    /// appsnap does not trust), as opposed to not found or not readable;
    /// callers say "policy rejected" only then.
    pub fn is_rejection(&self) -> bool {
        matches!(self, PolicyError::Invalid(_) | PolicyError::Untrusted(_))
    }

    /// The located problems, empty for I/O failures.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Invalid(p) => p,
            _ => &[],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets into line/column for one source text.
pub(crate) struct Locator<'a> {
    pub path: &'a std::path::Path,
    pub text: &'a str,
}

impl Locator<'_> {
    /// Builds a problem at byte offset `at`.
    pub fn problem(&self, at: usize, job: Option<&str>, key: &str, message: String) -> Problem {
        let (line, column) = line_col(self.text, at);
        Problem {
            path: self.path.to_path_buf(),
            line,
            column,
            job: job.map(str::to_string),
            key: key.to_string(),
            message,
        }
    }
}

/// 1-based line and character column of a byte offset.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbb = \"é x\"\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 12), (2, 7));
        assert_eq!(line_col(t, 14), (2, 8), "é is one column, two bytes");
    }
}
