//! `EventTime`: the protocol's timestamp, 32-bit seconds and nanoseconds since the Unix epoch,
//! carried as MessagePack ext type 0 with 8 big-endian bytes.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds and nanoseconds since the Unix epoch, as the forward protocol carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime {
    /// Whole seconds since the epoch.
    pub seconds: u32,
    /// Nanoseconds within the second (below 1e9 for times this crate creates).
    pub nanos: u32,
}

impl EventTime {
    /// The ext type number of EventTime.
    pub const EXT_TYPE: i8 = 0;

    /// A time from its parts.
    pub const fn new(seconds: u32, nanos: u32) -> Self {
        Self { seconds, nanos }
    }

    /// The current time (clamped to the protocol's range).
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self::new(
            u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            d.subsec_nanos(),
        )
    }

    /// Decodes the 8 payload bytes of ext type 0; `None` for any other length.
    pub fn from_ext(data: &[u8]) -> Option<Self> {
        let data: [u8; 8] = data.try_into().ok()?;
        Some(Self::new(
            u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
            u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ))
    }

    /// The 8 payload bytes of ext type 0.
    pub fn to_ext(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.seconds.to_be_bytes());
        out[4..].copy_from_slice(&self.nanos.to_be_bytes());
        out
    }

    /// A time from float seconds; `None` if negative, not finite or past 2106.
    pub fn from_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs < 0.0 || secs >= f64::from(u32::MAX) + 1.0 {
            return None;
        }
        let whole = secs.trunc();
        let nanos = ((secs - whole) * 1e9) as u32;
        Some(Self::new(whole as u32, nanos.min(999_999_999)))
    }

    /// Nanoseconds since the epoch.
    pub fn unix_nanos(self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }
}
