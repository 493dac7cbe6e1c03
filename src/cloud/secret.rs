//! A string that must never reach a log line, an error message or `Debug` output.
//!
//! AccessKeySecrets, STS security tokens and IMDS session tokens are wrapped in
//! [`Secret`] from the moment they are parsed, so a stray `{:?}` or an error that
//! formats its context cannot leak them. The value is reachable only through the
//! explicit [`Secret::expose`], which makes every use greppable.

use std::fmt;

/// Redacted stand-in printed wherever a secret would otherwise appear.
pub const REDACTED: &str = "<redacted>";

/// An owned secret string whose `Debug` and `Display` print [`REDACTED`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; from here on only [`Secret::expose`] reveals it.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The raw value, for signing and for the one header that must carry it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when empty; lets callers reject blank credentials without exposing them.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    /// Lets JSON answers (IMDS role credentials) be parsed straight into a `Secret`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces every occurrence of each non-empty secret in `text` with [`REDACTED`].
///
/// Used on server-supplied strings (error messages, unexpected bodies) that may
/// echo what we sent.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        // Very short values would redact innocent text and are not real secrets.
        if s.0.len() >= 4 {
            out = out.replace(&s.0, REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn scrub_replaces_all_occurrences() {
        let s = Secret::new("abcd1234");
        assert_eq!(
            scrub("x abcd1234 y abcd1234", &[&s]),
            "x <redacted> y <redacted>"
        );
        assert_eq!(scrub("abc", &[&Secret::new("")]), "abc");
    }
}
