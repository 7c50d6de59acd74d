//! The record schema, in one place for the client and the ingester.
//!
//! One record per non-zero amount of an event, tag [`TAG`], fields in the order the Go client's
//! JSON had them (alphabetical): `amount_type`, `amount_value`, `internal_instance_id`,
//! `metadata`, `occurred_at` (RFC 3339 string, up to nine fraction digits, trailing zeros
//! dropped, `Z`), `unique_key` (`key:type`). The same schema in every framing: `occurred_at` is
//! never a MessagePack extension.

use std::io::Write as _;

use forward::encode::{write_int, write_map_len, write_str, write_str_parts};

use crate::event::{AmountType, Metadata};

/// The forward tag of every billing record.
pub const TAG: &str = "billing";
/// Field: the record's dedupe key, `unique_key:amount_type`.
pub const UNIQUE_KEY: &str = "unique_key";
/// Field: internal instance id.
pub const INTERNAL_INSTANCE_ID: &str = "internal_instance_id";
/// Field: amount type.
pub const AMOUNT_TYPE: &str = "amount_type";
/// Field: amount value (integer).
pub const AMOUNT_VALUE: &str = "amount_value";
/// Field: RFC 3339 time of the usage.
pub const OCCURRED_AT: &str = "occurred_at";
/// Field: map of strings.
pub const METADATA: &str = "metadata";

/// The borrowed parts of one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// The caller's key (without the `:type` suffix).
    pub key: &'a str,
    /// Internal instance id.
    pub instance: &'a str,
    /// Amount type.
    pub amount_type: &'a AmountType,
    /// Amount value.
    pub value: i64,
    /// RFC 3339 text of `occurred_at`.
    pub occurred_at: &'a str,
    /// Metadata.
    pub metadata: &'a Metadata,
}

impl RecordRef<'_> {
    /// Appends the record as a MessagePack map.
    pub fn write_msgpack(&self, buf: &mut Vec<u8>) {
        write_map_len(buf, 6);
        write_str(buf, AMOUNT_TYPE.as_bytes());
        write_str(buf, self.amount_type.as_str().as_bytes());
        write_str(buf, AMOUNT_VALUE.as_bytes());
        write_int(buf, self.value);
        write_str(buf, INTERNAL_INSTANCE_ID.as_bytes());
        write_str(buf, self.instance.as_bytes());
        write_str(buf, METADATA.as_bytes());
        write_map_len(buf, self.metadata.len() as u32);
        for (k, v) in self.metadata {
            write_str(buf, k.as_bytes());
            write_str(buf, v.as_bytes());
        }
        write_str(buf, OCCURRED_AT.as_bytes());
        write_str(buf, self.occurred_at.as_bytes());
        write_str(buf, UNIQUE_KEY.as_bytes());
        let ty = self.amount_type.as_str().as_bytes();
        write_str_parts(buf, &[self.key.as_bytes(), b":", ty]);
    }

    /// The record's dedupe key: the caller's key, `:`, the amount type.
    pub fn unique_key(&self) -> String {
        let ty = self.amount_type.as_str();
        let mut key = String::with_capacity(self.key.len() + 1 + ty.len());
        key.push_str(self.key);
        key.push(':');
        key.push_str(ty);
        key
    }

    /// Appends the record as a JSON object, byte for byte as the Go client wrote it.
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        let json =
            |buf: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *buf, s).expect("Vec write");
        buf.extend_from_slice(b"{\"amount_type\":");
        json(buf, self.amount_type.as_str());
        write!(
            buf,
            ",\"amount_value\":{},\"internal_instance_id\":",
            self.value
        )
        .expect("Vec write");
        json(buf, self.instance);
        buf.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut *buf, self.metadata).expect("Vec write");
        buf.extend_from_slice(b",\"occurred_at\":");
        json(buf, self.occurred_at);
        buf.extend_from_slice(b",\"unique_key\":");
        json(buf, &self.unique_key());
        buf.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_record_is_the_go_clients_bytes() {
        let md: Metadata = [("report".to_string(), "r-1".to_string())].into();
        let ty = AmountType::NODE_SECONDS;
        let r = RecordRef {
            key: "seed-1",
            instance: "1234",
            amount_type: &ty,
            value: 2,
            occurred_at: "2026-11-27T04:33:58.46790204Z",
            metadata: &md,
        };
        let mut buf = Vec::new();
        r.write_json(&mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"{"amount_type":"node-seconds","amount_value":2,"internal_instance_id":"1234","metadata":{"report":"r-1"},"occurred_at":"2026-11-27T04:33:58.46790204Z","unique_key":"seed-1:node-seconds"}"#
        );
        let mut mp = Vec::new();
        r.write_msgpack(&mut mp);
        let v = rmpv::decode::read_value(&mut &mp[..]).unwrap();
        assert_eq!(v.as_map().unwrap().len(), 6);
        assert_eq!(v["unique_key"].as_str(), Some("seed-1:node-seconds"));
        assert_eq!(
            v["occurred_at"].as_str(),
            Some("2026-11-27T04:33:58.46790204Z")
        );
        assert_eq!(v["metadata"]["report"].as_str(), Some("r-1"));
        assert_eq!(v["amount_value"].as_i64(), Some(2));
    }
}
