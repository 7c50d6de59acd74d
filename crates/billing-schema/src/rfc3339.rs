//! The one time format of the schema: `occurred_at` is written as Go's `time.RFC3339Nano` in
//! UTC (up to nine fraction digits, trailing zeros dropped, `Z`) and read in any RFC 3339
//! offset. The ingester's canonical form of an instant is the same text, so two spellings of
//! one instant dedupe as one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats a time as Go's `time.RFC3339Nano` in UTC: up to nine fraction digits, trailing
/// zeros dropped, `Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let mut out = String::with_capacity(30);
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.nanosecond();
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 time (any offset).
///
/// # Errors
/// The parser's message, for text that is not RFC 3339.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// The instant `secs` Unix seconds (negative: before 1970), written as [`rfc3339()`] writes it.
pub fn rfc3339_secs(secs: i64) -> String {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_go_rfc3339nano() {
        let t = UNIX_EPOCH + Duration::new(1_795_754_038, 467_902_040);
        assert_eq!(rfc3339(t), "2026-11-27T04:33:58.46790204Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_754_038)),
            "2026-11-27T04:33:58Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(0, 100_000_000)),
            "1970-01-01T00:00:00.1Z"
        );
        assert_eq!(parse_rfc3339("2026-11-27T04:33:58.46790204Z").unwrap(), t);
        assert_eq!(
            parse_rfc3339("2026-11-27T05:33:58.46790204+01:00").unwrap(),
            t
        );
    }

    #[test]
    fn whole_seconds_before_and_after_1970() {
        assert_eq!(rfc3339_secs(3600), "1970-01-01T01:00:00Z");
        assert_eq!(rfc3339_secs(-3600), "1969-12-31T23:00:00Z");
    }
}
