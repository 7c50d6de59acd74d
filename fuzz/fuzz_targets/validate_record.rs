//! Arbitrary bytes as one received record: decoded as MessagePack the way the forward codec
//! hands records on, then validated under the default policy and a permissive one. Validation
//! must never panic, and what it accepts must satisfy the schema's own rules.
#![no_main]

use std::time::{Duration, SystemTime};

use billing_schema::validate::{HOUR_SECONDS, MAX_FIELD_BYTES, Policy, check_amount_type, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The codec bounds nesting; so does this reader (rmpv refuses depth beyond its limit).
    let Ok(record) = rmpv::decode::read_value(&mut &data[..]) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_754_038);
    let permissive = Policy::default()
        .with_window(Duration::MAX, Duration::MAX)
        .with_allow_negative(true);
    for policy in [Policy::default(), permissive] {
        let Ok(r) = validate(&record, &policy, now) else {
            continue;
        };
        assert!(!r.unique_key.trim().is_empty());
        assert!(r.unique_key.len() <= MAX_FIELD_BYTES && !r.unique_key.contains('\0'));
        assert!(!r.body.instance.is_empty());
        assert!(check_amount_type(&r.body.amount_type).is_ok());
        assert!(policy.allow_negative || r.body.value >= 0);
        assert_eq!(r.hour.rem_euclid(HOUR_SECONDS), 0);
        // The canonical time reads back as itself.
        let at = billing_schema::parse_rfc3339(&r.body.occurred_at).expect("canonical time parses");
        assert_eq!(billing_schema::rfc3339(at), r.body.occurred_at);
        // The canonical metadata is a JSON object of strings, keys sorted.
        let md: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&r.body.metadata).expect("canonical metadata is JSON");
        assert_eq!(serde_json::to_string(&md).unwrap(), r.body.metadata);
    }
});
