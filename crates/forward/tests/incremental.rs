//! `Connection` and `AckReader` over streams that deliver bytes in arbitrary pieces.

mod common;

use common::*;
use forward::DEFAULT_MAX_FRAME_BYTES;
use forward::{AckReader, Connection, ConnectionError, EventTime, FrameError, Framing};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

fn sample_frames() -> Vec<Vec<u8>> {
    let packed = mp_all(&[
        Value::Array(vec![et(1, 2), record(1)]),
        Value::Array(vec![Value::from(3), record(2)]),
    ]);
    vec![
        mp(&Value::Array(vec![Value::from("msg"), et(10, 20), record(1), map(&[("chunk", Value::from("c-1"))])])),
        mp(&Value::Array(vec![Value::from("fwd"), Value::Array(vec![Value::Array(vec![et(5, 6), record(2)])])])),
        mp(&Value::Array(vec![Value::from("gz"), Value::Binary(gzip(&packed)), map(&[("compressed", Value::from("gzip")), ("chunk", Value::from("c-3"))])])),
        mp(&Value::Array(vec![Value::from("float"), Value::F64(7.5), record(3)])),
        // JSON last: whitespace may follow a JSON frame but must not precede a MessagePack one
        GO_LINE.as_bytes().to_vec(),
        // numbers that a split can cut in the middle: '-', '.', 'e', 'e+' at the end of a read
        br#"["json",1795754038.25,{"v":-12.5e+3,"w":-0.0,"x":1E-2,"s":"\u00e9\n"},{"chunk":"c-5"}]"#.to_vec(),
        b"\n".to_vec(),
    ]
}

fn expected_tags() -> Vec<&'static str> {
    vec!["msg", "fwd", "gz", "float", "billing", "json"]
}

async fn read_all<S>(conn: &mut Connection<S>) -> Vec<forward::Frame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut frames = Vec::new();
    while let Some(f) = conn.read_frame().await.expect("valid stream") {
        frames.push(f);
    }
    frames
}

#[tokio::test]
async fn every_frame_split_at_every_byte_boundary() {
    for frame in sample_frames().into_iter().filter(|f| f != b"\n") {
        let whole = {
            let mut conn = Connection::new(Scripted::new(vec![frame.clone()]), MAX);
            conn.read_frame().await.expect("valid").expect("a frame")
        };
        for cut in 1..frame.len() {
            let mut conn = Connection::new(
                Scripted::new(vec![frame[..cut].to_vec(), frame[cut..].to_vec()]),
                MAX,
            );
            let got = conn.read_frame().await.unwrap_or_else(|e| {
                panic!("cut {cut} of {:?}: {e}", String::from_utf8_lossy(&frame))
            });
            assert_eq!(got.as_ref(), Some(&whole), "cut {cut}");
            assert!(
                conn.read_frame().await.expect("clean end").is_none(),
                "cut {cut}"
            );
        }
    }
}

#[tokio::test]
async fn a_stream_of_frames_one_byte_per_read() {
    let stream: Vec<u8> = sample_frames().concat();
    let mut conn = Connection::new(Scripted::bytewise(&stream), MAX);
    let frames = read_all(&mut conn).await;
    assert_eq!(
        frames.iter().map(|f| f.tag.as_str()).collect::<Vec<_>>(),
        expected_tags()
    );
    assert_eq!(
        frames[5].entries[0].time,
        EventTime::new(1_795_754_038, 250_000_000)
    );
    // JSON objects keep serde_json's key order: compare sorted
    assert_eq!(
        sorted(frames[5].entries[0].record.clone()),
        map(&[
            ("s", Value::from("é\n")),
            ("v", Value::F64(-12_500.0)),
            ("w", Value::F64(-0.0)),
            ("x", Value::F64(0.01)),
        ])
    );
}

#[tokio::test]
async fn several_frames_in_one_write() {
    let stream: Vec<u8> = sample_frames().concat();
    let mut conn = Connection::new(Scripted::new(vec![stream]), MAX);
    let frames = read_all(&mut conn).await;
    assert_eq!(
        frames.iter().map(|f| f.tag.as_str()).collect::<Vec<_>>(),
        expected_tags()
    );
    assert_eq!(frames[2].entries.len(), 2);
}

#[tokio::test]
async fn frames_over_a_duplex_with_a_one_byte_pipe() {
    let (client, server) = tokio::io::duplex(1);
    let stream: Vec<u8> = sample_frames().concat();
    let writer = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(client);
        // read acks while writing, or both sides would wait on a full one-byte pipe
        let reader = tokio::spawn(async move {
            let mut acks = Vec::new();
            rd.read_to_end(&mut acks).await.unwrap();
            acks
        });
        wr.write_all(&stream).await.unwrap();
        wr.shutdown().await.unwrap();
        reader.await.unwrap()
    });
    let mut conn = Connection::new(server, MAX);
    let mut tags = Vec::new();
    while let Some(f) = conn.read_frame().await.expect("valid stream") {
        if let Some(chunk) = &f.options.chunk {
            conn.write_ack(chunk, f.framing).await.unwrap();
        }
        tags.push(f.tag);
    }
    assert_eq!(tags, expected_tags());
    drop(conn);
    let acks = writer.await.unwrap();
    let mut reader = AckReader::new(&acks[..]);
    let mut got = Vec::new();
    while let Some(a) = reader.read_ack().await.unwrap() {
        got.push(String::from_utf8(a).unwrap());
    }
    assert_eq!(got, ["c-1", "c-3", "c-5"]);
}

#[tokio::test]
async fn frames_over_a_real_tcp_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frames = sample_frames();
    let client = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        let reader = tokio::spawn(async move {
            let mut acks = Vec::new();
            rd.read_to_end(&mut acks).await.unwrap();
            acks
        });
        for f in &frames {
            for piece in f.chunks(3) {
                wr.write_all(piece).await.unwrap();
            }
        }
        wr.shutdown().await.unwrap();
        reader.await.unwrap()
    });
    let (sock, _) = listener.accept().await.unwrap();
    let mut conn = Connection::new(sock, MAX);
    let mut tags = Vec::new();
    while let Some(f) = conn.read_frame().await.expect("valid stream") {
        if let Some(chunk) = &f.options.chunk {
            conn.write_ack(chunk, f.framing).await.unwrap();
        }
        tags.push(f.tag);
    }
    assert_eq!(tags, expected_tags());
    drop(conn);
    let acks = client.await.unwrap();
    // "c-1" and "c-3" in MessagePack, "c-5" in JSON: the JSON ack is the tail
    assert!(
        acks.ends_with(br#"{"ack":"c-5"}"#),
        "{:?}",
        String::from_utf8_lossy(&acks)
    );
}

#[tokio::test]
async fn a_declared_frame_over_the_limit_is_too_large_before_its_bytes_arrive() {
    let limit = 1 << 20;
    // [tag, bin32 of 1 GiB ...]: only the header is ever sent and the stream stays open.
    let mut header = vec![0x92, 0xa1, b't', 0xc6];
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(&header).await.unwrap();
    let mut conn = Connection::new(server, limit);
    match conn.read_frame().await {
        Err(ConnectionError::Frame(FrameError::TooLarge { limit: l })) => assert_eq!(l, limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    drop(client);
}

/// Streams endless data into `conn` and returns how many bytes it had consumed when it failed.
async fn feed_endless(
    prefix: &[u8],
    filler: u8,
    limit: usize,
) -> (Result<Option<forward::Frame>, ConnectionError>, usize) {
    let (client, server) = tokio::io::duplex(8 * 1024);
    let prefix = prefix.to_vec();
    let writer = tokio::spawn(async move {
        let mut client = client;
        let mut sent = 0usize;
        if client.write_all(&prefix).await.is_err() {
            return sent;
        }
        sent += prefix.len();
        let block = vec![filler; 4096];
        // stops when the reader is dropped; bounded so a broken decoder cannot hang the test
        while sent < 64 * limit {
            if client.write_all(&block).await.is_err() {
                break;
            }
            sent += block.len();
        }
        sent
    });
    let mut conn = Connection::new(server, limit);
    let res = conn.read_frame().await;
    drop(conn);
    let sent = writer.await.unwrap();
    (res, sent)
}

#[tokio::test]
async fn an_array_of_many_small_values_over_the_limit_is_too_large_without_buffering_it_all() {
    let limit = 256 * 1024;
    // array32 of 2^32-1 values claims more children than the limit allows: refused at once.
    let (res, sent) = feed_endless(&[0xdd, 0xff, 0xff, 0xff, 0xff], 0xc0, limit).await;
    assert!(
        matches!(res, Err(ConnectionError::Frame(FrameError::TooLarge { limit: l })) if l == limit),
        "{res:?}"
    );
    assert!(sent < 64 * limit, "sent {sent}");
    // a Forward list of 100_000 values of 4 bytes each (fixstr 0xa3 then 3 bytes): the
    // count alone fits, the bytes do not, refused as they pass the limit.
    let (res, sent) = feed_endless(
        &[0x92, 0xa1, b't', 0xdd, 0x00, 0x01, 0x86, 0xa0],
        0xa3,
        limit,
    )
    .await;
    assert!(
        matches!(res, Err(ConnectionError::Frame(FrameError::TooLarge { limit: l })) if l == limit),
        "{res:?}"
    );
    assert!(sent < 64 * limit, "sent {sent}");
}

#[tokio::test]
async fn a_json_frame_over_the_limit_is_too_large() {
    let limit = 64 * 1024;
    let (res, sent) = feed_endless(br#"["t",1,{"k":""#, b'a', limit).await;
    assert!(
        matches!(res, Err(ConnectionError::Frame(FrameError::TooLarge { limit: l })) if l == limit),
        "{res:?}"
    );
    assert!(sent < 64 * limit, "sent {sent}");
}

#[tokio::test]
async fn endless_whitespace_is_too_large_not_an_unbounded_buffer() {
    let limit = 64 * 1024;
    let (res, sent) = feed_endless(b"", b'\n', limit).await;
    assert!(
        matches!(res, Err(ConnectionError::Frame(FrameError::TooLarge { limit: l })) if l == limit),
        "{res:?}"
    );
    assert!(sent < 64 * limit, "sent {sent}");
    let (res, _) = feed_endless(b" ", b' ', limit).await;
    assert!(
        matches!(
            res,
            Err(ConnectionError::Frame(FrameError::TooLarge { .. }))
        ),
        "{res:?}"
    );
}

#[tokio::test]
async fn bytes_read_stay_near_the_limit_when_refusing() {
    let limit = 128 * 1024;
    let mut pieces = vec![vec![0x92, 0xa1, b't', 0xdd, 0x00, 0x01, 0x86, 0xa0]];
    pieces.extend(std::iter::repeat_n(vec![0xa3u8; 1000], 10 * limit / 1000));
    let total: usize = pieces.iter().map(Vec::len).sum();
    let mut conn = Connection::new(Scripted::new(pieces), limit);
    let res = conn.read_frame().await;
    assert!(
        matches!(
            res,
            Err(ConnectionError::Frame(FrameError::TooLarge { .. }))
        ),
        "{res:?}"
    );
    let read = conn.get_mut().bytes_read;
    assert!(
        read <= limit + 1000,
        "read {read} of {total} bytes for a limit of {limit}"
    );
}

#[tokio::test]
async fn eof_inside_a_frame_is_truncated() {
    for frame in sample_frames().into_iter().filter(|f| f != b"\n") {
        for cut in 1..frame.len() {
            let mut conn = Connection::new(Scripted::new(vec![frame[..cut].to_vec()]), MAX);
            let res = conn.read_frame().await;
            assert!(
                matches!(res, Err(ConnectionError::Truncated)),
                "cut {cut}: {res:?}"
            );
        }
    }
}

#[tokio::test]
async fn eof_inside_a_second_frame_after_a_good_one_is_truncated() {
    let frames = sample_frames();
    let mut bytes = frames[0].clone();
    bytes.extend_from_slice(&frames[1][..4]);
    let mut conn = Connection::new(Scripted::new(vec![bytes]), MAX);
    assert_eq!(conn.read_frame().await.unwrap().unwrap().tag, "msg");
    assert!(matches!(
        conn.read_frame().await,
        Err(ConnectionError::Truncated)
    ));
}

#[tokio::test]
async fn clean_eof_is_none() {
    let mut conn = Connection::new(Scripted::new(vec![]), MAX);
    assert!(conn.read_frame().await.unwrap().is_none());
    // after a frame, and after whitespace that follows a JSON frame
    let mut conn = Connection::new(
        Scripted::new(vec![GO_LINE.as_bytes().to_vec(), b"\r\n \n".to_vec()]),
        MAX,
    );
    assert_eq!(conn.read_frame().await.unwrap().unwrap().tag, "billing");
    assert!(conn.read_frame().await.unwrap().is_none());
}

#[tokio::test]
async fn a_socket_error_is_io() {
    let mut conn = Connection::new(
        Scripted::failing_after(vec![sample_frames()[0][..3].to_vec()]),
        MAX,
    );
    assert!(
        matches!(conn.read_frame().await, Err(ConnectionError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn write_ack_writes_the_encoded_ack() {
    let mut conn = Connection::new(Scripted::new(vec![]), MAX);
    conn.write_ack(b"abc", Framing::MessagePack).await.unwrap();
    conn.write_ack(b"def", Framing::Json).await.unwrap();
    let mut expected = vec![0x81, 0xa3, b'a', b'c', b'k', 0xa3, b'a', b'b', b'c'];
    expected.extend_from_slice(br#"{"ack":"def"}"#);
    assert_eq!(conn.get_mut().written, expected);
}

fn ack_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
    let ids: Vec<Vec<u8>> = vec![
        b"Zmlyc3Q=".to_vec(),
        vec![0xff, 0x00, 0x80],
        b"json-1".to_vec(),
        b"json-2".to_vec(),
        b"last".to_vec(),
    ];
    let mut bytes = mp(&map(&[("ack", Value::from("Zmlyc3Q="))]));
    bytes.extend(mp(&map(&[("ack", Value::Binary(ids[1].clone()))])));
    bytes.extend_from_slice(b"{\"ack\":\"json-1\"}\n");
    bytes.extend_from_slice(b" { \"ack\" : \"json-2\" , \"extra\": 1 }");
    bytes.extend(mp(&map(&[
        ("other", Value::Nil),
        ("ack", Value::from("last")),
    ])));
    (bytes, ids)
}

#[tokio::test]
async fn ack_reader_reads_messagepack_and_json_acks_split_anywhere() {
    let (bytes, ids) = ack_stream();
    for cut in 0..=bytes.len() {
        let mut r = AckReader::new(Scripted::new(vec![
            bytes[..cut].to_vec(),
            bytes[cut..].to_vec(),
        ]));
        let mut got = Vec::new();
        while let Some(a) = r
            .read_ack()
            .await
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"))
        {
            got.push(a);
        }
        assert_eq!(got, ids, "cut {cut}");
    }
    let mut r = AckReader::new(Scripted::bytewise(&bytes));
    for id in &ids {
        assert_eq!(r.read_ack().await.unwrap().as_ref(), Some(id));
    }
    assert_eq!(r.read_ack().await.unwrap(), None);
}

#[tokio::test]
async fn ack_reader_treats_whitespace_after_the_last_json_ack_as_a_clean_end() {
    let mut r = AckReader::new(&b"{\"ack\":\"a\"}\n"[..]);
    assert_eq!(r.read_ack().await.unwrap(), Some(b"a".to_vec()));
    assert_eq!(r.read_ack().await.unwrap(), None);
}

#[tokio::test]
async fn ack_reader_eof_inside_an_ack_is_truncated() {
    let (bytes, _) = ack_stream();
    let first = mp(&map(&[("ack", Value::from("Zmlyc3Q="))]));
    for cut in 1..first.len() {
        let mut r = AckReader::new(&bytes[..cut]);
        assert!(
            matches!(r.read_ack().await, Err(ConnectionError::Truncated)),
            "cut {cut}"
        );
    }
    let mut r = AckReader::new(&b"{\"ack\":\"js"[..]);
    assert!(matches!(
        r.read_ack().await,
        Err(ConnectionError::Truncated)
    ));
}

#[tokio::test]
async fn ack_reader_refuses_replies_that_are_not_acks() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (mp(&Value::Array(vec![Value::from("ack")])), "array"),
        (mp(&map(&[("nack", Value::from("x"))])), "no ack key"),
        (mp(&map(&[("ack", Value::from(1))])), "ack not a string"),
        (b"{\"ack\":1}".to_vec(), "json ack not a string"),
        (b"{\"ack\":\"x\",}".to_vec(), "bad json"),
        (b"[\"ack\"]".to_vec(), "json array"),
    ];
    for (bytes, what) in cases {
        let mut r = AckReader::new(&bytes[..]);
        assert!(
            matches!(r.read_ack().await, Err(ConnectionError::Frame(_))),
            "{what}"
        );
    }
    // a reply over the limit is refused without reading it all
    let mut big = vec![0x81, 0xa3, b'a', b'c', b'k', 0xdb];
    big.extend_from_slice(&(1u32 << 24).to_be_bytes());
    let mut r = AckReader::new(&big[..]);
    assert!(matches!(
        r.read_ack().await,
        Err(ConnectionError::Frame(FrameError::TooLarge { .. }))
    ));
}

#[tokio::test]
async fn ack_reader_over_a_duplex_with_a_one_byte_pipe() {
    let (bytes, ids) = ack_stream();
    let (mut server, client) = tokio::io::duplex(1);
    let writer = tokio::spawn(async move {
        server.write_all(&bytes).await.unwrap();
    });
    let mut r = AckReader::new(client);
    for id in &ids {
        assert_eq!(r.read_ack().await.unwrap().as_ref(), Some(id));
    }
    writer.await.unwrap();
    assert_eq!(r.read_ack().await.unwrap(), None);
}
