//! The demo's in-process ingester: its store (SQLite plus the hidden fault) and the forward
//! server started on it and stopped again for the mid-run restart. Everything that starts or
//! stops an ingester lives here, behind a small surface ([`DemoStore::open`],
//! [`Ingester::start`], [`Ingester::shutdown`], [`DemoStore::close`]) shaped like the shared
//! in-process ingester harness of `billing-ingest`, so the demo can move onto that harness by
//! changing this module only. A leaf: it imports no other demo module.
//!
//! Invariants:
//! - [`Ingester::shutdown`] returns only once the server has dropped every connection, so
//!   chunks it had not acked stay unacked and the client must resend them;
//! - the store outlives the server: it is closed (its writer thread joined) only after the
//!   server serving it has stopped, so every acked chunk is committed to the file before the
//!   next ingester opens it;
//! - the fault, unarmed, changes nothing: frames reach SQLite untouched.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use billing_ingest::{
    Checked, SqliteStore, Store, StoreError, StoreOutcome, Summary, UsageQuery, UsageRow,
};
use forward::{Frame, ServerStats};

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

/// A running forward server on the demo's store.
pub(super) struct Ingester {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<DemoStore>,
    stats: Arc<ServerStats>,
}

impl Ingester {
    /// Listens on `addr` (port 0 picks a free port) and serves `store` on the current runtime.
    pub(super) async fn start(addr: &str, store: Arc<DemoStore>) -> anyhow::Result<Self> {
        let server = billing_ingest::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = server.local_addr()?;
        let stats = server.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(billing_ingest::serve(server, store.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Ingester {
            addr,
            stop,
            task,
            store,
            stats,
        })
    }

    /// The bound address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections this server has accepted so far (the client's reconnects, after a restart).
    pub(super) fn connections_total(&self) -> u64 {
        self.stats.connections_total.load(Ordering::Relaxed)
    }

    /// Fires the shutdown future and waits until the server has dropped every connection.
    /// Returns the store, still open.
    pub(super) async fn shutdown(self) -> Arc<DemoStore> {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.store
    }
}
