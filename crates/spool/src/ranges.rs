//! A set of `u64` stored as disjoint, non-adjacent half-open ranges.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct RangeSet {
    /// start -> end (exclusive).
    map: BTreeMap<u64, u64>,
    count: u64,
}

impl RangeSet {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn contains(&self, x: u64) -> bool {
        self.map
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &e)| x < e)
    }

    /// Smallest member `>= x`.
    pub fn next_at_or_after(&self, x: u64) -> Option<u64> {
        if let Some((_, &e)) = self.map.range(..=x).next_back()
            && x < e
        {
            return Some(x);
        }
        self.map.range(x..).next().map(|(&s, _)| s)
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Remove what overlaps first so the count stays exact, then merge neighbours.
        self.remove(start, end);
        let mut s = start;
        let mut e = end;
        if let Some((&ps, &pe)) = self.map.range(..start).next_back()
            && pe == start
        {
            self.map.remove(&ps);
            s = ps;
            self.count -= pe - ps;
        }
        if let Some(&ne) = self.map.get(&end) {
            self.map.remove(&end);
            e = ne;
            self.count -= ne - end;
        }
        self.map.insert(s, e);
        self.count += e - s;
    }

    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .map
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            self.count -= e - s;
            if s < start {
                self.map.insert(s, start);
                self.count += start - s;
            }
            if e > end {
                self.map.insert(end, e);
                self.count += e - end;
            }
        }
    }

    pub fn remove_below(&mut self, x: u64) {
        if let Some((&s, _)) = self.map.iter().next()
            && s < x
        {
            self.remove(s, x);
        }
    }

    /// Number of members in `[start, end)`.
    pub fn count_in(&self, start: u64, end: u64) -> u64 {
        let mut n = 0;
        for (&s, &e) in self.map.range(..end).rev() {
            if e <= start {
                break;
            }
            n += e.min(end) - s.max(start);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_btreeset(ops in proptest::collection::vec((any::<bool>(), 0u64..60, 0u64..12), 0..60)) {
            let mut rs = RangeSet::default();
            let mut set = BTreeSet::new();
            for (ins, s, l) in ops {
                if ins { rs.insert(s, s + l); set.extend(s..s + l); }
                else { rs.remove(s, s + l); for x in s..s + l { set.remove(&x); } }
                prop_assert_eq!(rs.count(), set.len() as u64);
                for x in 0..80 {
                    prop_assert_eq!(rs.contains(x), set.contains(&x));
                    prop_assert_eq!(rs.next_at_or_after(x), set.range(x..).next().copied());
                }
                prop_assert_eq!(rs.count_in(10, 30), set.range(10..30).count() as u64);
                // adjacent ranges are always merged
                let v: Vec<_> = rs.map.iter().collect();
                for w in v.windows(2) { prop_assert!(w[0].1 < w[1].0); }
            }
        }
    }
}
