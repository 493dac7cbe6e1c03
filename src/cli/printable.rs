//! Strings from outside (ECS answers, state files, error messages quoting
//! them) made safe for a terminal: control characters and the invisible
//! bidirectional overrides are shown escaped (`\x1b`, `\u{202e}`), printable
//! Unicode is kept. Without this a crafted tag value or group ID printed by
//! `list` or `status` could clear, recolour or retitle the operator's
//! terminal, or make one line read as another. JSON output needs none of
//! this: the JSON encoder escapes what JSON requires.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters that reorder or hide text without showing themselves.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// `s` with every control character escaped (newlines too: one value, one line).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] for multi-line text (error messages): newlines are kept.
pub fn printable_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| printable(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_printable_unicode_kept() {
        assert_eq!(printable("ssg-bp1 应用 é"), "ssg-bp1 应用 é");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[31mb"), "a\\x1b[31mb");
        assert_eq!(printable("a\r\n\t\u{7f}"), "a\\x0d\\x0a\\x09\\x7f");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(printable_lines("one\u{1b}\ntwo"), "one\\x1b\ntwo");
    }
}
