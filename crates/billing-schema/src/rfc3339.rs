//! The one time format of the schema: `occurred_at` is written as Go's `time.RFC3339Nano` in
//! UTC (up to nine fraction digits, trailing zeros dropped, `Z`) and read in any RFC 3339
//! offset. The ingester's canonical form of an instant is the same text, so two spellings of
//! one instant dedupe as one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats a time as Go's `time.RFC3339Nano` in UTC: up to nine fraction digits, trailing
/// zeros dropped, `Z`.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339::new(t).as_str().to_owned()
}

/// [`rfc3339()`] written into a buffer on the stack: the client formats every event's time on
/// the caller's thread, so this allocates nothing.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    buf: [u8; Rfc3339::CAP],
    len: u8,
}

impl Rfc3339 {
    /// `-yyyyyy-mm-ddThh:mm:ss.nnnnnnnnnZ` at most (years beyond four digits).
    const CAP: usize = 40;

    /// Formats `t`.
    pub fn new(t: SystemTime) -> Self {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i128, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i128, d.subsec_nanos());
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        };
        let mut out = Rfc3339 {
            buf: [0; Self::CAP],
            len: 0,
        };
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        if (0..=9999).contains(&year) {
            out.digits(year as u32, 4);
        } else {
            // Outside RFC 3339's four-digit years: written as the `time` crate would, with a
            // sign; the schema's validation refuses such times anyway.
            out.push(if year < 0 { b'-' } else { b'+' });
            out.digits(year.unsigned_abs().min(999_999) as u32, 6);
        }
        out.push(b'-');
        out.digits(month, 2);
        out.push(b'-');
        out.digits(day, 2);
        out.push(b'T');
        out.digits(sod / 3600, 2);
        out.push(b':');
        out.digits(sod / 60 % 60, 2);
        out.push(b':');
        out.digits(sod % 60, 2);
        if nanos != 0 {
            let mut n = nanos;
            let mut width = 9;
            while n % 10 == 0 {
                n /= 10;
                width -= 1;
            }
            out.push(b'.');
            out.digits(n, width);
        }
        out.push(b'Z');
        out
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }

    fn push(&mut self, b: u8) {
        self.buf[usize::from(self.len)] = b;
        self.len += 1;
    }

    /// `n` zero-padded to exactly `width` digits (`n` has at most `width` digits).
    fn digits(&mut self, mut n: u32, width: usize) {
        let start = usize::from(self.len);
        for i in (0..width).rev() {
            self.buf[start + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.len += width as u8;
    }
}

impl std::fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
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
    fn the_stack_formatter_agrees_with_the_time_crate_over_many_instants() {
        let reference = |t: SystemTime| {
            let dt = time::OffsetDateTime::from(t);
            let mut s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            if dt.nanosecond() != 0 {
                s.push('.');
                s.push_str(format!("{:09}", dt.nanosecond()).trim_end_matches('0'));
            }
            s.push('Z');
            s
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            // 0001-01-01 .. 9999-12-31, both sides of 1970, any fraction.
            let secs = rng.i64(-62_135_596_800..253_402_300_799);
            let nanos = match rng.u8(0..4) {
                0 => 0,
                1 => rng.u32(0..1000) * 1_000_000,
                _ => rng.u32(0..1_000_000_000),
            };
            let t = if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nanos)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                    + Duration::from_nanos(nanos.into())
            };
            assert_eq!(rfc3339(t), reference(t), "{secs}.{nanos}");
        }
    }

    #[test]
    fn whole_seconds_before_and_after_1970() {
        assert_eq!(rfc3339_secs(3600), "1970-01-01T01:00:00Z");
        assert_eq!(rfc3339_secs(-3600), "1969-12-31T23:00:00Z");
    }
}
