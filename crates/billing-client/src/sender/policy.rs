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
//!
//! Links and ingesters: with `connections` (`c`) per ingester, link `i` is connection `i % c`
//! of ingester `i / c`. The failover target is an ingester: every connection to it is wanted
//! and takes chunks in turn, and it fails over only when none of them is connected (a single
//! broken connection is reconnected after its backoff while the others carry on). Only the
//! primary's first connection rechecks it; the others follow once it is the target again.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::IngesterPolicy;

/// The policy's state.
#[derive(Debug)]
pub(super) struct Policy {
    kind: IngesterPolicy,
    /// Ingesters.
    n: usize,
    /// Connections (links) per ingester.
    c: usize,
    /// Failover: the target ingester.
    current: usize,
    /// Failover: when to recheck the primary while the target is a standby.
    recheck_at: Instant,
    recheck: Duration,
    /// Where the next search for a link starts (round-robin over all links; failover over
    /// the target's).
    next: usize,
}

impl Policy {
    /// `n` ingesters with `c` connections each (both at least 1).
    pub(super) fn new(kind: IngesterPolicy, n: usize, c: usize, recheck: Duration) -> Self {
        Policy {
            kind,
            n,
            c,
            current: 0,
            recheck_at: Instant::now(),
            recheck,
            next: 0,
        }
    }

    fn failover(&self) -> bool {
        self.kind != IngesterPolicy::RoundRobin
    }

    /// How many ingesters there are.
    pub(super) fn ingesters(&self) -> usize {
        self.n
    }

    /// The ingester of link `i`.
    fn ingester(&self, i: usize) -> usize {
        i / self.c
    }

    /// The links to ingester `g`.
    pub(super) fn links_of(&self, g: usize) -> std::ops::Range<usize> {
        g * self.c..(g + 1) * self.c
    }

    /// Failover: the target ingester; `None` in round-robin.
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
        if !self.failover() || self.ingester(i) == self.current {
            return has_work.then_some(next_attempt);
        }
        // The primary is rechecked only while a standby delivers: if none does, the target
        // cycles through the list, the primary included, on its own.
        (i == 0 && target_up).then_some(self.recheck_at)
    }

    /// Whether an idle connection to `i` is kept open.
    pub(super) fn keeps(&self, i: usize) -> bool {
        !self.failover() || self.ingester(i) == self.current
    }

    /// Whether new chunks go to ingester `g` (the `active` gauge); `connected`: whether any
    /// of its connections is up.
    pub(super) fn is_active(&self, g: usize, connected: bool) -> bool {
        if self.failover() {
            g == self.current
        } else {
            connected
        }
    }

    /// The link to write the next chunk on, among those that `can_take` one: in turn over
    /// the target's links (failover) or over all of them (round-robin).
    pub(super) fn pick(&mut self, can_take: impl Fn(usize) -> bool) -> Option<usize> {
        let (base, len) = if self.failover() {
            (self.current * self.c, self.c)
        } else {
            (0, self.n * self.c)
        };
        let start = if (base..base + len).contains(&self.next) {
            self.next - base
        } else {
            0
        };
        let k = round_robin_next(start, len, |k| can_take(base + k))?;
        self.next = base + (k + 1) % len;
        Some(base + k)
    }

    /// Link `failed` failed; `connected[i]`: whether link `i` is still connected. Failover:
    /// the new target ingester when it changed (only once none of the target's connections
    /// is left).
    pub(super) fn on_failure(
        &mut self,
        failed: usize,
        now: Instant,
        next_attempts: &[Instant],
        connected: &[bool],
    ) -> Option<usize> {
        let g = self.ingester(failed);
        if !self.failover() || g != self.current || self.n < 2 {
            return None;
        }
        if self.links_of(g).any(|i| connected[i]) {
            return None;
        }
        // An ingester may be tried again once any of its connections may.
        let per_ingester: Vec<Instant> = (0..self.n)
            .map(|h| {
                self.links_of(h)
                    .map(|i| next_attempts[i])
                    .min()
                    .expect("c >= 1")
            })
            .collect();
        let to = failover_next(g, now, &per_ingester);
        if to == g {
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
        let mut p = Policy::new(IngesterPolicy::RoundRobin, 3, 1, S);
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
        let mut p = Policy::new(IngesterPolicy::Failover, 2, 1, 10 * S);
        assert_eq!(p.pick(|_| true), Some(0));
        assert_eq!(p.open_at(0, true, false, now), Some(now));
        assert_eq!(p.open_at(1, true, false, now), None, "the standby waits");
        assert_eq!(
            p.on_failure(1, now, &[now, now], &[true, false]),
            None,
            "not the target"
        );
        assert_eq!(
            p.on_failure(0, now, &[now + S, now], &[false, false]),
            Some(1)
        );
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
    fn failover_spreads_over_the_targets_connections_and_moves_when_none_is_left() {
        let now = Instant::now();
        // Two ingesters, three connections each: links 0-2 go to ingester 0, 3-5 to 1.
        let mut p = Policy::new(IngesterPolicy::Failover, 2, 3, S);
        let picks: Vec<_> = (0..4).map(|_| p.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0], "in turn over the target's connections");
        assert_eq!(p.pick(|i| i == 2), Some(2), "full or down ones are skipped");
        assert!(p.keeps(1) && p.keeps(2) && !p.keeps(3));
        assert_eq!(
            p.open_at(2, true, true, now),
            Some(now),
            "every connection is wanted"
        );
        assert_eq!(p.open_at(4, true, true, now), None, "the standby's are not");
        let up = [false, true, true, false, false, false];
        let attempts = [now + S, now, now, now, now, now];
        assert_eq!(
            p.on_failure(0, now, &attempts, &up),
            None,
            "two connections to the target are still up"
        );
        let down = [false; 6];
        assert_eq!(p.on_failure(1, now, &attempts, &down), Some(1));
        assert_eq!(p.pick(|_| true), Some(3), "now the standby's connections");
        assert_eq!(p.pick(|_| true), Some(4));
        assert!(p.on_standby());
        assert_eq!(p.open_at(0, false, true, now), Some(now + S), "the recheck");
        assert_eq!(
            p.open_at(1, true, true, now),
            None,
            "only the first connection rechecks"
        );
        assert_eq!(p.back_to_primary(), 1);
        assert_eq!(p.pick(|_| true), Some(0));
    }

    #[test]
    fn round_robin_spreads_over_every_connection_of_every_ingester() {
        let mut p = Policy::new(IngesterPolicy::RoundRobin, 2, 2, S);
        let picks: Vec<_> = (0..5).map(|_| p.pick(|i| i != 2).unwrap()).collect();
        assert_eq!(picks, [0, 1, 3, 0, 1]);
        assert_eq!((p.ingester(1), p.ingester(2)), (0, 1));
        assert_eq!(p.links_of(1), 2..4);
        assert!(p.is_active(1, true) && !p.is_active(1, false));
    }

    #[test]
    fn one_ingester_never_fails_over() {
        let now = Instant::now();
        for kind in [IngesterPolicy::Failover, IngesterPolicy::RoundRobin] {
            let mut p = Policy::new(kind, 1, 1, S);
            assert_eq!(p.on_failure(0, now, &[now + S], &[false]), None);
            assert_eq!(p.pick(|_| true), Some(0));
            assert_eq!(p.open_at(0, true, false, now + S), Some(now + S));
            assert_eq!(p.open_at(0, false, true, now), None, "no work: no connect");
        }
    }
}
