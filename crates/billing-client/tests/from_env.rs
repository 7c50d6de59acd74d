//! `Config::from_env`: the `BILLING_*` variables of the flags, defaults for the rest, and a
//! clear error naming a variable that does not parse. (The only test of this binary: it sets
//! process environment variables.)

use std::time::Duration;

use billing_client::{Config, DEFAULT_MAX_BUFFERED_EVENTS};

#[test]
fn config_from_the_environment_reads_billing_variables_and_names_a_bad_one() {
    // SAFETY: this test binary runs this one test, on one thread: nothing reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("BILLING_INGESTER", "ingest-a:1,ingest-b:2");
        std::env::set_var("BILLING_RETRY_DELAY", "2s");
        std::env::remove_var("BILLING_MAX_BUFFERED_EVENTS");
    }
    let config = Config::from_env().expect("valid environment");
    assert_eq!(config.ingester, "ingest-a:1,ingest-b:2");
    assert_eq!(config.retry_delay, Duration::from_secs(2));
    assert_eq!(config.max_buffered_events, DEFAULT_MAX_BUFFERED_EVENTS);

    // SAFETY: as above.
    unsafe { std::env::set_var("BILLING_RETRY_DELAY", "soon") };
    let e = Config::from_env().unwrap_err().to_string();
    assert!(e.contains("soon") && e.contains("retry-delay"), "{e}");
}
