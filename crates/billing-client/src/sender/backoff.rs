//! Retry delays after a failed connection: from `base`, doubling up to `max`, each drawn in
//! `[d/2, d]` ("equal jitter") so that a fleet of clients does not retry in lockstep after an
//! ingester restart; fixed (no jitter) when `max <= base`, the Go client's behaviour.
//!
//! Invariants: every delay is at least `base / 2` and at most `max` (or exactly `base` when
//! fixed); `reset` returns to `base` after a success.

use std::time::Duration;

/// Exponential backoff with jitter.
#[derive(Debug)]
pub(super) struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(super) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            current: base,
        }
    }

    /// The delay before the next attempt.
    pub(super) fn next(&mut self) -> Duration {
        if self.max <= self.base {
            return self.base;
        }
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }

    /// Back to the first delay, after a success.
    pub(super) fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_jitter_bounds() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let caps = [100, 200, 400, 800, 1000, 1000, 1000];
        for cap in caps {
            let d = b.next();
            assert!(
                d >= cap * MS / 2 && d <= cap * MS,
                "{d:?} not in [{cap}/2, {cap}] ms"
            );
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).next())
            .collect();
        assert!(
            delays.len() > 1,
            "50 first delays were all equal: no jitter"
        );
    }

    #[test]
    fn reset_returns_to_the_base_delay() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        for _ in 0..5 {
            b.next();
        }
        b.reset();
        assert!(b.next() <= 100 * MS);
    }

    #[test]
    fn max_not_above_base_means_a_fixed_delay_like_the_go_client() {
        let mut b = Backoff::new(500 * MS, 500 * MS);
        for _ in 0..5 {
            assert_eq!(b.next(), 500 * MS);
        }
    }
}
