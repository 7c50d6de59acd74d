#!/usr/bin/env bash
# Soak test (not in CI): a real `billing ingest` (SQLite) and a real `billing bench` load
# generator with a disk spool, at a given rate for N minutes, with a fault every F seconds,
# alternating: SIGKILL the ingester and restart it on the same port and file; SIGKILL the
# client and restart it on the same spool. Every S seconds it samples RSS and open file
# descriptors of both processes into a table (CSV + printed). At the end it lets the client
# finish and reconciles exactly: the store's hourly totals per instance and amount type
# (`billing report --format json`) against the events `--key-prefix` defines, records stored ==
# distinct records, no conflicts, nothing quarantined, the spool empty. Prints PASS or FAIL
# (exit 0 / 1).
#
#   bash scripts/soak.sh [MINUTES=10] [RATE=200] [FAULT_EVERY_S=30] [SAMPLE_EVERY_S=5]
#
# Environment: BILLING_BIN (default: build and use target/release/billing), SOAK_DIR (default:
# a new temp dir, kept for inspection), SOAK_TYPES (amount types per event, 1-4, default 2).
#
# How a restarted client catches up: `billing bench --rate-since T` paces as if it had
# started at T, so it re-adds at once every event it is behind on (all of them from index 0:
# the store counts the ones it has as duplicates) and then keeps the rate. Events are a pure
# function of their index and of the UTC day (`--key-prefix`), so a run must not cross midnight
# UTC (the script says so if it did).
set -euo pipefail

MINUTES="${1:-10}"
RATE="${2:-200}"
FAULT_EVERY="${3:-30}"
SAMPLE_EVERY="${4:-5}"
TYPES="${SOAK_TYPES:-2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${BILLING_BIN:-}" ]]; then
  echo "==> cargo build --release -p billing-cli"
  (cd "$ROOT" && cargo build --release --quiet -p billing-cli)
  BILLING_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/billing"
fi
[[ -x "$BILLING_BIN" ]] || { echo "soak: $BILLING_BIN is not executable" >&2; exit 2; }

WORK="${SOAK_DIR:-$(mktemp -d /tmp/billing-soak-XXXXXX)}"
mkdir -p "$WORK"
DB="$WORK/soak.db"
STORE="sqlite:$DB"
SPOOL="$WORK/spool"
CSV="$WORK/samples.csv"
PREFIX="soak-$(date +%s)"
EVENTS=$(python3 -c "print(int($RATE * $MINUTES * 60))")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR="127.0.0.1:$PORT"
START=$(date +%s)
DAY_AT_START=$(( START / 86400 ))

INGEST_PID=""
BENCH_PID=""
cleanup() {
  # Only the processes this script started, by pid.
  [[ -n "$BENCH_PID" ]] && kill -9 "$BENCH_PID" 2>/dev/null || true
  [[ -n "$INGEST_PID" ]] && kill -9 "$INGEST_PID" 2>/dev/null || true
}
trap cleanup EXIT

# Waits (bounded) until the ingester's log names its address: no sleeping as synchronisation.
start_ingest() {
  local log="$WORK/ingest.log"
  : >"$WORK/ingest.out"
  "$BILLING_BIN" ingest --listen "$ADDR" --store "$STORE" >"$WORK/ingest.out" 2>>"$log" &
  INGEST_PID=$!
  local deadline=$(( $(date +%s) + 30 ))
  until grep -q "^listening on" "$WORK/ingest.out" 2>/dev/null; do
    if ! kill -0 "$INGEST_PID" 2>/dev/null; then
      echo "soak: billing ingest exited at start; log:" >&2; tail -20 "$log" >&2; exit 1
    fi
    (( $(date +%s) < deadline )) || { echo "soak: billing ingest not listening after 30 s" >&2; exit 1; }
    sleep 0.05
  done
}

start_bench() {
  "$BILLING_BIN" bench --sink external --billing.ingester "$ADDR" \
    --billing.spool-dir "$SPOOL" --billing.retry-delay 50ms --billing.retry-delay-max 1s \
    --key-prefix "$PREFIX" --events "$EVENTS" --types "$TYPES" \
    --rate "$RATE" --rate-since "$START" --format json \
    >"$WORK/bench.out" 2>>"$WORK/bench.log" &
  BENCH_PID=$!
}

proc_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "-"; }
proc_fds() {
  if [[ -d "/proc/$1/fd" ]]; then find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; else echo "-"; fi
}
stored_records() {
  "$BILLING_BIN" report --store "$STORE" --summary --format json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])' 2>/dev/null || echo "-"
}

sample() {
  local t=$(( $(date +%s) - START ))
  local irss ifd brss bfd
  irss=$(proc_rss_kib "$INGEST_PID"); ifd=$(proc_fds "$INGEST_PID")
  if kill -0 "$BENCH_PID" 2>/dev/null; then
    brss=$(proc_rss_kib "$BENCH_PID"); bfd=$(proc_fds "$BENCH_PID")
  else
    brss="-"; bfd="-"
  fi
  local line="$t,$INGEST_PID,$irss,$ifd,$BENCH_PID,$brss,$bfd,$(stored_records),${1:-}"
  echo "$line" >>"$CSV"
  local a b c d e f g h ev
  IFS=, read -r a b c d e f g h ev <<<"$line"
  printf '%6s %8s %10s %6s %8s %10s %6s %9s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$ev"
}

echo "==> soak: $MINUTES min at $RATE events/s ($EVENTS events x $TYPES types), a fault every ${FAULT_EVERY}s, samples every ${SAMPLE_EVERY}s"
echo "    work dir $WORK, key prefix $PREFIX, ingester $ADDR"
echo "t_s,ingest_pid,ingest_rss_kib,ingest_fds,bench_pid,bench_rss_kib,bench_fds,stored_records,event" >"$CSV"
printf '%6s %8s %10s %6s %8s %10s %6s %9s  %s\n' t_s i_pid i_rss_kib i_fds b_pid b_rss_kib b_fds stored event
start_ingest
start_bench
sample "start"

END=$(( START + MINUTES * 60 ))
next_fault=$(( START + FAULT_EVERY ))
next_sample=$(( START + SAMPLE_EVERY ))
fault=0
ingest_kills=0
bench_kills=0
while (( $(date +%s) < END )); do
  now=$(date +%s)
  if ! kill -0 "$INGEST_PID" 2>/dev/null; then
    echo "soak: billing ingest died on its own; log:" >&2; tail -20 "$WORK/ingest.log" >&2; exit 1
  fi
  if (( now >= next_fault )); then
    if (( fault % 2 == 0 )); then
      kill -9 "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true
      start_ingest
      ingest_kills=$((ingest_kills + 1))
      sample "SIGKILL ingester, restarted"
    elif kill -0 "$BENCH_PID" 2>/dev/null; then
      kill -9 "$BENCH_PID"; wait "$BENCH_PID" 2>/dev/null || true
      start_bench
      bench_kills=$((bench_kills + 1))
      sample "SIGKILL client, restarted"
    fi
    fault=$((fault + 1))
    next_fault=$(( now + FAULT_EVERY ))
  fi
  if (( now >= next_sample )); then
    sample ""
    next_sample=$(( now + SAMPLE_EVERY ))
  fi
  sleep 0.2   # the loop's tick (pacing only; nothing waits on it)
done

# The client finishes: it exits 0 once every event is acknowledged (bounded).
echo "==> waiting for the client to deliver everything"
deadline=$(( $(date +%s) + 600 ))
bench_rc=""
while [[ -z "$bench_rc" ]]; do
  if ! kill -0 "$BENCH_PID" 2>/dev/null; then
    if wait "$BENCH_PID"; then bench_rc=0; else bench_rc=$?; fi
    if [[ "$bench_rc" != 0 ]]; then
      echo "soak: the client exited $bench_rc; restarting it once to deliver the rest" >&2
      tail -5 "$WORK/bench.log" >&2
      start_bench; bench_rc=""
      deadline=$(( $(date +%s) + 600 ))
    fi
  fi
  (( $(date +%s) < deadline )) || { echo "soak: the client did not finish within 10 min" >&2; break; }
  sleep 0.2
done
sample "client done (exit ${bench_rc:-timeout})"

# --- Reconciliation -------------------------------------------------------------------------
echo "==> reconciliation"
"$BILLING_BIN" report --store "$STORE" --format json >"$WORK/report.json"
"$BILLING_BIN" report --store "$STORE" --summary --format json >"$WORK/summary.json"
"$BILLING_BIN" spool inspect "$SPOOL" >"$WORK/spool.txt" || true
DAY_AT_END=$(( $(date +%s) / 86400 ))
set +e
python3 - "$WORK" "$PREFIX" "$EVENTS" "$TYPES" "$DAY_AT_START" "$DAY_AT_END" "${bench_rc:-timeout}" <<'EOF'
import json, sys, datetime
work, prefix, events, types, day0, day1, bench_rc = sys.argv[1:]
events, types, day0, day1 = int(events), int(types), int(day0), int(day1)
TYPES = ["container-seconds", "node-seconds", "weavenet-seconds", "samples"][:types]
# billing bench --key-prefix: event i is key P-i, instance i-(i % 100), every type valued
# (i % 1000) + 1, at yesterday 00:00 UTC + (i % 86400) s (crates/billing-cli/src/bench_load.rs).
base = (day0 - 1) * 86400
want = {}
for i in range(events):
    hour = (base + i % 86400) // 3600 * 3600
    bucket = datetime.datetime.fromtimestamp(hour, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for t in TYPES:
        row = want.setdefault((f"i-{i % 100}", t, bucket), [0, 0])
        row[0] += i % 1000 + 1
        row[1] += 1
got = {}
for r in json.load(open(f"{work}/report.json"), parse_int=int):
    got[(r["instance"], r["amount_type"], r["bucket"])] = [r["value"], r["records"]]
summary = json.load(open(f"{work}/summary.json"))
spool = open(f"{work}/spool.txt").read()
fails = []
if day0 != day1:
    fails.append("the run crossed midnight UTC: --key-prefix events changed day (rerun)")
if bench_rc != "0":
    fails.append(f"the client did not finish cleanly (exit {bench_rc})")
missing = [k for k in want if got.get(k) != want[k]]
extra = [k for k in got if k not in want]
if missing:
    fails.append(f"{len(missing)} hourly rows differ, e.g. {missing[0]}: stored {got.get(missing[0])}, expected {want[missing[0]]}")
if extra:
    fails.append(f"{len(extra)} unexpected rows, e.g. {extra[0]}")
records = events * types
if summary["records"] != records:
    fails.append(f"records stored {summary['records']} != distinct records {records}")
for k in ("conflicts", "quarantined"):
    if summary[k] != 0:
        fails.append(f"{k}: {summary[k]}")
if "records (unacked):   0" not in spool:
    fails.append("the spool still holds events:\n" + spool)
total_want = sum(v[0] for v in want.values())
total_got = sum(v[0] for v in got.values())
print(f"expected: {events} events, {records} records, total value {total_want} in {len(want)} hourly rows")
print(f"stored:   {summary['records']} records (+{summary['duplicates']} duplicates received), total value {total_got} in {len(got)} rows; conflicts {summary['conflicts']}, quarantined {summary['quarantined']}")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
EOF
rc=$?
set -e
echo "faults: $ingest_kills ingester SIGKILLs, $bench_kills client SIGKILLs; samples in $CSV"
if [[ $rc == 0 ]]; then echo "PASS"; else echo "FAIL"; fi
exit $rc
