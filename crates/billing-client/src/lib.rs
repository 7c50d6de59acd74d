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

pub mod client;
pub mod config;
pub mod duration;
pub mod error;
pub mod event;
pub mod metrics;
pub mod record;
mod sender;
mod spooled;
pub mod testing;

pub use client::Client;
pub use config::{Args, Config, Framing, SpoolSync, SpoolWhenFull};
pub use error::{AddBatchError, AddError, FlushError, NewClientError};
pub use event::{AmountType, Amounts, Event, Metadata};
pub use metrics::{Metrics, Status, register_metrics};
