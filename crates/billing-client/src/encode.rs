//! Encoding of an event's records on the caller's thread, once, in the framing's unit: an
//! entry `[time, record]` for the MessagePack framings, `["billing",seconds,record` for the
//! JSON framing (the batch builder closes each with its options). Built on `forward`'s
//! encode functions and the schema's record writer: no wire bytes are written by hand here.
//!
//! Invariants: one unit per non-zero amount, in the amounts' (sorted) order; `ends[i]` is the
//! end offset of unit `i` in `units`, so units can be copied into a batch without re-parsing;
//! an event with only zero amounts encodes to no units (nothing is sent, as the Go client sent
//! nothing).

use billing_schema::record::{RecordRef, TAG};
use billing_schema::{Amounts, Event, Rfc3339};

use crate::config::Framing;
use crate::contract::Queued;

/// The records of one event, each encoded as the framing's unit.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// The units, back to back.
    pub units: Vec<u8>,
    /// End offset of each unit in `units`.
    pub ends: Vec<u32>,
}

impl Records {
    /// Encodes the records of `event` for `framing`.
    pub(crate) fn of(event: &Event, framing: Framing) -> Self {
        let occurred_at = Rfc3339::new(event.occurred_at);
        let now = forward::EventTime::now();
        // One allocation: the fixed part of a record (field names, time, entry head) is under
        // 160 bytes; the caller's strings come on top, once per record.
        let strings = event.unique_key.len()
            + event.internal_instance_id.len()
            + event
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len() + 10)
                .sum::<usize>();
        let mut units = Vec::with_capacity((160 + strings) * event.amounts.len());
        let mut ends = Vec::with_capacity(event.amounts.len());
        for (amount_type, &value) in &event.amounts {
            if value == 0 {
                continue;
            }
            let record = RecordRef {
                key: &event.unique_key,
                instance: &event.internal_instance_id,
                amount_type,
                value,
                occurred_at: occurred_at.as_str(),
                metadata: &event.metadata,
            };
            if framing == Framing::JsonMessage {
                forward::encode::write_json_message_head(&mut units, TAG, now.seconds);
                record.write_json(&mut units);
            } else {
                forward::encode::write_entry_head(&mut units, now);
                record.write_msgpack(&mut units);
            }
            ends.push(units.len() as u32);
        }
        Records { units, ends }
    }

    /// Whether the event had no non-zero amount.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records with what the sender needs to count the event (copied from `event`).
    pub(crate) fn queued(self, event: &Event) -> Queued {
        self.into_queued(event.unique_key.clone(), event.amounts.clone())
    }

    /// The records with the event's key and amounts, moved in.
    pub(crate) fn into_queued(self, key: String, amounts: Amounts) -> Queued {
        Queued {
            key,
            amounts,
            units: self.units,
            ends: self.ends,
        }
    }

    /// The spool payload of the event (see [`crate::spooled`]), written straight from the event
    /// without an intermediate [`Queued`].
    pub(crate) fn spool_payload(&self, event: &Event) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.units.len() + 64);
        crate::spooled::encode(
            &event.unique_key,
            &event.amounts,
            &self.ends,
            &self.units,
            &mut payload,
        );
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_schema::{AmountType, Amounts};
    use std::time::{Duration, UNIX_EPOCH};

    fn event(amounts: &[(AmountType, i64)]) -> Event {
        Event {
            unique_key: "k".into(),
            internal_instance_id: "i".into(),
            occurred_at: UNIX_EPOCH + Duration::from_secs(1_795_754_038),
            amounts: amounts.iter().cloned().collect::<Amounts>(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn one_entry_per_non_zero_amount_with_its_end_offset() {
        let e = event(&[
            (AmountType::SAMPLES, 3),
            (AmountType::NODE_SECONDS, 0),
            (AmountType::CONTAINER_SECONDS, 7),
        ]);
        let r = Records::of(&e, Framing::PackedForward);
        assert_eq!(r.ends.len(), 2);
        let mut rest = &r.units[..];
        let mut keys = Vec::new();
        for &end in &r.ends {
            let before = rest.len();
            let v = rmpv::decode::read_value(&mut rest).unwrap();
            assert_eq!(r.units.len() - rest.len(), end as usize);
            assert!(before > rest.len());
            keys.push(v[1]["unique_key"].as_str().unwrap().to_string());
        }
        assert_eq!(keys, ["k:container-seconds", "k:samples"]);
    }

    #[test]
    fn only_zero_amounts_encode_nothing() {
        let r = Records::of(&event(&[(AmountType::SAMPLES, 0)]), Framing::Forward);
        assert!(r.is_empty() && r.units.is_empty());
    }

    #[test]
    fn json_units_are_open_message_frames() {
        let r = Records::of(&event(&[(AmountType::SAMPLES, 3)]), Framing::JsonMessage);
        let text = std::str::from_utf8(&r.units).unwrap();
        assert!(text.starts_with("[\"billing\","), "{text}");
        assert!(text.ends_with("\"unique_key\":\"k:samples\"}"), "{text}");
    }
}
