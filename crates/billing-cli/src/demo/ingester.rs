//! The demo's store: SQLite behind the hidden fault of `--fault-lose-record`. The server on it
//! is `billing-ingest`'s in-process harness ([`RunningIngester`]), the same forward server and
//! handler as `billing ingest`; this module only names it [`Ingester`] for the demo. A leaf: it
//! imports no other demo module.
//!
//! Invariants:
//! - the store outlives every server on it: [`DemoStore::close`] takes the handle
//!   [`RunningIngester::shutdown`] returns once that server has stopped (the only one left),
//!   so every acked chunk is committed to the file before the next ingester opens it;
//! - the fault, unarmed, changes nothing: frames reach SQLite untouched.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use billing_ingest::{
    Checked, RunningIngester, SqliteStore, Store, StoreError, StoreOutcome, Summary, UsageQuery,
    UsageRow,
};
use forward::Frame;

/// The demo's ingester: a forward server on the current runtime serving a [`DemoStore`].
pub(super) type Ingester = RunningIngester<DemoStore>;

/// The hidden fault of `--fault-lose-record`: once armed with a record key, every arrival of
/// that record is acked without being stored, as a buggy ingester would, so reconciliation
/// must fail. Clones share one arming, so it survives the restart into the second ingester.
#[derive(Debug, Clone, Default)]
pub(super) struct Fault(Arc<OnceLock<String>>);

impl Fault {
    /// Arms the fault for `record_key` (`UNIQUE_KEY:AMOUNT_TYPE`); the first arming wins.
    pub(super) fn arm(&self, record_key: String) {
        let _ = self.0.set(record_key);
    }
}

/// The SQLite store of one run, behind the hidden [`Fault`].
pub(super) struct DemoStore {
    inner: SqliteStore,
    fault: Fault,
}

impl DemoStore {
    /// Opens (creating if missing) the SQLite file at `db`.
    pub(super) async fn open(db: &Path, fault: Fault) -> anyhow::Result<Arc<Self>> {
        let inner = SqliteStore::open(db)
            .await
            .with_context(|| format!("cannot open the store {}", db.display()))?;
        Ok(Arc::new(DemoStore { inner, fault }))
    }

    /// Every hourly rollup row and the store's totals.
    pub(super) async fn read(&self) -> anyhow::Result<(Vec<UsageRow>, Summary)> {
        let rows = self.inner.usage(&UsageQuery::default()).await?;
        let summary = self.inner.summary().await?;
        Ok((rows, summary))
    }

    /// Closes the store once no server uses it (waits for its writer thread).
    pub(super) async fn close(self: Arc<Self>) {
        // Closing takes the only handle. Were another still alive, its drop would finish the
        // queued jobs all the same, only without this wait.
        if let Ok(store) = Arc::try_unwrap(self) {
            store.inner.close().await;
        }
    }
}

impl Store for DemoStore {
    async fn store(&self, frame: &Frame, mut checked: Checked) -> Result<StoreOutcome, StoreError> {
        if let Some(key) = self.fault.0.get() {
            checked.valid.retain(|r| r.unique_key != **key);
        }
        self.inner.store(frame, checked).await
    }
}
