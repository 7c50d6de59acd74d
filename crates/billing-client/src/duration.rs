//! Go-style durations (`500ms`, `1m30s`, `1.5h`, `300us`): the syntax of Go's
//! `time.ParseDuration`, so flag values from Go deployments keep working, plus `d` for days
//! (`35d`), which Go lacks and retention-like settings need. `humantime` reads a
//! different dialect (no fractions, spaces), hence this small parser.

use std::time::Duration;

/// Parses a Go duration string. Negative durations are refused (no setting here uses them).
///
/// # Errors
/// A message naming the text that is not a duration.
pub fn parse(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (examples: 500ms, 1m30s, 2h, 35d)");
    let mut rest = s.trim();
    if rest.starts_with('+') {
        rest = &rest[1..];
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(err()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(err());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err())?
        };
        let mut frac_nanos: u128 = 0;
        let mut div: u128 = 1;
        for c in frac.chars().take(18) {
            frac_nanos = frac_nanos * 10 + u128::from(c.to_digit(10).ok_or_else(err)?);
            div *= 10;
        }
        total = int
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_nanos * scale / div))
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration as Go prints it (`500ms`, `1m30s`, `30s`).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return trim(format!("{}.{:03}", nanos / 1_000, nanos % 1_000)) + "µs";
    }
    if nanos < 1_000_000_000 {
        return trim(format!("{}.{:06}", nanos / 1_000_000, nanos % 1_000_000)) + "ms";
    }
    let total_secs = d.as_secs();
    let (h, m, s) = (total_secs / 3600, (total_secs % 3600) / 60, total_secs % 60);
    let secs = trim(format!("{s}.{:09}", d.subsec_nanos())) + "s";
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse("2h45m").unwrap(),
            Duration::from_secs(2 * 3600 + 45 * 60)
        );
        assert_eq!(parse("300us").unwrap(), Duration::from_micros(300));
        assert_eq!(parse("300µs").unwrap(), Duration::from_micros(300));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse(".5m").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn days_extend_the_go_syntax() {
        assert_eq!(parse("35d").unwrap(), Duration::from_secs(35 * 86_400));
        assert_eq!(parse("1d12h").unwrap(), Duration::from_secs(36 * 3600));
    }

    #[test]
    fn refuses_what_go_refuses_and_negatives() {
        for bad in ["", "5", "ms", "1x", "-1s", "1.2.3s", "s5", "."] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse("99999999999999999999h").is_err());
    }

    #[test]
    fn formats_as_go_prints() {
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
        for d in [
            Duration::from_millis(500),
            Duration::from_secs(90),
            Duration::from_millis(1500),
            Duration::from_micros(7),
        ] {
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
