//! Building one batch: events taken from the backlog, in order, copied into the frames of the
//! configured framing under fresh chunk ids. Pure over bytes (no I/O), so every framing is
//! unit-tested here.
//!
//! Invariants: an event's records never span batches (an event is counted `success` only when
//! every chunk carrying its records was acked); a batch holds at most `max_records` records
//! unless one event alone has more; a batch's frames and chunk ids never change once built, so
//! a resend after a lost connection is byte for byte the same and the ingester dedupes it.

use std::collections::VecDeque;

use billing_schema::Amounts;
use billing_schema::record::TAG;
use forward::Options;
use tokio::time::Instant;

use crate::config::Framing;
use crate::contract::Queued;

/// An event received by the sender, numbered in arrival order.
#[derive(Debug)]
pub(super) struct Pending {
    pub seq: u64,
    pub event: Queued,
}

/// What the sender keeps of an event once its records are in a batch.
#[derive(Debug)]
pub(super) struct EventMeta {
    pub seq: u64,
    pub key: String,
    pub amounts: Amounts,
}

/// Events written together, under one chunk id (or one per record in the message framings).
#[derive(Debug)]
pub(super) struct Batch {
    pub first_seq: u64,
    pub events: Vec<EventMeta>,
    pub frames: Vec<u8>,
    pub chunks: Vec<String>,
    pub acked: usize,
    pub first_sent: Option<Instant>,
    pub sent_at: Instant,
}

/// How batches are framed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Framer {
    pub framing: Framing,
    /// Whether each frame carries a chunk id asking for an ack.
    pub require_ack: bool,
    /// Records per batch (an event with more still goes whole, alone).
    pub max_records: usize,
}

impl Framer {
    /// Takes events from the front of `backlog` (at least one; the caller checks it is not
    /// empty) into a new batch.
    pub(super) fn build(&self, backlog: &mut VecDeque<Pending>) -> Batch {
        let first_seq = backlog.front().map_or(0, |p| p.seq);
        let mut units = Vec::new();
        let mut ends = Vec::new();
        let mut events = Vec::new();
        while let Some(p) = backlog.front() {
            if !ends.is_empty() && ends.len() + p.event.ends.len() > self.max_records {
                break;
            }
            let p = backlog.pop_front().expect("front exists");
            let base = units.len() as u32;
            units.extend_from_slice(&p.event.units);
            ends.extend(p.event.ends.iter().map(|e| base + e));
            events.push(EventMeta {
                seq: p.seq,
                key: p.event.key,
                amounts: p.event.amounts,
            });
        }
        let (frames, chunks) = self.frame(&units, &ends);
        Batch {
            first_seq,
            events,
            frames,
            chunks,
            acked: 0,
            first_sent: None,
            sent_at: Instant::now(),
        }
    }

    /// The frames carrying `units` (ending at `ends`), and their chunk ids.
    fn frame(&self, units: &[u8], ends: &[u32]) -> (Vec<u8>, Vec<String>) {
        let mut frames = Vec::with_capacity(units.len() + 64);
        let mut chunks = Vec::new();
        let ack = self.require_ack;
        let options = |chunks: &mut Vec<String>, size: Option<u64>| {
            let chunk = ack.then(forward::encode::new_chunk_id);
            if let Some(c) = &chunk {
                chunks.push(c.clone());
            }
            Options {
                size,
                chunk: chunk.map(String::into_bytes),
                compressed: None,
            }
        };
        let count = ends.len();
        match self.framing {
            Framing::PackedForward | Framing::CompressedPackedForward => {
                let mut o = options(&mut chunks, Some(count as u64));
                if self.framing == Framing::CompressedPackedForward {
                    o.compressed = Some(forward::Compression::Gzip);
                }
                forward::encode::write_packed_forward(&mut frames, TAG, units, &o);
            }
            Framing::Forward => {
                let o = options(&mut chunks, Some(count as u64));
                forward::encode::write_forward(&mut frames, TAG, units, count as u32, &o);
            }
            Framing::Message => {
                for entry in split(units, ends) {
                    let o = options(&mut chunks, None);
                    forward::encode::write_message_from_entry(&mut frames, TAG, entry, &o);
                }
            }
            Framing::JsonMessage => {
                for unit in split(units, ends) {
                    frames.extend_from_slice(unit);
                    let o = options(&mut chunks, None);
                    forward::encode::write_json_message_tail(&mut frames, o.chunk.as_deref());
                }
            }
        }
        (frames, chunks)
    }
}

/// The units of `units` ending at `ends`.
fn split<'a>(units: &'a [u8], ends: &'a [u32]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let starts = std::iter::once(0).chain(ends.iter().map(|&e| e as usize));
    starts
        .zip(ends.iter().map(|&e| e as usize))
        .map(move |(s, e)| &units[s..e])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Records;
    use billing_schema::{AmountType, Event};
    use std::time::{Duration, UNIX_EPOCH};

    const ALL: [Framing; 5] = [
        Framing::PackedForward,
        Framing::CompressedPackedForward,
        Framing::Forward,
        Framing::Message,
        Framing::JsonMessage,
    ];

    fn backlog(framing: Framing, events: usize, types: &[AmountType]) -> VecDeque<Pending> {
        (0..events)
            .map(|i| {
                let e = Event {
                    unique_key: format!("e{i}"),
                    internal_instance_id: "inst".into(),
                    occurred_at: UNIX_EPOCH + Duration::from_secs(1_795_754_038),
                    amounts: types.iter().map(|t| (t.clone(), i as i64 + 1)).collect(),
                    metadata: Default::default(),
                };
                Pending {
                    seq: i as u64 + 10,
                    event: Records::of(&e, framing).queued(&e),
                }
            })
            .collect()
    }

    /// Parses every frame of a batch with the forward codec, as an ingester would.
    fn parse_all(mut bytes: &[u8]) -> Vec<forward::Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let forward::Check::Complete(n) = forward::check_frame(bytes, 1 << 24).unwrap() else {
                panic!("incomplete frame");
            };
            frames.push(forward::parse_frame(&bytes[..n], 1 << 24).unwrap());
            bytes = &bytes[n..];
        }
        frames
    }

    #[test]
    fn every_framing_carries_every_record_once_with_one_chunk_id_per_frame() {
        let types = [AmountType::SAMPLES, AmountType::NODE_SECONDS];
        for framing in ALL {
            let framer = Framer {
                framing,
                require_ack: true,
                max_records: 100,
            };
            let mut queue = backlog(framing, 3, &types);
            let batch = framer.build(&mut queue);
            assert!(queue.is_empty());
            assert_eq!(batch.first_seq, 10);
            assert_eq!(batch.events.len(), 3);
            let frames = parse_all(&batch.frames);
            let keys: Vec<String> = frames
                .iter()
                .flat_map(|f| &f.entries)
                .map(|e| forward::value_to_json(&e.record)["unique_key"].to_string())
                .collect();
            assert_eq!(keys.len(), 6, "{framing:?}");
            assert!(keys[0].contains("e0:node-seconds"), "{framing:?}: {keys:?}");
            assert!(keys[5].contains("e2:samples"), "{framing:?}: {keys:?}");
            let ids: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| f.options.chunk.clone().unwrap())
                .collect();
            assert_eq!(
                ids,
                batch
                    .chunks
                    .iter()
                    .map(|c| c.clone().into_bytes())
                    .collect::<Vec<_>>(),
                "{framing:?}"
            );
            let expected_frames = match framing {
                Framing::Message | Framing::JsonMessage => 6,
                _ => 1,
            };
            assert_eq!(frames.len(), expected_frames, "{framing:?}");
            assert!(frames.iter().all(|f| f.tag == TAG));
            if framing == Framing::CompressedPackedForward {
                assert_eq!(
                    frames[0].options.compressed,
                    Some(forward::Compression::Gzip)
                );
            }
        }
    }

    #[test]
    fn without_acks_no_chunk_ids_are_sent() {
        for framing in ALL {
            let framer = Framer {
                framing,
                require_ack: false,
                max_records: 100,
            };
            let batch = framer.build(&mut backlog(framing, 2, &[AmountType::SAMPLES]));
            assert!(batch.chunks.is_empty());
            assert!(
                parse_all(&batch.frames)
                    .iter()
                    .all(|f| f.options.chunk.is_none())
            );
        }
    }

    #[test]
    fn a_batch_stops_before_the_record_limit_and_never_splits_an_event() {
        let types = [
            AmountType::SAMPLES,
            AmountType::NODE_SECONDS,
            AmountType::CONTAINER_SECONDS,
        ];
        let framer = Framer {
            framing: Framing::PackedForward,
            require_ack: true,
            max_records: 7,
        };
        let mut queue = backlog(Framing::PackedForward, 4, &types);
        let first = framer.build(&mut queue);
        assert_eq!(
            first.events.len(),
            2,
            "3 + 3 records fit in 7, a third event would not"
        );
        assert_eq!(parse_all(&first.frames)[0].entries.len(), 6);
        let second = framer.build(&mut queue);
        assert_eq!(second.first_seq, 12);
        assert_eq!(second.events.len(), 2);
        // An event larger than the limit still goes, whole and alone.
        let framer = Framer {
            max_records: 2,
            ..framer
        };
        let mut queue = backlog(Framing::PackedForward, 2, &types);
        let big = framer.build(&mut queue);
        assert_eq!(big.events.len(), 1);
        assert_eq!(parse_all(&big.frames)[0].entries.len(), 3);
    }
}
