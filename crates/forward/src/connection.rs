//! A stream of frames over any socket: owns the read buffer and the socket, delegates every
//! byte decision to [`crate::frame`] and [`crate::scan`].
//!
//! Invariants:
//! - the buffer never holds more than one incomplete frame plus one read's worth of bytes, so
//!   a peer cannot make it grow past the frame limit plus the read size;
//! - each read is scanned once: the [`FrameScanner`] resumes where the last read stopped, so a
//!   frame trickled a byte at a time costs time linear in its length
//!   ([`Connection::scanned_bytes`] counts the work);
//! - on a server ([`Guard`]), every byte of buffer capacity beyond [`SMALL_FRAME_BYTES`] is
//!   charged to the server's memory budget before it is allocated, and given back as the
//!   buffer shrinks after each frame; a connection waiting for memory does not read, and the
//!   time it waited is added to its frame deadline (the wait is the server's doing, not the
//!   client's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::OwnedMutexGuard;

use crate::budget::{Budget, Charge, Lane, READ_CHUNK, SMALL_FRAME_BYTES, buffer_cap};
use crate::decode::{self, Inflater, Plan, inflate_cap};
use crate::frame;
use crate::handshake::{HandshakeError, MAX_HANDSHAKE_BYTES, check_message};
use crate::limits::{RateLog, Reason};
use crate::model::{Check, DecodeLimits, Frame, Framing};
use crate::scan::FrameScanner;
use crate::{ConnectionError, FrameError};

/// MessagePack's `nil`, fluentd's heartbeat on a forward connection.
const NIL: u8 = 0xc0;

/// Reads frames from a stream and writes acks to it (the server half).
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out as frames.
    start: usize,
    scanner: FrameScanner,
    limits: DecodeLimits,
    guard: Option<Guard>,
}

/// What a server adds to a connection: its share of the memory budget and its deadlines.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) budget: Arc<Budget>,
    /// Buffer capacity beyond the free allowance.
    charge: Charge,
    token: Option<OwnedMutexGuard<()>>,
    idle_timeout: Duration,
    frame_timeout: Duration,
    idle_since: Instant,
    frame_deadline: Option<Instant>,
    log: Arc<RateLog>,
    peer: Option<crate::peer_addr::PeerAddr>,
    /// Frames read and not yet answered (the server handles several while it reads on): a
    /// connection with frames being handled is not idle, its client is waiting for acks.
    pending: Arc<AtomicUsize>,
}

impl Guard {
    pub(crate) fn new(
        budget: Arc<Budget>,
        idle_timeout: Duration,
        frame_timeout: Duration,
        log: Arc<RateLog>,
        peer: Option<crate::peer_addr::PeerAddr>,
    ) -> Self {
        Self {
            charge: Charge::empty(&budget),
            budget,
            token: None,
            idle_timeout,
            frame_timeout,
            idle_since: Instant::now(),
            frame_deadline: None,
            log,
            peer,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of this connection's frames read and not yet answered: the server raises it
    /// for each frame it takes and lowers it once the frame is answered.
    pub(crate) fn pending(&self) -> Arc<AtomicUsize> {
        self.pending.clone()
    }

    /// Charges `bytes`, logging a wait; returns the charge and the time waited.
    async fn charge(&mut self, bytes: usize, lane: Lane) -> (Charge, Duration) {
        let (charge, waited) = self.budget.charge(bytes, lane, &mut self.token).await;
        if !waited.is_zero() {
            self.log.hit(
                Reason::MemoryWait,
                self.peer.as_ref(),
                &format!("waited {waited:?} for {bytes} bytes of the memory budget"),
            );
        }
        (charge, waited)
    }
}

/// Bytes of buffer capacity charged to the budget.
fn charged_part(capacity: usize) -> usize {
    capacity.saturating_sub(SMALL_FRAME_BYTES)
}

impl<S: AsyncRead + Unpin> Connection<S> {
    /// Wraps a connected stream; frames larger than `max_frame` bytes are refused, and the
    /// number of entries is not limited.
    pub fn new(stream: S, max_frame: usize) -> Self {
        Self::with_limits(
            stream,
            DecodeLimits {
                max_frame_bytes: max_frame,
                max_records: usize::MAX,
            },
        )
    }

    /// Wraps a connected stream; frames beyond `limits` are refused.
    pub fn with_limits(stream: S, limits: DecodeLimits) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            start: 0,
            scanner: FrameScanner::default(),
            limits,
            guard: None,
        }
    }

    pub(crate) fn guarded(stream: S, limits: DecodeLimits, guard: Guard) -> Self {
        Self {
            guard: Some(guard),
            ..Self::with_limits(stream, limits)
        }
    }

    /// Bytes the frame scanner has looked at so far: linear in the bytes received, however
    /// they were cut into reads (a measure of the decoding work, for tests and benchmarks).
    pub fn scanned_bytes(&self) -> u64 {
        self.scanner.examined()
    }

    /// The next frame, or `None` when the peer closed the stream between frames.
    ///
    /// # Errors
    /// [`ConnectionError::Frame`] for bytes that are not a valid frame (the connection should
    /// be closed: the stream cannot be resynchronised), [`ConnectionError::Truncated`] when
    /// the peer closed inside a frame, [`ConnectionError::Io`] for socket errors.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        let Some(n) = self.next_frame().await? else {
            return Ok(None);
        };
        let parsed = frame::parse_with(&self.buf[self.start..self.start + n], &self.limits);
        self.consume(n);
        Ok(Some(parsed?))
    }

    /// Reads until `buf[start..start + n]` is one whole frame and returns `n`; `None` at a
    /// clean end of stream.
    async fn next_frame(&mut self) -> Result<Option<usize>, ConnectionError> {
        loop {
            self.skip_heartbeats();
            let view = &self.buf[self.start..];
            if let Check::Complete(n) =
                self.scanner
                    .scan(view, self.limits.max_frame_bytes, self.limits.max_records)?
            {
                return Ok(Some(n));
            }
            let in_frame = self.scanner.in_frame();
            if let Some(g) = &mut self.guard {
                match (in_frame, g.frame_deadline) {
                    (true, None) => g.frame_deadline = Some(Instant::now() + g.frame_timeout),
                    (false, Some(_)) => g.frame_deadline = None,
                    _ => {}
                }
            }
            if !self.fill(in_frame).await? {
                return if self.buf[self.start..].iter().all(u8::is_ascii_whitespace) {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }

    /// Skips `nil` objects where a frame would begin: fluentd's TCP heartbeat (its
    /// `in_forward` ignores a `nil` message). Each is one byte, so skipping costs what it was
    /// sent; on a server it counts as activity (the idle timer restarts) and is counted.
    fn skip_heartbeats(&mut self) {
        if self.scanner.in_frame() {
            return;
        }
        let nils = self.buf[self.start..]
            .iter()
            .take_while(|&&b| b == NIL)
            .count();
        if nils == 0 {
            return;
        }
        self.start += nils;
        if let Some(g) = &mut self.guard {
            g.idle_since = Instant::now();
            g.budget
                .stats()
                .heartbeats
                .fetch_add(nils as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Reads more bytes; `false` at end of stream.
    async fn fill(&mut self, in_frame: bool) -> Result<bool, ConnectionError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        if len == self.buf.capacity() {
            let cap_max = buffer_cap(self.limits.max_frame_bytes);
            if len >= cap_max {
                return Err(ConnectionError::Frame(FrameError::TooLarge {
                    limit: self.limits.max_frame_bytes,
                }));
            }
            let target = if len < SMALL_FRAME_BYTES {
                SMALL_FRAME_BYTES
            } else {
                (len + READ_CHUNK.max(len / 4)).min(cap_max)
            };
            if let Some(g) = &mut self.guard {
                let more = charged_part(target).saturating_sub(g.charge.bytes());
                if more > 0 {
                    let (c, waited) = g.charge(more, Lane::Normal).await;
                    g.charge.merge(c);
                    if let Some(d) = &mut g.frame_deadline {
                        *d += waited;
                    }
                }
            }
            self.buf.reserve_exact(target - len);
        }
        let n = loop {
            let read = self.stream.read_buf(&mut self.buf);
            let Some(g) = &mut self.guard else {
                break read.await;
            };
            let (deadline, timeout) = match g.frame_deadline.filter(|_| in_frame) {
                Some(d) => (d, ConnectionError::FrameTimeout),
                None => (g.idle_since + g.idle_timeout, ConnectionError::IdleTimeout),
            };
            match tokio::time::timeout_at(deadline.into(), read).await {
                Ok(r) => break r,
                // Its client waits for the acks of frames still being handled: not idle.
                Err(_)
                    if matches!(timeout, ConnectionError::IdleTimeout)
                        && g.pending.load(Ordering::Acquire) > 0 =>
                {
                    g.idle_since = Instant::now();
                }
                Err(_) => return Err(timeout),
            }
        }
        .map_err(ConnectionError::Io)?;
        Ok(n > 0)
    }

    /// Hands the frame `buf[start..start + n]` out: the scanner starts over, the buffer
    /// shrinks (giving its memory back) once what is left fits the free allowance.
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanner.reset();
        let rest = self.buf.len() - self.start;
        if rest == 0 {
            self.buf = Vec::new();
            self.start = 0;
        } else if self.buf.capacity() > SMALL_FRAME_BYTES && rest <= SMALL_FRAME_BYTES {
            let mut small = Vec::with_capacity(SMALL_FRAME_BYTES);
            small.extend_from_slice(&self.buf[self.start..]);
            self.buf = small;
            self.start = 0;
        }
        if let Some(g) = &mut self.guard {
            g.charge.shrink_to(charged_part(self.buf.capacity()));
            g.idle_since = Instant::now();
            g.frame_deadline = None;
        }
    }

    /// The next frame decoded within the server's budget, with the charge for its decoded
    /// form (hold it until the frame was handled); `None` at a clean end of stream.
    ///
    /// Order: the frame is delimited, planned (entries counted and checked, the decoded cost
    /// bounded) before anything is decoded; inflated a step at a time, each step charged
    /// first; its decoded cost is charged (small frames in their own lane); it is decoded and
    /// its bytes leave the buffer.
    pub(crate) async fn read_guarded(
        &mut self,
    ) -> Result<Option<(Frame, Charge)>, ConnectionError> {
        let Some(n) = self.next_frame().await? else {
            return Ok(None);
        };
        let limits = self.limits;
        let Self {
            buf, start, guard, ..
        } = self;
        let guard = guard.as_mut().expect("a guarded connection");
        let wire = &buf[*start..*start + n];
        let plan = decode::plan(wire, limits.max_records)?;
        let ceiling = guard.budget.decode_ceiling();
        if plan.cost() > ceiling {
            return Err(FrameError::DecodedTooLarge { limit: ceiling }.into());
        }
        let mut inflate_charge = Charge::empty(&guard.budget);
        let (inflated, cost) = match plan {
            Plan::Ready { cost } => (None, cost),
            Plan::Inflate {
                payload,
                outer_cost,
            } => {
                let mut inflater = Inflater::new(&wire[payload], limits.max_frame_bytes);
                loop {
                    let want = inflater
                        .next_capacity()
                        .min(inflate_cap(limits.max_frame_bytes));
                    let more = want.saturating_sub(inflate_charge.bytes());
                    if more > 0 {
                        let (c, _) = guard.charge(more, Lane::Normal).await;
                        inflate_charge.merge(c);
                    }
                    if inflater.step()? {
                        break;
                    }
                }
                let raw = inflater.finish();
                let cost =
                    outer_cost.saturating_add(decode::plan_packed(&raw, limits.max_records)?);
                (Some(raw), cost)
            }
        };
        if cost > ceiling {
            return Err(FrameError::DecodedTooLarge { limit: ceiling }.into());
        }
        let lane = if n <= SMALL_FRAME_BYTES && guard.budget.fits_small(cost) {
            Lane::Small
        } else {
            Lane::Normal
        };
        let (charge, _) = guard.charge(cost, lane).await;
        let decoded = frame::decode_frame(wire, inflated, &limits);
        drop(inflate_charge);
        self.consume(n);
        Ok(Some((decoded?, charge)))
    }

    /// The next handshake message (a MessagePack array of at most [`MAX_HANDSHAKE_BYTES`]),
    /// read into the same buffer as frames, so its bytes are charged to the budget and bound
    /// by the deadlines as a frame's are; whatever follows it stays buffered for the frames
    /// that follow. `None` when the peer closed the stream before sending a byte.
    pub(crate) async fn read_handshake(&mut self) -> Result<Option<Vec<u8>>, ConnectionError> {
        loop {
            let view = &self.buf[self.start..];
            match check_message(view, MAX_HANDSHAKE_BYTES).map_err(ConnectionError::Handshake)? {
                Check::Complete(n) => {
                    let message = view[..n].to_vec();
                    self.start += n;
                    return Ok(Some(message));
                }
                Check::Incomplete if view.len() >= MAX_HANDSHAKE_BYTES => {
                    return Err(ConnectionError::Handshake(HandshakeError::TooLarge {
                        limit: MAX_HANDSHAKE_BYTES,
                    }));
                }
                Check::Incomplete => {}
            }
            if !self.fill(false).await? {
                return if self.buf[self.start..].is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }

    /// After a frame was handled (and its charge dropped): the idle clock starts again, and
    /// the reserve token is given back once none of this connection's memory comes from the
    /// reserve.
    pub(crate) fn settle(&mut self) {
        if let Some(g) = &mut self.guard {
            g.idle_since = Instant::now();
            if g.token.is_some() && g.charge.leave_reserve() {
                g.token = None;
            }
        }
    }

    /// A server connection's count of frames read and not yet answered (see `Guard`).
    pub(crate) fn pending(&self) -> Option<Arc<AtomicUsize>> {
        self.guard.as_ref().map(Guard::pending)
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Writes `bytes` (a handshake message) to the peer.
    ///
    /// # Errors
    /// Socket errors.
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Answers `{"ack": chunk}` in the given framing.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn write_ack(&mut self, chunk: &[u8], framing: Framing) -> std::io::Result<()> {
        write_ack_to(&mut self.stream, chunk, framing).await
    }

    /// Splits a server connection into its reading half, which keeps the buffer, the scanner
    /// and the budget's charges, and the write half for acks: the server then reads (and
    /// decodes) the next frames while earlier ones are handled.
    pub(crate) fn split(self) -> (Connection<ReadHalf<S>>, WriteHalf<S>) {
        let (read, write) = tokio::io::split(self.stream);
        let reader = Connection {
            stream: read,
            buf: self.buf,
            start: self.start,
            scanner: self.scanner,
            limits: self.limits,
            guard: self.guard,
        };
        (reader, write)
    }
}

/// Writes `{"ack": chunk}` in the given framing to `out`.
///
/// # Errors
/// Socket errors.
pub(crate) async fn write_ack_to<W: AsyncWrite + Unpin>(
    out: &mut W,
    chunk: &[u8],
    framing: Framing,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(chunk.len() + 8);
    crate::encode::write_ack(&mut bytes, chunk, framing);
    out.write_all(&bytes).await
}

/// Reads acks sent back to a client (the client's read half).
#[derive(Debug)]
pub struct AckReader<R> {
    stream: R,
    buf: BytesMut,
}

/// Largest ack reply accepted: a map with one short string.
const MAX_REPLY: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> AckReader<R> {
    /// Wraps the read half of a client connection.
    pub fn new(stream: R) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(1024),
        }
    }

    /// As [`AckReader::new`], with `early` bytes already read from the stream (e.g. what
    /// followed a handshake's PONG in the same read), read before the stream's.
    pub fn with_buffered(stream: R, early: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(1024.max(early.len()));
        buf.extend_from_slice(early);
        Self { stream, buf }
    }

    /// The chunk id of the next ack, or `None` when the server closed the connection.
    ///
    /// # Errors
    /// [`ConnectionError`] for socket errors or a reply that is not `{"ack": chunk}`.
    pub async fn read_ack(&mut self) -> Result<Option<Vec<u8>>, ConnectionError> {
        loop {
            match frame::check_reply(&self.buf, MAX_REPLY)? {
                Check::Complete(n) => {
                    let ack = frame::parse_ack(&self.buf[..n]);
                    self.buf.advance(n);
                    return Ok(Some(ack?));
                }
                Check::Incomplete => {
                    if !fill(&mut self.stream, &mut self.buf).await? {
                        // whitespace may follow a JSON ack
                        return if self
                            .buf
                            .iter()
                            .all(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                        {
                            Ok(None)
                        } else {
                            Err(ConnectionError::Truncated)
                        };
                    }
                }
            }
        }
    }
}

/// Reads more bytes into `buf`; `false` at end of stream.
async fn fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
) -> Result<bool, ConnectionError> {
    buf.reserve(READ_CHUNK);
    let n = stream.read_buf(buf).await.map_err(ConnectionError::Io)?;
    Ok(n > 0)
}

impl From<FrameError> for ConnectionError {
    fn from(e: FrameError) -> Self {
        ConnectionError::Frame(e)
    }
}
