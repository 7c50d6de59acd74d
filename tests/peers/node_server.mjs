#!/usr/bin/env node
// Interop peer: a Forward protocol server built on FluentServer from @fluent-org/logger.
//
// Usage: node node_server.mjs
//
// Listens on 127.0.0.1, port chosen by the OS, and prints exactly one line
// `listening on 127.0.0.1:PORT` once bound.  Then, for every entry received,
// prints one JSON line on stdout:
//
//   {"tag": "...", "time": "<RFC3339 UTC, nanosecond digits when non-zero>",
//    "time_kind": "eventtime" | "integer" | "float",
//    "time_epoch": <seconds>, "time_nano": <nanoseconds>, "record": {...}}
//
// FluentServer acknowledges a chunk ({"ack": chunk}) by itself whenever the
// message's option map carries `chunk` (see server.js handleConnection), in all
// four modes; CompressedPackedForward (gzip) is decoded by the library.
// Binary values in records are printed as {"$bin": "<base64>"} so they can be
// told apart from strings.  Runs until killed (SIGTERM/SIGINT close it).
//
// Authentication (optional): with PEER_SHARED_KEY set, the server requires the
// Forward protocol handshake (`security: {serverHostname, sharedKey, authorize:
// false, userDict: {}}`); PEER_HOSTNAME is its hostname (default node-server).
import fluent from "@fluent-org/logger";

const { FluentServer, EventTime } = fluent;

function rfc3339(epoch, nanos) {
  const base = new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, "");
  return nanos === 0 ? `${base}Z` : `${base}.${String(nanos).padStart(9, "0")}Z`;
}

function describeTime(time) {
  if (time instanceof EventTime) {
    return { time_kind: "eventtime", time_epoch: time.epoch, time_nano: time.nano };
  }
  if (typeof time === "number" && Number.isInteger(time)) {
    return { time_kind: "integer", time_epoch: time, time_nano: 0 };
  }
  if (typeof time === "number") {
    const epoch = Math.floor(time);
    return { time_kind: "float", time_epoch: epoch, time_nano: Math.round((time - epoch) * 1e9) };
  }
  return { time_kind: `unexpected:${typeof time}`, time_epoch: null, time_nano: null };
}

function replacer(_key, value) {
  if (value instanceof Uint8Array) {
    return { $bin: Buffer.from(value).toString("base64") };
  }
  if (value instanceof EventTime) {
    return { $eventtime: [value.epoch, value.nano] };
  }
  if (typeof value === "bigint") {
    return value.toString();
  }
  return value;
}

const sharedKey = process.env.PEER_SHARED_KEY;
const security = sharedKey
  ? {
      serverHostname: process.env.PEER_HOSTNAME || "node-server",
      sharedKey,
      authorize: false,
      userDict: {},
    }
  : undefined;
const server = new FluentServer({ listenOptions: { host: "127.0.0.1", port: 0 }, security });
server.on("entry", (tag, time, record) => {
  const t = describeTime(time);
  const line = {
    tag,
    time: t.time_epoch === null ? null : rfc3339(t.time_epoch, t.time_nano),
    ...t,
    record,
  };
  process.stdout.write(JSON.stringify(line, replacer) + "\n");
});

await server.listen();
process.stdout.write(`listening on 127.0.0.1:${server.port}\n`);

const stop = async () => {
  await Promise.race([server.close(), new Promise((r) => setTimeout(r, 1000))]);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
