//! The dashboard's usage chart: an SVG bar chart drawn on the server, one bar per bucket.
//!
//! Grid lines and y labels sit at 0, half the maximum (rounded down) and the maximum, each at
//! its own value's height.
//!
//! Why by hand: a bar chart is a few rectangles and labels; a charting library (or any
//! JavaScript) would be the largest thing on the page. Invariants: the chart has exactly one
//! `<rect class="bar">` per bucket of the period, empty buckets included (height 0), left to
//! right in time; each bar's `<title>` and `data-value` hold the bucket's exact sum; heights
//! are proportional to the largest bucket (geometry in `f64`: only the drawing is rounded,
//! never a number shown); every text is escaped ([`esc`]).

use std::fmt::Write as _;

use super::html::esc;
use crate::validate::rfc3339_secs;

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A bucket start as the axis shows it: `2026-11-27 04:00` for hours, `2026-11-27` for days.
fn label(start: i64, bucket_secs: i64) -> String {
    let t = rfc3339_secs(start);
    if bucket_secs >= 86_400 {
        t[..10].to_string()
    } else {
        format!("{} {}", &t[..10], &t[11..16])
    }
}

/// The SVG of `bars` (bucket start in Unix seconds, exact sum), buckets `bucket_secs` long,
/// titled `amount_type`.
pub(crate) fn bar_chart(amount_type: &str, bars: &[(i64, i128)], bucket_secs: i64) -> String {
    let mut out = String::with_capacity(256 + bars.len() * 160);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = bars.len().max(1) as f64;
    let slot = plot_w / n;
    let gap = if slot > 4.0 { slot * 0.15 } else { 0.0 };
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\" data-amount-type=\"{}\" data-buckets=\"{}\">\
         <title>{} per {}</title>",
        esc(amount_type),
        bars.len(),
        esc(amount_type),
        if bucket_secs >= 86_400 { "day" } else { "hour" },
    );
    // Grid lines and y labels at 0, half and the maximum.
    for value in [0_i128, max / 2, max] {
        let frac = if max > 0 {
            value as f64 / max as f64
        } else {
            0.0
        };
        let y = TOP + plot_h * (1.0 - frac);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (i, &(start, value)) in bars.iter().enumerate() {
        let h = if max > 0 {
            plot_h * (value.max(0) as f64 / max as f64)
        } else {
            0.0
        };
        let x = LEFT + slot * i as f64 + gap / 2.0;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{h:.2}\" \
             data-bucket=\"{}\" data-value=\"{value}\"><title>{}: {value}</title></rect>",
            TOP + plot_h - h,
            (slot - gap).max(0.5),
            rfc3339_secs(start),
            esc(&label(start, bucket_secs)),
        );
    }
    let base = TOP + plot_h;
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{base}\" y2=\"{base}\"/>",
        WIDTH - RIGHT
    );
    // X labels: first, middle and last bucket.
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        let mid = &bars[bars.len() / 2];
        let mut marks = vec![(0usize, first.0, "start")];
        if bars.len() > 2 {
            marks.push((bars.len() / 2, mid.0, "middle"));
        }
        if bars.len() > 1 {
            marks.push((bars.len() - 1, last.0, "end"));
        }
        for (i, start, anchor) in marks {
            let x = match anchor {
                "start" => LEFT,
                "end" => WIDTH - RIGHT,
                _ => LEFT + slot * (i as f64 + 0.5),
            };
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                HEIGHT - 8.0,
                esc(&label(start, bucket_secs))
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_bucket_with_exact_values_and_escaped_text() {
        let big = i128::from(i64::MAX) * 3;
        let svg = bar_chart("<t>", &[(0, 0), (3600, big), (7200, 5)], 3600);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains(&format!("data-value=\"{big}\"")), "{svg}");
        assert!(svg.contains("&lt;t&gt;") && !svg.contains("<t>"), "{svg}");
        assert!(svg.contains("1970-01-01 01:00"), "{svg}");
        assert!(bar_chart("t", &[], 86_400).ends_with("</svg>"));
    }
}
