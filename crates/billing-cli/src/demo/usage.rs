//! The demo's usage generator: a realistic day of usage reports from many instances, drawn
//! from a seed. It exists apart from the run so the shape of the data (sizes, daily swing,
//! instances starting and stopping) can be read and changed without touching delivery or
//! reconciliation. A leaf: it imports no other demo module.
//!
//! Invariants:
//! - deterministic: the same [`Spec`] gives the same events in the same order (one RNG, drawn
//!   in a fixed order: every profile first, then the events hour by hour). Changing the order
//!   of draws changes every seed's output, which `billing demo` users and tests compare;
//! - [`Usage::len`] is exactly the number of events the iterator yields;
//! - unique keys are unique per (instance, day, hour, report slot): the key names the slot's
//!   minute, and a slot lasts at least a minute (at most 60 reports per hour), so only the
//!   run's deliberate re-adds share a key.

use std::time::{Duration, SystemTime};

use billing_client::{AmountType, Amounts, Event};

/// What to generate: the parameters of `billing demo` that shape the usage.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    /// Seed of the RNG: the same seed gives the same events.
    pub seed: u64,
    /// Instances reporting usage (at least 1).
    pub instances: u32,
    /// Hours of the day to report, from 00:00 UTC (1 to 24).
    pub hours: u32,
    /// Reports per instance and hour (1 to 60, so a report slot is a whole number of seconds).
    pub reports_per_hour: u32,
    /// The UTC day the usage happens on.
    pub day: time::Date,
}

/// One instance's usage pattern, drawn once from the seed.
#[derive(Debug)]
struct Profile {
    id: String,
    region: &'static str,
    /// Typical number of running containers.
    containers: f64,
    /// Containers packed on one node.
    per_node: i64,
    /// Samples ingested per container-second.
    samples_per_sec: f64,
    /// Hour of the day (UTC, fractional) of the highest load.
    peak_hour: f64,
    /// Relative daily swing of the load around its mean.
    swing: f64,
    /// Hours `[from, to)` the instance exists.
    from_hour: u32,
    to_hour: u32,
}

/// Regions and the UTC hour their customers' load peaks (mid-afternoon local time).
const REGIONS: [(&str, f64); 4] = [
    ("eu-west-1", 13.0),
    ("us-east-1", 19.0),
    ("us-west-2", 22.0),
    ("ap-southeast-1", 6.0),
];

impl Profile {
    fn draw(rng: &mut fastrand::Rng, index: u32, hours: u32) -> Self {
        // Sizes are heavy-tailed: most instances are small, a few are large.
        let containers = (rng.f64() * 3.5).exp().round();
        let (from_hour, to_hour) = match rng.u32(0..100) {
            0..=7 => (rng.u32(0..hours), hours), // created during the day
            8..=13 => (0, rng.u32(1..=hours)),   // deleted during the day
            _ => (0, hours),
        };
        // Most customers are in Europe and the US East.
        let (region, peak) = REGIONS[match rng.u32(0..20) {
            0..=7 => 0,
            8..=13 => 1,
            14..=16 => 2,
            _ => 3,
        }];
        Profile {
            id: (100_000 + index * 7).to_string(),
            region,
            containers,
            per_node: rng.i64(4..=16),
            samples_per_sec: 0.5 + rng.f64() * 19.5,
            peak_hour: peak + (rng.f64() - 0.5) * 4.0,
            swing: 0.2 + rng.f64() * 0.6,
            from_hour,
            to_hour,
        }
    }

    fn active(&self, hour: u32) -> bool {
        (self.from_hour..self.to_hour).contains(&hour)
    }
}

/// The day's events in time order: hour, then report slot, then instance.
pub(super) struct Usage {
    profiles: Vec<Profile>,
    rng: fastrand::Rng,
    day_start: SystemTime,
    day_label: String,
    hours: u32,
    slots: u32,
    slot_secs: u32,
    /// Next (hour, slot, instance) to produce.
    at: (u32, u32, usize),
}

impl Usage {
    /// Draws every instance's profile; the events are drawn lazily, as the iterator advances.
    pub(super) fn new(spec: Spec) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let profiles = (0..spec.instances)
            .map(|i| Profile::draw(&mut rng, i, spec.hours))
            .collect();
        let day = spec.day;
        let day_start = SystemTime::from(day.midnight().assume_utc());
        Usage {
            profiles,
            rng,
            day_start,
            day_label: format!(
                "{:04}{:02}{:02}",
                day.year(),
                u8::from(day.month()),
                day.day()
            ),
            hours: spec.hours,
            slots: spec.reports_per_hour,
            slot_secs: 3600 / spec.reports_per_hour,
            at: (0, 0, 0),
        }
    }

    /// How many events [`Iterator::next`] will produce.
    pub(super) fn len(&self) -> u64 {
        let instance_hours: u64 = (0..self.hours)
            .map(|h| self.profiles.iter().filter(|p| p.active(h)).count() as u64)
            .sum();
        instance_hours * u64::from(self.slots)
    }

    fn event(&mut self, hour: u32, slot: u32, p: usize) -> Event {
        let rng = &mut self.rng;
        let p = &self.profiles[p];
        let secs = i64::from(self.slot_secs);
        let t = f64::from(hour) + (f64::from(slot) + 0.5) / f64::from(self.slots);
        let load = 1.0 + p.swing * (std::f64::consts::TAU * (t - p.peak_hour) / 24.0).cos();
        let containers = (p.containers * load * (0.9 + rng.f64() * 0.2))
            .round()
            .max(1.0) as i64;
        // Containers starting and stopping inside the window run less than all of it.
        let container_seconds = containers * secs - rng.i64(0..=containers * secs / 20);
        let nodes = (containers + p.per_node - 1) / p.per_node;
        let samples =
            (container_seconds as f64 * p.samples_per_sec * (0.95 + rng.f64() * 0.1)).round();
        let offset = hour * 3600 + slot * self.slot_secs + rng.u32(0..self.slot_secs);
        let minute = slot * self.slot_secs / 60;
        Event {
            unique_key: format!("{}-{}-{hour:02}{minute:02}", p.id, self.day_label),
            internal_instance_id: p.id.clone(),
            occurred_at: self.day_start + Duration::from_secs(u64::from(offset)),
            amounts: Amounts::from([
                (AmountType::CONTAINER_SECONDS, container_seconds),
                (AmountType::NODE_SECONDS, nodes * secs),
                (AmountType::SAMPLES, samples as i64),
            ]),
            metadata: [("region".to_string(), p.region.to_string())].into(),
        }
    }
}

impl Iterator for Usage {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let (hour, slot, p) = self.at;
            if hour >= self.hours {
                return None;
            }
            self.at = if p + 1 < self.profiles.len() {
                (hour, slot, p + 1)
            } else if slot + 1 < self.slots {
                (hour, slot + 1, 0)
            } else {
                (hour + 1, 0, 0)
            };
            if self.profiles[p].active(hour) {
                return Some(self.event(hour, slot, p));
            }
        }
    }
}
