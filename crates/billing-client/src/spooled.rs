//! The spool payload of one accepted event: what the sender needs to deliver it and to count
//! it, and nothing else (the metadata and instance live only inside the encoded records).
//!
//! Layout (little-endian), version byte first so a later format can be told apart:
//! `u8 version=1 | u32 key_len | key | u16 n_amounts | n × (u16 type_len | type | i64 value)
//! | u16 n_records | n × u32 record_end | u32 units_len | units`.
//! Decoding checks every length against the bytes present: a payload that passed its
//! checksum but does not decode is reported as damaged, never trusted.

use billing_schema::{AmountType, Amounts};

use crate::contract::Queued;

const VERSION: u8 = 1;

/// Appends the payload of one event (its key, amounts, encoded records and their ends) to
/// `out`.
pub(crate) fn encode(key: &str, amounts: &Amounts, ends: &[u32], units: &[u8], out: &mut Vec<u8>) {
    out.push(VERSION);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(amounts.len() as u16).to_le_bytes());
    for (t, v) in amounts {
        out.extend_from_slice(&(t.as_str().len() as u16).to_le_bytes());
        out.extend_from_slice(t.as_str().as_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(ends.len() as u16).to_le_bytes());
    for e in ends {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(&(units.len() as u32).to_le_bytes());
    out.extend_from_slice(units);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("payload truncated");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn str(&mut self, n: usize) -> Result<String, &'static str> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "payload string is not UTF-8")
    }
}

/// Decodes a payload written by [`encode`].
///
/// # Errors
/// A reason when the bytes are not a payload of a known version.
pub(crate) fn decode(bytes: &[u8]) -> Result<Queued, &'static str> {
    let mut r = Reader(bytes);
    if r.take(1)? != [VERSION] {
        return Err("unknown payload version");
    }
    let key_len = r.u32()? as usize;
    let key = r.str(key_len)?;
    let n = r.u16()?;
    let mut amounts = Amounts::new();
    for _ in 0..n {
        let len = usize::from(r.u16()?);
        let t = r.str(len)?;
        let v = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        amounts.insert(AmountType::from(t), v);
    }
    let n = usize::from(r.u16()?);
    let mut ends = Vec::with_capacity(n.min(r.0.len() / 4));
    for _ in 0..n {
        ends.push(r.u32()?);
    }
    let units_len = r.u32()? as usize;
    let units = r.take(units_len)?.to_vec();
    if !r.0.is_empty() {
        return Err("trailing bytes after payload");
    }
    let mut prev = 0u32;
    for &e in &ends {
        if e < prev || e as usize > units.len() {
            return Err("record offsets out of range");
        }
        prev = e;
    }
    if ends.last().is_some_and(|&e| e as usize != units.len()) {
        return Err("record offsets do not cover the records");
    }
    Ok(Queued {
        key,
        amounts,
        units,
        ends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn payloads_round_trip(key in ".{1,40}", amounts in proptest::collection::btree_map("[a-z-]{1,12}", any::<i64>(), 0..5), units in proptest::collection::vec(any::<u8>(), 1..300)) {
            let amounts: Amounts = amounts.into_iter().map(|(k, v)| (AmountType::from(k), v)).collect();
            let q = Queued { key, amounts, ends: vec![units.len() as u32 / 2, units.len() as u32], units };
            let mut buf = Vec::new();
                        encode(&q.key, &q.amounts, &q.ends, &q.units, &mut buf);
            let back = decode(&buf).unwrap();
            prop_assert_eq!(back.key, q.key);
            prop_assert_eq!(back.amounts, q.amounts);
            prop_assert_eq!(back.units, q.units);
            prop_assert_eq!(back.ends, q.ends);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
