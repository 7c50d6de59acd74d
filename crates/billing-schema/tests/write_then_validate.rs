//! The schema's contract: every record the client writes (MessagePack and JSON) passes the
//! ingester's validation, and what validation keeps is what was written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use billing_schema::record::RecordRef;
use billing_schema::validate::{HOUR_SECONDS, Policy, is_blank_key, validate};
use billing_schema::{AmountType, Metadata, rfc3339};
use proptest::prelude::*;

fn check(key: &str, instance: &str, ty: &AmountType, value: i64, secs: u64, md: &Metadata) {
    let at = UNIX_EPOCH + Duration::new(secs, (secs % 1000) as u32 * 1000);
    let occurred_at = rfc3339(at);
    let record = RecordRef {
        key,
        instance,
        amount_type: ty,
        value,
        occurred_at: &occurred_at,
        metadata: md,
    };
    let mut mp = Vec::new();
    record.write_msgpack(&mut mp);
    // Credits are the ingester's choice (`--allow-negative`); the window is tested elsewhere.
    let policy = Policy::default()
        .with_window(Duration::MAX, Duration::MAX)
        .with_allow_negative(true);
    let from_msgpack = validate(
        &rmpv::decode::read_value(&mut &mp[..]).unwrap(),
        &policy,
        SystemTime::now(),
    )
    .unwrap();

    let mut json = Vec::new();
    record.write_json(&mut json);
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let from_json = validate(&forward::json_to_value(json), &policy, SystemTime::now()).unwrap();

    assert_eq!(
        from_msgpack, from_json,
        "both encodings validate to the same record"
    );
    let r = from_msgpack;
    assert_eq!(r.unique_key, format!("{key}:{ty}"));
    assert_eq!(r.body.instance, instance);
    assert_eq!(r.body.amount_type, ty.as_str());
    assert_eq!(r.body.value, value);
    assert_eq!(r.body.occurred_at, occurred_at);
    assert_eq!(
        r.hour,
        (secs as i64).div_euclid(HOUR_SECONDS) * HOUR_SECONDS
    );
    let md_back: Metadata = serde_json::from_str(&r.body.metadata).unwrap();
    assert_eq!(&md_back, md);
}

#[test]
fn the_go_clients_four_amount_types_validate() {
    let md: Metadata = [("report".to_string(), "r-1".to_string())].into();
    for ty in [
        AmountType::CONTAINER_SECONDS,
        AmountType::NODE_SECONDS,
        AmountType::WEAVENET_SECONDS,
        AmountType::SAMPLES,
    ] {
        check("seed-1", "1234", &ty, 2, 1_795_754_038, &md);
    }
}

#[test]
fn a_blank_key_is_what_the_client_refuses_and_validation_would_refuse_empty() {
    assert!(is_blank_key("") && is_blank_key(" \t\n"));
    assert!(!is_blank_key(" k "));
}

proptest! {
    #[test]
    fn any_record_the_client_writes_validates_to_what_was_written(
        key in "[^\u{0}]{1,40}".prop_filter("client refuses blank keys", |k| !is_blank_key(k)),
        instance in "[^\u{0}]{1,40}",
        ty in "[a-z][a-z0-9._-]{0,30}",
        value in any::<i64>(),
        secs in 0u64..4_000_000_000,
        md in proptest::collection::btree_map("[^\u{0}]{0,10}", "[^\u{0}]{0,20}", 0..4),
    ) {
        check(&key, &instance, &AmountType::from(ty), value, secs, &md);
    }
}

proptest! {
    /// The client's own check and the ingester's validation agree: an event the client accepts
    /// yields records the ingester stores (credits and the time window are ingester policy).
    #[test]
    fn an_event_the_client_accepts_is_never_quarantined(
        key in "[ -~]{0,12}",
        instance in "[ -~]{0,6}",
        ty in "[a-zA-Z0-9 ._!-]{0,8}",
        value in 1i64..1000,
    ) {
        let event = billing_schema::Event {
            unique_key: key.clone(),
            internal_instance_id: instance.clone(),
            occurred_at: SystemTime::now(),
            amounts: [(AmountType::from(ty.clone()), value)].into(),
            metadata: Metadata::new(),
        };
        if billing_schema::validate::check_event(&event).is_ok() {
            check(&key, &instance, &AmountType::from(ty), value, 1_795_754_038, &Metadata::new());
        }
    }
}
