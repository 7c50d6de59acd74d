#!/usr/bin/env python3
"""Writes the edge-case seeds (fuzz/seeds/<target>/edge-*) of the forward and validation fuzz
targets: valid inputs at the corners of the formats (empty and maximal values, every integer
and string width, options the decoder must skip, back-to-back messages). The other seeds in
fuzz/seeds/ are kept as they are; spool_recover's are written by
`UPDATE_FUZZ_SEEDS=1 cargo test -p spool --test fuzz_seeds`.

    python3 fuzz/edge_seeds.py        # idempotent: same bytes every run

decode_stream seeds are two control bytes, then a stream of complete, valid frames
(crates/forward/tests/decode_modes.rs checks that).
"""
import gzip
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


class Ext:
    def __init__(self, code, data):
        self.code, self.data = code, data


def event_time(sec, nsec):
    return Ext(0, struct.pack(">II", sec, nsec))


def mp(v):
    """A minimal MessagePack writer: the smallest encoding of each value, like rmp's."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        for lo, hi, fmt, tag in [
            (0, 0xFF, ">B", 0xCC), (0, 0xFFFF, ">H", 0xCD), (0, 0xFFFFFFFF, ">I", 0xCE),
            (0, 2**64 - 1, ">Q", 0xCF), (-128, 127, ">b", 0xD0), (-32768, 32767, ">h", 0xD1),
            (-2**31, 2**31 - 1, ">i", 0xD2), (-2**63, 2**63 - 1, ">q", 0xD3),
        ]:
            if lo <= v <= hi:
                return bytes([tag]) + struct.pack(fmt, v)
        raise ValueError(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n < 256:
            return b"\xd9" + bytes([n]) + b
        if n < 65536:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(v, bytes):
        n = len(v)
        if n < 256:
            return b"\xc4" + bytes([n]) + v
        if n < 65536:
            return b"\xc5" + struct.pack(">H", n) + v
        return b"\xc6" + struct.pack(">I", n) + v
    if isinstance(v, Ext):
        n = len(v.data)
        fix = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if n in fix:
            return bytes([fix[n], v.code]) + v.data
        return b"\xc7" + bytes([n, v.code]) + v.data
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def record(key, value=5, **extra):
    r = {
        "unique_key": f"{key}:samples",
        "internal_instance_id": "i-1",
        "amount_type": "samples",
        "amount_value": value,
        "occurred_at": "2026-11-27T04:33:58Z",
    }
    r.update(extra)
    return r


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    # --- decode_stream: [frame limit selector, read size selector] + frames ----------------
    big_limit = b"\xff\x05"
    entries = [[1795754038 + i, record(f"p{i}")] for i in range(40)]
    packed = b"".join(mp(e) for e in entries)
    frames = {
        # every integer width as a time, the EventTime extremes, an unknown option skipped
        "edge-times-and-options": [
            mp(["t", 0, {"a": 1}, {"chunk": "c0"}]),
            mp(["t", 2**32 - 1, {"a": 2}, {"size": 1, "unknown": [1, {"x": None}]}]),
            mp(["t", event_time(0, 0), {"a": 3}]),
            mp(["t", event_time(2**32 - 1, 999_999_999), {"a": 4}, {"chunk": "c1"}]),
            mp(["t", 1.5, {}]),
        ],
        # Forward mode with no entries, and with one entry per EventTime/int time
        "edge-forward-empty-and-mixed": [
            mp(["t", [], {"chunk": "empty"}]),
            mp(["t", [[1, {"k": "v"}], [event_time(5, 6), {"k": "w"}]], {"size": 2}]),
        ],
        # PackedForward: 40 entries as bin and as str, size option matching
        "edge-packed-40": [
            mp(["billing", packed, {"size": 40, "chunk": "p40"}]),
            # str16 holding the raw entry bytes (not UTF-8), as some senders write it
            b"\x93" + mp("billing") + b"\xda" + struct.pack(">H", len(packed)) + packed
            + mp({"size": 40}),
        ],
        # CompressedPackedForward: one gzip member per entry (concatenated members)
        "edge-compressed-per-entry": [
            mp(["billing", b"".join(gzip.compress(mp(e), mtime=0) for e in entries[:8]),
                {"compressed": "gzip", "size": 8, "chunk": "z8"}]),
        ],
        # record values of every kind, nested, long strings (str8/str16, bin16)
        "edge-record-values": [
            mp(["t", 7, {"nil": None, "t": True, "f": False, "neg": -2**63, "big": 2**64 - 1,
                         "float": -0.0, "s8": "x" * 40, "s16": "y" * 300, "bin": b"\x00" * 300,
                         "deep": [[[[{"a": [1, 2, {"b": None}]}]]]], "ext": Ext(42, b"abc")}]),
        ],
    }
    for name, fs in frames.items():
        write("decode_stream", name, big_limit + b"".join(fs))
    json_frames = (
        b'["billing",1795754038,{"amount_value":1,"s":"\\u00e9\\n\\"q\\""},{"chunk":"j1"}]\n'
        b'  \r\n\t["billing",[[1795754039,{"a":[1,-2.5e3,null,true,{"b":{}}]}]],{"size":1}]'
        b'["t",0,{}]'
    )
    write("decode_stream", "edge-json-whitespace-and-escapes", b"\x40\x07" + json_frames)

    # --- parse_ack: replies as the sender reads them, back to back -------------------------
    write("parse_ack", "edge-two-replies", mp({"ack": "Y2h1bmsx"}) + mp({"ack": b"raw-bin-id"}))
    write("parse_ack", "edge-extra-keys", mp({"other": [1, 2], "ack": "x", "z": None}))
    write("parse_ack", "edge-empty-id", mp({"ack": ""}))
    write("parse_ack", "edge-json", b'{"ack" : "YWJj"}\n{"ack":"x","more":[1]}')

    # --- validate_record: one record each -------------------------------------------------
    write("validate_record", "edge-max-amount", mp(record("max", 2**63 - 1)))
    write("validate_record", "edge-unicode-and-metadata",
          mp(record("ключ-é", 1, metadata={"ü": "v" * 200, "": ""})))
    write("validate_record", "edge-time-as-eventtime",
          mp(record("et", 1, occurred_at=event_time(1795754038, 5))))
    write("validate_record", "edge-fraction-offset",
          mp(record("frac", 1, occurred_at="2026-11-27T04:33:58.123456789-09:30")))
    write("validate_record", "edge-amount-as-uint64", mp(record("u64", 2**64 - 1)))

if __name__ == "__main__":
    main()
