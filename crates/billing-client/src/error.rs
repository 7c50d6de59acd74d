//! Errors at the client's boundaries. A refused event is handed back inside the error.

use billing_schema::Event;

/// Why `Client::new` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewClientError {
    /// `ingester` is not an address (`host:port`, `tls://host:port`, `unix:///path`) or a
    /// comma-separated list of them; the message names the first that does not parse.
    #[error("billing: invalid ingester address: {0}")]
    InvalidAddress(String),
    /// A setting is out of range.
    #[error("billing: invalid config: {0}")]
    InvalidConfig(&'static str),
    /// The handshake settings cannot make a handshake (a shared key, hostname, username or
    /// password out of bounds), or the host name cannot be read. Never shows the key.
    #[error("billing: invalid authentication settings: {0}")]
    InvalidAuth(String),
    /// The TLS settings cannot be used: a file that cannot be read or is not what it should
    /// be, a client certificate without its key, a `tls://` ingester without a CA.
    #[error("billing: invalid TLS settings: {0}")]
    InvalidTls(String),
    /// The background sender could not start.
    #[error("billing: cannot start the sender thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The spool directory cannot be opened (locked by another process, unreadable, ...).
    #[error("billing: cannot open the spool: {0}")]
    Spool(#[source] spool::SpoolError),
}

/// Why `add_amounts` refused an event. Each variant returns the event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The unique key is empty or whitespace (Go: `billing: units uniqueKey cannot be blank`);
    /// counted `invalid`.
    #[error("billing: units uniqueKey cannot be blank")]
    BlankKey(Box<Event>),
    /// The event breaks another rule of the record schema (empty instance id, amount type
    /// syntax, field or metadata size, NUL); the ingester would quarantine its records.
    /// Counted `invalid`.
    #[error("billing: invalid event {}: {source}", .event.unique_key)]
    Invalid {
        /// The rule broken.
        source: billing_schema::validate::Invalid,
        /// The refused event.
        event: Box<Event>,
    },
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
    /// The spool holds `spool_max_bytes` (after waiting, if so configured); counted `spool_full`.
    #[error("billing: spool full, discarding event {}: {source}", .event.unique_key)]
    SpoolFull {
        /// What the spool said.
        source: spool::SpoolError,
        /// The refused event.
        event: Box<Event>,
    },
    /// The spool could not write the event (disk full, I/O error); nothing accepted before is
    /// affected; counted `spool_error`.
    #[error("billing: spool write failed, discarding event {}: {source}", .event.unique_key)]
    Spool {
        /// What the spool said.
        source: spool::SpoolError,
        /// The refused event.
        event: Box<Event>,
    },
}

impl AddError {
    /// The refused event, to keep or retry.
    pub fn into_event(self) -> Event {
        match self {
            AddError::BlankKey(e)
            | AddError::Invalid { event: e, .. }
            | AddError::Closed(e)
            | AddError::QueueFull { event: e, .. }
            | AddError::SpoolFull { event: e, .. }
            | AddError::Spool { event: e, .. } => *e,
        }
    }

    /// Whether the same event may be accepted later (a full buffer or spool drains; a disk
    /// may get space back).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            AddError::QueueFull { .. } | AddError::SpoolFull { .. } | AddError::Spool { .. }
        )
    }
}

/// Why `flush` returned before everything was delivered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
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

/// Why `add_batch` refused a batch (see [`AddBatchError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddBatchErrorKind {
    /// An event's unique key is empty or whitespace; counted `invalid`.
    BlankKey,
    /// An event breaks another rule of the record schema (see [`AddError::Invalid`]); counted
    /// `invalid`.
    Invalid,
    /// The client is closed or its sender stopped; counted `stopping`.
    Closed,
    /// The batch would pass `max_buffered_events`; counted `buffer_full`.
    QueueFull {
        /// The limit that would be passed.
        limit: usize,
    },
    /// The spool cannot take the batch (after waiting, if so configured); counted `spool_full`.
    SpoolFull,
    /// The spool could not write the batch (disk full, I/O error); counted `spool_error`.
    Spool,
}

impl std::fmt::Display for AddBatchErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddBatchErrorKind::BlankKey => f.write_str("billing: units uniqueKey cannot be blank"),
            AddBatchErrorKind::Invalid => f.write_str("billing: an event breaks the record schema"),
            AddBatchErrorKind::Closed => f.write_str("billing: client is closed"),
            AddBatchErrorKind::QueueFull { limit } => {
                write!(f, "billing: reached billing event buffer limit ({limit})")
            }
            AddBatchErrorKind::SpoolFull => f.write_str("billing: spool full"),
            AddBatchErrorKind::Spool => f.write_str("billing: spool write failed"),
        }
    }
}

/// Why `add_batch` refused a batch. All or none: nothing of the batch was accepted, and every
/// event is handed back.
#[derive(Debug, thiserror::Error)]
#[error("billing: batch of {} events refused: {kind}{}", .events.len(), .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
pub struct AddBatchError {
    kind: AddBatchErrorKind,
    #[source]
    source: Option<spool::SpoolError>,
    events: Vec<Event>,
}

impl AddBatchError {
    pub(crate) fn new(kind: AddBatchErrorKind, events: Vec<Event>) -> Self {
        AddBatchError {
            kind,
            source: None,
            events,
        }
    }

    pub(crate) fn with_source(
        kind: AddBatchErrorKind,
        source: spool::SpoolError,
        events: Vec<Event>,
    ) -> Self {
        AddBatchError {
            kind,
            source: Some(source),
            events,
        }
    }

    /// Why the batch was refused.
    pub fn kind(&self) -> AddBatchErrorKind {
        self.kind
    }

    /// Whether the same batch may be accepted later (a full buffer or spool drains; a disk
    /// may get space back).
    pub fn is_retriable(&self) -> bool {
        match self.kind {
            AddBatchErrorKind::QueueFull { .. } => true,
            // A batch larger than the whole spool can never fit: the spool says so.
            AddBatchErrorKind::SpoolFull | AddBatchErrorKind::Spool => {
                self.source.as_ref().is_some_and(|s| s.is_retriable())
            }
            _ => false,
        }
    }

    /// The refused events, in the order given.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The refused events, to keep or retry.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}
