//! Report billable usage to a billing ingester, the Rust successor of the Go billing client.
//!
//! Same config, flags (`--billing.*`), metric names and record schema as the Go client, but an
//! event counts as delivered only once the ingester acknowledged it, and every event is either
//! delivered or counted as dropped with a reason.
//!
//! ```no_run
//! use billing_client::{AmountType, Amounts, Client, Config};
//! let client = Client::new(Config::default())?;
//! let amounts = Amounts::from([(AmountType::CONTAINER_SECONDS, 1234)]);
//! client.add_amounts("uuid-1", "1234", std::time::SystemTime::now(), amounts, Default::default())?;
//! client.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! The handle ([`Client`], `client.rs`) and the background sender (`sender/`) meet only in
//! `contract.rs` (shared counters, the queued unit, the command enum); the records are encoded
//! on the caller's thread by `encode.rs` with the schema crate's writer; `spooled.rs` is the
//! spool payload format. No two modules import each other.
//!
//! # Performance and the allocator
//!
//! `add` builds the event's records on the caller's thread and hands them, with the event's
//! key and amounts, to the sender's thread, which frees them once acknowledged: every event
//! is allocated on one thread and freed on another. glibc's `malloc` serves that pattern
//! through arena locks; a program that adds hundreds of thousands of events per second should
//! use a thread-caching allocator. The `billing` binary uses jemalloc (`tikv-jemallocator`),
//! which doubles its delivered rate over glibc and keeps `add`'s p99 near 1.5 µs
//! (BENCHMARKS.md, "The binary's allocator").
//!
//! # Features
//!
//! - `clap` (default): [`Args`], the settings as command-line flags and environment variables,
//!   and [`go_flags`], which lets them be written in Go's forms (`-billing.ingester=h:p`).
//! - `test-util`: `testing::TestIngester`, an in-process forward server for your own tests.

#[cfg(feature = "clap")]
mod args;
mod client;
mod config;
mod contract;
pub mod duration;
mod encode;
mod error;
#[cfg(feature = "clap")]
mod go_flags;
mod metrics;
mod secret;
mod sender;
mod spooled;
#[cfg(feature = "test-util")]
pub mod testing;

#[cfg(feature = "clap")]
pub use args::{Args, EnvError};
pub use billing_schema::{AmountType, Amounts, Event, Metadata};
pub use client::{Client, CloseReport};
pub use config::{
    Config, DEFAULT_ACK_TIMEOUT, DEFAULT_BATCH_MAX_RECORDS, DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTIONS, DEFAULT_INGESTER, DEFAULT_LINGER,
    DEFAULT_MAX_BUFFERED_EVENTS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_PRIMARY_RECHECK,
    DEFAULT_RETRY_DELAY, DEFAULT_RETRY_DELAY_MAX, DEFAULT_SPOOL_FULL_TIMEOUT,
    DEFAULT_SPOOL_MAX_BYTES, DEFAULT_SPOOL_SYNC_INTERVAL, DEFAULT_WRITE_TIMEOUT, Framing,
    IngesterPolicy, SpoolSync, SpoolWhenFull, parse_host_port,
};
pub use error::{AddBatchError, AddBatchErrorKind, AddError, FlushError, NewClientError};
#[cfg(feature = "clap")]
pub use go_flags::go_flags;
pub use metrics::{Metrics, Status, register_metrics};
pub use secret::{Secret, read_private_file, read_secret_file};
/// The spool types that appear in this crate's API.
pub use spool::{SpoolError, SpoolOptions, SpoolStats};
