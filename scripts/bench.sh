#!/usr/bin/env bash
# Side-by-side performance run: the Go baseline (built from ../shared/baselines) and our client,
# in the same run, against the same kinds of sinks; prints one table with the ratios.
#
#   bash scripts/bench.sh [EVENTS]          (default 1000000; env POSTGRES=URL to add a PG row,
#                                            GO=PATH to reuse a built Go baseline)
#
# Rows (one record per event, client defaults unless a row says otherwise):
# - Go baseline, MessagePack, no acks -> a socket that discards (the Go client cannot be acked);
# - ours -> ack sink (frames delimited and acked), unpaced: delivered AND acknowledged records/s;
# - ours -> forward sink (frames fully decoded and acked, as the ingester decodes them);
# - ours -> ack sink paced at 100,000 events/s: add() latency p50/p99/p999 unsaturated;
# - ours -> SQLite (in-process ingester, fsync per commit) and, with POSTGRES, PostgreSQL;
# - ours -> a separate `billing ingest` process on SQLite (and PostgreSQL): the production shape.
# Speed is measured here, never asserted in tests; record the output in BENCHMARKS.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVENTS="${1:-1000000}"
GO="${GO:-/tmp/goseed}"
BILLING="$ROOT/target/release/billing"
cd "$ROOT"

echo "==> building the release binary" >&2
cargo build --release --quiet -p billing-cli
if [[ ! -x "$GO" ]]; then
  echo "==> building the Go baseline into $GO" >&2
  bash "$ROOT/../shared/baselines/go-seed-client/build.sh" "$GO" >&2
fi

# A socket that reads and discards, for the Go baseline (which writes without waiting for acks).
DISCARD_PORT_FILE="$(mktemp)"
python3 - "$DISCARD_PORT_FILE" <<'EOF' &
import socket, sys, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
def drain(c):
    while c.recv(1 << 18):
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
EOF
DISCARD_PID=$!
trap 'kill $DISCARD_PID 2>/dev/null || true; rm -f "$DISCARD_PORT_FILE"' EXIT
until [[ -s "$DISCARD_PORT_FILE" ]]; do sleep 0.05; done
DISCARD_PORT="$(cat "$DISCARD_PORT_FILE")"

run() { "$BILLING" bench --format json --events "$EVENTS" "$@" 2>/dev/null | tail -1; }
# Each PostgreSQL row starts from a quiet server: a CHECKPOINT writes out what the previous
# row left dirty (a million rows, then a dropped schema), which the checkpointer would
# otherwise write during the next row, on the same two cores and disk.
quiet_postgres() { psql "$POSTGRES" -qc CHECKPOINT >/dev/null 2>&1 || true; }

echo "==> Go baseline (MessagePack, no acks)" >&2
GO_JSON="$("$GO" -billing.ingester="127.0.0.1:$DISCARD_PORT" -n="$EVENTS" -types=1 -transport=sync -json=false)"
echo "==> ours: ack sink" >&2
ACK="$(run --sink ack)"
echo "==> ours: forward sink" >&2
FWD="$(run --sink forward)"
echo "==> ours: ack sink paced at 100,000 events/s" >&2
PACED="$("$BILLING" bench --format json --events 300000 --rate 100000 --sink ack 2>/dev/null | tail -1)"
echo "==> ours: SQLite" >&2
SQLITE="$(run --sink sqlite)"
PG="{}"
if [[ -n "${POSTGRES:-}" ]]; then
  echo "==> ours: PostgreSQL" >&2
  quiet_postgres
  PG="$(run --sink postgres --postgres "$POSTGRES")"
fi

# A separate `billing ingest` process on STORE; prints the bench's JSON.
external() {
  local store="$1" dir log pid addr
  dir="$(mktemp -d)"
  log="$dir/ingest.log"
  "$BILLING" ingest --listen 127.0.0.1:0 --store "${store//DIR/$dir}" >"$log" 2>&1 &
  pid=$!
  until addr="$(grep -o 'listening on [0-9.:]*' "$log" | head -1 | cut -d' ' -f3)" && [[ -n "$addr" ]]; do
    kill -0 "$pid" || { cat "$log" >&2; return 1; }
    sleep 0.05
  done
  run --sink external --billing.ingester "$addr" --key-prefix "bench-$$"
  kill "$pid"; wait "$pid" || true
  rm -rf "$dir"
}
echo "==> ours: a billing ingest process on SQLite" >&2
EXT_SQLITE="$(external "sqlite:DIR/b.db")"
EXT_PG="{}"
if [[ -n "${POSTGRES:-}" ]]; then
  echo "==> ours: a billing ingest process on PostgreSQL" >&2
  SCHEMA="bench_$$"
  SEP="?"; [[ "$POSTGRES" == *\?* ]] && SEP="&"
  quiet_postgres
  EXT_PG="$(external "$POSTGRES${SEP}schema=$SCHEMA")"
  psql "$POSTGRES" -qc "DROP SCHEMA $SCHEMA CASCADE" 2>/dev/null || true
fi

python3 - "$GO_JSON" "$ACK" "$FWD" "$PACED" "$SQLITE" "$PG" "$EXT_SQLITE" "$EXT_PG" <<'EOF'
import json, sys
go, ack, fwd, paced, sqlite, pg, ext_sqlite, ext_pg = (json.loads(a) for a in sys.argv[1:])
base = go["events_per_s"]
def row(name, rec_s, o=None):
    ratio = f"{rec_s / base:5.1f}x" if rec_s else ""
    lat = ""
    if o:
        lat = f"{o['add_p50_ns']/1000:6.2f} {o['add_p99_ns']/1000:6.2f} {o['add_p999_ns']/1000:7.2f} {o['cpu_s']:6.2f} {o['peak_rss_bytes']/2**20:6.1f}"
    print(f"{name:<58} {rec_s:>12,.0f} {ratio:>7}  {lat}")
print(f"{'run (records/s; ours: delivered and acknowledged)':<58} {'records/s':>12} {'vs Go':>7}  {'p50µs':>6} {'p99µs':>6} {'p999µs':>7} {'cpu s':>6} {'RSS MiB':>6}")
row("Go baseline, MessagePack, no acks -> discard", base)
row("ours -> ack sink (delimit + ack)", ack["delivered_records_per_s"], ack)
row("ours -> forward sink (full decode + ack)", fwd["delivered_records_per_s"], fwd)
row("ours -> ack sink, paced 100,000 events/s", paced["delivered_records_per_s"], paced)
row("ours -> SQLite (in-process ingester)", sqlite["delivered_records_per_s"], sqlite)
if pg:
    row("ours -> PostgreSQL (in-process ingester)", pg["delivered_records_per_s"], pg)
row("ours -> billing ingest process -> SQLite", ext_sqlite["delivered_records_per_s"], ext_sqlite)
if ext_pg:
    row("ours -> billing ingest process -> PostgreSQL", ext_pg["delivered_records_per_s"], ext_pg)
EOF
