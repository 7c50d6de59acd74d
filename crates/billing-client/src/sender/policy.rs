//! Which ingester gets the next chunk, and which ones the sender keeps connected: the
//! decisions of `--billing.ingester-policy`, free of I/O so that they are unit-tested here.
//!
//! - Failover: one target at a time, the primary (index 0) first. When the target fails, the
//!   next ingester in order that may be tried now becomes the target at once; only when every
//!   ingester failed within its own backoff (a whole round) does the sender wait, for the one
//!   whose backoff ends first. While the target is a standby, the primary is rechecked every
//!   `primary_recheck`; once it answers it is the target again. A former target keeps its
//!   connection only until its in-flight chunks are acked.
//! - Round-robin: every ingester is wanted connected; chunks go to the connected ones in turn,
//!   skipping those at their in-flight limit.
//!
//! With one ingester both policies make the same decisions: that ingester, retried after its
//! backoff.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::IngesterPolicy;

/// The policy's state.
#[derive(Debug)]
pub(super) struct Policy {
    kind: IngesterPolicy,
    n: usize,
    /// Failover: the target.
    current: usize,
    /// Failover: when to recheck the primary while the target is a standby.
    recheck_at: Instant,
    recheck: Duration,
    /// Round-robin: where the next search for a connection starts.
    next: usize,
}

impl Policy {
    pub(super) fn new(kind: IngesterPolicy, n: usize, recheck: Duration) -> Self {
        Policy {
            kind,
            n,
            current: 0,
            recheck_at: Instant::now(),
            recheck,
            next: 0,
        }
    }

    fn failover(&self) -> bool {
        self.kind != IngesterPolicy::RoundRobin
    }

    /// Failover: the target; `None` in round-robin.
    pub(super) fn current(&self) -> Option<usize> {
        self.failover().then_some(self.current)
    }

    /// Failover with a standby as the target: the primary is to be rechecked.
    pub(super) fn on_standby(&self) -> bool {
        self.failover() && self.current != 0
    }

    /// When link `i` should next be connected (`None`: not wanted now). `next_attempt` is
    /// the end of its backoff; `target_up`, whether the failover target is connected.
    pub(super) fn open_at(
        &self,
        i: usize,
        has_work: bool,
        target_up: bool,
        next_attempt: Instant,
    ) -> Option<Instant> {
        if !self.failover() || i == self.current {
            return has_work.then_some(next_attempt);
        }
        // The primary is rechecked only while a standby delivers: if none does, the target
        // cycles through the list, the primary included, on its own.
        (i == 0 && target_up).then_some(self.recheck_at)
    }

    /// Whether an idle connection to `i` is kept open.
    pub(super) fn keeps(&self, i: usize) -> bool {
        !self.failover() || i == self.current
    }

    /// Whether new chunks go to `i` (the `active` gauge).
    pub(super) fn is_active(&self, i: usize, connected: bool) -> bool {
        if self.failover() {
            i == self.current
        } else {
            connected
        }
    }

    /// The link to write the next chunk on, among those that `can_take` one.
    pub(super) fn pick(&mut self, can_take: impl Fn(usize) -> bool) -> Option<usize> {
        if self.failover() {
            return can_take(self.current).then_some(self.current);
        }
        let i = round_robin_next(self.next, self.n, can_take)?;
        self.next = (i + 1) % self.n;
        Some(i)
    }

    /// Link `failed` failed; failover: the new target when it changed.
    pub(super) fn on_failure(
        &mut self,
        failed: usize,
        now: Instant,
        next_attempts: &[Instant],
    ) -> Option<usize> {
        if !self.failover() || failed != self.current || self.n < 2 {
            return None;
        }
        let to = failover_next(failed, now, next_attempts);
        if to == failed {
            return None;
        }
        self.current = to;
        if to != 0 {
            self.recheck_at = now + self.recheck;
        }
        Some(to)
    }

    /// The primary answered a recheck: it is the target again. Returns the former target.
    pub(super) fn back_to_primary(&mut self) -> usize {
        std::mem::replace(&mut self.current, 0)
    }

    /// A recheck of the primary failed: the next one after the interval.
    pub(super) fn recheck_failed(&mut self, now: Instant) {
        self.recheck_at = now + self.recheck;
    }
}

/// Failover after `failed` failed: the first ingester after it in order (wrapping, itself
/// last) whose backoff has ended; when none has (a whole round failed), the one whose backoff
/// ends first, the earliest in that order on a tie.
pub(super) fn failover_next(failed: usize, now: Instant, next_attempts: &[Instant]) -> usize {
    let n = next_attempts.len();
    let order = (1..=n).map(|k| (failed + k) % n);
    if let Some(i) = order.clone().find(|&i| next_attempts[i] <= now) {
        return i;
    }
    order.min_by_key(|&i| next_attempts[i]).unwrap_or(failed)
}

/// Round-robin: the first link from `start` on, wrapping, that can take a chunk.
pub(super) fn round_robin_next(
    start: usize,
    n: usize,
    can_take: impl Fn(usize) -> bool,
) -> Option<usize> {
    (0..n).map(|k| (start + k) % n).find(|&i| can_take(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn failover_moves_to_the_next_ingester_that_may_be_tried_at_once() {
        let now = Instant::now();
        // 0 just failed (its backoff runs), 1 and 2 are untried.
        assert_eq!(failover_next(0, now, &[now + S, now, now]), 1);
        // 1 failed too: 2 is next, not back to 0.
        assert_eq!(failover_next(1, now, &[now + S, now + S, now]), 2);
        // The last one failed: wrap around to the first whose backoff ended.
        assert_eq!(failover_next(2, now, &[now, now + S, now + S]), 0);
    }

    #[test]
    fn after_a_whole_round_failed_the_earliest_backoff_wins() {
        let now = Instant::now();
        assert_eq!(
            failover_next(2, now, &[now + 3 * S, now + S, now + 2 * S]),
            1
        );
        // A tie goes to the first in order after the failed one.
        assert_eq!(failover_next(0, now, &[now + S, now + S, now + S]), 1);
        assert_eq!(failover_next(0, now, &[now + S]), 0, "alone, it stays");
    }

    #[test]
    fn round_robin_takes_turns_and_skips_full_or_down_links() {
        let mut p = Policy::new(IngesterPolicy::RoundRobin, 3, S);
        let picks: Vec<_> = (0..4).map(|_| p.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        assert_eq!(p.pick(|i| i != 1), Some(2), "1 is full: skipped");
        assert_eq!(p.pick(|_| false), None);
        assert!(p.current().is_none());
        assert!(p.keeps(2) && p.is_active(1, true) && !p.is_active(1, false));
    }

    #[test]
    fn failover_targets_one_link_and_rechecks_the_primary_from_a_standby() {
        let now = Instant::now();
        let mut p = Policy::new(IngesterPolicy::Failover, 2, 10 * S);
        assert_eq!(p.pick(|_| true), Some(0));
        assert_eq!(p.open_at(0, true, false, now), Some(now));
        assert_eq!(p.open_at(1, true, false, now), None, "the standby waits");
        assert_eq!(p.on_failure(1, now, &[now, now]), None, "not the target");
        assert_eq!(p.on_failure(0, now, &[now + S, now]), Some(1));
        assert!(p.on_standby());
        assert_eq!(p.pick(|_| true), Some(1));
        assert!(!p.keeps(0) && p.keeps(1));
        // The primary is rechecked only while the standby is up, after the interval.
        assert_eq!(p.open_at(0, true, false, now), None);
        assert_eq!(p.open_at(0, false, true, now), Some(now + 10 * S));
        p.recheck_failed(now + 10 * S);
        assert_eq!(p.open_at(0, false, true, now), Some(now + 20 * S));
        assert_eq!(p.back_to_primary(), 1);
        assert_eq!(p.current(), Some(0));
        assert!(p.is_active(0, false) && !p.is_active(1, true));
    }

    #[test]
    fn one_ingester_never_fails_over() {
        let now = Instant::now();
        for kind in [IngesterPolicy::Failover, IngesterPolicy::RoundRobin] {
            let mut p = Policy::new(kind, 1, S);
            assert_eq!(p.on_failure(0, now, &[now + S]), None);
            assert_eq!(p.pick(|_| true), Some(0));
            assert_eq!(p.open_at(0, true, false, now + S), Some(now + S));
            assert_eq!(p.open_at(0, false, true, now), None, "no work: no connect");
        }
    }
}
