//! The faults a proxy applies, as one value the test replaces or edits at run time.
//!
//! Every field is independent and off by default; several may be on at once (a delay and a
//! duplication, say). The proxy reads the current value before each read and each write, so
//! a change applies to live connections as well as new ones.

use std::time::Duration;

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the side that connected to the proxy) to the upstream server.
    ToServer,
    /// From the upstream server back to the client (acks, handshake replies).
    ToClient,
}

/// How acks are reordered: see [`Faults::reorder_acks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorder {
    /// Server→client values are held until this many are held, then released last first.
    pub count: usize,
    /// A group is released (reversed) once its first value was held this long, full or not,
    /// so a client that waits for an ack before sending more is not stalled for ever.
    pub max_hold: Duration,
}

/// Bytes sent one at a time: see [`Faults::trickle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trickle {
    /// The direction that trickles (the other flows normally).
    pub direction: Direction,
    /// Pause after each byte.
    pub interval: Duration,
}

/// What the proxy does to the traffic it forwards. `Faults::default()` is a clean pipe.
///
/// Frame-level faults (`drop_acks`, `reorder_acks`, `duplicate_frames`, and
/// [`crate::FaultProxy::cut_mid_frame`]) split each direction into MessagePack values with
/// `forward::msgpack::Scanner`: a Forward-protocol frame on the way to the server, an ack
/// (`{"ack": id}`) on the way back. A connection whose bytes are not MessagePack (TLS, JSON
/// framing) is forwarded as raw bytes and only the byte-level faults apply to it. The
/// shared-key handshake is MessagePack too: do not combine frame-level faults with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Black hole: nothing is read or written in either direction and new connections are
    /// accepted but not connected upstream, until this is switched off. What was sent during
    /// the partition is delivered after it, as TCP would after a real partition heals (unless
    /// a side gave up on the connection first).
    pub partition: bool,
    /// New connections are accepted and reset at once (RST), as by a host whose port is
    /// closed. Live connections are not touched.
    pub refuse_connections: bool,
    /// Every server→client value is read and thrown away: acks lost after the server
    /// committed.
    pub drop_acks: bool,
    /// Every server→client value is written this long after it was read (order kept).
    pub delay_acks: Option<Duration>,
    /// Server→client values are released in reversed groups.
    pub reorder_acks: Option<Reorder>,
    /// Every n-th client→server frame (counted over the whole proxy; 1: every frame) is
    /// written twice in a row, as a chunk replayed by the network or a confused client.
    pub duplicate_frames: Option<u64>,
    /// One direction's bytes are written one at a time with a pause after each.
    pub trickle: Option<Trickle>,
}

impl Faults {
    /// A clean pipe (the same as `Faults::default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Only [`Faults::partition`].
    pub fn partition() -> Self {
        Self {
            partition: true,
            ..Self::default()
        }
    }

    /// Only [`Faults::refuse_connections`].
    pub fn refuse_connections() -> Self {
        Self {
            refuse_connections: true,
            ..Self::default()
        }
    }

    /// Only [`Faults::drop_acks`].
    pub fn drop_acks() -> Self {
        Self {
            drop_acks: true,
            ..Self::default()
        }
    }

    /// Only [`Faults::delay_acks`] by `delay`.
    pub fn delay_acks(delay: Duration) -> Self {
        Self {
            delay_acks: Some(delay),
            ..Self::default()
        }
    }

    /// Only [`Faults::reorder_acks`]: groups of `count`, each held at most `max_hold`.
    pub fn reorder_acks(count: usize, max_hold: Duration) -> Self {
        Self {
            reorder_acks: Some(Reorder { count, max_hold }),
            ..Self::default()
        }
    }

    /// Only [`Faults::duplicate_frames`]: every `every`-th frame (at least 1) twice.
    pub fn duplicate_frames(every: u64) -> Self {
        Self {
            duplicate_frames: Some(every.max(1)),
            ..Self::default()
        }
    }

    /// Only [`Faults::trickle`]: `direction` one byte per `interval`.
    pub fn trickle(direction: Direction, interval: Duration) -> Self {
        Self {
            trickle: Some(Trickle {
                direction,
                interval,
            }),
            ..Self::default()
        }
    }

    /// The trickle interval for `direction`, if it trickles.
    pub(crate) fn trickle_for(&self, direction: Direction) -> Option<Duration> {
        self.trickle
            .filter(|t| t.direction == direction)
            .map(|t| t.interval)
    }
}
