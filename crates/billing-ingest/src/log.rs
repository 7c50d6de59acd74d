//! Peer-controlled text in log lines. Keys, tags, instance ids and reasons come from the
//! network; written raw, a `\n` or an ESC sequence could forge log lines or drive a terminal,
//! and a megabyte-long key would cost a megabyte of log. [`Escaped`] writes such text safely in
//! every log format: control characters, quotes and backslashes escaped (as Rust's `{:?}` of a
//! string, without the surrounding quotes), and cut after [`MAX_LOGGED_CHARS`] characters with
//! a marker saying how much was left out.

use std::fmt;

/// Characters of one peer-controlled string written to a log line, at most.
pub const MAX_LOGGED_CHARS: usize = 200;

/// Displays peer-controlled text escaped and bounded (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_LOGGED_CHARS) {
            for e in c.escape_debug() {
                fmt::Write::write_char(f, e)?;
            }
        }
        let rest = chars.count();
        if rest > 0 {
            write!(f, "…(+{rest} chars)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let key = "k\n2026-12-03T00:00:00Z  INFO ingester stopped\u{1b}[2J";
        let shown = Escaped(key).to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(
            shown.contains("\\n") && shown.contains("\\u{1b}"),
            "{shown}"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_count() {
        let shown = Escaped(&"x".repeat(1000)).to_string();
        assert!(shown.starts_with(&"x".repeat(MAX_LOGGED_CHARS)));
        assert!(shown.ends_with("…(+800 chars)"), "{shown}");
    }
}
