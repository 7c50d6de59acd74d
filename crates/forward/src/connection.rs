//! A stream of frames over any socket: owns the read buffer and the socket, delegates every
//! byte decision to [`crate::frame`].
//!
//! Invariant: the buffer never holds more than one incomplete frame plus one read's worth of
//! bytes, so a peer cannot make it grow past the frame limit plus the read size.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, Check, Frame, Framing};
use crate::{ConnectionError, FrameError};

const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from a stream and writes acks to it (the server half).
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    buf: BytesMut,
    max_frame: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream; frames larger than `max_frame` bytes are refused.
    pub fn new(stream: S, max_frame: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
        }
    }

    /// The next frame, or `None` when the peer closed the stream between frames.
    ///
    /// # Errors
    /// [`ConnectionError::Frame`] for bytes that are not a valid frame (the connection should
    /// be closed: the stream cannot be resynchronised), [`ConnectionError::Truncated`] when
    /// the peer closed inside a frame, [`ConnectionError::Io`] for socket errors.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        loop {
            match frame::check(&self.buf, self.max_frame)? {
                Check::Complete(n) => {
                    let parsed = frame::parse(&self.buf[..n], self.max_frame);
                    self.buf.advance(n);
                    return Ok(Some(parsed?));
                }
                Check::Incomplete => {
                    if !fill(&mut self.stream, &mut self.buf).await? {
                        return if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                            Ok(None)
                        } else {
                            Err(ConnectionError::Truncated)
                        };
                    }
                }
            }
        }
    }

    /// Answers `{"ack": chunk}` in the given framing.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn write_ack(&mut self, chunk: &[u8], framing: Framing) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(chunk.len() + 8);
        crate::encode::write_ack(&mut out, chunk, framing);
        self.stream.write_all(&out).await
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
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
