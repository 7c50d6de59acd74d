#!/usr/bin/env python3
"""Peak memory of `billing ingest` under hostile forward traffic (loopback only).

Starts `BILLING ingest --listen 127.0.0.1:0 --store sqlite:TMP/flood.db EXTRA...`, runs one
scenario against it, then prints the ingester's peak RSS (VmHWM) and what happened, as one
JSON line. No dependencies beyond the standard library; every loop is bounded in count and
time and the script stops by itself.

Scenarios:
  empty-entries  N connections each send one Forward frame of `[[]]` entries just under
                 --frame-mib MiB (8 by default), then wait for the server to close.
  partial        N connections each send a 1 MiB prefix (--partial-kib) of a frame announcing
                 2x that, then hold it open --hold seconds (the server must not read it all).
  gzip-bomb      one CompressedPackedForward frame: --records `[0, nil]` entries (2.796M by
                 default, 8,388,000 bytes: just under the 8 MiB cap) gzip-compressed to ~8 KB, with a chunk id; reports whether it was
                 acked.

Examples (from the repository root, release build):
  cargo build --release -p billing-cli
  python3 scripts/flood.py target/release/billing empty-entries
  python3 scripts/flood.py target/release/billing empty-entries --conns 4
  python3 scripts/flood.py target/release/billing partial --conns 2000
  python3 scripts/flood.py target/release/billing gzip-bomb
Arguments after `--` go to `billing ingest` (e.g. `-- --memory-limit 256MiB`).
"""

import argparse
import gzip
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def fixstr(s):
    b = s.encode()
    assert len(b) < 32
    return bytes([0xA0 | len(b)]) + b


def empty_entries_frame(total_bytes):
    # [tag, [[[]], [[]], ...]]: entries are `[[]]` (0x91 0x90), 2 bytes each.
    head = bytes([0x92]) + fixstr("flood")
    n = (total_bytes - len(head) - 5) // 2
    return head + bytes([0xDD]) + struct.pack(">I", n) + b"\x91\x90" * n


def gzip_bomb_frame(records, chunk):
    packed = b"\x92\x00\xc0" * records  # [0, nil]
    gz = gzip.compress(packed, compresslevel=9)
    option = (
        bytes([0x82])
        + fixstr("chunk") + fixstr(chunk)
        + fixstr("compressed") + fixstr("gzip")
    )
    return (
        bytes([0x93]) + fixstr("flood")
        + bytes([0xC6]) + struct.pack(">I", len(gz)) + gz
        + option
    ), len(gz)


def start_ingest(billing, extra, tmp):
    cmd = [billing, "ingest", "--listen", "127.0.0.1:0",
           "--store", f"sqlite:{tmp}/flood.db", *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        sys.exit(f"ingest did not start: {line!r}")
    host, port = line.split()[-1].rsplit(":", 1)
    return p, (host, int(port))


def wait_closed(sock, deadline):
    """Reads until the server closes (or the deadline); returns the bytes it sent."""
    got = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got


def run_empty_entries(addr, args):
    frame = empty_entries_frame(int(args.frame_mib * 1024 * 1024) - 16)
    results = []

    def one():
        s = socket.create_connection(addr)
        try:
            s.sendall(frame)
        except OSError:
            pass
        results.append(wait_closed(s, time.monotonic() + args.hold))
        s.close()

    threads = [threading.Thread(target=one) for _ in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.hold + 30)
    return {"frame_bytes": len(frame), "closed_by_server": len(results)}


def run_partial(addr, args):
    size = args.partial_kib * 1024
    # [tag, bin32 announcing 2x size]: only `size` bytes of it are ever sent.
    head = bytes([0x92]) + fixstr("flood") + bytes([0xC6]) + struct.pack(">I", 2 * size)
    payload = head + b"\x00" * (size - len(head))
    sel = selectors.DefaultSelector()
    socks = []
    pending = {}
    for _ in range(args.conns):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(addr)
        s.setblocking(False)
        socks.append(s)
        pending[s] = memoryview(payload)
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + args.hold
    sent = 0
    cut = 0
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                n = s.send(pending[s][:65536])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                cut += 1
                sel.unregister(s)
                del pending[s]
                continue
            sent += n
            pending[s] = pending[s][n:]
            if not len(pending[s]):
                sel.unregister(s)
                del pending[s]
    # Hold what was sent until the deadline: the server holds (or refuses) it meanwhile.
    time.sleep(max(0.0, deadline - time.monotonic()))
    for s in socks:
        s.close()
    return {"connections": args.conns, "bytes_sent": sent,
            "fully_sent": args.conns - len(pending) - cut, "cut_by_server": cut}


def run_gzip_bomb(addr, args):
    frame, gz_len = gzip_bomb_frame(args.records, "bomb-1")
    s = socket.create_connection(addr)
    s.sendall(frame)
    reply = wait_closed(s, time.monotonic() + args.hold)
    s.close()
    return {"frame_bytes": len(frame), "gzip_bytes": gz_len, "records": args.records,
            "acked": b"bomb-1" in reply}


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("billing", help="path to the billing binary")
    ap.add_argument("scenario", choices=["empty-entries", "partial", "gzip-bomb"])
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--frame-mib", type=float, default=8)
    ap.add_argument("--partial-kib", type=int, default=1024)
    ap.add_argument("--records", type=int, default=2_796_000)
    ap.add_argument("--hold", type=float, default=20.0,
                    help="seconds to hold connections / wait for the server (bounded)")
    args = ap.parse_args(argv)
    args.hold = min(args.hold, 300.0)
    args.conns = min(args.conns, 10_000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        proc, addr = start_ingest(args.billing, extra, tmp)
        try:
            idle = vm_hwm_kib(proc.pid)
            t0 = time.monotonic()
            run = {"empty-entries": run_empty_entries, "partial": run_partial,
                   "gzip-bomb": run_gzip_bomb}[args.scenario]
            outcome = run(addr, args)
            peak = vm_hwm_kib(proc.pid)
            alive = proc.poll() is None
        finally:
            proc.kill()
            proc.wait()
    print(json.dumps({
        "scenario": args.scenario, "conns": args.conns, "ingest_args": extra,
        "peak_rss_mib": round(peak / 1024, 1), "idle_rss_mib": round(idle / 1024, 1),
        "seconds": round(time.monotonic() - t0, 1), "server_alive": alive, **outcome,
    }))


if __name__ == "__main__":
    main()
