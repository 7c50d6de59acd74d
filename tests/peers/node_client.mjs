#!/usr/bin/env node
// Interop peer: send N billing records with FluentClient from @fluent-org/logger.
//
// Usage: node node_client.mjs HOST PORT MODE N KEY_PREFIX
//   MODE: Message | Forward | PackedForward | CompressedPackedForward
//
// Acks are enabled (`ack: {...}`), so every emit() promise resolves only once the
// server answered {"ack": <chunk>} for the chunk carrying that record.
// With PEER_SHARED_KEY set, the client passes the Forward protocol handshake
// (`security: {clientHostname, sharedKey, username: "", password: ""}`);
// PEER_HOSTNAME is its hostname (default node-client).  Records
// are emitted in small batches across event-loop turns so that a run uses
// several chunks on one connection.  Record i (0-based):
//
//   tag    = "billing"
//   time   = EventTime(1795754038 + i, 467902040)   (ext type 0, nanoseconds)
//   record = {unique_key: `${KEY_PREFIX}-${i}:node-seconds`,
//             internal_instance_id: "node-instance", amount_type: "node-seconds",
//             amount_value: i + 1, occurred_at: <RFC3339 with nanos>,
//             metadata: {peer: "node", mode: MODE, seq: String(i)}}
//
// Exits 0 only if every emit was acknowledged; otherwise prints one line on
// stderr and exits 1.  A global deadline (20 s) turns a hang into a failure.
import fluent from "@fluent-org/logger";

const { FluentClient, EventTime } = fluent;

const BASE_EPOCH = 1795754038; // 2026-11-27T04:33:58Z
const NANOS = 467902040;
const BATCH = 3;
const DEADLINE_MS = 20000;

function rfc3339(epoch, nanos) {
  const base = new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, "");
  return `${base}.${String(nanos).padStart(9, "0")}Z`;
}

function fail(msg) {
  process.stderr.write(`node_client: ${msg}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
if (args.length !== 5) {
  process.stderr.write("usage: node node_client.mjs HOST PORT MODE N KEY_PREFIX\n");
  process.exit(2);
}
const [host, portStr, mode, nStr, prefix] = args;
const port = Number(portStr);
const n = Number(nStr);
if (!["Message", "Forward", "PackedForward", "CompressedPackedForward"].includes(mode)) {
  fail(`unknown mode ${mode}`);
}

const deadline = setTimeout(() => fail(`deadline of ${DEADLINE_MS} ms exceeded`), DEADLINE_MS);

const client = new FluentClient("billing", {
  eventMode: mode,
  socket: { host, port, timeout: 10000, disableReconnect: true },
  // Acks on. The library default ackTimeout is 500 ms, which a loaded CI
  // machine running a debug build can exceed; 10 s still fails a server that never acks.
  ack: { ackTimeout: 10000 },
  disableAutoconnect: true,
  security: process.env.PEER_SHARED_KEY
    ? {
        clientHostname: process.env.PEER_HOSTNAME || "node-client",
        sharedKey: process.env.PEER_SHARED_KEY,
        username: "",
        password: "",
      }
    : undefined,
});
client.socketOn("error", (err) => process.stderr.write(`node_client: socket error: ${err && err.message}\n`));

try {
  await client.connect();
} catch (e) {
  fail(`connect to ${host}:${port} failed: ${e && e.message}`);
}

const pending = [];
for (let i = 0; i < n; i++) {
  const epoch = BASE_EPOCH + i;
  const record = {
    unique_key: `${prefix}-${i}:node-seconds`,
    internal_instance_id: "node-instance",
    amount_type: "node-seconds",
    amount_value: i + 1,
    occurred_at: rfc3339(epoch, NANOS),
    metadata: { peer: "node", mode, seq: String(i) },
  };
  pending.push(
    client.emit(record, new EventTime(epoch, NANOS)).then(
      () => null,
      (err) => `record ${i}: ${err && err.name}: ${err && err.message}`,
    ),
  );
  if ((i + 1) % BATCH === 0) {
    // let the client flush this batch as its own chunk
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const errors = (await Promise.all(pending)).filter((e) => e !== null);
try {
  await client.disconnect();
} catch (e) {
  errors.push(`disconnect: ${e && e.message}`);
}
clearTimeout(deadline);
if (errors.length > 0) {
  fail(`${errors.length} of ${n} emits failed in ${mode} mode; first: ${errors[0]}`);
}
process.stderr.write(`node_client: ${n} records acknowledged in ${mode} mode\n`);
process.exit(0);
