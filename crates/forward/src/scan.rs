//! Finding a frame's end in a buffer that grows a read at a time, in linear time.
//!
//! Why: [`crate::frame::check`] looks at the buffer from its start. Called after every read, a
//! frame trickled in one byte per read cost time quadratic in its length (a 4 MiB frame: ~8
//! TB of scanning), enough for a few slow clients to keep both cores busy. [`FrameScanner`]
//! keeps its state between calls instead:
//! - MessagePack frames: a [`msgpack::Scanner`] that resumes at the item where the last read
//!   stopped (the bytes before it are never looked at again);
//! - JSON frames: a structural walk (brackets, strings, escapes) over the new bytes only finds
//!   the candidate end; the full `serde_json` check runs once there, and also whenever the
//!   buffer doubled since its last run (so malformed JSON is still refused early), which is
//!   amortized linear.
//!
//! It also refuses a Forward frame whose entry array announces more entries than allowed as
//! soon as that array's header arrived, before the entries themselves are read.
//!
//! Invariants: for the same bytes, a `Complete(n)` is the `n` that `check` returns and any
//! error is one `check` returns for them; a malformed JSON frame may be reported later than
//! `check` would (at its closing bracket, at the next doubling of the buffer past 4 KiB, or
//! at the frame limit: until then it is `Incomplete`, and a client that stops there is cut
//! by the frame timeout or gets `Truncated` at its close); every call costs the new bytes
//! plus a constant (a header re-read) plus, for JSON, the amortized doubling checks —
//! [`FrameScanner::examined`] counts it all.

use crate::FrameError;
use crate::frame::check;
use crate::model::Check;
use crate::msgpack::{self, Header, read_header};

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Smallest buffer length at which a partial JSON frame gets its first full check.
const JSON_FIRST_CHECK: usize = 4096;

#[derive(Debug, Clone)]
enum State {
    /// Before the frame's first byte: `ws` whitespace bytes seen so far.
    Start { ws: usize },
    MsgPack {
        scanner: Box<msgpack::Scanner>,
        /// Whether the Forward entry count was judged (or cannot be judged early).
        counted: bool,
    },
    Json {
        start: usize,
        pos: usize,
        depth: usize,
        in_str: bool,
        escaped: bool,
        /// Buffer length at the last full check.
        checked_at: usize,
    },
}

/// Incremental [`check`]: call [`FrameScanner::scan`] with the same buffer, grown at the end,
/// until it is complete; then [`FrameScanner::reset`] for the next frame (whose first byte is
/// at the start of the buffer passed next).
#[derive(Debug, Clone)]
pub(crate) struct FrameScanner {
    state: State,
    examined: u64,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            state: State::Start { ws: 0 },
            examined: 0,
        }
    }
}

impl FrameScanner {
    /// Bytes looked at since this scanner was created (resets keep the count).
    pub(crate) fn examined(&self) -> u64 {
        self.examined
    }

    /// Forgets the frame just delimited.
    pub(crate) fn reset(&mut self) {
        self.state = State::Start { ws: 0 };
    }

    /// Whether a frame's first (non-whitespace) byte has been seen.
    pub(crate) fn in_frame(&self) -> bool {
        !matches!(self.state, State::Start { .. })
    }

    /// As [`check`] on `buf`, resuming where the last call stopped.
    ///
    /// # Errors
    /// As [`check`], plus [`FrameError::TooManyRecords`] for a Forward frame announcing more
    /// than `max_records` entries.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        max_frame: usize,
        max_records: usize,
    ) -> Result<Check, FrameError> {
        if let State::Start { ws } = &mut self.state {
            let from = *ws;
            let found = buf[from..].iter().position(|&b| !is_ws(b));
            self.examined += match found {
                Some(i) => i + 1,
                None => buf.len() - from,
            } as u64;
            let Some(start) = found.map(|i| from + i).filter(|&s| s < max_frame) else {
                *ws = buf.len();
                return if buf.len() >= max_frame {
                    Err(FrameError::TooLarge { limit: max_frame })
                } else {
                    Ok(Check::Incomplete)
                };
            };
            self.state = match buf[start] {
                b'[' | b'{' => State::Json {
                    start,
                    pos: start,
                    depth: 0,
                    in_str: false,
                    escaped: false,
                    checked_at: 0,
                },
                0x90..=0x9f | 0xdc | 0xdd => {
                    if start > 0 {
                        return Err(FrameError::Invalid("whitespace before a MessagePack frame"));
                    }
                    State::MsgPack {
                        scanner: Box::default(),
                        counted: false,
                    }
                }
                _ => return Err(FrameError::Invalid("a frame must be an array")),
            };
        }
        match &mut self.state {
            State::Start { .. } => unreachable!("left above"),
            State::MsgPack { scanner, counted } => {
                let before = scanner.examined();
                let res = scanner.advance(buf, max_frame);
                self.examined += scanner.examined() - before;
                if let Ok(Some(n)) = res {
                    return Ok(Check::Complete(n));
                }
                res?;
                if !*counted && let Some(judged) = forward_count(buf, max_records)? {
                    *counted = judged;
                }
                Ok(Check::Incomplete)
            }
            State::Json {
                start,
                pos,
                depth,
                in_str,
                escaped,
                checked_at,
            } => {
                let window_end = buf.len().min(max_frame);
                let from = *pos;
                let mut closed = None;
                for (i, &b) in buf[from..window_end].iter().enumerate() {
                    if *in_str {
                        if *escaped {
                            *escaped = false;
                        } else if b == b'\\' {
                            *escaped = true;
                        } else if b == b'"' {
                            *in_str = false;
                        }
                        continue;
                    }
                    match b {
                        b'"' => *in_str = true,
                        b'[' | b'{' => *depth += 1,
                        b']' | b'}' => {
                            *depth = depth.saturating_sub(1);
                            if *depth == 0 {
                                closed = Some(from + i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let end = closed.unwrap_or(window_end);
                self.examined += (end - from) as u64;
                *pos = end;
                let at_limit = window_end == max_frame && closed.is_none();
                let doubled = buf.len() >= JSON_FIRST_CHECK && buf.len() >= 2 * *checked_at;
                if closed.is_some() || at_limit || doubled {
                    // The full check decides (and validates what the walk skipped over).
                    *checked_at = buf.len();
                    self.examined += (window_end - *start) as u64;
                    return check(buf, max_frame);
                }
                Ok(Check::Incomplete)
            }
        }
    }
}

/// Early refusal of a Forward frame whose entry array is too long: `Some(true)` once judged
/// (fine, or not a Forward frame), `None` while the header is not all there.
fn forward_count(buf: &[u8], max_records: usize) -> Result<Option<bool>, FrameError> {
    let Some((outer, tag_at)) = read_header(buf, 0)? else {
        return Ok(None);
    };
    if !matches!(outer, Header::Array(n) if n >= 2) {
        return Ok(Some(true));
    }
    let Some((tag, tag_body)) = read_header(buf, tag_at)? else {
        return Ok(None);
    };
    if !matches!(tag, Header::Str(_) | Header::Bin(_)) {
        // Not a string tag: the decoder refuses it; nothing to judge early.
        return Ok(Some(true));
    }
    let second_at = tag_body.saturating_add(tag.payload());
    let Some((second, _)) = read_header(buf, second_at)? else {
        return Ok(None);
    };
    match second {
        // Two items may be a v1.5 Message time: leave it to the decoding plan.
        Header::Array(n) if n > max_records && n != 2 => {
            Err(FrameError::TooManyRecords { limit: max_records })
        }
        _ => Ok(Some(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame of `stream`, delimited by the scanner fed `cuts`-sized reads and by
    /// `check` on the whole buffer, must agree (same lengths, same first error).
    fn agree(stream: &[u8], max: usize, read: usize) {
        let mut scanner = FrameScanner::default();
        let mut start = 0;
        let mut fed = start;
        loop {
            let whole = check(&stream[start..], max);
            let got = loop {
                let r = scanner.scan(&stream[start..fed], max, usize::MAX);
                match r {
                    Ok(Check::Incomplete) if fed < stream.len() => {
                        fed = (fed + read).min(stream.len());
                    }
                    other => break other,
                }
            };
            match (&whole, &got) {
                (Ok(Check::Complete(a)), Ok(Check::Complete(b))) => {
                    assert_eq!(a, b, "read {read}");
                    start += a;
                    fed = fed.max(start);
                    scanner.reset();
                }
                (Ok(Check::Incomplete), Ok(Check::Incomplete)) => return,
                (Err(_), Err(_)) => return,
                // Malformed JSON found by `check` before the frame's end: the scanner reports
                // it later (here the stream ends first).
                (Err(FrameError::Json(_)), Ok(Check::Incomplete)) if fed == stream.len() => {
                    return;
                }
                _ => panic!("check {whole:?} vs scan {got:?} (read {read}) in {stream:02x?}"),
            }
        }
    }

    #[test]
    fn the_scanner_agrees_with_check_however_the_stream_is_cut() {
        let frames: [&[u8]; 6] = [
            b"[\"t\",1,{\"a\":\"]\\\"[\"}]",
            b"  \n[\"t\",[[1,{}]],{\"chunk\":\"x\"}]\n",
            &[0x92, 0xa1, b't', 0x91, 0x92, 0x01, 0x80],
            &[0x93, 0xa1, b't', 0xc4, 0x03, 0x92, 0x01, 0xc0, 0x80],
            b"[\"t\",1,{'a':1}]",
            &[0x92, 0xa1, b't', 0xc1],
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let mut stream = Vec::new();
            for _ in 0..rng.usize(1..5) {
                stream.extend_from_slice(frames[rng.usize(..frames.len())]);
            }
            if rng.bool() {
                let cut = rng.usize(..stream.len());
                stream.truncate(cut);
            }
            for read in [1, 2, 3, 7, 64] {
                for max in [16, 40, 1 << 20] {
                    agree(&stream, max, read);
                }
            }
        }
    }

    #[test]
    fn a_forward_header_announcing_too_many_entries_is_refused_at_once() {
        let mut s = FrameScanner::default();
        let header = [0x92, 0xa1, b't', 0xdd, 0x00, 0x00, 0x01, 0x00];
        assert_eq!(
            s.scan(&header[..7], 1 << 20, 255),
            Ok(Check::Incomplete),
            "count not all there yet"
        );
        assert_eq!(
            s.scan(&header, 1 << 20, 255),
            Err(FrameError::TooManyRecords { limit: 255 })
        );
    }
}
