//! The record schema, in one place for the client and the ingester.
//!
//! One record per non-zero amount of an event, tag [`TAG`], fields in the order the Go client's
//! JSON had them (alphabetical): `amount_type`, `amount_value`, `internal_instance_id`,
//! `metadata`, `occurred_at` (RFC 3339 string, up to nine fraction digits, trailing zeros
//! dropped, `Z`), `unique_key` (`key:type`). The same schema in every framing: `occurred_at` is
//! never a MessagePack extension.

use std::io::Write as _;
use std::time::SystemTime;

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

fn write_str(buf: &mut Vec<u8>, s: &str) {
    forward::encode::write_str(buf, s.as_bytes());
}

impl RecordRef<'_> {
    /// Appends the record as a MessagePack map.
    pub fn write_msgpack(&self, buf: &mut Vec<u8>) {
        buf.push(0x86);
        write_str(buf, AMOUNT_TYPE);
        write_str(buf, self.amount_type.as_str());
        write_str(buf, AMOUNT_VALUE);
        rmp::encode::write_sint(buf, self.value).expect("Vec write");
        write_str(buf, INTERNAL_INSTANCE_ID);
        write_str(buf, self.instance);
        write_str(buf, METADATA);
        rmp::encode::write_map_len(buf, self.metadata.len() as u32).expect("Vec write");
        for (k, v) in self.metadata {
            write_str(buf, k);
            write_str(buf, v);
        }
        write_str(buf, OCCURRED_AT);
        write_str(buf, self.occurred_at);
        write_str(buf, UNIQUE_KEY);
        let len = self.key.len() + 1 + self.amount_type.as_str().len();
        rmp::encode::write_str_len(buf, len as u32).expect("Vec write");
        buf.extend_from_slice(self.key.as_bytes());
        buf.push(b':');
        buf.extend_from_slice(self.amount_type.as_str().as_bytes());
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
        let mut key = String::with_capacity(self.key.len() + 1 + self.amount_type.as_str().len());
        key.push_str(self.key);
        key.push(':');
        key.push_str(self.amount_type.as_str());
        json(buf, &key);
        buf.push(b'}');
    }
}

/// Formats a time as Go's `time.RFC3339Nano` in UTC: up to nine fraction digits, trailing
/// zeros dropped, `Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let mut out = String::with_capacity(30);
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.nanosecond();
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 time (any offset).
///
/// # Errors
/// The parser's message, for text that is not RFC 3339.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_matches_go_rfc3339nano() {
        let t = UNIX_EPOCH + Duration::new(1_795_754_038, 467_902_040);
        assert_eq!(rfc3339(t), "2026-11-27T04:33:58.46790204Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_754_038)),
            "2026-11-27T04:33:58Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(0, 100_000_000)),
            "1970-01-01T00:00:00.1Z"
        );
        assert_eq!(parse_rfc3339("2026-11-27T04:33:58.46790204Z").unwrap(), t);
        assert_eq!(
            parse_rfc3339("2026-11-27T05:33:58.46790204+01:00").unwrap(),
            t
        );
    }

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
