//! One proxied connection: wait out a partition, connect upstream, then pump both directions
//! until both ends closed, a side failed, or the test killed it.
//!
//! Each direction is a reader and a writer joined by a bounded queue. The reader splits the
//! stream into MessagePack values (frames to the server, acks to the client) and decides what
//! happens to each: forwarded, dropped, held for reordering, duplicated, stamped with a due
//! time, or cut. The writer applies the timing: the due time, the partition and the trickle.
//! Client→server bytes are forwarded as they arrive (a large frame streams through); only a
//! frame's duplicate waits for its end. Server→client values are forwarded once complete.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use forward::msgpack::Scanner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::faults::{Direction, Faults};
use crate::shared::{Kill, Shared};
use crate::stats::add;

const READ_BUF: usize = 64 * 1024;
/// Largest value the scanner follows; past it the connection is forwarded raw.
const SCAN_LIMIT: usize = 1 << 30;
/// Items queued between a direction's reader and writer (backpressure beyond).
const QUEUE: usize = 256;

/// Why a connection ended early.
#[derive(Debug)]
enum End {
    Io,
    Cut,
    Killed(Kill),
}

/// What a reader hands its writer.
enum Item {
    /// Bytes to write, not before `due`.
    Bytes {
        due: Option<Instant>,
        bytes: Vec<u8>,
    },
    /// Close the connection here (after the bytes before it).
    Cut,
}

/// Keeps `connections_open` right however the task ends.
struct Open<'a>(&'a Shared);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0
            .counters
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The next kill of live connections (a lagging receiver missed some: it is killed too).
async fn next_kill(rx: &mut broadcast::Receiver<Kill>) -> Kill {
    match rx.recv().await {
        Ok(kill) => kill,
        Err(broadcast::error::RecvError::Lagged(_)) => Kill::Close,
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// Returns at once unless the partition is on; then counts a stall and waits for the heal.
async fn healed(shared: &Shared, faults: &mut watch::Receiver<Faults>) {
    if faults.borrow_and_update().partition {
        add(&shared.counters.partition_stalls, 1);
        let _ = faults.wait_for(|f| !f.partition).await;
    }
}

/// Proxies one accepted client connection to the upstream server.
pub(crate) async fn serve(
    client: TcpStream,
    shared: Arc<Shared>,
    mut kill: broadcast::Receiver<Kill>,
) {
    let counters = &shared.counters;
    add(&counters.connections_accepted, 1);
    add(&counters.connections_open, 1);
    let _open = Open(&shared);
    let mut faults = shared.faults.subscribe();
    if faults.borrow().refuse_connections {
        let _ = client.set_zero_linger();
        add(&counters.connections_refused, 1);
        return;
    }
    let server = tokio::select! {
        server = async {
            healed(&shared, &mut faults).await;
            TcpStream::connect(shared.upstream()).await
        } => server,
        k = next_kill(&mut kill) => {
            end_killed(&shared, k, [&client]);
            return;
        }
    };
    let Ok(server) = server else {
        add(&counters.upstream_failures, 1);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let end = {
        let to_server = direction(
            Direction::ToServer,
            &mut client_read,
            &mut server_write,
            &shared,
        );
        let to_client = direction(
            Direction::ToClient,
            &mut server_read,
            &mut client_write,
            &shared,
        );
        tokio::select! {
            r = async { tokio::try_join!(to_server, to_client) } => r.err(),
            k = next_kill(&mut kill) => Some(End::Killed(k)),
        }
    };
    // Whole sockets again: dropping a write half would send a FIN before a reset's RST.
    let (Ok(client), Ok(server)) = (
        client_read.reunite(client_write),
        server_read.reunite(server_write),
    ) else {
        return;
    };
    match end {
        Some(End::Killed(k)) => end_killed(&shared, k, [&client, &server]),
        Some(End::Cut) => add(&counters.connections_cut, 1),
        Some(End::Io) | None => {}
    }
    // Dropping the sockets closes them.
}

fn end_killed<const N: usize>(shared: &Shared, kill: Kill, sockets: [&TcpStream; N]) {
    match kill {
        Kill::Close => add(&shared.counters.connections_cut, 1),
        Kill::Reset => {
            for s in sockets {
                let _ = s.set_zero_linger();
            }
            add(&shared.counters.connections_reset, 1);
        }
    }
}

/// One direction: its reader and writer until both are done.
async fn direction(
    dir: Direction,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    shared: &Shared,
) -> Result<(), End> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let read = read_side(dir, reader, tx, shared);
    let write = write_side(dir, writer, rx, shared);
    tokio::try_join!(read, write).map(|_| ())
}

async fn write_side(
    dir: Direction,
    writer: &mut OwnedWriteHalf,
    mut rx: mpsc::Receiver<Item>,
    shared: &Shared,
) -> Result<(), End> {
    let mut faults = shared.faults.subscribe();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Cut => {
                let _ = writer.flush().await;
                return Err(End::Cut);
            }
            Item::Bytes { due, bytes } => {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                healed(shared, &mut faults).await;
                write(dir, writer, &bytes, shared, &mut faults)
                    .await
                    .map_err(|_| End::Io)?;
            }
        }
    }
    let _ = writer.shutdown().await;
    Ok(())
}

async fn write(
    dir: Direction,
    writer: &mut OwnedWriteHalf,
    mut rest: &[u8],
    shared: &Shared,
    faults: &mut watch::Receiver<Faults>,
) -> io::Result<()> {
    let counters = &shared.counters;
    let bytes_counter = match dir {
        Direction::ToServer => &counters.bytes_to_server,
        Direction::ToClient => &counters.bytes_to_client,
    };
    while !rest.is_empty() {
        let trickle = faults.borrow().trickle_for(dir);
        match trickle {
            Some(interval) => {
                writer.write_all(&rest[..1]).await?;
                add(bytes_counter, 1);
                add(&counters.bytes_trickled, 1);
                rest = &rest[1..];
                tokio::time::sleep(interval).await;
                healed(shared, faults).await;
            }
            None => {
                writer.write_all(rest).await?;
                add(bytes_counter, rest.len() as u64);
                rest = &[];
            }
        }
    }
    Ok(())
}

/// The reader's view of its stream: the current MessagePack value and what of it was
/// forwarded.
struct Values {
    /// Bytes from the start of the current value on.
    pending: Vec<u8>,
    /// Bytes of `pending` already forwarded (client→server only).
    sent: usize,
    scanner: Scanner,
    /// `false` once the stream is not MessagePack: forwarded raw from then on.
    tracking: bool,
}

impl Values {
    fn new() -> Self {
        Self {
            pending: Vec::new(),
            sent: 0,
            scanner: Scanner::new(),
            tracking: true,
        }
    }

    /// The current value is complete at `n`: forget it.
    fn next_value(&mut self, n: usize) {
        self.pending.drain(..n);
        self.sent = 0;
        self.scanner = Scanner::new();
    }
}

/// Acks held for reordering.
struct Held {
    acks: Vec<Vec<u8>>,
    since: Option<Instant>,
}

async fn read_side(
    dir: Direction,
    reader: &mut OwnedReadHalf,
    tx: mpsc::Sender<Item>,
    shared: &Shared,
) -> Result<(), End> {
    let mut faults = shared.faults.subscribe();
    let mut values = Values::new();
    let mut held = Held {
        acks: Vec::new(),
        since: None,
    };
    let mut buf = vec![0u8; READ_BUF];
    loop {
        healed(shared, &mut faults).await;
        let release_at = held.since.map(|since| {
            let hold = faults.borrow().reorder_acks.map(|r| r.max_hold);
            hold.map_or_else(Instant::now, |h| since + h)
        });
        let read = tokio::select! {
            r = reader.read(&mut buf) => r,
            _ = sleep_until(release_at) => {
                if release(&mut held, shared, &faults, &tx).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            _ = faults.changed() => continue,
        };
        let n = read.map_err(|_| End::Io)?;
        let sent = if n == 0 {
            finish(dir, &mut values, &mut held, shared, &faults, &tx).await
        } else {
            match dir {
                Direction::ToServer => {
                    to_server(&buf[..n], &mut values, shared, &faults, &tx).await
                }
                Direction::ToClient => {
                    to_client(&buf[..n], &mut values, &mut held, shared, &faults, &tx).await
                }
            }
        };
        match sent {
            // The writer is gone (it failed: its error ends the connection) or the stream
            // ended (EOF, or a cut handed over): dropping `tx` lets the writer finish.
            Err(Stop) => return Ok(()),
            Ok(()) if n == 0 => return Ok(()),
            Ok(()) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The reader stops: the writer is gone, or a cut was handed over.
struct Stop;

async fn send(tx: &mpsc::Sender<Item>, item: Item) -> Result<(), Stop> {
    tx.send(item).await.map_err(|_| Stop)
}

async fn forward(tx: &mpsc::Sender<Item>, bytes: &[u8], due: Option<Instant>) -> Result<(), Stop> {
    if bytes.is_empty() {
        return Ok(());
    }
    send(
        tx,
        Item::Bytes {
            due,
            bytes: bytes.to_vec(),
        },
    )
    .await
}

/// Client→server bytes: forwarded as they come; complete frames counted, duplicated or cut.
async fn to_server(
    data: &[u8],
    v: &mut Values,
    shared: &Shared,
    faults: &watch::Receiver<Faults>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Stop> {
    if !v.tracking {
        return forward(tx, data, None).await;
    }
    v.pending.extend_from_slice(data);
    loop {
        let scanned = v.scanner.advance(&v.pending, SCAN_LIMIT);
        let frame_end = match scanned {
            Ok(end) => end,
            Err(_) => {
                v.tracking = false;
                let rest = std::mem::take(&mut v.pending);
                return forward(tx, &rest[v.sent..], None).await;
            }
        };
        // A frame longer than the armed cut point, not forwarded past it yet: cut there.
        let known = frame_end.unwrap_or(v.pending.len());
        if let Some(after) = shared.armed_cut()
            && known > after
            && v.sent <= after
            && shared.take_cut()
        {
            add(&shared.counters.frames_cut, 1);
            forward(tx, &v.pending[v.sent..after], None).await?;
            send(tx, Item::Cut).await?;
            return Err(Stop);
        }
        let Some(n) = frame_end else {
            let from = v.sent;
            v.sent = v.pending.len();
            return forward(tx, &v.pending[from..], None).await;
        };
        forward(tx, &v.pending[v.sent..n], None).await?;
        let index = shared
            .counters
            .frames_to_server
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let is_array = matches!(v.pending[0], 0x90..=0x9f | 0xdc | 0xdd);
        let every = faults.borrow().duplicate_frames;
        if let Some(every) = every
            && is_array
            && index.is_multiple_of(every.max(1))
        {
            add(&shared.counters.frames_duplicated, 1);
            forward(tx, &v.pending[..n], None).await?;
        }
        v.next_value(n);
        if v.pending.is_empty() {
            return Ok(());
        }
    }
}

/// Server→client bytes: each complete value (an ack) dropped, held, delayed or forwarded.
async fn to_client(
    data: &[u8],
    v: &mut Values,
    held: &mut Held,
    shared: &Shared,
    faults: &watch::Receiver<Faults>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Stop> {
    if !v.tracking {
        return forward(tx, data, delay(shared, faults)).await;
    }
    v.pending.extend_from_slice(data);
    loop {
        match v.scanner.advance(&v.pending, SCAN_LIMIT) {
            Ok(Some(n)) => {
                let ack = v.pending[..n].to_vec();
                v.next_value(n);
                add(&shared.counters.acks_from_server, 1);
                ack_fault(ack, held, shared, faults, tx).await?;
            }
            Ok(None) => return Ok(()),
            Err(_) => {
                v.tracking = false;
                release(held, shared, faults, tx).await?;
                let rest = std::mem::take(&mut v.pending);
                return forward(tx, &rest, delay(shared, faults)).await;
            }
        }
    }
}

/// When a server→client item read now is due, counting it as delayed.
fn delay(shared: &Shared, faults: &watch::Receiver<Faults>) -> Option<Instant> {
    let d: Option<Duration> = faults.borrow().delay_acks;
    d.map(|d| {
        add(&shared.counters.acks_delayed, 1);
        Instant::now() + d
    })
}

async fn ack_fault(
    ack: Vec<u8>,
    held: &mut Held,
    shared: &Shared,
    faults: &watch::Receiver<Faults>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Stop> {
    let (drop_acks, reorder) = {
        let f = faults.borrow();
        (f.drop_acks, f.reorder_acks)
    };
    if drop_acks {
        add(&shared.counters.acks_dropped, 1);
        return Ok(());
    }
    match reorder {
        Some(r) => {
            held.acks.push(ack);
            held.since.get_or_insert_with(Instant::now);
            if held.acks.len() >= r.count {
                release(held, shared, faults, tx).await?;
            }
            Ok(())
        }
        None => {
            release(held, shared, faults, tx).await?;
            let due = delay(shared, faults);
            send(tx, Item::Bytes { due, bytes: ack }).await
        }
    }
}

/// Releases the held acks, last first.
async fn release(
    held: &mut Held,
    shared: &Shared,
    faults: &watch::Receiver<Faults>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Stop> {
    held.since = None;
    let acks = std::mem::take(&mut held.acks);
    if acks.len() >= 2 {
        add(&shared.counters.acks_reordered, acks.len() as u64);
    }
    for ack in acks.into_iter().rev() {
        let due = delay(shared, faults);
        send(tx, Item::Bytes { due, bytes: ack }).await?;
    }
    Ok(())
}

/// End of stream: what is held or partial goes out as it is.
async fn finish(
    dir: Direction,
    v: &mut Values,
    held: &mut Held,
    shared: &Shared,
    faults: &watch::Receiver<Faults>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Stop> {
    release(held, shared, faults, tx).await?;
    let rest = std::mem::take(&mut v.pending);
    match dir {
        Direction::ToServer => forward(tx, &rest[v.sent.min(rest.len())..], None).await,
        Direction::ToClient => forward(tx, &rest, delay(shared, faults)).await,
    }
}
