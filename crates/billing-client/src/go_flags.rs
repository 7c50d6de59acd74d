//! Go's command-line forms, rewritten into clap's before parsing, so that a service moving off
//! the Go client keeps its deployment manifests: `-billing.ingester=host:port`,
//! `-billing.ingester host:port` and bare boolean flags (`-billing.require-ack`).
//!
//! Go's `flag` package takes one or two dashes alike; clap's long flags need two. The rewrite
//! is purely lexical and deliberately narrow, so it cannot change a command line clap already
//! reads:
//! - only a token of one dash followed by a letter and at least one more name character
//!   becomes two dashes (`-h`, `-V` and other one-letter flags are clap's short flags and stay;
//!   `-5` and `-1.5` are values and stay);
//! - everything after `--` is left alone (positional arguments);
//! - a value that follows a flag is never looked at as a flag of its own by Go either, but the
//!   rewrite cannot know which flags take values, so a value spelled like a Go flag
//!   (`--key -billing.x`) would be rewritten: values of that shape are not billing data.
//!
//! Bare booleans need nothing here: the client's boolean flags accept a missing value as
//! `true` ([`crate::Args`]).

use std::ffi::OsString;

/// Rewrites Go-style single-dash long flags (`-billing.ingester=h:p`) into clap's
/// (`--billing.ingester=h:p`); call it on `std::env::args_os()` before `Parser::parse_from`.
/// The first item (the program name) is kept as it is.
pub fn go_flags<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut positional = false;
    for (i, arg) in args.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if i == 0 || positional {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            positional = true;
            out.push(arg);
            continue;
        }
        out.push(match arg.to_str() {
            Some(s) if is_go_long_flag(s) => format!("-{s}").into(),
            _ => arg,
        });
    }
    out
}

fn is_go_long_flag(s: &str) -> bool {
    let Some(name) = s.strip_prefix('-') else {
        return false;
    };
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        go_flags(args.iter().copied())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_single_dash_long_flags_get_a_second_dash() {
        assert_eq!(
            rewrite(&[
                "svc",
                "-billing.ingester=h:1",
                "-billing.retry-delay",
                "1s",
                "-billing.require-ack",
                "--billing.framing=message",
            ]),
            [
                "svc",
                "--billing.ingester=h:1",
                "--billing.retry-delay",
                "1s",
                "--billing.require-ack",
                "--billing.framing=message",
            ]
        );
    }

    #[test]
    fn short_flags_values_and_positionals_are_left_alone() {
        assert_eq!(
            rewrite(&["-prog", "-h", "-V", "-5", "-1.5", "--", "-billing.x", "-"]),
            ["-prog", "-h", "-V", "-5", "-1.5", "--", "-billing.x", "-"]
        );
        assert_eq!(rewrite(&["p", "-x=1", "-"]), ["p", "-x=1", "-"]);
    }
}
