//! Helpers shared by the integration tests: frames built by hand with `rmpv`/`rmp`, not with
//! the crate's own encoder, so the decoder is checked against an independent writer.
#![allow(dead_code)]

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use rmpv::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Encodes one value with rmpv.
pub fn mp(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("Vec write");
    out
}

/// Concatenates the encodings of several values.
pub fn mp_all(vs: &[Value]) -> Vec<u8> {
    vs.iter().flat_map(mp).collect()
}

/// An EventTime as rmpv's ext value (rmpv writes an 8-byte ext as fixext8).
pub fn et(seconds: u32, nanos: u32) -> Value {
    let mut data = seconds.to_be_bytes().to_vec();
    data.extend_from_slice(&nanos.to_be_bytes());
    Value::Ext(0, data)
}

/// A string-keyed map.
pub fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// A map with its entries sorted by string key.
pub fn sorted(v: Value) -> Value {
    match v {
        Value::Map(mut m) => {
            m.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
            Value::Map(m)
        }
        other => other,
    }
}

/// A sample record.
pub fn record(n: i64) -> Value {
    map(&[
        ("n", Value::from(n)),
        ("msg", Value::from(format!("event {n}"))),
    ])
}

/// Gzip of `data` as one member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("Vec write");
    gz.finish().expect("Vec write")
}

/// The Go client's JSON line from the brief.
pub const GO_LINE: &str = r#"["billing",1795754038,{"amount_type":"node-seconds","amount_value":2,"internal_instance_id":"1234","metadata":{"report":"r-1"},"occurred_at":"2026-11-27T04:33:58.46790204Z","unique_key":"seed-1:node-seconds"},{}]"#;

/// A stream that hands out pre-cut pieces, one per `poll_read`, then EOF (or an error), and
/// records what is written to it. Deterministic: the reader sees exactly these boundaries.
pub struct Scripted {
    pieces: std::collections::VecDeque<Vec<u8>>,
    end_with_error: bool,
    pub written: Vec<u8>,
    pub bytes_read: usize,
}

impl Scripted {
    pub fn new(pieces: Vec<Vec<u8>>) -> Self {
        Self {
            pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            end_with_error: false,
            written: Vec::new(),
            bytes_read: 0,
        }
    }

    /// After the pieces, reads fail with `ConnectionReset` instead of returning EOF.
    pub fn failing_after(pieces: Vec<Vec<u8>>) -> Self {
        Self {
            end_with_error: true,
            ..Self::new(pieces)
        }
    }

    /// Every byte of `data` as its own read.
    pub fn bytewise(data: &[u8]) -> Self {
        Self::new(data.iter().map(|&b| vec![b]).collect())
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.pieces.pop_front() {
            Some(mut piece) => {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                this.bytes_read += n;
                if n < piece.len() {
                    piece.drain(..n);
                    this.pieces.push_front(piece);
                }
                Poll::Ready(Ok(()))
            }
            None if this.end_with_error => Poll::Ready(Err(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
