//! Errors at the client's boundaries. A refused event is handed back inside the error.

use crate::event::Event;

/// Why `Client::new` failed.
#[derive(Debug, thiserror::Error)]
pub enum NewClientError {
    /// `ingester` is not `host:port`.
    #[error("billing: invalid ingester address: {0}")]
    InvalidAddress(String),
    /// A setting is out of range.
    #[error("billing: invalid config: {0}")]
    InvalidConfig(&'static str),
    /// The background sender could not start.
    #[error("billing: cannot start the sender thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why `add_amounts` refused an event. Each variant returns the event.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The unique key is empty or whitespace (Go: `billing: units uniqueKey cannot be blank`).
    #[error("billing: units uniqueKey cannot be blank")]
    BlankKey(Box<Event>),
    /// `max_buffered_events` events are accepted and not yet delivered; counted `buffer_full`.
    #[error("billing: reached billing event buffer limit ({limit}), discarding event {}", .event.unique_key)]
    QueueFull {
        /// The limit that was reached.
        limit: usize,
        /// The refused event.
        event: Box<Event>,
    },
    /// The client is closed or closing; counted `stopping`.
    #[error("billing: client is closed, discarding event {}", .0.unique_key)]
    Closed(Box<Event>),
}

impl AddError {
    /// The refused event, to keep or retry.
    pub fn into_event(self) -> Event {
        match self {
            AddError::BlankKey(e) | AddError::Closed(e) | AddError::QueueFull { event: e, .. } => {
                *e
            }
        }
    }

    /// Whether the same event may be accepted later (only a full buffer drains).
    pub fn is_retriable(&self) -> bool {
        matches!(self, AddError::QueueFull { .. })
    }
}

/// Why `flush` returned before everything was delivered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlushError {
    /// The timeout passed first; the events are still queued and will be delivered later.
    #[error("billing: flush timed out with {pending} events not yet delivered")]
    Timeout {
        /// Events accepted and not yet resolved when the timeout passed.
        pending: usize,
    },
    /// The client was closed.
    #[error("billing: client is closed")]
    Closed,
}
