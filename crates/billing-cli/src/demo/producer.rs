//! The demo's producer etiquette: how a well-behaved service hands events to the client. It is
//! its own module because it is the pattern the demo teaches (wait for room rather than be
//! refused, retry a refusal rather than drop the event), separate from what is produced and
//! from the books. Imports only [`super::ledger`], to count its waits and retries.
//!
//! Invariants: [`add`] never drops an event: it returns `Ok` only once the client accepted it,
//! and otherwise an error, which ends the demo; no wait lasts longer than [`STALL_LIMIT`].

use std::time::{Duration, Instant};

use anyhow::bail;
use billing_client::{AddError, Client, Event};

use super::ledger::Ledger;

/// Longest time the producer waits for room in the client's buffer, or `flush` waits for the
/// acks, before the demo gives up: far beyond what a healthy run needs.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Short, growing pause of a producer that found no room (a real service would do other work).
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_micros(50))
    }

    fn pause(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(5));
    }
}

/// Adds `event` the way a well-behaved service does: waits for room in the buffer instead of
/// having the event refused, and retries it should it be refused for a full buffer anyway.
pub(super) fn add(
    client: &Client,
    capacity: usize,
    mut event: Event,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    if client.pending() >= capacity {
        ledger.waits += 1;
        while client.pending() >= capacity {
            if start.elapsed() > STALL_LIMIT {
                bail!("the client's buffer stayed full for {STALL_LIMIT:?}: is the ingester up?");
            }
            backoff.pause();
        }
    }
    loop {
        match client.add(event) {
            Ok(()) => return Ok(()),
            Err(e @ AddError::QueueFull { .. }) if start.elapsed() <= STALL_LIMIT => {
                ledger.refused_retried += 1;
                event = e.into_event();
                backoff.pause();
            }
            Err(e) => return Err(e.into()),
        }
    }
}
