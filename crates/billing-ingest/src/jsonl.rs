//! The `jsonl:` sink: each received entry becomes one line
//! `{"tag":...,"time":"<RFC 3339>","record":{...}}` (plus `"metadata"` for v1.5 entries).
//!
//! No validation and no dedupe: every entry is written and reported as stored
//! ([`StoreOutcome::stored`]); resent chunks appear again.
//!
//! The file is created readable by its owner only (0600, whatever the umask); an existing
//! file keeps its mode, with a warning when its group or others can read it (`files.rs`).
//!
//! Invariant: a frame's lines are written in one `write_all`, flushed and `fdatasync`ed before
//! `store` returns, so an acked chunk survives a crash of the ingester; frames are written one
//! at a time, so lines of different frames never interleave.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use forward::Frame;
use forward::value_to_json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::{Checked, Store, StoreError, StoreOutcome};

/// Appends JSON lines to a file.
#[derive(Debug)]
pub struct JsonlStore {
    file: Mutex<tokio::fs::File>,
}

impl JsonlStore {
    /// Opens (creating if needed, with mode 0600) `path` for appending.
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(path).await?;
        crate::files::warn_if_shared(path);
        Ok(Self {
            file: Mutex::new(file),
        })
    }
}

/// Appends the JSON line of one entry, newline included, keys in the documented order.
pub fn write_entry_line(
    out: &mut Vec<u8>,
    tag: &str,
    entry: &forward::Entry,
) -> serde_json::Result<()> {
    let time = UNIX_EPOCH
        + Duration::new(
            u64::from(entry.time.seconds),
            entry.time.nanos.min(999_999_999),
        );
    out.extend_from_slice(b"{\"tag\":");
    serde_json::to_writer(&mut *out, tag)?;
    out.extend_from_slice(b",\"time\":");
    serde_json::to_writer(&mut *out, &billing_schema::rfc3339(time))?;
    out.extend_from_slice(b",\"record\":");
    serde_json::to_writer(&mut *out, &value_to_json(&entry.record))?;
    if let Some(md) = &entry.metadata {
        out.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut *out, &value_to_json(md))?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

impl Store for JsonlStore {
    /// Writes every entry, valid or not: a `jsonl:` store is a raw sink (no quarantine).
    async fn store(&self, frame: &Frame, _checked: Checked) -> Result<StoreOutcome, StoreError> {
        let mut out = Vec::with_capacity(256 * frame.entries.len());
        for entry in &frame.entries {
            write_entry_line(&mut out, &frame.tag, entry).map_err(std::io::Error::other)?;
        }
        let mut file = self.file.lock().await;
        file.write_all(&out).await?;
        file.flush().await?;
        file.sync_data().await?;
        let n = frame.entries.len() as u64;
        Ok(StoreOutcome {
            received: n,
            stored: n,
            ..StoreOutcome::default()
        })
    }
}
