//! HTML building blocks of the dashboard pages: escaping, the page frame and its stylesheet.
//!
//! Invariant: every string that comes from a record, the store or the request (instance ids,
//! amount types, keys, bodies, raw entries, form values, error messages) goes through [`esc`]
//! before it is written into a page, in text and in attribute values alike (quotes included),
//! so `<script>` in an instance id renders as text. Pages are also served with a
//! `Content-Security-Policy` that allows no script at all (see `routes.rs`): a mistake here
//! would still not run code.

use std::fmt::Write as _;

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references: safe in element
/// text and in quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stylesheet of every page (inline: the binary serves everything, nothing is fetched).
const CSS: &str = include_str!("dashboard.css");

/// A whole page: `title` (escaped here) and `body` (already HTML).
pub(crate) fn page(title: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + CSS.len() + 512);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · billing ingest</title><style>{CSS}</style></head><body>\
         <header><h1>billing ingest</h1><nav>\
         <a href=\"/\">Usage</a><a href=\"/conflicts\">Conflicts</a>\
         <a href=\"/quarantine\">Quarantine</a><a href=\"/metrics\">Metrics</a>\
         <a href=\"/api/v1/summary\">API</a></nav></header><main>{body}</main></body></html>\n",
        esc(title)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attribute_breakers() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain-id_1"), "plain-id_1");
    }
}
